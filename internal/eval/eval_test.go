package eval

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
)

const truthCSV = `event,start,end,src,dst,label
scan1,1700000000,1700000010,10.0.0.66,10.0.0.5,portscan
flood1,1700000100.5,1700000110,,10.0.0.5,synflood
web1,1700000000,1700000200,10.0.0.0/24,10.0.0.80,benign
web2,1700000300,1700000400,10.0.0.7,10.0.0.81,benign
scan2,1700000500,1700000510,10.0.0.67,10.0.0.6,portscan
`

func TestReadTruth(t *testing.T) {
	evs, errs := ReadTruth(strings.NewReader(truthCSV), "truth.csv")
	if len(errs) != 0 || len(evs) != 5 {
		t.Fatalf("events %d, errors %v", len(evs), errs)
	}
	if evs[1].Src.IsValid() || evs[1].Dst != netip.MustParsePrefix("10.0.0.5/32") ||
		!evs[1].Start.Equal(time.Unix(1700000100, 5e8)) || evs[2].Src != netip.MustParsePrefix("10.0.0.0/24") {
		t.Errorf("events = %+v", evs[:3])
	}
	bad := "event,start,end,src,dst,label\n" +
		"a,1,2,10.0.0.1,10.0.0.2,portscan\n" +
		"b,x,2,10.0.0.1,10.0.0.2,portscan\n" +
		"c,5,2,10.0.0.1,10.0.0.2,portscan\n" +
		"d,1,2,10.0.0.300,10.0.0.2,portscan\n" +
		"e,1,2,10.0.0.1,10.0.0.2\n" +
		"f,1,2,10.0.0.1,10.0.0.2,\n" +
		"g,1,2,10.0.0.1,10.0.0.2,benign\n"
	evs, errs = ReadTruth(strings.NewReader(bad), "t.csv")
	if len(evs) != 2 {
		t.Errorf("good rows used: %d", len(evs))
	}
	want := []string{`t.csv:3: field "start"`, `t.csv:4: field "end"`, `t.csv:5: field "src"`, `t.csv:6: 5 fields`, `t.csv:7: field "label"`}
	if len(errs) != len(want) {
		t.Fatalf("errors = %v", errs)
	}
	for i, w := range want {
		if !strings.HasPrefix(errs[i].Error(), w) {
			t.Errorf("error %d = %q, want prefix %q", i, errs[i], w)
		}
	}
	if _, errs := ReadTruth(strings.NewReader("id,when\n"), "h.csv"); len(errs) != 1 || !strings.Contains(errs[0].Error(), "h.csv:1: header") {
		t.Errorf("bad header: %v", errs)
	}
}

func at(s float64) time.Time { return time.Unix(0, int64(s*1e9)).UTC() }

func TestScore(t *testing.T) {
	evs, _ := ReadTruth(strings.NewReader(truthCSV), "truth.csv")
	alerts := []alert.Alert{
		{Detector: "scan", Severity: alert.Critical, Src: netip.MustParseAddr("10.0.0.66"), Dst: netip.MustParseAddr("10.0.0.5"),
			FirstSeen: at(1700000000.1), LastSeen: at(1700000003), Raised: at(1700000000.4)},
		{Detector: "flood", Severity: alert.High, Dst: netip.MustParseAddr("10.0.0.5"),
			FirstSeen: at(1700000100.6), LastSeen: at(1700000109), Raised: at(1700000101.5)},
		// A low alert on benign web traffic, and a high one.
		{Detector: "egress", Severity: alert.Low, Src: netip.MustParseAddr("10.0.0.9"), Dst: netip.MustParseAddr("10.0.0.80"),
			FirstSeen: at(1700000050), LastSeen: at(1700000060)},
		{Detector: "scan", Severity: alert.High, Src: netip.MustParseAddr("10.0.0.7"), Dst: netip.MustParseAddr("10.0.0.81"),
			FirstSeen: at(1700000350), LastSeen: at(1700000360)},
		// An alert nothing in the truth covers.
		{Detector: "scan", Severity: alert.Medium, Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("192.0.2.2"),
			FirstSeen: at(1700000900), LastSeen: at(1700000901)},
	}
	r := Score(alerts, evs, nil)
	if len(r.Classes) != 2 {
		t.Fatalf("classes = %+v", r.Classes)
	}
	ps, sf := r.Classes[0], r.Classes[1]
	if ps.Class != "portscan" || ps.Events != 2 || ps.Detected != 1 || ps.Recall != 0.5 || ps.Alerts != 3 || ps.Correct != 1 ||
		ps.LatencyMedianS < 0.39 || ps.LatencyMedianS > 0.41 {
		t.Errorf("portscan = %+v", ps)
	}
	if sf.Class != "synflood" || sf.Recall != 1 || sf.Precision != 1 || sf.LatencyMaxS < 0.99 || sf.LatencyMaxS > 1.01 {
		t.Errorf("synflood = %+v", sf)
	}
	if r.BenignEvents != 2 || r.BenignAlerted != 2 || r.FalsePositiveR != 1 || r.AlertsOnBenign != 2 || r.HighOnBenign != 1 ||
		r.AlertsOnUncovered != 1 || r.TotalAlerts != 5 {
		t.Errorf("report = %+v", r)
	}
}

func FuzzReadTruth(f *testing.F) {
	f.Add([]byte(truthCSV))
	f.Add([]byte("event,start,end,src,dst,label\nx,1e300,NaN,::1,::/0,benign\n\"a\"b,1,2,,,x\n"))
	f.Add([]byte("\ufeffevent,start,end,src,dst,label\r\na,0,0,*,*,beacon\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		evs, _ := ReadTruth(strings.NewReader(string(b)), "fuzz.csv")
		for _, e := range evs {
			if e.End.Before(e.Start) || e.Label == "" {
				t.Fatalf("accepted a bad event: %+v", e)
			}
		}
	})
}
