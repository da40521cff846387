package live

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/capture"
	"github.com/tcpsentry/tcpsentry/internal/flow"
	"github.com/tcpsentry/tcpsentry/internal/model"
	"github.com/tcpsentry/tcpsentry/internal/testenv"
)

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// lab is two namespaces joined by a veth pair: a (10.99.N.1, "va") and b
// (10.99.N.2, "vb"). Packets from a to the unassigned 10.99.N.3 go to b's
// MAC (a static neighbour entry) and b drops them silently (not its
// address, no forwarding): SYNs that nobody answers, as in a scan.
type lab struct {
	a, b   string
	prefix string // "10.99.N."
}

func newLab(t *testing.T) *lab {
	t.Helper()
	testenv.NeedRoot(t)
	testenv.NeedTool(t, "ip")
	id := strings.ToLower(rand.Text()[:6])
	l := &lab{a: "tslive-" + id + "-a", b: "tslive-" + id + "-b", prefix: fmt.Sprintf("10.99.%d.", 1+int(id[0])%250)}
	for _, ns := range []string{l.a, l.b} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v\n%s", ns, err, out)
			}
		})
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	run(t, "ip", "-n", l.a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", l.b)
	run(t, "ip", "-n", l.a, "addr", "add", l.prefix+"1/24", "dev", "va")
	run(t, "ip", "-n", l.b, "addr", "add", l.prefix+"2/24", "dev", "vb")
	for _, c := range [][2]string{{l.a, "va"}, {l.b, "vb"}} {
		// No IPv6 on the link: no router solicitations or MLD reports.
		run(t, "ip", "netns", "exec", c[0], "sysctl", "-qw", "net.ipv6.conf."+c[1]+".disable_ipv6=1")
		run(t, "ip", "-n", c[0], "link", "set", c[1], "up")
	}
	mac := strings.TrimSpace(run(t, "ip", "netns", "exec", l.b, "cat", "/sys/class/net/vb/address"))
	run(t, "ip", "-n", l.a, "neigh", "add", l.prefix+"3", "lladdr", mac, "dev", "va", "nud", "permanent")
	return l
}

// hping runs hping3 in namespace ns with a time bound, and waits for it.
func hping(t *testing.T, ns string, limit time.Duration, args ...string) {
	t.Helper()
	hp := testenv.NeedTool(t, "hping3")
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, hp, "-q"}, args...)...)
	// ip netns exec execs hping3 itself: SIGINT ends it as Ctrl-C would.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	// hping3 exits 1 when no reply came back, which is the point here.
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) && ctx.Err() == nil {
		t.Fatalf("hping3 %v: %v\n%s", args, err, out)
	}
}

// capture runs RunLive over src until stop says so (checked on every tick)
// or limit passes, and returns what it emitted.
type result struct {
	mu          sync.Mutex
	open, ended []*model.Conn
	stats       flow.Stats
}

