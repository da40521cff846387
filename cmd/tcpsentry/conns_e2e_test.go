package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/model"
	"github.com/tcpsentry/tcpsentry/internal/testenv"
)

func findSocket(socks []jsonSocket, proto, state string, local netip.AddrPort) (jsonSocket, bool) {
	for _, s := range socks {
		if s.Proto != proto || s.State != state || s.LocalPort != int(local.Port()) {
			continue
		}
		a, err := netip.ParseAddr(s.LocalAddr)
		if err == nil && a.Unmap() == local.Addr().Unmap() {
			return s, true
		}
	}
	return jsonSocket{}, false
}

func addrPort(t *testing.T, a net.Addr) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

// TestConnsLocalSockets creates sockets of every kind in the test process
// and in a child, and checks that `conns --json` lists each one with the
// right state, endpoints and owners.
func TestConnsLocalSockets(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	client, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server := <-accepted
	defer server.Close()

	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()

	ln6, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer ln6.Close()

	// A child that inherits a listener: the socket is shared by two processes.
	shared, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	sharedFile, err := shared.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer sharedFile.Close()
	child := exec.Command("sleep", "120")
	child.ExtraFiles = []*os.File{sharedFile}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })

	out, stderr, code := run(t, "conns", "--json", "--no-conntrack")
	if code != 0 {
		t.Fatalf("conns exited %d: %s", code, stderr)
	}
	socks := parseJSONLines(t, out)
	me := os.Getpid()

	cases := []struct {
		name, proto, state string
		local, remote      netip.AddrPort
		pids               []int
	}{
		{"tcp listener", "tcp", "LISTEN", addrPort(t, ln.Addr()), netip.AddrPort{}, []int{me}},
		{"established client end", "tcp", "ESTABLISHED", addrPort(t, client.LocalAddr()), addrPort(t, client.RemoteAddr()), []int{me}},
		{"established server end", "tcp", "ESTABLISHED", addrPort(t, server.LocalAddr()), addrPort(t, server.RemoteAddr()), []int{me}},
		{"udp socket", "udp", "UNCONN", addrPort(t, udp.LocalAddr()), netip.AddrPort{}, []int{me}},
		{"ipv6 listener", "tcp", "LISTEN", addrPort(t, ln6.Addr()), netip.AddrPort{}, []int{me}},
		{"shared with child", "tcp", "LISTEN", addrPort(t, shared.Addr()), netip.AddrPort{}, []int{me, child.Process.Pid}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, ok := findSocket(socks, tc.proto, tc.state, tc.local)
			if !ok {
				t.Fatalf("%s %s %v not listed", tc.proto, tc.state, tc.local)
			}
			if tc.remote.IsValid() {
				if s.RemotePort != int(tc.remote.Port()) || s.RemoteAddr != tc.remote.Addr().String() {
					t.Errorf("remote = %s:%d, want %v", s.RemoteAddr, s.RemotePort, tc.remote)
				}
			}
			for _, pid := range tc.pids {
				if !s.hasPID(pid) {
					t.Errorf("pid %d not among owners %+v", pid, s.Processes)
				}
			}
			for _, p := range s.Processes {
				if p.PID == child.Process.Pid {
					if p.Name != "sleep" || p.PPID != me || len(p.Cmdline) != 2 || p.Cmdline[1] != "120" {
						t.Errorf("child process = %+v, want sleep 120 with ppid %d", p, me)
					}
					if len(p.FDs) != 1 || p.FDs[0] != 3 {
						t.Errorf("child holds the socket as fds %v, want [3]", p.FDs)
					}
				}
				if p.PID == me {
					st, err := time.Parse(time.RFC3339Nano, p.Start)
					if err != nil || time.Since(st) < 0 || time.Since(st) > time.Hour {
						t.Errorf("own start time %q implausible (%v)", p.Start, err)
					}
					if p.Exe == "" || p.User != "root" && os.Geteuid() == 0 {
						t.Errorf("own process details incomplete: %+v", p)
					}
				}
			}
		})
	}
}

