package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"time"
)

// pcapng block types (draft-ietf-opsawg-pcapng).
const (
	ngBlockSHB = 0x0a0d0d0a
	ngBlockIDB = 0x00000001
	ngBlockOPB = 0x00000002 // obsolete Packet Block
	ngBlockSPB = 0x00000003
	ngBlockEPB = 0x00000006
	ngMagic    = 0x1a2b3c4d
)

type ngIface struct {
	link     LinkType
	snaplen  uint32
	tsPow2   bool  // resolution is 2^-tsRes, else 10^-tsRes
	tsRes    uint8 // exponent of the resolution
	tsOffset int64 // seconds added to every timestamp
}

type ngReader struct {
	r      *source
	file   string
	bo     binary.ByteOrder
	ifaces []ngIface
	num    int // blocks read, so errors point at the right one
}

func newNG(r *source, file string) (*ngReader, error) {
	ng := &ngReader{r: r, file: file}
	// The caller consumed the SHB type; read the rest of the first block.
	if err := ng.readSHB(0); err != nil {
		err.Fatal = true
		return nil, err
	}
	return ng, nil
}

func (ng *ngReader) name() string { return "pcapng" }

// readSHB reads a Section Header Block after its type field: it fixes the
// byte order for the section and forgets the previous section's interfaces.
func (ng *ngReader) readSHB(off int64) *Error {
	h, err := ng.r.next(8) // block length, byte-order magic
	if err != nil {
		return &Error{File: ng.file, Packet: ng.num, Offset: off, Field: "section header", Err: fmt.Errorf("truncated: %w", err), Fatal: true}
	}
	switch {
	case binary.LittleEndian.Uint32(h[4:]) == ngMagic:
		ng.bo = binary.LittleEndian
	case binary.BigEndian.Uint32(h[4:]) == ngMagic:
		ng.bo = binary.BigEndian
	default:
		return &Error{File: ng.file, Packet: ng.num, Offset: off, Field: "byte-order magic", Err: fmt.Errorf("%w: bad byte-order magic %x", ErrNotCapture, h[4:]), Fatal: true}
	}
	n := ng.bo.Uint32(h[:4])
	if n < 28 || n%4 != 0 || n > maxRecord {
		return &Error{File: ng.file, Packet: ng.num, Offset: off, Field: "section header length", Err: fmt.Errorf("bad block length %d", n), Fatal: true}
	}
	if _, err := ng.r.next(int(n) - 12); err != nil {
		return &Error{File: ng.file, Packet: ng.num, Offset: off, Field: "section header", Err: fmt.Errorf("truncated: %w", err), Fatal: true}
	}
	ng.ifaces = ng.ifaces[:0]
	return nil
}

func (ng *ngReader) next(pkt *Packet) error {
	for {
		off := ng.r.offset()
		typ, err := ng.r.next(4)
		if err != nil {
			if err == io.EOF {
				return io.EOF
			}
			return &Error{File: ng.file, Packet: ng.num + 1, Offset: off, Field: "block type", Err: fmt.Errorf("truncated: %w", err), Fatal: true}
		}
		ng.num++
		if binary.LittleEndian.Uint32(typ) == ngBlockSHB {
			if err := ng.readSHB(off); err != nil {
				return err
			}
			continue
		}
		btype := ng.bo.Uint32(typ)
		l, err := ng.r.next(4)
		if err != nil {
			return &Error{File: ng.file, Packet: ng.num, Offset: off, Field: "block length", Err: fmt.Errorf("truncated: %w", err), Fatal: true}
		}
		blen := ng.bo.Uint32(l)
		if blen < 12 || blen > maxRecord {
			return &Error{File: ng.file, Packet: ng.num, Offset: off, Field: "block length", Err: fmt.Errorf("bad block length %d", blen), Fatal: true}
		}
		// Round up: some writers forget the padding in the length field.
		body := int(blen) - 12
		padded := (body + 3) &^ 3
		buf, err := ng.r.next(padded + 4)
		if err != nil {
			return &Error{File: ng.file, Packet: ng.num, Offset: off, Field: "block body", Err: fmt.Errorf("truncated: %w", err), Fatal: true}
		}
		b := buf[:body]
		switch btype {
		case ngBlockIDB:
			err = ng.idb(b)
		case ngBlockEPB:
			return ng.packet(pkt, b, off, 20, true)
		case ngBlockOPB:
			return ng.packet(pkt, b, off, 20, false)
		case ngBlockSPB:
			return ng.spb(pkt, b, off)
		default:
			// Name resolution, statistics, custom and unknown blocks carry no packets.
			continue
		}
		if err != nil {
			return &Error{File: ng.file, Packet: ng.num, Offset: off, Field: "interface description", Err: err}
		}
	}
}

