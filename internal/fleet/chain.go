package fleet

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/detect"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// DetChain is the fleet-lateral-chain detector's name.
const DetChain = "fleet-lateral-chain"

// edge is one admin-protocol connection between internal hosts.
type edge struct {
	peer netip.Addr
	port uint16
	ts   time.Time
	host string // sentry that saw it
}

// pivot is what one internal address did: admin connections into it and
// out of it.
type pivot struct {
	in, out []edge
}

// chainDetector reports A→B→C: an admin-protocol connection (SSH, SMB,
// RDP, WinRM, … — detectors.lateral-movement.admin_ports) from A into B,
// then one from B to C within window, all three internal. B's inbound
// connections have B as destination and its outbound ones B as source, and
// both hash to B's partition, so the destination-side and the source-side
// worker of one partition share this state (hence the mutex); either order
// of arrival is matched. Only two-hop chains are seen: a longer chain
// crosses partitions and is reported hop pair by hop pair.
type chainDetector struct {
	mu       sync.Mutex
	ports    map[uint16]bool
	internal detect.Nets
	window   time.Duration
	max      int
	pivots   map[netip.Addr]*pivot
	reported map[string]bool
	Evicted  int
}

// maxEdges bounds the edges kept per direction of one pivot.
const maxEdges = 64

func newChainDetector(cfg *config.Config) *chainDetector {
	d := &chainDetector{ports: map[uint16]bool{}, window: cfg.Fleet.Chain.Window.Duration, max: cfg.Fleet.Chain.MaxHosts,
		pivots: map[netip.Addr]*pivot{}, reported: map[string]bool{}}
	for _, p := range cfg.Detectors.LateralMovement.AdminPorts {
		d.ports[uint16(p)] = true
	}
	for _, p := range cfg.Networks.Internal {
		d.internal = append(d.internal, p.Prefix)
	}
	return d
}

// admin reports a connection that was answered on an admin port between
// two internal addresses.
func (d *chainDetector) admin(c *model.Conn) bool {
	if c.Update || !d.ports[c.Resp.Port()] || failedAttempt(c) {
		return false
	}
	o, r := c.Orig.Addr().Unmap(), c.Resp.Addr().Unmap()
	return o != r && d.internal.Contains(o) && d.internal.Contains(r)
}

// observe takes c from the destination side (inbound to its responder,
// src=false) or the source side (outbound from its originator, src=true).
func (d *chainDetector) observe(c *model.Conn, host string, src bool, emit detect.Emit) {
	if !d.admin(c) {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	b, peer := c.Resp.Addr().Unmap(), c.Orig.Addr().Unmap()
	if src {
		b, peer = peer, b
	}
	p := d.pivots[b]
	if p == nil {
		if len(d.pivots) >= d.max {
			d.expire(c.TS)
			if len(d.pivots) >= d.max {
				d.Evicted++
				return
			}
		}
		p = &pivot{}
		d.pivots[b] = p
	}
	e := edge{peer: peer, port: c.Resp.Port(), ts: c.TS, host: host}
	if src {
		p.out = appendEdge(p.out, e)
		for _, in := range p.in {
			d.match(b, in, e, emit)
		}
	} else {
		p.in = appendEdge(p.in, e)
		for _, out := range p.out {
			d.match(b, e, out, emit)
		}
	}
}

func appendEdge(es []edge, e edge) []edge {
	if len(es) >= maxEdges {
		copy(es, es[1:])
		es = es[:len(es)-1]
	}
	return append(es, e)
}

// expire drops pivots whose latest edge is older than the window.
func (d *chainDetector) expire(now time.Time) {
	for a, p := range d.pivots {
		latest := time.Time{}
		for _, es := range [][]edge{p.in, p.out} {
			if len(es) > 0 && es[len(es)-1].ts.After(latest) {
				latest = es[len(es)-1].ts
			}
		}
		if now.Sub(latest) > d.window {
			delete(d.pivots, a)
		}
	}
}

func (d *chainDetector) match(b netip.Addr, in, out edge, emit detect.Emit) {
	if in.peer == out.peer || out.ts.Before(in.ts) || out.ts.Sub(in.ts) > d.window {
		return
	}
	entity := fmt.Sprintf("chain %s>%s>%s", in.peer, b, out.peer)
	if d.reported[entity] {
		return
	}
	if len(d.reported) >= d.max {
		clear(d.reported) // bounded; a chain seen again is reported again
	}
	d.reported[entity] = true
	sentries := []string{in.host}
	if out.host != in.host {
		sentries = append(sentries, out.host)
	}
	emit(alert.Alert{
		Detector: DetChain, Entity: entity,
		Title:    fmt.Sprintf("lateral movement chain %s → %s (port %d) → %s (port %d)", in.peer, b, in.port, out.peer, out.port),
		Severity: alert.High, Confidence: 0.7, Attack: []string{"T1021", "T1570"},
		Src: in.peer, Dst: out.peer, DstPort: out.port, HasDstPort: true, Proto: model.ProtoTCP,
		Evidence: map[string]any{"pivot": b.String(), "first_port": in.port, "second_port": out.port,
			"gap_s": out.ts.Sub(in.ts).Seconds(), "sentries": sentries, "window_s": d.window.Seconds()},
		FirstSeen: in.ts, LastSeen: out.ts,
	})
}
