package fleet

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/detect"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// Detector names of the fleet-only detectors (DESIGN.md's list).
const (
	DetDestination = "fleet-destination"
	DetScan        = "fleet-scan"
)

// maxListed bounds the host names an alert's evidence lists.
const maxListed = 20

// destKey is one destination service.
type destKey struct {
	proto model.Proto
	dst   netip.AddrPort
}

// destState is what one destination's window has seen.
type destState struct {
	window  time.Time
	first   time.Time
	hosts   map[string]*hostContacts
	conns   int
	reached int  // host count last reported
	changed bool // seen more since the last report
}

// hostContacts tracks one host's connections to a destination for the
// periodicity test: its latest intervals, judged by their median and
// median absolute deviation, so that one missed or delayed check-in (an
// interval twice as long) or jitter does not hide a beacon the way it
// inflates a standard deviation.
type hostContacts struct {
	n    int
	last time.Time
	iv   []float32 // the latest intervals in seconds, a ring of maxIntervals
	next int       // ring position of the next interval
}

// maxIntervals bounds each host's kept intervals (64 bytes).
const maxIntervals = 16

// periodicMADRatio: intervals whose median absolute deviation is at most
// this share of their median are periodic (a beacon with ±20% uniform
// jitter has a ratio of about 0.1).
const periodicMADRatio = 0.2

func (h *hostContacts) add(ts time.Time) {
	if h.n > 0 {
		iv := float32(ts.Sub(h.last).Seconds())
		if len(h.iv) < maxIntervals {
			h.iv = append(h.iv, iv)
		} else {
			h.iv[h.next] = iv
		}
		h.next = (h.next + 1) % maxIntervals
	}
	h.n++
	h.last = ts
}

// periodic reports whether the host's contacts look like a beacon (at
// least 3 intervals, robustly regular) and their median interval.
func (h *hostContacts) periodic() (bool, time.Duration) {
	if len(h.iv) < 3 {
		return false, 0
	}
	xs := slices.Clone(h.iv)
	slices.Sort(xs)
	med := median32(xs)
	if med <= 0 {
		return false, 0
	}
	for i, x := range xs {
		xs[i] = float32(math.Abs(float64(x - med)))
	}
	slices.Sort(xs)
	return median32(xs) <= periodicMADRatio*med, time.Duration(float64(med) * float64(time.Second))
}

