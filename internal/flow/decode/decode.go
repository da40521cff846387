// Package decode parses IPv4 and IPv6 datagrams and their TCP, UDP and
// ICMP headers in place, and reassembles IP fragments. It is the part of
// the flow tracker that reads untrusted bytes: it never panics, never
// allocates for an unfragmented datagram, and its errors name the layer
// and the field that was wrong.
package decode

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// IP protocol numbers the decoder handles.
const (
	protoICMP   = uint8(model.ProtoICMP)
	protoTCP    = uint8(model.ProtoTCP)
	protoUDP    = uint8(model.ProtoUDP)
	protoICMPv6 = uint8(model.ProtoICMPv6)
)

// Error is a datagram that could not be used: it names the layer and the
// field that were wrong.
type Error struct {
	Layer string // "ipv4", "ipv6", "tcp", …
	Field string // the header field that was wrong
	Err   error
}

func (e *Error) Error() string { return e.Layer + " " + e.Field + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

var (
	errTruncated = errors.New("truncated")
	errBadValue  = errors.New("bad value")
)

// Packet is a decoded datagram. Its slices point into the bytes given to
// IP (or into the Reassembler's buffer), valid until those change.
type Packet struct {
	// Src and Dst are the addresses; an IPv4 address is in the last four
	// bytes, the others zero (V6 tells the families apart).
	Src, Dst         [16]byte
	SrcPort, DstPort uint16 // ICMP: Zeek's conn ports (see OneWay)
	Proto            uint8  // IP protocol of the transport header
	V6               bool
	// OneWay marks an ICMP message without a reply type: Zeek keys it by
	// direction, with the type as source port and the code as destination.
	OneWay     bool
	ChecksumOK bool // transport checksum valid, or not checked
	IPLen      int  // IP total length (Zeek's TotalLen: header + payload)
	L4         []byte
	L4Len      int // transport length per the IP header (len(L4) may be less: snaplen)
	PayloadLen int // UDP/ICMP/other payload length per the headers
	// UDPPayload is the captured payload of a UDP datagram (aliases the packet).
	UDPPayload []byte
	ICMPType   uint8
	ICMPCode   uint8
	TCP        TCP

	// Fragment fields: Frag is set for a fragment, which the
	// Reassembler must complete before Transport can be called.
	Frag    bool
	FragMF  bool // more fragments follow
	FragID  uint32
	FragOff int
	Hdr     []byte // IP header(s) before the fragmentable part
}

// TCP is what the flow tracker needs from a TCP header.
type TCP struct {
	Seq, Ack uint32
	Flags    model.TCPFlags
	Win      uint16
	Length   int // payload length per the IP header
	Captured int // payload bytes actually captured
	// Options is the options part of the header; Payload the captured
	// payload. Both alias the packet's bytes.
	Options, Payload []byte
}

// SrcAddr is Src as a netip.Addr.
func (p *Packet) SrcAddr() netip.Addr { return Addr(p.Src, p.V6) }

// DstAddr is Dst as a netip.Addr.
func (p *Packet) DstAddr() netip.Addr { return Addr(p.Dst, p.V6) }

// Addr converts an address as Packet stores it.
func Addr(a [16]byte, v6 bool) netip.Addr {
	if v6 {
		return netip.AddrFrom16(a)
	}
	return netip.AddrFrom4([4]byte(a[12:16]))
}

// IP parses an IPv4 or IPv6 header into p. wire is the datagram's length
// on the wire (from the capture), so that a snaplen cut is not an error;
// validate checks the IPv4 header checksum.
func IP(p *Packet, v6 bool, b []byte, wire int, validate bool) error {
	*p = Packet{}
	if !v6 {
		return ipv4(p, b, wire, validate)
	}
	return ipv6(p, b, wire)
}

func ipv4(p *Packet, b []byte, wire int, validate bool) error {
	if len(b) < 20 {
		return &Error{"ipv4", "header", fmt.Errorf("%w: %d bytes", errTruncated, len(b))}
	}
	if b[0]>>4 != 4 {
		return &Error{"ipv4", "version", fmt.Errorf("%w: %d", errBadValue, b[0]>>4)}
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 {
		return &Error{"ipv4", "ihl", fmt.Errorf("%w: header length %d", errBadValue, ihl)}
	}
	if ihl > len(b) {
		return &Error{"ipv4", "ihl", fmt.Errorf("%w: header length %d, %d bytes captured", errTruncated, ihl, len(b))}
	}
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if total < ihl {
		return &Error{"ipv4", "total length", fmt.Errorf("%w: %d < header %d", errBadValue, total, ihl)}
	}
	if total > wire {
		return &Error{"ipv4", "total length", fmt.Errorf("%w: %d bytes, frame carries %d", errTruncated, total, wire)}
	}
	if validate && Checksum(b[:ihl], 0) != 0xffff {
		return &Error{"ipv4", "checksum", errBadValue}
	}
	copy(p.Src[12:], b[12:16])
	copy(p.Dst[12:], b[16:20])
	p.Proto = b[9]
	p.IPLen = total
	if fo := binary.BigEndian.Uint16(b[6:8]); fo&0x3fff != 0 {
		p.Frag = true
		p.FragID = uint32(binary.BigEndian.Uint16(b[4:6]))
		p.FragOff = int(fo&0x1fff) * 8
		p.FragMF = fo&0x2000 != 0
		p.Hdr = b[:ihl]
	}
	p.L4 = b[ihl:min(total, len(b))]
	p.L4Len = total - ihl
	return nil
}

func ipv6(p *Packet, b []byte, wire int) error {
	if len(b) < 40 {
		return &Error{"ipv6", "header", fmt.Errorf("%w: %d bytes", errTruncated, len(b))}
	}
	if b[0]>>4 != 6 {
		return &Error{"ipv6", "version", fmt.Errorf("%w: %d", errBadValue, b[0]>>4)}
	}
	total := 40 + int(binary.BigEndian.Uint16(b[4:6]))
	if total > wire {
		return &Error{"ipv6", "payload length", fmt.Errorf("%w: %d bytes, frame carries %d", errTruncated, total, wire)}
	}
	p.V6 = true
	p.Src = [16]byte(b[8:24])
	p.Dst = [16]byte(b[24:40])
	p.IPLen = total
	end := min(total, len(b))
	next := b[6]
	off := 40
	// Walk the extension headers to the transport header.
	for i := 0; i < 16; i++ {
		switch next {
		case 0, 43, 60, 135, 139, 140: // hop-by-hop, routing, destination, mobility, HIP, shim6
			if off+2 > end {
				return &Error{"ipv6", "extension header", errTruncated}
			}
			n := (int(b[off+1]) + 1) * 8
			if off+n > end {
				return &Error{"ipv6", "extension header", errTruncated}
			}
			next = b[off]
			off += n
			continue
		case 51: // authentication header
			if off+2 > end {
				return &Error{"ipv6", "authentication header", errTruncated}
			}
			n := (int(b[off+1]) + 2) * 4
			if off+n > end {
				return &Error{"ipv6", "authentication header", errTruncated}
			}
			next = b[off]
			off += n
			continue
		case 44: // fragment
			if off+8 > end {
				return &Error{"ipv6", "fragment header", errTruncated}
			}
			fo := binary.BigEndian.Uint16(b[off+2 : off+4])
			if fo&0xfff9 != 0 {
				p.Frag = true
				p.FragOff = int(fo &^ 7)
				p.FragMF = fo&1 != 0
				p.FragID = binary.BigEndian.Uint32(b[off+4 : off+8])
				p.Hdr = b[:off]
			}
			next = b[off]
			off += 8
			if p.Frag {
				// The fragmentable part starts here; its protocol is next.
				p.Proto = next
				p.L4 = b[off:end]
				p.L4Len = total - off
				return nil
			}
			continue
		}
		break
	}
	p.Proto = next
	p.L4 = b[off:end]
	p.L4Len = total - off
	return nil
}

// Transport parses the transport header of a whole (unfragmented)
// datagram. validate checks the transport checksum and records the result
// in ChecksumOK (a bad checksum is not an error: Zeek counts it in the
// history).
func Transport(p *Packet, validate bool) error {
	p.ChecksumOK = true
	switch p.Proto {
	case protoTCP:
		if p.L4Len < 20 {
			return &Error{"tcp", "header", fmt.Errorf("%w: %d bytes of transport", errTruncated, p.L4Len)}
		}
		if len(p.L4) < 20 {
			return &Error{"tcp", "header", fmt.Errorf("%w: %d bytes captured", errTruncated, len(p.L4))}
		}
		b := p.L4
		p.SrcPort = binary.BigEndian.Uint16(b[0:2])
		p.DstPort = binary.BigEndian.Uint16(b[2:4])
		off := int(b[12]>>4) * 4
		if off < 20 {
			return &Error{"tcp", "data offset", fmt.Errorf("%w: %d", errBadValue, off)}
		}
		if off > p.L4Len || off > len(b) {
			return &Error{"tcp", "data offset", fmt.Errorf("%w: header %d bytes", errTruncated, off)}
		}
		s := &p.TCP
		s.Seq = binary.BigEndian.Uint32(b[4:8])
		s.Ack = binary.BigEndian.Uint32(b[8:12])
		s.Flags = model.TCPFlags(b[13])
		s.Win = binary.BigEndian.Uint16(b[14:16])
		s.Length = p.L4Len - off
		s.Captured = len(b) - off
		s.Options = b[20:off]
		s.Payload = b[off:min(len(b), p.L4Len)]
		if validate && len(b) >= p.L4Len {
			p.ChecksumOK = p.transportChecksum(b[:p.L4Len]) == 0xffff
		}
	case protoUDP:
		if p.L4Len < 8 || len(p.L4) < 8 {
			return &Error{"udp", "header", errTruncated}
		}
		b := p.L4
		p.SrcPort = binary.BigEndian.Uint16(b[0:2])
		p.DstPort = binary.BigEndian.Uint16(b[2:4])
		p.PayloadLen = max(int(binary.BigEndian.Uint16(b[4:6]))-8, 0)
		p.UDPPayload = b[8:min(len(b), 8+p.PayloadLen)]
		if validate && len(b) >= p.L4Len {
			if sum := binary.BigEndian.Uint16(b[6:8]); sum != 0 || p.V6 {
				p.ChecksumOK = p.transportChecksum(b[:p.L4Len]) == 0xffff
			}
		}
	case protoICMP, protoICMPv6:
		if p.L4Len < 4 || len(p.L4) < 4 {
			return &Error{"icmp", "header", errTruncated}
		}
		p.ICMPType, p.ICMPCode = p.L4[0], p.L4[1]
		p.PayloadLen = max(p.L4Len-8, 0)
		p.SrcPort, p.DstPort, p.OneWay = icmpPorts(p.Proto == protoICMPv6, p.ICMPType, p.ICMPCode)
		if validate && len(p.L4) >= p.L4Len {
			if p.Proto == protoICMPv6 {
				p.ChecksumOK = p.transportChecksum(p.L4[:p.L4Len]) == 0xffff
			} else {
				p.ChecksumOK = Checksum(p.L4[:p.L4Len], 0) == 0xffff
			}
		}
	default:
		p.PayloadLen = p.L4Len
	}
	return nil
}

// icmpPorts maps an ICMP message to Zeek's conn ports: the type, and the
// type of the matching reply (or the code for messages without one).
func icmpPorts(v6 bool, typ, code uint8) (sport, dport uint16, oneWay bool) {
	if r, ok := icmpCounterpart(v6, typ); ok {
		return uint16(typ), uint16(r), false
	}
	return uint16(typ), uint16(code), true
}

// icmpCounterpart pairs request and reply types (Zeek's ICMP4_counterpart
// and ICMP6_counterpart).
func icmpCounterpart(v6 bool, typ uint8) (uint8, bool) {
	if v6 {
		switch typ {
		case 128, 130, 133, 135, 139, 144:
			return typ + 1, true
		case 129, 131, 134, 136, 140, 145:
			return typ - 1, true
		}
		return 0, false
	}
	switch typ {
	case 8:
		return 0, true
	case 0:
		return 8, true
	case 13, 15, 17:
		return typ + 1, true
	case 14, 16, 18:
		return typ - 1, true
	case 10:
		return 9, true
	case 9:
		return 10, true
	}
	return 0, false
}

// Checksum is the ones' complement sum of b added to sum (RFC 1071),
// folded to 16 bits; a valid header or segment sums to 0xffff.
func Checksum(b []byte, sum uint32) uint16 {
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

// PseudoHeaderSum is the unfolded sum of the IP pseudo-header that TCP,
// UDP and ICMPv6 checksums cover, for a segment of n bytes; pass it to
// Checksum with the segment.
func PseudoHeaderSum(src, dst [16]byte, v6 bool, proto uint8, n int) uint32 {
	var sum uint32
	from := 12
	if v6 {
		from = 0
	}
	for i := from; i < 16; i += 2 {
		sum += uint32(src[i])<<8 | uint32(src[i+1])
		sum += uint32(dst[i])<<8 | uint32(dst[i+1])
	}
	return sum + uint32(proto) + uint32(n)
}

func (p *Packet) transportChecksum(seg []byte) uint16 {
	return Checksum(seg, PseudoHeaderSum(p.Src, p.Dst, p.V6, p.Proto, len(seg)))
}
