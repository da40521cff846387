package flow

import (
	"time"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// markDirty lists fl for the next Progress call, once.
func (t *Tracker) markDirty(fl *flow) {
	if t.dirtyOn && fl.bits&bitDirty == 0 {
		fl.bits |= bitDirty
		t.dirty = append(t.dirty, fl.id)
	}
}

// Progress is for live sources. It first moves the clock to now (the
// later of now and the last packet's time), so that timers fire and idle
// flows end (through emit) on a quiet link too; then it calls fn with an
// in-progress record (End model.EndOpen: counters, state and duration so
// far) of each flow still open that saw a packet since the previous call.
// It returns the number of records given to fn, which owns them.
//
// Its cost is bounded by the flows touched since the previous call, not
// the table: the tracker lists flows as packets touch them, from the
// first call on (which reports every open flow once).
func (t *Tracker) Progress(now time.Time, fn func(*model.Conn)) int {
	ns := max(now.UnixNano(), t.now)
	t.advance(ns)
	if !t.dirtyOn {
		t.dirtyOn = true
		for id, fl := range t.flows.All() {
			fl.bits |= bitDirty
			t.dirty = append(t.dirty, id)
		}
	}
	n := 0
	for _, id := range t.dirty {
		fl := t.flows.Get(id)
		// Not dirty: the flow ended (remove cleared the mark) or its ID
		// was reused and listed again.
		if fl.bits&bitDirty == 0 {
			continue
		}
		fl.bits &^= bitDirty
		if fn != nil {
			fn(t.record(fl, model.EndOpen))
		}
		fl.bits |= bitReported
		n++
	}
	clear(t.dirty)
	t.dirty = t.dirty[:0]
	return n
}
