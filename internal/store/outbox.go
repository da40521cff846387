package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
)

// The outbox holds one row per (alert, sink) that the sink has not yet
// accepted. Rows are written in the same transaction that records the
// finding, so an alert is never remembered as reported without being
// queued, and a row survives a crash until its sink acknowledges it.
const outboxSchema = `
CREATE TABLE IF NOT EXISTS outbox (
	seq         INTEGER PRIMARY KEY AUTOINCREMENT, -- delivery order
	alert_id    TEXT NOT NULL,
	sink        TEXT NOT NULL,
	status      TEXT NOT NULL,      -- new or renotify
	alert       TEXT NOT NULL,      -- the alert JSON to deliver
	enqueued_at TEXT NOT NULL,      -- RFC 3339
	attempts    INTEGER NOT NULL DEFAULT 0,
	last_error  TEXT,
	UNIQUE (alert_id, sink)
);
`

// OutboxItem is one pending delivery.
type OutboxItem struct {
	Seq        int64
	Sink       string
	Status     string // new or renotify
	Alert      alert.Alert
	EnqueuedAt time.Time
	Attempts   int
	// Err is set when the stored alert cannot be read back (the file was
	// edited by hand); such a row can never be delivered.
	Err error
}

// Commit reconciles one cycle's alerts (as Reconcile does) and, in the same
// transaction, queues every new or renotified alert once for each sink.
// A row still pending for the same alert and sink is replaced by the newer
// alert under a new sequence number, so an in-flight delivery of the old
// version cannot acknowledge the new one.
func (s *Store) Commit(ctx context.Context, source string, now time.Time, ran []string, alerts []alert.Alert, renotify time.Duration, sinks []string) (Outcome, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Outcome{}, fmt.Errorf("store %s: %w", s.path, err)
	}
	defer tx.Rollback()
	out, err := s.reconcileTx(ctx, tx, source, now, ran, alerts, renotify)
	if err != nil {
		return out, err
	}
	ts := now.UTC().Format(time.RFC3339Nano)
	queue := func(as []alert.Alert, status string) error {
		for _, a := range as {
			blob, err := json.Marshal(a)
			if err != nil {
				return fmt.Errorf("store: alert %s: %w", a.ID, err)
			}
			for _, sk := range sinks {
				if _, err := tx.ExecContext(ctx, `DELETE FROM outbox WHERE alert_id = ? AND sink = ?`, a.ID, sk); err != nil {
					return fmt.Errorf("store %s: outbox: %w", s.path, err)
				}
				if _, err := tx.ExecContext(ctx, `INSERT INTO outbox (alert_id, sink, status, alert, enqueued_at) VALUES (?, ?, ?, ?, ?)`,
					a.ID, sk, status, string(blob), ts); err != nil {
					return fmt.Errorf("store %s: outbox: %w", s.path, err)
				}
			}
		}
		return nil
	}
	if err := queue(out.New, "new"); err != nil {
		return out, err
	}
	if err := queue(out.Renotify, "renotify"); err != nil {
		return out, err
	}
	if err := tx.Commit(); err != nil {
		return out, fmt.Errorf("store %s: %w", s.path, err)
	}
	return out, nil
}

// Pending returns up to limit rows waiting for sink, oldest first.
func (s *Store) Pending(ctx context.Context, sink string, limit int) ([]OutboxItem, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT seq, status, alert, enqueued_at, attempts FROM outbox WHERE sink = ? ORDER BY seq LIMIT ?`, sink, limit)
	if err != nil {
		return nil, fmt.Errorf("store %s: outbox: %w", s.path, err)
	}
	defer rows.Close()
	var items []OutboxItem
	for rows.Next() {
		it := OutboxItem{Sink: sink}
		var blob, at string
		if err := rows.Scan(&it.Seq, &it.Status, &blob, &at, &it.Attempts); err != nil {
			return nil, fmt.Errorf("store %s: outbox: %w", s.path, err)
		}
		it.EnqueuedAt, _ = time.Parse(time.RFC3339Nano, at)
		if err := json.Unmarshal([]byte(blob), &it.Alert); err != nil {
			it.Err = fmt.Errorf("store %s: outbox row %d: alert JSON: %w", s.path, it.Seq, err)
		}
		items = append(items, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store %s: outbox: %w", s.path, err)
	}
	return items, nil
}

// Ack removes a row its sink accepted. A row already replaced by a newer
// version of the alert is gone, and acknowledging it is not an error.
func (s *Store) Ack(ctx context.Context, seq int64) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM outbox WHERE seq = ?`, seq); err != nil {
		return fmt.Errorf("store %s: outbox ack %d: %w", s.path, seq, err)
	}
	return nil
}

// Failed records a failed attempt; the row stays pending.
func (s *Store) Failed(ctx context.Context, seq int64, cause error) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE seq = ?`, cause.Error(), seq); err != nil {
		return fmt.Errorf("store %s: outbox row %d: %w", s.path, seq, err)
	}
	return nil
}

// OutboxDepth counts pending rows per sink, including sinks no longer
// configured (their rows wait until the sink is configured again).
func (s *Store) OutboxDepth(ctx context.Context) (map[string]int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT sink, COUNT(*) FROM outbox GROUP BY sink`)
	if err != nil {
		return nil, fmt.Errorf("store %s: outbox: %w", s.path, err)
	}
	defer rows.Close()
	depth := map[string]int{}
	for rows.Next() {
		var sink string
		var n int
		if err := rows.Scan(&sink, &n); err != nil {
			return nil, fmt.Errorf("store %s: outbox: %w", s.path, err)
		}
		depth[sink] = n
	}
	return depth, rows.Err()
}

// JournalMode reports SQLite's journal mode ("wal" when the store is usable
// by a reader while watch writes).
func (s *Store) JournalMode(ctx context.Context) (string, error) {
	var mode string
	err := s.db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode)
	if err != nil && err != sql.ErrNoRows {
		return "", fmt.Errorf("store %s: %w", s.path, err)
	}
	return mode, nil
}
