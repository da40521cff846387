package decode

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// ipv4 builds an IPv4 datagram around l4 with a valid header checksum.
func ipv4Datagram(proto uint8, src, dst string, l4 []byte) []byte {
	b := make([]byte, 20, 20+len(l4))
	b[0], b[8], b[9] = 0x45, 64, proto
	binary.BigEndian.PutUint16(b[2:], uint16(20+len(l4)))
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint16(b[10:], ^Checksum(b, 0))
	return append(b, l4...)
}

func ipv6Datagram(next uint8, src, dst string, payload []byte) []byte {
	b := make([]byte, 40, 40+len(payload))
	b[0], b[6], b[7] = 0x60, next, 64
	binary.BigEndian.PutUint16(b[4:], uint16(len(payload)))
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	return append(b, payload...)
}

func tcpSegment(sport, dport uint16, flags model.TCPFlags, payload int) []byte {
	b := make([]byte, 20+payload)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], 1000)
	binary.BigEndian.PutUint32(b[8:], 2000)
	b[12], b[13] = 5<<4, byte(flags)
	binary.BigEndian.PutUint16(b[14:], 512)
	return b
}

func TestDecode(t *testing.T) {
	syn := ipv4Datagram(6, "10.0.0.1", "10.0.0.2", tcpSegment(40000, 80, model.FlagSYN, 0))
	data := ipv4Datagram(6, "10.0.0.1", "10.0.0.2", tcpSegment(40000, 80, model.FlagACK|model.FlagPSH, 100))
	echo := ipv4Datagram(1, "10.0.0.1", "10.0.0.2", []byte{8, 0, 0, 0, 0, 1, 0, 1})
	unreach := ipv4Datagram(1, "10.0.0.2", "10.0.0.1", []byte{3, 3, 0, 0, 0, 0, 0, 0})
	// IPv6 with a destination-options header before UDP.
	v6udp := ipv6Datagram(60, "2001:db8::1", "2001:db8::2",
		append([]byte{17, 0, 1, 4, 0, 0, 0, 0}, 0x13, 0x88, 0, 53, 0, 12, 0, 0, 'a', 'b', 'c', 'd'))
	tests := []struct {
		name    string
		v6      bool
		b       []byte
		wire    int // 0: len(b)
		want    Packet
		errWhat string // "layer field" of the expected error
	}{
		{name: "tcp syn", b: syn, want: Packet{SrcPort: 40000, DstPort: 80, Proto: 6, IPLen: 40, L4Len: 20,
			TCP: TCP{Seq: 1000, Ack: 2000, Flags: model.FlagSYN, Win: 512, Options: []byte{}, Payload: []byte{}}}},
		{name: "tcp data cut by the snaplen", b: data[:60], wire: len(data), want: Packet{SrcPort: 40000, DstPort: 80, Proto: 6, IPLen: 140, L4Len: 120,
			TCP: TCP{Seq: 1000, Ack: 2000, Flags: model.FlagACK | model.FlagPSH, Win: 512, Length: 100, Captured: 20, Options: []byte{}, Payload: make([]byte, 20)}}},
		{name: "icmp echo keys by type pair", b: echo, want: Packet{SrcPort: 8, DstPort: 0, Proto: 1, IPLen: 28, L4Len: 8}},
		{name: "icmp unreachable is one-way", b: unreach, want: Packet{SrcPort: 3, DstPort: 3, Proto: 1, IPLen: 28, L4Len: 8, OneWay: true, ICMPType: 3, ICMPCode: 3}},
		{name: "ipv6 extension header", v6: true, b: v6udp, want: Packet{SrcPort: 5000, DstPort: 53, Proto: 17, V6: true, IPLen: 60, L4Len: 12, PayloadLen: 4, UDPPayload: []byte("abcd")}},
		{name: "ipv4 truncated header", b: syn[:19], errWhat: "ipv4 header"},
		{name: "ipv4 total length beyond the frame", b: syn[:39], wire: 39, errWhat: "ipv4 total length"},
		{name: "tcp header cut", b: syn[:30], wire: 40, errWhat: "tcp header"},
		{name: "ipv6 extension header truncated", v6: true, b: v6udp[:43], wire: 43, errWhat: "ipv6 payload length"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wire := tc.wire
			if wire == 0 {
				wire = len(tc.b)
			}
			var p Packet
			// The IPv4 header checksums are valid; the transport ones are not set.
			err := IP(&p, tc.v6, tc.b, wire, true)
			if err == nil {
				err = Transport(&p, false)
			}
			if tc.errWhat != "" {
				var de *Error
				if !errors.As(err, &de) || de.Layer+" "+de.Field != tc.errWhat {
					t.Fatalf("error %v, want one about %q", err, tc.errWhat)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !p.ChecksumOK {
				t.Errorf("checksum not OK")
			}
			got := p
			got.Src, got.Dst, got.L4, got.ChecksumOK = [16]byte{}, [16]byte{}, nil, false
			if tc.want.Proto == 1 {
				tc.want.ICMPType, tc.want.ICMPCode = got.ICMPType, got.ICMPCode
				tc.want.PayloadLen = got.PayloadLen
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestAddrs(t *testing.T) {
	var p Packet
	b := ipv4Datagram(6, "192.0.2.1", "198.51.100.7", tcpSegment(1, 2, model.FlagSYN, 0))
	if err := IP(&p, false, b, len(b), false); err != nil {
		t.Fatal(err)
	}
	if p.SrcAddr() != netip.MustParseAddr("192.0.2.1") || p.DstAddr() != netip.MustParseAddr("198.51.100.7") {
		t.Errorf("addresses %v %v", p.SrcAddr(), p.DstAddr())
	}
}

func TestReassembly(t *testing.T) {
	udp := make([]byte, 8+100)
	binary.BigEndian.PutUint16(udp[0:], 5000)
	binary.BigEndian.PutUint16(udp[2:], 53)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	frag := func(off int, mf bool, part []byte) []byte {
		b := ipv4Datagram(17, "10.0.0.1", "10.0.0.9", part)
		fo := uint16(off / 8)
		if mf {
			fo |= 0x2000
		}
		binary.BigEndian.PutUint16(b[4:], 7)
		binary.BigEndian.PutUint16(b[6:], fo)
		return b
	}
	r := NewReassembler(16)
	var p Packet
	// The last fragment first.
	for i, b := range [][]byte{frag(64, false, udp[64:]), frag(0, true, udp[:64])} {
		if err := IP(&p, false, b, len(b), false); err != nil || !p.Frag {
			t.Fatalf("fragment %d: %v, frag %v", i, err, p.Frag)
		}
		whole, ok := r.Add(&p, 0)
		if ok != (i == 1) {
			t.Fatalf("fragment %d: complete %v", i, ok)
		}
		if !ok {
			continue
		}
		if err := IP(&p, false, whole, len(whole), false); err != nil || p.Frag {
			t.Fatalf("rebuilt datagram: %v, frag %v", err, p.Frag)
		}
		if err := Transport(&p, false); err != nil || p.IPLen != 128 || p.PayloadLen != 100 || p.DstPort != 53 {
			t.Errorf("rebuilt datagram: %v, %+v", err, p)
		}
	}
	if n := r.TakeDropped(); n != 0 {
		t.Errorf("%d dropped", n)
	}
}

// FuzzDecode: no input makes the decoder or the reassembler panic.
func FuzzDecode(f *testing.F) {
	f.Add(false, ipv4Datagram(6, "10.0.0.1", "10.0.0.2", tcpSegment(1, 2, model.FlagSYN, 3)))
	f.Add(false, ipv4Datagram(1, "10.0.0.1", "10.0.0.2", []byte{8, 0, 0, 0, 0, 1, 0, 1}))
	f.Add(true, ipv6Datagram(44, "2001:db8::1", "2001:db8::2", []byte{17, 0, 0, 1, 0, 0, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8}))
	f.Add(true, ipv6Datagram(0, "2001:db8::1", "2001:db8::2", []byte{51, 0, 0, 0, 0, 0, 0, 0, 6, 1, 0, 0}))
	r := NewReassembler(8)
	f.Fuzz(func(t *testing.T, v6 bool, b []byte) {
		var p Packet
		for _, validate := range []bool{false, true} {
			if err := IP(&p, v6, b, len(b), validate); err != nil {
				continue
			}
			if p.Frag {
				whole, ok := r.Add(&p, 0)
				if !ok {
					continue
				}
				if err := IP(&p, v6, whole, len(whole), false); err != nil {
					continue
				}
			}
			_ = Transport(&p, validate)
		}
	})
}
