package detect

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// Scan finds port scans in connection records: vertical (one source, many
// ports of one host) and horizontal (one source, one port, many hosts) by
// distinct-target thresholds, and, earlier, by Threshold Random Walk (Jung
// et al., IEEE S&P 2004): a sequential hypothesis test on whether a
// source's first contacts to new hosts succeed, which flags a scanner after
// a handful of failures with false-positive probability about Alpha.
type Scan struct {
	cfg     config.Scan
	sources map[netip.Addr]*scanSource
	dist    map[netip.Addr]*distTarget // by target, for distributed scans
	// probation holds sources seen once (see probation).
	probation *probation
	// Evicted counts sources (and targets) dropped to keep the tables bounded.
	Evicted int
	// trw thresholds in log space.
	upper, stepFail, stepOK float64
}

// NewScan builds the detector from its thresholds.
func NewScan(cfg *config.Config) *Scan {
	c := cfg.Detectors.Scan
	d := &Scan{cfg: c, sources: map[netip.Addr]*scanSource{}, dist: map[netip.Addr]*distTarget{},
		probation: newProbation(c.MaxSources / 2)}
	// Λ crosses η1 = β/α for "scanner"; failures multiply Λ by
	// (1-θ1)/(1-θ0), successes by θ1/θ0 (Jung et al., section 4).
	d.upper = math.Log(c.TRWBeta / c.TRWAlpha)
	d.stepFail = math.Log((1 - c.TRWTheta1) / (1 - c.TRWTheta0))
	d.stepOK = math.Log(c.TRWTheta1 / c.TRWTheta0)
	return d
}

// Name implements Detector.
func (*Scan) Name() string { return "scan" }

// probe outcome of one connection record.
type outcome uint8

const (
	outFiltered outcome = iota // no reply
	outClosed                  // RST from the responder
	outOpen                    // SYN-ACK (or data) from the responder
)

type scanTarget struct {
	ports map[uint16]portSeen
}

// portSeen is the best outcome of the probes to one port, and when the
// port was first probed: records arrive in the order connections end, so
// the moment a scan crossed its threshold is computed from these times.
type portSeen struct {
	out   outcome
	first time.Time
}

// probeState is what one source did with one probe type: a SYN scan and a
// FIN scan of the same host are two findings.
type probeState struct {
	// start names the episode (the time of its first record, fixed);
	// first and last are its earliest and latest probe.
	start, first, last time.Time
	probes             int // probes in the episode
	// blockHosts counts the targets with at least BlockPorts ports: a
	// block scan sweeps a range of ports over a range of hosts.
	blockHosts int
	targets    map[netip.Addr]*scanTarget
	byPort     map[uint16]map[netip.Addr]time.Time // first probe time per host
}

type scanSource struct {
	first, last time.Time
	probes      map[string]int // by probe type
	byProbe     map[string]*probeState
	contacted   map[netip.Addr]bool // first contacts, for TRW
	llr         float64             // TRW log-likelihood ratio
	trwOK       int
	trwFail     int
	reported    map[scanKey]int // scans already reported, with the size reported
}

// scanKey identifies one scan of a source.
type scanKey struct {
	kind  string // vertical, horizontal, block, trw
	probe string // syn, fin, …; "" for trw
	dst   netip.Addr
	port  uint16
	since time.Time // start of the episode: the probe type's, or the source's for trw
}

// probeType names the scan technique from the originator's first packet
// (or, without it, from Zeek's history); "" when c is not a probe.
func probeType(c *model.Conn) string {
	switch c.Proto {
	case model.ProtoUDP:
		if c.OrigBytes <= 64 {
			return "udp"
		}
		return ""
	case model.ProtoTCP:
	default:
		return ""
	}
	if c.OrigBytes > 0 { // the originator sent data: a conversation, not a probe
		return ""
	}
	if c.Has(model.FieldFirstFlags) {
		switch c.FirstFlags &^ (model.FlagECE | model.FlagCWR) {
		case model.FlagSYN:
			// The originator completed the handshake, or its SYN carried
			// the options only an operating system's connect() sends.
			if strings.Contains(c.History, "A") || c.SYNOptions.KernelStack() {
				return "connect"
			}
			return "syn"
		case 0:
			return "null"
		case model.FlagFIN:
			return "fin"
		case model.FlagFIN | model.FlagPSH | model.FlagURG:
			return "xmas"
		case model.FlagACK:
			return "ack"
		case model.FlagFIN | model.FlagACK:
			return "maimon"
		}
		return ""
	}
	h := strings.TrimPrefix(c.History, "^")
	switch {
	case strings.HasPrefix(h, "S"):
		if strings.Contains(h, "A") {
			return "connect"
		}
		return "syn"
	case strings.HasPrefix(h, "F"):
		return "fin"
	}
	return ""
}