// TestConnsNetnsMatchesSS checks, in a quiet namespace the test creates,
// that the sockets listed are exactly those ss lists at the same moment,
// and that a process inside the namespace is attributed.
func TestConnsNetnsMatchesSS(t *testing.T) {
	ncat := testenv.NeedTool(t, "ncat")
	testenv.NeedTool(t, "ss")
	ns := newNetns(t)

	const port = 7001
	server, _ := startBackground(t, "ip", "netns", "exec", ns, ncat, "-l", "-k", "127.0.0.1", strconv.Itoa(port))
	waitFor(t, 5*time.Second, "ncat listener in "+ns, func() bool { return listening(ns, port) })
	startBackground(t, "ip", "netns", "exec", ns, ncat, "127.0.0.1", strconv.Itoa(port))
	startBackground(t, "ip", "netns", "exec", ns, ncat, "-u", "-l", "::1", "7002")
	waitFor(t, 5*time.Second, "established pair and UDP socket", func() bool {
		out, _ := exec.Command("ip", "netns", "exec", ns, "ss", "-tanuH").Output()
		return strings.Count(string(out), "ESTAB") == 2 && strings.Contains(string(out), "7002")
	})

	// Quiet namespace: nothing changes between the two listings.
	ssOut := mustRun(t, "ip", "netns", "exec", ns, "ss", "-tanuH")
	out, stderr, code := run(t, "conns", "--netns", ns, "--json", "--no-conntrack")
	if code != 0 {
		t.Fatalf("conns --netns exited %d: %s", code, stderr)
	}
	socks := parseJSONLines(t, out)
	var got []string
	for _, s := range socks {
		if s.Netns != ns {
			t.Errorf("socket %+v has netns %q, want %q", s, s.Netns, ns)
		}
		got = append(got, socketKey(s.Proto, s.State, s.LocalAddr, s.LocalPort, s.RemoteAddr, s.RemotePort))
	}
	want := parseSS(t, ssOut)
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("conns and ss disagree\nconns:\n%s\nss:\n%s\nraw ss:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"), ssOut)
	}

	s, ok := findSocket(socks, "tcp", "LISTEN", netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", port)))
	if !ok {
		t.Fatalf("listener in namespace not listed")
	}
	if !s.hasPID(server.Process.Pid) || s.Processes[0].Name != "ncat" || s.Processes[0].Exe != ncat {
		t.Errorf("listener owners %+v, want ncat pid %d exe %s", s.Processes, server.Process.Pid, ncat)
	}

	// The host's own listing does not show the namespace's listener.
	hostOut, _, _ := run(t, "conns", "--json", "--no-conntrack", "--sport", strconv.Itoa(port), "--state", "listen")
	for _, hs := range parseJSONLines(t, hostOut) {
		if hs.hasPID(server.Process.Pid) {
			t.Errorf("namespace listener leaked into the host listing: %+v", hs)
		}
	}

	// --all-netns finds it too, labelled with its namespace.
	allOut, stderr, code := run(t, "conns", "--all-netns", "--json", "--no-conntrack", "--pid", strconv.Itoa(server.Process.Pid))
	if code != 0 {
		t.Fatalf("conns --all-netns exited %d: %s", code, stderr)
	}
	all := parseJSONLines(t, allOut)
	if _, ok := findSocket(all, "tcp", "LISTEN", netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", port))); !ok {
		t.Errorf("--all-netns --pid %d does not list the listener: %+v", server.Process.Pid, all)
	}
	for _, s := range all {
		if s.Netns == "" {
			t.Errorf("--all-netns socket without its namespace: %+v", s)
		}
	}
}

func socketKey(proto, state, laddr string, lport int, raddr string, rport int) string {
	norm := func(a string) string {
		if a == "" || a == "*" {
			return "*"
		}
		ip, err := netip.ParseAddr(a)
		if err != nil {
			return a
		}
		if ip.IsUnspecified() {
			return "*"
		}
		return ip.Unmap().String()
	}
	st, ok := model.ParseState(state)
	if ok {
		state = model.SocketStateName(mustProto(proto), st)
	}
	return fmt.Sprintf("%s %s %s:%d %s:%d", proto, state, norm(laddr), lport, norm(raddr), rport)
}

func mustProto(s string) model.Proto {
	p, _ := model.ParseProto(s)
	return p
}

