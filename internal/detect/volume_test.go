package detect

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/baseline"
	"github.com/tcpsentry/tcpsentry/internal/connsim"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

var (
	simClients = []netip.Addr{connsim.Addr("10.3.0.1"), connsim.Addr("10.3.0.2"), connsim.Addr("10.3.0.3"), connsim.Addr("10.3.0.4")}
	simServers = []netip.Addr{connsim.Addr("203.0.113.1"), connsim.Addr("203.0.113.2"), connsim.Addr("10.3.1.1")}
)

func TestLongConnectionTraffic(t *testing.T) {
	g := connsim.New(4)
	cs := g.Mix(simClients, simServers, connsim.Start, 6*time.Hour, 3000)
	// A session still open at the end of the input, 5 hours old.
	open := g.Conn(connsim.Start.Add(time.Hour), connsim.Addr("10.3.0.9"), connsim.Addr("198.51.100.40"), 8443, model.ProtoTCP, 5*time.Hour, 200000, 300000)
	open.End, open.ConnState, open.History = model.EndEOF, model.ConnS1, "ShADad"
	// A channel re-opened every time it drops: 20-minute connections back to back.
	for k := 0; k < 18; k++ {
		cs = append(cs, g.Conn(connsim.Start.Add(time.Duration(k)*20*time.Minute), connsim.Addr("10.3.0.8"), connsim.Addr("198.51.100.41"), 443, model.ProtoTCP, 20*time.Minute-5*time.Second, 9000, 9000))
	}
	cs = append(cs, open)
	as := runTraffic(t, []Detector{NewLongConnectionTraffic(defaults(t))}, cs)
	var sawOpen, sawPair bool
	for _, a := range as {
		t.Logf("%s %s", a.Severity, a.Title)
		switch {
		case a.Src == connsim.Addr("10.3.0.9") && strings.Contains(a.Title, "still open after 5h") && a.Severity == alert.Medium && a.Evidence["open"] == true:
			sawOpen = true
		case a.Src == connsim.Addr("10.3.0.8") && a.Evidence["kind"] == "pair":
			sawPair = true
		default:
			t.Errorf("unexpected: %s", a.Title)
		}
	}
	if !sawOpen || !sawPair {
		t.Errorf("open session found %v, persistent pair found %v", sawOpen, sawPair)
	}
}

func TestExfiltration(t *testing.T) {
	g := connsim.New(5)
	cs := g.Mix(simClients, simServers, connsim.Start, 6*time.Hour, 5000)
	// A big download is not exfiltration.
	cs = append(cs, g.Conn(connsim.Start.Add(time.Hour), simClients[0], simServers[0], 443, model.ProtoTCP, 10*time.Minute, 20000, 900_000_000))
	// 200 MB uploaded to an external host in one connection.
	cs = append(cs, g.Conn(connsim.Start.Add(5*time.Hour), connsim.Addr("10.3.0.7"), connsim.Addr("198.51.100.50"), 443, model.ProtoTCP, 20*time.Minute, 200_000_000, 90_000))
	// The same source's ordinary hours before it, for the spike.
	for h := 0; h < 5; h++ {
		cs = append(cs, g.Conn(connsim.Start.Add(time.Duration(h)*time.Hour), connsim.Addr("10.3.0.7"), simServers[1], 443, model.ProtoTCP, time.Minute, 2_000_000, 5_000_000))
	}
	as := runTraffic(t, []Detector{NewExfiltration(defaults(t))}, cs)
	var pair, spike bool
	for _, a := range as {
		t.Logf("%s %s %v", a.Severity, a.Title, a.Evidence)
		switch {
		case a.Src == connsim.Addr("10.3.0.7") && a.Evidence["kind"] == "pair" && a.Severity == alert.High:
			pair = true
		case a.Src == connsim.Addr("10.3.0.7") && a.Evidence["kind"] == "spike":
			spike = true
		default:
			t.Errorf("unexpected: %s", a.Title)
		}
	}
	if !pair || !spike {
		t.Errorf("200 MB upload found %v, as a spike %v", pair, spike)
	}
}

// trainModel learns a traffic model from ordinary generated traffic.
func trainModel(t *testing.T, seed uint64, n int) *baseline.TrafficModel {
	t.Helper()
	cfg := defaults(t)
	g := connsim.New(seed)
	l := baseline.NewTrafficLearner(cfg.Detectors.Anomaly.MaxGroups)
	for i := 0; i < n; i++ {
		c := g.MixOne(simClients, simServers, connsim.Start.Add(time.Duration(i)*time.Second))
		l.Observe(&c, established(&c))
	}
	m, err := l.Model([]string{"test"}, cfg.Detectors.Anomaly.MinSamples, connsim.Start)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Check(); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestAnomalyAndPacketSize trains on ordinary traffic, then scores fresh
// ordinary traffic with planted oddities: only the planted ones may be
// reported, each with the features that drove its score.
func TestAnomalyAndPacketSize(t *testing.T) {
	m := trainModel(t, 6, 50000)
	g := connsim.New(7)
	cs := g.Mix(simClients, simServers, connsim.Start.Add(24*time.Hour), 12*time.Hour, 50000)
	// DNS tunnel: a long UDP/53 "query" stream with large packets.
	tunnel := g.Conn(connsim.Start.Add(30*time.Hour), connsim.Addr("10.3.0.66"), simServers[2], 53, model.ProtoUDP, 20*time.Minute, 4_000_000, 3_000_000)
	// Planted anomaly on a common port: a 2-hour HTTP connection that
	// uploads 80 MB and gets almost nothing back.
	odd := g.Conn(connsim.Start.Add(31*time.Hour), connsim.Addr("10.3.0.67"), simServers[0], 80, model.ProtoTCP, 2*time.Hour, 80_000_000, 3000)
	cs = append(cs, tunnel, odd)

	cfg := defaults(t)
	as := runTraffic(t, []Detector{NewAnomaly(cfg, m), NewPacketSize(cfg, m)}, cs)
	found := map[string]bool{}
	for _, a := range as {
		t.Logf("%s %s %s", a.Detector, a.Severity, a.Title)
		key := fmt.Sprintf("%s %v", a.Detector, a.Src)
		switch key {
		case "anomaly 10.3.0.66", "anomaly 10.3.0.67", "packet-size 10.3.0.66", "packet-size 10.3.0.67":
			found[key] = true
		default:
			t.Errorf("alert on ordinary traffic: %s %s", a.Detector, a.Title)
		}
		if a.Detector == "anomaly" {
			fs, ok := a.Evidence["features"].([]featureDev)
			if !ok || len(fs) < 2 {
				t.Errorf("anomaly without its explanation: %v", a.Evidence)
			}
		}
	}
	for _, k := range []string{"anomaly 10.3.0.66", "anomaly 10.3.0.67", "packet-size 10.3.0.66"} {
		if !found[k] {
			t.Errorf("%s not found", k)
		}
	}
	// Without a model both stay quiet and say so.
	e := NewEngine([]Detector{NewAnomaly(cfg, nil), NewPacketSize(cfg, nil)}, "x", nil)
	e.ObserveConn(&odd)
	e.Flush(time.Time{})
	if len(e.Alerts()) != 0 || len(e.Notes()) != 2 {
		t.Errorf("without a model: alerts %v, notes %q", e.Alerts(), e.Notes())
	}
}
