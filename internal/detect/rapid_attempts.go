package detect

import (
	"fmt"
	"maps"
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// RapidAttempts finds sources opening connections far faster than their
// own normal rate or their peers': worms, brute-forcers, scanners and
// floods from one address. Rates are attempts in a sliding window (the
// current window plus the unexpired share of the previous one), compared
// with an average of the source's own recent windows and with the 90th
// percentile of all sources' windows.
type RapidAttempts struct {
	cfg     config.RapidAttempts
	window  int64 // nanoseconds
	sources map[netip.Addr]*rapidSource
	// probation holds sources seen once (see probation).
	probation *probation
	// peers holds the attempt counts of recent finished source-windows, a
	// ring, for the peers' percentile.
	peers     []int
	peerNext  int
	peerP90   float64
	peerStale int // windows added since peerP90 was computed
	// Evicted counts sources dropped to keep the table bounded.
	Evicted int
}

// rapidMaxKept caps the destinations and ports remembered per source for
// the evidence.
const rapidMaxKept = 1024

// rapidPeerRing is how many finished source-windows the peers' percentile
// is computed over.
const rapidPeerRing = 4096

type rapidSource struct {
	win       int64 // current window number
	cur, prev int   // attempts in the current and the previous window
	last      time.Time
	// normal is the moving average of attempts in the source's windows.
	normal  float64
	history int
	alerted bool // in the current window

	// The episode: from the first window that raised an alert until a
	// window raises nothing. Its evidence counts from the start of the
	// window the episode began in.
	inEpisode  bool
	epPattern  string // what the episode is: "one-target" or "fan-out"
	recent     recentTargets
	peak       float64 // the highest sliding-window rate in the episode
	epFirst    time.Time
	epReported int // attempts the episode's alerts have counted
	epAttempts int
	epFailed   int
	dsts       map[netip.Addr]int
	ports      map[uint16]struct{}
}

// NewRapidAttempts builds the detector from its thresholds.
func NewRapidAttempts(cfg *config.Config) *RapidAttempts {
	c := cfg.Detectors.RapidAttempts
	return &RapidAttempts{cfg: c, window: int64(c.Window.Duration), sources: map[netip.Addr]*rapidSource{},
		peers: make([]int, 0, 256), probation: newProbation(c.MaxSources / 2)}
}

// Name implements Detector.
func (*RapidAttempts) Name() string { return "rapid-attempts" }

// isAttempt reports whether the originator of c opened it: a TCP
// connection started with its SYN, or a UDP flow. Backscatter (a record
// the responder's SYN-ACK started) and midstream pickups are not.
func isAttempt(c *model.Conn) bool {
	switch c.Proto {
	case model.ProtoUDP:
		return !c.Flipped()
	case model.ProtoTCP:
		if c.Has(model.FieldFirstFlags) {
			return c.FirstFlags&(model.FlagSYN|model.FlagACK) == model.FlagSYN && !c.Flipped()
		}
		return len(c.History) > 0 && c.History[0] == 'S'
	}
	return false
}

// ObserveConn implements ConnDetector.
func (d *RapidAttempts) ObserveConn(c *model.Conn, emit Emit) {
	if c.End == model.EndOpen || !isAttempt(c) || d.window <= 0 {
		return // in-progress records: attempts are counted from final records
	}
	src := c.Orig.Addr().Unmap()
	if d.sources[src] == nil {
		first, ok := d.probation.take(src)
		if !ok {
			// A source's first attempt waits on probation (see probation).
			d.probation.put(src, c)
			return
		}
		d.observe(src, &first, emit)
	}
	d.observe(src, c, emit)
}

// observe counts attempt c of src.
func (d *RapidAttempts) observe(src netip.Addr, c *model.Conn, emit Emit) {
	ts := c.TS.UnixNano()
	w := ts / d.window
	s := d.source(src, w)
	switch {
	case w > s.win:
		d.advance(src, s, w, emit)
		s.cur++
	case w == s.win:
		s.cur++
	case w == s.win-1:
		// Records arrive as connections end, not as they start: one
		// from the previous window still counts there.
		s.prev++
	default:
		return
	}
	if c.TS.After(s.last) {
		s.last = c.TS
	}
	// The estimate is taken at the latest attempt seen, late ones included.
	ts = max(ts, s.last.UnixNano())
	// What the source does now is judged on its current window's
	// attempts, not on late records of the previous one.
	if w == s.win {
		s.recent.add(c.Resp)
	}
	if w == s.win && s.inEpisode && s.recent.full() && s.recent.pattern() != s.epPattern {
		// The same source turned from a sweep to hammering one target (or
		// back): a different attack, reported on its own.
		d.endEpisode(src, s, emit)
		s.resetEpisode()
		s.alerted = false
	}
	d.note(s, c)
	// The sliding estimate: the previous window weighs by the part of it
	// still inside a window's length of now.
	frac := float64(ts-s.win*d.window) / float64(d.window)
	rate := float64(s.cur) + float64(s.prev)*(1-frac)
	if s.inEpisode && rate > s.peak {
		s.peak = rate
	}
	need, basis := d.need(s)
	if s.alerted || rate < need {
		return
	}
	s.alerted = true
	if !s.inEpisode {
		s.inEpisode, s.epFirst, s.epPattern = true, c.TS, s.recent.pattern()
	}
	s.peak = max(s.peak, rate)
	a := d.alert(src, s, rate, need, basis)
	a.Raised = c.TS
	a.Count = s.epAttempts - s.epReported
	s.epReported = s.epAttempts
	emit(a)
}

// endEpisode emits the episode's final figures when it grew since its
// last alert.
func (d *RapidAttempts) endEpisode(src netip.Addr, s *rapidSource, emit Emit) {
	if !s.inEpisode || s.epAttempts <= s.epReported {
		return
	}
	need, basis := d.need(s)
	a := d.alert(src, s, s.peak, need, basis)
	a.Count = s.epAttempts - s.epReported
	s.epReported = s.epAttempts
	emit(a)
}

// Flush implements Flusher: the final figures of episodes still open.
func (d *RapidAttempts) Flush(_ time.Time, emit Emit) {
	for _, src := range slices.SortedFunc(maps.Keys(d.sources), netip.Addr.Compare) {
		d.endEpisode(src, d.sources[src], emit)
	}
}

// resetEpisode forgets the episode; the next alert starts a new one.
func (s *rapidSource) resetEpisode() {
	s.inEpisode, s.peak, s.epPattern = false, 0, ""
	s.epAttempts, s.epFailed, s.epReported, s.dsts, s.ports = 0, 0, 0, nil, nil
}

// recentTargets are the destinations of a source's latest attempts, to
// tell hammering one target from a sweep by what it does now, not over a
// window that may hold both.
type recentTargets struct {
	ring [32]netip.AddrPort
	n    int // attempts added, saturating at len(ring)
	next int
}

func (r *recentTargets) add(t netip.AddrPort) {
	r.ring[r.next] = t
	r.next = (r.next + 1) % len(r.ring)
	r.n = min(r.n+1, len(r.ring))
}

func (r *recentTargets) full() bool { return r.n == len(r.ring) }

// pattern is "one-target" when one host:port took at least 80% of the
// recent attempts, else "fan-out".
func (r *recentTargets) pattern() string {
	best := 0
	for i := range r.n {
		same := 0
		for j := range r.n {
			if r.ring[j] == r.ring[i] {
				same++
			}
		}
		best = max(best, same)
		if 5*best >= 4*r.n {
			return "one-target"
		}
	}
	return "fan-out"
}

// note adds c to the episode's evidence.
func (d *RapidAttempts) note(s *rapidSource, c *model.Conn) {
	s.epAttempts++
	if outcomeOf(c) != outOpen {
		s.epFailed++
	}
	if s.dsts == nil {
		s.dsts, s.ports = map[netip.Addr]int{}, map[uint16]struct{}{}
	}
	dst := c.Resp.Addr().Unmap()
	if _, ok := s.dsts[dst]; ok || len(s.dsts) < rapidMaxKept {
		s.dsts[dst]++
	}
	if len(s.ports) < rapidMaxKept {
		s.ports[c.Resp.Port()] = struct{}{}
	}
}

// need is the rate that counts as rapid for s, and what it was derived
// from.
func (d *RapidAttempts) need(s *rapidSource) (float64, string) {
	need, basis := float64(d.cfg.MinAttempts), "min_attempts"
	if s.history >= d.cfg.MinHistory {
		if v := d.cfg.Factor * s.normal; v > need {
			need, basis = v, "own"
		}
	}
	if n := d.peerCount(); n >= d.cfg.MinPeers {
		if v := d.cfg.PeerFactor * d.peerPercentile(); v > need {
			need, basis = v, "peers"
		}
	}
	return need, basis
}

// advance closes s's current window and moves it to window w.
func (d *RapidAttempts) advance(src netip.Addr, s *rapidSource, w int64, emit Emit) {
	if s.cur > 0 {
		d.addPeer(s.cur)
		// An exponential average over the windows (α = 0.2: about the
		// last ten count). Windows that raised an alert count too, so a
		// source that is always this busy stops alerting within a minute;
		// an attack is reported when it starts, and once.
		if s.history == 0 {
			s.normal = float64(s.cur)
		} else {
			s.normal += 0.2 * (float64(s.cur) - s.normal)
		}
		s.history++
	}
	if w == s.win+1 {
		s.prev = s.cur
	} else {
		s.prev = 0
	}
	if !s.alerted {
		// A window that raised nothing ends any episode; the evidence
		// starts afresh with the new window.
		d.endEpisode(src, s, emit)
		s.resetEpisode()
	}
	s.cur, s.win, s.alerted = 0, w, false
}

func (d *RapidAttempts) source(src netip.Addr, w int64) *rapidSource {
	if s := d.sources[src]; s != nil {
		return s
	}
	if len(d.sources) >= d.cfg.MaxSources {
		d.Evicted += evictOldest(&d.sources, func(s *rapidSource) time.Time { return s.last })
	}
	s := &rapidSource{win: w}
	d.sources[src] = s
	return s
}

func (d *RapidAttempts) addPeer(n int) {
	if len(d.peers) < rapidPeerRing {
		d.peers = append(d.peers, n)
	} else {
		d.peers[d.peerNext] = n
		d.peerNext = (d.peerNext + 1) % rapidPeerRing
	}
	d.peerStale++
}

func (d *RapidAttempts) peerCount() int { return len(d.peers) }

// peerPercentile is the 90th percentile of the peers' window counts,
// recomputed after every 64 new windows (sorting 4096 ints is cheap, but
// not per record).
func (d *RapidAttempts) peerPercentile() float64 {
	if d.peerStale > 0 && (d.peerStale >= 64 || d.peerP90 == 0) {
		sorted := slices.Clone(d.peers)
		slices.Sort(sorted)
		d.peerP90 = float64(sorted[int(math.Ceil(0.9*float64(len(sorted))))-1])
		d.peerStale = 0
	}
	return d.peerP90
}

func (d *RapidAttempts) alert(src netip.Addr, s *rapidSource, rate, need float64, basis string) alert.Alert {
	windowS := d.cfg.Window.Duration.Seconds()
	a := alert.Alert{
		Entity:     fmt.Sprintf("rapid-attempts %v since %s", src, s.epFirst.UTC().Format(time.RFC3339Nano)),
		Severity:   alert.High,
		Confidence: 0.8,
		// Scanning, brute force, or network denial of service: which one
		// the pattern evidence tells.
		Attack:    []string{"T1046", "T1110", "T1498"},
		Src:       src,
		FirstSeen: s.epFirst,
		LastSeen:  s.last,
		Count:     1,
	}
	if rate >= float64(d.cfg.CriticalAttempts) {
		a.Severity, a.Confidence = alert.Critical, 0.9
	}
	// One destination taking nearly all attempts on few ports is a flood
	// or a brute force; spread over ports or hosts, a scan or a worm.
	var top netip.Addr
	topN := 0
	for dst, n := range s.dsts {
		if n > topN || n == topN && dst.Less(top) {
			top, topN = dst, n
		}
	}
	pattern := s.epPattern
	if pattern == "" {
		pattern = s.recent.pattern()
	}
	if len(s.dsts) == 1 {
		a.Dst = top
	}
	normal := "none yet"
	if s.history >= d.cfg.MinHistory {
		normal = fmt.Sprintf("%.1f", s.normal)
	}
	a.Title = fmt.Sprintf("%v opening connections rapidly: up to %.0f attempts in %gs (normal %s, threshold %.0f)", src, rate, windowS, normal, need)
	ev := map[string]any{
		"attempts_in_window": math.Round(rate), "window_s": windowS, "threshold": math.Round(need*10) / 10,
		"threshold_basis": basis, "pattern": pattern,
		"destinations": len(s.dsts), "ports": len(s.ports), "failed": s.epFailed, "attempts": s.epAttempts,
		"rate_per_s": math.Round(rate/windowS*10) / 10,
	}
	if s.history >= d.cfg.MinHistory {
		ev["own_normal"] = math.Round(s.normal*10) / 10
	}
	if d.peerCount() >= d.cfg.MinPeers {
		ev["peer_p90"] = d.peerPercentile()
	}
	a.Evidence = ev
	return a
}
