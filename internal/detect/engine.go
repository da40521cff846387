// Package detect runs detectors over tcpsentry's records and collects
// their alerts. Each detector lives in its own file; registry.go lists them.
package detect

import (
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// Emit receives one alert from a detector.
type Emit func(alert.Alert)

// SnapshotDetector inspects a host snapshot.
type SnapshotDetector interface {
	ObserveSnapshot(s *model.Snapshot, emit Emit)
}

// ConnDetector inspects connection records (from captures, conn.log or
// live sources), in event-time order per source.
type ConnDetector interface {
	ObserveConn(c *model.Conn, emit Emit)
}

// Flusher is a detector with windows to close when the input ends or the
// clock moves on.
type Flusher interface {
	Flush(now time.Time, emit Emit)
}

// Noter is a detector with something to say once about how it ran: no
// learned model, findings dropped at a bound.
type Noter interface {
	Notes() []string
}

// Detector is anything the registry builds; it also implements one or more
// of the observer interfaces.
type Detector interface {
	Name() string
}

// Engine feeds records to the enabled detectors and aggregates their alerts.
type Engine struct {
	detectors []Detector
	emits     []Emit // emits[i] is detectors[i]'s
	agg       *alert.Aggregator
	source    string
	log       *slog.Logger
	// Invalid counts alerts dropped because a detector produced them
	// malformed; a detector bug must not take the others down with it.
	Invalid int
}

// NewEngine returns an engine over the given detectors; source labels the
// alerts (host:NAME, file:PATH).
func NewEngine(detectors []Detector, source string, log *slog.Logger) *Engine {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Engine{detectors: detectors, agg: alert.NewAggregator(), source: source, log: log}
	// One emit function per detector, made once: making it per record
	// was an allocation per record per detector.
	e.emits = make([]Emit, len(detectors))
	for i, d := range detectors {
		e.emits[i] = e.emitFor(d.Name())
	}
	return e
}

// Detectors returns the names of the detectors the engine runs.
func (e *Engine) Detectors() []string {
	names := make([]string, len(e.detectors))
	for i, d := range e.detectors {
		names[i] = d.Name()
	}
	return names
}

func (e *Engine) emitFor(name string) Emit {
	return func(a alert.Alert) {
		if a.Detector == "" {
			a.Detector = name
		}
		if a.Source == "" {
			a.Source = e.source
		}
		if err := a.Validate(); err != nil {
			e.Invalid++
			e.log.Error("detector produced an invalid alert", "detector", name, "err", err)
			return
		}
		e.agg.Add(a)
	}
}

// ObserveSnapshot runs every snapshot detector once. A detector that panics
// is reported and the others still run.
func (e *Engine) ObserveSnapshot(s *model.Snapshot) (errs []error) {
	for _, d := range e.detectors {
		sd, ok := d.(SnapshotDetector)
		if !ok {
			continue
		}
		func() {
			defer func() {
				if r := recover(); r != nil {
					errs = append(errs, fmt.Errorf("detector %s failed: %v", d.Name(), r))
				}
			}()
			sd.ObserveSnapshot(s, e.emitFor(d.Name()))
		}()
	}
	return errs
}

// SetSource changes the label of the alerts emitted from now on, for a
// caller that feeds several files through one engine.
func (e *Engine) SetSource(source string) { e.source = source }

// ObserveConn runs every connection detector on c. A detector that panics
// is reported once per call and the others still run.
func (e *Engine) ObserveConn(c *model.Conn) (errs []error) {
	for i, d := range e.detectors {
		cd, ok := d.(ConnDetector)
		if !ok {
			continue
		}
		func() {
			defer func() {
				if r := recover(); r != nil {
					errs = append(errs, fmt.Errorf("detector %s failed on connection %s: %v", d.Name(), c.UID, r))
				}
			}()
			cd.ObserveConn(c, e.emits[i])
		}()
	}
	return errs
}

// Flush closes every detector's windows at event time now.
func (e *Engine) Flush(now time.Time) {
	for _, d := range e.detectors {
		if f, ok := d.(Flusher); ok {
			f.Flush(now, e.emitFor(d.Name()))
		}
	}
}

// Notes collects what the detectors have to say about how they ran; call
// it after Flush.
func (e *Engine) Notes() []string {
	var out []string
	for _, d := range e.detectors {
		if n, ok := d.(Noter); ok {
			out = append(out, n.Notes()...)
		}
	}
	return out
}

// Alerts returns the aggregated alerts, most severe first.
func (e *Engine) Alerts() []alert.Alert { return e.agg.Alerts() }

// Nets is a small set of prefixes (internal networks, allowlists); these
// lists are short, so a scan beats a trie.
type Nets []netip.Prefix

// Contains reports whether a (unmapped) is in one of the prefixes.
func (n Nets) Contains(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range n {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// owners returns the processes holding s, in owner order, skipping owners
// whose details could not be read.
func owners(snap *model.Snapshot, s *model.Socket) []*model.Process {
	var out []*model.Process
	for _, o := range s.Owners {
		if p := snap.Processes[o.PID]; p != nil {
			out = append(out, p)
		}
	}
	return out
}

// firstOwner is the process an alert names for a socket; nil if unknown.
func firstOwner(snap *model.Snapshot, s *model.Socket) *model.Process {
	for _, o := range s.Owners {
		if p := snap.Processes[o.PID]; p != nil {
			return p
		}
	}
	return nil
}

// exeBase is the base name of p's executable, or its comm when unknown.
func exeBase(p *model.Process) string {
	if p.Exe != "" {
		e := p.Exe
		for i := len(e) - 1; i >= 0; i-- {
			if e[i] == '/' {
				e = e[i+1:]
				break
			}
		}
		// "/usr/bin/foo (deleted)" is still foo.
		if n := len(e) - len(" (deleted)"); n > 0 && e[n:] == " (deleted)" {
			e = e[:n]
		}
		return e
	}
	return p.Name
}

// processName is how a rule names a process: comm or exe base name.
func processMatches(p *model.Process, name string) bool {
	if name == "" {
		return true
	}
	return p.Name == name || exeBase(p) == name || p.Exe == name
}

// isRemote reports whether the peer is another host: not loopback, not unspecified.
func isRemote(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsValid() && !a.IsLoopback() && !a.IsUnspecified()
}

// seen is the event time of a snapshot-based alert.
func seen(s *model.Snapshot) time.Time {
	if s.Time.IsZero() {
		return time.Unix(0, 0).UTC()
	}
	return s.Time
}
