package detect

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// Exfiltration finds large outbound transfers: the bytes one source sends
// one destination and all destinations, with the producer–consumer ratio
// PCR = (sent−received)/(sent+received) saying whether the source produced
// the data (an upload, near 1) or consumed it (a download, near −1), and
// upload spikes measured against the source's own history in event time.
// A pair is reported when it crosses the threshold (so a live source sees
// it then) and its final figures when the input ends.
type Exfiltration struct {
	cfg      config.Exfiltration
	internal Nets
	pairs    *genTable[uint64, *exfilVolume] // by hash of source and destination
	sources  *genTable[uint64, *exfilSource] // by hash of the address
	// seen admits pairs on their second connection (or a first one big
	// enough alone): one-off pairs stay a hash and two counters.
	seen   *firstCache[exfilFirst]
	hasher pairHasher
}

type exfilFirst struct {
	sent, received uint64
	first, last    int64 // Unix nanoseconds
	port           uint16
	open           bool
}

// exfilAdmission is how many first sightings are kept per tracked pair.
const exfilAdmission = 4

// Evicted is how many pairs and sources were dropped to keep the tables
// bounded.
func (d *Exfiltration) Evicted() int { return d.pairs.Evicted + d.sources.Evicted }

// Notes implements Noter.
func (d *Exfiltration) Notes() []string {
	return evictionNote("exfiltration", d.Evicted(), d.cfg.MaxPairs)
}

type exfilVolume struct {
	// What every record updates comes first, in one cache line.
	sent, received uint64
	first, last    int64  // Unix nanoseconds
	reported       uint64 // sent bytes already reported
	conns          int32
	reportedConns  int32                 // connections counted in alerts already emitted
	ports          [exfilMaxPorts]uint16 // the first distinct destination ports
	nports         uint8
	open           bool // a connection of it was still open at the end of the input
	key            [2]netip.Addr
}

type exfilSource struct {
	addr  netip.Addr
	total exfilVolume
	// hist holds the bytes sent in the last spike_history buckets, oldest
	// first; cur is the bucket being filled.
	hist     []uint64
	curStart time.Time
	cur      uint64
	spikes   int
	// maxPair is the most sent to one destination: a source alert is only
	// worth it when the volume is spread (one pair already says the rest).
	maxPair uint64
}

const exfilMaxPorts = 8

// NewExfiltration builds the detector from its thresholds.
func NewExfiltration(cfg *config.Config) *Exfiltration {
	ex := cfg.Detectors.Exfiltration
	d := &Exfiltration{cfg: ex, pairs: newGenTable[uint64, *exfilVolume](ex.MaxPairs), sources: newGenTable[uint64, *exfilSource](ex.MaxSources),
		seen: newFirstCache[exfilFirst](exfilAdmission * ex.MaxPairs), hasher: newPairHasher()}
	for _, p := range cfg.Networks.Internal {
		d.internal = append(d.internal, p.Prefix)
	}
	return d
}

// Name implements Detector.
func (*Exfiltration) Name() string { return "exfiltration" }

func (v *exfilVolume) add(c *model.Conn) {
	v.sent += c.OrigBytes
	v.received += c.RespBytes
	v.conns++
	if ts := c.TS.UnixNano(); v.conns == 1 || ts < v.first {
		v.first = ts
	}
	if ls := c.LastSeen().UnixNano(); ls > v.last {
		v.last = ls
	}
	if isOpen(c) {
		v.open = true
	}
	v.addPort(c.Resp.Port())
}

func (v *exfilVolume) addPort(port uint16) {
	for _, p := range v.ports[:v.nports] {
		if p == port {
			return
		}
	}
	if int(v.nports) < exfilMaxPorts {
		v.ports[v.nports] = port
		v.nports++
	}
}

func (v *exfilVolume) pcr() float64 {
	if v.sent+v.received == 0 {
		return 0
	}
	return (float64(v.sent) - float64(v.received)) / (float64(v.sent) + float64(v.received))
}

