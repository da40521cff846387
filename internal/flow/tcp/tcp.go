// Package tcp holds the per-connection TCP state of the flow tracker, as
// Zeek keeps it (TCP_Endpoint.cc and the bookkeeping parts of
// TCPSessionAdapter.cc): the endpoint states, sequence numbers relative
// to each side's ISN with their 4 GiB wraps, the size of what each side
// sent, and the decisions that need nothing but that state (partial
// connections, port reuse). The state machine that drives it, and records
// history and timers, is package flow's.
//
// Everything here is kept small, because a flow table holds a million of
// them: an Endpoint is 64 bytes, a Conn 136.
package tcp

import "github.com/tcpsentry/tcpsentry/internal/model"

// State is the state of one side of a connection, numbered as Zeek's
// TCP_INACTIVE … TCP_RESET.
type State uint8

// Endpoint states.
const (
	Inactive    State = iota // nothing seen from this side
	SynSent                  // sent a SYN
	SynAckSent               // sent a SYN-ACK as originator
	Partial                  // active, but its SYN was not seen
	Established              // handshake done
	Closed                   // sent a FIN
	Reset                    // sent a RST
)

// IsHandshake reports whether s is a state before establishment.
func IsHandshake(s State) bool { return s == Inactive || s == SynSent || s == SynAckSent }

// TooLargeSeqDelta is Zeek's TOO_LARGE_SEQ_DELTA: jumps beyond it in SYN
// or RST segments are not trusted.
const TooLargeSeqDelta = 1048576

// SeqDelta is a-b in sequence space.
func SeqDelta(a, b uint32) int32 { return int32(a - b) }

// SegmentLen is how much sequence space a segment with this payload
// length and these flags takes: SYN and FIN count one, RST payload none.
func SegmentLen(length int, f model.TCPFlags) int {
	n := length
	if f&model.FlagSYN != 0 {
		n++
	}
	if f&model.FlagFIN != 0 {
		n++
	}
	if f&model.FlagRST != 0 {
		n -= length
	}
	return n
}

// Endpoint is one side of a TCP connection (Zeek's TCP_Endpoint). Zeek's
// window tracking is left out: the only thing conn.log takes from it is
// the 'W' history letter, which needs just the segment's own window (a
// scaled window is zero exactly when the raw one is).
type Endpoint struct {
	// Reassembly bookkeeping in relative sequence space (Zeek's
	// last_reassem_seq and trim_seq), and the relative sequence number
	// just past the FIN.
	LastReassem, TrimSeq, FinSeq uint64

	StartSeq, LastSeq, AckSeq uint32

	// HistLast holds the low 32 bits of the relative sequence numbers of
	// the last SYN, FIN and RST (the tracker keeps the rare high bits
	// elsewhere): a repeated letter is recorded only for a new number.
	HistLast [3]uint32

	// Scaled history counters of retransmissions and zero windows.
	Rexmits, ZeroWindows uint32

	SeqWraps, AckWraps uint16 // 4 GiB wraps of LastSeq and AckSeq (256 TiB)
	State, PrevState   State
	Flags              EndpointFlags
}

// EndpointFlags are an endpoint's yes/no facts, packed to keep Endpoint
// at 64 bytes.
type EndpointFlags uint8

// Endpoint flags.
const (
	DidClose EndpointFlags = 1 << iota // closed or reset (Zeek's did_close)
	Skip                               // the reassembler gave up (Zeek's skip_deliveries)
	SentFIN                            // a FIN was seen (Zeek's FIN_cnt > 0)
)

// Closed reports DidClose.
func (e *Endpoint) Closed() bool { return e.Flags&DidClose != 0 }

// Skipping reports Skip.
func (e *Endpoint) Skipping() bool { return e.Flags&Skip != 0 }

// FinSent reports SentFIN.
func (e *Endpoint) FinSent() bool { return e.Flags&SentFIN != 0 }

// Clean reports whether the side is established, or closed after being
// established: only then are content gaps real.
func (e *Endpoint) Clean() bool {
	return e.State == Established || e.State == Closed && e.PrevState == Established
}

