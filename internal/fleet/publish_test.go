package fleet

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/fleet/natstest"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// restartableServer is an in-process JetStream server that can be stopped
// and started again on the same port and store.
type restartableServer struct {
	t    testing.TB
	opts server.Options
	s    *server.Server
}

func newRestartableServer(t testing.TB) *restartableServer {
	r := &restartableServer{t: t, opts: server.Options{Host: "127.0.0.1", Port: natstest.FreePorts(t, 1)[0], JetStream: true,
		StoreDir: t.TempDir(), NoSigs: true, NoLog: true}}
	r.start()
	t.Cleanup(func() {
		if r.s != nil {
			r.s.Shutdown()
		}
	})
	return r
}

func (r *restartableServer) start() {
	o := r.opts
	s, err := server.NewServer(&o)
	if err != nil {
		r.t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		r.t.Fatal("nats-server did not start")
	}
	r.s = s
}

func (r *restartableServer) stop() {
	r.s.Shutdown()
	r.s.WaitForShutdown()
	r.s = nil
}

func (r *restartableServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", r.opts.Port) }

// outageRecords are n distinct records of one sentry.
func outageRecords(from, n int) []*model.Conn {
	out := make([]*model.Conn, 0, n)
	for i := from; i < from+n; i++ {
		out = append(out, &model.Conn{TS: scenarioStart.Add(time.Duration(i) * time.Millisecond), UID: fmt.Sprintf("O%07d", i),
			Orig: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)}), uint16(1024+i%60000)),
			Resp: netip.MustParseAddrPort("192.0.2.80:443"), Proto: model.ProtoTCP, ConnState: model.ConnSF,
			Duration: time.Second, OrigBytes: uint64(i), End: model.EndClosed})
	}
	return out
}

// streamIDs returns how often each Nats-Msg-Id is stored in TCPSENTRY_CONN.
func streamIDs(t testing.TB, url string) map[string]int {
	t.Helper()
	js, err := jetstream.New(connect(t, url))
	if err != nil {
		t.Fatal(err)
	}
	return storedIDs(t, js)
}

// initServer is a restartable server with the fleet's streams.
func initServer(t testing.TB) *restartableServer {
	t.Helper()
	srv := newRestartableServer(t)
	js, err := jetstream.New(connect(t, srv.url()))
	if err != nil {
		t.Fatal(err)
	}
	if err := Init(t.Context(), js, testConfig(t, 4).Fleet); err != nil {
		t.Fatal(err)
	}
	return srv
}