func (ng *ngReader) idb(b []byte) error {
	if len(b) < 8 {
		ng.ifaces = append(ng.ifaces, ngIface{link: LinkType(0xffff), tsRes: 6})
		return errors.New("block too short")
	}
	ifc := ngIface{link: LinkType(ng.bo.Uint16(b[0:2])), snaplen: ng.bo.Uint32(b[4:8]), tsRes: 6}
	opts := b[8:]
	for len(opts) >= 4 {
		code := ng.bo.Uint16(opts[0:2])
		l := int(ng.bo.Uint16(opts[2:4]))
		if code == 0 || 4+l > len(opts) {
			break
		}
		v := opts[4 : 4+l]
		switch code {
		case 9: // if_tsresol
			if l >= 1 {
				ifc.tsPow2 = v[0]&0x80 != 0
				ifc.tsRes = v[0] & 0x7f
			}
		case 14: // if_tsoffset
			if l >= 8 {
				ifc.tsOffset = int64(ng.bo.Uint64(v))
			}
		}
		opts = opts[4+(l+3)&^3:]
	}
	if !ifc.tsPow2 && ifc.tsRes > 19 || ifc.tsPow2 && ifc.tsRes > 63 {
		bad := ifc.tsRes
		// Keep the interface (its packets are still usable) at the default resolution.
		ifc.tsPow2, ifc.tsRes = false, 6
		ng.ifaces = append(ng.ifaces, ifc)
		return fmt.Errorf("if_tsresol %d out of range", bad)
	}
	ng.ifaces = append(ng.ifaces, ifc)
	return nil
}

// packet decodes an EPB (hdr 20: iface32, ts, caplen, len) or an OPB
// (hdr 20: iface16, drops16, ts, caplen, len).
func (ng *ngReader) packet(pkt *Packet, b []byte, off int64, hdr int, epb bool) error {
	if len(b) < hdr {
		return &Error{File: ng.file, Packet: ng.num, Offset: off, Field: "packet block", Err: errors.New("block too short")}
	}
	var iface int
	if epb {
		iface = int(ng.bo.Uint32(b[0:4]))
	} else {
		iface = int(ng.bo.Uint16(b[0:2]))
	}
	ts := uint64(ng.bo.Uint32(b[4:8]))<<32 | uint64(ng.bo.Uint32(b[8:12]))
	caplen := ng.bo.Uint32(b[12:16])
	wire := ng.bo.Uint32(b[16:20])
	if iface < 0 || iface >= len(ng.ifaces) {
		return &Error{File: ng.file, Packet: ng.num, Offset: off, Field: "interface id", Err: fmt.Errorf("interface %d not described", iface)}
	}
	if uint64(caplen) > uint64(len(b)-hdr) {
		return &Error{File: ng.file, Packet: ng.num, Offset: off, Field: "captured length", Err: fmt.Errorf("captured length %d exceeds block", caplen)}
	}
	ifc := &ng.ifaces[iface]
	if wire < caplen {
		wire = caplen
	}
	*pkt = Packet{Time: ifc.time(ts), Data: b[hdr : hdr+int(caplen)], WireLen: int(wire), Link: ifc.link, Iface: iface, Num: ng.num}
	return nil
}

func (ng *ngReader) spb(pkt *Packet, b []byte, off int64) error {
	if len(b) < 4 {
		return &Error{File: ng.file, Packet: ng.num, Offset: off, Field: "simple packet block", Err: errors.New("block too short")}
	}
	if len(ng.ifaces) == 0 {
		return &Error{File: ng.file, Packet: ng.num, Offset: off, Field: "interface id", Err: errors.New("simple packet block before any interface description")}
	}
	wire := int(ng.bo.Uint32(b[0:4]))
	data := b[4:]
	ifc := &ng.ifaces[0]
	if wire < len(data) {
		data = data[:wire]
	}
	if ifc.snaplen > 0 && len(data) > int(ifc.snaplen) {
		data = data[:ifc.snaplen]
	}
	// A simple packet block has no timestamp.
	*pkt = Packet{Data: data, WireLen: max(wire, len(data)), Link: ifc.link, Num: ng.num}
	return nil
}

// time converts a timestamp in interface units to a time.
func (ifc *ngIface) time(units uint64) time.Time {
	var sec, ns uint64
	if ifc.tsPow2 {
		r := uint(ifc.tsRes)
		sec = units >> r
		frac := units & (1<<r - 1)
		hi, lo := bits.Mul64(frac, 1e9)
		ns, _ = bits.Div64(hi, lo, 1<<r)
	} else {
		div := uint64(1)
		for i := uint8(0); i < ifc.tsRes; i++ {
			div *= 10
		}
		sec = units / div
		rem := units % div
		hi, lo := bits.Mul64(rem, 1e9)
		ns, _ = bits.Div64(hi, lo, div)
	}
	return time.Unix(int64(sec)+ifc.tsOffset, int64(ns)).UTC()
}
