package detect

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/baseline"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// snapTime is the recorded snapshots' clock.
var snapTime = time.Date(2026, 11, 23, 2, 0, 0, 0, time.UTC)

// snapBuilder records a host snapshot for detector tests.
type snapBuilder struct {
	snap  *model.Snapshot
	inode uint64
}

func newSnap() *snapBuilder {
	return &snapBuilder{snap: &model.Snapshot{Time: snapTime, Host: "test", Processes: map[int32]*model.Process{}}, inode: 1000}
}

func (b *snapBuilder) proc(pid int32, name, exe string, tty uint32, started time.Duration) *snapBuilder {
	b.snap.Processes[pid] = &model.Process{PID: pid, PPID: 1, Name: name, Exe: exe, User: "root", TTY: tty, Start: snapTime.Add(-started)}
	return b
}

// sock adds a socket "tcp LISTEN 0.0.0.0:22 -" owned by pid via fds.
func (b *snapBuilder) sock(proto model.Proto, state model.TCPState, local, remote string, pid int32, fds ...int32) *model.Socket {
	b.inode++
	s := model.Socket{Proto: proto, State: state, Local: netip.MustParseAddrPort(local), Inode: b.inode}
	if remote != "" {
		s.Remote = netip.MustParseAddrPort(remote)
	} else if s.Local.Addr().Is4() {
		s.Remote = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	} else {
		s.Remote = netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
	}
	if pid != 0 {
		if len(fds) == 0 {
			fds = []int32{int32(3 + len(b.snap.Sockets))}
		}
		s.Owners = []model.Owner{{PID: pid, FDs: fds}}
	}
	b.snap.Sockets = append(b.snap.Sockets, s)
	return &b.snap.Sockets[len(b.snap.Sockets)-1]
}