// parseSS reads `ss -tanuH` lines: Netid State Recv-Q Send-Q Local Peer.
func parseSS(t *testing.T, out string) []string {
	t.Helper()
	var keys []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		la, lp := splitSSAddr(t, f[4])
		ra, rp := splitSSAddr(t, f[5])
		keys = append(keys, socketKey(f[0], f[1], la, lp, ra, rp))
	}
	return keys
}

func splitSSAddr(t *testing.T, s string) (string, int) {
	t.Helper()
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		t.Fatalf("ss address %q has no port", s)
	}
	addr, port := s[:i], s[i+1:]
	addr = strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
	if j := strings.IndexByte(addr, '%'); j >= 0 {
		addr = addr[:j]
	}
	addr = strings.TrimSuffix(addr, "]")
	p := 0
	if port != "*" {
		var err error
		if p, err = strconv.Atoi(port); err != nil {
			t.Fatalf("ss port %q: %v", port, err)
		}
	}
	return addr, p
}

// TestConnsConntrackAge checks that a connection conntrack tracks inside a
// test namespace shows its true age.
func TestConnsConntrackAge(t *testing.T) {
	ncat := testenv.NeedTool(t, "ncat")
	testenv.NeedTool(t, "nft")
	ns := newNetns(t)
	for _, rule := range [][]string{
		{"add", "table", "inet", "t"},
		{"add chain inet t in { type filter hook input priority 0; policy accept; }"},
		{"add chain inet t out { type filter hook output priority 0; policy accept; }"},
		{"add", "rule", "inet", "t", "in", "ct", "state", "new,established", "counter", "accept"},
		{"add", "rule", "inet", "t", "out", "ct", "state", "new,established", "counter", "accept"},
	} {
		mustRun(t, "ip", append([]string{"netns", "exec", ns, "nft"}, rule...)...)
	}
	// The first run as root turns timestamps on in the namespace and says so.
	_, stderr, code := run(t, "conns", "--netns", ns)
	if code != 0 {
		t.Fatalf("conns exited %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "nf_conntrack_timestamp") {
		t.Errorf("enabling timestamps was not reported; stderr: %q", stderr)
	}
	before := time.Now()
	const port = 7003
	startBackground(t, "ip", "netns", "exec", ns, ncat, "-l", "-k", "127.0.0.1", strconv.Itoa(port))
	waitFor(t, 5*time.Second, "listener", func() bool { return listening(ns, port) })
	startBackground(t, "ip", "netns", "exec", ns, ncat, "127.0.0.1", strconv.Itoa(port))
	waitFor(t, 5*time.Second, "connection", func() bool {
		out, _ := exec.Command("ip", "netns", "exec", ns, "ss", "-tnH", "state", "established").Output()
		return strings.Count(string(out), "\n") == 2
	})
	time.Sleep(1500 * time.Millisecond) // let the connection age measurably
	out, stderr, code := run(t, "conns", "--netns", ns, "--json", "--state", "established")
	after := time.Now()
	if code != 0 {
		t.Fatalf("conns exited %d: %s", code, stderr)
	}
	socks := parseJSONLines(t, out)
	if len(socks) != 2 {
		t.Fatalf("want both ends of the connection, got %d sockets: %s", len(socks), out)
	}
	for _, s := range socks {
		start, err := time.Parse(time.RFC3339Nano, s.ConnStart)
		if err != nil {
			t.Fatalf("%s:%d has no conntrack start (%q): %v", s.LocalAddr, s.LocalPort, s.ConnStart, err)
		}
		if start.Before(before.Add(-time.Second)) || start.After(after) {
			t.Errorf("conn_start %v outside [%v, %v]", start, before, after)
		}
		if s.AgeS < 1.4 || s.AgeS > after.Sub(before).Seconds()+1 {
			t.Errorf("age_s = %.3f, want about 1.5", s.AgeS)
		}
	}
}

// TestConnsUnprivileged runs conns as nobody: every socket is still listed,
// what can be attributed is, and one line says what could not be read.
func TestConnsUnprivileged(t *testing.T) {
	testenv.NeedRoot(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := addrPort(t, ln.Addr()).Port()

	// A process owned by nobody, whose socket nobody can attribute.
	sleeper := exec.Command("sleep", "120")
	own, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ownFile, _ := own.(*net.TCPListener).File()
	own.Close()
	sleeper.ExtraFiles = []*os.File{ownFile}
	sleeper.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	ownFile.Close()
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })

	rootBefore, _, _ := run(t, "conns", "--json", "--no-conntrack", "-t", "-l")
	cmd := exec.Command(binPath, "conns", "--json", "-t")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd.Dir = "/"
	out, stderr, code := runCmd(t, cmd)
	if code != 0 {
		t.Fatalf("conns as nobody exited %d: %s", code, stderr)
	}
	rootAfter, _, _ := run(t, "conns", "--json", "--no-conntrack", "-t", "-l")
	socks := parseJSONLines(t, out)
	// Other tests open and close listeners meanwhile: compare the ones
	// root saw both before and after the unprivileged run.
	listeners := func(ss []jsonSocket) map[string]bool {
		m := map[string]bool{}
		for _, s := range ss {
			if s.State == "LISTEN" {
				m[socketKey(s.Proto, s.State, s.LocalAddr, s.LocalPort, s.RemoteAddr, s.RemotePort)] = true
			}
		}
		return m
	}
	after, asNobody := listeners(parseJSONLines(t, rootAfter)), listeners(socks)
	for k := range listeners(parseJSONLines(t, rootBefore)) {
		if after[k] && !asNobody[k] {
			t.Errorf("listener %s listed as root but not as nobody", k)
		}
	}
	s, ok := findSocket(socks, "tcp", "LISTEN", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port))
	if !ok {
		t.Fatal("root's listener not listed when unprivileged")
	}
	if len(s.Processes) != 0 {
		t.Errorf("root's listener attributed to %+v when unprivileged", s.Processes)
	}
	var attributed bool
	for _, s := range socks {
		if s.hasPID(sleeper.Process.Pid) {
			attributed = true
		}
	}
	if !attributed {
		t.Errorf("nobody's own process %d not attributed", sleeper.Process.Pid)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "permission denied") {
		t.Errorf("want exactly one warning line saying what could not be read and why, got:\n%s", stderr)
	}
}

