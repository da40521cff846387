package alert

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

var t0 = time.Date(2026, 11, 23, 2, 0, 0, 123456000, time.UTC)

func TestJSONContract(t *testing.T) {
	a := Alert{
		Detector: "scan", Entity: "scan 10.0.0.66 10.0.0.5", Title: "vertical SYN scan of 10.0.0.5",
		Severity: Critical, Confidence: 0.98, Attack: []string{"T1046"},
		Src: netip.MustParseAddr("10.0.0.66"), Dst: netip.MustParseAddr("10.0.0.5"), Proto: model.ProtoTCP,
		Process:   &ProcessRef{PID: 123, Name: "ncat", Exe: "/usr/bin/ncat", User: "root"},
		Evidence:  map[string]any{"probe": "syn", "ports": 1000},
		FirstSeen: t0, LastSeen: t0.Add(time.Second), Count: 1000, Source: "pcap:lab.pcap",
	}
	a.ID = MakeID(a.Detector, a.Entity)
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{
		"detector": "scan", "severity": "critical", "src": "10.0.0.66", "dst": "10.0.0.5", "proto": "tcp",
		"dst_port": nil, "first_seen": "2026-11-23T02:00:00.123456Z", "count": float64(1000), "source": "pcap:lab.pcap",
	} {
		if got, ok := m[k]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, want)
		}
	}
	if _, ok := m["src_port"]; ok {
		t.Error("src_port should be omitted when not applicable")
	}
	if !strings.Contains(string(b), `"attack":["T1046"]`) || !strings.Contains(string(b), `"process":{"pid":123,"name":"ncat"`) {
		t.Errorf("json: %s", b)
	}
	var back Alert
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a, back, cmp.Comparer(func(x, y netip.Addr) bool { return x == y }),
		cmp.Comparer(func(x, y map[string]any) bool { return len(x) == len(y) })); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestSeverity(t *testing.T) {
	for _, s := range []string{"low", "MEDIUM", "High", "critical"} {
		if _, err := ParseSeverity(s); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	if _, err := ParseSeverity("dire"); err == nil {
		t.Error("dire accepted")
	}
	if _, err := json.Marshal(Alert{}); err == nil {
		t.Error("zero severity marshalled")
	}
	if !(Low < Medium && Medium < High && High < Critical) {
		t.Error("severities out of order")
	}
}

func TestAggregator(t *testing.T) {
	g := NewAggregator()
	base := Alert{Detector: "x", Entity: "e1", Severity: Medium, Confidence: 0.5, FirstSeen: t0.Add(time.Minute)}
	g.Add(base)
	later := base
	later.FirstSeen, later.Severity, later.Confidence = t0.Add(2*time.Minute), High, 0.9
	later.Evidence = map[string]any{"n": 2}
	g.Add(later)
	earlier := base
	earlier.FirstSeen = t0
	g.Add(earlier)
	g.Add(Alert{Detector: "x", Entity: "e2", Severity: Low, FirstSeen: t0})
	got := g.Alerts()
	if g.Len() != 2 || len(got) != 2 {
		t.Fatalf("len = %d", len(got))
	}
	a := got[0]
	if a.Count != 3 || a.Severity != High || a.Confidence != 0.9 || !a.FirstSeen.Equal(t0) ||
		!a.LastSeen.Equal(t0.Add(2*time.Minute)) || a.Evidence["n"] != 2 || a.ID != MakeID("x", "e1") {
		t.Errorf("merged = %+v", a)
	}
	if got[1].Entity != "e2" {
		t.Errorf("order: %+v", got)
	}
}

func TestValidate(t *testing.T) {
	ok := Alert{Detector: "d", Entity: "e", Severity: Low, FirstSeen: t0}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Alert){
		"no detector": func(a *Alert) { a.Detector = "" },
		"no entity":   func(a *Alert) { a.Entity = "" },
		"severity":    func(a *Alert) { a.Severity = 9 },
		"confidence":  func(a *Alert) { a.Confidence = 1.5 },
		"time":        func(a *Alert) { a.FirstSeen = time.Time{} },
	} {
		a := ok
		mut(&a)
		if a.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestLatestAggregator(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 2, 0, 0, 0, time.UTC)
	g := NewLatestAggregator()
	g.Add(Alert{Detector: "fleet-scan", Entity: "x", Title: "3 hosts", Severity: High, Confidence: 0.9,
		FirstSeen: t0, LastSeen: t0.Add(time.Minute), Raised: t0.Add(time.Minute)})
	// A grown version built from older records: it still wins.
	g.Add(Alert{Detector: "fleet-scan", Entity: "x", Title: "5 hosts", Severity: Medium, Confidence: 0.7,
		FirstSeen: t0.Add(-time.Minute), LastSeen: t0.Add(30 * time.Second), Raised: t0.Add(2 * time.Minute)})
	as := g.Alerts()
	if len(as) != 1 {
		t.Fatalf("%d alerts", len(as))
	}
	a := as[0]
	if a.Title != "5 hosts" || a.Count != 2 || a.Severity != High || !a.FirstSeen.Equal(t0.Add(-time.Minute)) ||
		!a.Raised.Equal(t0.Add(time.Minute)) || !a.LastSeen.Equal(t0.Add(30*time.Second)) {
		t.Errorf("merged %+v", a)
	}
}
