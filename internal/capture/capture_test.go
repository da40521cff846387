package capture

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// robustnessFiles lists every capture under testdata/robustness.
func robustnessFiles(t testing.TB) []string {
	var files []string
	err := filepath.WalkDir(filepath.Join("testdata", "robustness"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	return files
}

// readAll reads a capture and decodes every frame's link layer, returning
// a one-line summary per file and the messages of its errors.
func readAll(path string) (string, []string) {
	r, err := Open(path)
	if err != nil {
		return "open error", []string{err.Error()}
	}
	defer r.Close()
	var p Packet
	var n, ip, other, linkErr int
	var msgs []string
	links := map[string]int{}
	for {
		err := r.Next(&p)
		if err == io.EOF {
			break
		}
		if err != nil {
			msgs = append(msgs, err.Error())
			continue
		}
		n++
		links[p.Link.String()]++
		nw, _, err := DecodeLink(p.Link, p.Data)
		switch {
		case err != nil:
			linkErr++
			if len(msgs) < 5 {
				msgs = append(msgs, fmt.Sprintf("%s: packet %d: %v", path, p.Num, err))
			}
		case nw == NetOther:
			other++
		default:
			ip++
		}
	}
	var ls []string
	for k, v := range links {
		ls = append(ls, fmt.Sprintf("%s:%d", k, v))
	}
	sort.Strings(ls)
	return fmt.Sprintf("%s packets=%d ip=%d non-ip=%d link-errors=%d links=%s", r.Format(), n, ip, other, linkErr, strings.Join(ls, ",")), msgs
}

// TestRobustness reads every file from the shared robustness set: no
// panic, good packets decoded, and every problem named with file and
// packet. The summary is compared with testdata/robustness.golden.
func TestRobustness(t *testing.T) {
	var out strings.Builder
	for _, f := range robustnessFiles(t) {
		sum, msgs := readAll(f)
		fmt.Fprintf(&out, "%s: %s\n", filepath.ToSlash(strings.TrimPrefix(f, "testdata/")), sum)
		for _, m := range msgs {
			if !strings.Contains(m, f) {
				t.Errorf("error does not name the file: %s", m)
			}
			fmt.Fprintf(&out, "    %s\n", filepath.ToSlash(m))
		}
	}
	golden := filepath.Join("testdata", "robustness.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != out.String() {
		t.Errorf("robustness summary differs from %s (go test -run Robustness -update)\n%s", golden, out.String())
	}
}

func frame(i int) []byte {
	b := make([]byte, 60)
	binary.BigEndian.PutUint16(b[12:14], 0x0800)
	b[14] = 0x45
	b[20] = byte(i)
	return b
}

func TestWriterRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, LinkEthernet)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1700000000, 123456789).UTC()
	for i := 0; i < 3; i++ {
		if err := w.WritePacket(t0.Add(time.Duration(i)*time.Millisecond), frame(i), 100); err != nil {
			t.Fatal(err)
		}
	}
	r, err := NewReader(&buf, "mem")
	if err != nil {
		t.Fatal(err)
	}
	var p Packet
	for i := 0; i < 3; i++ {
		if err := r.Next(&p); err != nil {
			t.Fatal(err)
		}
		if !p.Time.Equal(t0.Add(time.Duration(i)*time.Millisecond)) || p.WireLen != 100 || !bytes.Equal(p.Data, frame(i)) || p.Num != i+1 || p.Link != LinkEthernet {
			t.Errorf("packet %d: %+v", i, p)
		}
	}
	if err := r.Next(&p); err != io.EOF {
		t.Errorf("want EOF, got %v", err)
	}
}

