package detect

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// Flood finds SYN floods in connection records: many connection attempts
// that never complete, aimed at one host and port, in a short time, often
// from spoofed sources. The target's SYN-ACKs to spoofed addresses
// (backscatter) appear as records the target originates without a SYN and
// are never counted against anyone.
type Flood struct {
	cfg     config.Flood
	targets map[netip.AddrPort]*floodTarget
	// Evicted counts targets dropped to keep the table bounded.
	Evicted int
}

type floodTarget struct {
	first, last time.Time
	attempts    int
	// sources is capped: beyond the cap only the count of distinct
	// sources seen so far is kept, so a spoofed flood cannot grow it.
	sources   map[netip.Addr]struct{}
	sourceCap bool
	// peak is the largest number of attempts in one second.
	peak, cur int
	curSec    int64
	reported  int
}

// NewFlood builds the detector from its thresholds.
func NewFlood(cfg *config.Config) *Flood {
	return &Flood{cfg: cfg.Detectors.Flood, targets: map[netip.AddrPort]*floodTarget{}}
}

// Name implements Detector.
func (*Flood) Name() string { return "flood" }

// halfOpen is a TCP attempt the originator started with a SYN and never
// completed: unanswered, reset, or SYN-ACKed and left hanging (the
// spoofed source of a flood never sends the final ACK). A record that
// begins with the responder's SYN-ACK (backscatter seen from the spoofed
// side) is not one.
func halfOpen(c *model.Conn) bool {
	if c.Proto != model.ProtoTCP || c.OrigBytes > 0 {
		return false
	}
	if c.Has(model.FieldFirstFlags) {
		if c.FirstFlags&^(model.FlagECE|model.FlagCWR) != model.FlagSYN {
			return false
		}
	} else if !strings.HasPrefix(c.History, "S") {
		return false
	}
	return !strings.Contains(c.History, "A") && !strings.Contains(c.History, "D")
}

// ObserveConn implements ConnDetector.
func (d *Flood) ObserveConn(c *model.Conn, emit Emit) {
	if c.End == model.EndOpen || !halfOpen(c) {
		return // in-progress records: an attempt is half-open only once it ended so
	}
	key := netip.AddrPortFrom(c.Resp.Addr().Unmap(), c.Resp.Port())
	t := d.targets[key]
	if t != nil && c.TS.Sub(t.last) > d.cfg.Window.Duration {
		delete(d.targets, key) // quiet for a window: a new episode
		t = nil
	}
	if t == nil {
		if len(d.targets) >= d.cfg.MaxTargets {
			d.Evicted += evictOldest(&d.targets, func(t *floodTarget) time.Time { return t.last })
		}
		t = &floodTarget{first: c.TS, sources: map[netip.Addr]struct{}{}, curSec: c.TS.Unix()}
		d.targets[key] = t
	}
	if c.TS.After(t.last) {
		t.last = c.TS
	}
	t.attempts++
	if sec := c.TS.Unix(); sec != t.curSec {
		t.curSec, t.cur = sec, 0
	}
	t.cur++
	t.peak = max(t.peak, t.cur)
	if len(t.sources) < d.cfg.MaxSources {
		t.sources[c.Orig.Addr().Unmap()] = struct{}{}
	} else {
		t.sourceCap = true
	}
	if t.reported == 0 && t.attempts >= d.cfg.Attempts && t.peak >= d.cfg.RatePerSecond {
		a := d.alert(key, t)
		t.reported = t.attempts
		emit(a)
	}
}

func (d *Flood) alert(key netip.AddrPort, t *floodTarget) alert.Alert {
	srcs := fmt.Sprint(len(t.sources))
	if t.sourceCap {
		srcs = fmt.Sprintf("%d+", len(t.sources))
	}
	window := t.last.Sub(t.first)
	sev := alert.High
	if t.peak >= 10*d.cfg.RatePerSecond {
		sev = alert.Critical
	}
	return alert.Alert{
		// One finding per episode: a flood on the same target after a
		// quiet window is a new one.
		Entity:     fmt.Sprintf("flood %v since %s", key, t.first.UTC().Format(time.RFC3339Nano)),
		Title:      fmt.Sprintf("SYN flood on %v: %d half-open attempts from %s sources, peak %d/s", key, t.attempts, srcs, t.peak),
		Severity:   sev,
		Confidence: 0.9,
		Attack:     []string{"T1498.001", "T1499.002"},
		Dst:        key.Addr(), DstPort: key.Port(), HasDstPort: true,
		Proto:     model.ProtoTCP,
		FirstSeen: t.first,
		LastSeen:  t.last,
		Count:     t.attempts - t.reported,
		Evidence: map[string]any{
			"attempts": t.attempts, "distinct_sources": len(t.sources), "sources_capped": t.sourceCap,
			"peak_per_s": t.peak, "rate_per_s": rate(t.attempts, window), "window_s": window.Seconds(),
			"spoofed_likely": len(t.sources)*2 > t.attempts,
			"threshold":      map[string]int{"attempts": d.cfg.Attempts, "per_s": d.cfg.RatePerSecond},
		},
	}
}

// Flush implements Flusher: the final figures of every reported flood.
func (d *Flood) Flush(_ time.Time, emit Emit) {
	keys := make([]netip.AddrPort, 0, len(d.targets))
	for k, t := range d.targets {
		if t.reported > 0 && t.attempts > t.reported {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b netip.AddrPort) int { return cmp.Compare(a.String(), b.String()) })
	for _, k := range keys {
		t := d.targets[k]
		a := d.alert(k, t)
		t.reported = t.attempts
		emit(a)
	}
}
