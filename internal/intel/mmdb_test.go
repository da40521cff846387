package intel

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
)

// This file is a minimal MaxMind DB writer, enough to build the small GeoIP databases the tests
// need: the real ones cannot be downloaded here and the reader's module ships no test data. It
// follows https://maxmind.github.io/MaxMind-DB/: a binary search tree over the address bits
// (IPv6, with IPv4 at ::/96), 16 zero bytes, the data section, then the metadata marker and map.

// mmdbNet is one network of a test database and its record.
type mmdbNet struct {
	prefix string
	record map[string]any
}

// mmdbNode is a search tree node; each side is a subtree, a data offset, or empty (both nil/-1).
type mmdbNode struct {
	child [2]*mmdbNode
	data  [2]int
	id    int
}

func newMMDBNode() *mmdbNode { return &mmdbNode{data: [2]int{-1, -1}} }

// writeMMDB encodes nets, inserted in order (a later, more specific network overrides part of an
// earlier one), into a database with 24-bit records.
func writeMMDB(dbType string, nets []mmdbNet) []byte {
	var data bytes.Buffer
	root := newMMDBNode()
	for _, n := range nets {
		p := netip.MustParsePrefix(n.prefix)
		addr, bits := p.Addr().As16(), p.Bits()
		if p.Addr().Is4() {
			v4 := p.Addr().As4()
			addr, bits = [16]byte{12: v4[0], 13: v4[1], 14: v4[2], 15: v4[3]}, bits+96
		}
		off := data.Len()
		mmdbEncode(&data, n.record)
		node := root
		for i := range bits {
			side := addr[i/8] >> (7 - i%8) & 1
			if i == bits-1 {
				node.child[side], node.data[side] = nil, off
				break
			}
			if node.child[side] == nil { // push an existing leaf down into the new subtree
				next := newMMDBNode()
				next.data = [2]int{node.data[side], node.data[side]}
				node.child[side], node.data[side] = next, -1
			}
			node = node.child[side]
		}
	}
	// Number the nodes breadth first, then write each as two 24-bit records.
	nodes := []*mmdbNode{root}
	for i := 0; i < len(nodes); i++ {
		nodes[i].id = i
		for _, c := range nodes[i].child {
			if c != nil {
				nodes = append(nodes, c)
			}
		}
	}
	var out bytes.Buffer
	for _, n := range nodes {
		for side := range 2 {
			v := len(nodes) // empty
			switch {
			case n.child[side] != nil:
				v = n.child[side].id
			case n.data[side] >= 0:
				v = len(nodes) + 16 + n.data[side]
			}
			out.Write([]byte{byte(v >> 16), byte(v >> 8), byte(v)})
		}
	}
	out.Write(make([]byte, 16))
	out.Write(data.Bytes())
	out.WriteString("\xab\xcd\xefMaxMind.com")
	mmdbEncode(&out, map[string]any{
		"binary_format_major_version": uint16(2),
		"binary_format_minor_version": uint16(0),
		"build_epoch":                 uint64(1763683200), // fixed, so the file is reproducible
		"database_type":               dbType,
		"description":                 map[string]any{"en": "tcpsentry test database"},
		"ip_version":                  uint16(6),
		"languages":                   []any{"en"},
		"node_count":                  uint32(len(nodes)),
		"record_size":                 uint16(24),
	})
	return out.Bytes()
}

// mmdbEncode appends one value in the data section encoding; map keys are sorted so that the
// output is deterministic.
func mmdbEncode(w *bytes.Buffer, v any) {
	switch v := v.(type) {
	case string:
		mmdbHeader(w, 2, len(v))
		w.WriteString(v)
	case map[string]any:
		mmdbHeader(w, 7, len(v))
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			mmdbEncode(w, k)
			mmdbEncode(w, v[k])
		}
	case []any:
		mmdbHeader(w, 11, len(v))
		for _, x := range v {
			mmdbEncode(w, x)
		}
	case uint16:
		mmdbUint(w, 5, uint64(v))
	case uint32:
		mmdbUint(w, 6, uint64(v))
	case uint64:
		mmdbUint(w, 9, v)
	default:
		panic(fmt.Sprintf("mmdbEncode: unsupported %T", v))
	}
}

// mmdbUint writes an unsigned integer in as few big-endian bytes as it needs.
func mmdbUint(w *bytes.Buffer, typ int, v uint64) {
	b := binary.BigEndian.AppendUint64(nil, v)
	for len(b) > 0 && b[0] == 0 {
		b = b[1:]
	}
	mmdbHeader(w, typ, len(b))
	w.Write(b)
}

// mmdbHeader writes the control byte (type in the top 3 bits, 0 plus an extra byte for types
// above 7) and the size, which takes 1–3 extra bytes from 29 on.
func mmdbHeader(w *bytes.Buffer, typ, size int) {
	var ext []byte
	switch {
	case size < 29:
	case size < 29+256:
		ext, size = []byte{byte(size - 29)}, 29
	case size < 285+65536:
		ext, size = binary.BigEndian.AppendUint16(nil, uint16(size-285)), 30
	default:
		s := size - 65821
		ext, size = []byte{byte(s >> 16), byte(s >> 8), byte(s)}, 31
	}
	if typ <= 7 {
		w.WriteByte(byte(typ<<5 | size))
	} else {
		w.Write([]byte{byte(size), byte(typ - 7)})
	}
	w.Write(ext)
}
