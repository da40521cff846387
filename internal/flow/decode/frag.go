package decode

import "encoding/binary"

// fragTimeout abandons a datagram whose fragments stop arriving.
const fragTimeout = int64(60e9)

// maxDatagram bounds a reassembled datagram (IPv4's limit).
const maxDatagram = 65535

type fragKey struct {
	src, dst [16]byte
	id       uint32
	proto    uint8
	v6       bool
}

type fragEntry struct {
	hdr    []byte // IP header(s) of the first fragment, without fragmentation
	data   []byte // payload assembled so far (grown as needed)
	have   []span // byte ranges of data received, sorted, not overlapping
	total  int    // payload length, known once the last fragment arrived
	first  int64
	hdrSet bool
}

type span struct{ lo, hi int }

// Reassembler rebuilds IP datagrams from fragments, as Zeek does, so that
// a datagram is counted once with its full length. It is bounded: when
// full, the oldest reassembly is dropped. Fragments are rare, so this path
// may allocate. The zero value is not usable: use NewReassembler.
type Reassembler struct {
	max     int
	m       map[fragKey]*fragEntry
	dropped uint64
	out     []byte
	// nextExpire rate-limits the expiry scan to once a second of capture time.
	nextExpire int64
}

// NewReassembler returns a Reassembler that keeps at most max datagrams
// under reassembly.
func NewReassembler(max int) *Reassembler {
	return &Reassembler{max: max}
}

// TakeDropped returns the number of reassemblies abandoned (table full,
// timed out, oversized or cut by the snaplen) since the last call.
func (r *Reassembler) TakeDropped() uint64 {
	n := r.dropped
	r.dropped = 0
	return n
}

// Add adds the fragment p (from IP, at time now in unix ns). When it
// completes a datagram, Add returns the whole datagram, unfragmented, to
// be decoded again with IP; it is valid until the next call to Add.
func (r *Reassembler) Add(p *Packet, now int64) ([]byte, bool) {
	if r.m == nil {
		r.m = make(map[fragKey]*fragEntry)
	}
	k := fragKey{p.Src, p.Dst, p.FragID, p.Proto, p.V6}
	e := r.m[k]
	if e == nil {
		if len(r.m) >= r.max {
			r.dropOldest()
		}
		e = &fragEntry{first: now}
		r.m[k] = e
	}
	lo := p.FragOff
	hi := lo + len(p.L4)
	if hi > maxDatagram || len(p.L4) < p.L4Len && p.FragMF {
		// Oversized, or a middle fragment cut by the snaplen: cannot rebuild.
		delete(r.m, k)
		r.dropped++
		return nil, false
	}
	if hi > len(e.data) {
		e.data = append(e.data, make([]byte, hi-len(e.data))...)
	}
	copy(e.data[lo:hi], p.L4)
	e.have = addSpan(e.have, span{lo, hi})
	if lo == 0 && !e.hdrSet {
		e.hdr = append(e.hdr[:0], p.Hdr...)
		e.hdrSet = true
	}
	if !p.FragMF {
		e.total = hi
	}
	if !e.hdrSet || e.total == 0 || len(e.have) != 1 || e.have[0].lo != 0 || e.have[0].hi < e.total {
		return nil, false
	}
	delete(r.m, k)
	// Build a whole, unfragmented datagram.
	out := append(r.out[:0], e.hdr...)
	out = append(out, e.data[:e.total]...)
	if p.V6 {
		// Drop the fragment header by pointing the header before it (the
		// fixed header, or the last extension header) at the transport.
		binary.BigEndian.PutUint16(out[4:6], uint16(len(out)-40))
		if len(e.hdr) == 40 {
			out[6] = p.Proto
		} else {
			setLastNext(out[:len(e.hdr)], p.Proto)
		}
	} else {
		binary.BigEndian.PutUint16(out[2:4], uint16(len(out)))
		binary.BigEndian.PutUint16(out[6:8], 0)
	}
	r.out = out
	return out, true
}

// addSpan adds s to sorted, non-overlapping spans, merging as needed.
func addSpan(ss []span, s span) []span {
	i := 0
	for i < len(ss) && ss[i].hi < s.lo {
		i++
	}
	j := i
	for j < len(ss) && ss[j].lo <= s.hi {
		s.lo = min(s.lo, ss[j].lo)
		s.hi = max(s.hi, ss[j].hi)
		j++
	}
	if i == j {
		ss = append(ss, span{})
		copy(ss[i+1:], ss[i:])
		ss[i] = s
		return ss
	}
	ss[i] = s
	return append(ss[:i+1], ss[j:]...)
}

// setLastNext replaces the fragment header (44) in an IPv6 header chain by
// the transport protocol.
func setLastNext(h []byte, proto uint8) {
	next, off, prev := h[6], 40, 6
	for off+2 <= len(h) && next != 44 {
		prev = off
		next = h[off]
		off += (int(h[off+1]) + 1) * 8
	}
	if prev < len(h) {
		h[prev] = proto
	}
}

func (r *Reassembler) dropOldest() {
	var ok fragKey
	var oe *fragEntry
	for k, e := range r.m {
		if oe == nil || e.first < oe.first {
			ok, oe = k, e
		}
	}
	if oe != nil {
		delete(r.m, ok)
		r.dropped++
	}
}

// Expire abandons reassemblies older than a minute at time now (unix ns).
// It is cheap to call per packet: it scans at most once a second.
func (r *Reassembler) Expire(now int64) {
	if len(r.m) == 0 || now < r.nextExpire {
		return
	}
	r.nextExpire = now + 1e9
	for k, e := range r.m {
		if now-e.first > fragTimeout {
			delete(r.m, k)
			r.dropped++
		}
	}
}