func outcomeOf(c *model.Conn) outcome {
	h := c.History
	switch {
	case strings.ContainsAny(h, "hd") || c.RespBytes > 0:
		return outOpen
	case strings.Contains(h, "r") || c.ConnState == model.ConnREJ:
		return outClosed
	case c.Proto == model.ProtoUDP && c.RespPkts > 0:
		return outOpen
	}
	return outFiltered
}

// ObserveConn implements ConnDetector.
func (d *Scan) ObserveConn(c *model.Conn, emit Emit) {
	if c.End == model.EndOpen {
		return // in-progress: probes are counted once, from their final records
	}
	probe := probeType(c)
	if probe == "" {
		return
	}
	src := c.Orig.Addr().Unmap()
	if d.sources[src] == nil {
		first, ok := d.probation.take(src)
		if !ok {
			// A source's first probe waits on probation (see probation).
			d.probation.put(src, c)
			d.observeDistributed(c, probe, outcomeOf(c), emit)
			return
		}
		d.observe(&first, probeType(&first), false, emit)
	}
	d.observe(c, probe, true, emit)
}

// observe adds probe c to its source's state; dist says whether it is
// new to the distributed-scan tally too.
func (d *Scan) observe(c *model.Conn, probe string, dist bool, emit Emit) {
	src, dst, port := c.Orig.Addr().Unmap(), c.Resp.Addr().Unmap(), c.Resp.Port()
	s := d.source(src, c.TS, emit)
	if c.TS.Sub(s.last) > d.cfg.Window.Duration {
		// Idle longer than the window: a new episode.
		*s = *newScanSource(c.TS)
	}
	if c.TS.After(s.last) {
		s.last = c.TS
	}
	s.probes[probe]++
	out := outcomeOf(c)
	ps := s.byProbe[probe]
	if ps != nil && c.TS.Sub(ps.last) > d.cfg.EpisodeGap.Duration && s.reportedProbe(probe) {
		// The reported scan paused, and probes resume: a new episode
		// (the next nmap run), reported on its own. An unreported one
		// keeps accumulating, so slow scans still add up.
		d.closeEpisode(s, src, probe, emit)
		ps = nil
	}
	if ps == nil {
		ps = &probeState{start: c.TS, first: c.TS, targets: map[netip.Addr]*scanTarget{}, byPort: map[uint16]map[netip.Addr]time.Time{}}
		s.byProbe[probe] = ps
	}
	ps.probes++
	if c.TS.After(ps.last) {
		ps.last = c.TS
	}
	if c.TS.Before(ps.first) {
		ps.first = c.TS
	}

	t := ps.targets[dst]
	if t == nil && len(ps.targets) < d.cfg.MaxTargets {
		t = &scanTarget{ports: map[uint16]portSeen{}}
		ps.targets[dst] = t
	}
	if t != nil && len(t.ports) < 65536 {
		prev, ok := t.ports[port]
		if !ok || c.TS.Before(prev.first) {
			prev.first = c.TS
		}
		prev.out = max(prev.out, out)
		t.ports[port] = prev
		if !ok && len(t.ports) == d.cfg.BlockPorts {
			ps.blockHosts++
		}
	}
	hosts := ps.byPort[port]
	if hosts == nil && len(ps.byPort) < 65536 {
		hosts = map[netip.Addr]time.Time{}
		ps.byPort[port] = hosts
	}
	if hosts != nil && len(hosts) < d.cfg.MaxTargets {
		if first, ok := hosts[dst]; !ok || c.TS.Before(first) {
			hosts[dst] = c.TS
		}
	}
	// TRW over first contacts to distinct hosts.
	if !s.contacted[dst] && len(s.contacted) < d.cfg.MaxTargets {
		s.contacted[dst] = true
		if out == outOpen {
			s.llr += d.stepOK
			s.trwOK++
		} else {
			s.llr += d.stepFail
			s.trwFail++
		}
	}

	if dist {
		d.observeDistributed(c, probe, out, emit)
	}
	if ps.blockHosts >= d.cfg.BlockHosts {
		d.report(s, src, scanKey{kind: "block", probe: probe, since: ps.start}, c, emit)
	}
	if t != nil && len(t.ports) >= d.cfg.VerticalPorts {
		d.report(s, src, scanKey{kind: "vertical", probe: probe, dst: dst, since: ps.start}, c, emit)
	}
	if hosts != nil && len(hosts) >= d.cfg.HorizontalHosts {
		d.report(s, src, scanKey{kind: "horizontal", probe: probe, port: port, since: ps.start}, c, emit)
	} else if s.llr >= d.upper && len(s.contacted) > 1 {
		d.report(s, src, scanKey{kind: "trw", since: s.first}, c, emit)
	}
}

