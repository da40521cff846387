package detect

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/connsim"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// TestTrafficGolden pins the alerts (titles, scores, evidence) of the
// beacon, long-connection and exfiltration detectors on a generated day:
// two beacons, a keep-alive page, NTP, browsing, an upload and a session
// left open. A change in scoring shows up here as a diff to review.
func TestTrafficGolden(t *testing.T) {
	g := connsim.New(42)
	day := 24 * time.Hour
	var cs []model.Conn
	cs = append(cs, g.Beacon(connsim.Beacon{Src: connsim.Addr("10.8.0.1"), Dst: connsim.Addr("198.51.100.1"), Port: 443,
		Interval: 10 * time.Minute, Jitter: 0.2, Size: 500, SizeJitter: 0.1, Reply: 100, From: connsim.Start, Span: day})...)
	cs = append(cs, g.Beacon(connsim.Beacon{Src: connsim.Addr("10.8.0.2"), Dst: connsim.Addr("198.51.100.2"), Port: 8080,
		Interval: time.Hour, Size: 300, Reply: 100, From: connsim.Start, Span: day})...)
	user := connsim.Addr("10.8.0.50")
	cs = append(cs, g.KeepAlive(user, connsim.Addr("203.0.113.10"), 2*time.Minute, connsim.Start, 1)...)
	cs = append(cs, g.NTP(user, connsim.Addr("203.0.113.123"), connsim.Start, day)...)
	cs = append(cs, g.Browsing(user, connsim.Addr("203.0.113.20"), connsim.Start, 1)...)
	cs = append(cs, g.Conn(connsim.Start.Add(13*time.Hour), connsim.Addr("10.8.0.9"), connsim.Addr("198.51.100.9"), 443, model.ProtoTCP, 25*time.Minute, 250_000_000, 80_000))
	open := g.Conn(connsim.Start.Add(16*time.Hour), connsim.Addr("10.8.0.7"), connsim.Addr("198.51.100.7"), 22, model.ProtoTCP, 8*time.Hour, 1_000_000, 4_000_000)
	open.End, open.ConnState, open.History = model.EndEOF, model.ConnS1, "ShADad"
	cs = append(cs, open)
	cfg := defaults(t)
	as := runTraffic(t, []Detector{NewBeacon(cfg), NewLongConnectionTraffic(cfg), NewExfiltration(cfg)}, cs)
	var b bytes.Buffer
	for _, a := range as {
		ev, err := json.Marshal(a.Evidence)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %s %s\n  %s\n", a.Detector, a.Severity, a.Title, ev)
	}
	path := filepath.Join("testdata", "traffic.golden")
	if *update {
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(b.Bytes(), want) {
		t.Errorf("alerts differ from %s (run with -update to accept):\n%s", path, b.String())
	}
}

// TestParallelMatchesEngine: the same records through Parallel (two
// groups) and through one Engine give the same alerts, sources included.
func TestParallelMatchesEngine(t *testing.T) {
	g := connsim.New(9)
	cs := g.Mix(simClients, simServers, connsim.Start, 12*time.Hour, 20000)
	cs = append(cs, g.Beacon(connsim.Beacon{Src: connsim.Addr("10.3.0.5"), Dst: connsim.Addr("198.51.100.5"), Port: 443,
		Interval: 5 * time.Minute, Jitter: 0.1, Size: 400, Reply: 100, From: connsim.Start, Span: 12 * time.Hour})...)
	cs = append(cs, g.Conn(connsim.Start.Add(time.Hour), connsim.Addr("10.3.0.6"), connsim.Addr("198.51.100.6"), 443, model.ProtoTCP, 2*time.Hour, 90_000_000, 1000))
	connsim.Sort(cs)
	cfg := defaults(t)
	e := NewEngine(TrafficDetectors(cfg, Deps{}), "a", nil)
	p := NewParallel(TrafficDetectors(cfg, Deps{}), 2, "a", nil, func(err error) { t.Error(err) })
	for i := range cs {
		if i == len(cs)/2 {
			e.SetSource("b")
			p.SetSource("b")
		}
		e.ObserveConn(&cs[i])
		p.ObserveConn(&cs[i])
	}
	e.Flush(time.Time{})
	p.Flush(time.Time{})
	key := func(as []alert.Alert) []string {
		var out []string
		for _, a := range as {
			out = append(out, fmt.Sprintf("%s %s %d %s", a.ID, a.Source, a.Count, a.Title))
		}
		slices.Sort(out)
		return out
	}
	want, got := key(e.Alerts()), key(p.Alerts())
	if len(want) < 3 || !slices.Equal(want, got) {
		t.Errorf("engine:\n%s\nparallel:\n%s", strings.Join(want, "\n"), strings.Join(got, "\n"))
	}
}
