package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
)

func TestOpenUsesWALAndBusyTimeout(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	mode, err := s.JournalMode(ctx)
	if err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v; want wal", mode, err)
	}
	var busy int
	if err := s.db.QueryRowContext(ctx, `PRAGMA busy_timeout`).Scan(&busy); err != nil || busy < 1000 {
		t.Fatalf("busy_timeout = %d, %v; want ≥ 1000 ms", busy, err)
	}
}

func TestCommitQueuesPerSinkWithFindings(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	t0 := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	x, y := mk("a", "x", alert.Medium), mk("a", "y", alert.Low)
	sinks := []string{"stdout", "webhook"}
	steps := []struct {
		at      time.Duration
		alerts  []alert.Alert
		webhook []string // pending entities for webhook after the step, in order
		status  []string
	}{
		{0, []alert.Alert{x, y}, []string{"x", "y"}, []string{"new", "new"}},
		// Unchanged findings are not queued again.
		{time.Minute, []alert.Alert{x, y}, []string{"x", "y"}, []string{"new", "new"}},
		// x's severity rose while still pending: the old row is replaced
		// by the newer alert, moved behind y.
		{2 * time.Minute, []alert.Alert{mk("a", "x", alert.High), y}, []string{"y", "x"}, []string{"new", "renotify"}},
	}
	for i, st := range steps {
		if _, err := s.Commit(ctx, "host:h", t0.Add(st.at), []string{"a"}, st.alerts, 0, sinks); err != nil {
			t.Fatal(err)
		}
		items, err := s.Pending(ctx, "webhook", 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(items) != len(st.webhook) {
			t.Fatalf("step %d: %d pending, want %d", i, len(items), len(st.webhook))
		}
		for j, it := range items {
			if it.Alert.Entity != st.webhook[j] || it.Status != st.status[j] {
				t.Errorf("step %d row %d: %s %s, want %s %s", i, j, it.Alert.Entity, it.Status, st.webhook[j], st.status[j])
			}
		}
	}
	d, err := s.OutboxDepth(ctx)
	if err != nil || d["stdout"] != 2 || d["webhook"] != 2 {
		t.Fatalf("depth %v, %v", d, err)
	}
	items, _ := s.Pending(ctx, "webhook", 10)
	if items[1].Alert.Severity != alert.High {
		t.Errorf("replaced row carries severity %v, want high", items[1].Alert.Severity)
	}
	if err := s.Failed(ctx, items[0].Seq, errors.New("HTTP 503")); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(ctx, items[1].Seq); err != nil {
		t.Fatal(err)
	}
	items, _ = s.Pending(ctx, "webhook", 10)
	if len(items) != 1 || items[0].Attempts != 1 || items[0].Alert.Entity != "y" {
		t.Fatalf("after fail+ack: %+v", items)
	}
	// stdout's rows are independent of webhook's.
	if d, _ := s.OutboxDepth(ctx); d["stdout"] != 2 {
		t.Errorf("stdout depth %d, want 2", d["stdout"])
	}
}

// TestCommitIsAtomic: when the outbox insert fails, the finding must not be
// recorded as reported either (or it would never be sent).
func TestCommitIsAtomic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if _, err := s.db.ExecContext(ctx, `CREATE TRIGGER refuse BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'refused'); END`); err != nil {
		t.Fatal(err)
	}
	x := mk("a", "x", alert.High)
	if _, err := s.Commit(ctx, "host:h", time.Now(), []string{"a"}, []alert.Alert{x}, 0, []string{"webhook"}); err == nil {
		t.Fatal("Commit succeeded with a refusing outbox")
	}
	if _, err := s.db.ExecContext(ctx, `DROP TRIGGER refuse`); err != nil {
		t.Fatal(err)
	}
	out, err := s.Commit(ctx, "host:h", time.Now(), []string{"a"}, []alert.Alert{x}, 0, []string{"webhook"})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.New) != 1 {
		t.Fatalf("after a failed commit the finding is %+v, want new again", out)
	}
}

func TestPendingUnreadableRow(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	if _, err := s.db.ExecContext(ctx, `INSERT INTO outbox (alert_id, sink, status, alert, enqueued_at) VALUES ('x', 'jsonl', 'new', '{not json', '2026-11-23T00:00:00Z')`); err != nil {
		t.Fatal(err)
	}
	items, err := s.Pending(ctx, "jsonl", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 1 || items[0].Err == nil {
		t.Fatalf("items %+v: want one with an error naming the row", items)
	}
}

func BenchmarkCommit(b *testing.B) {
	s, err := Open(context.Background(), filepath.Join(b.TempDir(), "t.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	as := make([]alert.Alert, 10)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		for j := range as {
			as[j] = mk("a", "e"+string(rune('a'+j))+time.Duration(i).String(), alert.High)
		}
		if _, err := s.Commit(context.Background(), "host:b", time.Now(), nil, as, 0, []string{"stdout", "webhook"}); err != nil {
			b.Fatal(err)
		}
	}
}
