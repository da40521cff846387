package detect

import (
	"fmt"
	"maps"
	"slices"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/baseline"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// Egress reports connections from this host to external networks on ports
// outside the allowed list and outside the process's learned profile: the
// shape of command-and-control on an unusual port.
type Egress struct {
	internal Nets
	allowed  map[uint16]bool
	profiles ProfileSource
}

// NewEgress builds the detector; profiles may be nil.
func NewEgress(cfg *config.Config, profiles ProfileSource) *Egress {
	d := &Egress{internal: internalNets(cfg), allowed: map[uint16]bool{}, profiles: profiles}
	for _, p := range cfg.Detectors.Egress.AllowedPorts {
		d.allowed[uint16(p)] = true
	}
	return d
}

// Name implements Detector.
func (*Egress) Name() string { return "egress" }

// ObserveSnapshot implements SnapshotDetector.
func (d *Egress) ObserveSnapshot(snap *model.Snapshot, emit Emit) {
	ix := newListenerIndex(snap)
	for i := range snap.Sockets {
		s := &snap.Sockets[i]
		if !outbound(ix, s) || d.internal.Contains(s.Remote.Addr()) || d.allowed[s.Remote.Port()] {
			continue
		}
		proc := firstOwner(snap, s)
		if proc != nil && d.profiles != nil {
			if prof, ok := d.profiles.Profile(baseline.Key(proc)); ok &&
				(prof.Saturated || prof.RemotePorts[baseline.PortKey(s.Proto, s.Remote.Port())]) {
				continue
			}
		}
		a := socketAlert(snap, s, proc, ix)
		a.Entity = fmt.Sprintf("egress %s %s → %v", s.Proto, s.Local.Addr(), s.Remote)
		who := "a process"
		if proc != nil {
			who = fmt.Sprintf("%s (pid %d)", proc.Name, proc.PID)
		}
		a.Title = fmt.Sprintf("%s connects out to %v on unusual port %d", who, s.Remote.Addr(), s.Remote.Port())
		a.Severity, a.Confidence = alert.Low, 0.4
		a.Attack = []string{"T1571", "T1071"}
		a.Evidence = map[string]any{"remote_port": s.Remote.Port(), "allowed_ports": slices.Sorted(maps.Keys(d.allowed)), "baseline": d.profiles != nil}
		emit(a)
	}
}