// pcapBytes builds a classic pcap by hand in either byte order.
func pcapBytes(bo binary.ByteOrder, nano bool, link uint32, frames ...[]byte) []byte {
	var b bytes.Buffer
	magic := uint32(pcapMagicMicro)
	if nano {
		magic = pcapMagicNano
	}
	h := make([]byte, 24)
	bo.PutUint32(h[0:], magic)
	bo.PutUint16(h[4:], 2)
	bo.PutUint16(h[6:], 4)
	bo.PutUint32(h[16:], 65535)
	bo.PutUint32(h[20:], link)
	b.Write(h)
	for i, f := range frames {
		r := make([]byte, 16)
		bo.PutUint32(r[0:], 1000+uint32(i))
		bo.PutUint32(r[4:], 500)
		bo.PutUint32(r[8:], uint32(len(f)))
		bo.PutUint32(r[12:], uint32(len(f)))
		b.Write(r)
		b.Write(f)
	}
	return b.Bytes()
}

func TestPcapVariants(t *testing.T) {
	for _, tc := range []struct {
		name string
		bo   binary.ByteOrder
		nano bool
		ns   int
	}{
		{"le-micro", binary.LittleEndian, false, 500000},
		{"be-micro", binary.BigEndian, false, 500000},
		{"le-nano", binary.LittleEndian, true, 500},
		{"be-nano", binary.BigEndian, true, 500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := pcapBytes(tc.bo, tc.nano, 1, frame(1), frame(2))
			for _, gz := range []bool{false, true} {
				in := data
				if gz {
					var b bytes.Buffer
					zw := gzip.NewWriter(&b)
					zw.Write(data)
					zw.Close()
					in = b.Bytes()
				}
				r, err := NewReader(bytes.NewReader(in), tc.name)
				if err != nil {
					t.Fatal(err)
				}
				var p Packet
				if err := r.Next(&p); err != nil {
					t.Fatal(err)
				}
				if p.Time != time.Unix(1000, int64(tc.ns)).UTC() || p.Link != LinkEthernet || len(p.Data) != 60 {
					t.Errorf("gzip=%v: %+v", gz, p)
				}
				if err := r.Next(&p); err != nil || p.Num != 2 {
					t.Errorf("second packet: %v %+v", err, p)
				}
			}
		})
	}
}

func TestPcapTruncated(t *testing.T) {
	data := pcapBytes(binary.LittleEndian, false, 1, frame(1), frame(2))
	r, err := NewReader(bytes.NewReader(data[:len(data)-10]), "cut.pcap")
	if err != nil {
		t.Fatal(err)
	}
	var p Packet
	if err := r.Next(&p); err != nil {
		t.Fatal(err)
	}
	err = r.Next(&p)
	var ce *Error
	if !errors.As(err, &ce) || ce.Packet != 2 || !ce.Fatal || !strings.Contains(err.Error(), "cut.pcap: packet 2") {
		t.Fatalf("got %v", err)
	}
	if err := r.Next(&p); err != io.EOF {
		t.Errorf("after fatal error: %v", err)
	}
}

// order is what binary.LittleEndian and binary.BigEndian both are.
type order interface {
	binary.AppendByteOrder
	binary.ByteOrder
}

// ngBlock builds one pcapng block.
func ngBlock(bo order, typ uint32, body []byte) []byte {
	for len(body)%4 != 0 {
		body = append(body, 0)
	}
	b := bo.AppendUint32(nil, typ)
	b = bo.AppendUint32(b, uint32(12+len(body)))
	b = append(b, body...)
	return bo.AppendUint32(b, uint32(12+len(body)))
}

func ngSHB(bo order) []byte {
	body := make([]byte, 16)
	bo.PutUint32(body[0:], ngMagic)
	bo.PutUint16(body[4:], 1)
	binary.LittleEndian.PutUint64(body[8:], ^uint64(0))
	return ngBlock(bo, ngBlockSHB, body)
}

func ngIDB(bo order, link uint16, tsresol byte) []byte {
	body := make([]byte, 8)
	bo.PutUint16(body[0:], link)
	if tsresol != 0 {
		opt := make([]byte, 8)
		bo.PutUint16(opt[0:], 9)
		bo.PutUint16(opt[2:], 1)
		opt[4] = tsresol
		body = append(body, opt...)
		body = append(body, 0, 0, 0, 0) // opt_endofopt
	}
	return ngBlock(bo, ngBlockIDB, body)
}

