package detect

import (
	"fmt"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/baseline"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// LateralMovement reports connections this host makes to another internal
// host on an administration port (SSH, SMB, RDP, WinRM…), unless the
// learned profile shows the process does so normally.
type LateralMovement struct {
	internal Nets
	admin    map[uint16]bool
	profiles ProfileSource
}

// NewLateralMovement builds the detector; profiles may be nil.
func NewLateralMovement(cfg *config.Config, profiles ProfileSource) *LateralMovement {
	d := &LateralMovement{internal: internalNets(cfg), admin: map[uint16]bool{}, profiles: profiles}
	for _, p := range cfg.Detectors.LateralMovement.AdminPorts {
		d.admin[uint16(p)] = true
	}
	return d
}

func internalNets(cfg *config.Config) Nets {
	n := make(Nets, 0, len(cfg.Networks.Internal))
	for _, p := range cfg.Networks.Internal {
		n = append(n, p.Prefix)
	}
	return n
}

// Name implements Detector.
func (*LateralMovement) Name() string { return "lateral-movement" }

// ObserveSnapshot implements SnapshotDetector.
func (d *LateralMovement) ObserveSnapshot(snap *model.Snapshot, emit Emit) {
	ix := newListenerIndex(snap)
	for i := range snap.Sockets {
		s := &snap.Sockets[i]
		if s.Proto != model.ProtoTCP || !outbound(ix, s) || !d.admin[s.Remote.Port()] {
			continue
		}
		if !d.internal.Contains(s.Local.Addr()) || !d.internal.Contains(s.Remote.Addr()) {
			continue
		}
		proc := firstOwner(snap, s)
		known := false
		if proc != nil && d.profiles != nil {
			if prof, ok := d.profiles.Profile(baseline.Key(proc)); ok {
				known = prof.RemotePorts[baseline.PortKey(s.Proto, s.Remote.Port())]
			}
		}
		if known {
			continue
		}
		a := socketAlert(snap, s, proc, ix)
		a.Entity = fmt.Sprintf("lateral %s → %s:%d", s.Local.Addr(), s.Remote.Addr(), s.Remote.Port())
		who := "a process"
		if proc != nil {
			who = fmt.Sprintf("%s (pid %d)", proc.Name, proc.PID)
		}
		a.Title = fmt.Sprintf("%s on this host connects to internal %v on admin port %d", who, s.Remote.Addr(), s.Remote.Port())
		a.Severity, a.Confidence = alert.Medium, 0.5
		if d.profiles != nil {
			a.Confidence = 0.7
		}
		a.Attack = []string{"T1021"}
		a.Evidence = map[string]any{"admin_port": s.Remote.Port(), "state": model.SocketStateName(s.Proto, s.State), "baseline": d.profiles != nil}
		emit(a)
	}
}
