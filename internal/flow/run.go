package flow

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/tcpsentry/tcpsentry/internal/capture"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// PacketError is a packet that could not be used, with where it was.
type PacketError struct {
	File   string
	Packet int // 1-based packet (pcapng: block) number in the file
	Err    error
}

func (e *PacketError) Error() string {
	return fmt.Sprintf("%s: packet %d: %v", e.File, e.Packet, e.Err)
}
func (e *PacketError) Unwrap() error { return e.Err }

// Input says what Run reads and where its results go.
type Input struct {
	Paths   []string // capture files, read in order as one capture; "-" is stdin
	Options Options
	Emit    func(*model.Conn) // each finished connection
	// Warn receives problems that did not stop the run: bad packets
	// (*PacketError, at most MaxWarnings per file, then one summary),
	// unsupported link types (once per type) and unreadable files.
	Warn func(error)
	// Progress, when set, is called every few thousand packets with the
	// bytes read so far and the file size (0 when unknown, e.g. stdin).
	Progress    func(path string, read, size int64)
	MaxWarnings int // default 20
}

// Run reads every capture in in.Paths through one Tracker and flushes the
// flows still open at the end. It returns the tracker's counters; the
// error is non-nil only if no input could be read at all or ctx ended.
func Run(ctx context.Context, in Input) (Stats, error) {
	t := NewTracker(in.Options, in.Emit)
	warn := in.Warn
	if warn == nil {
		warn = func(error) {}
	}
	maxWarn := in.MaxWarnings
	if maxWarn <= 0 {
		maxWarn = 20
	}
	unsupported := map[capture.LinkType]bool{}
	var opened int
	var lastErr error
	for _, path := range in.Paths {
		if err := ctx.Err(); err != nil {
			return t.Stats(), err
		}
		err := runFile(ctx, t, path, in.Progress, warn, maxWarn, unsupported)
		if err != nil {
			lastErr = err
			warn(err)
			continue
		}
		opened++
	}
	t.Flush()
	if opened == 0 && lastErr != nil {
		return t.Stats(), lastErr
	}
	return t.Stats(), ctx.Err()
}

func runFile(ctx context.Context, t *Tracker, path string, progress func(string, int64, int64), warn func(error), maxWarn int, unsupported map[capture.LinkType]bool) (err error) {
	r, err := capture.Open(path)
	if err != nil {
		return err
	}
	defer r.Close()
	// capture.Open maps regular files into memory; if one is truncated
	// while we read it, the fault becomes a panic here, then an error.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if x := recover(); x != nil {
			if f, ok := x.(interface{ Addr() uintptr }); ok {
				err = fmt.Errorf("%s: memory fault reading the file (was it truncated while being read?): %v", path, f)
				return
			}
			panic(x)
		}
	}()
	var size int64
	if progress != nil && path != "-" {
		if fi, err := os.Stat(path); err == nil {
			size = fi.Size()
		}
	}
	var p capture.Packet
	warned, suppressed := 0, 0
	report := func(err error) {
		if warned < maxWarn {
			warned++
			warn(err)
		} else {
			suppressed++
		}
	}
	for n := 0; ; n++ {
		if n&0xffff == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
			if progress != nil {
				progress(path, r.Offset(), size)
			}
		}
		err := r.Next(&p)
		if err == io.EOF {
			break
		}
		if err != nil {
			report(err)
			continue
		}
		if err := t.Packet(&p); err != nil {
			if errors.Is(err, capture.ErrUnsupportedLink) {
				if !unsupported[p.Link] {
					unsupported[p.Link] = true
					warn(fmt.Errorf("%s: packet %d: link type %d (%s) has no decoder; its packets are counted and skipped", path, p.Num, uint32(p.Link), p.Link))
				}
				continue
			}
			report(&PacketError{File: path, Packet: p.Num, Err: err})
		}
	}
	if progress != nil {
		progress(path, r.Offset(), size)
	}
	if suppressed > 0 {
		warn(fmt.Errorf("%s: %d more bad packets not listed", path, suppressed))
	}
	return nil
}
