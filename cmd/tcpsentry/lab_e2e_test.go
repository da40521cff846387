package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
	// Every scan type must be named below; at the event level one of the
	// nine scans was missed once, while a benchmark loaded both cores (an
	// nmap run under load can finish before sending enough probes).
	// The implant's beacon and the 40 MB upload must be found too.
	if recall["portscan"] < 8.0/9 || recall["synflood"] != 1 || recall["beacon"] != 1 || recall["exfil"] != 1 || r.HighOnBenign != 0 {
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
	for _, input := range []string{pcap, connLog} {
		out, stderr, code := run(t, "analyze", "--json", input)
		if code != 1 {
			t.Fatalf("analyze %s: exit %d: %s", input, code, stderr)
		}
		var probes []string
		floods, beacons, uploads := 0, 0, 0
		for _, a := range parseAlerts(t, out) {
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
		want := []string{"ack", "fin", "maimon", "null", "syn", "udp", "xmas"}
		if !slices.Equal(probes, want) || floods != 1 {
			t.Errorf("analyze %s: scans %v (want %v), floods %d (want 1)", filepath.Base(input), probes, want, floods)
		}
	}
}