// reportedProbe reports whether a scan of this probe type was reported in
// the current episode.
func (s *scanSource) reportedProbe(probe string) bool {
	for k := range s.reported {
		if k.probe == probe && k.kind != "trw" {
			return true
		}
	}
	return false
}

// closeEpisode emits the final figures of the probe type's reported scans
// and forgets them, so the next episode is reported afresh.
func (d *Scan) closeEpisode(s *scanSource, src netip.Addr, probe string, emit Emit) {
	for _, k := range s.sortedReported() {
		if k.probe != probe || k.kind == "trw" {
			continue
		}
		if n := s.size(k); n > s.reported[k] {
			a := d.alert(s, src, k, s.byProbe[probe].last)
			a.Count = n - s.reported[k]
			emit(a)
		}
		delete(s.reported, k)
	}
	delete(s.byProbe, probe)
}

func (s *scanSource) sortedReported() []scanKey {
	keys := make([]scanKey, 0, len(s.reported))
	for k := range s.reported {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b scanKey) int {
		return cmp.Or(strings.Compare(a.kind, b.kind), strings.Compare(a.probe, b.probe), a.dst.Compare(b.dst),
			cmp.Compare(a.port, b.port), a.since.Compare(b.since))
	})
	return keys
}

func newScanSource(t time.Time) *scanSource {
	return &scanSource{first: t, last: t, probes: map[string]int{}, byProbe: map[string]*probeState{},
		contacted: map[netip.Addr]bool{}}
}

func (d *Scan) source(src netip.Addr, t time.Time, emit Emit) *scanSource {
	s := d.sources[src]
	if s != nil {
		return s
	}
	if len(d.sources) >= d.cfg.MaxSources {
		// A source evicted with reported scans gets its final figures out
		// first: a spoofed flood must not erase a real scanner's report.
		d.Evicted += evictOldestFunc(&d.sources, func(s *scanSource) time.Time { return s.last },
			func(src netip.Addr, s *scanSource) { d.flushSource(src, s, emit) })
	}
	s = newScanSource(t)
	d.sources[src] = s
	return s
}

// report emits a scan alert the first time a scan crosses a threshold;
// Flush reports the final figures.
func (d *Scan) report(s *scanSource, src netip.Addr, k scanKey, c *model.Conn, emit Emit) {
	if _, done := s.reported[k]; done {
		return
	}
	if k.kind == "vertical" || k.kind == "horizontal" {
		// Inside a block scan the hosts and ports are its figures, not
		// alerts of their own.
		if _, block := s.reported[scanKey{kind: "block", probe: k.probe, since: k.since}]; block {
			return
		}
	}
	if s.reported == nil {
		s.reported = map[scanKey]int{}
	}
	a := d.alert(s, src, k, c.TS)
	a.Raised = d.crossedAt(s, k, c.TS)
	s.reported[k] = a.Count
	emit(a)
}

