package detect

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// SuspiciousPort reports listeners and connections on ports with a history
// of abuse, and well-known services listening where they do not belong.
type SuspiciousPort struct {
	ports    map[portKey]config.SuspiciousPort
	services []config.ServicePorts
	// protocols by Zeek service name, and the protocol each standard port
	// belongs to (the first listed wins when two share a port).
	protocols map[string]config.ProtocolPorts
	portOwner map[uint16]string
	// alerted holds the uids of open connections already alerted on.
	alerted *uidSet
}

// remember wraps emit so that an alert on an open connection records its
// uid, and its later records are not alerted again.
func (d *SuspiciousPort) remember(uid string, emit Emit) Emit {
	return func(a alert.Alert) {
		d.alerted.put(uid)
		emit(a)
	}
}

type portKey struct {
	proto model.Proto
	port  uint16
}

func protoOf(p config.Proto) model.Proto {
	if p == "udp" {
		return model.ProtoUDP
	}
	return model.ProtoTCP
}

// NewSuspiciousPort builds the detector from the config's port lists.
func NewSuspiciousPort(cfg *config.Config) *SuspiciousPort {
	d := &SuspiciousPort{ports: map[portKey]config.SuspiciousPort{}, services: cfg.Ports.Services, alerted: newUIDSet(1 << 12)}
	for _, p := range cfg.Ports.Suspicious {
		d.ports[portKey{protoOf(p.Proto), uint16(p.Port)}] = p
	}
	d.protocols = make(map[string]config.ProtocolPorts, len(cfg.Ports.Protocols))
	d.portOwner = map[uint16]string{}
	for _, pp := range cfg.Ports.Protocols {
		d.protocols[pp.Name] = pp
		for _, p := range pp.Ports {
			if _, taken := d.portOwner[uint16(p)]; !taken {
				d.portOwner[uint16(p)] = pp.Name
			}
		}
	}
	return d
}

// Name implements Detector.
func (*SuspiciousPort) Name() string { return "suspicious-port" }

// ObserveSnapshot implements SnapshotDetector.
func (d *SuspiciousPort) ObserveSnapshot(snap *model.Snapshot, emit Emit) {
	ix := newListenerIndex(snap)
	for i := range snap.Sockets {
		s := &snap.Sockets[i]
		proc := firstOwner(snap, s)
		if s.IsListener() {
			if p, ok := d.ports[portKey{s.Proto, s.Local.Port()}]; ok {
				emit(d.alert(snap, ix, s, proc, p, fmt.Sprintf("listener on suspicious port %s/%d", s.Proto, s.Local.Port()),
					fmt.Sprintf("listener %s %s %s", s.Netns, s.Proto, s.Local), "local"))
			}
			if proc != nil && s.Proto == model.ProtoTCP {
				d.checkService(snap, ix, s, proc, emit)
			}
			continue
		}
		if !s.Remote.Addr().IsValid() || s.Remote.Port() == 0 {
			continue
		}
		// A connection whose remote port is suspicious (we dialled it), or
		// whose local port is (someone reached our suspicious listener).
		if p, ok := d.ports[portKey{s.Proto, s.Remote.Port()}]; ok {
			emit(d.alert(snap, ix, s, proc, p, fmt.Sprintf("connection to suspicious port %s %v", s.Proto, s.Remote),
				fmt.Sprintf("conn %s %s %s→%s", s.Netns, s.Proto, s.Local.Addr(), s.Remote), "remote"))
		} else if p, ok := d.ports[portKey{s.Proto, s.Local.Port()}]; ok && s.State != model.StateSynRecv {
			emit(d.alert(snap, ix, s, proc, p, fmt.Sprintf("connection from %v on suspicious port %s/%d", s.Remote.Addr(), s.Proto, s.Local.Port()),
				fmt.Sprintf("conn %s %s %s←%s", s.Netns, s.Proto, s.Local, s.Remote.Addr()), "local"))
		}
	}
}

func (d *SuspiciousPort) alert(snap *model.Snapshot, ix listenerIndex, s *model.Socket, proc *model.Process, p config.SuspiciousPort, title, entity, side string) alert.Alert {
	a := socketAlert(snap, s, proc, ix)
	a.Entity = entity
	a.Title = title
	a.Severity = p.Severity.Severity
	a.Confidence = 0.6
	// T1571 non-standard port; a backdoor listener is also persistence (T1205 is traffic signalling, not this).
	a.Attack = []string{"T1571"}
	a.Evidence = map[string]any{"port": p.Port, "side": side, "reason": p.Reason, "state": model.SocketStateName(s.Proto, s.State)}
	return a
}

