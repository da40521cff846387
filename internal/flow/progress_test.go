package flow

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/capture"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

func feed(t *testing.T, tr *Tracker, ps ...pkt) {
	t.Helper()
	for _, p := range ps {
		b := ipv4Frame(p)
		if err := tr.Packet(&capture.Packet{Time: t0.Add(p.at), Data: b, WireLen: len(b), Link: capture.LinkEthernet}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestProgress(t *testing.T) {
	var ended []*model.Conn
	tr := NewTracker(Options{}, func(c *model.Conn) { ended = append(ended, c) })
	var open []*model.Conn
	collect := func(c *model.Conn) { open = append(open, c) }
	ms := time.Millisecond

	// Before the first call the tracker keeps no list: the first call
	// reports every open flow.
	feed(t, tr, tcpPkt(0, cli, srv, fS, 100, 0, 0), tcpPkt(ms, srv, cli, fS|fA, 500, 101, 0), tcpPkt(2*ms, cli, srv, fA, 101, 501, 0))
	if n := tr.Progress(t0.Add(time.Second), collect); n != 1 || len(open) != 1 {
		t.Fatalf("first Progress: %d records, want 1", n)
	}
	c := open[0]
	if c.End != model.EndOpen || c.ConnState != model.ConnS1 || c.Duration != 2*ms || c.OrigPkts != 2 || c.RespPkts != 1 || !c.TS.Equal(t0) {
		t.Errorf("in-progress record: %s dur %v", summary(open), c.Duration)
	}
	if n := tr.Progress(t0.Add(2*time.Second), collect); n != 0 {
		t.Errorf("no packets since: %d records, want 0", n)
	}
	// Data on the flow: reported again, with the counters so far and the same uid.
	feed(t, tr, tcpPkt(3*time.Second, cli, srv, fA|fP, 101, 501, 10))
	open = nil
	if n := tr.Progress(t0.Add(3*time.Second), collect); n != 1 || open[0].OrigPkts != 3 || open[0].OrigBytes != 10 || open[0].UID != c.UID {
		t.Fatalf("after data: %d records %s", n, summary(open))
	}
	// A second flow: only it is reported.
	feed(t, tr, pkt{at: 4 * time.Second, src: "10.0.0.3:5000", dst: "10.0.0.4:53", proto: ipProtoUDP, payload: 30})
	open = nil
	if n := tr.Progress(t0.Add(4*time.Second), collect); n != 1 || open[0].Proto != model.ProtoUDP || open[0].ConnState != model.ConnS0 {
		t.Fatalf("second flow: %d records %s", n, summary(open))
	}
	// A quiet link: the clock moves with Progress and the inactivity
	// timers end both flows (UDP after 1 min, TCP after 5).
	open = nil
	tr.Progress(t0.Add(2*time.Minute), collect)
	if len(ended) != 1 || ended[0].Proto != model.ProtoUDP || ended[0].End != model.EndTimeout {
		t.Fatalf("after 2 min of silence: ended %s", summary(ended))
	}
	tr.Progress(t0.Add(10*time.Minute), collect)
	if len(ended) != 2 || ended[1].Proto != model.ProtoTCP || ended[1].End != model.EndTimeout || len(open) != 0 {
		t.Fatalf("after 10 min of silence: ended %s open %s", summary(ended), summary(open))
	}
	if tr.Stats().Active != 0 {
		t.Errorf("%d flows still active", tr.Stats().Active)
	}
}

// A flow that ends between two calls is not reported as open, even when
// a new flow takes its table slot and is reported (once).
func TestProgressReusedSlot(t *testing.T) {
	var ended []*model.Conn
	tr := NewTracker(Options{}, func(c *model.Conn) { ended = append(ended, c) })
	tr.Progress(t0, nil) // start keeping the list
	feed(t, tr, pkt{at: 0, src: "10.0.0.3:5000", dst: "10.0.0.4:53", proto: ipProtoUDP})
	tr.Advance(t0.Add(2 * time.Minute)) // ends it (UDP inactivity)
	feed(t, tr, pkt{at: 2 * time.Minute, src: "10.0.0.5:5000", dst: "10.0.0.4:53", proto: ipProtoUDP})
	var open []*model.Conn
	if n := tr.Progress(t0.Add(2*time.Minute), func(c *model.Conn) { open = append(open, c) }); n != 1 || open[0].Orig.Addr().String() != "10.0.0.5" {
		t.Fatalf("records %s (ended %s)", summary(open), summary(ended))
	}
	if len(ended) != 1 {
		t.Fatalf("ended %s", summary(ended))
	}
}

// Progress costs what was touched: with a large idle table, a call after
// one packet visits one flow.
func TestProgressBounded(t *testing.T) {
	tr := NewTracker(Options{}, nil)
	for i := range 5000 {
		feed(t, tr, pkt{at: 0, src: fmt.Sprintf("10.1.%d.%d:1000", i/250, i%250+1), dst: "10.0.0.4:53", proto: ipProtoUDP})
	}
	if n := tr.Progress(t0, nil); n != 5000 {
		t.Fatalf("first call: %d, want 5000", n)
	}
	feed(t, tr, pkt{at: time.Second, src: "10.1.0.1:1000", dst: "10.0.0.4:53", proto: ipProtoUDP})
	if n := tr.Progress(t0.Add(time.Second), nil); n != 1 || cap(tr.dirty) < 5000 || len(tr.dirty) != 0 {
		t.Fatalf("second call: %d records, list %d/%d", n, len(tr.dirty), cap(tr.dirty))
	}
}

// replay is a PacketPoller over prepared frames, one batch per Poll.
type replay struct {
	batches [][]capture.Packet
	polls   int
}

func (r *replay) Poll(ctx context.Context, wait time.Duration, fn func(*capture.Packet)) (int, error) {
	r.polls++
	if len(r.batches) == 0 {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(wait):
			return 0, nil
		}
	}
	b := r.batches[0]
	r.batches = r.batches[1:]
	for i := range b {
		fn(&b[i])
	}
	return len(b), nil
}

func TestRunLive(t *testing.T) {
	frame := func(p pkt) capture.Packet {
		b := ipv4Frame(p)
		return capture.Packet{Time: t0.Add(p.at), Data: b, WireLen: len(b), Link: capture.LinkEthernet}
	}
	src := &replay{batches: [][]capture.Packet{
		{frame(tcpPkt(0, cli, srv, fS, 100, 0, 0))},
		{frame(tcpPkt(0, "10.0.0.9:1234", srv, fS, 7, 0, 0)), {Data: []byte{1, 2}, Link: capture.LinkEthernet}},
	}}
	// The clock: the test's, moved one interval per call, so Progress runs
	// after each Poll.
	now := t0
	clock := func() time.Time { now = now.Add(100 * time.Millisecond); return now }
	ctx, cancel := context.WithCancel(context.Background())
	var open, ended []*model.Conn
	var warns []error
	ticks := 0
	st, err := RunLive(ctx, LiveInput{
		Source: src, Names: []string{"eth7"}, Interval: 100 * time.Millisecond, Now: clock,
		Emit:     func(c *model.Conn) { ended = append(ended, c) },
		Progress: func(c *model.Conn) { open = append(open, c) },
		Warn:     func(err error) { warns = append(warns, err) },
		Tick: func(time.Time, Stats) {
			if ticks++; ticks == 3 {
				cancel()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(open) != 2 || open[0].End != model.EndOpen || open[0].ConnState != model.ConnS0 {
		t.Errorf("in-progress: %s", summary(open))
	}
	if len(ended) != 2 || ended[0].End != model.EndEOF || ended[0].ConnState != model.ConnS0 || ended[1].ConnState != model.ConnS0 {
		t.Errorf("ended: %s", summary(ended))
	}
	if st.Packets != 3 || st.Errors != 1 || len(warns) != 1 || !strings.HasPrefix(warns[0].Error(), "live:eth7: packet 3: ") {
		t.Errorf("stats %v, warnings %v", st, warns)
	}
}

// Progress after a few packets in a large table: cost and allocations
// follow the flows touched (here 100 of 10,000), not the table.
func BenchmarkProgress(b *testing.B) {
	tr := NewTracker(Options{}, nil)
	var frames [][]byte
	for i := range 10000 {
		frames = append(frames, ipv4Frame(pkt{src: fmt.Sprintf("10.1.%d.%d:1000", i/250, i%250+1), dst: "10.0.0.4:53", proto: ipProtoUDP}))
	}
	p := capture.Packet{Link: capture.LinkEthernet}
	send := func(i int, at time.Time) {
		p.Time, p.Data, p.WireLen = at, frames[i], len(frames[i])
		if err := tr.Packet(&p); err != nil {
			b.Fatal(err)
		}
	}
	for i := range frames {
		send(i, t0)
	}
	tr.Progress(t0, nil)
	now := t0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Millisecond)
		for i := range 100 {
			send(i*97%len(frames), now)
		}
		if n := tr.Progress(now, nil); n != 100 {
			b.Fatalf("%d flows reported, want 100", n)
		}
	}
}
