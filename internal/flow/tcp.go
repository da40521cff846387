package flow

import (
	"github.com/tcpsentry/tcpsentry/internal/flow/decode"
	"github.com/tcpsentry/tcpsentry/internal/flow/tcp"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// This file follows Zeek's TCP analyzer (TCPSessionAdapter.cc,
// TCP_Endpoint.cc, TCP_Reassembler.cc) closely, because conn_state,
// history and the byte counts are only comparable with Zeek's if the
// endpoint state machine and the sequence bookkeeping are the same.

// History bits: one per letter and direction (resp bits are shifted by 16),
// as in Zeek's Connection::CheckHistory.
const (
	histSYN uint32 = 1 << iota
	histFIN
	histRST
	histFINRST
	histData
	histACK
	histMulti
)

// holes returns the ranges received above a hole for endpoint e (nil
// when there are none).
func (t *Tracker) holes(fl *flow, e *tcp.Endpoint) []tcp.Range {
	if x := t.extOf(fl); x != nil {
		return x.holes[fl.tcp.IndexOf(e)]
	}
	return nil
}

func (t *Tracker) setHoles(fl *flow, e *tcp.Endpoint, h []tcp.Range) {
	if h == nil && fl.ext == 0 {
		return
	}
	t.needExt(fl).holes[fl.tcp.IndexOf(e)] = h
}

// tcpPacket runs one segment through the state machine. It returns false
// when the packet was dropped (bad checksum), so it is not counted.
func (t *Tracker) tcpPacket(fl *flow, isOrig bool, s *decode.TCP, checksumOK bool, now int64) bool {
	c := &fl.tcp
	e, peer := c.Pair(isOrig)
	if !checksumOK {
		t.scaledHistory(fl, isOrig, 'C', &t.needExt(fl).badChecksums[c.IndexOf(e)])
		return false
	}
	flags := s.Flags
	syn, fin, rst, ack := flags&model.FlagSYN != 0, flags&model.FlagFIN != 0, flags&model.FlagRST != 0, flags&model.FlagACK != 0

	c.SetPartialStatus(flags, isOrig)
	segLen := tcp.SegmentLen(s.Length, flags)
	onePast := s.Seq + uint32(segLen)
	e.Init(syn, s.Seq, onePast)

	relSeq, underflow := e.RelativeSeq(s.Seq, e.LastSeq, uint32(e.SeqWraps))
	t.updateHistory(fl, isOrig, e, flags, relSeq, s.Length)
	t.updateWindow(fl, isOrig, e, peer, s.Win, flags)

	if !c.Orig().Closed() || !c.Resp().Closed() {
		fl.last = now
	}
	if fin {
		e.Flags |= tcp.SentFIN
		e.FinSeq = relSeq + uint64(segLen)
	}
	var relAck uint64
	if ack {
		if isOrig && !c.SeenFirstACK && (e.State == tcp.Established || e.State == tcp.SynSent) {
			c.SeenFirstACK = true
		}
		if peer.State == tcp.Inactive {
			relAck = 1
			// Number the peer's sequence space as if its SYN had been seen.
			peer.StartSeq, peer.AckSeq, peer.LastSeq = s.Ack-1, s.Ack-1, s.Ack-1
		} else {
			var under bool
			relAck, under = peer.RelativeSeq(s.Ack, peer.AckSeq, uint32(peer.AckWraps))
			if under {
				relAck = 0
			} else if !rst {
				// ACKs in RSTs are not trusted.
				d := tcp.SeqDelta(s.Ack, peer.AckSeq)
				if !(s.Ack == 0 && d > tcp.TooLargeSeqDelta) && d > 0 {
					peer.UpdateAckSeq(s.Ack)
				}
			}
		}
	}
	t.updateLastSeq(fl, isOrig, e, onePast, flags, s.Length)

	doClose, genEvent := t.updateStateMachine(fl, isOrig, e, peer, s)

	if ack {
		// After the state machine, so that a gap revealed by a FIN or RST's
		// ack is judged with the final states.
		t.ackReceived(fl, peer, relAck)
	}
	relData := relSeq
	if syn {
		relData++
	}
	if s.Length > 0 && !rst && !e.Skipping() && !underflow && s.Captured >= s.Length {
		t.dataSent(fl, e, relData, uint64(s.Length))
	}
	if doClose {
		t.connectionClosed(fl, e, peer, genEvent)
	}
	return true
}

func (t *Tracker) updateHistory(fl *flow, isOrig bool, e *tcp.Endpoint, f model.TCPFlags, relSeq uint64, length int) {
	syn, fin, rst := f&model.FlagSYN != 0, f&model.FlagFIN != 0, f&model.FlagRST != 0
	n := 0
	for _, b := range [3]bool{syn, fin, rst} {
		if b {
			n++
		}
	}
	switch {
	case n > 1:
		if fin && rst {
			t.checkHistory(fl, isOrig, histFINRST, 'I')
		} else {
			t.checkHistory(fl, isOrig, histMulti, 'Q')
		}
	case n == 1:
		if syn {
			code := byte('S')
			if f&model.FlagACK != 0 {
				code = 'H'
			}
			if t.checkHistory(fl, isOrig, histSYN, code) && relSeq != t.lastSeqOf(fl, e, lastSYN) {
				t.addHistory(fl, isOrig, code)
			}
			t.setLastSeqOf(fl, e, lastSYN, relSeq)
		}
		if fin {
			// A FIN's sequence number comes after its data.
			if t.checkHistory(fl, isOrig, histFIN, 'F') && relSeq+uint64(length) != t.lastSeqOf(fl, e, lastFIN) {
				t.addHistory(fl, isOrig, 'F')
			}
			t.setLastSeqOf(fl, e, lastFIN, relSeq+uint64(length))
		}
		if rst {
			if t.checkHistory(fl, isOrig, histRST, 'R') && relSeq != t.lastSeqOf(fl, e, lastRST) {
				t.addHistory(fl, isOrig, 'R')
			}
			t.setLastSeqOf(fl, e, lastRST, relSeq)
		}
	default:
		if length > 0 {
			t.checkHistory(fl, isOrig, histData, 'D')
		} else if f&model.FlagACK != 0 {
			t.checkHistory(fl, isOrig, histACK, 'A')
		}
	}
}

// Indexes of tcp.Endpoint.HistLast.
const (
	lastSYN = iota
	lastFIN
	lastRST
)

// lastSeqOf is the relative sequence number of e's last SYN, FIN or RST
// (which is lastSYN …). Its high 32 bits, almost always zero (they are not
// after 4 GiB or for a segment before the ISN), are kept in the flowExt.
func (t *Tracker) lastSeqOf(fl *flow, e *tcp.Endpoint, which int) uint64 {
	v := uint64(e.HistLast[which])
	if x := t.extOf(fl); x != nil {
		v |= uint64(x.histLastHi[fl.tcp.IndexOf(e)][which]) << 32
	}
	return v
}

func (t *Tracker) setLastSeqOf(fl *flow, e *tcp.Endpoint, which int, v uint64) {
	e.HistLast[which] = uint32(v)
	if hi := uint32(v >> 32); hi != 0 || fl.ext != 0 {
		t.needExt(fl).histLastHi[fl.tcp.IndexOf(e)][which] = hi
	}
}

// updateWindow records a zero window ('W'). Zero windows with or after a
// RST, or after the peer's FIN, are boring.
func (t *Tracker) updateWindow(fl *flow, isOrig bool, e, peer *tcp.Endpoint, win uint16, f model.TCPFlags) {
	if win == 0 && f&model.FlagRST == 0 && peer.State != tcp.Closed && e.State != tcp.Reset {
		t.scaledHistory(fl, isOrig, 'W', &e.ZeroWindows)
	}
}

func (t *Tracker) updateLastSeq(fl *flow, isOrig bool, e *tcp.Endpoint, last uint32, f model.TCPFlags, length int) int32 {
	d := tcp.SeqDelta(last, e.LastSeq)
	switch {
	case f&(model.FlagSYN|model.FlagRST) != 0 && (d > tcp.TooLargeSeqDelta || d < -tcp.TooLargeSeqDelta):
		// Not trusted.
	case f&model.FlagFIN != 0 && e.LastSeq == e.StartSeq+1:
		// Only SYN and FIN seen: accept the FIN even if it seems to go
		// backwards (connections over 2 GB).
		e.UpdateLastSeq(last)
	case e.State == tcp.Reset:
		// Nothing after a RST is trusted.
	case d > 0:
		e.UpdateLastSeq(last)
	case length > 0:
		t.scaledHistory(fl, isOrig, 'T', &e.Rexmits)
	}
	return d
}

// setState is TCP_Endpoint::SetState: finishing the handshake switches the
// connection to the TCP inactivity timeout.
func (t *Tracker) setState(fl *flow, e, peer *tcp.Endpoint, s tcp.State) {
	if s == e.State {
		return
	}
	if !tcp.IsHandshake(s) && tcp.IsHandshake(e.State) && tcp.IsHandshake(peer.State) {
		t.setInactivityTimeout(fl, inactTCP)
	}
	e.PrevState, e.State = e.State, s
}

func (t *Tracker) updateStateMachine(fl *flow, isOrig bool, e, peer *tcp.Endpoint, s *decode.TCP) (doClose, genEvent bool) {
	c := &fl.tcp
	f := s.Flags
	syn, fin, rst, ack := f&model.FlagSYN != 0, f&model.FlagFIN != 0, f&model.FlagRST != 0, f&model.FlagACK != 0
	switch e.State {
	case tcp.Inactive:
		if syn {
			if isOrig {
				if ack {
					t.setState(fl, e, peer, tcp.SynAckSent)
				} else {
					t.setState(fl, e, peer, tcp.SynSent)
				}
				if t.opts.Timeouts.TCPAttemptDelay > 0 {
					fl.attemptAt = t.now + int64(t.opts.Timeouts.TCPAttemptDelay)
					t.reschedule(fl)
				}
			} else {
				if !ack && peer.State == tcp.SynAckSent && s.Seq == e.StartSeq {
					// SYN and SYN-ACK seen in reverse order (two capture
					// interfaces): swap roles and establish.
					c.IsPartial = false
					t.flipRoles(fl)
					// After the flip this endpoint is the originator.
					isOrig = true
					t.setState(fl, peer, e, tcp.Established)
					c.FirstSeen |= 1
				}
				if peer.State == tcp.SynSent {
					t.setState(fl, peer, e, tcp.Established)
				}
				t.setState(fl, e, peer, tcp.Established)
			}
		}
		if fin {
			t.setState(fl, e, peer, tcp.Closed)
			doClose, genEvent = true, true
		}
		if rst {
			t.setState(fl, e, peer, tcp.Reset)
			reject := false
			if isOrig {
				// A SYN-ACK without SYN, then a RST from us: a reverse scan.
				reject = peer.State == tcp.Established
			} else {
				reject = peer.State == tcp.SynSent || peer.State == tcp.SynAckSent
			}
			doClose, genEvent = true, !reject
		}
		if e.State == tcp.Inactive {
			switch {
			case !isOrig && s.Length == 0 && c.Orig().State == tcp.SynSent:
				// Some stacks ack a SYN before answering it: not partial.
			case ack && peer.State == tcp.Established:
				// SYN-ACK seen, SYN missed, now the ACK: established.
				t.setState(fl, e, peer, tcp.Established)
				c.IsPartial = false
			default:
				t.setState(fl, e, peer, tcp.Partial)
			}
		}
	case tcp.SynSent, tcp.SynAckSent:
		if fin {
			t.setState(fl, e, peer, tcp.Closed)
			doClose, genEvent = true, true
		}
		if rst {
			t.setState(fl, e, peer, tcp.Reset)
			c.IsActive = false // ConnectionReset
			doClose = true
		}
	case tcp.Established, tcp.Partial:
		if syn && e.State == tcp.Partial && peer.State == tcp.Inactive && !ack {
			t.setState(fl, e, peer, tcp.SynSent)
		}
		if fin && !rst {
			t.setState(fl, e, peer, tcp.Closed)
			if peer.State == tcp.Reset && peer.PrevState == tcp.Closed {
				// FIN then RST from the peer was a normal close.
				t.setState(fl, peer, e, tcp.Closed)
			}
			doClose, genEvent = true, true
		}
		if rst {
			t.setState(fl, e, peer, tcp.Reset)
			doClose = true
			if peer.State != tcp.Reset || peer.PrevState != tcp.Established {
				c.IsActive = false
			}
		}
	case tcp.Closed:
		// After our FIN a RST moves us to RESET unless the peer closed too.
		if rst && peer.State != tcp.Closed {
			t.setState(fl, e, peer, tcp.Reset)
			if !e.Closed() {
				doClose = true
			}
		}
	case tcp.Reset:
	}
	return doClose, genEvent
}

// connectionClosed is TCPSessionAdapter::ConnectionClosed.
func (t *Tracker) connectionClosed(fl *flow, e, peer *tcp.Endpoint, genEvent bool) {
	if e.Closed() {
		return
	}
	e.Flags |= tcp.DidClose
	complete := e.State == tcp.Reset || peer.Closed() || peer.State == tcp.Inactive
	if complete {
		if (e.PrevState != tcp.Inactive || peer.State != tcp.Inactive) && genEvent {
			fl.tcp.IsActive = false // ConnectionFinished
		}
		// Analyzer timers are cancelled; the connection's inactivity timer stays.
		fl.attemptAt, fl.expireAt[0], fl.expireAt[1] = 0, 0, 0
		fl.deleteAt = fl.last + int64(t.opts.Timeouts.TCPCloseDelay)
		t.reschedule(fl)
		return
	}
	if e.PrevState != tcp.Inactive {
		// Look for the other side closing too.
		fl.addExpire(fl.last + int64(t.opts.Timeouts.TCPSessionTimer))
		t.reschedule(fl)
	}
}

// ackReceived is TCP_Reassembler::AckReceived for endpoint e's data.
func (t *Tracker) ackReceived(fl *flow, e *tcp.Endpoint, seq uint64) {
	if e.FinSent() && seq >= e.FinSeq {
		seq = e.FinSeq - 1
	}
	if seq <= e.TrimSeq {
		return
	}
	if seq > e.LastReassem {
		t.undelivered(fl, e, seq)
	}
	if h := t.holes(fl, e); len(h) > 0 {
		// Drop ranges now below the trim point.
		i := 0
		for i < len(h) && h[i].Hi <= seq {
			i++
		}
		if i > 0 {
			h = append(h[:0], h[i:]...)
		}
		if len(h) > 0 && h[0].Lo < seq {
			h[0].Lo = seq
		}
		t.setHoles(fl, e, h)
	}
	e.TrimSeq = seq
}

// undelivered reports the holes below upTo as content gaps.
func (t *Tracker) undelivered(fl *flow, e *tcp.Endpoint, upTo uint64) {
	if upTo <= 2 && fl.tcp.IsPartial {
		// The faked initial sequence number of a partial connection.
		return
	}
	if !e.Skipping() {
		if h := t.holes(fl, e); len(h) > 0 {
			for len(h) > 0 && h[0].Lo < upTo {
				r := h[0]
				if r.Lo > e.LastReassem {
					t.gap(fl, e, r.Lo-e.LastReassem)
					e.LastReassem = r.Lo
				}
				if r.Hi > e.LastReassem {
					e.LastReassem = r.Hi
				}
				h = append(h[:0], h[1:]...)
			}
			t.setHoles(fl, e, h)
		}
		if upTo > e.LastReassem {
			t.gap(fl, e, upTo-e.LastReassem)
		}
	}
	if upTo > e.LastReassem {
		e.LastReassem = upTo
	}
}

// gap records missing bytes; like Zeek, only for cleanly established or
// closing connections, where gaps are not artefacts of partial state.
func (t *Tracker) gap(fl *flow, e *tcp.Endpoint, n uint64) {
	c := &fl.tcp
	var peer *tcp.Endpoint
	if c.IsOrig(e) {
		peer = c.Resp()
	} else {
		peer = c.Orig()
	}
	if e.Clean() && peer.Clean() {
		x := t.needExt(fl)
		t.scaledHistory(fl, c.IsOrig(e), 'G', &x.gaps[c.IndexOf(e)])
		x.missed += n
	}
}

// dataSent is TCP_Reassembler::DataSent reduced to sequence bookkeeping.
func (t *Tracker) dataSent(fl *flow, e *tcp.Endpoint, seq, n uint64) {
	ack := e.Relative(e.AckSeq, uint32(e.AckWraps))
	upper := seq + n
	if seq < ack {
		if upper <= ack {
			return // delivered and acked already
		}
		seq = ack
	}
	if upper <= e.TrimSeq {
		return
	}
	if seq < e.TrimSeq {
		seq = e.TrimSeq
	}
	h := t.holes(fl, e)
	if seq <= e.LastReassem {
		if upper > e.LastReassem {
			e.LastReassem = upper
			// Fill from buffered ranges that are now contiguous.
			if len(h) > 0 {
				for len(h) > 0 && h[0].Lo <= e.LastReassem {
					if h[0].Hi > e.LastReassem {
						e.LastReassem = h[0].Hi
					}
					h = append(h[:0], h[1:]...)
				}
				t.setHoles(fl, e, h)
			}
			c := &fl.tcp
			peer := c.Orig()
			if c.IsOrig(e) {
				peer = c.Resp()
			}
			if e.NoDataAcked() && e.Size(peer) > uint64(t.opts.maxInitialWindow()) {
				// Lots of unacked data: the acks are probably not visible.
				if e.LastReassem > e.TrimSeq {
					e.TrimSeq = e.LastReassem
				}
			}
		}
	} else {
		h = tcp.InsertRange(h, tcp.Range{Lo: seq, Hi: upper})
		t.setHoles(fl, e, h)
	}
	if e.NoDataAcked() && len(h) > 0 && h[len(h)-1].Hi-e.LastReassem > uint64(t.opts.maxInitialWindow()) {
		// Zeek's tcp_max_above_hole_without_any_acks: give up on this side.
		t.setHoles(fl, e, h[:0])
		e.Flags |= tcp.Skip
	}
}