func (e *Endpoint) reset() {
	*e = Endpoint{LastReassem: 1, TrimSeq: 1}
}

// ToFull joins a sequence number and its wraps into 64 bits.
func ToFull(seq, wraps uint32) uint64 { return uint64(wraps)<<32 + uint64(seq) }

// Relative is a sequence number with its wraps relative to the ISN.
func (e *Endpoint) Relative(seq, wraps uint32) uint64 { return ToFull(seq, wraps) - uint64(e.StartSeq) }

// NoDataAcked reports whether the peer has acked nothing beyond the SYN.
func (e *Endpoint) NoDataAcked() bool {
	ack := ToFull(e.AckSeq, uint32(e.AckWraps))
	return ack == uint64(e.StartSeq) || ack == uint64(e.StartSeq)+1
}

// UpdateLastSeq moves LastSeq forward, counting a wrap.
func (e *Endpoint) UpdateLastSeq(seq uint32) {
	if seq < e.LastSeq {
		e.SeqWraps++
	}
	e.LastSeq = seq
}

// UpdateAckSeq moves AckSeq forward, counting a wrap.
func (e *Endpoint) UpdateAckSeq(seq uint32) {
	if seq < e.AckSeq {
		e.AckWraps++
	}
	e.AckSeq = seq
}

// Size is the payload sent, from sequence numbers (Zeek's
// TCP_Endpoint::Size).
func (e *Endpoint) Size(peer *Endpoint) uint64 {
	if e.PrevState == SynSent && e.State == Reset && peer.State == Inactive && !e.NoDataAcked() {
		// A half-open connection discovered and aborted: its sequence
		// numbers say nothing about data.
		return 0
	}
	last := ToFull(e.LastSeq, uint32(e.SeqWraps))
	ack := ToFull(e.AckSeq, uint32(e.AckWraps))
	var sz uint64
	if last > ack {
		sz = last - uint64(e.StartSeq)
	} else {
		sz = ack - uint64(e.StartSeq)
	}
	if sz != 0 {
		sz-- // the SYN octet
	}
	if e.FinSent() && sz != 0 {
		sz-- // the FIN octet
	}
	return sz
}

// Init numbers the side's sequence space from a segment spanning
// [first, last) (Zeek's TCP_Endpoint::InitialSeqNum and friends).
func (e *Endpoint) Init(syn bool, first, last uint32) {
	switch e.State {
	case Inactive:
		if syn {
			e.AckSeq, e.StartSeq = first, first
		} else {
			// A partial connection: number it as though its SYN was seen.
			e.AckSeq, e.StartSeq = first-1, first-1
			last = first
		}
		e.LastSeq = last
	case SynSent, SynAckSent:
		if syn && first != e.StartSeq {
			e.StartSeq, e.AckSeq, e.LastSeq = first, first, last
		}
	case Established, Partial:
		if syn {
			e.StartSeq, e.AckSeq, e.LastSeq = first, first, last
		}
	case Reset:
		if syn && e.PrevState == Inactive {
			// The RST that initialised this side may have been injected.
			e.StartSeq, e.AckSeq, e.LastSeq = first, first, last
		}
	}
}

// RelativeSeq is Zeek's get_relative_seq: cur relative to the ISN, given
// the last number seen and its wraps; underflow reports a number before
// the ISN.
func (e *Endpoint) RelativeSeq(cur, last, wraps uint32) (rel uint64, underflow bool) {
	d := SeqDelta(cur, last)
	if d < 0 {
		if wraps > 0 && cur > last {
			wraps--
		}
	} else if d > 0 && cur < last {
		wraps++
	}
	if wraps == 0 {
		d = SeqDelta(cur, e.StartSeq)
		return uint64(int64(d)), d < 0
	}
	return e.Relative(cur, wraps), false
}

// Conn is the TCP part of a flow (Zeek's TCPSessionAdapter).
type Conn struct {
	Eps          [2]Endpoint
	OrigIdx      uint8 // which of Eps is the originator (flips swap it)
	FirstSeen    uint8 // bit 1 orig, bit 2 resp (Zeek's first_packet_seen)
	IsPartial    bool
	IsActive     bool
	SeenFirstACK bool
}