func defaults(t *testing.T) *config.Config {
	t.Helper()
	cfg, err := config.Load("")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func observe(d SnapshotDetector, snap *model.Snapshot) []alert.Alert {
	e := NewEngine([]Detector{d.(Detector)}, "host:test", nil)
	e.ObserveSnapshot(snap)
	return e.Alerts()
}

// want is a compact expectation on one alert.
type want struct {
	severity alert.Severity
	title    string // substring
	pid      int32  // 0: no process expected
}

func check(t *testing.T, got []alert.Alert, wants []want) {
	t.Helper()
	if len(got) != len(wants) {
		var b strings.Builder
		for _, a := range got {
			fmt.Fprintf(&b, "  %s %s\n", a.Severity, a.Title)
		}
		t.Fatalf("got %d alerts, want %d:\n%s", len(got), len(wants), b.String())
	}
	for i, w := range wants {
		a := got[i]
		if a.Severity != w.severity || !strings.Contains(a.Title, w.title) {
			t.Errorf("alert %d = %s %q, want %s containing %q", i, a.Severity, a.Title, w.severity, w.title)
		}
		if w.pid != 0 && (a.Process == nil || a.Process.PID != w.pid) {
			t.Errorf("alert %d process = %+v, want pid %d", i, a.Process, w.pid)
		}
		if err := a.Validate(); err != nil {
			t.Errorf("alert %d invalid: %v", i, err)
		}
		if len(a.Attack) == 0 || a.Evidence == nil || a.Source != "host:test" {
			t.Errorf("alert %d lacks ATT&CK ids, evidence or source: %+v", i, a)
		}
	}
}

func TestSuspiciousPort(t *testing.T) {
	b := newSnap().proc(10, "ncat", "/usr/bin/ncat", 0, time.Minute).proc(11, "curl", "/usr/bin/curl", 1, time.Minute).
		proc(12, "sshd", "/usr/sbin/sshd", 0, time.Hour)
	b.sock(model.ProtoTCP, model.StateListen, "0.0.0.0:4444", "", 10)
	b.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:40000", "203.0.113.9:31337", 11)
	b.sock(model.ProtoTCP, model.StateListen, "0.0.0.0:2222", "", 12)
	b.sock(model.ProtoTCP, model.StateListen, "0.0.0.0:22", "", 12)
	b.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:40001", "203.0.113.9:443", 11)
	got := observe(NewSuspiciousPort(defaults(t)), b.snap)
	check(t, got, []want{
		{alert.High, "listener on suspicious port tcp/4444", 10},
		{alert.High, "connection to suspicious port tcp 203.0.113.9:31337", 11},
		{alert.Low, "ssh (sshd) listening on non-standard port 2222", 12},
	})
	if got[1].Src != netip.MustParseAddr("10.0.0.5") || got[1].Dst != netip.MustParseAddr("203.0.113.9") || got[1].DstPort != 31337 {
		t.Errorf("outbound direction wrong: %+v", got[1])
	}
}

func TestUnauthorizedListener(t *testing.T) {
	b := newSnap().proc(1, "sshd", "/usr/sbin/sshd", 0, time.Hour).proc(2, "python3", "/usr/bin/python3.11", 0, time.Minute).
		proc(3, "redis-server", "/usr/bin/redis-server", 0, time.Hour)
	b.sock(model.ProtoTCP, model.StateListen, "0.0.0.0:22", "", 1)
	b.sock(model.ProtoTCP, model.StateListen, "[::]:22", "", 1)
	b.sock(model.ProtoTCP, model.StateListen, "0.0.0.0:4444", "", 2)
	b.sock(model.ProtoTCP, model.StateListen, "127.0.0.1:6379", "", 3)
	b.sock(model.ProtoUDP, model.StateClose, "0.0.0.0:40123", "", 2) // ephemeral client socket
	b.sock(model.ProtoUDP, model.StateClose, "0.0.0.0:9999", "", 2)
	b.sock(model.ProtoTCP, model.StateListen, "0.0.0.0:8080", "", 0) // owner unreadable

	check(t, observe(NewUnauthorizedListener(defaults(t)), b.snap), []want{
		{alert.Medium, "unauthorized tcp listener on 0.0.0.0:4444 by python3 (pid 2)", 2},
		{alert.Medium, "unauthorized udp listener on 0.0.0.0:9999", 2},
		{alert.Medium, "unauthorized tcp listener on 0.0.0.0:8080 by unknown process", 0},
	})

	cfg := defaults(t)
	cfg.Listeners.Loopback = "low"
	cfg.Listeners.Allowed = append(cfg.Listeners.Allowed, config.ListenerRule{Port: 4444, Process: "python3"})
	cfg.Allowlist.Processes = []string{"python3"}
	check(t, observe(NewUnauthorizedListener(cfg), b.snap), []want{
		{alert.Medium, "0.0.0.0:8080", 0},
		{alert.Low, "127.0.0.1:6379 by redis-server", 3},
	})
}

func TestMissingService(t *testing.T) {
	b := newSnap().proc(1, "sshd", "/usr/sbin/sshd", 0, time.Hour).proc(2, "nginx", "/usr/sbin/nginx", 0, time.Hour)
	b.sock(model.ProtoTCP, model.StateListen, "0.0.0.0:22", "", 1)
	b.sock(model.ProtoTCP, model.StateListen, "0.0.0.0:80", "", 2)
	cfg := defaults(t)
	cfg.Services.Expected = []config.ExpectedService{
		{Name: "ssh", Port: 22, Process: "sshd"},
		{Name: "web", Port: 80, Process: "apache2"},
		{Name: "edr-agent", Port: 9443},
		{Name: "dns", Port: 53, Proto: "udp"},
	}
	check(t, observe(NewMissingService(cfg), b.snap), []want{
		{alert.High, "web on tcp/80 is served by nginx, not apache2", 0},
		{alert.High, "edr-agent is not listening on tcp/9443", 0},
		{alert.High, "dns is not listening on udp/53", 0},
	})
}

func TestStatePile(t *testing.T) {
	b := newSnap().proc(1, "nginx", "/usr/sbin/nginx", 0, time.Hour).proc(2, "worm", "/tmp/worm", 0, time.Minute).
		proc(3, "app", "/opt/app", 0, time.Hour).proc(4, "small", "/opt/small", 0, time.Hour)
	b.sock(model.ProtoTCP, model.StateListen, "0.0.0.0:80", "", 1).SendQ = 4096
	l := b.sock(model.ProtoTCP, model.StateListen, "0.0.0.0:8080", "", 1)
	l.SendQ = 10
	for i := 0; i < 300; i++ {
		b.sock(model.ProtoTCP, model.StateSynRecv, "10.0.0.5:80", fmt.Sprintf("198.51.100.%d:%d", i%250, 1024+i), 0)
	}
	for i := 0; i < 10; i++ { // a full SYN queue on a small backlog
		b.sock(model.ProtoTCP, model.StateSynRecv, "10.0.0.5:8080", fmt.Sprintf("198.51.100.7:%d", 2000+i), 0)
	}
	for i := 0; i < 60; i++ {
		b.sock(model.ProtoTCP, model.StateSynSent, fmt.Sprintf("10.0.0.5:%d", 30000+i), fmt.Sprintf("10.0.1.%d:445", i), 2)
	}
	for i := 0; i < 200; i++ {
		b.sock(model.ProtoTCP, model.StateCloseWait, "10.0.0.5:9000", fmt.Sprintf("10.0.2.%d:%d", i%20, 40000+i), 3)
	}
	for i := 0; i < 99; i++ {
		b.sock(model.ProtoTCP, model.StateCloseWait, "10.0.0.5:9001", fmt.Sprintf("10.0.2.1:%d", 40000+i), 4)
	}
	got := observe(NewStatePile(defaults(t)), b.snap)
	check(t, got, []want{
		{alert.High, "SYN flood on 10.0.0.5:80: 300 half-open connections from 250 sources", 1},
		{alert.High, "SYN flood on 10.0.0.5:8080: 10 half-open", 1},
		{alert.High, "worm (pid 2) connecting to 60 destinations at once", 2},
		{alert.Medium, "app (pid 3) holds 200 connections in CLOSE_WAIT from 20 peers", 3},
	})
	if got[1].Evidence["backlog_full"] != true {
		t.Errorf("small backlog flood evidence = %v", got[1].Evidence)
	}
}

func TestLongConnection(t *testing.T) {
	b := newSnap().proc(1, "implant", "/tmp/implant", 0, 30*24*time.Hour).proc(2, "sshd", "/usr/sbin/sshd", 0, 30*24*time.Hour).
		proc(3, "curl", "/usr/bin/curl", 0, time.Minute)
	b.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:40000", "203.0.113.1:443", 1).ConnStart = snapTime.Add(-8 * 24 * time.Hour)
	b.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:40001", "203.0.113.2:443", 1).ConnStart = snapTime.Add(-30 * time.Hour)
	b.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:40002", "203.0.113.3:443", 1) // age unknown
	b.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:22", "203.0.113.4:50000", 2).ConnStart = snapTime.Add(-9 * 24 * time.Hour)
	b.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:40003", "203.0.113.5:443", 3).ConnStart = snapTime.Add(-time.Hour)
	got := observe(NewLongConnection(defaults(t)), b.snap)
	check(t, got, []want{
		{alert.High, "open for 8.0d", 1},
		{alert.Medium, "open for 30h0m0s", 1},
		{alert.Low, "may be long-lived", 1},
	})
	if got[2].Evidence["age_source"] != "process_start_upper_bound" {
		t.Errorf("fallback not labelled: %v", got[2].Evidence)
	}
}

func TestReverseShell(t *testing.T) {
	b := newSnap().proc(10, "sh", "/usr/bin/dash", 0, time.Minute).proc(11, "ncat", "/usr/bin/ncat", 0, time.Minute).
		proc(12, "python3", "/usr/bin/python3.11", 0, time.Minute).proc(13, "bash", "/usr/bin/bash", 0x8801, time.Hour).
		proc(14, "nginx", "/usr/sbin/nginx", 0, time.Hour).proc(15, "perl", "/usr/bin/perl", 0, time.Minute)
	// ncat -e /bin/sh: the shell's stdio is the socket ncat also holds.
	s := b.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:40000", "198.51.100.66:4444", 11, 3)
	s.Owners = append(s.Owners, model.Owner{PID: 10, FDs: []int32{0, 1, 2}})
	// A python one-liner without a terminal talking only to a remote host.
	b.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:40001", "198.51.100.66:8443", 12, 3)
	// An interactive bash with a terminal running curl-like traffic: quiet.
	b.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:40002", "198.51.100.1:443", 13, 5)
	// A web server with a socket on fd 0 is not an interpreter: quiet.
	b.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:80", "198.51.100.2:50000", 14, 0)
	// perl with a listener too (a local service): not remote-only.
	b.sock(model.ProtoTCP, model.StateListen, "127.0.0.1:7000", "", 15, 3)
	b.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:40003", "198.51.100.3:443", 15, 4)
	got := observe(NewReverseShell(defaults(t)), b.snap)
	check(t, got, []want{
		{alert.Critical, "sh (pid 10) has its standard I/O connected to 198.51.100.66:4444", 10},
		{alert.High, "interpreter ncat (pid 11) without a terminal talks only to 198.51.100.66:4444", 11},
		{alert.High, "interpreter python3 (pid 12) without a terminal talks only to 198.51.100.66:8443", 12},
	})
	if fds, _ := got[0].Evidence["stdio_fd"].([]int32); len(fds) != 3 {
		t.Errorf("stdio fds = %v", got[0].Evidence["stdio_fd"])
	}
}

func TestReverseShellPipeRelay(t *testing.T) {
	// ncat -e /bin/sh: ncat holds the socket and talks to the shell over
	// two pipes; the shell holds no socket at all.
	b := newSnap().proc(20, "ncat", "/usr/bin/ncat", 0, time.Minute).proc(21, "sh", "/usr/bin/dash", 0, time.Minute).
		proc(30, "make", "/usr/bin/make", 0, time.Minute).proc(31, "bash", "/usr/bin/bash", 0, time.Minute).
		proc(40, "curl", "/usr/bin/curl", 0, time.Minute)
	b.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:40000", "198.51.100.66:8443", 20, 3)
	b.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:40001", "198.51.100.7:443", 40, 3)
	b.snap.Pipes = map[uint64][]model.Owner{
		900: {{PID: 20, FDs: []int32{5}}, {PID: 21, FDs: []int32{0}}},
		901: {{PID: 20, FDs: []int32{6}}, {PID: 21, FDs: []int32{1}}},
		// make's child bash shares a pipe with curl's parent, but curl has
		// it on stderr only and bash on fd 4: not a command channel.
		902: {{PID: 31, FDs: []int32{4}}, {PID: 40, FDs: []int32{2}}},
	}
	got := observe(NewReverseShell(defaults(t)), b.snap)
	check(t, got, []want{
		{alert.Critical, "sh (pid 21) has its standard I/O piped to ncat (pid 20), connected to 198.51.100.66:8443", 21},
		{alert.High, "interpreter ncat (pid 20) without a terminal talks only to 198.51.100.66:8443", 20},
	})
	if fds, _ := got[0].Evidence["stdio_fd"].([]int32); len(fds) != 2 || got[0].Evidence["relay_pid"] != int32(20) {
		t.Errorf("evidence = %v", got[0].Evidence)
	}
}

func TestProcessNetwork(t *testing.T) {
	b := newSnap().proc(1, "curl", "/usr/bin/curl", 0, time.Minute).proc(2, "backupd", "/opt/backupd", 0, time.Hour).
		proc(3, "printerd", "/opt/printerd", 0, time.Hour).proc(4, "newbie", "/tmp/newbie", 0, time.Minute)
	learn := newSnap().proc(1, "curl", "/usr/bin/curl", 0, time.Minute).proc(2, "backupd", "/opt/backupd", 0, time.Hour)
	learn.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:40000", "203.0.113.10:443", 1)
	learn.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:40001", "10.0.9.9:873", 2)
	set := baseline.NewSet()
	set.Observe(learn.snap)

	b.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:41000", "203.0.113.11:443", 1) // same /24 and port: known
	b.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:41001", "192.0.2.50:443", 1)   // new network
	b.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:41002", "10.0.9.9:22", 2)      // new port
	b.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:41003", "192.0.2.1:631", 3)    // denied by policy
	b.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:41004", "192.0.2.2:80", 4)     // not in baseline

	cfg := defaults(t)
	cfg.Detectors.ProcessNetwork.Rules = []config.ProcessRule{{Process: "printerd", Deny: true}}
	got := observe(NewProcessNetwork(cfg, set), b.snap)
	check(t, got, []want{
		{alert.Medium, "curl (pid 1): new outbound destination 192.0.2.50:443 not in its baseline", 1},
		{alert.Medium, "backupd (pid 2): new outbound destination 10.0.9.9:22", 2},
		{alert.Medium, "printerd (pid 3) must not use the network", 3},
		{alert.Low, "printerd (pid 3), unknown to the baseline", 3},
		{alert.Low, "newbie (pid 4), unknown to the baseline", 4},
	})
	// Without a baseline only the policy speaks.
	check(t, observe(NewProcessNetwork(cfg, nil), b.snap), []want{{alert.Medium, "printerd (pid 3) must not use the network", 3}})
}

func TestLateralAndEgress(t *testing.T) {
	b := newSnap().proc(1, "ssh", "/usr/bin/ssh", 1, time.Minute).proc(2, "implant", "/tmp/implant", 0, time.Minute).
		proc(3, "sshd", "/usr/sbin/sshd", 0, time.Hour)
	b.sock(model.ProtoTCP, model.StateListen, "0.0.0.0:22", "", 3)
	b.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:22", "10.0.0.9:50000", 3) // inbound ssh: not lateral from us
	b.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:40000", "10.0.0.7:445", 2)
	b.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:40001", "10.0.0.8:22", 1)
	b.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:40002", "203.0.113.7:8443", 2)
	b.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:40003", "203.0.113.7:443", 2)
	cfg := defaults(t)
	check(t, observe(NewLateralMovement(cfg, nil), b.snap), []want{
		{alert.Medium, "implant (pid 2) on this host connects to internal 10.0.0.7 on admin port 445", 2},
		{alert.Medium, "ssh (pid 1) on this host connects to internal 10.0.0.8 on admin port 22", 1},
	})
	learn := newSnap().proc(1, "ssh", "/usr/bin/ssh", 1, time.Minute)
	learn.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:39000", "10.0.0.3:22", 1)
	set := baseline.NewSet()
	set.Observe(learn.snap)
	check(t, observe(NewLateralMovement(cfg, set), b.snap), []want{{alert.Medium, "10.0.0.7 on admin port 445", 2}})
	check(t, observe(NewEgress(cfg, nil), b.snap), []want{{alert.Low, "implant (pid 2) connects out to 203.0.113.7 on unusual port 8443", 2}})
}

type fakeIntel map[netip.Addr]IntelHit

func (f fakeIntel) Lookup(a netip.Addr) (IntelHit, bool) { h, ok := f[a]; return h, ok }

func TestBlocklistedIP(t *testing.T) {
	b := newSnap().proc(1, "curl", "/usr/bin/curl", 0, time.Minute)
	b.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:40000", "203.0.113.66:443", 1)
	b.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:40001", "[::ffff:198.51.100.1]:443", 1)
	b.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:40002", "192.0.2.9:443", 1)
	b.sock(model.ProtoTCP, model.StateEstablished, "10.0.0.5:40003", "192.0.2.10:443", 1)
	intel := fakeIntel{
		netip.MustParseAddr("203.0.113.66"): {Kind: "blocklist", Feed: "drop", Prefix: netip.MustParsePrefix("203.0.113.0/24"), Reference: "SBL1"},
		netip.MustParseAddr("198.51.100.1"): {Kind: "geoip", Country: "XX", Reason: "country XX is denied"},
		netip.MustParseAddr("192.0.2.9"):    {Kind: "blocklist", Feed: "local", Prefix: netip.MustParsePrefix("192.0.2.9/32")},
	}
	cfg := defaults(t)
	cfg.Allowlist.Addresses = []config.Prefix{config.MustPrefix("192.0.2.0/28")}
	got := observe(NewBlocklistedIP(cfg, intel), b.snap)
	check(t, got, []want{
		{alert.High, "blocklisted 203.0.113.66 (drop)", 1},
		{alert.Medium, "198.51.100.1 in XX", 1},
	})
	if got[0].Evidence["reference"] != "SBL1" {
		t.Errorf("evidence = %v", got[0].Evidence)
	}
}

func TestEngineAggregatesAndSurvivesPanics(t *testing.T) {
	b := newSnap().proc(10, "ncat", "/usr/bin/ncat", 0, time.Minute)
	b.sock(model.ProtoTCP, model.StateListen, "0.0.0.0:4444", "", 10)
	e := NewEngine([]Detector{panicky{}, NewSuspiciousPort(defaults(t))}, "host:test", nil)
	errs := e.ObserveSnapshot(b.snap)
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "panicky") {
		t.Errorf("errs = %v", errs)
	}
	b.snap.Time = snapTime.Add(time.Minute)
	e.ObserveSnapshot(b.snap)
	got := e.Alerts()
	if len(got) != 1 || got[0].Count != 2 || !got[0].FirstSeen.Equal(snapTime) || !got[0].LastSeen.Equal(snapTime.Add(time.Minute)) {
		t.Errorf("aggregation: %+v", got)
	}
	if got[0].ID != alert.MakeID("suspicious-port", got[0].Entity) {
		t.Errorf("id not stable")
	}
}

type panicky struct{}

func (panicky) Name() string                          { return "panicky" }
func (panicky) ObserveSnapshot(*model.Snapshot, Emit) { panic("detector bug") }

func TestRegistryBuildsEveryDetector(t *testing.T) {
	cfg := defaults(t)
	ds := HostDetectors(cfg, Deps{})
	if len(ds) != len(Names()) {
		t.Fatalf("built %d of %d detectors", len(ds), len(Names()))
	}
	for i, d := range ds {
		if d.Name() != Names()[i] {
			t.Errorf("detector %d named %q, registry says %q", i, d.Name(), Names()[i])
		}
		if _, ok := d.(SnapshotDetector); !ok {
			t.Errorf("%s is not a snapshot detector", d.Name())
		}
	}
	cfg.Detectors.Egress.Enabled = false
	if len(HostDetectors(cfg, Deps{})) != len(Names())-1 {
		t.Error("disabling a detector did not remove it")
	}
}
