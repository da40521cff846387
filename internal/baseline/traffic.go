package baseline

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// TrafficModel is what `baseline learn FILE...` learns from connection
// records: per service port, the usual bytes per packet (packet-size) and
// the usual shape of a connection (anomaly). Only robust summaries
// (median, MAD) are stored, so the model is small whatever the input.
type TrafficModel struct {
	Version int       `json:"version"`
	Learned time.Time `json:"learned"` // when it was learned (wall clock)
	From    time.Time `json:"from"`    // event time of the first record learned from
	To      time.Time `json:"to"`      // and of the last
	Records int       `json:"records"` // records read
	Used    int       `json:"used"`    // established connections learned from
	Inputs  []string  `json:"inputs"`
	// PacketSize maps "tcp/53" to the log2 bytes per packet of each
	// direction, learned from connections with enough packets that way.
	PacketSize map[string]*SizeProfile `json:"packet_size"`
	Anomaly    AnomalyModel            `json:"anomaly"`
}

// TrafficModelVersion is bumped when the meaning of a stored field changes;
// an older model is then refused with a clear message, not misread.
const TrafficModelVersion = 1

// SizeProfile is one port's usual bytes per packet, each way (log2).
type SizeProfile struct {
	Orig Summary `json:"orig"`
	Resp Summary `json:"resp"`
}

// Summary is a robust summary of one feature.
type Summary struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	MAD    float64 `json:"mad"`
	// Lo and Hi are the 0.1% and 99.9% quantiles: the range the learned
	// traffic actually covered, tails included.
	Lo float64 `json:"lo"`
	Hi float64 `json:"hi"`
}

// AnomalyModel is the per-feature robust summary of connections, for all
// connections (Global) and per destination port with enough of them.
type AnomalyModel struct {
	Features []string             `json:"features"`
	Global   []Summary            `json:"global"`
	Groups   map[string][]Summary `json:"groups"`
	// PortShare is the share of learned connections per port group, for
	// the evidence ("this port carried 0.01% of normal traffic").
	PortShare map[string]float64 `json:"port_share"`
}

// Features of a connection, all log2(1+x) so that a ×2 change is one unit
// whatever the scale: the typical spread of web traffic is a few units.
var FeatureNames = []string{"duration_ms", "orig_bytes", "resp_bytes", "orig_pkts", "resp_pkts", "orig_bytes_per_pkt", "resp_bytes_per_pkt"}

// NumFeatures is len(FeatureNames).
const NumFeatures = 7

// ConnFeatures fills f with c's features.
func ConnFeatures(c *model.Conn, f *[NumFeatures]float64) {
	f[0] = log2p(float64(c.Duration.Milliseconds()))
	f[1] = log2p(float64(c.OrigBytes))
	f[2] = log2p(float64(c.RespBytes))
	f[3] = log2p(float64(c.OrigPkts))
	f[4] = log2p(float64(c.RespPkts))
	f[5] = log2p(BytesPerPacket(c.OrigIPBytes, c.OrigBytes, c.OrigPkts))
	f[6] = log2p(BytesPerPacket(c.RespIPBytes, c.RespBytes, c.RespPkts))
}

// BytesPerPacket is the IP bytes per packet when known, else payload bytes
// per packet; 0 without packets.
func BytesPerPacket(ipBytes, payload, pkts uint64) float64 {
	if pkts == 0 {
		return 0
	}
	if ipBytes > 0 {
		return float64(ipBytes) / float64(pkts)
	}
	return float64(payload) / float64(pkts)
}

func log2p(x float64) float64 { return math.Log2(1 + max(0, x)) }

// PortGroup names a destination port group: "tcp/443".
func PortGroup(c *model.Conn) string { return PortKey(c.Proto, c.Resp.Port()) }

// Histograms: values in [0, histMax) log2 units at 1/histRes resolution.
// 64 octaves cover any counter; 1/16 of an octave (4%) is finer than any
// threshold is set.
const (
	histRes  = 16
	histMax  = 64
	histBins = histMax * histRes
)

type hist [histBins]uint32

func (h *hist) add(v float64) {
	b := int(v * histRes)
	h[min(max(b, 0), histBins-1)]++
}

// summary is the histogram's median and MAD, at bin resolution.
func (h *hist) summary() Summary {
	var n uint64
	for _, c := range h {
		n += uint64(c)
	}
	if n == 0 {
		return Summary{}
	}
	center := func(i int) float64 { return (float64(i) + 0.5) / histRes }
	quantile := func(q float64) float64 {
		want := uint64(math.Ceil(q * float64(n)))
		var acc uint64
		for i, c := range h {
			acc += uint64(c)
			if acc >= max(want, 1) {
				return center(i)
			}
		}
		return center(histBins - 1)
	}
	half := (n + 1) / 2
	med := quantile(0.5)
	type dev struct {
		d float64
		n uint32
	}
	devs := make([]dev, 0, 64)
	for i, c := range h {
		if c > 0 {
			devs = append(devs, dev{math.Abs(center(i) - med), c})
		}
	}
	slices.SortFunc(devs, func(a, b dev) int { return cmp.Compare(a.d, b.d) })
	var acc uint64
	mad := 0.0
	for _, d := range devs {
		acc += uint64(d.n)
		if acc >= half {
			mad = d.d
			break
		}
	}
	return Summary{N: int(n), Median: med, MAD: mad, Lo: quantile(0.001), Hi: quantile(0.999)}
}