// answered is whether a connection's responder took part: the handshake
// completed (TCP) or it replied at all (UDP). A scan's unanswered probes to
// a suspicious port say nothing about a service there; the scan detector
// reports them.
func answered(c *model.Conn) bool {
	switch c.Proto {
	case model.ProtoTCP:
		switch c.ConnState {
		case model.ConnS1, model.ConnSF, model.ConnS2, model.ConnS3, model.ConnRSTO, model.ConnRSTR:
			return true
		}
		return false
	case model.ProtoUDP:
		return c.RespPkts > 0
	}
	return false
}

// ObserveConn implements ConnDetector: a connection that reached a service
// on a suspicious port, or that speaks a protocol on a port that is not
// its own.
func (d *SuspiciousPort) ObserveConn(c *model.Conn, emit Emit) {
	if c.Proto != model.ProtoTCP && c.Proto != model.ProtoUDP {
		return
	}
	// A live source reports a connection while open and again when it
	// ends: alert on the first answered record only.
	if c.Update && d.alerted.take(c.UID) {
		return
	}
	if c.End == model.EndOpen && !answered(c) {
		return
	}
	p, suspicious := d.ports[portKey{c.Proto, c.Resp.Port()}]
	if c.End == model.EndOpen {
		emit = d.remember(c.UID, emit)
	}
	if d.checkProtocol(c, p, suspicious, emit) || !suspicious || !answered(c) {
		return
	}
	a := connAlert(c)
	a.Title = fmt.Sprintf("%v talked to %v on suspicious port %s/%d", c.Orig.Addr(), c.Resp, c.Proto, c.Resp.Port())
	a.Severity, a.Confidence = p.Severity.Severity, 0.6
	a.Evidence["port"], a.Evidence["reason"] = p.Port, p.Reason
	if c.Service != "" {
		a.Evidence["service"] = c.Service
	}
	emit(a)
}

// connAlert fills what every alert about one connection record carries.
func connAlert(c *model.Conn) alert.Alert {
	return alert.Alert{
		Entity: fmt.Sprintf("conn %s %s→%s", c.Proto, c.Orig.Addr(), c.Resp),
		Attack: []string{"T1571"},
		Src:    c.Orig.Addr().Unmap(), SrcPort: c.Orig.Port(), HasSrcPort: true,
		Dst: c.Resp.Addr().Unmap(), DstPort: c.Resp.Port(), HasDstPort: true,
		Proto:     c.Proto,
		FirstSeen: c.TS,
		LastSeen:  c.LastSeen(),
		Evidence: map[string]any{
			"conn_state": string(c.ConnState), "history": c.History,
			"orig_bytes": c.OrigBytes, "resp_bytes": c.RespBytes, "uid": c.UID,
		},
	}
}

// checkProtocol reports a protocol (identified from the payload, or
// Zeek's service field) spoken on another protocol's standard port or on a
// suspicious port: SSH on 443, HTTP on 6667, TLS on 4444. It returns
// whether it reported, so the plain suspicious-port alert is not repeated.
func (d *SuspiciousPort) checkProtocol(c *model.Conn, sp config.SuspiciousPort, suspicious bool, emit Emit) bool {
	if c.Service == "" {
		return false
	}
	port := c.Resp.Port()
	for name := range strings.SplitSeq(c.Service, ",") {
		name = strings.ToLower(strings.TrimSpace(name))
		pp, known := d.protocols[name]
		if !known || slices.Contains(pp.Ports, config.Port(port)) {
			continue
		}
		owner := d.portOwner[port]
		if owner == "" && !suspicious {
			continue
		}
		a := connAlert(c)
		a.Entity = fmt.Sprintf("protocol %s %s %s→%s", name, c.Proto, c.Orig.Addr(), c.Resp)
		a.Severity, a.Confidence = pp.Severity.Severity, 0.8
		if a.Severity == 0 {
			a.Severity = alert.Medium
		}
		a.Evidence["service"], a.Evidence["port"] = name, port
		a.Evidence["standard_ports"] = pp.Ports
		if owner != "" {
			a.Title = fmt.Sprintf("%s spoken on port %d, which belongs to %s: %v → %v", protocolTitle(name), port, protocolTitle(owner), c.Orig.Addr(), c.Resp)
			a.Evidence["port_belongs_to"] = owner
		} else {
			a.Title = fmt.Sprintf("%s spoken on suspicious port %d: %v → %v", protocolTitle(name), port, c.Orig.Addr(), c.Resp)
		}
		if suspicious {
			a.Evidence["reason"] = sp.Reason
			a.Severity = max(a.Severity, sp.Severity.Severity)
		}
		emit(a)
		return true
	}
	return false
}

