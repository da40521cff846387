package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/testenv"
)

// TestLab records real attacks in the namespace lab (lab/run.sh) and checks
// what analyze and eval make of them: every nmap scan type named, the
// floods on the right target, the implant's beacon and the upload found,
// nothing high on the benign clients, and the same scans from the conn.log
// of the capture.
func TestLab(t *testing.T) {
	testenv.NeedRoot(t)
	for _, tool := range []string{"nmap", "hping3", "ncat", "tcpdump", "ethtool"} {
		testenv.NeedTool(t, tool)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "bash", "../../lab/run.sh", dir).CombinedOutput(); err != nil {
		t.Fatalf("lab/run.sh: %v\n%s", err, out)
	}
	pcap, truth := filepath.Join(dir, "lab.pcap"), filepath.Join(dir, "truth.csv")

	out, stderr, code := run(t, "eval", "--json", "--truth", truth, pcap)
	if code != 0 {
		t.Fatalf("eval: exit %d: %s", code, stderr)
	}
	var r struct {
		Classes []struct {
			Class  string  `json:"class"`
			Recall float64 `json:"recall"`
		} `json:"classes"`
		HighOnBenign int `json:"high_on_benign"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	t.Logf("eval: %s", out)
	recall := map[string]float64{}
	for _, c := range r.Classes {
		recall[c.Class] = c.Recall
	}
	// The implant's beacon and the 40 MB upload must be found too.
	if recall["portscan"] != 1 || recall["synflood"] != 1 || recall["beacon"] != 1 || recall["exfil"] != 1 || r.HighOnBenign != 0 {
		t.Errorf("eval: recall %v, high or critical alerts on benign traffic %d", recall, r.HighOnBenign)
	}

	zeek, stderr, code := run(t, "flows", "--format", "zeek", pcap)
	if code != 0 {
		t.Fatal(stderr)
	}
	connLog := filepath.Join(dir, "conn.log")
	if err := os.WriteFile(connLog, []byte(zeek), 0o644); err != nil {
		t.Fatal(err)
	}
	events := readTruth(t, truth)
	for _, input := range []string{pcap, connLog} {
		out, stderr, code := run(t, "analyze", "--json", input)
		if code != 1 {
			t.Fatalf("analyze %s: exit %d: %s", input, code, stderr)
		}
		var probes []string
		floods, beacons, uploads := 0, 0, 0
		alerts := parseAlerts(t, out)
		for _, a := range alerts {
			switch a.Detector {
			case "scan":
				probes = append(probes, a.Evidence["probe"].(string))
			case "flood":
				floods++
			case "beacon":
				beacons++
			case "exfiltration":
				uploads++
			}
		}
		if beacons != 1 || uploads != 1 {
			t.Errorf("analyze %s: %d beacon and %d exfiltration alerts, want 1 each", filepath.Base(input), beacons, uploads)
		}
		slices.Sort(probes)
		// One alert per nmap run: the slow scan is a second SYN scan.
		want := []string{"ack", "connect", "fin", "maimon", "null", "syn", "syn", "udp", "xmas"}
		if !slices.Equal(probes, want) || floods != 1 {
			t.Errorf("analyze %s: scans %v (want %v), floods %d (want 1)", filepath.Base(input), probes, want, floods)
		}
		if input == pcap {
			checkScanLatency(t, zeek, events, alerts)
		}
	}
}

// labProbe is the probe type each nmap run of the lab sends.
var labProbe = map[string]string{
	"nmap-sS": "syn", "nmap-sT": "connect", "nmap-sF": "fin", "nmap-sN": "null", "nmap-sX": "xmas",
	"nmap-sA": "ack", "nmap-sM": "maimon", "nmap-sU": "udp", "nmap-slow": "syn",
}

// checkScanLatency requires, for every nmap run, a scan alert of its probe
// type raised no later than 1 s (event time) after the run's 10th probe,
// which is the 10th distinct port the attacker touched in the run's span
// (from the capture's conn.log, with its connections' first packets).
func checkScanLatency(t *testing.T, connLog string, events []truthEvent, alerts []jsonAlert) {
	t.Helper()
	type probe struct {
		ts   time.Time
		port string
	}
	var conns []probe
	var attacker, victim string
	for _, e := range events {
		if e.label == "portscan" {
			attacker, victim = e.src, e.dst
		}
	}
	for _, line := range strings.Split(connLog, "\n") {
		f := strings.Split(line, "\t")
		if len(f) < 6 || strings.HasPrefix(line, "#") || f[2] != attacker || f[4] != victim {
			continue
		}
		sec, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			t.Fatalf("conn.log ts %q: %v", f[0], err)
		}
		conns = append(conns, probe{time.Unix(0, int64(sec*1e9)), f[5] + "/" + f[6]})
	}
	slices.SortFunc(conns, func(a, b probe) int { return a.ts.Compare(b.ts) })
	for _, e := range events {
		kind, ok := labProbe[e.name]
		if !ok {
			continue
		}
		seen := map[string]bool{}
		var tenth time.Time
		for _, c := range conns {
			if c.ts.Before(e.start) || c.ts.After(e.end.Add(time.Second)) || seen[c.port] {
				continue
			}
			if seen[c.port] = true; len(seen) == 10 {
				tenth = c.ts
				break
			}
		}
		if tenth.IsZero() {
			t.Errorf("%s: fewer than 10 probes in the capture", e.name)
			continue
		}
		best, found := time.Duration(0), false
		for _, a := range alerts {
			if a.Detector != "scan" || a.Evidence["probe"] != kind || a.Raised.Before(e.start) {
				continue
			}
			if d := a.Raised.Sub(tenth); !found || d < best {
				best, found = d, true
			}
		}
		t.Logf("%s: alert raised %v after the 10th probe", e.name, best)
		// The conn.log's times are in microseconds: a few nanoseconds
		// early is the same instant.
		if !found || best < -time.Microsecond || best > time.Second {
			t.Errorf("%s: no %s scan alert within 1 s of the 10th probe (best %v)", e.name, kind, best)
		}
	}
}

type truthEvent struct {
	name, src, dst, label string
	start, end            time.Time
}

func readTruth(t *testing.T, path string) []truthEvent {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []truthEvent
	for i, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Split(line, ",")
		if i == 0 || len(f) != 6 {
			continue
		}
		ts := func(s string) time.Time {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				t.Fatalf("truth line %d: %v", i+1, err)
			}
			return time.Unix(0, int64(v*1e9))
		}
		out = append(out, truthEvent{name: f[0], start: ts(f[1]), end: ts(f[2]), src: f[3], dst: f[4], label: f[5]})
	}
	return out
}
