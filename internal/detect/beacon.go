package detect

import (
	"cmp"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// Beacon finds command-and-control check-ins: a source connecting to one
// destination at regular intervals with regular sizes, in the spirit of
// RITA's beacon analyzer. Each pair (source→destination:port, and
// source→destination over any port, for implants that rotate ports) is
// scored from three sub-scores, all 0–1 and all in the evidence:
//
//   - time: Bowley skew and MAD/median of the intervals between connection
//     starts. Both are robust, so jitter (uniform around the interval)
//     lowers the score only in proportion and a missed check-in does not
//     ruin it.
//   - size: Bowley skew and MAD/median of the bytes the source sent, and
//     RITA's smallness (check-ins are small).
//   - histogram: the input's span cut into 24 bins (hours of a day-long
//     log): coverage is the share of bins the pair used, consistency how
//     even its counts are over the bins it used. Humans work in bursts;
//     implants do not.
//
// Failed attempts (no answer, rejected) are not check-ins and are skipped.
// Scores are computed when the input ends (Flush) and the alerts ranked by
// score.
type Beacon struct {
	cfg config.Beacon
	// hosts holds each source→destination pair (by hash), with its ports.
	hosts *genTable[uint64, *beaconHost]
	// seen admits pairs: a pair gets full state on its second connection,
	// so the many pairs that talk once never take room from those that
	// repeat.
	seen     *firstCache[beaconFirst]
	hasher   pairHasher
	expected map[beaconService]string
	proxies  Nets
	// first and last bound the input's span (all records, failed or not).
	first, last time.Time
}

// beaconHost is one source→destination pair: its connections to each
// port (the first beaconMaxPorts ports) and, once it used two ports, to
// any port.
type beaconHost struct {
	ports    []beaconPort
	all      *beaconPair // nil while one port was used
	overflow bool        // more ports than beaconMaxPorts
}

type beaconPort struct {
	port  uint16
	proto model.Proto
	p     *beaconPair
}

// beaconFirst is a pair's first connection, before it is admitted.
type beaconFirst struct {
	ts    int64
	size  uint32
	port  uint16
	proto model.Proto
}

// beaconAdmission is how many first sightings are remembered per tracked
// pair: they cost 24 bytes where a tracked pair costs hundreds.
const beaconAdmission = 8

type beaconService struct {
	proto model.Proto
	port  uint16
}

// beaconKey is a source→destination:port pair; anyPort marks the pair over
// all ports (port 0 then).
type beaconKey struct {
	src, dst netip.Addr
	port     uint16
	proto    model.Proto
	anyPort  bool
}

// beaconPair keeps connection start times and sizes. When max_samples is
// reached it keeps every other sample and from then on samples every
// stride-th connection: the span of the pair is kept (the histogram needs
// it) and regular intervals stay regular, just longer.
type beaconPair struct {
	key         beaconKey
	ts          []int64 // connection start, Unix milliseconds
	sizes       []uint32
	stride      int
	seen        int   // successful connections
	reported    int   // connections counted in alerts already emitted
	first, last int64 // Unix milliseconds
	nports      int   // for the any-port pair: ports used (capped at beaconMaxPorts, see overflow)
}

const beaconMaxPorts = 16

// NewBeacon builds the detector from its thresholds.
func NewBeacon(cfg *config.Config) *Beacon {
	bc := cfg.Detectors.Beacon
	d := &Beacon{cfg: bc, hosts: newGenTable[uint64, *beaconHost](bc.MaxPairs),
		seen: newFirstCache[beaconFirst](beaconAdmission * bc.MaxPairs), hasher: newPairHasher(), expected: map[beaconService]string{}}
	for _, e := range d.cfg.Expected {
		proto := model.ProtoTCP
		if e.Proto == "udp" {
			proto = model.ProtoUDP
		}
		d.expected[beaconService{proto, uint16(e.Port)}] = e.Reason
	}
	for _, p := range d.cfg.Proxies {
		d.proxies = append(d.proxies, p.Prefix)
	}
	return d
}

// Name implements Detector.
func (*Beacon) Name() string { return "beacon" }

// Evicted is how many tracked pairs were dropped to keep the table bounded.
func (d *Beacon) Evicted() int { return d.hosts.Evicted }

// Notes implements Noter.
func (d *Beacon) Notes() []string { return evictionNote("beacon", d.Evicted(), d.cfg.MaxPairs) }

// ObserveConn implements ConnDetector.
func (d *Beacon) ObserveConn(c *model.Conn, _ Emit) {
	if d.first.IsZero() || c.TS.Before(d.first) {
		d.first = c.TS
	}
	if ls := c.LastSeen(); ls.After(d.last) {
		d.last = ls
	}
	if !established(c) || c.Flipped() || !unicastPeer(c) {
		return
	}
	src, dst := c.Orig.Addr().Unmap(), c.Resp.Addr().Unmap()
	ts, size := c.TS.UnixMilli(), uint32(min(origSize(c), math.MaxUint32))
	h := d.hasher.hash(src, dst, 0, 0, 1)
	host, ok := d.hosts.get(h)
	if !ok {
		first, ok := d.seen.take(h)
		if !ok {
			d.seen.put(h, beaconFirst{ts, size, c.Resp.Port(), c.Proto})
			return
		}
		host = &beaconHost{}
		host.port(src, dst, first.port, first.proto).add(first.ts, first.size, d.cfg.MaxSamples)
		d.hosts.put(h, host)
	}
	if p := host.port(src, dst, c.Resp.Port(), c.Proto); p != nil {
		p.add(ts, size, d.cfg.MaxSamples)
	}
	if host.all != nil {
		host.all.add(ts, size, d.cfg.MaxSamples)
		host.all.nports = len(host.ports)
	}
}

// port returns the pair for one destination port, creating it (and the
// any-port pair when a second port appears); nil beyond beaconMaxPorts.
func (h *beaconHost) port(src, dst netip.Addr, port uint16, proto model.Proto) *beaconPair {
	for i := range h.ports {
		if h.ports[i].port == port && h.ports[i].proto == proto {
			return h.ports[i].p
		}
	}
	if len(h.ports) >= beaconMaxPorts {
		h.overflow = true
		return nil
	}
	p := &beaconPair{key: beaconKey{src: src, dst: dst, port: port, proto: proto}, stride: 1}
	if len(h.ports) == 1 {
		// From the second port on, the pair over any port has its own
		// samples, starting from the first port's.
		f := h.ports[0].p
		h.all = &beaconPair{key: beaconKey{src: src, dst: dst, anyPort: true}, ts: slices.Clone(f.ts), sizes: slices.Clone(f.sizes),
			stride: f.stride, seen: f.seen, first: f.first, last: f.last}
	}
	h.ports = append(h.ports, beaconPort{port, proto, p})
	return p
}

func (p *beaconPair) add(ts int64, size uint32, maxSamples int) {
	if p.seen == 0 || ts < p.first {
		p.first = ts
	}
	if ts > p.last {
		p.last = ts
	}
	p.seen++
	if p.seen%p.stride != 0 {
		return
	}
	if len(p.ts) >= maxSamples {
		p.decimate()
	}
	p.ts = append(p.ts, ts)
	p.sizes = append(p.sizes, size)
}

// decimate halves the samples, keeping every other one in time order.
func (p *beaconPair) decimate() {
	idx := make([]int, len(p.ts))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(p.ts[a], p.ts[b]) })
	ts := make([]int64, 0, cap(p.ts))
	sizes := make([]uint32, 0, cap(p.sizes))
	for j := 0; j < len(idx); j += 2 {
		ts = append(ts, p.ts[idx[j]])
		sizes = append(sizes, p.sizes[idx[j]])
	}
	p.ts, p.sizes = ts, sizes
	p.stride *= 2
}

