package detect

import (
	"fmt"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// LongConnection reports connections older than the configured ages. The
// age comes from conntrack; without it, the oldest owning process's start
// time bounds the age from above, which can only support a low-confidence
// "may be long-lived" finding, labelled as such.
type LongConnection struct {
	cfg    config.LongConnection
	ignore map[string]bool
}

// NewLongConnection builds the detector from its thresholds.
func NewLongConnection(cfg *config.Config) *LongConnection {
	d := &LongConnection{cfg: cfg.Detectors.LongConnection, ignore: map[string]bool{}}
	for _, p := range d.cfg.IgnoreProcesses {
		d.ignore[p] = true
	}
	return d
}

// Name implements Detector.
func (*LongConnection) Name() string { return "long-connection" }

// ObserveSnapshot implements SnapshotDetector.
func (d *LongConnection) ObserveSnapshot(snap *model.Snapshot, emit Emit) {
	ix := newListenerIndex(snap)
	now := seen(snap)
	for i := range snap.Sockets {
		s := &snap.Sockets[i]
		if s.Proto != model.ProtoTCP || s.State != model.StateEstablished || !isRemote(s.Remote.Addr()) {
			continue
		}
		proc := firstOwner(snap, s)
		if proc != nil && (d.ignore[proc.Name] || d.ignore[exeBase(proc)]) {
			continue
		}
		a := socketAlert(snap, s, proc, ix)
		a.Entity = fmt.Sprintf("conn %s %s %s", s.Netns, s.Local, s.Remote)
		a.Attack = []string{"T1071", "T1571"}
		if !s.ConnStart.IsZero() {
			age := now.Sub(s.ConnStart)
			if age < d.cfg.Medium.Duration {
				continue
			}
			a.Severity, a.Confidence = alert.Medium, 0.8
			if age >= d.cfg.High.Duration {
				a.Severity = alert.High
			}
			a.FirstSeen = s.ConnStart
			a.Title = fmt.Sprintf("connection %v → %v open for %s", s.Local, s.Remote, roundAge(age))
			a.Evidence = map[string]any{"age_s": age.Seconds(), "age_source": "conntrack", "medium_s": d.cfg.Medium.Seconds(), "high_s": d.cfg.High.Seconds()}
			emit(a)
			continue
		}
		if proc == nil || proc.Start.IsZero() {
			continue
		}
		bound := now.Sub(proc.Start)
		if bound < d.cfg.High.Duration {
			continue
		}
		a.Severity, a.Confidence = alert.Low, 0.3
		a.Title = fmt.Sprintf("connection %v → %v may be long-lived: its process has run %s (conntrack age unknown)", s.Local, s.Remote, roundAge(bound))
		a.Evidence = map[string]any{"age_max_s": bound.Seconds(), "age_source": "process_start_upper_bound", "high_s": d.cfg.High.Seconds()}
		emit(a)
	}
}

func roundAge(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%.1fd", d.Hours()/24)
	case d >= time.Hour:
		return d.Round(time.Minute).String()
	}
	return d.Round(time.Second).String()
}