func ngEPB(bo order, iface uint32, ts uint64, data []byte) []byte {
	body := make([]byte, 20)
	bo.PutUint32(body[0:], iface)
	bo.PutUint32(body[4:], uint32(ts>>32))
	bo.PutUint32(body[8:], uint32(ts))
	bo.PutUint32(body[12:], uint32(len(data)))
	bo.PutUint32(body[16:], uint32(len(data)))
	return ngBlock(bo, ngBlockEPB, append(body, data...))
}

func ngOPB(bo order, iface uint16, ts uint64, data []byte) []byte {
	body := make([]byte, 20)
	bo.PutUint16(body[0:], iface)
	bo.PutUint32(body[4:], uint32(ts>>32))
	bo.PutUint32(body[8:], uint32(ts))
	bo.PutUint32(body[12:], uint32(len(data)))
	bo.PutUint32(body[16:], uint32(len(data)))
	return ngBlock(bo, ngBlockOPB, append(body, data...))
}

func ngSPB(bo order, data []byte) []byte {
	body := make([]byte, 4)
	bo.PutUint32(body, uint32(len(data)))
	return ngBlock(bo, ngBlockSPB, append(body, data...))
}

func TestPcapngSectionsInterfaces(t *testing.T) {
	le, be := binary.LittleEndian, binary.BigEndian
	raw := []byte{0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}
	var f []byte
	// Section 1 (little-endian): Ethernet at µs, raw IP at ns.
	f = append(f, ngSHB(le)...)
	f = append(f, ngIDB(le, 1, 0)...)
	f = append(f, ngIDB(le, 101, 9)...)
	f = append(f, ngEPB(le, 0, 1_500_000, frame(1))...)
	f = append(f, ngEPB(le, 1, 2_000_000_001, raw)...)
	f = append(f, ngOPB(le, 0, 3_000_000, frame(3))...)
	f = append(f, ngSPB(le, frame(4))...)
	// Section 2 (big-endian): interfaces start again; 2^-10 s resolution.
	f = append(f, ngSHB(be)...)
	f = append(f, ngIDB(be, 113, 0x80|10)...)
	f = append(f, ngEPB(be, 0, 1024*5+512, make([]byte, 16))...)
	f = append(f, ngEPB(be, 1, 0, frame(9))...) // interface 1 not described in this section
	r, err := NewReader(bytes.NewReader(f), "multi.pcapng")
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		link  LinkType
		iface int
		ts    time.Time
	}
	wants := []want{
		{LinkEthernet, 0, time.Unix(1, 500000000)},
		{LinkRaw, 1, time.Unix(2, 1)},
		{LinkEthernet, 0, time.Unix(3, 0)},
		{LinkEthernet, 0, time.Time{}},
		{LinkLinuxSLL, 0, time.Unix(5, 500000000)},
	}
	var p Packet
	for i, w := range wants {
		if err := r.Next(&p); err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if p.Link != w.link || p.Iface != w.iface || (!w.ts.IsZero() && !p.Time.Equal(w.ts)) {
			t.Errorf("packet %d: got link %v iface %d time %v, want %+v", i, p.Link, p.Iface, p.Time, w)
		}
	}
	err = r.Next(&p)
	var ce *Error
	if !errors.As(err, &ce) || ce.Fatal || ce.Field != "interface id" {
		t.Fatalf("undescribed interface: got %v", err)
	}
	if err := r.Next(&p); err != io.EOF {
		t.Errorf("want EOF, got %v", err)
	}
}

func TestNotCapture(t *testing.T) {
	for _, in := range []string{"", "x", "hello world, not a capture"} {
		_, err := NewReader(strings.NewReader(in), "text")
		if !errors.Is(err, ErrNotCapture) {
			t.Errorf("%q: got %v", in, err)
		}
	}
}