// beaconScore is one pair's scores and the figures behind them.
type beaconScore struct {
	key                                 beaconKey
	pair                                *beaconPair
	score                               float64
	ts, tsSkew, tsMadm                  float64
	ds, dsSkew, dsMadm, dsSmall         float64
	hist, histCoverage, histConsistency float64
	histBins                            int
	interval, intervalMAD               time.Duration
	bytesMedian, bytesMAD               float64
	connections                         int
	expected                            string
}

// score computes a pair's sub-scores; ok is false when it has too few
// distinct connection times to judge.
func (d *Beacon) score(k beaconKey, p *beaconPair) (beaconScore, bool) {
	order := make([]int, len(p.ts))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(p.ts[a], p.ts[b]) })
	ts := make([]int64, 0, len(order))
	sizes := make([]float64, 0, len(order))
	for _, i := range order {
		// Connections started in the same millisecond are one check-in
		// (RITA uses unique timestamps).
		if n := len(ts); n > 0 && ts[n-1] == p.ts[i] {
			continue
		}
		ts = append(ts, p.ts[i])
		sizes = append(sizes, float64(p.sizes[i]))
	}
	if len(ts) < min(d.cfg.MinConnections, d.cfg.MaxSamples/2) {
		return beaconScore{}, false
	}
	intervals := make([]float64, len(ts)-1)
	for i := 1; i < len(ts); i++ {
		intervals[i-1] = float64(ts[i] - ts[i-1])
	}
	s := beaconScore{key: k, pair: p, connections: p.seen}
	ti := describe(intervals)
	// A dozen random intervals can look regular by chance: the dispersion
	// score is lowered by its sampling error, ~0.5/√n (so 0.14 at 12
	// intervals, 0.02 at 500), and only then judged.
	s.tsSkew, s.tsMadm = ti.skewScore(), clamp01(ti.dispersionScore()-0.5/math.Sqrt(float64(len(intervals))))
	s.ts = (s.tsSkew + s.tsMadm) / 2
	// Intervals between kept samples are stride connections long.
	s.interval = time.Duration(ti.median * float64(time.Millisecond) / float64(p.stride))
	s.intervalMAD = time.Duration(ti.mad * float64(time.Millisecond) / float64(p.stride))

	ds := describe(sizes)
	s.dsSkew, s.dsMadm = ds.skewScore(), ds.dispersionScore()
	s.dsSmall = clamp01(1 - mode(sizes)/65535)
	s.ds = (s.dsSkew + s.dsMadm + s.dsSmall) / 3
	s.bytesMedian, s.bytesMAD = ds.median, ds.mad

	// The histogram needs bins wider than the interval, or a perfect
	// beacon leaves empty bins; 24 bins is an hour each over a day.
	span := float64(d.last.Sub(d.first).Milliseconds())
	wT, wS, wH := d.cfg.WeightTime, d.cfg.WeightSize, d.cfg.WeightHistogram
	if ti.median > 0 {
		s.histBins = int(min(24, math.Floor(span/ti.median)))
	}
	if s.histBins >= 4 {
		counts := make([]float64, s.histBins)
		width := span / float64(s.histBins)
		start := d.first.UnixMilli()
		for _, t := range ts {
			b := int(float64(t-start) / width)
			counts[min(max(b, 0), s.histBins-1)]++
		}
		var used []float64
		for _, n := range counts {
			if n > 0 {
				used = append(used, n)
			}
		}
		s.histCoverage = float64(len(used)) / float64(s.histBins)
		s.histConsistency = describe(used).dispersionScore()
		s.hist = (s.histCoverage + s.histConsistency) / 2
	} else {
		wH = 0 // too short an input to say anything about spread
	}
	s.score = (wT*s.ts + wS*s.ds + wH*s.hist) / (wT + wS + wH)
	if !k.anyPort {
		if why, ok := d.expected[beaconService{k.proto, k.port}]; ok {
			s.expected = why
			s.score *= d.cfg.ExpectedFactor
		}
	}
	return s, true
}

