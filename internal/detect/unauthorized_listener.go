package detect

import (
	"fmt"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// ephemeralMin is where Linux's default ip_local_port_range starts. An
// unconnected UDP socket bound above it is a client's (a resolver's query
// socket), not a service, so it is not reported as a listener.
const ephemeralMin = 32768

// UnauthorizedListener reports listening sockets that no allow rule covers.
type UnauthorizedListener struct {
	allowed      []config.ListenerRule
	loopbackLow  bool
	allowedProcs map[string]bool
}

// NewUnauthorizedListener builds the detector from listeners and allowlist config.
func NewUnauthorizedListener(cfg *config.Config) *UnauthorizedListener {
	d := &UnauthorizedListener{allowed: cfg.Listeners.Allowed, loopbackLow: cfg.Listeners.Loopback == "low", allowedProcs: map[string]bool{}}
	for _, p := range cfg.Allowlist.Processes {
		d.allowedProcs[p] = true
	}
	return d
}

// Name implements Detector.
func (*UnauthorizedListener) Name() string { return "unauthorized-listener" }

// ObserveSnapshot implements SnapshotDetector.
func (d *UnauthorizedListener) ObserveSnapshot(snap *model.Snapshot, emit Emit) {
	ix := newListenerIndex(snap)
	for i := range snap.Sockets {
		s := &snap.Sockets[i]
		if !s.IsListener() || (s.Proto == model.ProtoUDP && s.Local.Port() >= ephemeralMin) || s.Local.Port() == 0 {
			continue
		}
		procs := owners(snap, s)
		if d.allows(s, procs) {
			continue
		}
		loopback := s.Local.Addr().Unmap().IsLoopback()
		if loopback && !d.loopbackLow {
			continue
		}
		proc := firstOwner(snap, s)
		a := socketAlert(snap, s, proc, ix)
		a.Entity = fmt.Sprintf("listener %s %s %s", s.Netns, s.Proto, s.Local)
		who := "unknown process"
		if proc != nil {
			who = fmt.Sprintf("%s (pid %d)", proc.Name, proc.PID)
		}
		a.Title = fmt.Sprintf("unauthorized %s listener on %v by %s", s.Proto, s.Local, who)
		a.Severity, a.Confidence = alert.Medium, 0.7
		if loopback {
			a.Severity, a.Confidence = alert.Low, 0.5
		}
		// An unexpected service is most often a backdoor on a port of the
		// attacker's choosing.
		a.Attack = []string{"T1571"}
		a.Evidence = map[string]any{
			"bound":      s.Local.String(),
			"loopback":   loopback,
			"attributed": proc != nil,
		}
		if s.Netns != "" {
			a.Evidence["netns"] = s.Netns
		}
		emit(a)
	}
}

func (d *UnauthorizedListener) allows(s *model.Socket, procs []*model.Process) bool {
	for _, p := range procs {
		if d.allowedProcs[p.Name] || d.allowedProcs[exeBase(p)] {
			return true
		}
	}
	for _, r := range d.allowed {
		if r.Port != 0 && uint16(r.Port) != s.Local.Port() {
			continue
		}
		if r.Proto != "" && protoOf(r.Proto) != s.Proto {
			continue
		}
		if r.Address != nil && !r.Address.Contains(s.Local.Addr().Unmap()) {
			continue
		}
		if r.Process != "" {
			ok := false
			for _, p := range procs {
				if processMatches(p, r.Process) {
					ok = true
					break
				}
			}
			if !ok {
				continue
			}
		}
		return true
	}
	return false
}