// crossedAt is the event time the scan reached its threshold: the
// threshold-th earliest first probe among its ports (vertical) or hosts
// (horizontal). TRW decides on the record in hand.
func (d *Scan) crossedAt(s *scanSource, k scanKey, now time.Time) time.Time {
	var times []time.Time
	n := 0
	switch k.kind {
	case "vertical":
		for _, p := range s.byProbe[k.probe].targets[k.dst].ports {
			times = append(times, p.first)
		}
		n = d.cfg.VerticalPorts
	case "horizontal":
		for _, t := range s.byProbe[k.probe].byPort[k.port] {
			times = append(times, t)
		}
		n = d.cfg.HorizontalHosts
	default:
		return now
	}
	if len(times) < n {
		return now
	}
	slices.SortFunc(times, time.Time.Compare)
	return times[n-1]
}

// size is how many distinct targets a scan has touched: its alert's count.
func (s *scanSource) size(k scanKey) int {
	ps := s.byProbe[k.probe]
	switch {
	case k.kind == "trw":
		return len(s.contacted)
	case ps == nil:
		return 0
	case k.kind == "vertical":
		if t := ps.targets[k.dst]; t != nil {
			return len(t.ports)
		}
		return 0
	case k.kind == "block":
		n := 0
		for _, t := range ps.targets {
			n += len(t.ports)
		}
		return n
	}
	return len(ps.byPort[k.port])
}

// scanEntity names one episode of one scan; the episode's start keeps a
// rerun of the same scan a new finding.
func scanEntity(src netip.Addr, k scanKey) string {
	since := k.since.UTC().Format(time.RFC3339Nano)
	switch k.kind {
	case "vertical":
		return fmt.Sprintf("scan vertical %s %v → %v since %s", k.probe, src, k.dst, since)
	case "horizontal":
		return fmt.Sprintf("scan horizontal %s %v → */%d since %s", k.probe, src, k.port, since)
	case "block":
		return fmt.Sprintf("scan block %s %v since %s", k.probe, src, since)
	}
	return fmt.Sprintf("scan trw %v since %s", src, since)
}

func (d *Scan) alert(s *scanSource, src netip.Addr, k scanKey, at time.Time) alert.Alert {
	kind, dst, port, probe := k.kind, k.dst, k.port, k.probe
	if kind == "trw" {
		probe = dominant(s.probes)
	}
	a := alert.Alert{
		Entity:    scanEntity(src, k),
		Count:     s.size(k),
		Attack:    []string{"T1046"},
		Src:       src,
		Proto:     model.ProtoTCP,
		FirstSeen: s.firstOf(k),
		LastSeen:  at,
	}
	if probe == "udp" {
		a.Proto = model.ProtoUDP
	}
	probes := make(map[string]int, len(s.probes))
	for p, n := range s.probes {
		probes[p] = n
	}
	ev := map[string]any{"probe": probe, "kind": kind, "window_s": at.Sub(a.FirstSeen).Seconds(), "probes": probes}
	total := 0
	if ps := s.byProbe[probe]; ps != nil && kind != "trw" {
		total = ps.probes
	} else {
		for _, n := range s.probes {
			total += n
		}
	}
	ev["rate_per_s"] = rate(total, at.Sub(a.FirstSeen))
	switch kind {
	case "vertical":
		t := s.byProbe[probe].targets[dst]
		open, closed, filtered := countOutcomes(t.ports)
		n := len(t.ports)
		a.Dst = dst
		a.Title = fmt.Sprintf("vertical %s scan of %v: %d ports", strings.ToUpper(probe), dst, n)
		ev["ports"], ev["answered"], ev["closed"], ev["unanswered"] = n, open, closed, filtered
		ev["open_ports"] = openPorts(t.ports, 50)
		a.Severity, a.Confidence = severityFor(n, d.cfg.VerticalPorts), 0.9
	case "block":
		ps := s.byProbe[probe]
		var open, closed, filtered, blockHosts int
		for _, t := range ps.targets {
			o, c, f := countOutcomes(t.ports)
			open, closed, filtered = open+o, closed+c, filtered+f
			if len(t.ports) >= d.cfg.BlockPorts {
				blockHosts++
			}
		}
		a.Title = fmt.Sprintf("block %s scan: %d ports over %d hosts", strings.ToUpper(probe), len(ps.byPort), len(ps.targets))
		ev["hosts"], ev["ports"], ev["hosts_with_block_ports"] = len(ps.targets), len(ps.byPort), blockHosts
		ev["answered"], ev["closed"], ev["unanswered"] = open, closed, filtered
		a.Severity, a.Confidence = alert.Critical, 0.9
	case "horizontal":
		hosts := s.byProbe[probe].byPort[port]
		a.DstPort, a.HasDstPort = port, true
		a.Title = fmt.Sprintf("horizontal %s scan of port %d: %d hosts", strings.ToUpper(probe), port, len(hosts))
		ev["hosts"] = len(hosts)
		a.Severity, a.Confidence = severityFor(len(hosts), d.cfg.HorizontalHosts), 0.9
	default:
		a.Title = fmt.Sprintf("%v probing hosts: %d of %d first contacts failed (threshold random walk)", src, s.trwFail, s.trwFail+s.trwOK)
		ev["kind"] = "horizontal"
		ev["method"] = "trw"
		ev["hosts"], ev["failed"], ev["succeeded"] = len(s.contacted), s.trwFail, s.trwOK
		ev["llr"], ev["llr_threshold"] = s.llr, d.upper
		a.Severity, a.Confidence = alert.Medium, 1-d.cfg.TRWAlpha
	}
	a.Evidence = ev
	return a
}