func track(t *testing.T, src *Source, limit time.Duration, stop func(flow.Stats) bool) *result {
	t.Helper()
	r := &result{}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	st, err := flow.RunLive(ctx, flow.LiveInput{
		Source:   src,
		Interval: 50 * time.Millisecond,
		Emit:     func(c *model.Conn) { r.mu.Lock(); r.ended = append(r.ended, c); r.mu.Unlock() },
		Progress: func(c *model.Conn) { r.mu.Lock(); r.open = append(r.open, c); r.mu.Unlock() },
		Warn:     func(err error) { t.Logf("warn: %v", err) },
		Tick: func(_ time.Time, s flow.Stats) {
			if stop(s) {
				cancel()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.stats = st
	return r
}

// SYNs from another namespace, captured live: the tracker fed by the ring
// reports them in progress and then as S0 connections; the kernel counted
// them and dropped none.
func TestLiveSYN(t *testing.T) {
	l := newLab(t)
	src, err := Open(Options{Netns: l.b, Interfaces: []string{"vb"}, Filter: "tcp"})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if ifs := src.Interfaces(); len(ifs) != 1 || ifs[0].Link != capture.LinkEthernet || ifs[0].Index == 0 {
		t.Fatalf("interfaces %+v", ifs)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(100 * time.Millisecond)
		hping(t, l.a, 20*time.Second, "-S", "-p", "80", "-s", "40000", "-c", "5", "-i", "u20000", l.prefix+"3")
	}()
	start := time.Now()
	r := track(t, src, 30*time.Second, func(s flow.Stats) bool { return s.Packets >= 5 })
	wg.Wait()
	var s0 int
	for _, c := range r.ended {
		t.Logf("%s %v -> %v %s %s pkts %d end %s", c.Proto, c.Orig, c.Resp, c.ConnState, c.History, c.OrigPkts, c.End)
		if c.Resp == netip.MustParseAddrPort(l.prefix+"3:80") && c.ConnState == model.ConnS0 && c.OrigPkts == 1 && c.History == "S" &&
			c.Orig.Addr() == netip.MustParseAddr(l.prefix+"1") && !c.TS.Before(start.Add(-time.Second)) && c.End == model.EndEOF {
			s0++
		}
	}
	if s0 != 5 || len(r.ended) != 5 {
		t.Errorf("%d S0 connections to %s3:80 among %d records, want 5 of 5", s0, l.prefix, len(r.ended))
	}
	var open int
	for _, c := range r.open {
		if c.End == model.EndOpen && c.ConnState == model.ConnS0 {
			open++
		}
	}
	if open < 5 {
		t.Errorf("%d in-progress S0 records, want at least 5", open)
	}
	st := src.Stats()
	t.Logf("kernel: %+v", st)
	if st.Packets != 5 || st.Drops != 0 || st.Delivered != 5 {
		t.Errorf("stats %+v, want 5 packets, 0 drops, 5 delivered", st)
	}
}

// The BPF filter runs in the kernel: of TCP to ports 80 and 81 and UDP to
// port 80, only "tcp port 80" reaches the ring.
func TestLiveFilter(t *testing.T) {
	l := newLab(t)
	src, err := Open(Options{Netns: l.b, Interfaces: []string{"vb"}, Filter: "tcp port 80", Promiscuous: true})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if out := run(t, "ip", "-n", l.b, "-d", "link", "show", "vb"); !strings.Contains(out, "promiscuity 1 ") {
		t.Errorf("Promiscuous: vb not in promiscuous mode:\n%s", out)
	}
	dst := l.prefix + "3"
	hping(t, l.a, 20*time.Second, "-S", "-p", "81", "-c", "3", "-i", "u10000", dst)
	hping(t, l.a, 20*time.Second, "-2", "-p", "80", "-c", "3", "-i", "u10000", dst)
	hping(t, l.a, 20*time.Second, "-S", "-p", "80", "-c", "3", "-i", "u10000", dst)
	var got []string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := src.Poll(context.Background(), 100*time.Millisecond, func(p *capture.Packet) {
			// Ethernet, IPv4 without options (hping3's), TCP ports.
			d := p.Data
			got = append(got, fmt.Sprintf("proto %d dport %d", d[23], int(d[36])<<8|int(d[37])))
		}); err != nil {
			t.Fatal(err)
		}
		if len(got) >= 3 {
			// Give anything that should not pass a moment to show up.
			if _, err := src.Poll(context.Background(), 200*time.Millisecond, func(p *capture.Packet) { got = append(got, "extra") }); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	want := "proto 6 dport 80,proto 6 dport 80,proto 6 dport 80"
	if strings.Join(got, ",") != want {
		t.Errorf("delivered %q, want %q", got, want)
	}
	if st := src.Stats(); st.Packets != 3 || st.Drops != 0 {
		t.Errorf("kernel stats %+v: want 3 packets (those passing the filter), 0 drops", st)
	}
}

// Loopback: each frame shows up twice to a packet socket (sent and looped
// back in); the Source delivers it once.
func TestLiveLoopback(t *testing.T) {
	l := newLab(t)
	src, err := Open(Options{Netns: l.b, Interfaces: []string{"lo"}, Filter: "udp port 9999"})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	hping(t, l.b, 20*time.Second, "-2", "-p", "9999", "-s", "5000", "-k", "-c", "3", "-i", "u10000", "127.0.0.1")
	r := track(t, src, 10*time.Second, func(s flow.Stats) bool { return s.Packets >= 3 })
	time.Sleep(0)
	if len(r.ended) != 1 || r.ended[0].OrigPkts != 3 || r.ended[0].Proto != model.ProtoUDP || r.ended[0].Resp.Port() != 9999 {
		var b strings.Builder
		for _, c := range r.ended {
			fmt.Fprintf(&b, "%v %v->%v pkts %d\n", c.Proto, c.Orig, c.Resp, c.OrigPkts)
		}
		t.Errorf("records:\n%s want one UDP flow of 3 packets", b.String())
	}
	if st := src.Stats(); st.Delivered != 3 {
		t.Errorf("delivered %d, want 3 (outgoing copies skipped); %+v", st.Delivered, st)
	}
}

// Two Sources in one fanout group share the interface's traffic by flow:
// each frame reaches exactly one of them, and both get some.
func TestLiveFanout(t *testing.T) {
	l := newLab(t)
	var srcs [2]*Source
	for i := range srcs {
		var err error
		if srcs[i], err = Open(Options{Netns: l.b, Interfaces: []string{"vb"}, Filter: "tcp port 80", Fanout: 4242}); err != nil {
			t.Fatal(err)
		}
		defer srcs[i].Close()
	}
	// 40 SYNs from 40 source ports: 40 flows to spread.
	hping(t, l.a, 20*time.Second, "-S", "-p", "80", "-s", "30000", "-c", "40", "-i", "u5000", l.prefix+"3")
	var got [2]map[uint16]bool
	total := 0
	deadline := time.Now().Add(10 * time.Second)
	for total < 40 && time.Now().Before(deadline) {
		for i, s := range srcs {
			if got[i] == nil {
				got[i] = map[uint16]bool{}
			}
			if _, err := s.Poll(context.Background(), 50*time.Millisecond, func(p *capture.Packet) {
				got[i][uint16(p.Data[34])<<8|uint16(p.Data[35])] = true
				total++
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	both := 0
	for port := range got[0] {
		if got[1][port] {
			both++
		}
	}
	if total != 40 || len(got[0]) == 0 || len(got[1]) == 0 || both != 0 {
		t.Errorf("fanout: %d frames, %d and %d flows per socket, %d flows in both; want 40, both non-zero, 0", total, len(got[0]), len(got[1]), both)
	}
}

// One Source over two interfaces of different kinds: each packet says
// which one it came from.
func TestLiveTwoInterfaces(t *testing.T) {
	l := newLab(t)
	src, err := Open(Options{Netns: l.b, Interfaces: []string{"lo", "vb"}, Filter: "tcp port 80 or udp port 9999"})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	hping(t, l.b, 20*time.Second, "-2", "-p", "9999", "-k", "-s", "5000", "-c", "2", "-i", "u10000", "127.0.0.1")
	hping(t, l.a, 20*time.Second, "-S", "-p", "80", "-c", "3", "-i", "u10000", l.prefix+"3")
	var per [2]int
	deadline := time.Now().Add(10 * time.Second)
	for per[0]+per[1] < 5 && time.Now().Before(deadline) {
		if _, err := src.Poll(context.Background(), 50*time.Millisecond, func(p *capture.Packet) { per[p.Iface]++ }); err != nil {
			t.Fatal(err)
		}
	}
	if per != [2]int{2, 3} {
		t.Errorf("frames per interface (lo, vb) %v, want [2 3]", per)
	}
}

func TestLiveErrors(t *testing.T) {
	testenv.NeedRoot(t)
	if _, err := Open(Options{}); err == nil {
		t.Error("no interfaces: no error")
	}
	_, err := Open(Options{Interfaces: []string{"tsnosuch0"}})
	if err == nil || !strings.Contains(err.Error(), "tsnosuch0: no such interface") {
		t.Errorf("missing interface: %v", err)
	}
	_, err = Open(Options{Interfaces: []string{"lo"}, Filter: "tcp port http"})
	if err == nil || !strings.Contains(err.Error(), "want a port number") {
		t.Errorf("bad filter: %v", err)
	}
	_, err = Open(Options{Interfaces: []string{"lo"}, BlockSize: 12345})
	if err == nil || !strings.Contains(err.Error(), "block size") {
		t.Errorf("bad block size: %v", err)
	}
	// Cancelling the context ends a Poll that waits on a silent socket.
	src, err := Open(Options{Interfaces: []string{"lo"}, Filter: "ip proto 253"})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	t0 := time.Now()
	if _, err := src.Poll(ctx, time.Minute, func(*capture.Packet) {}); !errors.Is(err, context.Canceled) {
		t.Errorf("Poll after cancel: %v", err)
	}
	if d := time.Since(t0); d > 20*time.Second {
		t.Errorf("Poll took %v to notice the cancellation", d)
	}
}

// Without CAP_NET_RAW, Open's error says what is missing. The check runs
// in a child process that drops the capability (root keeps it otherwise).
func TestLivePermission(t *testing.T) {
	if os.Getenv("TSLIVE_NOCAP_CHILD") == "1" {
		_, err := Open(Options{Interfaces: []string{"lo"}})
		if !errors.Is(err, ErrPermission) {
			fmt.Printf("error %v, want ErrPermission\n", err)
			os.Exit(3)
		}
		fmt.Println(err)
		os.Exit(0)
	}
	testenv.NeedRoot(t)
	capsh := testenv.NeedTool(t, "setpriv")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(capsh, "--inh-caps=-net_raw", "--bounding-set=-net_raw", "--", exe, "-test.run=^TestLivePermission$")
	cmd.Env = append(os.Environ(), "TSLIVE_NOCAP_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "CAP_NET_RAW") {
		t.Errorf("child said %q", out)
	}
}

// TestLiveFloodThroughput measures what the ring and the tracker keep up
// with: an hping3 SYN flood over the veth for a few seconds. It reports
// packets per second received and dropped by the kernel, and the CPU the
// capture used; it fails only on inconsistent counters (the rate depends
// on the machine and its load).
func TestLiveFloodThroughput(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	l := newLab(t)
	src, err := Open(Options{Netns: l.b, Interfaces: []string{"vb"}})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	const secs = 4
	txPackets := func() uint64 {
		n, err := strconv.ParseUint(strings.TrimSpace(run(t, "ip", "netns", "exec", l.a, "cat", "/sys/class/net/va/statistics/tx_packets")), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	tx0 := txPackets()
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	start := time.Now()
	// TSLIVE_FLOODERS=N runs N hping3 floods at once (default 1).
	floods, _ := strconv.Atoi(os.Getenv("TSLIVE_FLOODERS"))
	var wg sync.WaitGroup
	for i := range max(floods, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hping(t, l.a, secs*time.Second, "-S", "-p", strconv.Itoa(80+i), "--flood", l.prefix+"3")
		}()
	}
	var floodDone sync.WaitGroup
	floodDone.Add(1)
	go func() { wg.Wait(); floodDone.Done() }()
	finished := make(chan struct{})
	go func() { floodDone.Wait(); time.Sleep(300 * time.Millisecond); close(finished) }()
	r := track(t, src, 3*secs*time.Second, func(flow.Stats) bool {
		select {
		case <-finished:
			return true
		default:
			return false
		}
	})
	el := time.Since(start)
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano()-ru0.Utime.Nano()) + time.Duration(ru1.Stime.Nano()-ru0.Stime.Nano())
	st := src.Stats()
	sent := txPackets() - tx0
	t.Logf("flood %v: %d packets sent (%.0f/s); kernel %d packets (%.0f/s), %d dropped (%.0f/s), %d freezes; delivered %d; tracker %d packets, %d flows; capture process CPU %v (%.0f%% of one core)",
		el.Round(time.Millisecond), sent, float64(sent)/el.Seconds(), st.Packets, float64(st.Packets)/el.Seconds(), st.Drops, float64(st.Drops)/el.Seconds(), st.FreezeQueue,
		st.Delivered, r.stats.Packets, r.stats.Flows, cpu.Round(time.Millisecond), 100*cpu.Seconds()/el.Seconds())
	if st.Delivered+st.Drops > st.Packets || st.Delivered != r.stats.Packets || st.Packets == 0 {
		t.Errorf("inconsistent counters: %+v, tracker %+v", st, r.stats)
	}
}
