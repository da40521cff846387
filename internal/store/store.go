// Package store is tcpsentry's embedded SQLite database (pure Go, WAL): what
// `check` already reported, so cron runs do not re-send unchanged findings,
// learned baselines, and watch's outbox of alerts not yet delivered. Users
// can open it with sqlite3.
package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/baseline"
)

// Store is an open database.
type Store struct {
	db   *sql.DB
	path string
}

// schema is applied idempotently at open; user_version tracks it.
const schema = `
CREATE TABLE IF NOT EXISTS findings (
	id            TEXT PRIMARY KEY,   -- alert id: stable hash of detector and entity
	source        TEXT NOT NULL,      -- host:NAME
	detector      TEXT NOT NULL,
	severity      TEXT NOT NULL,
	title         TEXT NOT NULL,
	first_seen    TEXT NOT NULL,      -- RFC 3339, first time any run saw it
	last_seen     TEXT NOT NULL,      -- RFC 3339, latest run that saw it
	last_notified TEXT NOT NULL,      -- RFC 3339, when it was last reported
	runs          INTEGER NOT NULL,   -- runs that saw it
	cleared_at    TEXT,               -- RFC 3339 when a run no longer saw it; NULL while active
	alert         TEXT NOT NULL       -- the alert JSON as last reported
);
CREATE INDEX IF NOT EXISTS findings_active ON findings(source, detector) WHERE cleared_at IS NULL;
CREATE TABLE IF NOT EXISTS baselines (
	source     TEXT NOT NULL,
	key        TEXT NOT NULL,          -- executable path or comm:NAME
	profile    TEXT NOT NULL,          -- baseline.Profile as JSON
	learned_at TEXT NOT NULL,
	PRIMARY KEY (source, key)
);
PRAGMA user_version = 1;
`

// Open opens or creates the database at path, creating its directory.
func Open(ctx context.Context, path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "busy_timeout(5000)")
	q.Add("_pragma", "synchronous(NORMAL)")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	// One writer at a time is what SQLite allows; a single connection avoids
	// SQLITE_BUSY between our own goroutines.
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, schema+outboxSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	return &Store{db: db, path: path}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Path is the database file.
func (s *Store) Path() string { return s.path }

// Outcome is what a check run should say about its findings.
type Outcome struct {
	New       []alert.Alert // never reported, or reported and cleared since
	Renotify  []alert.Alert // still present and the renotify interval passed, or severity rose
	Unchanged []alert.Alert // still present, already reported
	Cleared   []Cleared     // reported before and not seen by this run
}

// Cleared is a finding that a run no longer sees.
type Cleared struct {
	ID, Detector, Title string
	Severity            alert.Severity
	FirstSeen, LastSeen time.Time
}

// Reconcile records one run's alerts for source and decides which to
// report. Findings of detectors not in ran are left alone (a detector that
// was disabled has not cleared anything). renotify 0 never re-sends.
func (s *Store) Reconcile(ctx context.Context, source string, now time.Time, ran []string, alerts []alert.Alert, renotify time.Duration) (Outcome, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Outcome{}, fmt.Errorf("store %s: %w", s.path, err)
	}
	defer tx.Rollback()
	out, err := s.reconcileTx(ctx, tx, source, now, ran, alerts, renotify)
	if err != nil {
		return out, err
	}
	if err := tx.Commit(); err != nil {
		return out, fmt.Errorf("store %s: %w", s.path, err)
	}
	return out, nil
}

