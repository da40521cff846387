package detect

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// distTarget is what many sources together did to one host: a
// distributed scan splits the ports among sources (botnets, nmap with
// several machines) so that none crosses the per-source thresholds.
// Only the ports of such small sources count: a vertical scanner beside a
// spoofed flood on one port is not a distributed scan.
type distTarget struct {
	start, first, last time.Time
	sources            map[netip.Addr]*distSource
	portSmall          map[uint16]int // ports probed by small sources: how many of them
	small              int            // sources with ports counted in portSmall
	probes             int
	answered           int
	reported           int // ports counted by the alerts so far; 0 = not reported
}

// distSource is one source's distinct ports on a target, kept until it
// has distPortsPerSource of them: then it is large (a scanner in its own
// right, reported by the vertical rule) and its ports leave the tally.
type distSource struct {
	ports  [distPortsPerSource]uint16
	n      uint8
	large  bool
	probes int
}

const (
	distPortsPerSource = 8
	// distMaxSources caps the sources remembered per target; beyond it
	// only the probe count grows.
	distMaxSources = 512
)

// add records port for s; it reports whether the port is new to s.
func (s *distSource) add(port uint16) bool {
	for _, p := range s.ports[:s.n] {
		if p == port {
			return false
		}
	}
	if int(s.n) < len(s.ports) {
		s.ports[s.n] = port
		s.n++
	}
	return true
}

// observeDistributed adds a probe to its target's tally and reports a
// distributed scan when enough sources together touched enough ports and
// no one source did most of the work.
func (d *Scan) observeDistributed(c *model.Conn, probe string, out outcome, emit Emit) {
	dst, src := c.Resp.Addr().Unmap(), c.Orig.Addr().Unmap()
	t := d.dist[dst]
	if t != nil && c.TS.Sub(t.last) > d.cfg.EpisodeGap.Duration && (t.reported > 0 || c.TS.Sub(t.last) > d.cfg.Window.Duration) {
		d.flushDistributed(dst, t, emit)
		t = nil
	}
	if t == nil {
		if len(d.dist) >= d.cfg.MaxSources {
			d.Evicted += evictOldestFunc(&d.dist, func(t *distTarget) time.Time { return t.last },
				func(dst netip.Addr, t *distTarget) { d.flushDistributed(dst, t, emit) })
		}
		t = &distTarget{start: c.TS, first: c.TS, portSmall: map[uint16]int{}, sources: map[netip.Addr]*distSource{}}
		d.dist[dst] = t
	}
	t.probes++
	if out == outOpen {
		t.answered++
	}
	if c.TS.After(t.last) {
		t.last = c.TS
	}
	if c.TS.Before(t.first) {
		t.first = c.TS
	}
	ds := t.sources[src]
	if ds == nil {
		if len(t.sources) >= distMaxSources {
			return
		}
		ds = &distSource{}
		t.sources[src] = ds
	}
	ds.probes++
	if ds.large || !ds.add(c.Resp.Port()) {
		return
	}
	if int(ds.n) == len(ds.ports) {
		// Large now: its ports are its own scan, not a share of one.
		ds.large = true
		for _, p := range ds.ports[:ds.n-1] {
			if t.portSmall[p]--; t.portSmall[p] == 0 {
				delete(t.portSmall, p)
			}
		}
		if ds.n > 1 {
			t.small--
		}
		return
	}
	if ds.n == 1 {
		t.small++
	}
	t.portSmall[c.Resp.Port()]++
	if t.reported > 0 || t.small < d.cfg.DistributedSources || len(t.portSmall) < d.cfg.DistributedPorts {
		return
	}
	a := d.distAlert(dst, t, probe)
	a.Raised = c.TS
	t.reported = len(t.portSmall)
	emit(a)
}

// flushDistributed emits the final figures of a reported distributed scan
// that grew since.
func (d *Scan) flushDistributed(dst netip.Addr, t *distTarget, emit Emit) {
	if t.reported == 0 || len(t.portSmall) <= t.reported {
		return
	}
	a := d.distAlert(dst, t, "")
	a.Count = len(t.portSmall) - t.reported
	t.reported = len(t.portSmall)
	emit(a)
}

func (d *Scan) distAlert(dst netip.Addr, t *distTarget, probe string) alert.Alert {
	var srcs []netip.Addr
	for a, s := range t.sources {
		if !s.large && s.n > 0 {
			srcs = append(srcs, a)
		}
	}
	slices.SortFunc(srcs, func(a, b netip.Addr) int {
		return cmp.Or(cmp.Compare(t.sources[b].n, t.sources[a].n), a.Compare(b))
	})
	top := make([]string, 0, 10)
	for _, s := range srcs[:min(10, len(srcs))] {
		top = append(top, fmt.Sprintf("%v (%d ports)", s, t.sources[s].n))
	}
	ev := map[string]any{
		"kind": "distributed", "sources": t.small, "ports": len(t.portSmall), "probes": t.probes,
		"answered": t.answered, "top_sources": top, "window_s": t.last.Sub(t.first).Seconds(),
		"rate_per_s": rate(t.probes, t.last.Sub(t.first)),
	}
	proto := model.ProtoTCP
	if probe != "" {
		ev["probe"] = probe
		if probe == "udp" {
			proto = model.ProtoUDP
		}
	}
	return alert.Alert{
		Entity:     fmt.Sprintf("scan distributed → %v since %s", dst, t.start.UTC().Format(time.RFC3339Nano)),
		Title:      fmt.Sprintf("distributed scan of %v: %d ports probed by %d sources", dst, len(t.portSmall), t.small),
		Severity:   alert.High,
		Confidence: 0.7,
		Attack:     []string{"T1046"},
		Dst:        dst,
		Proto:      proto,
		FirstSeen:  t.first,
		LastSeen:   t.last,
		Count:      len(t.portSmall),
		Evidence:   ev,
	}
}
