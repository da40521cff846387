package main

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/capture"
	"github.com/tcpsentry/tcpsentry/internal/connsim"
	"github.com/tcpsentry/tcpsentry/internal/model"
	"github.com/tcpsentry/tcpsentry/internal/zeeklog"
)

func writeConnLog(t *testing.T, dir, name string, cs []model.Conn) string {
	t.Helper()
	connsim.Sort(cs)
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := zeeklog.NewTSVWriter(f)
	for i := range cs {
		if err := w.Write(&cs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAnalyzeTrafficDetectors runs analyze over a generated day of
// conn.log: beacons among ordinary periodic traffic, a 200 MB upload, and a
// session still open in an open_conn.log.
func TestAnalyzeTrafficDetectors(t *testing.T) {
	dir := t.TempDir()
	g := connsim.New(11)
	day := 24 * time.Hour
	var cs []model.Conn
	for i, j := range []float64{0, 0.1, 0.3} {
		cs = append(cs, g.Beacon(connsim.Beacon{Src: connsim.Addr(fmt.Sprintf("10.5.0.%d", i+1)), Dst: connsim.Addr(fmt.Sprintf("198.51.100.%d", i+1)),
			Port: 443, Interval: 5 * time.Minute, Jitter: j, Size: 700, SizeJitter: 0.3, Reply: 200, From: connsim.Start, Span: day})...)
	}
	user := connsim.Addr("10.5.0.50")
	cs = append(cs, g.KeepAlive(user, connsim.Addr("203.0.113.10"), time.Minute, connsim.Start, 1)...)
	cs = append(cs, g.NTP(user, connsim.Addr("203.0.113.123"), connsim.Start, day)...)
	cs = append(cs, g.Browsing(user, connsim.Addr("203.0.113.20"), connsim.Start, 1)...)
	cs = append(cs, g.Conn(connsim.Start.Add(20*time.Hour), connsim.Addr("10.5.0.9"), connsim.Addr("198.51.100.77"), 443, model.ProtoTCP, 30*time.Minute, 200_000_000, 120_000))
	connLog := writeConnLog(t, dir, "conn.log", cs)
	open := g.Conn(connsim.Start.Add(18*time.Hour), connsim.Addr("10.5.0.8"), connsim.Addr("198.51.100.88"), 22, model.ProtoTCP, 6*time.Hour, 3_000_000, 9_000_000)
	open.ConnState, open.History = model.ConnS1, "ShADad"
	openLog := writeConnLog(t, dir, "open_conn.log", []model.Conn{open})

	out, stderr, code := run(t, "analyze", "--json", "--no-store", connLog, openLog)
	if code != 1 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "anomaly: no learned traffic model") {
		t.Errorf("no word about the missing model: %q", stderr)
	}
	beacons := map[string]bool{}
	var exfil, long bool
	for _, a := range parseAlerts(t, out) {
		t.Logf("%s %s %s", a.Detector, a.Severity, a.Title)
		switch a.Detector {
		case "beacon":
			beacons[a.Src] = true
		case "exfiltration":
			exfil = exfil || a.Src == "10.5.0.9" && a.Severity == "high"
		case "long-connection":
			long = long || a.Src == "10.5.0.8" && a.Evidence["open"] == true && strings.Contains(a.Title, "still open")
		}
	}
	for _, src := range []string{"10.5.0.1", "10.5.0.2", "10.5.0.3"} {
		if !beacons[src] {
			t.Errorf("beacon from %s not found", src)
		}
	}
	if !exfil || !long {
		t.Errorf("200 MB upload found %v; session open in open_conn.log found %v", exfil, long)
	}

	// --top 1: the single best beacon.
	out, _, _ = run(t, "analyze", "--json", "--no-store", "--top", "1", connLog)
	n := 0
	for _, a := range parseAlerts(t, out) {
		if a.Detector == "beacon" {
			n++
			if a.Evidence["rank"] != 1.0 {
				t.Errorf("--top 1 kept rank %v", a.Evidence["rank"])
			}
		}
	}
	if n != 1 {
		t.Errorf("--top 1: %d beacon alerts", n)
	}
}

// TestBaselineLearnTrafficAndAnomaly learns a traffic model from one
// conn.log into a store, then analyzes another with a planted anomaly.
func TestBaselineLearnTrafficAndAnomaly(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "t.db")
	clients := []netip.Addr{connsim.Addr("10.6.0.1"), connsim.Addr("10.6.0.2"), connsim.Addr("10.6.0.3")}
	servers := []netip.Addr{connsim.Addr("203.0.113.1"), connsim.Addr("10.6.1.1")}
	g := connsim.New(12)
	train := writeConnLog(t, dir, "train.log", g.Mix(clients, servers, connsim.Start, 24*time.Hour, 20000))
	out, stderr, code := run(t, "baseline", "learn", "--store", db, train)
	if code != 0 || !strings.Contains(out, "learned traffic model") {
		t.Fatalf("baseline learn: exit %d: %s%s", code, out, stderr)
	}
	if out, stderr, code := run(t, "baseline", "show", "--store", db, "--model", "traffic"); code != 0 || !strings.Contains(out, "udp/53") {
		t.Errorf("baseline show --model: exit %d: %s%s", code, out, stderr)
	}
	test := g.Mix(clients, servers, connsim.Start.Add(24*time.Hour), 6*time.Hour, 5000)
	test = append(test, g.Conn(connsim.Start.Add(27*time.Hour), connsim.Addr("10.6.0.66"), connsim.Addr("10.6.1.1"), 53, model.ProtoUDP, 15*time.Minute, 3_000_000, 2_500_000))
	log := writeConnLog(t, dir, "test.log", test)
	out, stderr, code = run(t, "analyze", "--json", "--store", db, log)
	var found bool
	for _, a := range parseAlerts(t, out) {
		t.Logf("%s %s %s", a.Detector, a.Severity, a.Title)
		switch {
		case a.Src == "10.6.0.66" && (a.Detector == "anomaly" || a.Detector == "packet-size"):
			found = found || a.Detector == "anomaly" && a.Evidence["features"] != nil
		case a.Detector == "anomaly" || a.Detector == "packet-size":
			t.Errorf("alert on ordinary traffic: %s", a.Title)
		}
	}
	if code != 1 || !found {
		t.Errorf("planted anomaly: exit %d, found %v: %s", code, found, stderr)
	}
}

// TestAnalyzeBeaconAndOpenSessionFromCapture is the end-to-end path
// through the flow tracker: a capture with a jittered beacon and a session
// that is still open when the capture ends.
func TestAnalyzeBeaconAndOpenSessionFromCapture(t *testing.T) {
	p := filepath.Join(t.TempDir(), "beacon.pcap")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	w, err := capture.NewWriter(f, capture.LinkRaw)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 23, 2, 0, 0, 0, time.UTC)
	g := connsim.New(13)
	type pkt struct {
		at time.Time
		b  []byte
	}
	var all []pkt
	write := func(at time.Time, pkts [][]byte) {
		for i, b := range pkts {
			all = append(all, pkt{at.Add(time.Duration(i) * time.Millisecond), b})
		}
	}
	// The open session starts first and sends a little every minute.
	write(t0, [][]byte{
		rawTCP("10.7.0.8:50000", "198.51.100.9:8443", fSYN, 1000, 0, 0),
		rawTCP("198.51.100.9:8443", "10.7.0.8:50000", fSYN|fACK, 5000, 1001, 0),
		rawTCP("10.7.0.8:50000", "198.51.100.9:8443", fACK, 1001, 5001, 0),
	})
	for k := 0; k < 40; k++ {
		at := t0.Add(time.Duration(k)*30*time.Second + time.Duration((g.Rand().Float64()*0.6-0.3)*float64(30*time.Second)) + time.Second)
		write(at, session(nil, fmt.Sprintf("10.7.0.11:%d", 40000+k), "10.7.0.2:8080"))
	}
	seq := uint32(1001)
	for m := 1; m <= 90; m++ {
		write(t0.Add(time.Duration(m)*time.Minute+500*time.Millisecond), [][]byte{rawTCP("10.7.0.8:50000", "198.51.100.9:8443", fPSH|fACK, seq, 5001, 20)})
		seq += 20
	}
	slices.SortStableFunc(all, func(a, b pkt) int { return a.at.Compare(b.at) })
	for _, p := range all {
		if err := w.WritePacket(p.at, p.b, 0); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	cfg := writeConfig(t, "detectors:\n  long-connection:\n    traffic: {low: 1h}\n")
	out, stderr, code := run(t, "analyze", "--json", "--no-store", "--config", cfg, p)
	if code != 1 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var beacon, open bool
	for _, a := range parseAlerts(t, out) {
		t.Logf("%s %s %s", a.Detector, a.Severity, a.Title)
		beacon = beacon || a.Detector == "beacon" && a.Src == "10.7.0.11" && a.Dst == "10.7.0.2"
		open = open || a.Detector == "long-connection" && a.Src == "10.7.0.8" && strings.Contains(a.Title, "still open")
	}
	if !beacon || !open {
		flows, _, _ := run(t, "flows", "--json", p)
		t.Errorf("beacon found %v, open session found %v\n%s", beacon, open, flows[:min(len(flows), 600)])
	}
}

// TestAnalyzeZeekSamples runs analyze over the public Zeek and RITA
// conn.log samples (../shared/datasets/public/zeek-logs, when present):
// nothing crashes, bad lines are named, and RITA's DNS beacon and open
// connections are found.
func TestAnalyzeZeekSamples(t *testing.T) {
	root := "../../../shared/datasets/public/zeek-logs"
	if _, err := os.Stat(root); err != nil {
		t.Skipf("public samples not here: %v", err)
	}
	var files []string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	found := map[string]bool{}
	for _, f := range files {
		out, stderr, code := run(t, "analyze", "--json", "--no-store", f)
		rel, _ := filepath.Rel(root, f)
		if strings.Contains(stderr, "panic") || code == 2 && !strings.Contains(stderr, f+":") {
			t.Errorf("%s: exit %d: %s", rel, code, stderr)
		}
		if strings.Contains(rel, "truncated") && !strings.Contains(stderr, f+":") {
			t.Errorf("%s: the cut-off line is not reported: %s", rel, stderr)
		}
		for _, a := range parseAlerts(t, out) {
			switch {
			case a.Detector == "beacon" && a.Src == "192.168.88.2" && a.Dst == "165.227.88.15":
				found["dns beacon"] = true
			case a.Detector == "long-connection" && a.Evidence["open"] == true:
				found["open connection"] = true
			}
		}
	}
	if !found["dns beacon"] || !found["open connection"] {
		t.Errorf("found %v", found)
	}
}
