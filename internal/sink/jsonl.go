package sink

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/tcpsentry/tcpsentry/internal/alert"
)

// JSONL appends one alert JSON per line to a file. Reopen, called on
// SIGHUP, closes it and opens the path again so that logrotate's rename is
// followed. A write error (disk full) is returned as is, naming the file;
// the alert stays in the outbox and is written again later.
type JSONL struct {
	mu   sync.Mutex
	path string
	f    *os.File
}

// NewJSONL opens (creating it and its directory) path for appending.
func NewJSONL(path string) (*JSONL, error) {
	j := &JSONL{path: path}
	if err := j.open(); err != nil {
		return nil, err
	}
	return j, nil
}

func (j *JSONL) open() error {
	if err := os.MkdirAll(filepath.Dir(j.path), 0o750); err != nil {
		return fmt.Errorf("jsonl %s: %w", j.path, err)
	}
	f, err := os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("jsonl %s: %w", j.path, err)
	}
	j.f = f
	return nil
}

// Name implements Sink.
func (j *JSONL) Name() string { return "jsonl" }

// Send implements Sink. The line is written with one write call, so a
// reader never sees half of it interleaved with another line; a short write
// (disk full mid-line) is an error and the partial line is cut off again.
func (j *JSONL) Send(_ context.Context, a alert.Alert) error {
	b, err := body(a)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		if err := j.open(); err != nil {
			return err
		}
	}
	// The size, not our offset: with O_APPEND every write lands at the
	// end, wherever a truncating logrotate left it.
	fi, serr := j.f.Stat()
	n, err := j.f.Write(b)
	if err != nil {
		if n > 0 && serr == nil && fi.Mode().IsRegular() {
			before := fi.Size()
			// Leave no torn line for a JSON lines reader to trip over.
			_ = j.f.Truncate(before)
		}
		return fmt.Errorf("jsonl %s: writing alert %s: %w", j.path, a.ID, err)
	}
	return nil
}

// Reopen implements Reopener.
func (j *JSONL) Reopen() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f != nil {
		j.f.Close()
		j.f = nil
	}
	return j.open()
}

// Close implements Sink.
func (j *JSONL) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}