// TrafficLearner accumulates histograms from connection records. Its
// memory is bounded by maxGroups port groups (the first seen; later ports
// only feed the global group).
type TrafficLearner struct {
	maxGroups int
	model     TrafficModel
	global    *[NumFeatures]hist
	groups    map[string]*[NumFeatures]hist
	counts    map[string]int
	sizes     map[string]*[2]hist
}

// NewTrafficLearner returns a learner of at most maxGroups port groups.
func NewTrafficLearner(maxGroups int) *TrafficLearner {
	return &TrafficLearner{
		maxGroups: max(1, maxGroups),
		global:    &[NumFeatures]hist{}, groups: map[string]*[NumFeatures]hist{}, counts: map[string]int{},
		sizes: map[string]*[2]hist{},
	}
}

// Observe learns from one record; use says whether it is an established
// connection (the detectors' definition: failed attempts are the scan
// detector's business and would drown the shape of real connections).
func (l *TrafficLearner) Observe(c *model.Conn, use bool) {
	m := &l.model
	m.Records++
	if m.From.IsZero() || c.TS.Before(m.From) {
		m.From = c.TS
	}
	if c.TS.After(m.To) {
		m.To = c.TS
	}
	if !use {
		return
	}
	m.Used++
	var f [NumFeatures]float64
	ConnFeatures(c, &f)
	g := PortGroup(c)
	gh := l.groups[g]
	if gh == nil && len(l.groups) < l.maxGroups {
		gh = &[NumFeatures]hist{}
		l.groups[g] = gh
	}
	for i, v := range f {
		l.global[i].add(v)
		if gh != nil {
			gh[i].add(v)
		}
	}
	if gh != nil {
		l.counts[g]++
	}
	sz := l.sizes[g]
	if sz == nil && gh != nil {
		sz = &[2]hist{}
		l.sizes[g] = sz
	}
	if sz != nil {
		// Every connection with packets that way shapes the profile (a DNS
		// query is one packet); only the judged connection needs many.
		if c.OrigPkts > 0 {
			sz[0].add(math.Log2(max(1, BytesPerPacket(c.OrigIPBytes, c.OrigBytes, c.OrigPkts))))
		}
		if c.RespPkts > 0 {
			sz[1].add(math.Log2(max(1, BytesPerPacket(c.RespIPBytes, c.RespBytes, c.RespPkts))))
		}
	}
}

// Model returns what was learned; minSamples is the connections a port
// group needs to get its own anomaly summaries.
func (l *TrafficLearner) Model(inputs []string, minSamples int, learned time.Time) (*TrafficModel, error) {
	m := l.model
	if m.Used == 0 {
		return nil, fmt.Errorf("no established connections to learn from (%d records read)", m.Records)
	}
	m.Version, m.Learned, m.Inputs = TrafficModelVersion, learned, inputs
	m.PacketSize = map[string]*SizeProfile{}
	for g, sz := range l.sizes {
		p := &SizeProfile{Orig: sz[0].summary(), Resp: sz[1].summary()}
		if p.Orig.N > 0 || p.Resp.N > 0 {
			m.PacketSize[g] = p
		}
	}
	m.Anomaly = AnomalyModel{Features: FeatureNames, Global: summaries(l.global), Groups: map[string][]Summary{}, PortShare: map[string]float64{}}
	for g, h := range l.groups {
		m.Anomaly.PortShare[g] = float64(l.counts[g]) / float64(m.Used)
		if l.counts[g] >= minSamples {
			m.Anomaly.Groups[g] = summaries(h)
		}
	}
	return &m, nil
}

func summaries(h *[NumFeatures]hist) []Summary {
	out := make([]Summary, NumFeatures)
	for i := range h {
		out[i] = h[i].summary()
	}
	return out
}

// Check reports a model that cannot be used as this version reads it.
func (m *TrafficModel) Check() error {
	if m.Version != TrafficModelVersion {
		return fmt.Errorf("traffic model version %d, this tcpsentry reads %d: learn it again", m.Version, TrafficModelVersion)
	}
	if len(m.Anomaly.Global) != NumFeatures || !slices.Equal(m.Anomaly.Features, FeatureNames) {
		return fmt.Errorf("traffic model features %v, want %v: learn it again", m.Anomaly.Features, FeatureNames)
	}
	for g, s := range m.Anomaly.Groups {
		if len(s) != NumFeatures {
			return fmt.Errorf("traffic model group %s has %d features, want %d", g, len(s), NumFeatures)
		}
	}
	return nil
}
