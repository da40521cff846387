package sink

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/metrics"
	"github.com/tcpsentry/tcpsentry/internal/store"
)

func openStore(t *testing.T, path string) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// commitAlerts records n findings and queues them for sinks.
func commitAlerts(t *testing.T, st *store.Store, n int, sinks []string) []alert.Alert {
	t.Helper()
	var as []alert.Alert
	for i := range n {
		as = append(as, testAlert("alert-"+itoa(i)))
	}
	out, err := st.Commit(context.Background(), "host:test", time.Now(), []string{"scan"}, as, 0, sinks)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.New) != n {
		t.Fatalf("%d new, want %d", len(out.New), n)
	}
	return as
}

// waitUntil polls cond; the bound only guards against a hang.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func depth(t *testing.T, st *store.Store, sink string) int {
	t.Helper()
	d, err := st.OutboxDepth(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return d[sink]
}

// switchable answers 503 while down, else records alerts by id.
type switchable struct {
	down  atomic.Bool
	mu    sync.Mutex
	byID  map[string]int
	total int
}

func (s *switchable) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.down.Load() {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byID == nil {
		s.byID = map[string]int{}
	}
	s.byID[r.Header.Get(AlertIDHeader)]++
	s.total++
}

func (s *switchable) distinct() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byID)
}

func fastOpts(m *metrics.Metrics) DispatchOptions {
	return DispatchOptions{Timeout: 5 * time.Second, MinBackoff: 5 * time.Millisecond, MaxBackoff: 40 * time.Millisecond, Poll: 20 * time.Millisecond, Metrics: m}
}