// median32 is the median of sorted xs.
func median32(xs []float32) float32 {
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

// destinationDetector reports one external destination contacted by
// several hosts in one window: the same command-and-control address
// beaconed from several laptops. It runs on a destination partition, so
// all records of a destination reach the same instance. Alerts rank by
// host count (severity and confidence grow with it) and say how many
// hosts contact it periodically.
type destinationDetector struct {
	cfg      config.FleetDestination
	internal detect.Nets
	dests    map[destKey]*destState
	Evicted  int
}

func newDestinationDetector(cfg *config.Config) *destinationDetector {
	d := &destinationDetector{cfg: cfg.Fleet.Destination, dests: map[destKey]*destState{}}
	for _, p := range cfg.Networks.Internal {
		d.internal = append(d.internal, p.Prefix)
	}
	return d
}

func (d *destinationDetector) observe(c *model.Conn, host string, emit detect.Emit) {
	dst := c.Resp.Addr().Unmap()
	if c.Update || !dst.IsValid() || d.internal.Contains(dst) || dst.IsLoopback() || dst.IsMulticast() {
		return
	}
	k := destKey{c.Proto, netip.AddrPortFrom(dst, c.Resp.Port())}
	win := c.TS.Truncate(d.cfg.Window.Duration)
	s := d.dests[k]
	if s == nil || !s.window.Equal(win) {
		if s == nil && len(d.dests) >= d.cfg.MaxDests && !d.evict(win) {
			d.Evicted++
			return
		}
		s = &destState{window: win, first: c.TS, hosts: map[string]*hostContacts{}}
		d.dests[k] = s
	}
	s.conns++
	h := s.hosts[host]
	if h == nil {
		if len(s.hosts) >= 4*maxListed && len(s.hosts) >= d.cfg.MinHosts {
			return // enough hosts to rank; bound the state
		}
		h = &hostContacts{}
		s.hosts[host] = h
	}
	h.add(c.TS)
	if len(s.hosts) >= d.cfg.MinHosts && len(s.hosts) > s.reached {
		s.reached = len(s.hosts)
		s.changed = false
		emit(d.alert(k, s, c.TS))
		return
	}
	s.changed = s.reached > 0
}

// flush reports the reported destinations that saw more since (more
// connections make a periodic pattern visible); same id, newer figures.
func (d *destinationDetector) flush(now time.Time, emit detect.Emit) {
	for k, s := range d.dests {
		if s.changed {
			s.changed = false
			emit(d.alert(k, s, now))
		}
	}
}

// evict drops destinations of windows before win; false when none was.
func (d *destinationDetector) evict(win time.Time) bool {
	n := len(d.dests)
	for k, s := range d.dests {
		if s.window.Before(win) {
			delete(d.dests, k)
		}
	}
	return len(d.dests) < n
}

func (d *destinationDetector) alert(k destKey, s *destState, now time.Time) alert.Alert {
	hosts := make([]string, 0, len(s.hosts))
	periodic := 0
	var every []time.Duration // periodic hosts' median intervals
	for name, h := range s.hosts {
		hosts = append(hosts, name)
		if ok, iv := h.periodic(); ok {
			periodic++
			every = append(every, iv)
		}
	}
	slices.Sort(hosts)
	slices.Sort(every)
	n := len(hosts)
	if len(hosts) > maxListed {
		hosts = hosts[:maxListed]
	}
	sev := alert.Medium
	if n >= 2*d.cfg.MinHosts || periodic >= d.cfg.MinHosts {
		sev = alert.High
	}
	conf := math.Min(0.95, 0.5+0.05*float64(n-d.cfg.MinHosts)+0.1*float64(periodic))
	title := fmt.Sprintf("%s %s contacted by %d hosts", k.proto, k.dst, n)
	var interval time.Duration
	if periodic > 0 {
		// The hosts' typical interval: one implant's configuration.
		interval = every[len(every)/2].Round(100 * time.Millisecond)
		title += fmt.Sprintf(", %d periodically (every %v)", periodic, interval)
	}
	return alert.Alert{
		Detector: DetDestination,
		Entity:   fmt.Sprintf("destination %s %s window %s", k.proto, k.dst, s.window.UTC().Format(time.RFC3339)),
		Title:    title, Severity: sev, Confidence: conf, Attack: []string{"T1071"},
		Dst: k.dst.Addr(), DstPort: k.dst.Port(), HasDstPort: true, Proto: k.proto,
		Evidence: map[string]any{"hosts": n, "host_names": hosts, "periodic_hosts": periodic,
			"interval_s": interval.Seconds(), "connections": s.conns, "window_s": d.cfg.Window.Duration.Seconds()},
		FirstSeen: s.first, LastSeen: now,
	}
}

// scanState is one source's probes in one window.
type scanState struct {
	window   time.Time
	first    time.Time
	targets  map[netip.AddrPort]struct{}
	sentries map[string]struct{}
	reported bool
	changed  bool // more targets or sentries since the report
}

// scanDetector reports one source probing many host:port pairs where the
// probes were seen by several sentries: a sweep that touches each server
// once is one scan to the fleet. It runs on a source partition.
type scanDetector struct {
	cfg     config.FleetScan
	sources map[netip.Addr]*scanState
	Evicted int
}

func newScanDetector(cfg *config.Config) *scanDetector {
	return &scanDetector{cfg: cfg.Fleet.Scan, sources: map[netip.Addr]*scanState{}}
}

// failedAttempt reports a record whose connection was never answered or
// was refused: a probe, not a conversation.
func failedAttempt(c *model.Conn) bool {
	switch c.ConnState {
	case model.ConnS0, model.ConnREJ, model.ConnRSTOS0, model.ConnRSTRH, model.ConnSH, model.ConnSHR:
		return c.Has(model.FieldConnState)
	}
	return false
}

func (d *scanDetector) observe(c *model.Conn, host string, emit detect.Emit) {
	if !failedAttempt(c) {
		return
	}
	src := c.Orig.Addr().Unmap()
	win := c.TS.Truncate(d.cfg.Window.Duration)
	s := d.sources[src]
	if s == nil || !s.window.Equal(win) {
		if s == nil && len(d.sources) >= d.cfg.MaxSources {
			n := len(d.sources)
			for k, o := range d.sources {
				if o.window.Before(win) {
					delete(d.sources, k)
				}
			}
			if len(d.sources) == n {
				d.Evicted++
				return
			}
		}
		s = &scanState{window: win, first: c.TS, targets: map[netip.AddrPort]struct{}{}, sentries: map[string]struct{}{}}
		d.sources[src] = s
	}
	nt, ns := len(s.targets), len(s.sentries)
	if len(s.targets) < 4*d.cfg.MinTargets {
		s.targets[netip.AddrPortFrom(c.Resp.Addr().Unmap(), c.Resp.Port())] = struct{}{}
	}
	if len(s.sentries) < 4*maxListed {
		s.sentries[host] = struct{}{}
	}
	if s.reported && (nt != len(s.targets) || ns != len(s.sentries)) {
		s.changed = true
	}
	if !s.reported && len(s.targets) >= d.cfg.MinTargets && len(s.sentries) >= d.cfg.MinSentries {
		s.reported = true
		emit(d.alert(src, s, c.TS))
	}
}

func (d *scanDetector) alert(src netip.Addr, s *scanState, now time.Time) alert.Alert {
	sentries := make([]string, 0, len(s.sentries))
	for h := range s.sentries {
		sentries = append(sentries, h)
	}
	slices.Sort(sentries)
	hosts := map[netip.Addr]struct{}{}
	ports := map[uint16]struct{}{}
	for t := range s.targets {
		hosts[t.Addr()] = struct{}{}
		ports[t.Port()] = struct{}{}
	}
	n := len(sentries)
	if n > maxListed {
		sentries = sentries[:maxListed]
	}
	return alert.Alert{
		Detector: DetScan,
		Entity:   fmt.Sprintf("scan from %s window %s", src, s.window.UTC().Format(time.RFC3339)),
		Title:    fmt.Sprintf("scan from %s across %d sentries (%d hosts, %d ports)", src, n, len(hosts), len(ports)),
		Severity: alert.High, Confidence: 0.9, Attack: []string{"T1046"}, Src: src,
		Evidence: map[string]any{"targets": len(s.targets), "hosts": len(hosts), "ports": len(ports),
			"sentries": n, "sentry_names": sentries, "min_targets": d.cfg.MinTargets, "window_s": d.cfg.Window.Duration.Seconds()},
		FirstSeen: s.first, LastSeen: now,
	}
}

// flush reports the reported scans that grew since; same id, newer figures.
func (d *scanDetector) flush(now time.Time, emit detect.Emit) {
	for src, s := range d.sources {
		if s.changed {
			s.changed = false
			emit(d.alert(src, s, now))
		}
	}
}
