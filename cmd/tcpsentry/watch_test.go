package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/fleet"
	"github.com/tcpsentry/tcpsentry/internal/metrics"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// sliceSource plays fixed connection records, as conntrack events or the
// live flow tracker would deliver them, then waits for the end.
type sliceSource []*model.Conn

func (s sliceSource) Name() string { return "test-records" }

func (s sliceSource) Run(ctx context.Context, out chan<- *model.Conn) error {
	for _, c := range s {
		select {
		case out <- c:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	<-ctx.Done()
	return nil
}

// TestWatchConnSources checks the plumbing the live sources will use:
// records from a connSource reach the traffic detectors, the flush ticker
// commits their alerts, and the dispatcher delivers them.
func TestWatchConnSources(t *testing.T) {
	dir := t.TempDir()
	jsonl := filepath.Join(dir, "alerts.jsonl")
	cfg := []byte("sinks:\n  min_severity: high\n  stdout: {enabled: false}\n  jsonl: {enabled: true, path: " + jsonl + "}\n" +
		"watch:\n  interval: 1h\n  metrics_listen: \"\"\n  grace: 2s\n  store: " + filepath.Join(dir, "s.db") + "\n")
	cfgPath := filepath.Join(dir, "w.yaml")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	src := sliceSource{{TS: now, UID: "C1", Orig: netip.MustParseAddrPort("10.0.0.66:40000"), Resp: netip.MustParseAddrPort("10.0.0.5:4444"),
		Proto: model.ProtoTCP, ConnState: model.ConnSF, RespPkts: 5, Duration: time.Second}}
	logs := &syncBuffer{}
	m := metrics.New()
	w := &watcher{log: slog.New(slog.NewTextHandler(logs, nil)), configPath: cfgPath, stdout: &bytes.Buffer{},
		source: "host:test", metrics: m, sources: []connSource{src}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.run(ctx, false) }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(logs.String())
			b, _ := os.ReadFile(jsonl)
			t.Log(string(b))
		}
	})
	waitFor(t, 20*time.Second, "the traffic alert in the JSONL file", func() bool {
		b, _ := os.ReadFile(jsonl)
		return bytes.Contains(b, []byte(`"src":"10.0.0.66","dst":"10.0.0.5"`)) && bytes.Contains(b, []byte(`"dst_port":4444`))
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("watch did not stop")
	}
	if got := testutilCounter(t, m, "tcpsentry_flows_total"); got != 1 {
		t.Errorf("flows counter %v, want 1", got)
	}
}

// testutilCounter reads a counter without labels from the registry.
func testutilCounter(t *testing.T, m *metrics.Metrics, name string) float64 {
	t.Helper()
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestPublisherQueueStallsOnce: with the queue in front of the spool full,
// one record waits for room and is dropped; the next ones are dropped at
// once (the watch loop stalls once, not once per record) until the queue
// takes records again.
func TestPublisherQueueStallsOnce(t *testing.T) {
	p := &publisher{conns: &fleet.ConnPublisher{}, queue: make(chan *model.Conn, 1)}
	c := &model.Conn{UID: "C1"}
	p.record(c) // fills the queue
	start := time.Now()
	p.record(c)
	waited := time.Since(start)
	start = time.Now()
	for range 100 {
		p.record(c)
	}
	burst := time.Since(start)
	if d := p.conns.Stats.Dropped.Load(); d != 101 {
		t.Fatalf("dropped %d, want 101", d)
	}
	if !p.congested || burst >= waited {
		t.Fatalf("congested %v; one record waited %v, the next 100 took %v: they should not wait", p.congested, waited, burst)
	}
	<-p.queue
	p.record(c)
	if p.congested || len(p.queue) != 1 {
		t.Fatalf("after room was made: congested %v, queued %d", p.congested, len(p.queue))
	}
	p.stopped.Store(true)
	start = time.Now()
	p.record(c)
	if p.conns.Stats.Dropped.Load() != 102 || time.Since(start) >= waited {
		t.Fatalf("with the publisher stopped a record must be dropped at once")
	}
}