// mode is the most frequent value of xs (sorted), the smallest on ties.
func mode(sorted []float64) float64 {
	best, bestN := 0.0, 0
	for i := 0; i < len(sorted); {
		j := i
		for j < len(sorted) && sorted[j] == sorted[i] {
			j++
		}
		if j-i > bestN {
			best, bestN = sorted[i], j-i
		}
		i = j
	}
	return best
}

// Flush implements Flusher: score every pair with enough connections and
// report those above the threshold, best first. A pair over any port is
// reported only when it beats every one of its ports by a margin (an
// implant rotating ports); otherwise its ports say it already.
func (d *Beacon) Flush(_ time.Time, emit Emit) {
	var scored []beaconScore
	bestPort := map[[2]netip.Addr]float64{}
	consider := func(p *beaconPair) {
		k := p.key
		if p.seen < d.cfg.MinConnections || p.seen == p.reported {
			return
		}
		s, ok := d.score(k, p)
		if !ok {
			return
		}
		if !k.anyPort {
			pk := [2]netip.Addr{k.src, k.dst}
			bestPort[pk] = max(bestPort[pk], s.score)
		}
		scored = append(scored, s)
	}
	d.hosts.all(func(_ uint64, h *beaconHost) {
		for _, p := range h.ports {
			consider(p.p)
		}
		if h.all != nil {
			consider(h.all)
		}
	})
	out := scored[:0]
	anyPort := map[[2]netip.Addr]float64{}
	for _, s := range scored {
		if s.score < d.cfg.Score || s.tsMadm < d.cfg.MinTimeScore {
			continue
		}
		pk := [2]netip.Addr{s.key.src, s.key.dst}
		if s.key.anyPort {
			if s.pair.nports < 2 || s.score < bestPort[pk]+0.05 {
				continue
			}
			anyPort[pk] = s.score
		}
		out = append(out, s)
	}
	// A pair reported over any port covers its ports' weaker fragments.
	kept := out[:0]
	for _, s := range out {
		if as, ok := anyPort[[2]netip.Addr{s.key.src, s.key.dst}]; ok && !s.key.anyPort && s.score < as {
			continue
		}
		kept = append(kept, s)
	}
	out = kept
	slices.SortFunc(out, func(a, b beaconScore) int {
		if c := cmp.Compare(b.score, a.score); c != 0 {
			return c
		}
		return cmp.Compare(a.entity(), b.entity())
	})
	for i, s := range out {
		emit(d.alert(s, i+1))
		s.pair.reported = s.pair.seen
	}
}