func TestDecodeLink(t *testing.T) {
	ip4 := []byte{0x45, 0, 0, 20}
	eth := func(typ uint16, rest ...byte) []byte {
		b := make([]byte, 12, 14+len(rest))
		b = binary.BigEndian.AppendUint16(b, typ)
		return append(b, rest...)
	}
	cat := func(bs ...[]byte) []byte {
		var out []byte
		for _, b := range bs {
			out = append(out, b...)
		}
		return out
	}
	tests := []struct {
		name string
		lt   LinkType
		in   []byte
		net  Network
		off  int // payload offset, -1 for error
	}{
		{"ethernet", LinkEthernet, eth(0x0800, ip4...), NetIPv4, 14},
		{"vlan", LinkEthernet, eth(0x8100, cat([]byte{0, 5, 0x86, 0xdd}, []byte{0x60})...), NetIPv6, 18},
		{"qinq", LinkEthernet, eth(0x88a8, cat([]byte{0, 5, 0x81, 0x00, 0, 6, 0x08, 0x00}, ip4)...), NetIPv4, 22},
		{"mpls", LinkEthernet, eth(0x8847, cat([]byte{0, 0, 0, 64, 0, 0, 1, 64}, ip4)...), NetIPv4, 22},
		{"pppoe", LinkEthernet, eth(0x8864, cat([]byte{0x11, 0, 0, 1, 0, 22, 0, 0x21}, ip4)...), NetIPv4, 22},
		{"snap", LinkEthernet, eth(40, cat([]byte{0xaa, 0xaa, 3, 0, 0, 0, 8, 0}, ip4)...), NetIPv4, 22},
		{"arp", LinkEthernet, eth(0x0806, 1, 2, 3), NetOther, 0},
		{"short ethernet", LinkEthernet, []byte{1, 2, 3}, 0, -1},
		{"short vlan", LinkEthernet, eth(0x8100, 0), 0, -1},
		{"raw", LinkRaw, ip4, NetIPv4, 0},
		{"null le", LinkNull, cat([]byte{2, 0, 0, 0}, ip4), NetIPv4, 4},
		{"null be v6", LinkNull, []byte{0, 0, 0, 30, 0x60}, NetIPv6, 4},
		{"loop", LinkLoop, cat([]byte{0, 0, 0, 2}, ip4), NetIPv4, 4},
		{"sll", LinkLinuxSLL, cat(make([]byte, 14), []byte{8, 0}, ip4), NetIPv4, 16},
		{"sll2", LinkLinuxSLL2, cat([]byte{0x86, 0xdd}, make([]byte, 18), []byte{0x60}), NetIPv6, 20},
		{"ppp", LinkPPP, cat([]byte{0, 0x21}, ip4), NetIPv4, 2},
		{"unknown", LinkType(195), []byte{1, 2, 3}, 0, -1},
	}
	for _, tc := range tests {
		nw, pl, err := DecodeLink(tc.lt, tc.in)
		if tc.off < 0 {
			if err == nil {
				t.Errorf("%s: want error", tc.name)
			}
			continue
		}
		if err != nil || nw != tc.net {
			t.Errorf("%s: got %v %v", tc.name, nw, err)
			continue
		}
		if nw != NetOther && len(tc.in)-len(pl) != tc.off {
			t.Errorf("%s: payload at %d, want %d", tc.name, len(tc.in)-len(pl), tc.off)
		}
	}
	if _, _, err := DecodeLink(LinkType(195), nil); !errors.Is(err, ErrUnsupportedLink) {
		t.Errorf("unsupported link: %v", err)
	}
}

// seedFiles adds the robustness captures with the given suffix to a corpus.
func seedFiles(f *testing.F, suffix string) {
	for _, p := range robustnessFiles(f) {
		if strings.HasSuffix(p, suffix) {
			b, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			if len(b) <= 64<<10 {
				f.Add(b)
			}
		}
	}
}

