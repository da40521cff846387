package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/fleet/natstest"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// initCluster creates the R3 streams once the cluster has a meta leader.
func initCluster(t testing.TB, c *natstest.Cluster, cfg *config.Config) {
	t.Helper()
	nc, err := Connect(ConnectOptions{URLs: c.URLs, Name: "init"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	var last error
	for range 60 {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		last = Init(ctx, js, cfg.Fleet)
		cancel()
		if last == nil {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("fleet init on the cluster: %v", last)
}

// expectedIDs returns the Nats-Msg-Id of every record of every sentry.
func expectedIDs(cfg *config.Config, recs [][]*model.Conn) map[string]bool {
	ids := map[string]bool{}
	for i, h := range scenarioHosts {
		for _, c := range recs[i] {
			ids[Encode(c, h, cfg.Fleet.Partitions).Header.Get(jetstream.MsgIDHeader)] = true
		}
	}
	return ids
}

// fleetAlerts reads every message of tcpsentry.fleet.alert.
func fleetAlerts(t testing.TB, urls []string) []alert.Alert {
	t.Helper()
	nc, err := Connect(ConnectOptions{URLs: urls, Name: "reader"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	var cons jetstream.Consumer
	for range 20 {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		cons, err = js.CreateConsumer(ctx, AlertStream, jetstream.ConsumerConfig{FilterSubject: FleetAlertSubject,
			AckPolicy: jetstream.AckNonePolicy, DeliverPolicy: jetstream.DeliverAllPolicy, InactiveThreshold: time.Minute})
		cancel()
		if err == nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("consumer of %s: %v", FleetAlertSubject, err)
	}
	var out []alert.Alert
	for range 1000 {
		batch, err := cons.Fetch(100, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var a alert.Alert
			if err := json.Unmarshal(m.Data(), &a); err != nil {
				t.Fatal(err)
			}
			out = append(out, a)
		}
		if n == 0 {
			break
		}
	}
	return out
}

// sinkCommit publishes a flush's alerts to tcpsentry.fleet.alert the way
// the outbox does in `tcpsentry fleet`: retried until accepted (bounded).
func sinkCommit(t testing.TB, nc *nats.Conn) func(context.Context, time.Time, []alert.Alert) error {
	s, err := NewAlertSink(nc, FleetAlertSubject)
	if err != nil {
		t.Fatal(err)
	}
	return func(ctx context.Context, _ time.Time, as []alert.Alert) error {
		for _, a := range as {
			var err error
			for range 50 {
				sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				err = s.Send(sctx, a)
				cancel()
				if err == nil || ctx.Err() != nil {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
}

// TestClusterFaults: three sentries publish what their hosts recorded
// (testdata/recorded, real traffic captured by lab/fleet-record.sh, plus
// generated background volume) to a three-node cluster with R3 streams;
// two analyzers share the partitions. Mid-run one NATS node is
// killed, later one analyzer is killed (its connection dropped, nothing
// released). The guarantee checked: every record the publishers had
// acknowledged is processed at least once on its source side (records are
// redelivered, not lost), and every fleet alert is on the subject once per
// id and severity — the duplicates a failover causes carry the same id and
// JetStream's dedup window (Nats-Msg-Id = id/severity) drops them.
func TestClusterFaults(t *testing.T) {
	c := natstest.StartCluster(t)
	cfg, err := config.Parse([]byte("fleet:\n  partitions: 8\n  replicas: 3\n  lease_ttl: 4s\n"), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	initCluster(t, c, cfg)
	const background = 1500
	var recs [][]*model.Conn
	for i := range scenarioHosts {
		recs = append(recs, recordedScenario(t, i, background))
	}
	want := expectedIDs(cfg, recs)

	var seen seenSet
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	type instance struct {
		a      *Analyzer
		nc     *nats.Conn
		cancel context.CancelFunc
		done   chan struct{}
	}
	var ins []*instance
	for i := range 2 {
		nc, err := Connect(ConnectOptions{URLs: c.URLs, Name: fmt.Sprint("analyzer-", i)})
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		a, err := NewAnalyzer(nc, AnalyzerOptions{Config: cfg, Owner: fmt.Sprint("an-", i),
			Commit: sinkCommit(t, nc), OnRecord: seen.record, Log: testLog(t)})
		if err != nil {
			t.Fatal(err)
		}
		ictx, icancel := context.WithCancel(ctx)
		in := &instance{a: a, nc: nc, cancel: icancel, done: make(chan struct{})}
		go func() { defer close(in.done); _ = a.Run(ictx) }()
		ins = append(ins, in)
	}

	// Three sentries, paced so that the faults fall mid-run.
	var published sync.WaitGroup
	var mu sync.Mutex
	var acked, dropped uint64
	progress := make(chan int, len(want))
	for i, h := range scenarioHosts {
		published.Go(func() {
			nc, err := Connect(ConnectOptions{URLs: c.URLs, Name: h})
			if err != nil {
				t.Error(err)
				return
			}
			defer nc.Close()
			p, err := NewConnPublisher(nc, PublisherOptions{Host: h, Partitions: cfg.Fleet.Partitions, Window: 8192, Spool: testSpool(t)})
			if err != nil {
				t.Error(err)
				return
			}
			in := make(chan *model.Conn)
			go func() {
				defer close(in)
				for k, r := range recs[i] {
					in <- r
					progress <- 1
					if k%100 == 99 {
						time.Sleep(50 * time.Millisecond)
					}
				}
			}()
			_ = p.Run(context.Background(), in, time.Minute)
			mu.Lock()
			acked += p.Stats.Acked.Load()
			dropped += p.Stats.Dropped.Load()
			mu.Unlock()
		})
	}
	total := len(want)
	sent := 0
	killedNode, killedAnalyzer := false, false
	stall := time.NewTimer(2 * time.Minute)
	defer stall.Stop()
	for sent < total {
		select {
		case n := <-progress:
			sent += n
		case <-stall.C:
			t.Fatalf("publishing stalled after %d of %d records", sent, total)
		}
		if !killedNode && sent >= total/3 {
			killedNode = true
			t.Logf("killing NATS node 1 after %d of %d records", sent, total)
			c.Kill(1)
		}
		if !killedAnalyzer && sent >= 2*total/3 {
			killedAnalyzer = true
			t.Logf("killing analyzer an-0 after %d of %d records (it held %d partition claims)", sent, total, ins[0].a.Stats.Claimed.Load())
			ins[0].nc.Close() // a crash: no lease released, nothing acknowledged any more
			ins[0].cancel()
		}
	}
	published.Wait()
	if acked != uint64(total) || dropped != 0 {
		t.Fatalf("publishers: %d acked, %d dropped, want %d acked", acked, dropped, total)
	}
	t.Logf("publishers: all %d records acknowledged by the cluster", acked)

	ok := waitFor(60*time.Second, func() bool { return seen.len() == total })
	// The findings of partitions taken over come from the new owner's
	// replay; wait for all three fleet findings (bounded), then stop.
	var as []alert.Alert
	deadline := time.Now().Add(2 * time.Minute) // generous: a loaded machine, -race
	for time.Now().Before(deadline) {
		as = fleetAlerts(t, []string{c.URLs[0], c.URLs[2]})
		got := map[string]bool{}
		for _, a := range as {
			got[a.Detector] = true
		}
		if got[DetDestination] && got[DetScan] && got[DetChain] {
			break
		}
		time.Sleep(time.Second)
	}
	cancel()
	for _, in := range ins {
		<-in.done
	}
	seen.mu.Lock()
	var missing []string
	for id := range want {
		if seen.ids[id] == 0 {
			missing = append(missing, id)
		}
	}
	extra := 0
	for id, n := range seen.ids {
		if !want[id] {
			t.Errorf("consumed a record nobody published: %s", id)
		}
		extra += n - 1
	}
	seen.mu.Unlock()
	if !ok || len(missing) > 0 {
		t.Fatalf("%d of %d acknowledged records never processed, e.g. %v", len(missing), total, missing[:min(5, len(missing))])
	}
	t.Logf("all %d records processed at least once; %d processed again after redelivery (%d flagged redelivered)", total, extra, seen.redo)
	if ins[1].a.Stats.Claimed.Load() <= 4 {
		t.Logf("survivor claims: %d", ins[1].a.Stats.Claimed.Load())
	}

	byKey := map[string]int{}
	ids := map[string]map[string]bool{}
	for _, a := range as {
		byKey[a.ID+"/"+a.Severity.String()]++
		if ids[a.Detector] == nil {
			ids[a.Detector] = map[string]bool{}
		}
		ids[a.Detector][a.ID] = true
		t.Logf("fleet alert %s %s %s %q", a.ID, a.Severity, a.Detector, a.Title)
	}
	for k, n := range byKey {
		if n != 1 {
			t.Errorf("fleet alert %s on the subject %d times", k, n)
		}
	}
	if len(ids[DetDestination]) != 1 || len(ids[DetScan]) != 1 || len(ids[DetChain]) != 1 {
		t.Errorf("fleet-destination ids %v, fleet-scan ids %v, fleet-lateral-chain ids %v: want one finding each",
			ids[DetDestination], ids[DetScan], ids[DetChain])
	}
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Error("context")
	}
}
