package fleet

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

func testLog(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

// startServer runs an in-process JetStream server on a free loopback port.
func startServer(t testing.TB) string {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: t.TempDir(), NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(s.Shutdown)
	return s.ClientURL()
}

func testConfig(t testing.TB, partitions int) *config.Config {
	t.Helper()
	cfg, err := config.Parse(fmt.Appendf(nil, "fleet:\n  partitions: %d\n  lease_ttl: 2s\n", partitions), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := Connect(ConnectOptions{URLs: []string{url}, Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func TestPartitionAndSubjects(t *testing.T) {
	for _, tc := range []struct {
		a, b string
	}{{"10.0.0.1", "::ffff:10.0.0.1"}, {"2001:db8::1", "2001:db8::1"}} {
		pa, pb := Partition(netip.MustParseAddr(tc.a), 16), Partition(netip.MustParseAddr(tc.b), 16)
		if pa != pb || pa < 0 || pa >= 16 {
			t.Errorf("Partition(%s)=%d, Partition(%s)=%d", tc.a, pa, tc.b, pb)
		}
	}
	// The partitions spread: 4096 addresses over 16 partitions, none empty
	// and none with more than twice its share.
	counts := make([]int, 16)
	for i := range 4096 {
		counts[Partition(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 16)]++
	}
	for p, n := range counts {
		if n == 0 || n > 512 {
			t.Errorf("partition %d has %d of 4096 addresses", p, n)
		}
	}
	for in, want := range map[string]string{"web-1": "web-1", "a.b c*>": "a_b_c__", "": "_"} {
		if got := HostToken(in); got != want {
			t.Errorf("HostToken(%q) = %q, want %q", in, got, want)
		}
	}
	if got := ConnSubject(3, 7, "h"); got != "tcpsentry.conn.3.7.h" || hostOf(got) != "h" {
		t.Errorf("ConnSubject = %q", got)
	}
}

func TestEncodeDecode(t *testing.T) {
	c := scenario(0, 0)[0]
	c.Update = true
	m := Encode(c, "h1", 16)
	got, host, err := Decode(m)
	if err != nil {
		t.Fatal(err)
	}
	if host != "h1" || got.UID != c.UID || got.Resp != c.Resp || got.ConnState != c.ConnState || !got.Update || !got.TS.Equal(c.TS) {
		t.Errorf("round trip: got %+v host %q, want %+v", got, host, c)
	}
	c2 := *c
	c2.Duration += time.Second
	if Encode(&c2, "h1", 16).Header.Get(jetstream.MsgIDHeader) == m.Header.Get(jetstream.MsgIDHeader) {
		t.Error("a later record of the same uid has the same Nats-Msg-Id: JetStream would drop it")
	}
	if _, _, err := Decode(&nats.Msg{Subject: "tcpsentry.conn.1.2.h", Data: []byte(`{"ts":1,"uid":"x"}`)}); err == nil {
		t.Error("a record without addresses decoded")
	}
}

func TestInitIdempotent(t *testing.T) {
	url := startServer(t)
	nc := connect(t, url)
	js, _ := jetstream.New(nc)
	cfg := testConfig(t, 4)
	ctx := t.Context()
	for range 2 {
		if err := Init(ctx, js, cfg.Fleet); err != nil {
			t.Fatal(err)
		}
	}
	cfg.Fleet.ConnMaxAge.Duration = time.Hour
	if err := Init(ctx, js, cfg.Fleet); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, ConnStream)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.MaxAge; got != time.Hour {
		t.Errorf("max age after update = %v", got)
	}
}

// alertLog collects committed alerts.
type alertLog struct {
	mu     sync.Mutex
	alerts []alert.Alert
}

func (l *alertLog) commit(_ context.Context, _ time.Time, as []alert.Alert) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.alerts = append(l.alerts, as...)
	return nil
}

func (l *alertLog) byDetector(d string) []alert.Alert {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []alert.Alert
	for _, a := range l.alerts {
		if a.Detector == d {
			out = append(out, a)
		}
	}
	return out
}

// seenSet records which message ids an analyzer consumed on the source side.
type seenSet struct {
	mu   sync.Mutex
	ids  map[string]int
	redo int
}

func (s *seenSet) record(id string, src, redelivered bool) {
	if !src {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil {
		s.ids = map[string]int{}
	}
	s.ids[id]++
	if redelivered {
		s.redo++
	}
}

func (s *seenSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ids)
}

// publishAll publishes the scenario of every sentry and waits for the acks.
func publishAll(t testing.TB, url string, cfg *config.Config, background int) (acked uint64) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, h := range scenarioHosts {
		wg.Go(func() {
			nc := connect(t, url)
			p, err := NewConnPublisher(nc, PublisherOptions{Host: h, Partitions: cfg.Fleet.Partitions, Window: 4096, Spool: testSpool(t)})
			if err != nil {
				t.Error(err)
				return
			}
			in := make(chan *model.Conn, 1024)
			go func() {
				for _, c := range scenario(i, background) {
					in <- c
				}
				close(in)
			}()
			if err := p.Run(context.Background(), in, 30*time.Second); err != nil {
				t.Error(err)
			}
			if d := p.Stats.Dropped.Load(); d != 0 {
				t.Errorf("%s dropped %d records", h, d)
			}
			mu.Lock()
			acked += p.Stats.Acked.Load()
			mu.Unlock()
		})
	}
	wg.Wait()
	return acked
}

// waitFor polls cond every 50 ms up to limit.
func waitFor(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return cond()
}

func TestAnalyzersShareAndDetect(t *testing.T) {
	url := startServer(t)
	cfg := testConfig(t, 8)
	js, _ := jetstream.New(connect(t, url))
	if err := Init(t.Context(), js, cfg.Fleet); err != nil {
		t.Fatal(err)
	}
	var alerts alertLog
	var seen seenSet
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	analyzers := make([]*Analyzer, 2)
	for i := range analyzers {
		a, err := NewAnalyzer(connect(t, url), AnalyzerOptions{Config: cfg, Owner: fmt.Sprintf("an-%d", i),
			Commit: alerts.commit, OnRecord: seen.record, Log: testLog(t)})
		if err != nil {
			t.Fatal(err)
		}
		analyzers[i] = a
		wg.Go(func() {
			if err := a.Run(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	// Both take a share (the first may claim everything before the second
	// announces itself, then hands half back at its next renewal).
	if !waitFor(20*time.Second, func() bool {
		return analyzers[0].Stats.Claimed.Load() > 0 && analyzers[1].Stats.Claimed.Load() > 0
	}) {
		t.Fatal("the two analyzers did not share the partitions")
	}
	acked := publishAll(t, url, cfg, 200)
	want := uint64(0)
	for i := range scenarioHosts {
		want += uint64(len(scenario(i, 200)))
	}
	if acked != want {
		t.Fatalf("acked %d records, want %d", acked, want)
	}

	ok := waitFor(30*time.Second, func() bool {
		// Final figures: a partition handed over during the run reaches
		// them after the new owner's replay.
		d, s := alerts.byDetector(DetDestination), alerts.byDetector(DetScan)
		return seen.len() == int(want) && len(d) > 0 && d[len(d)-1].Evidence["periodic_hosts"] == 3 &&
			len(s) > 0 && s[len(s)-1].Evidence["sentries"] == 3 && len(alerts.byDetector(DetChain)) > 0
	})
	cancel()
	wg.Wait()
	if !ok {
		for _, a := range alerts.alerts {
			t.Logf("alert %s %s %q %v", a.ID, a.Detector, a.Title, a.Evidence)
		}
		t.Fatalf("consumed %d of %d records; destination alerts %d, scan alerts %d, chain alerts %d", seen.len(), want,
			len(alerts.byDetector(DetDestination)), len(alerts.byDetector(DetScan)), len(alerts.byDetector(DetChain)))
	}
	// Each finding has one id; its latest version carries the final figures.
	d := latest(t, alerts.byDetector(DetDestination))
	if d.Dst != beaconDst.Addr() || d.Evidence["hosts"] != 3 || d.Evidence["periodic_hosts"] != 3 || d.Severity != alert.High {
		t.Errorf("destination alert: %+v", d)
	}
	s := latest(t, alerts.byDetector(DetScan))
	if s.Src != scannerAddr || s.Evidence["sentries"] != 3 || s.Evidence["targets"] != 30 {
		t.Errorf("scan alert: %+v", s)
	}
	ch := latest(t, alerts.byDetector(DetChain))
	if ch.Entity != "chain 10.0.1.10>10.0.2.10>10.0.3.10" {
		t.Errorf("chain alert: %+v", ch)
	}
	for _, a := range alerts.alerts {
		t.Logf("alert %s %s %s", a.ID, a.Detector, a.Title)
	}
}

// latest checks that all versions of a finding share one id and returns
// the last one.
func latest(t *testing.T, as []alert.Alert) alert.Alert {
	t.Helper()
	if len(as) == 0 {
		t.Fatal("no alert")
	}
	for _, a := range as[1:] {
		if a.ID != as[0].ID {
			t.Errorf("two ids for one finding: %s %q and %s %q", as[0].ID, as[0].Title, a.ID, a.Title)
		}
	}
	return as[len(as)-1]
}

// TestAnalyzersScaleOutAndIn: analyzers are added and removed while the
// fleet runs. A third one gets a share (the others hand partitions back at
// their next renewal); one that stops releases its partitions at once and
// the others take them; every partition is owned by exactly one analyzer
// throughout the settled states, and records published afterwards are all
// processed.
func TestAnalyzersScaleOutAndIn(t *testing.T) {
	url := startServer(t)
	cfg := testConfig(t, 8)
	js, _ := jetstream.New(connect(t, url))
	if err := Init(t.Context(), js, cfg.Fleet); err != nil {
		t.Fatal(err)
	}
	var seen seenSet
	type running struct {
		a      *Analyzer
		cancel context.CancelFunc
		done   chan struct{}
	}
	start := func(name string) *running {
		a, err := NewAnalyzer(connect(t, url), AnalyzerOptions{Config: cfg, Owner: name,
			Commit: func(context.Context, time.Time, []alert.Alert) error { return nil }, OnRecord: seen.record, Log: testLog(t)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		r := &running{a: a, cancel: cancel, done: make(chan struct{})}
		go func() {
			defer close(r.done)
			if err := a.Run(ctx); err != nil {
				t.Error(err)
			}
		}()
		t.Cleanup(func() { cancel(); <-r.done })
		return r
	}
	owned := func(rs ...*running) []int64 {
		var out []int64
		for _, r := range rs {
			out = append(out, r.a.Stats.Owned.Load())
		}
		return out
	}
	settled := func(limit time.Duration, maxEach int64, rs ...*running) bool {
		return waitFor(limit, func() bool {
			var sum int64
			for _, n := range owned(rs...) {
				if n == 0 || n > maxEach {
					return false
				}
				sum += n
			}
			return sum == 8
		})
	}
	a, b := start("an-a"), start("an-b")
	if !settled(20*time.Second, 4, a, b) {
		t.Fatalf("two analyzers: owned %v, want 4 and 4", owned(a, b))
	}
	c := start("an-c")
	if !settled(20*time.Second, 3, a, b, c) {
		t.Fatalf("after a third joined: owned %v, want each at most ⌈8/3⌉ = 3 and all 8 owned", owned(a, b, c))
	}
	t.Logf("scaled out: owned %v", owned(a, b, c))
	stopped := time.Now()
	c.cancel()
	<-c.done
	if !settled(20*time.Second, 4, a, b) {
		t.Fatalf("after one stopped: owned %v, want 4 and 4", owned(a, b))
	}
	// Released, not lapsed: the time is logged, not asserted (a loaded
	// machine stretches it), for comparison with the lease TTL.
	t.Logf("scaled in: owned %v, %v after the stop (lease TTL %v)", owned(a, b), time.Since(stopped).Round(10*time.Millisecond), cfg.Fleet.LeaseTTL.Duration)
	acked := publishAll(t, url, cfg, 100)
	if !waitFor(30*time.Second, func() bool { return uint64(seen.len()) == acked }) {
		t.Fatalf("processed %d of %d records published after scaling", seen.len(), acked)
	}
}
