package detect

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/baseline"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// Anomaly scores each established connection against the learned model:
// a robust z-score per feature (duration, bytes and packets each way,
// bytes per packet each way, all log2), against the summaries learned for
// its destination port (or all traffic when the port was rare in
// training). The score is the root of the summed squares of the z-scores
// beyond free_z (ordinary spread adds nothing); a connection is reported when the score passes the
// threshold and at least min_features features deviate together. The
// evidence lists those features with their values, usual values and
// z-scores, strongest first: the explanation of the score.
type Anomaly struct {
	cfg   config.Anomaly
	model *baseline.TrafficModel
	// seen caps the distinct findings; Suppressed counts alerts beyond it.
	seen       map[string]struct{}
	Suppressed int
}

// NewAnomaly builds the detector; m is the learned traffic model or nil.
func NewAnomaly(cfg *config.Config, m *baseline.TrafficModel) *Anomaly {
	return &Anomaly{cfg: cfg.Detectors.Anomaly, model: m, seen: map[string]struct{}{}}
}

// Name implements Detector.
func (*Anomaly) Name() string { return "anomaly" }

// Notes implements Noter.
func (d *Anomaly) Notes() []string {
	switch {
	case d.model == nil:
		return []string{"anomaly: no learned traffic model (tcpsentry baseline learn FILE...): not run"}
	case d.Suppressed > 0:
		return []string{fmt.Sprintf("anomaly: %d alerts beyond max_alerts (%d distinct findings) were dropped", d.Suppressed, d.cfg.MaxAlerts)}
	}
	return nil
}

type featureDev struct {
	Feature string  `json:"feature"`
	Value   float64 `json:"value"`
	Usual   float64 `json:"usual"`
	Z       float64 `json:"z"`
}

// ObserveConn implements ConnDetector.
func (d *Anomaly) ObserveConn(c *model.Conn, emit Emit) {
	if d.model == nil || !established(c) {
		return
	}
	g := baseline.PortGroup(c)
	sums, group := d.model.Anomaly.Groups[g], g
	if sums == nil {
		sums, group = d.model.Anomaly.Global, "all"
	}
	var f [baseline.NumFeatures]float64
	baseline.ConnFeatures(c, &f)
	var sq float64
	var devs []featureDev
	for i, v := range f {
		s := sums[i]
		z := (v - s.Median) / (madScale*s.MAD + sizeFloor)
		if e := math.Abs(z) - d.cfg.FreeZ; e > 0 {
			sq += e * e
		}
		if math.Abs(z) >= d.cfg.FeatureZ {
			// Values back in natural units (bytes, ms, packets).
			devs = append(devs, featureDev{baseline.FeatureNames[i], round3(math.Exp2(v) - 1), round3(math.Exp2(s.Median) - 1), round3(z)})
		}
	}
	score := math.Sqrt(sq)
	if score < d.cfg.Score || len(devs) < d.cfg.MinFeatures {
		return
	}
	slices.SortFunc(devs, func(a, b featureDev) int { return cmp.Compare(math.Abs(b.Z), math.Abs(a.Z)) })
	entity := fmt.Sprintf("anomaly %s %v→%v", c.Proto, c.Orig.Addr().Unmap(), c.Resp)
	if _, ok := d.seen[entity]; !ok {
		if len(d.seen) >= d.cfg.MaxAlerts {
			d.Suppressed++
			return
		}
		d.seen[entity] = struct{}{}
	}
	why := make([]string, 0, 3)
	for _, x := range devs[:min(3, len(devs))] {
		why = append(why, fmt.Sprintf("%s %.4g vs usual %.4g (z %+.1f)", x.Feature, x.Value, x.Usual, x.Z))
	}
	sev := alert.Low
	switch {
	case score >= 3*d.cfg.Score:
		sev = alert.High
	case score >= 1.5*d.cfg.Score:
		sev = alert.Medium
	}
	share, known := d.model.Anomaly.PortShare[g]
	emit(alert.Alert{
		Entity:     entity,
		Title:      fmt.Sprintf("anomalous connection %v → %v/%s (score %.1f): %s", c.Orig.Addr().Unmap(), c.Resp, c.Proto, score, joinComma(why)),
		Severity:   sev,
		Confidence: round3(clamp01(0.3 + score/(10*d.cfg.Score))),
		// An anomaly is not a technique: no ATT&CK id is claimed.
		Src: c.Orig.Addr().Unmap(), Dst: c.Resp.Addr().Unmap(), DstPort: c.Resp.Port(), HasDstPort: true,
		Proto:     c.Proto,
		FirstSeen: c.TS,
		LastSeen:  c.LastSeen(),
		Evidence: map[string]any{
			"score": round3(score), "features": devs, "model_group": group, "port_seen_in_training": known,
			"port_share": share, "uid": c.UID,
			"threshold": map[string]any{"score": d.cfg.Score, "free_z": d.cfg.FreeZ, "feature_z": d.cfg.FeatureZ, "min_features": d.cfg.MinFeatures},
		},
	})
}

// Flush implements Flusher; nothing is windowed.
func (*Anomaly) Flush(time.Time, Emit) {}

func joinComma(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ", "
		}
		out += x
	}
	return out
}
