package detect

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/connsim"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// runTraffic feeds records through the given detectors and returns the
// alerts after the final flush.
func runTraffic(t *testing.T, ds []Detector, cs []model.Conn) []alert.Alert {
	t.Helper()
	connsim.Sort(cs)
	e := NewEngine(ds, "conn.log:test", nil)
	for i := range cs {
		if errs := e.ObserveConn(&cs[i]); len(errs) > 0 {
			t.Fatal(errs)
		}
	}
	e.Flush(time.Time{})
	if e.Invalid > 0 {
		t.Fatalf("%d invalid alerts", e.Invalid)
	}
	return e.Alerts()
}

// TestBeaconRanking plants beacons with 0%, 10% and 30% jitter, constant
// and varying sizes, beside ordinary periodic traffic (a web page polling
// in working hours, NTP) and browsing, over a day: every beacon must be
// found, and every one must rank above everything ordinary.
func TestBeaconRanking(t *testing.T) {
	g := connsim.New(1)
	day := 24 * time.Hour
	var cs []model.Conn
	type planted struct {
		src    string
		jitter float64
		sizeJ  float64
	}
	var beacons []planted
	i := 0
	for _, j := range []float64{0, 0.1, 0.3} {
		for _, sj := range []float64{0, 0.5} {
			i++
			p := planted{fmt.Sprintf("10.1.0.%d", i), j, sj}
			beacons = append(beacons, p)
			cs = append(cs, g.Beacon(connsim.Beacon{
				Src: connsim.Addr(p.src), Dst: connsim.Addr(fmt.Sprintf("198.51.100.%d", i)), Port: 443,
				Interval: time.Minute, Jitter: j, Size: 600, SizeJitter: sj, Reply: 300,
				From: connsim.Start, Span: day, FailEvery: 17,
			})...)
		}
	}
	user := connsim.Addr("10.1.0.50")
	cs = append(cs, g.KeepAlive(user, connsim.Addr("203.0.113.10"), 30*time.Second, connsim.Start, 1)...)
	cs = append(cs, g.NTP(user, connsim.Addr("203.0.113.123"), connsim.Start, day)...)
	cs = append(cs, g.Browsing(user, connsim.Addr("203.0.113.20"), connsim.Start, 1)...)
	cs = append(cs, g.Browsing(connsim.Addr("10.1.0.51"), connsim.Addr("203.0.113.20"), connsim.Start, 1)...)
	// Failed attempts on a schedule are not check-ins.
	for k := 0; k < 200; k++ {
		cs = append(cs, g.Failed(connsim.Start.Add(time.Duration(k)*time.Minute), connsim.Addr("10.1.0.60"), connsim.Addr("198.51.100.99"), 8443))
	}

	as := runTraffic(t, []Detector{NewBeacon(defaults(t))}, cs)
	score := map[string]float64{} // by source
	worstBeacon, bestOther := 2.0, 0.0
	for _, a := range as {
		s := a.Evidence["score"].(float64)
		t.Logf("%-8s %.3f %s", a.Severity, s, a.Title)
		for _, k := range []string{"time_score", "size_score", "histogram_score", "interval_median_s"} {
			if _, ok := a.Evidence[k]; !ok {
				t.Errorf("%s: evidence lacks %s", a.Entity, k)
			}
		}
		if strings.HasPrefix(a.Src.String(), "10.1.0.") && a.Src.As4()[3] <= 6 {
			score[a.Src.String()] = s
			worstBeacon = min(worstBeacon, s)
		} else {
			bestOther = max(bestOther, s)
			if a.Src.String() == "10.1.0.60" {
				t.Errorf("failed attempts reported as a beacon: %s", a.Title)
			}
		}
	}
	for _, p := range beacons {
		if _, ok := score[p.src]; !ok {
			t.Errorf("beacon from %s (jitter %.0f%%, size jitter %.0f%%) not found", p.src, 100*p.jitter, 100*p.sizeJ)
		}
	}
	if worstBeacon <= bestOther {
		t.Errorf("a beacon scored %.3f, not above the best ordinary periodic traffic %.3f", worstBeacon, bestOther)
	}
	// Ranked output: rank 1 is the best score.
	for _, a := range as {
		if a.Evidence["rank"] == 1 && a.Evidence["score"].(float64) < worstBeacon {
			t.Errorf("rank 1 is not the best beacon: %s", a.Title)
		}
	}
}

