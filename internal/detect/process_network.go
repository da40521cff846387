package detect

import (
	"fmt"
	"net/netip"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/baseline"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// ProfileSource answers what an executable was seen doing while the
// baseline was learned.
type ProfileSource interface {
	Profile(key string) (*baseline.Profile, bool)
}

// ProcessNetwork reports network use a process is not expected to have: by
// policy (processes that must not talk, or only to given ports or networks)
// and against its learned profile.
type ProcessNetwork struct {
	rules    []config.ProcessRule
	profiles ProfileSource
	baseline bool
}

// NewProcessNetwork builds the detector; profiles may be nil.
func NewProcessNetwork(cfg *config.Config, profiles ProfileSource) *ProcessNetwork {
	return &ProcessNetwork{rules: cfg.Detectors.ProcessNetwork.Rules, profiles: profiles, baseline: cfg.Detectors.ProcessNetwork.Baseline && profiles != nil}
}

// Name implements Detector.
func (*ProcessNetwork) Name() string { return "process-network" }

// outbound reports whether s is a connection this host made to another host.
func outbound(ix listenerIndex, s *model.Socket) bool {
	if s.IsListener() || !isRemote(s.Remote.Addr()) || s.Remote.Port() == 0 {
		return false
	}
	switch s.State {
	case model.StateEstablished, model.StateSynSent, model.StateCloseWait, model.StateFinWait1, model.StateFinWait2:
	default:
		return false
	}
	return !ix.accepted(s)
}

// ObserveSnapshot implements SnapshotDetector.
func (d *ProcessNetwork) ObserveSnapshot(snap *model.Snapshot, emit Emit) {
	ix := newListenerIndex(snap)
	for i := range snap.Sockets {
		s := &snap.Sockets[i]
		for _, p := range owners(snap, s) {
			d.checkRules(snap, ix, s, p, emit)
			if d.baseline {
				d.checkProfile(snap, ix, s, p, emit)
			}
		}
	}
}

func (d *ProcessNetwork) checkRules(snap *model.Snapshot, ix listenerIndex, s *model.Socket, p *model.Process, emit Emit) {
	if !outbound(ix, s) && !(s.IsListener() && s.Local.Port() != 0) {
		return
	}
	for _, r := range d.rules {
		if !processMatches(p, r.Process) {
			continue
		}
		var why string
		switch {
		case r.Deny:
			why = "must not use the network"
		case s.IsListener():
			continue
		case len(r.AllowPorts) > 0 && !portIn(r.AllowPorts, s.Remote.Port()):
			why = fmt.Sprintf("may connect only to ports %v", r.AllowPorts)
		case len(r.AllowNetworks) > 0 && !prefixIn(r.AllowNetworks, s.Remote.Addr()):
			why = "may connect only to its allowed networks"
		default:
			continue
		}
		a := socketAlert(snap, s, p, ix)
		a.Entity = fmt.Sprintf("policy %s %s %s", r.Process, s.Proto, endpointOf(s))
		a.Title = fmt.Sprintf("%s (pid %d) %s: %s %v", p.Name, p.PID, why, model.SocketStateName(s.Proto, s.State), endpointOf(s))
		a.Severity, a.Confidence = alert.Medium, 0.9
		if r.Severity.Severity != 0 {
			a.Severity = r.Severity.Severity
		}
		a.Attack = []string{"T1071"}
		a.Evidence = map[string]any{"rule": r.Process, "deny": r.Deny, "reason": why}
		emit(a)
		return
	}
}

func (d *ProcessNetwork) checkProfile(snap *model.Snapshot, ix listenerIndex, s *model.Socket, p *model.Process, emit Emit) {
	key := baseline.Key(p)
	prof, ok := d.profiles.Profile(key)
	var what string
	var evidence map[string]any
	switch {
	case s.IsListener() && s.Local.Port() != 0 && !(s.Proto == model.ProtoUDP && s.Local.Port() >= ephemeralMin):
		pk := baseline.PortKey(s.Proto, s.Local.Port())
		if ok && (prof.Saturated || prof.ListenPorts[pk]) {
			return
		}
		what = "new listening port " + pk
		evidence = map[string]any{"listen_port": pk}
	case outbound(ix, s):
		pk := baseline.PortKey(s.Proto, s.Remote.Port())
		net := baseline.NetOf(s.Remote.Addr())
		if ok && (prof.Saturated || prof.RemotePorts[pk] && prof.RemoteNets[net]) {
			return
		}
		what = fmt.Sprintf("new outbound destination %v", s.Remote)
		evidence = map[string]any{"remote_port": pk, "remote_net": net.String()}
		if ok {
			evidence["port_known"] = prof.RemotePorts[pk]
			evidence["net_known"] = prof.RemoteNets[net]
		}
	default:
		return
	}
	a := socketAlert(snap, s, p, ix)
	a.Entity = fmt.Sprintf("baseline %s %s", key, what)
	a.Title = fmt.Sprintf("%s (pid %d): %s not in its baseline", p.Name, p.PID, what)
	a.Severity, a.Confidence = alert.Medium, 0.6
	evidence["executable"] = key
	evidence["in_baseline"] = ok
	if !ok {
		a.Title = fmt.Sprintf("%s (pid %d), unknown to the baseline, has a %s", p.Name, p.PID, what)
		a.Severity, a.Confidence = alert.Low, 0.5
	}
	a.Attack = []string{"T1071"}
	a.Evidence = evidence
	emit(a)
}

func endpointOf(s *model.Socket) netip.AddrPort {
	if s.IsListener() {
		return s.Local
	}
	return s.Remote
}

func portIn(ports []config.Port, p uint16) bool {
	for _, q := range ports {
		if uint16(q) == p {
			return true
		}
	}
	return false
}

func prefixIn(ps []config.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
