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

// LongConnectionTraffic is the long-connection detector over connection
// records (the host detector of the same name reads conntrack ages). It
// reports single connections over the duration thresholds — as "still
// open" when the record says the connection had not ended (the flow
// tracker's records at end of input, Zeek's open_conn.log) — and pairs
// whose connections together cover most of the input's span: a channel
// re-opened as soon as it drops.
type LongConnectionTraffic struct {
	cfg   config.LongConnectionTraffic
	pairs *genTable[uint64, *longPair] // by hash of the longPairKey
	// seen admits pairs on their second connection; one-off pairs stay a
	// hash and a span.
	seen        *firstCache[[2]int64]
	hasher      pairHasher
	first, last time.Time
}

// Evicted is how many pairs were dropped to keep the tables bounded.
func (d *LongConnectionTraffic) Evicted() int { return d.pairs.Evicted }

// Notes implements Noter.
func (d *LongConnectionTraffic) Notes() []string {
	return evictionNote("long-connection", d.Evicted(), d.cfg.MaxPairs)
}

type longPairKey struct {
	src, dst netip.Addr
	port     uint16
	proto    model.Proto
}

// longPair keeps the union of its connections' time spans as a few
// disjoint intervals; when there are too many, the two closest merge,
// which can only overstate coverage by the gap closed.
type longPair struct {
	key      longPairKey
	spans    [][2]int64 // Unix milliseconds, sorted, disjoint
	conns    int
	reported bool
	open     bool
	last     time.Time
}

const longPairMaxSpans = 32

// NewLongConnectionTraffic builds the detector from its thresholds.
func NewLongConnectionTraffic(cfg *config.Config) *LongConnectionTraffic {
	lt := cfg.Detectors.LongConnection.Traffic
	return &LongConnectionTraffic{cfg: lt, pairs: newGenTable[uint64, *longPair](lt.MaxPairs),
		seen: newFirstCache[[2]int64](4 * lt.MaxPairs), hasher: newPairHasher()}
}

// Name implements Detector.
func (*LongConnectionTraffic) Name() string { return "long-connection" }

// ObserveConn implements ConnDetector.
func (d *LongConnectionTraffic) ObserveConn(c *model.Conn, emit Emit) {
	if d.first.IsZero() || c.TS.Before(d.first) {
		d.first = c.TS
	}
	if ls := c.LastSeen(); ls.After(d.last) {
		d.last = ls
	}
	if !established(c) || !unicastPeer(c) {
		return
	}
	if c.Duration >= d.cfg.Low.Duration {
		emit(d.connAlert(c))
	}
	if c.Duration < d.cfg.PairMinDuration.Duration {
		return
	}
	k := longPairKey{c.Orig.Addr().Unmap(), c.Resp.Addr().Unmap(), c.Resp.Port(), c.Proto}
	h := d.hasher.hash(k.src, k.dst, k.port, k.proto, 3)
	p, ok := d.pairs.get(h)
	if !ok {
		span, seen := d.seen.take(h)
		if !seen {
			d.seen.put(h, [2]int64{c.TS.UnixMilli(), c.LastSeen().UnixMilli()})
			return
		}
		p = &longPair{key: k, conns: 1}
		p.addSpan(span[0], span[1])
		d.pairs.put(h, p)
	}
	p.conns++
	p.open = p.open || isOpen(c)
	if ls := c.LastSeen(); ls.After(p.last) {
		p.last = ls
	}
	p.addSpan(c.TS.UnixMilli(), c.LastSeen().UnixMilli())
}

func (p *longPair) addSpan(a, b int64) {
	// Records come in time order: the new span extends or follows the last.
	if n := len(p.spans); n == 0 || a >= p.spans[n-1][0] {
		switch {
		case n > 0 && a <= p.spans[n-1][1]:
			p.spans[n-1][1] = max(p.spans[n-1][1], b)
			return
		case n < longPairMaxSpans:
			p.spans = append(p.spans, [2]int64{a, b})
			return
		}
	}
	i, _ := slices.BinarySearchFunc(p.spans, a, func(s [2]int64, t int64) int { return cmp.Compare(s[0], t) })
	p.spans = slices.Insert(p.spans, i, [2]int64{a, b})
	// Merge overlaps around the insertion point.
	merged := p.spans[:0]
	for _, s := range p.spans {
		if n := len(merged); n > 0 && s[0] <= merged[n-1][1] {
			merged[n-1][1] = max(merged[n-1][1], s[1])
			continue
		}
		merged = append(merged, s)
	}
	p.spans = merged
	for len(p.spans) > longPairMaxSpans {
		best, gap := 0, int64(-1)
		for j := 0; j+1 < len(p.spans); j++ {
			if g := p.spans[j+1][0] - p.spans[j][1]; gap < 0 || g < gap {
				best, gap = j, g
			}
		}
		p.spans[best][1] = p.spans[best+1][1]
		p.spans = slices.Delete(p.spans, best+1, best+2)
	}
}

