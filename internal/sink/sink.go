package sink

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"

	"github.com/tcpsentry/tcpsentry/internal/alert"
)

// Sink is one place watch delivers alerts to. Send returns nil only when
// the receiver has the alert (as far as the protocol can tell); an error
// leaves the alert in the outbox for a later attempt. Send is called from
// one goroutine per sink.
type Sink interface {
	Name() string
	Send(ctx context.Context, a alert.Alert) error
	Close() error
}

// Reopener is a sink that reopens its file on SIGHUP (logrotate).
type Reopener interface {
	Reopen() error
}

// Table writes the alert table of check to a writer (stdout).
type Table struct {
	mu   sync.Mutex
	w    io.Writer
	opts TableOptions
}

// NewTable returns the table sink.
func NewTable(w io.Writer, opts TableOptions) *Table { return &Table{w: w, opts: opts} }

// Name implements Sink.
func (t *Table) Name() string { return "stdout" }

// Send implements Sink.
func (t *Table) Send(_ context.Context, a alert.Alert) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := WriteTable(t.w, []alert.Alert{a}, "", t.opts); err != nil {
		return fmt.Errorf("stdout: %w", err)
	}
	return nil
}

// Close implements Sink; stdout stays open.
func (t *Table) Close() error { return nil }

// body is the alert JSON of the DESIGN.md contract, as webhooks and syslog send it.
func body(a alert.Alert) ([]byte, error) {
	b, err := json.Marshal(a)
	if err != nil {
		return nil, fmt.Errorf("alert %s: %w", a.ID, err)
	}
	return b, nil
}