// Flush implements Flusher: the final figures of every scan that grew
// since it was reported. Its count is what the scan added since.
func (d *Scan) Flush(_ time.Time, emit Emit) {
	srcs := make([]netip.Addr, 0, len(d.sources))
	for a := range d.sources {
		srcs = append(srcs, a)
	}
	slices.SortFunc(srcs, netip.Addr.Compare)
	for _, src := range srcs {
		d.flushSource(src, d.sources[src], emit)
	}
	for _, dst := range slices.SortedFunc(maps.Keys(d.dist), netip.Addr.Compare) {
		d.flushDistributed(dst, d.dist[dst], emit)
	}
}

// firstOf is the earliest probe of the scan k.
func (s *scanSource) firstOf(k scanKey) time.Time {
	if ps := s.byProbe[k.probe]; ps != nil && k.kind != "trw" {
		return ps.first
	}
	return s.first
}

// lastOf is the latest probe of the scan k.
func (s *scanSource) lastOf(k scanKey) time.Time {
	if ps := s.byProbe[k.probe]; ps != nil && k.kind != "trw" {
		return ps.last
	}
	return s.last
}

// flushSource emits the final figures of src's reported scans that grew.
func (d *Scan) flushSource(src netip.Addr, s *scanSource, emit Emit) {
	for _, k := range s.sortedReported() {
		n := s.size(k)
		if n <= s.reported[k] {
			continue
		}
		a := d.alert(s, src, k, s.lastOf(k))
		a.Count = n - s.reported[k]
		s.reported[k] = n
		emit(a)
	}
}

func severityFor(n, threshold int) alert.Severity {
	if n >= 5*threshold {
		return alert.Critical
	}
	return alert.High
}

func countOutcomes(ports map[uint16]portSeen) (open, closed, filtered int) {
	for _, p := range ports {
		switch p.out {
		case outOpen:
			open++
		case outClosed:
			closed++
		default:
			filtered++
		}
	}
	return
}

func openPorts(ports map[uint16]portSeen, max int) []uint16 {
	var out []uint16
	for p, seen := range ports {
		if seen.out == outOpen {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	if len(out) > max {
		out = out[:max]
	}
	return out
}

func dominant(m map[string]int) string {
	best, n := "", -1
	for k, v := range m {
		if v > n || (v == n && k < best) {
			best, n = k, v
		}
	}
	return best
}

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return float64(n)
	}
	return math.Round(float64(n)/d.Seconds()*10) / 10
}
