package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/baseline"
)

// trafficSchema is created on first use, so databases written before
// traffic models existed stay readable and gain the table when needed.
const trafficSchema = `
CREATE TABLE IF NOT EXISTS traffic_models (
	name       TEXT PRIMARY KEY,   -- model name (baseline learn --model), default "traffic"
	model      TEXT NOT NULL,      -- baseline.TrafficModel as JSON
	learned_at TEXT NOT NULL       -- RFC 3339
);`

// SaveTrafficModel replaces the traffic model called name.
func (s *Store) SaveTrafficModel(ctx context.Context, name string, m *baseline.TrafficModel, at time.Time) error {
	blob, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("store: traffic model %s: %w", name, err)
	}
	if _, err := s.db.ExecContext(ctx, trafficSchema); err != nil {
		return fmt.Errorf("store %s: %w", s.path, err)
	}
	if _, err := s.db.ExecContext(ctx, `INSERT OR REPLACE INTO traffic_models (name, model, learned_at) VALUES (?, ?, ?)`,
		name, string(blob), at.UTC().Format(time.RFC3339Nano)); err != nil {
		return fmt.Errorf("store %s: %w", s.path, err)
	}
	return nil
}

// LoadTrafficModel returns the traffic model called name, or nil when none
// was learned. A model this version cannot read is an error naming why.
func (s *Store) LoadTrafficModel(ctx context.Context, name string) (*baseline.TrafficModel, error) {
	if _, err := s.db.ExecContext(ctx, trafficSchema); err != nil {
		return nil, fmt.Errorf("store %s: %w", s.path, err)
	}
	var blob string
	err := s.db.QueryRowContext(ctx, `SELECT model FROM traffic_models WHERE name = ?`, name).Scan(&blob)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", s.path, err)
	}
	var m baseline.TrafficModel
	if err := json.Unmarshal([]byte(blob), &m); err != nil {
		return nil, fmt.Errorf("store %s: traffic model %q: %w", s.path, name, err)
	}
	if err := m.Check(); err != nil {
		return nil, fmt.Errorf("store %s: traffic model %q: %w", s.path, name, err)
	}
	return &m, nil
}
