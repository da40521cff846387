package flow

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/capture"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// PacketPoller is a live packet source (live.Source): Poll hands the
// frames that are ready to fn, waiting up to wait for one, and returns
// promptly when ctx ends.
type PacketPoller interface {
	Poll(ctx context.Context, wait time.Duration, fn func(*capture.Packet)) (int, error)
}

// LiveInput says what RunLive reads and where its results go.
type LiveInput struct {
	Source PacketPoller
	// Names are the interfaces' names by capture.Packet.Iface, for
	// messages; "live:N" when missing.
	Names   []string
	Options Options
	Emit    func(*model.Conn) // each finished connection
	// Progress, when set, receives in-progress records (End "open") of the
	// flows that changed, every Interval.
	Progress func(*model.Conn)
	// Interval is how often the clock advances without packets (so idle
	// flows end on a quiet link) and Progress runs; default 1 s.
	Interval time.Duration
	// Tick, when set, is called after each interval's work with the
	// tracker's counters (for metrics).
	Tick func(now time.Time, s Stats)
	// Warn receives undecodable packets (the first MaxWarnings, then
	// a count per interval) and unsupported link types (once each).
	Warn        func(error)
	MaxWarnings int              // default 20
	Now         func() time.Time // the wall clock; default time.Now
}

// RunLive pumps a live source into a Tracker until ctx ends or the source
// fails, then flushes the flows still open (End "eof"). A normal stop (ctx
// ended) returns a nil error.
func RunLive(ctx context.Context, in LiveInput) (Stats, error) {
	t := NewTracker(in.Options, in.Emit)
	warn := in.Warn
	if warn == nil {
		warn = func(error) {}
	}
	now := in.Now
	if now == nil {
		now = time.Now
	}
	interval := in.Interval
	if interval <= 0 {
		interval = time.Second
	}
	maxWarn := in.MaxWarnings
	if maxWarn <= 0 {
		maxWarn = 20
	}
	var (
		warned, suppressed int
		unsupported        = map[capture.LinkType]bool{}
		num                int
	)
	handle := func(p *capture.Packet) {
		num++ // PacketError.Packet: the frame's number since the start, over all interfaces
		err := t.Packet(p)
		if err == nil {
			return
		}
		if errors.Is(err, capture.ErrUnsupportedLink) {
			if !unsupported[p.Link] {
				unsupported[p.Link] = true
				warn(fmt.Errorf("live capture: link type %s has no decoder; its packets are counted and skipped", p.Link))
			}
			return
		}
		if warned < maxWarn {
			warned++
			name := fmt.Sprintf("live:%d", p.Iface)
			if p.Iface >= 0 && p.Iface < len(in.Names) {
				name = "live:" + in.Names[p.Iface]
			}
			warn(&PacketError{File: name, Packet: num, Err: err})
		} else {
			suppressed++
		}
	}
	next := now().Add(interval)
	var runErr error
	for {
		wait := max(next.Sub(now()), 0)
		_, err := in.Source.Poll(ctx, wait, handle)
		if err != nil {
			if ctx.Err() == nil {
				runErr = err
			}
			break
		}
		if n := now(); !n.Before(next) {
			t.Progress(n, in.Progress)
			if suppressed > 0 {
				warn(fmt.Errorf("live capture: %d more bad packets not listed", suppressed))
				suppressed = 0
			}
			if in.Tick != nil {
				in.Tick(n, t.Stats())
			}
			next = n.Add(interval)
		}
	}
	t.Flush()
	return t.Stats(), runErr
}