func (s *beaconScore) entity() string {
	if s.key.anyPort {
		return fmt.Sprintf("beacon %v→%v any port", s.key.src, s.key.dst)
	}
	return fmt.Sprintf("beacon %v→%v/%v", s.key.src, netip.AddrPortFrom(s.key.dst, s.key.port), s.key.proto)
}

func (d *Beacon) alert(s beaconScore, rank int) alert.Alert {
	sev := alert.Low
	switch {
	case s.score >= d.cfg.HighScore:
		sev = alert.High
	case s.score >= d.cfg.MediumScore:
		sev = alert.Medium
	}
	dest := netip.AddrPortFrom(s.key.dst, s.key.port).String()
	if s.key.anyPort {
		dest = s.key.dst.String() + fmt.Sprintf(" (%d ports)", s.pair.nports)
	}
	title := fmt.Sprintf("beacon %v → %s every %s (score %.2f, %d connections)", s.key.src, dest, roundAge(s.interval), s.score, s.connections)
	ev := map[string]any{
		"score": round3(s.score), "rank": rank, "connections": s.connections,
		"time_score": round3(s.ts), "time_skew_score": round3(s.tsSkew), "time_madm_score": round3(s.tsMadm),
		"size_score": round3(s.ds), "size_skew_score": round3(s.dsSkew), "size_madm_score": round3(s.dsMadm), "size_smallness_score": round3(s.dsSmall),
		"interval_median_s": round3(s.interval.Seconds()), "interval_mad_s": round3(s.intervalMAD.Seconds()),
		"bytes_median": s.bytesMedian, "bytes_mad": s.bytesMAD,
		"window_s": round3(d.last.Sub(d.first).Seconds()), "sampling_stride": s.pair.stride,
		"threshold": map[string]float64{"score": d.cfg.Score, "min_time_madm_score": d.cfg.MinTimeScore, "medium": d.cfg.MediumScore, "high": d.cfg.HighScore},
	}
	if s.histBins >= 4 {
		ev["histogram_score"], ev["histogram_coverage"], ev["histogram_consistency"], ev["histogram_bins"] =
			round3(s.hist), round3(s.histCoverage), round3(s.histConsistency), s.histBins
	} else {
		ev["histogram_score"] = nil // the input is too short for the spread to mean anything
	}
	if s.expected != "" {
		ev["expected_periodic"] = s.expected
		title += " — expected: " + s.expected
	}
	switch {
	case d.proxies.Contains(s.key.dst):
		// Through a proxy the client's own address is the one that
		// matters; the destination is the proxy.
		ev["via_proxy"] = s.key.dst.String()
		ev["client"] = s.key.src.String()
		title = "beacon from client " + title[len("beacon "):] + " via proxy"
	case d.proxies.Contains(s.key.src):
		// The proxy relays its clients: the implant is on a client whose
		// own beacon to the proxy has the same interval.
		ev["source_is_proxy"] = true
		title += " — the source is a proxy: look for a client beaconing to it at the same interval"
		if sev > alert.Low {
			sev--
		}
	}
	a := alert.Alert{
		Entity:     s.entity(),
		Title:      title,
		Severity:   sev,
		Confidence: round3(s.score),
		// Application-layer C2 (T1071) is what a check-in is; whether it is
		// encrypted (T1573) cannot be told from a connection record.
		Attack:    []string{"T1071"},
		Src:       s.key.src,
		Dst:       s.key.dst,
		Proto:     s.key.proto,
		FirstSeen: time.UnixMilli(s.pair.first).UTC(),
		LastSeen:  time.UnixMilli(s.pair.last).UTC(),
		Count:     s.pair.seen - s.pair.reported,
		Evidence:  ev,
	}
	if !s.key.anyPort {
		a.DstPort, a.HasDstPort = s.key.port, true
	}
	return a
}