func drain(data []byte) {
	r, err := NewReader(bytes.NewReader(data), "fuzz")
	if err != nil {
		return
	}
	var p Packet
	for i := 0; i < 10000; i++ {
		err := r.Next(&p)
		if err == io.EOF {
			return
		}
		if err == nil {
			DecodeLink(p.Link, p.Data)
		}
	}
}

func FuzzPcap(f *testing.F) {
	seedFiles(f, ".pcap")
	f.Add(pcapBytes(binary.BigEndian, true, 1, frame(1)))
	f.Fuzz(func(t *testing.T, data []byte) { drain(data) })
}

func FuzzPcapng(f *testing.F) {
	seedFiles(f, ".pcapng")
	f.Fuzz(func(t *testing.T, data []byte) { drain(data) })
}

func FuzzLinkLayer(f *testing.F) {
	for _, lt := range []LinkType{LinkEthernet, LinkNull, LinkLinuxSLL, LinkLinuxSLL2, LinkRadiotap, LinkIEEE80211, LinkNFLog, LinkPPP, LinkFDDI, LinkRaw} {
		f.Add(uint16(lt), frame(1))
	}
	f.Add(uint16(LinkEthernet), []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x81, 0, 0, 1, 0x88, 0x47, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, lt uint16, data []byte) {
		nw, pl, err := DecodeLink(LinkType(lt), data)
		if err == nil && nw != NetOther && len(pl) > len(data) {
			t.Fatalf("payload longer than frame")
		}
	})
}

// readLog reads every packet and error of r into a comparable log.
func readLog(r *Reader) string {
	var b strings.Builder
	var p Packet
	for i := 0; i < 1_000_000; i++ {
		err := r.Next(&p)
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Fprintf(&b, "error %v; offset %d\n", err, r.Offset())
			continue
		}
		fmt.Fprintf(&b, "%d %v %d %d %d %x %x; offset %d\n", p.Num, p.Time, p.WireLen, p.Link, len(p.Data), p.Data[:min(len(p.Data), 8)], p.Data[max(len(p.Data)-8, 0):], r.Offset())
	}
	return b.String()
}

// TestMappedMatchesBuffered: a file read through its memory map (Open)
// gives the same packets, errors and offsets as through a buffered reader
// (NewReader), whole or cut anywhere, with records larger than the read
// buffer and than the map window.
func TestMappedMatchesBuffered(t *testing.T) {
	big := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i * 7)
		}
		return b
	}
	crafted := map[string][]byte{
		"big-records.pcap": pcapBytes(binary.LittleEndian, true, 1, frame(1), big(bufSize+1000), frame(2), big(mapWindow+5000), frame(3)),
		"big-block.pcapng": slices.Concat(ngSHB(binary.LittleEndian), ngIDB(binary.LittleEndian, 1, 6),
			ngEPB(binary.LittleEndian, 0, 1, frame(1)), ngEPB(binary.LittleEndian, 0, 2, big(bufSize+3)), ngEPB(binary.LittleEndian, 0, 3, frame(2))),
	}
	inputs := map[string][]byte{}
	for name, b := range crafted {
		inputs[name] = b
		for _, cut := range []int{len(b) - 1, len(b) - 10, len(b) / 2, len(b) / 3, 40, 30, 24, 23} {
			inputs[fmt.Sprintf("%s cut at %d", name, cut)] = b[:cut]
		}
	}
	for _, p := range robustnessFiles(t) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		inputs[p] = b
	}
	dir := t.TempDir()
	for name, b := range inputs {
		path := filepath.Join(dir, "x")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		var mapped, buffered string
		if r, err := Open(path); err != nil {
			mapped = "open: " + err.Error()
		} else {
			mapped = readLog(r)
			r.Close()
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if r, err := NewReader(f, path); err != nil {
			buffered = "open: " + err.Error()
		} else {
			buffered = readLog(r)
		}
		f.Close()
		if mapped != buffered {
			t.Errorf("%s: mapped and buffered reads differ\nmapped:\n%s\nbuffered:\n%s", name, mapped, buffered)
		}
	}
}