// ObserveConn implements ConnDetector.
func (d *Exfiltration) ObserveConn(c *model.Conn, emit Emit) {
	if c.OrigBytes == 0 || c.Flipped() || !unicastPeer(c) {
		return
	}
	src, dst := c.Orig.Addr().Unmap(), c.Resp.Addr().Unmap()
	key := [2]netip.Addr{src, dst}
	h := d.hasher.hash(src, dst, 0, 0, 2)
	p, ok := d.pairs.get(h)
	if !ok {
		first, seen := d.seen.take(h)
		if !seen && c.OrigBytes < d.cfg.PairBytes {
			d.seen.put(h, exfilFirst{c.OrigBytes, c.RespBytes, c.TS.UnixNano(), c.LastSeen().UnixNano(), c.Resp.Port(), isOpen(c)})
			p = nil
		} else {
			p = &exfilVolume{key: key}
			if seen {
				p.sent, p.received, p.conns, p.open = first.sent, first.received, 1, first.open
				p.first, p.last = first.first, first.last
				p.addPort(first.port)
			}
			d.pairs.put(h, p)
		}
	}
	if p != nil {
		p.add(c)
	}
	if p != nil && p.reported == 0 && p.sent >= d.cfg.PairBytes && p.pcr() >= d.cfg.MinPCR {
		emit(d.pairAlert(key, p))
		p.reported, p.reportedConns = p.sent, p.conns
	}

	hs := d.hasher.hash(src, netip.Addr{}, 0, 0, 4)
	s, ok := d.sources.get(hs)
	if !ok {
		s = &exfilSource{addr: src, curStart: c.TS.Truncate(d.cfg.SpikeBucket.Duration)}
		d.sources.put(hs, s)
	}
	s.total.add(c)
	d.advance(src, s, c.TS, emit)
	s.cur += c.OrigBytes
	if p != nil {
		s.maxPair = max(s.maxPair, p.sent)
	}
	if s.total.reported == 0 && s.total.sent >= d.cfg.SourceBytes && s.total.pcr() >= d.cfg.MinPCR && s.maxPair*10 < s.total.sent*9 {
		emit(d.sourceAlert(src, s))
		s.total.reported, s.total.reportedConns = s.total.sent, s.total.conns
	}
}

// advance closes the source's buckets up to the one holding t, judging
// each closed bucket against the history before it. Records arrive
// roughly in time order; one older than the current bucket is counted in
// the current bucket.
func (d *Exfiltration) advance(src netip.Addr, s *exfilSource, t time.Time, emit Emit) {
	b := d.cfg.SpikeBucket.Duration
	if t.Before(s.curStart.Add(b)) {
		return
	}
	d.judgeSpike(src, s, emit)
	s.push(s.cur, d.cfg.SpikeHistory)
	s.cur = 0
	next := s.curStart.Add(b)
	start := t.Truncate(b)
	// Empty buckets in between are history too (quiet hours), up to the
	// history's length.
	for i := 0; next.Before(start) && i < d.cfg.SpikeHistory; i++ {
		s.push(0, d.cfg.SpikeHistory)
		next = next.Add(b)
	}
	s.curStart = start
}

func (s *exfilSource) push(v uint64, n int) {
	if len(s.hist) >= n {
		copy(s.hist, s.hist[1:])
		s.hist = s.hist[:len(s.hist)-1]
	}
	s.hist = append(s.hist, v)
}

func (d *Exfiltration) judgeSpike(src netip.Addr, s *exfilSource, emit Emit) {
	if len(s.hist) < d.cfg.SpikeMinHist || s.cur < d.cfg.SpikeMinBytes {
		return
	}
	h := make([]float64, len(s.hist))
	for i, v := range s.hist {
		h[i] = float64(v)
	}
	med := describe(h).median
	if float64(s.cur) < d.cfg.SpikeFactor*med {
		return
	}
	s.spikes++
	factor := "∞"
	if med > 0 {
		factor = fmt.Sprintf("%.0f×", float64(s.cur)/med)
	}
	b := d.cfg.SpikeBucket.Duration
	emit(alert.Alert{
		Entity:     fmt.Sprintf("upload spike %v %s", src, s.curStart.UTC().Format(time.RFC3339)),
		Title:      fmt.Sprintf("upload spike from %v: %s sent in %s from %s, %s its median %s", src, humanBytes(s.cur), b, s.curStart.UTC().Format("15:04"), factor, b),
		Severity:   alert.Medium,
		Confidence: 0.6,
		Attack:     []string{"T1048", "T1030"},
		Src:        src,
		FirstSeen:  s.curStart,
		LastSeen:   s.curStart.Add(b),
		Evidence: map[string]any{
			"kind": "spike", "bytes": s.cur, "bucket_s": b.Seconds(), "history_buckets": len(s.hist),
			"history_median_bytes": med, "threshold": map[string]any{"factor": d.cfg.SpikeFactor, "min_bytes": d.cfg.SpikeMinBytes},
		},
	})
}

// severity of an outbound volume: high from high_bytes to an external
// destination; one level lower inside the network (file servers, backups).
func (d *Exfiltration) severity(dst netip.Addr, sent uint64) alert.Severity {
	sev := alert.Medium
	if sent >= d.cfg.HighBytes {
		sev = alert.High
	}
	if dst.IsValid() && d.internal.Contains(dst) {
		sev--
	}
	return sev
}

