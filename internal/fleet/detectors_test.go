package fleet

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

func conn(ts time.Duration, src, dst string, state model.ConnState) *model.Conn {
	return &model.Conn{TS: scenarioStart.Add(ts), UID: fmt.Sprint("C", ts), Orig: netip.MustParseAddrPort(src),
		Resp: netip.MustParseAddrPort(dst), Proto: model.ProtoTCP, ConnState: state}
}

func TestDestinationDetector(t *testing.T) {
	type obs struct {
		host string
		c    *model.Conn
	}
	beacons := func(hosts ...string) []obs {
		var out []obs
		for k := range 5 {
			for i, h := range hosts {
				// irregular intervals for the host named "jitter"
				j := time.Duration(0)
				if h == "jitter" {
					j = time.Duration(k*k*20) * time.Second
				}
				out = append(out, obs{h, conn(time.Duration(k)*time.Minute+time.Duration(i)*time.Second+j, "10.0.0.1:4000", "203.0.113.7:443", model.ConnSF)})
			}
		}
		return out
	}
	for _, tc := range []struct {
		name            string
		in              []obs
		alerts          int
		hosts           int
		periodic        int
		severityAtLeast alert.Severity
	}{
		{"two hosts are not enough", beacons("a", "b"), 0, 0, 0, 0},
		{"three periodic hosts", beacons("a", "b", "c"), 1, 3, 3, alert.High},
		{"one host irregular", beacons("a", "b", "jitter"), 1, 3, 2, alert.Medium},
		// One check-in missed (an interval of 121 s among ~60 s ones) and
		// a few seconds of jitter: a standard deviation would call it
		// irregular (coefficient of variation 0.34), the median absolute
		// deviation does not.
		{"missed check-in still periodic", append(beacons("a", "b"), func() []obs {
			var out []obs
			for _, at := range []time.Duration{0, 61, 119, 240, 298, 361} {
				out = append(out, obs{"missed", conn(at*time.Second, "10.0.0.9:4000", "203.0.113.7:443", model.ConnSF)})
			}
			return out
		}()...), 1, 3, 3, alert.High},
		{"internal destination ignored", []obs{
			{"a", conn(0, "10.0.0.1:1", "10.9.9.9:445", model.ConnSF)},
			{"b", conn(1, "10.0.0.2:1", "10.9.9.9:445", model.ConnSF)},
			{"c", conn(2, "10.0.0.3:1", "10.9.9.9:445", model.ConnSF)}}, 0, 0, 0, 0},
		{"windows do not mix", []obs{
			{"a", conn(0, "10.0.0.1:1", "203.0.113.9:80", model.ConnSF)},
			{"b", conn(time.Second, "10.0.0.2:1", "203.0.113.9:80", model.ConnSF)},
			{"c", conn(2*time.Hour, "10.0.0.3:1", "203.0.113.9:80", model.ConnSF)}}, 0, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDestinationDetector(testConfig(t, 4))
			agg := alert.NewAggregator()
			for _, o := range tc.in {
				d.observe(o.c, o.host, agg.Add)
			}
			d.flush(scenarioStart.Add(time.Hour), agg.Add)
			as := agg.Alerts()
			if len(as) != tc.alerts {
				t.Fatalf("%d alerts, want %d: %+v", len(as), tc.alerts, as)
			}
			if tc.alerts == 0 {
				return
			}
			a := as[0]
			if a.Evidence["hosts"] != tc.hosts || a.Evidence["periodic_hosts"] != tc.periodic || a.Severity < tc.severityAtLeast {
				t.Errorf("evidence %v severity %v, want hosts %d periodic %d severity ≥ %v", a.Evidence, a.Severity, tc.hosts, tc.periodic, tc.severityAtLeast)
			}
			if tc.periodic > 0 {
				if iv := a.Evidence["interval_s"]; iv != 60.0 && iv != 61.0 {
					t.Errorf("interval_s %v, want the hosts' median interval, 60 or 61 s", iv)
				}
			}
			if err := a.Validate(); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestScanDetector(t *testing.T) {
	probes := func(sentries int, perSentry int, state model.ConnState) []struct {
		host string
		c    *model.Conn
	} {
		var out []struct {
			host string
			c    *model.Conn
		}
		for s := range sentries {
			for k := range perSentry {
				out = append(out, struct {
					host string
					c    *model.Conn
				}{fmt.Sprint("s", s), conn(time.Duration(s*perSentry+k)*time.Millisecond, "198.51.100.9:5000",
					fmt.Sprintf("10.0.%d.%d:22", s, k), state)})
			}
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		in     int
		per    int
		state  model.ConnState
		alerts int
	}{
		{"one sentry sees it all", 1, 40, model.ConnREJ, 0},
		{"spread over three sentries", 3, 10, model.ConnREJ, 1},
		{"answered connections are not probes", 3, 10, model.ConnSF, 0},
		{"below min_targets", 2, 9, model.ConnS0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newScanDetector(testConfig(t, 4))
			agg := alert.NewAggregator()
			for _, o := range probes(tc.in, tc.per, tc.state) {
				d.observe(o.c, o.host, agg.Add)
			}
			d.flush(scenarioStart.Add(time.Hour), agg.Add)
			if got := agg.Len(); got != tc.alerts {
				t.Fatalf("%d alerts, want %d: %+v", got, tc.alerts, agg.Alerts())
			}
		})
	}
}

// TestDetectorsBounded: a flood of distinct destinations and sources keeps
// the state at its cap and counts what it turned away.
func TestDetectorsBounded(t *testing.T) {
	cfg := testConfig(t, 4)
	cfg.Fleet.Destination.MaxDests = 100
	cfg.Fleet.Scan.MaxSources = 100
	d, s := newDestinationDetector(cfg), newScanDetector(cfg)
	for i := range 1000 {
		c := conn(time.Duration(i)*time.Millisecond, fmt.Sprintf("198.51.%d.%d:1", i>>8, i&255),
			fmt.Sprintf("203.0.%d.%d:443", i>>8, i&255), model.ConnS0)
		d.observe(c, "h", func(alert.Alert) {})
		s.observe(c, "h", func(alert.Alert) {})
	}
	if len(d.dests) > 100 || len(s.sources) > 100 || d.Evicted != 900 || s.Evicted != 900 {
		t.Errorf("destinations %d (evicted %d), sources %d (evicted %d)", len(d.dests), d.Evicted, len(s.sources), s.Evicted)
	}
}

func TestLeases(t *testing.T) {
	url := startServer(t)
	js, _ := jetstream.New(connect(t, url))
	cfg := testConfig(t, 4)
	cfg.Fleet.LeaseTTL.Duration = time.Second
	ctx := t.Context()
	if err := Init(ctx, js, cfg.Fleet); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, LeaseBucket)
	if err != nil {
		t.Fatal(err)
	}
	a := &leases{kv: kv, owner: "a", held: map[int]uint64{}}
	b := &leases{kv: kv, owner: "b", held: map[int]uint64{}}
	if ok, err := a.claim(ctx, 0); !ok || err != nil {
		t.Fatalf("a claims 0: %v %v", ok, err)
	}
	if ok, err := b.claim(ctx, 0); ok || err != nil {
		t.Fatalf("b claimed a's partition: %v %v", ok, err)
	}
	if err := a.renew(ctx, 0); err != nil {
		t.Fatal(err)
	}
	// a stops renewing (a crash): the lease lapses and b takes it; a's
	// late renewal then fails.
	if !waitFor(10*time.Second, func() bool { ok, _ := b.claim(context.Background(), 0); return ok }) {
		t.Fatal("lease never lapsed")
	}
	if err := a.renew(ctx, 0); err == nil {
		t.Fatal("a renewed a lease b holds")
	}
	// A release frees at once.
	b.release(ctx, 0)
	if ok, _ := a.claim(ctx, 0); !ok {
		t.Fatal("released partition not claimable")
	}
	n, err := a.members(ctx)
	if err != nil || n != 1 {
		t.Fatalf("members %d %v", n, err)
	}
	if n, _ := b.members(ctx); n != 2 {
		t.Fatalf("members after b joined: %d", n)
	}
}

func TestChainDetector(t *testing.T) {
	type obs struct {
		c   *model.Conn
		src bool // which side the record arrives on
	}
	ab := conn(0, "10.0.0.1:5000", "10.0.0.2:22", model.ConnSF)
	bc := conn(time.Minute, "10.0.0.2:5001", "10.0.0.3:445", model.ConnSF)
	ba := conn(time.Minute, "10.0.0.2:5001", "10.0.0.1:22", model.ConnSF)
	bcEarly := conn(-time.Minute, "10.0.0.2:5001", "10.0.0.3:445", model.ConnSF)
	bcLate := conn(2*time.Hour, "10.0.0.2:5001", "10.0.0.3:445", model.ConnSF)
	bcRefused := conn(time.Minute, "10.0.0.2:5001", "10.0.0.3:445", model.ConnREJ)
	bcWeb := conn(time.Minute, "10.0.0.2:5001", "10.0.0.3:80", model.ConnSF)
	bExt := conn(time.Minute, "10.0.0.2:5001", "203.0.113.3:22", model.ConnSF)
	for _, tc := range []struct {
		name   string
		in     []obs
		alerts int
	}{
		{"A to B then B to C", []obs{{ab, false}, {bc, true}}, 1},
		{"records arrive in the other order", []obs{{bc, true}, {ab, false}}, 1},
		{"reported once", []obs{{ab, false}, {bc, true}, {bc, true}}, 1},
		{"back to the origin is not a chain", []obs{{ab, false}, {ba, true}}, 0},
		{"B to C before A to B", []obs{{ab, false}, {bcEarly, true}}, 0},
		{"beyond the window", []obs{{ab, false}, {bcLate, true}}, 0},
		{"refused second hop", []obs{{ab, false}, {bcRefused, true}}, 0},
		{"not an admin port", []obs{{ab, false}, {bcWeb, true}}, 0},
		{"external third host", []obs{{ab, false}, {bExt, true}}, 0},
		{"same side twice is not a chain", []obs{{ab, true}, {bc, true}}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newChainDetector(testConfig(t, 4))
			agg := alert.NewAggregator()
			for _, o := range tc.in {
				d.observe(o.c, "h", o.src, agg.Add)
			}
			if agg.Len() != tc.alerts {
				t.Fatalf("%d alerts, want %d: %+v", agg.Len(), tc.alerts, agg.Alerts())
			}
			if tc.alerts == 1 {
				a := agg.Alerts()[0]
				if a.Entity != "chain 10.0.0.1>10.0.0.2>10.0.0.3" || a.Validate() != nil {
					t.Errorf("alert %+v", a)
				}
			}
		})
	}
}

func BenchmarkEncodeDecode(b *testing.B) {
	c := scenario(0, 1)[0]
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Decode(Encode(c, "h", 16)); err != nil {
			b.Fatal(err)
		}
	}
}