func TestDispatchDownSinkQueuesThenDelivers(t *testing.T) {
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"))
	defer st.Close()
	rv := &switchable{}
	rv.down.Store(true)
	srv := httptest.NewServer(rv)
	defer srv.Close()
	wh, err := NewWebhook(WebhookOptions{URL: srv.URL, Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	d := NewDispatcher(st, []Sink{wh}, fastOpts(m))
	as := commitAlerts(t, st, 5, d.Names())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	waitUntil(t, "failed attempts while the receiver is down", func() bool {
		items, err := st.Pending(context.Background(), "webhook", 10)
		return err == nil && len(items) == 5 && items[0].Attempts >= 2
	})
	if rv.distinct() != 0 {
		t.Fatal("receiver got alerts while down")
	}
	rv.down.Store(false)
	waitUntil(t, "delivery after the receiver came back", func() bool { return rv.distinct() == len(as) && depth(t, st, "webhook") == 0 })
}

// TestDispatchAfterCrash queues alerts, closes the store without
// delivering (what a kill -9 leaves behind, since rows are committed
// before any send), reopens it and delivers.
func TestDispatchAfterCrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := openStore(t, path)
	as := commitAlerts(t, st, 3, []string{"jsonl"})
	st.Close()

	st = openStore(t, path)
	defer st.Close()
	file := filepath.Join(t.TempDir(), "out.jsonl")
	j, err := NewJSONL(file)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	d := NewDispatcher(st, []Sink{j}, fastOpts(nil))
	if err := d.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := readLines(t, file)
	if len(got) != len(as) {
		t.Fatalf("delivered %d after restart, want %d", len(got), len(as))
	}
	for i := range as {
		if got[i].ID != as[i].ID {
			t.Errorf("alert %d: id %s, want %s (oldest first)", i, got[i].ID, as[i].ID)
		}
	}
	if n := depth(t, st, "jsonl"); n != 0 {
		t.Errorf("outbox depth %d after delivery", n)
	}
}

// TestDispatchHangingSinkDoesNotBlockOthers hangs the webhook receiver;
// the JSONL sink must still get every alert meanwhile.
func TestDispatchHangingSinkDoesNotBlockOthers(t *testing.T) {
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"))
	defer st.Close()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	wh, err := NewWebhook(WebhookOptions{URL: srv.URL, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "out.jsonl")
	j, err := NewJSONL(file)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	opts := fastOpts(nil)
	opts.Timeout = time.Minute
	d := NewDispatcher(st, []Sink{wh, j}, opts)
	commitAlerts(t, st, 20, d.Names())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	waitUntil(t, "jsonl delivery while the webhook hangs", func() bool { return depth(t, st, "jsonl") == 0 })
	if got := len(readLines(t, file)); got != 20 {
		t.Errorf("jsonl got %d, want 20", got)
	}
	if n := depth(t, st, "webhook"); n != 20 {
		t.Errorf("webhook outbox depth %d, want 20 (nothing acknowledged)", n)
	}
	cancel()
	<-done
	if n := depth(t, st, "webhook"); n != 20 {
		t.Errorf("after stop, webhook outbox depth %d, want all 20 kept", n)
	}
}

// lossyAck processes each alert but answers 500 the first time it sees an
// id, as if its acknowledgement was lost: the alert comes again with the
// same id, and deduping on it yields each alert exactly once.
func TestDispatchAtLeastOnceStableID(t *testing.T) {
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"))
	defer st.Close()
	var mu sync.Mutex
	processed := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(AlertIDHeader)
		mu.Lock()
		processed[id]++
		n := processed[id]
		mu.Unlock()
		if n == 1 {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	wh, err := NewWebhook(WebhookOptions{URL: srv.URL, Retries: 0})
	if err != nil {
		t.Fatal(err)
	}
	d := NewDispatcher(st, []Sink{wh}, fastOpts(nil))
	as := commitAlerts(t, st, 4, d.Names())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	waitUntil(t, "all delivered", func() bool { return depth(t, st, "webhook") == 0 })
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(processed) != len(as) {
		t.Fatalf("%d distinct ids, want %d", len(processed), len(as))
	}
	for _, a := range as {
		if processed[a.ID] != 2 {
			t.Errorf("alert %s seen %d times, want 2 (once lost, once acknowledged)", a.ID, processed[a.ID])
		}
	}
}

func BenchmarkDispatchJSONL(b *testing.B) {
	st, err := store.Open(context.Background(), filepath.Join(b.TempDir(), "s.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	j, err := NewJSONL(filepath.Join(b.TempDir(), "out.jsonl"))
	if err != nil {
		b.Fatal(err)
	}
	d := NewDispatcher(st, []Sink{j}, DispatchOptions{})
	a := []alert.Alert{testAlert("x")}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		a[0].ID = "x" + itoa(i)
		if _, err := st.Commit(context.Background(), "host:b", time.Now(), nil, a, 0, []string{"jsonl"}); err != nil {
			b.Fatal(err)
		}
		if err := d.Drain(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDispatchBlockedStdout writes the table to a full pipe nobody reads:
// the write never returns, yet Drain ends at the sink timeout, the JSONL
// sink still gets everything, and the alert stays queued for stdout.
func TestDispatchBlockedStdout(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	// Fill the pipe's kernel buffer.
	_ = w.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	for {
		if _, err := w.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	_ = w.SetWriteDeadline(time.Time{})

	st := openStore(t, filepath.Join(t.TempDir(), "s.db"))
	defer st.Close()
	file := filepath.Join(t.TempDir(), "out.jsonl")
	j, err := NewJSONL(file)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	opts := fastOpts(nil)
	opts.Timeout = 100 * time.Millisecond
	d := NewDispatcher(st, []Sink{NewTable(w, TableOptions{}), j}, opts)
	commitAlerts(t, st, 3, d.Names())
	for range 2 { // the second pass finds the first Send still stuck
		err = d.Drain(context.Background())
		if err == nil || !strings.Contains(err.Error(), "blocked") {
			t.Fatalf("Drain with a blocked stdout: %v, want a blocked-send error", err)
		}
	}
	if got := len(readLines(t, file)); got != 3 {
		t.Errorf("jsonl got %d, want 3", got)
	}
	if n := depth(t, st, "stdout"); n != 3 {
		t.Errorf("stdout outbox depth %d, want 3 kept", n)
	}
}