// protocolTitle is how an alert title names a Zeek service.
func protocolTitle(name string) string {
	switch name {
	case "ssl":
		return "TLS"
	case "rfb":
		return "VNC (RFB)"
	case "mysql":
		return "MySQL"
	}
	return strings.ToUpper(name)
}

// checkService reports a known service's process listening off its ports.
func (d *SuspiciousPort) checkService(snap *model.Snapshot, ix listenerIndex, s *model.Socket, proc *model.Process, emit Emit) {
	for _, svc := range d.services {
		named := false
		for _, n := range svc.Processes {
			if processMatches(proc, n) {
				named = true
				break
			}
		}
		if !named {
			continue
		}
		for _, p := range svc.Ports {
			if uint16(p) == s.Local.Port() {
				return
			}
		}
		a := socketAlert(snap, s, proc, ix)
		a.Entity = fmt.Sprintf("service %s %s %s", svc.Name, s.Netns, s.Local)
		a.Title = fmt.Sprintf("%s (%s) listening on non-standard port %d", svc.Name, proc.Name, s.Local.Port())
		a.Severity = alert.Low
		a.Confidence = 0.5
		a.Attack = []string{"T1571"}
		a.Evidence = map[string]any{"service": svc.Name, "port": s.Local.Port(), "standard_ports": svc.Ports}
		emit(a)
		return
	}
}

// socketAlert fills the entity fields every socket-based alert shares.
// Src is the originator: the remote end for an accepted connection, us for
// one we dialled or a listener.
func socketAlert(snap *model.Snapshot, s *model.Socket, proc *model.Process, ix listenerIndex) alert.Alert {
	a := alert.Alert{
		Proto:     s.Proto,
		Process:   alert.RefOf(proc),
		FirstSeen: seen(snap),
		LastSeen:  seen(snap),
	}
	if s.IsListener() || !s.Remote.Addr().IsValid() || s.Remote.Addr().IsUnspecified() {
		a.Dst, a.DstPort, a.HasDstPort = s.Local.Addr().Unmap(), s.Local.Port(), true
		return a
	}
	local, remote := s.Local, s.Remote
	if ix.accepted(s) {
		a.Src, a.SrcPort, a.HasSrcPort = remote.Addr().Unmap(), remote.Port(), true
		a.Dst, a.DstPort, a.HasDstPort = local.Addr().Unmap(), local.Port(), true
	} else {
		a.Src, a.SrcPort, a.HasSrcPort = local.Addr().Unmap(), local.Port(), true
		a.Dst, a.DstPort, a.HasDstPort = remote.Addr().Unmap(), remote.Port(), true
	}
	return a
}

// listenerIndex says in O(1) whether a connected socket was accepted
// from a local listener (same netns and port, its address or any).
type listenerIndex map[listenKey]bool

type listenKey struct {
	netns string
	proto model.Proto
	addr  netip.Addr
	port  uint16
}

func newListenerIndex(snap *model.Snapshot) listenerIndex {
	ix := listenerIndex{}
	for i := range snap.Sockets {
		l := &snap.Sockets[i]
		if l.Proto == model.ProtoTCP && l.State == model.StateListen {
			a := l.Local.Addr().Unmap()
			if a.IsUnspecified() {
				a = netip.Addr{}
			}
			ix[listenKey{l.Netns, l.Proto, a, l.Local.Port()}] = true
		}
	}
	return ix
}

func (ix listenerIndex) accepted(s *model.Socket) bool {
	return ix[listenKey{s.Netns, s.Proto, s.Local.Addr().Unmap(), s.Local.Port()}] ||
		ix[listenKey{s.Netns, s.Proto, netip.Addr{}, s.Local.Port()}]
}
