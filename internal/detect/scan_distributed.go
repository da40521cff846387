package detect

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// distTarget is what many sources together did to one host: a
// distributed scan splits the ports among sources (botnets, nmap with
// several machines) so that none crosses the per-source thresholds.
type distTarget struct {
	start, first, last time.Time
	ports              map[uint16]struct{}
	sources            map[netip.Addr]int // probes per source
	probes             int
	answered           int
	reported           int // ports counted by the alerts so far; 0 = not reported
}

// distMaxSources caps the sources remembered per target; beyond it only
// the probe count grows.
const distMaxSources = 4096

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
		t = &distTarget{start: c.TS, first: c.TS, ports: map[uint16]struct{}{}, sources: map[netip.Addr]int{}}
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
	if len(t.ports) < 65536 {
		t.ports[c.Resp.Port()] = struct{}{}
	}
	if _, ok := t.sources[src]; ok || len(t.sources) < distMaxSources {
		t.sources[src]++
	}
	if t.reported > 0 || len(t.sources) < d.cfg.DistributedSources || len(t.ports) < d.cfg.DistributedPorts {
		return
	}
	top := 0
	for _, n := range t.sources {
		top = max(top, n)
	}
	if 2*top >= t.probes {
		return // one source did most of it: its own scan alert says so
	}
	a := d.distAlert(dst, t, probe)
	a.Raised = c.TS
	t.reported = len(t.ports)
	emit(a)
}

// flushDistributed emits the final figures of a reported distributed scan
// that grew since.
func (d *Scan) flushDistributed(dst netip.Addr, t *distTarget, emit Emit) {
	if t.reported == 0 || len(t.ports) <= t.reported {
		return
	}
	a := d.distAlert(dst, t, "")
	a.Count = len(t.ports) - t.reported
	t.reported = len(t.ports)
	emit(a)
}

func (d *Scan) distAlert(dst netip.Addr, t *distTarget, probe string) alert.Alert {
	srcs := slices.SortedFunc(maps.Keys(t.sources), func(a, b netip.Addr) int {
		return cmp.Or(cmp.Compare(t.sources[b], t.sources[a]), a.Compare(b))
	})
	top := make([]string, 0, 10)
	for _, s := range srcs[:min(10, len(srcs))] {
		top = append(top, fmt.Sprintf("%v (%d)", s, t.sources[s]))
	}
	ev := map[string]any{
		"kind": "distributed", "sources": len(t.sources), "ports": len(t.ports), "probes": t.probes,
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
		Title:      fmt.Sprintf("distributed scan of %v: %d ports probed by %d sources", dst, len(t.ports), len(t.sources)),
		Severity:   alert.High,
		Confidence: 0.7,
		Attack:     []string{"T1046"},
		Dst:        dst,
		Proto:      proto,
		FirstSeen:  t.first,
		LastSeen:   t.last,
		Count:      len(t.ports),
		Evidence:   ev,
	}
}