// TestConnsHostileProcessNames starts a process whose name and command line
// carry terminal escapes, a newline, a bidi override and invalid UTF-8, and
// checks none reaches the table raw while --json stays valid.
func TestConnsHostileProcessNames(t *testing.T) {
	ncat := testenv.NeedTool(t, "ncat")
	dir := t.TempDir()
	// comm is taken from the executable's file name, so a symlink with a
	// hostile name gives a hostile comm.
	evilName := "\x1b[31mev\nil\u202e"
	link := filepath.Join(dir, evilName)
	if err := os.Symlink(ncat, link); err != nil {
		t.Fatal(err)
	}
	const port = 7004
	cmd := exec.Command(link, "-l", "-k", "127.0.0.1", strconv.Itoa(port))
	cmd.Args[0] = "\x1b]0;pwned\x07 \xff\xfe"
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitFor(t, 5*time.Second, "listener", func() bool { return listening("", port) })

	table, stderr, code := run(t, "conns", "--no-conntrack", "--pid", strconv.Itoa(cmd.Process.Pid))
	if code != 0 {
		t.Fatalf("conns exited %d: %s", code, stderr)
	}
	for _, bad := range []string{"\x1b", "\x07", "\u202e", "\xff", "ev\nil"} {
		if strings.Contains(table, bad) {
			t.Errorf("table output contains raw %q:\n%q", bad, table)
		}
	}
	if !strings.Contains(table, `\x1b[31mev\nil`) {
		t.Errorf("table does not show the escaped name:\n%s", table)
	}
	out, _, _ := run(t, "conns", "--json", "--no-conntrack", "--pid", strconv.Itoa(cmd.Process.Pid))
	socks := parseJSONLines(t, out)
	if len(socks) != 1 || len(socks[0].Processes) != 1 {
		t.Fatalf("want the one listener, got %+v", socks)
	}
	p := socks[0].Processes[0]
	if p.Name != evilName[:min(15, len(evilName))] {
		t.Errorf("JSON name = %q, want the raw comm %q", p.Name, evilName)
	}
	if len(p.Cmdline) == 0 || !strings.HasPrefix(p.Cmdline[0], "\x1b]0;pwned\x07 ") {
		t.Errorf("JSON cmdline = %q", p.Cmdline)
	}
}
