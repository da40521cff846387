//go:build linux

package live

import (
	"encoding/binary"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpsentry/tcpsentry/internal/capture"
)

// ringFrame is one frame to lay out in a synthetic ring block.
type ringFrame struct {
	data    []byte
	wire    int
	ts      time.Time
	pkttype uint8
}

// makeBlock lays frames out as the kernel does in a TPACKET_V3 block:
// block header, then per frame a tpacket3_hdr, a sockaddr_ll and the
// frame at tp_mac, each 16-byte aligned, linked by tp_next_offset.
func makeBlock(size int, frames []ringFrame) []byte {
	ne := binary.NativeEndian
	b := make([]byte, size)
	ne.PutUint32(b[blkStatus:], unix.TP_STATUS_USER)
	ne.PutUint32(b[blkNumPkts:], uint32(len(frames)))
	ne.PutUint32(b[blkFirstPkt:], 48)
	off := 48
	for i, f := range frames {
		h := b[off:]
		mac := 48 + 20 + 14 // header, sockaddr_ll, then the frame (tp_mac is not aligned to anything in particular)
		ne.PutUint32(h[pktSec:], uint32(f.ts.Unix()))
		ne.PutUint32(h[pktNsec:], uint32(f.ts.Nanosecond()))
		ne.PutUint32(h[pktSnaplen:], uint32(len(f.data)))
		ne.PutUint32(h[pktLen:], uint32(f.wire))
		ne.PutUint16(h[pktMac:], uint16(mac))
		h[pktSllPkttype] = f.pkttype
		copy(h[mac:], f.data)
		next := (mac + len(f.data) + 15) &^ 15
		if i < len(frames)-1 {
			ne.PutUint32(h[pktNextOffset:], uint32(next))
		}
		off += next
	}
	return b
}

func TestBlockWalk(t *testing.T) {
	ts := time.Unix(1764000000, 123456789)
	frames := []ringFrame{
		{data: []byte("first frame......"), wire: 60, ts: ts},
		{data: []byte("looped-back copy"), wire: 16, ts: ts.Add(time.Microsecond), pkttype: unix.PACKET_OUTGOING},
		{data: []byte("third"), wire: 1500, ts: ts.Add(time.Millisecond)},
	}
	for _, lo := range []bool{false, true} {
		s := &Source{}
		h := &handle{idx: 2, lo: lo, iface: Interface{Link: capture.LinkEthernet}}
		var got []capture.Packet
		n := s.block(h, makeBlock(4096, frames), func(p *capture.Packet) {
			c := *p
			c.Data = append([]byte(nil), p.Data...)
			got = append(got, c)
		})
		want := []ringFrame{frames[0], frames[1], frames[2]}
		if lo {
			want = []ringFrame{frames[0], frames[2]} // the outgoing copy is skipped on loopback
		}
		if n != len(want) || len(got) != len(want) {
			t.Fatalf("lo=%v: %d frames, want %d", lo, n, len(want))
		}
		for i, w := range want {
			g := got[i]
			if string(g.Data) != string(w.data) || g.WireLen != w.wire || !g.Time.Equal(w.ts) || g.Iface != 2 || g.Link != capture.LinkEthernet {
				t.Errorf("lo=%v frame %d: %+v", lo, i, g)
			}
		}
	}
}

// Offsets that point outside the block end the walk; they never read
// beyond it.
func TestBlockWalkBadOffsets(t *testing.T) {
	ne := binary.NativeEndian
	good := makeBlock(512, []ringFrame{{data: []byte("aaaa"), wire: 4}, {data: []byte("bbbb"), wire: 4}})
	for _, c := range []struct {
		name string
		edit func(b []byte)
		want int
	}{
		{"first packet beyond the block", func(b []byte) { ne.PutUint32(b[blkFirstPkt:], 600) }, 0},
		{"next offset beyond the block", func(b []byte) { ne.PutUint32(b[48+pktNextOffset:], 1<<30) }, 1},
		{"snaplen beyond the block", func(b []byte) { ne.PutUint32(b[48+pktSnaplen:], 1<<20) }, 1},
		{"more packets claimed than there are", func(b []byte) { ne.PutUint32(b[blkNumPkts:], 1000) }, 2},
	} {
		b := append([]byte(nil), good...)
		c.edit(b)
		s := &Source{}
		if n := s.block(&handle{}, b, func(*capture.Packet) {}); n != c.want {
			t.Errorf("%s: %d frames, want %d", c.name, n, c.want)
		}
	}
}

func FuzzBlockWalk(f *testing.F) {
	f.Add(makeBlock(256, []ringFrame{{data: []byte("aaaa"), wire: 4}, {data: []byte("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"), wire: 4}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < 48 {
			return
		}
		s := &Source{}
		s.block(&handle{}, b, func(p *capture.Packet) {
			if cap(p.Data) > len(b) {
				t.Fatalf("frame of capacity %d from a block of %d", cap(p.Data), len(b))
			}
		})
	})
}

// The hot path: walking a block of 1,000 frames allocates nothing.
func BenchmarkBlockWalk(b *testing.B) {
	frames := make([]ringFrame, 1000)
	for i := range frames {
		frames[i] = ringFrame{data: make([]byte, 60), wire: 60, ts: time.Unix(1764000000, int64(i))}
	}
	blk := makeBlock(1<<20, frames)
	s := &Source{}
	h := &handle{iface: Interface{Link: capture.LinkEthernet}}
	var bytes int
	b.ReportAllocs()
	for b.Loop() {
		s.block(h, blk, func(p *capture.Packet) { bytes += len(p.Data) })
	}
	if allocs := testing.AllocsPerRun(10, func() { s.block(h, blk, func(*capture.Packet) {}) }); allocs != 0 {
		b.Errorf("%v allocations per block", allocs)
	}
}
