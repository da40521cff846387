package eval

import (
	"maps"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
)

// DefaultClasses maps detectors to the attack class their alerts claim.
func DefaultClasses() map[string]string {
	return map[string]string{
		"scan":           "portscan",
		"rapid-attempts": "portscan",
		// Rapid attempts at one target are a flood's, not a scan's.
		"rapid-attempts/one-target": "synflood",
		"flood":                     "synflood",
		"beacon":                    "beacon",
		"exfiltration":              "exfil",
		"suspicious-port":           "c2",
		"blocklisted-ip":            "c2",
		"long-connection":           "c2",
		"reverse-shell":             "c2",
		"lateral-movement":          "lateral",
		"packet-size":               "exfil",
		"anomaly":                   "anomaly",
	}
}

// classOf is the class alert a claims: classes[detector/pattern] when its
// evidence names a pattern the map knows, else classes[detector].
func classOf(a *alert.Alert, classes map[string]string) string {
	if p, ok := a.Evidence["pattern"].(string); ok {
		if c, ok := classes[a.Detector+"/"+p]; ok {
			return c
		}
	}
	return classes[a.Detector]
}

// Slack widens each event's time span when matching alerts: captures and
// truth files are stamped by different clocks.
const Slack = time.Second

// ClassScore is the result for one attack class.
type ClassScore struct {
	Class     string  `json:"class"`
	Events    int     `json:"events"`    // attack events of this class in the truth
	Detected  int     `json:"detected"`  // of them, matched by an alert of this class
	Recall    float64 `json:"recall"`    // Detected / Events
	Alerts    int     `json:"alerts"`    // alerts claiming this class
	Correct   int     `json:"correct"`   // of them, matching an event of this class
	Precision float64 `json:"precision"` // Correct / Alerts
	// Latencies are Raised minus the event's start, one per detected event.
	LatencyMedianS float64 `json:"latency_median_s"`
	LatencyMaxS    float64 `json:"latency_max_s"`
}

// Report is a whole evaluation.
type Report struct {
	Classes []ClassScore `json:"classes"`
	// Benign events, those with at least one alert, and the rate.
	BenignEvents   int     `json:"benign_events"`
	BenignAlerted  int     `json:"benign_alerted"`
	FalsePositiveR float64 `json:"false_positive_rate"`
	// Alerts on benign events, and alerts matching no event at all.
	AlertsOnBenign    int `json:"alerts_on_benign"`
	AlertsOnUncovered int `json:"alerts_on_uncovered"`
	// HighOnBenign counts high or critical alerts on benign events.
	HighOnBenign int `json:"high_on_benign"`
	TotalAlerts  int `json:"total_alerts"`
}

// matches reports whether alert a is about event e: its time span meets
// the event's (with Slack), and its addresses fit the event's.
func matches(a *alert.Alert, e *Event) bool {
	first, last := a.FirstSeen, a.LastSeen
	if last.IsZero() {
		last = first
	}
	if last.Before(e.Start.Add(-Slack)) || first.After(e.End.Add(Slack)) {
		return false
	}
	in := func(p netip.Prefix, addr netip.Addr) bool {
		return !p.IsValid() || (addr.IsValid() && p.Contains(addr.Unmap()))
	}
	// A spoofed flood's alert names only the target: match on it alone.
	if !a.Src.IsValid() {
		return a.Dst.IsValid() && in(e.Dst, a.Dst)
	}
	if !a.Dst.IsValid() {
		return in(e.Src, a.Src)
	}
	return in(e.Src, a.Src) && in(e.Dst, a.Dst) || in(e.Src, a.Dst) && in(e.Dst, a.Src)
}

// Score compares alerts with the truth. classes maps detector names to
// attack classes (DefaultClasses() when nil); alerts of unmapped detectors
// count only toward false positives.
func Score(alerts []alert.Alert, events []Event, classes map[string]string) Report {
	if classes == nil {
		classes = DefaultClasses()
	}
	r := Report{TotalAlerts: len(alerts)}
	scores := map[string]*ClassScore{}
	get := func(c string) *ClassScore {
		s := scores[c]
		if s == nil {
			s = &ClassScore{Class: c}
			scores[c] = s
		}
		return s
	}
	latencies := map[string][]float64{}
	benignAlerted := map[int]bool{}
	for i := range events {
		e := &events[i]
		if e.Label == Benign {
			r.BenignEvents++
			continue
		}
		s := get(e.Label)
		s.Events++
		var raised time.Time
		for j := range alerts {
			a := &alerts[j]
			if classOf(a, classes) != e.Label || !matches(a, e) {
				continue
			}
			t := a.Raised
			if t.IsZero() {
				t = a.FirstSeen
			}
			if t.Before(e.Start.Add(-Slack)) {
				// Raised before the event began: it was about something
				// else (an earlier run of the same scan) and does not
				// detect this one.
				continue
			}
			if raised.IsZero() || t.Before(raised) {
				raised = t
			}
		}
		if !raised.IsZero() {
			s.Detected++
			latencies[e.Label] = append(latencies[e.Label], max(raised.Sub(e.Start).Seconds(), 0))
		}
	}
	for j := range alerts {
		a := &alerts[j]
		class := classOf(a, classes)
		if class != "" {
			get(class).Alerts++
		}
		// An alert that matches an attack of its own class is that attack's;
		// only the others count against the benign events they touch.
		correct, covered := false, false
		for i := range events {
			e := &events[i]
			if e.Label != Benign && matches(a, e) {
				covered = true
				correct = correct || e.Label == class
			}
		}
		onBenign := false
		if !correct {
			for i := range events {
				if e := &events[i]; e.Label == Benign && matches(a, e) {
					covered, onBenign = true, true
					benignAlerted[i] = true
				}
			}
		}
		if correct {
			get(class).Correct++
		}
		switch {
		case correct:
		case onBenign:
			r.AlertsOnBenign++
			if a.Severity >= alert.High {
				r.HighOnBenign++
			}
		case !covered:
			r.AlertsOnUncovered++
		}
	}
	r.BenignAlerted = len(benignAlerted)
	if r.BenignEvents > 0 {
		r.FalsePositiveR = float64(r.BenignAlerted) / float64(r.BenignEvents)
	}
	for _, c := range slices.Sorted(maps.Keys(scores)) {
		s := scores[c]
		if s.Events > 0 {
			s.Recall = float64(s.Detected) / float64(s.Events)
		}
		if s.Alerts > 0 {
			s.Precision = float64(s.Correct) / float64(s.Alerts)
		}
		if l := latencies[c]; len(l) > 0 {
			sort.Float64s(l)
			s.LatencyMedianS, s.LatencyMaxS = l[len(l)/2], l[len(l)-1]
		}
		r.Classes = append(r.Classes, *s)
	}
	return r
}
