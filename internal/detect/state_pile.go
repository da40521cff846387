package detect

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// StatePile reports piles of sockets in one state: half-open connections on
// a listener (SYN flood), outstanding connection attempts of a process (scan
// or worm) and connections a process never closed (CLOSE_WAIT).
type StatePile struct {
	cfg config.StatePile
}

// NewStatePile builds the detector from its thresholds.
func NewStatePile(cfg *config.Config) *StatePile { return &StatePile{cfg: cfg.Detectors.StatePile} }

// Name implements Detector.
func (*StatePile) Name() string { return "state-pile" }

type pile struct {
	count   int
	peers   map[netip.Addr]struct{}
	example *model.Socket
}

func (p *pile) add(s *model.Socket) {
	p.count++
	if p.example == nil {
		p.example = s
	}
	// Distinct peers tell a distributed flood from one client; cap the set
	// so a spoofed flood cannot grow it without bound.
	if len(p.peers) < 10000 {
		p.peers[s.Remote.Addr()] = struct{}{}
	}
}

type listenerID struct {
	netns string
	local netip.AddrPort
}

// ObserveSnapshot implements SnapshotDetector.
func (d *StatePile) ObserveSnapshot(snap *model.Snapshot, emit Emit) {
	synRecv := map[listenerID]*pile{}
	synSent := map[int32]*pile{}
	closeWait := map[int32]*pile{}
	listeners := map[listenerID]*model.Socket{}
	get := func(m map[int32]*pile, pid int32) *pile {
		p := m[pid]
		if p == nil {
			p = &pile{peers: map[netip.Addr]struct{}{}}
			m[pid] = p
		}
		return p
	}
	for i := range snap.Sockets {
		s := &snap.Sockets[i]
		if s.Proto != model.ProtoTCP {
			continue
		}
		switch s.State {
		case model.StateListen:
			listeners[listenerID{s.Netns, s.Local}] = s
		case model.StateSynRecv, model.StateNewSynRecv:
			// Request sockets have no inode and no owner: group them by the
			// listener's address, which the SYN was sent to.
			id := listenerID{s.Netns, s.Local}
			p := synRecv[id]
			if p == nil {
				p = &pile{peers: map[netip.Addr]struct{}{}}
				synRecv[id] = p
			}
			p.add(s)
		case model.StateSynSent:
			for _, o := range s.Owners {
				get(synSent, o.PID).add(s)
			}
		case model.StateCloseWait:
			for _, o := range s.Owners {
				get(closeWait, o.PID).add(s)
			}
		}
	}
	ix := newListenerIndex(snap)
	for id, p := range sortedPiles(synRecv, func(a, b listenerID) int {
		if a.netns != b.netns {
			return strings.Compare(a.netns, b.netns)
		}
		return a.local.Compare(b.local)
	}) {
		l := listeners[id]
		if l == nil {
			l = listeners[listenerID{id.netns, netip.AddrPortFrom(unspecifiedLike(id.local.Addr()), id.local.Port())}]
		}
		// A full SYN queue is a flood even below the threshold: with
		// syncookies the kernel keeps no more request sockets than the backlog.
		backlogFull := l != nil && l.SendQ > 0 && p.count >= int(l.SendQ) && p.count >= 8
		if p.count < d.cfg.SynRecv && !backlogFull {
			continue
		}
		var proc *model.Process
		if l != nil {
			proc = firstOwner(snap, l)
		}
		a := socketAlert(snap, p.example, proc, ix)
		a.Src, a.HasSrcPort = netip.Addr{}, false
		a.Dst, a.DstPort, a.HasDstPort = id.local.Addr().Unmap(), id.local.Port(), true
		a.Entity = fmt.Sprintf("syn_recv %s %s", id.netns, id.local)
		a.Title = fmt.Sprintf("SYN flood on %v: %d half-open connections from %d sources", id.local, p.count, len(p.peers))
		a.Severity, a.Confidence = alert.High, 0.8
		if backlogFull {
			a.Confidence = 0.9
		}
		a.Attack = []string{"T1498.001", "T1499.002"}
		a.Evidence = map[string]any{"state": "SYN_RECV", "count": p.count, "threshold": d.cfg.SynRecv, "distinct_sources": len(p.peers), "backlog_full": backlogFull}
		if l != nil {
			a.Evidence["backlog"] = l.SendQ
		}
		emit(a)
	}
	for pid, p := range sortedPiles(synSent, cmp.Compare[int32]) {
		if p.count < d.cfg.SynSent {
			continue
		}
		proc := snap.Processes[pid]
		a := socketAlert(snap, p.example, proc, ix)
		a.Dst, a.HasDstPort = netip.Addr{}, false
		a.Entity = fmt.Sprintf("syn_sent pid %d", pid)
		a.Title = fmt.Sprintf("%s connecting to %d destinations at once (%d in SYN_SENT)", procLabel(proc, pid), len(p.peers), p.count)
		a.Severity, a.Confidence = alert.High, 0.7
		a.Attack = []string{"T1046"}
		a.Evidence = map[string]any{"state": "SYN_SENT", "count": p.count, "threshold": d.cfg.SynSent, "distinct_destinations": len(p.peers)}
		emit(a)
	}
	for pid, p := range sortedPiles(closeWait, cmp.Compare[int32]) {
		if p.count < d.cfg.CloseWait {
			continue
		}
		proc := snap.Processes[pid]
		a := socketAlert(snap, p.example, proc, ix)
		a.Src, a.HasSrcPort, a.Dst, a.HasDstPort = netip.Addr{}, false, netip.Addr{}, false
		a.Entity = fmt.Sprintf("close_wait pid %d", pid)
		a.Title = fmt.Sprintf("%s holds %d connections in CLOSE_WAIT from %d peers", procLabel(proc, pid), p.count, len(p.peers))
		a.Severity, a.Confidence = alert.Medium, 0.7
		a.Attack = []string{"T1499.002"}
		a.Evidence = map[string]any{"state": "CLOSE_WAIT", "count": p.count, "threshold": d.cfg.CloseWait, "distinct_peers": len(p.peers)}
		emit(a)
	}
}

func procLabel(p *model.Process, pid int32) string {
	if p == nil {
		return fmt.Sprintf("pid %d", pid)
	}
	return fmt.Sprintf("%s (pid %d)", p.Name, pid)
}

func unspecifiedLike(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

// sortedPiles iterates a map in key order so alerts come out deterministically.
func sortedPiles[K comparable](m map[K]*pile, compare func(a, b K) int) func(func(K, *pile) bool) {
	keys := slices.SortedFunc(maps.Keys(m), compare)
	return func(yield func(K, *pile) bool) {
		for _, k := range keys {
			if !yield(k, m[k]) {
				return
			}
		}
	}
}
