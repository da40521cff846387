// Package alert is what detectors emit: the Alert record of DESIGN.md's
// JSON contract, its severity scale, and aggregation of repeated findings.
package alert

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// Severity is an alert's risk level. The zero value is invalid so that a
// detector that forgets to set one is caught by Validate.
type Severity uint8

// Risk levels, ordered.
const (
	Low Severity = iota + 1
	Medium
	High
	Critical
)

var severityNames = [...]string{"", "low", "medium", "high", "critical"}

// String returns the lower-case name used in JSON and tables.
func (s Severity) String() string {
	if int(s) < len(severityNames) && s > 0 {
		return severityNames[s]
	}
	return fmt.Sprintf("severity(%d)", uint8(s))
}

// ParseSeverity accepts low, medium, high and critical, case-insensitive.
func ParseSeverity(s string) (Severity, error) {
	for i, n := range severityNames {
		if i > 0 && strings.EqualFold(s, n) {
			return Severity(i), nil
		}
	}
	return 0, fmt.Errorf("severity %q: want low, medium, high or critical", s)
}

// MarshalText implements encoding.TextMarshaler.
func (s Severity) MarshalText() ([]byte, error) {
	if s == 0 || int(s) >= len(severityNames) {
		return nil, fmt.Errorf("invalid severity %d", uint8(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Severity) UnmarshalText(b []byte) error {
	v, err := ParseSeverity(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// Alert is one finding. Fields that do not apply are zero and omitted from
// JSON (addresses, ports, process) or null (dst_port for a port scan).
type Alert struct {
	ID         string         // stable hash of Detector and Entity; the same finding always has the same id
	Detector   string         // detector name, one of DESIGN.md's list
	Entity     string         // what the finding is about, e.g. "listener tcp 0.0.0.0:4444"; keys aggregation
	Title      string         // one line for a human
	Severity   Severity       // risk level
	Confidence float64        // 0–1: how sure the detector is that this is what the title says
	Attack     []string       // MITRE ATT&CK technique ids, e.g. T1046
	Src        netip.Addr     // source (originator) address; invalid when not applicable
	Dst        netip.Addr     // destination (responder) address; invalid when not applicable
	SrcPort    uint16         // valid only when HasSrcPort
	DstPort    uint16         // valid only when HasDstPort
	HasSrcPort bool           //
	HasDstPort bool           //
	Proto      model.Proto    // 0 when not applicable
	Process    *ProcessRef    // owning process on a host; nil for traffic sources
	Evidence   map[string]any // the numbers that crossed which threshold
	FirstSeen  time.Time      // event time of the first observation
	LastSeen   time.Time      // event time of the latest observation
	Raised     time.Time      // event time the finding was first raised; detection latency is Raised minus the attack's start
	Count      int            // observations aggregated into this alert (≥ 1)
	Source     string         // where it was seen: host:NAME, file:PATH, iface:NAME
}

// ProcessRef identifies the process an alert is about.
type ProcessRef struct {
	PID     int32    `json:"pid"`
	PPID    int32    `json:"ppid,omitempty"`
	Name    string   `json:"name"`
	Exe     string   `json:"exe,omitempty"`
	Cmdline []string `json:"cmdline,omitempty"`
	User    string   `json:"user,omitempty"`
}

// RefOf builds a ProcessRef from a host process.
func RefOf(p *model.Process) *ProcessRef {
	if p == nil {
		return nil
	}
	return &ProcessRef{PID: p.PID, PPID: p.PPID, Name: p.Name, Exe: p.Exe, Cmdline: p.Cmdline, User: p.User}
}

// MakeID returns the stable id of a detector's finding about an entity.
func MakeID(detector, entity string) string {
	h := sha256.Sum256([]byte(detector + "\x00" + entity))
	return hex.EncodeToString(h[:8])
}

// Validate reports a detector bug: a missing name, entity, severity or time.
func (a *Alert) Validate() error {
	switch {
	case a.Detector == "":
		return fmt.Errorf("alert %q: no detector", a.Title)
	case a.Entity == "":
		return fmt.Errorf("%s alert %q: no entity", a.Detector, a.Title)
	case a.Severity < Low || a.Severity > Critical:
		return fmt.Errorf("%s alert %q: invalid severity %d", a.Detector, a.Title, a.Severity)
	case a.Confidence < 0 || a.Confidence > 1:
		return fmt.Errorf("%s alert %q: confidence %v outside 0–1", a.Detector, a.Title, a.Confidence)
	case a.FirstSeen.IsZero():
		return fmt.Errorf("%s alert %q: no first_seen", a.Detector, a.Title)
	}
	return nil
}

type jsonAlert struct {
	ID         string         `json:"id"`
	Detector   string         `json:"detector"`
	Title      string         `json:"title"`
	Severity   Severity       `json:"severity"`
	Confidence float64        `json:"confidence"`
	Attack     []string       `json:"attack"`
	Entity     string         `json:"entity"`
	Src        *netip.Addr    `json:"src,omitempty"`
	Dst        *netip.Addr    `json:"dst,omitempty"`
	SrcPort    *uint16        `json:"src_port,omitempty"`
	DstPort    *uint16        `json:"dst_port"`
	Proto      string         `json:"proto,omitempty"`
	Process    *ProcessRef    `json:"process,omitempty"`
	Evidence   map[string]any `json:"evidence"`
	FirstSeen  time.Time      `json:"first_seen"`
	LastSeen   time.Time      `json:"last_seen"`
	Raised     *time.Time     `json:"raised,omitempty"`
	Count      int            `json:"count"`
	Source     string         `json:"source,omitempty"`
}

// MarshalJSON writes the DESIGN.md alert contract.
func (a Alert) MarshalJSON() ([]byte, error) {
	j := jsonAlert{
		ID: a.ID, Detector: a.Detector, Title: a.Title, Severity: a.Severity,
		Confidence: a.Confidence, Attack: a.Attack, Entity: a.Entity, Process: a.Process,
		Evidence: a.Evidence, FirstSeen: a.FirstSeen.UTC(), LastSeen: a.LastSeen.UTC(),
		Count: a.Count, Source: a.Source,
	}
	if !a.Raised.IsZero() {
		r := a.Raised.UTC()
		j.Raised = &r
	}
	if j.Attack == nil {
		j.Attack = []string{}
	}
	if j.Evidence == nil {
		j.Evidence = map[string]any{}
	}
	if a.Src.IsValid() {
		j.Src = &a.Src
	}
	if a.Dst.IsValid() {
		j.Dst = &a.Dst
	}
	if a.HasSrcPort {
		j.SrcPort = &a.SrcPort
	}
	if a.HasDstPort {
		j.DstPort = &a.DstPort
	}
	if a.Proto != 0 {
		j.Proto = a.Proto.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads what MarshalJSON writes (the store and sinks read alerts back).
func (a *Alert) UnmarshalJSON(b []byte) error {
	var j jsonAlert
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*a = Alert{
		ID: j.ID, Detector: j.Detector, Title: j.Title, Severity: j.Severity,
		Confidence: j.Confidence, Attack: j.Attack, Entity: j.Entity, Process: j.Process,
		Evidence: j.Evidence, FirstSeen: j.FirstSeen, LastSeen: j.LastSeen, Count: j.Count, Source: j.Source,
	}
	if j.Raised != nil {
		a.Raised = *j.Raised
	}
	if j.Src != nil {
		a.Src = *j.Src
	}
	if j.Dst != nil {
		a.Dst = *j.Dst
	}
	if j.SrcPort != nil {
		a.SrcPort, a.HasSrcPort = *j.SrcPort, true
	}
	if j.DstPort != nil {
		a.DstPort, a.HasDstPort = *j.DstPort, true
	}
	if j.Proto != "" {
		p, ok := model.ParseProto(j.Proto)
		if !ok {
			return fmt.Errorf("alert %s: unknown proto %q", j.ID, j.Proto)
		}
		a.Proto = p
	}
	return nil
}

// Aggregator merges repeated findings on the same entity into one alert
// with a rising count, keeping the highest severity and confidence seen and
// the latest evidence. It is bounded by the number of distinct findings,
// which detectors bound in turn.
type Aggregator struct {
	byID  map[string]*Alert
	order []string
	// latestWins keeps the version added last (see NewLatestAggregator).
	latestWins bool
}

// NewAggregator returns an empty aggregator.
func NewAggregator() *Aggregator { return &Aggregator{byID: map[string]*Alert{}} }

// NewLatestAggregator returns an aggregator in which the version of a
// finding added last gives its title, evidence, last seen and confidence,
// whatever its event times, and the earliest raise is kept: for detectors
// that re-emit a grown finding from records older than those that raised
// it (the fleet's, fed from replayed streams).
func NewLatestAggregator() *Aggregator {
	return &Aggregator{byID: map[string]*Alert{}, latestWins: true}
}

// Add merges a into the aggregate. It fills in ID, Count and LastSeen when a
// detector left them empty.
func (g *Aggregator) Add(a Alert) {
	if a.ID == "" {
		a.ID = MakeID(a.Detector, a.Entity)
	}
	if a.Count == 0 {
		a.Count = 1
	}
	if a.LastSeen.IsZero() {
		a.LastSeen = a.FirstSeen
	}
	if a.Raised.IsZero() {
		a.Raised = a.LastSeen
	}
	cur, ok := g.byID[a.ID]
	if !ok {
		c := a
		g.byID[a.ID] = &c
		g.order = append(g.order, a.ID)
		return
	}
	cur.Count += a.Count
	if a.FirstSeen.Before(cur.FirstSeen) {
		cur.FirstSeen = a.FirstSeen
	}
	if g.latestWins {
		raised, sev := a.Raised, max(cur.Severity, a.Severity)
		if cur.Raised.Before(raised) {
			raised = cur.Raised
		}
		first, count := cur.FirstSeen, cur.Count
		*cur = a
		cur.Raised, cur.Severity, cur.FirstSeen, cur.Count = raised, sev, first, count
		return
	}
	if a.LastSeen.After(cur.LastSeen) {
		cur.LastSeen = a.LastSeen
		cur.Evidence = a.Evidence
		cur.Title = a.Title
	}
	if a.Severity > cur.Severity {
		cur.Severity = a.Severity
	}
	if a.Confidence > cur.Confidence {
		cur.Confidence = a.Confidence
	}
}

// Len is the number of distinct findings.
func (g *Aggregator) Len() int { return len(g.order) }

// Alerts returns the findings, most severe first, then by first seen, then
// in the order they were first emitted (detectors emit deterministically).
func (g *Aggregator) Alerts() []Alert {
	out := make([]Alert, 0, len(g.order))
	for _, id := range g.order {
		out = append(out, *g.byID[id])
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Severity != out[j].Severity {
			return out[i].Severity > out[j].Severity
		}
		return out[i].FirstSeen.Before(out[j].FirstSeen)
	})
	return out
}