// startPublisher runs a publisher for host on the spool in dir, connected
// to url; close in to stop it, and read its result from done.
func startPublisher(t *testing.T, url, dir, host string, window int, grace time.Duration) (*ConnPublisher, chan<- *model.Conn, <-chan error) {
	t.Helper()
	spool, err := OpenSpool(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := Connect(ConnectOptions{URLs: []string{url}, Name: host})
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewConnPublisher(nc, PublisherOptions{Host: host, Partitions: 4, Window: window, Spool: spool})
	if err != nil {
		t.Fatal(err)
	}
	in := make(chan *model.Conn, 256)
	done := make(chan error, 1)
	go func() {
		done <- p.Run(context.Background(), in, grace)
		nc.Close()
	}()
	return p, in, done
}

// TestPublisherOutageAndRestart: records published while the broker is
// down — many times the in-flight window — are kept in the spool; the
// sentry stops (records still unacknowledged), starts again on the same
// spool after the broker is back, and every record is stored exactly once.
func TestPublisherOutageAndRestart(t *testing.T) {
	srv := initServer(t)
	dir := t.TempDir()
	run := func(recs []*model.Conn, grace time.Duration, during func(p *ConnPublisher)) *ConnPublisher {
		p, in, done := startPublisher(t, srv.url(), dir, "sentry-a", 64, grace)
		for _, c := range recs {
			in <- c
		}
		if during != nil {
			during(p)
		}
		close(in)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		return p
	}

	// Part published normally, then an outage during which 20,000
	// records arrive; the sentry is stopped before the broker returns.
	first := run(outageRecords(0, 1000), 10*time.Second, nil)
	if first.Stats.Acked.Load() != 1000 || first.Backlog() != 0 {
		t.Fatalf("broker up: acked %d backlog %d, want 1000 and 0", first.Stats.Acked.Load(), first.Backlog())
	}
	srv.stop()
	down := run(outageRecords(1000, 20000), 200*time.Millisecond, func(p *ConnPublisher) {
		if !waitFor(30*time.Second, func() bool { return p.Stats.Spooled.Load() == 20000 }) {
			t.Fatalf("spooled %d of 20000", p.Stats.Spooled.Load())
		}
	})
	if down.Stats.Dropped.Load() != 0 || down.Backlog() != 20000 {
		t.Fatalf("broker down: dropped %d, backlog %d; want 0 and 20000", down.Stats.Dropped.Load(), down.Backlog())
	}

	// The broker returns; a new start on the same spool delivers the
	// backlog and new records.
	srv.start()
	again := run(outageRecords(21000, 500), time.Minute, nil)
	if again.Backlog() != 0 || again.Stats.Dropped.Load() != 0 {
		t.Fatalf("after restart: backlog %d dropped %d", again.Backlog(), again.Stats.Dropped.Load())
	}
	ids := streamIDs(t, srv.url())
	for _, c := range outageRecords(0, 21500) {
		id := Encode(c, "sentry-a", 4).Header.Get(jetstream.MsgIDHeader)
		if ids[id] != 1 {
			t.Fatalf("record %s stored %d times", c.UID, ids[id])
		}
	}
	if len(ids) != 21500 {
		t.Fatalf("stream holds %d distinct records, want 21500", len(ids))
	}
	t.Logf("outage of 20,000 records with a 64-record window: all 21,500 stored once; after restart %d published, %d acked, %d retried",
		again.Stats.Published.Load(), again.Stats.Acked.Load(), again.Stats.Retried.Load())
}

// TestPublisherRidesOutOutage: the broker goes away for 6 s mid-run and
// comes back; one publisher, never restarted, delivers every record once.
func TestPublisherRidesOutOutage(t *testing.T) {
	srv := initServer(t)
	p, in, done := startPublisher(t, srv.url(), t.TempDir(), "sentry-b", 128, time.Minute)
	recs := outageRecords(0, 12000)
	for i, c := range recs {
		switch i {
		case 3000:
			srv.stop()
		case 9000:
			time.Sleep(6 * time.Second)
			srv.start()
		}
		in <- c
	}
	close(in)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ids := streamIDs(t, srv.url())
	for _, c := range recs {
		if id := Encode(c, "sentry-b", 4).Header.Get(jetstream.MsgIDHeader); ids[id] != 1 {
			t.Fatalf("record %s stored %d times", c.UID, ids[id])
		}
	}
	if p.Stats.Dropped.Load() != 0 || p.Backlog() != 0 || p.Stats.Retried.Load() == 0 {
		t.Fatalf("dropped %d backlog %d retried %d: want 0, 0 and some retries", p.Stats.Dropped.Load(), p.Backlog(), p.Stats.Retried.Load())
	}
	t.Logf("12,000 records across a 6 s outage: all stored once; %d published, %d retried", p.Stats.Published.Load(), p.Stats.Retried.Load())
}

// TestAlertSinkDedup: the same alert sent twice on one subject is stored
// once (a redelivery, a failover), a severity rise passes, and a sentry's
// alert and the fleet's alert with the same id are both stored: the
// stream dedupes across its subjects.
func TestAlertSinkDedup(t *testing.T) {
	srv := initServer(t)
	nc := connect(t, srv.url())
	sentry, err := NewAlertSink(nc, AlertSubject("sentry-a"))
	if err != nil {
		t.Fatal(err)
	}
	fleetSink, err := NewAlertSink(nc, FleetAlertSubject)
	if err != nil {
		t.Fatal(err)
	}
	a := alert.Alert{ID: "0123456789abcdef", Detector: "scan", Title: "vertical SYN scan of 10.0.1.10: 10 ports",
		Severity: alert.Medium, Confidence: 0.9, FirstSeen: scenarioStart, LastSeen: scenarioStart}
	higher := a
	higher.Severity = alert.High
	for _, step := range []struct {
		s *AlertSink
		a alert.Alert
	}{{sentry, a}, {sentry, a}, {fleetSink, a}, {fleetSink, a}, {fleetSink, higher}} {
		if err := step.s.Send(t.Context(), step.a); err != nil {
			t.Fatal(err)
		}
	}
	js, _ := jetstream.New(nc)
	st, err := js.Stream(t.Context(), AlertStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got := info.State.Msgs; got != 3 {
		t.Fatalf("%d alerts stored, want 3 (the sentry's, the fleet's, the fleet's at high)", got)
	}
}