// reconcileTx is Reconcile inside the caller's transaction, so that the
// outbox can be filled in the same commit.
func (s *Store) reconcileTx(ctx context.Context, tx *sql.Tx, source string, now time.Time, ran []string, alerts []alert.Alert, renotify time.Duration) (Outcome, error) {
	var out Outcome
	seen := make(map[string]bool, len(alerts))
	ts := now.UTC().Format(time.RFC3339Nano)
	for _, a := range alerts {
		seen[a.ID] = true
		var sev, lastNotified string
		var cleared sql.NullString
		err := tx.QueryRowContext(ctx, `SELECT severity, last_notified, cleared_at FROM findings WHERE id = ?`, a.ID).Scan(&sev, &lastNotified, &cleared)
		blob, jerr := json.Marshal(a)
		if jerr != nil {
			return out, fmt.Errorf("store: alert %s: %w", a.ID, jerr)
		}
		switch {
		case errors.Is(err, sql.ErrNoRows) || (err == nil && cleared.Valid):
			out.New = append(out.New, a)
			_, err = tx.ExecContext(ctx, `INSERT INTO findings (id, source, detector, severity, title, first_seen, last_seen, last_notified, runs, cleared_at, alert)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, NULL, ?)
				ON CONFLICT(id) DO UPDATE SET severity=excluded.severity, title=excluded.title, first_seen=excluded.first_seen,
				last_seen=excluded.last_seen, last_notified=excluded.last_notified, runs=1, cleared_at=NULL, alert=excluded.alert`,
				a.ID, source, a.Detector, a.Severity.String(), a.Title, ts, ts, ts, string(blob))
		case err != nil:
			return out, fmt.Errorf("store %s: %w", s.path, err)
		default:
			prevSev, _ := alert.ParseSeverity(sev)
			last, _ := time.Parse(time.RFC3339Nano, lastNotified)
			notify := a.Severity > prevSev || (renotify > 0 && now.Sub(last) >= renotify)
			if notify {
				out.Renotify = append(out.Renotify, a)
				lastNotified = ts
			} else {
				out.Unchanged = append(out.Unchanged, a)
			}
			_, err = tx.ExecContext(ctx, `UPDATE findings SET severity=?, title=?, last_seen=?, last_notified=?, runs=runs+1, alert=? WHERE id=?`,
				a.Severity.String(), a.Title, ts, lastNotified, string(blob), a.ID)
		}
		if err != nil {
			return out, fmt.Errorf("store %s: %w", s.path, err)
		}
	}
	if len(ran) == 0 {
		// Nothing can be cleared (watch's traffic alerts): skip the scan
		// of every active finding.
		return out, nil
	}
	ranSet := map[string]bool{}
	for _, d := range ran {
		ranSet[d] = true
	}
	rows, err := tx.QueryContext(ctx, `SELECT id, detector, severity, title, first_seen, last_seen FROM findings WHERE source = ? AND cleared_at IS NULL`, source)
	if err != nil {
		return out, fmt.Errorf("store %s: %w", s.path, err)
	}
	for rows.Next() {
		var c Cleared
		var sev, first, last string
		if err := rows.Scan(&c.ID, &c.Detector, &sev, &c.Title, &first, &last); err != nil {
			rows.Close()
			return out, fmt.Errorf("store %s: %w", s.path, err)
		}
		if seen[c.ID] || !ranSet[c.Detector] {
			continue
		}
		c.Severity, _ = alert.ParseSeverity(sev)
		c.FirstSeen, _ = time.Parse(time.RFC3339Nano, first)
		c.LastSeen, _ = time.Parse(time.RFC3339Nano, last)
		out.Cleared = append(out.Cleared, c)
	}
	rows.Close()
	for _, c := range out.Cleared {
		if _, err := tx.ExecContext(ctx, `UPDATE findings SET cleared_at = ? WHERE id = ?`, ts, c.ID); err != nil {
			return out, fmt.Errorf("store %s: %w", s.path, err)
		}
	}
	return out, nil
}

// SaveBaseline replaces source's baseline with set.
func (s *Store) SaveBaseline(ctx context.Context, source string, set *baseline.Set, at time.Time) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store %s: %w", s.path, err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM baselines WHERE source = ?`, source); err != nil {
		return fmt.Errorf("store %s: %w", s.path, err)
	}
	ts := at.UTC().Format(time.RFC3339Nano)
	for _, k := range set.Keys() {
		blob, err := json.Marshal(set.Profiles[k])
		if err != nil {
			return fmt.Errorf("store: profile %s: %w", k, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO baselines (source, key, profile, learned_at) VALUES (?, ?, ?, ?)`, source, k, string(blob), ts); err != nil {
			return fmt.Errorf("store %s: %w", s.path, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store %s: %w", s.path, err)
	}
	return nil
}

// LoadBaseline returns source's baseline, or nil when none was learned.
func (s *Store) LoadBaseline(ctx context.Context, source string) (*baseline.Set, time.Time, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT key, profile, learned_at FROM baselines WHERE source = ? ORDER BY key`, source)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("store %s: %w", s.path, err)
	}
	defer rows.Close()
	set := baseline.NewSet()
	var learned time.Time
	for rows.Next() {
		var key, blob, at string
		if err := rows.Scan(&key, &blob, &at); err != nil {
			return nil, time.Time{}, fmt.Errorf("store %s: %w", s.path, err)
		}
		var p baseline.Profile
		if err := json.Unmarshal([]byte(blob), &p); err != nil {
			return nil, time.Time{}, fmt.Errorf("store %s: baseline profile %q: %w", s.path, key, err)
		}
		set.Profiles[key] = &p
		learned, _ = time.Parse(time.RFC3339Nano, at)
	}
	if err := rows.Err(); err != nil {
		return nil, time.Time{}, fmt.Errorf("store %s: %w", s.path, err)
	}
	if len(set.Profiles) == 0 {
		return nil, time.Time{}, nil
	}
	return set, learned, nil
}