// Init starts a connection.
func (c *Conn) Init() {
	c.Eps[0].reset()
	c.Eps[1].reset()
	c.OrigIdx, c.FirstSeen, c.IsPartial, c.IsActive, c.SeenFirstACK = 0, 0, false, true, false
}

// Orig is the originator's side.
func (c *Conn) Orig() *Endpoint { return &c.Eps[c.OrigIdx] }

// Resp is the responder's side.
func (c *Conn) Resp() *Endpoint { return &c.Eps[c.OrigIdx^1] }

// Pair returns the sending side and its peer.
func (c *Conn) Pair(isOrig bool) (e, peer *Endpoint) {
	if isOrig {
		return c.Orig(), c.Resp()
	}
	return c.Resp(), c.Orig()
}

// IsOrig reports whether e is the originator's side.
func (c *Conn) IsOrig(e *Endpoint) bool { return e == &c.Eps[c.OrigIdx] }

// Index is the Eps index of the originator's or the responder's side.
func (c *Conn) Index(isOrig bool) int {
	if isOrig {
		return int(c.OrigIdx)
	}
	return int(c.OrigIdx ^ 1)
}

// IndexOf is the Eps index of e.
func (c *Conn) IndexOf(e *Endpoint) int {
	if e == &c.Eps[1] {
		return 1
	}
	return 0
}

// Flip swaps originator and responder.
func (c *Conn) Flip() {
	c.OrigIdx ^= 1
	c.FirstSeen = c.FirstSeen&1<<1 | c.FirstSeen&2>>1
	c.IsPartial = false
}

// SetPartialStatus notes the first segment from each side: a connection
// whose originator did not start with a SYN is partial.
func (c *Conn) SetPartialStatus(f model.TCPFlags, isOrig bool) {
	syn, ack := f&model.FlagSYN != 0, f&model.FlagACK != 0
	if isOrig {
		if c.FirstSeen&1 == 0 {
			c.IsPartial = !syn || ack
		}
	} else if c.FirstSeen&2 == 0 && !c.IsPartial {
		c.IsPartial = !syn
	}
	// Zeek marks the side as seen after the PIA check; nothing in between
	// reads it, so do it here.
	if isOrig {
		c.FirstSeen |= 1
	} else {
		c.FirstSeen |= 2
	}
}

// IsReuse is TCPSessionAdapter::IsReuse: does this SYN start a new
// connection on the same 5-tuple?
func (c *Conn) IsReuse(f model.TCPFlags, seq uint32) bool {
	if f&model.FlagSYN == 0 {
		return false
	}
	connOrig := c.Orig()
	if f&model.FlagACK != 0 {
		if c.Orig().State != Inactive {
			return false
		}
		connOrig = c.Resp()
	}
	if !(c.Orig().Closed() || c.Resp().Closed()) {
		if seq == connOrig.StartSeq {
			return false
		}
		if f&model.FlagACK == 0 && connOrig.State == SynAckSent && c.Resp().State == Inactive && seq == c.Resp().StartSeq {
			// SYN and SYN-ACK flipped; the state machine sorts it out.
			return false
		}
	}
	return true
}

// Range is a span [Lo, Hi) of relative sequence space.
type Range struct{ Lo, Hi uint64 }

// InsertRange adds r to sorted, non-overlapping ranges, merging as needed.
func InsertRange(rs []Range, r Range) []Range {
	i := 0
	for i < len(rs) && rs[i].Hi < r.Lo {
		i++
	}
	j := i
	for j < len(rs) && rs[j].Lo <= r.Hi {
		r.Lo = min(r.Lo, rs[j].Lo)
		r.Hi = max(r.Hi, rs[j].Hi)
		j++
	}
	if i == j {
		rs = append(rs, Range{})
		copy(rs[i+1:], rs[i:])
		rs[i] = r
		return rs
	}
	rs[i] = r
	return append(rs[:i+1], rs[j:]...)
}
