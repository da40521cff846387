package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// Classic pcap magic numbers as read little-endian from the file.
const (
	pcapMagicMicro   = 0xa1b2c3d4
	pcapMagicNano    = 0xa1b23c4d
	pcapMagicKuznet  = 0xa1b2cd34 // "modified" pcap with 8 extra bytes per record
	pcapMagicMicroBE = 0xd4c3b2a1
	pcapMagicNanoBE  = 0x4d3cb2a1
	pcapMagicKuzBE   = 0x34cdb2a1
)

type pcapReader struct {
	r       *source
	file    string
	bo      binary.ByteOrder
	nano    bool
	recHdr  int // 16, or 24 for the modified format
	link    LinkType
	snaplen uint32
	num     int
}

func newPcap(r *source, file string, magic [4]byte) (*pcapReader, error) {
	p := &pcapReader{r: r, file: file, recHdr: 16}
	switch binary.LittleEndian.Uint32(magic[:]) {
	case pcapMagicMicro:
		p.bo = binary.LittleEndian
	case pcapMagicNano:
		p.bo, p.nano = binary.LittleEndian, true
	case pcapMagicKuznet:
		p.bo, p.recHdr = binary.LittleEndian, 24
	case pcapMagicMicroBE:
		p.bo = binary.BigEndian
	case pcapMagicNanoBE:
		p.bo, p.nano = binary.BigEndian, true
	case pcapMagicKuzBE:
		p.bo, p.recHdr = binary.BigEndian, 24
	default:
		return nil, &Error{File: file, Field: "magic", Err: fmt.Errorf("%w: magic %x", ErrNotCapture, magic), Fatal: true}
	}
	var h [20]byte
	if err := r.read(h[:]); err != nil {
		return nil, &Error{File: file, Offset: 4, Field: "file header", Err: fmt.Errorf("truncated: %w", err), Fatal: true}
	}
	// h: version major(2) minor(2) thiszone(4) sigfigs(4) snaplen(4) network(4)
	p.snaplen = p.bo.Uint32(h[12:16])
	// The upper bits of the network field carry FCS information (pcap-linktype(7)).
	p.link = LinkType(p.bo.Uint32(h[16:20]) & 0x0fffffff)
	return p, nil
}

func (p *pcapReader) name() string { return "pcap" }

func (p *pcapReader) next(pkt *Packet) error {
	off := p.r.offset()
	h, err := p.r.next(p.recHdr)
	if err != nil {
		if err == io.EOF {
			return io.EOF
		}
		return &Error{File: p.file, Packet: p.num + 1, Offset: off, Field: "record header", Err: fmt.Errorf("truncated: %w", err), Fatal: true}
	}
	p.num++
	var sec, frac, incl, orig uint32
	if p.bo == binary.LittleEndian {
		// The common case, without the interface calls.
		le := binary.LittleEndian
		sec, frac, incl, orig = le.Uint32(h[0:4]), le.Uint32(h[4:8]), le.Uint32(h[8:12]), le.Uint32(h[12:16])
	} else {
		sec, frac, incl, orig = p.bo.Uint32(h[0:4]), p.bo.Uint32(h[4:8]), p.bo.Uint32(h[8:12]), p.bo.Uint32(h[12:16])
	}
	if incl > maxRecord {
		// Without a trustworthy length there is no next record to find.
		return &Error{File: p.file, Packet: p.num, Offset: off, Field: "incl_len", Err: fmt.Errorf("captured length %d exceeds %d", incl, maxRecord), Fatal: true}
	}
	data, err := p.r.next(int(incl))
	if err != nil {
		return &Error{File: p.file, Packet: p.num, Offset: off, Field: "packet data", Err: fmt.Errorf("truncated: %w", err), Fatal: true}
	}
	ns := int64(frac)
	if !p.nano {
		ns *= 1000
	}
	if ns >= 1e9 {
		return &Error{File: p.file, Packet: p.num, Offset: off, Field: "ts_frac", Err: errors.New("fraction of a second out of range")}
	}
	if orig < incl {
		orig = incl
	}
	*pkt = Packet{Time: time.Unix(int64(sec), ns).UTC(), Data: data, WireLen: int(orig), Link: p.link, Num: p.num}
	return nil
}
