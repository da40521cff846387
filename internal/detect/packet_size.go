package detect

import (
	"fmt"
	"math"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/baseline"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// madScale turns a MAD into a standard deviation for normal data, so that
// robust z-scores read like ordinary ones.
const madScale = 1.4826

// sizeFloor is the least spread (log2 units) a learned profile is given: a
// port whose packets were all one size in training must not turn a 5%
// change into a huge z-score.
const sizeFloor = 0.25

// PacketSize compares each connection's bytes per packet, each way, with
// what the learned profile says its destination port normally carries:
// data tunnelled through DNS or ICMP makes packets far larger than the
// port's usual; an interactive shell over a bulk-transfer port makes them
// far smaller. Without a learned profile it stays quiet and says so once.
type PacketSize struct {
	cfg   config.PacketSize
	model *baseline.TrafficModel
}

// NewPacketSize builds the detector; m is the learned traffic model or nil.
func NewPacketSize(cfg *config.Config, m *baseline.TrafficModel) *PacketSize {
	return &PacketSize{cfg: cfg.Detectors.PacketSize, model: m}
}

// Name implements Detector.
func (*PacketSize) Name() string { return "packet-size" }

// Notes implements Noter.
func (d *PacketSize) Notes() []string {
	if d.model == nil {
		return []string{"packet-size: no learned traffic model (tcpsentry baseline learn FILE...): not run"}
	}
	return nil
}

// ObserveConn implements ConnDetector.
func (d *PacketSize) ObserveConn(c *model.Conn, emit Emit) {
	if d.model == nil || !established(c) {
		return
	}
	g := baseline.PortGroup(c)
	prof := d.model.PacketSize[g]
	if prof == nil {
		return
	}
	for _, dir := range []struct {
		name          string
		s             baseline.Summary
		ip, pay, pkts uint64
	}{
		{"orig", prof.Orig, c.OrigIPBytes, c.OrigBytes, c.OrigPkts},
		{"resp", prof.Resp, c.RespIPBytes, c.RespBytes, c.RespPkts},
	} {
		if dir.pkts < d.cfg.MinPackets || dir.s.N < d.cfg.MinSamples {
			continue
		}
		bpp := baseline.BytesPerPacket(dir.ip, dir.pay, dir.pkts)
		v := math.Log2(max(1, bpp))
		z := (v - dir.s.Median) / (madScale*dir.s.MAD + sizeFloor)
		// Beyond the z threshold and outside the range learned traffic
		// covered (widened by range_margin): a heavy-tailed but normal
		// port must not alert on its own tail.
		if math.Abs(z) < d.cfg.Z || (v <= dir.s.Hi+d.cfg.RangeMargin && v >= dir.s.Lo-d.cfg.RangeMargin) {
			continue
		}
		usual := math.Exp2(dir.s.Median)
		way, who := "larger", "sent by the originator"
		if z < 0 {
			way = "smaller"
		}
		if dir.name == "resp" {
			who = "sent by the responder"
		}
		sev := alert.Medium
		if math.Abs(z) >= 2*d.cfg.Z {
			sev = alert.High
		}
		emit(alert.Alert{
			Entity: fmt.Sprintf("packet size %s %v→%v %s", c.Proto, c.Orig.Addr().Unmap(), c.Resp, dir.name),
			Title: fmt.Sprintf("%v → %v/%s: %.0f bytes per packet %s, %s than the port's usual %.0f (z %.1f)",
				c.Orig.Addr().Unmap(), c.Resp, c.Proto, bpp, who, way, usual, z),
			Severity:   sev,
			Confidence: round3(clamp01(0.4 + 0.05*math.Abs(z))),
			// Protocol tunnelling (T1572): other data carried in a
			// protocol's packets is what changes their size profile.
			Attack: []string{"T1572"},
			Src:    c.Orig.Addr().Unmap(), Dst: c.Resp.Addr().Unmap(), DstPort: c.Resp.Port(), HasDstPort: true,
			Proto:     c.Proto,
			FirstSeen: c.TS,
			LastSeen:  c.LastSeen(),
			Evidence: map[string]any{
				"score": round3(math.Abs(z)), "direction": dir.name, "bytes_per_packet": round3(bpp), "packets": dir.pkts,
				"usual_bytes_per_packet": round3(usual), "usual_spread_log2": round3(dir.s.MAD), "learned_connections": dir.s.N,
				"learned_range_bytes_per_packet": []float64{round3(math.Exp2(dir.s.Lo)), round3(math.Exp2(dir.s.Hi))},
				"z":                              round3(z), "port_group": g, "uid": c.UID, "threshold": map[string]any{"z": d.cfg.Z, "min_packets": d.cfg.MinPackets},
			},
		})
	}
}

// Flush implements Flusher; nothing is windowed.
func (*PacketSize) Flush(time.Time, Emit) {}