// TestBeaconShortAndJittered is the lab's shape: a check-in every second
// ±30% for 30 s inside a minute of other traffic; the histogram spreads
// over the minute (24 bins of 2.5 s).
func TestBeaconShortAndJittered(t *testing.T) {
	g := connsim.New(2)
	cs := g.Beacon(connsim.Beacon{Src: connsim.Addr("10.9.0.11"), Dst: connsim.Addr("10.9.0.2"), Port: 8080,
		Interval: time.Second, Jitter: 0.3, Size: 120, Reply: 40, From: connsim.Start.Add(10 * time.Second), Span: 30 * time.Second})
	cs = append(cs, g.Mix([]netip.Addr{connsim.Addr("10.9.0.12")}, []netip.Addr{connsim.Addr("10.9.0.2")}, connsim.Start, time.Minute, 40)...)
	as := runTraffic(t, []Detector{NewBeacon(defaults(t))}, cs)
	if len(as) != 1 || as[0].Src != connsim.Addr("10.9.0.11") || as[0].Dst != connsim.Addr("10.9.0.2") {
		for _, a := range as {
			t.Log(a.Title)
		}
		t.Fatalf("want the one beacon from 10.9.0.11, got %d alerts", len(as))
	}
}

// TestBeaconProxyAndPortRotation: a beacon through a proxy keeps the real
// client; an implant rotating destination ports is found over any port.
func TestBeaconProxyAndPortRotation(t *testing.T) {
	cfg := defaults(t)
	cfg.Detectors.Beacon.Proxies = append(cfg.Detectors.Beacon.Proxies, config.MustPrefix("10.2.0.3/32"))
	g := connsim.New(3)
	var cs []model.Conn
	for k := 0; k < 5; k++ { // five clients use the proxy; one beacons
		cs = append(cs, g.Browsing(connsim.Addr(fmt.Sprintf("10.2.1.%d", k)), connsim.Addr("10.2.0.3"), connsim.Start, 1)...)
	}
	cs = append(cs, g.Beacon(connsim.Beacon{Src: connsim.Addr("10.2.1.9"), Dst: connsim.Addr("10.2.0.3"), Port: 3128,
		Interval: 5 * time.Minute, Jitter: 0.1, Size: 400, Reply: 200, From: connsim.Start, Span: 24 * time.Hour})...)
	rot := g.Beacon(connsim.Beacon{Src: connsim.Addr("10.2.1.20"), Dst: connsim.Addr("198.51.100.7"), Port: 1,
		Interval: 2 * time.Minute, Jitter: 0.1, Size: 300, Reply: 100, From: connsim.Start, Span: 24 * time.Hour})
	for k := range rot {
		rot[k].Resp = netip.AddrPortFrom(rot[k].Resp.Addr(), uint16(20000+g.Rand().IntN(40)))
	}
	cs = append(cs, rot...)
	as := runTraffic(t, []Detector{NewBeacon(cfg)}, cs)
	var proxied, rotating bool
	for _, a := range as {
		t.Logf("%s %s", a.Severity, a.Title)
		if a.Src == connsim.Addr("10.2.1.9") && a.Evidence["via_proxy"] == "10.2.0.3" {
			proxied = true
		}
		if a.Src == connsim.Addr("10.2.1.20") && !a.HasDstPort {
			rotating = true
		}
		if a.Src != connsim.Addr("10.2.1.9") && a.Src != connsim.Addr("10.2.1.20") {
			t.Errorf("unexpected beacon: %s", a.Title)
		}
	}
	if !proxied || !rotating {
		t.Errorf("proxied client found %v, port-rotating implant found %v", proxied, rotating)
	}
}