func (d *Exfiltration) pairAlert(key [2]netip.Addr, p *exfilVolume) alert.Alert {
	open := ""
	if p.open {
		open = ", still open"
	}
	ports := make([]int, 0, p.nports)
	for _, port := range p.ports[:p.nports] {
		ports = append(ports, int(port))
	}
	slices.Sort(ports)
	return alert.Alert{
		Entity:     fmt.Sprintf("exfiltration %v→%v", key[0], key[1]),
		Title:      fmt.Sprintf("%v sent %s to %v (received %s, PCR %.2f, %d connections%s)", key[0], humanBytes(p.sent), key[1], humanBytes(p.received), p.pcr(), p.conns, open),
		Severity:   d.severity(key[1], p.sent),
		Confidence: round3(0.5 + 0.4*clamp01(p.pcr())),
		// Exfiltration over some protocol (T1048) or over the C2 channel
		// itself (T1041): a connection record cannot tell which.
		Attack:    []string{"T1048", "T1041"},
		Src:       key[0],
		Dst:       key[1],
		FirstSeen: time.Unix(0, p.first).UTC(),
		LastSeen:  time.Unix(0, p.last).UTC(),
		Count:     int(p.conns - p.reportedConns),
		Evidence: map[string]any{
			"kind": "pair", "score": float64(p.sent), "bytes_sent": p.sent, "bytes_received": p.received, "pcr": round3(p.pcr()),
			"connections": p.conns, "dst_ports": ports, "open": p.open, "internal_destination": d.internal.Contains(key[1]),
			"threshold": map[string]any{"pair_bytes": d.cfg.PairBytes, "high_bytes": d.cfg.HighBytes, "min_pcr": d.cfg.MinPCR},
		},
	}
}

func (d *Exfiltration) sourceAlert(src netip.Addr, s *exfilSource) alert.Alert {
	v := &s.total
	return alert.Alert{
		Entity:     fmt.Sprintf("exfiltration %v→*", src),
		Title:      fmt.Sprintf("%v sent %s in total (received %s, PCR %.2f, %d connections)", src, humanBytes(v.sent), humanBytes(v.received), v.pcr(), v.conns),
		Severity:   alert.Medium,
		Confidence: round3(0.4 + 0.4*clamp01(v.pcr())),
		Attack:     []string{"T1048", "T1041"},
		Src:        src,
		FirstSeen:  time.Unix(0, v.first).UTC(),
		LastSeen:   time.Unix(0, v.last).UTC(),
		Count:      int(v.conns - v.reportedConns),
		Evidence: map[string]any{
			"kind": "source", "score": float64(v.sent), "bytes_sent": v.sent, "bytes_received": v.received, "pcr": round3(v.pcr()),
			"connections": v.conns, "threshold": map[string]any{"source_bytes": d.cfg.SourceBytes, "min_pcr": d.cfg.MinPCR},
		},
	}
}

// Flush implements Flusher: the current buckets are judged and the final
// figures of every reported pair and source replace the first ones.
func (d *Exfiltration) Flush(_ time.Time, emit Emit) {
	type src struct {
		a netip.Addr
		s *exfilSource
	}
	srcs := make([]src, 0, d.sources.len())
	d.sources.all(func(_ uint64, s *exfilSource) { srcs = append(srcs, src{s.addr, s}) })
	slices.SortFunc(srcs, func(x, y src) int { return x.a.Compare(y.a) })
	for _, x := range srcs {
		a, s := x.a, x.s
		d.judgeSpike(a, s, emit)
		if s.total.reported > 0 && s.total.sent > s.total.reported {
			emit(d.sourceAlert(a, s))
			s.total.reported, s.total.reportedConns = s.total.sent, s.total.conns
		}
	}
	type pair struct {
		k [2]netip.Addr
		p *exfilVolume
	}
	var pairs []pair
	d.pairs.all(func(_ uint64, p *exfilVolume) {
		if p.reported > 0 && p.sent > p.reported {
			pairs = append(pairs, pair{p.key, p})
		}
	})
	slices.SortFunc(pairs, func(a, b pair) int {
		return cmp.Or(a.k[0].Compare(b.k[0]), a.k[1].Compare(b.k[1]))
	})
	for _, x := range pairs {
		k, p := x.k, x.p
		emit(d.pairAlert(k, p))
		p.reported, p.reportedConns = p.sent, p.conns
	}
}

// humanBytes prints a byte count in decimal units, as transfer tools do.
func humanBytes(n uint64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.1f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}
