package fleet

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/fleet/natstest"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// TestClusterThroughput measures records per second through publish →
// three-node cluster (R3 streams; TSFLEET_REPLICAS=1 for R1) → two
// analyzers (source and destination sides, all detectors on).
// TSFLEET_RECORDS sets the records per sentry (default 5000, three
// sentries). The figures go to docs/fleet.md.
func TestClusterThroughput(t *testing.T) {
	if testing.Short() {
		t.Skip("throughput run")
	}
	perSentry := 5000
	if s := os.Getenv("TSFLEET_RECORDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 100 {
			t.Fatalf("TSFLEET_RECORDS=%q: want a number ≥ 100", s)
		}
		perSentry = n
	}
	replicas := 3
	if os.Getenv("TSFLEET_REPLICAS") == "1" {
		replicas = 1
	}
	c := natstest.StartCluster(t)
	cfg, err := config.Parse(fmt.Appendf(nil, "fleet:\n  partitions: 16\n  replicas: %d\n  lease_ttl: 10s\n", replicas), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	initCluster(t, c, cfg)
	var recs [][]*model.Conn
	total := 0
	for i := range scenarioHosts {
		recs = append(recs, scenario(i, perSentry))
		total += len(recs[i])
	}

	var seen seenSet
	var dstSeen sync.Map
	record := func(id string, src, redelivered bool) {
		if src {
			seen.record(id, src, redelivered)
		} else {
			dstSeen.Store(id, true)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	var analyzers []*Analyzer
	startAnalyzers := func() {
		for i := range 2 {
			nc, err := Connect(ConnectOptions{URLs: c.URLs, Name: fmt.Sprint("analyzer-", i)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			a, err := NewAnalyzer(nc, AnalyzerOptions{Config: cfg, Owner: fmt.Sprint("an-", i),
				Commit: sinkCommit(t, nc), OnRecord: record, Log: testLog(t)})
			if err != nil {
				t.Fatal(err)
			}
			analyzers = append(analyzers, a)
			wg.Go(func() { _ = a.Run(ctx) })
		}
		// Let both claim their share before the clock starts.
		waitFor(20*time.Second, func() bool {
			return analyzers[0].Stats.Claimed.Load()+analyzers[1].Stats.Claimed.Load() >= 16
		})

	}
	// TSFLEET_PHASED=1 publishes everything before the analyzers start, to
	// see each stage's rate alone.
	phased := os.Getenv("TSFLEET_PHASED") == "1"
	if !phased {
		startAnalyzers()
	}
	start := time.Now()
	var pubs sync.WaitGroup
	var mu sync.Mutex
	var acked uint64
	for i, h := range scenarioHosts {
		pubs.Go(func() {
			nc, err := Connect(ConnectOptions{URLs: c.URLs, Name: h})
			if err != nil {
				t.Error(err)
				return
			}
			defer nc.Close()
			p, err := NewConnPublisher(nc, PublisherOptions{Host: h, Partitions: 16, Window: 65536, Spool: testSpool(t)})
			if err != nil {
				t.Error(err)
				return
			}
			in := make(chan *model.Conn, 4096)
			go func() {
				for _, r := range recs[i] {
					in <- r
				}
				close(in)
			}()
			// Run returns when every record is acknowledged (or after
			// the grace, which then shows as a shortfall below).
			_ = p.Run(context.Background(), in, 5*time.Minute)
			mu.Lock()
			acked += p.Stats.Acked.Load()
			mu.Unlock()
		})
	}
	pubs.Wait()
	published := time.Since(start)
	consumeStart := time.Now()
	if phased {
		startAnalyzers()
	}
	dstCount := func() int {
		n := 0
		dstSeen.Range(func(any, any) bool { n++; return true })
		return n
	}
	if !waitFor(3*time.Minute, func() bool { return seen.len() == total && dstCount() == total }) {
		t.Fatalf("consumed %d (source side) and %d (destination side) of %d", seen.len(), dstCount(), total)
	}
	done := time.Since(start)
	if phased {
		t.Logf("PHASED consumption alone: %d records in %.2fs (%.0f records/s)", total, time.Since(consumeStart).Seconds(), float64(total)/time.Since(consumeStart).Seconds())
	}
	if acked != uint64(total) {
		t.Fatalf("acked %d of %d", acked, total)
	}
	t.Logf("THROUGHPUT %d records from 3 sentries, 3-node cluster, R%d streams, 16 partitions, 2 analyzers: published and acknowledged in %.2fs (%.0f records/s); analysed (both sides) in %.2fs (%.0f records/s end to end)",
		total, replicas, published.Seconds(), float64(total)/published.Seconds(), done.Seconds(), float64(total)/done.Seconds())
}