func (p *longPair) covered() time.Duration {
	var ms int64
	for _, s := range p.spans {
		ms += s[1] - s[0]
	}
	return time.Duration(ms) * time.Millisecond
}

func (d *LongConnectionTraffic) connAlert(c *model.Conn) alert.Alert {
	sev := alert.Low
	switch {
	case c.Duration >= d.cfg.High.Duration:
		sev = alert.High
	case c.Duration >= d.cfg.Medium.Duration:
		sev = alert.Medium
	}
	open := isOpen(c)
	verb := "lasted"
	if open {
		verb = "still open after"
	}
	return alert.Alert{
		Entity:     fmt.Sprintf("long conn %s %v→%v", c.Proto, c.Orig, c.Resp),
		Title:      fmt.Sprintf("connection %v → %v/%s %s %s", c.Orig, c.Resp, c.Proto, verb, roundAge(c.Duration)),
		Severity:   sev,
		Confidence: 0.7,
		// A session held for hours is how an interactive C2 channel
		// (T1071) or a tunnel (T1572) looks; the record cannot tell which.
		Attack: []string{"T1071", "T1572"},
		Src:    c.Orig.Addr().Unmap(), Dst: c.Resp.Addr().Unmap(),
		SrcPort: c.Orig.Port(), HasSrcPort: true, DstPort: c.Resp.Port(), HasDstPort: true,
		Proto:     c.Proto,
		FirstSeen: c.TS,
		LastSeen:  c.LastSeen(),
		Evidence: map[string]any{
			"kind": "connection", "score": c.Duration.Seconds(), "duration_s": c.Duration.Seconds(), "open": open,
			"bytes_sent": c.OrigBytes, "bytes_received": c.RespBytes, "uid": c.UID,
			"threshold_s": map[string]float64{"low": d.cfg.Low.Seconds(), "medium": d.cfg.Medium.Seconds(), "high": d.cfg.High.Seconds()},
		},
	}
}

// Flush implements Flusher: pairs whose connections cover most of the span.
func (d *LongConnectionTraffic) Flush(_ time.Time, emit Emit) {
	span := d.last.Sub(d.first)
	if span < d.cfg.PairWindow.Duration || span <= 0 {
		return
	}
	type hit struct {
		k   longPairKey
		p   *longPair
		cov float64
	}
	var hits []hit
	d.pairs.all(func(_ uint64, p *longPair) {
		k := p.key
		// One connection covering the span is the connection alert's.
		if p.reported || p.conns < 2 {
			return
		}
		if cov := float64(p.covered()) / float64(span); cov >= d.cfg.PairCoverage {
			hits = append(hits, hit{k, p, cov})
		}
	})
	slices.SortFunc(hits, func(a, b hit) int {
		return cmp.Or(cmp.Compare(b.cov, a.cov), a.k.src.Compare(b.k.src), a.k.dst.Compare(b.k.dst), cmp.Compare(a.k.port, b.k.port))
	})
	for _, h := range hits {
		h.p.reported = true
		dst := netip.AddrPortFrom(h.k.dst, h.k.port)
		state := ""
		if h.p.open {
			state = ", still open"
		}
		emit(alert.Alert{
			Entity:     fmt.Sprintf("long pair %s %v→%v", h.k.proto, h.k.src, dst),
			Title:      fmt.Sprintf("%v → %v/%s connected %.0f%% of the %s window over %d connections%s", h.k.src, dst, h.k.proto, 100*h.cov, roundAge(span), h.p.conns, state),
			Severity:   alert.Medium,
			Confidence: round3(0.5 + 0.4*h.cov),
			Attack:     []string{"T1071", "T1572"},
			Src:        h.k.src, Dst: h.k.dst, DstPort: h.k.port, HasDstPort: true, Proto: h.k.proto,
			FirstSeen: time.UnixMilli(h.p.spans[0][0]).UTC(),
			LastSeen:  time.UnixMilli(h.p.spans[len(h.p.spans)-1][1]).UTC(),
			Count:     h.p.conns,
			Evidence: map[string]any{
				"kind": "pair", "score": round3(h.cov) * span.Seconds(), "coverage": round3(h.cov), "covered_s": h.p.covered().Seconds(), "window_s": span.Seconds(),
				"connections": h.p.conns, "open": h.p.open, "threshold": map[string]any{"pair_coverage": d.cfg.PairCoverage, "pair_window_s": d.cfg.PairWindow.Seconds()},
			},
		})
	}
}
