package netlink

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/model"
	"github.com/tcpsentry/tcpsentry/internal/testenv"
)

func TestMain(m *testing.M) {
	if n := os.Getenv(helperEnv); n != "" {
		os.Exit(holdConnections(n))
	}
	if ns := os.Getenv(goexitEnv); ns != "" {
		os.Exit(goexitInNetns(ns))
	}
	if os.Getenv(noCapEnv) != "" {
		os.Exit(reportWithoutCaps())
	}
	os.Exit(m.Run())
}

// ctRuleset makes conntrack track a namespace's traffic: conntrack runs in
// a namespace only once a rule there uses it, on input and, for locally
// generated loopback traffic, output.
const ctRuleset = `table inet t {
	chain in { type filter hook input priority 0; policy accept; ct state new,established counter accept; }
	chain out { type filter hook output priority 0; policy accept; ct state new,established counter accept; }
}
`

// newConntrackNetns creates a namespace whose connections conntrack tracks,
// with packet counters on.
func newConntrackNetns(t testing.TB) string {
	t.Helper()
	ns := newNetns(t)
	nft := testenv.NeedTool(t, "nft")
	cmd := exec.Command("ip", "netns", "exec", ns, nft, "-f", "-")
	cmd.Stdin = strings.NewReader(ctRuleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v\n%s", ns, err, out)
	}
	if err := InNetns(ns, func() error {
		_, err := enableSysctl("/proc/sys/net/netfilter/nf_conntrack_acct")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return ns
}

// setupLab opens, inside namespace ns, the known sockets and connections
// that the fixtures and the end-to-end tests look for, with fixed ports (a
// fresh namespace has no others). Everything is closed when the test ends.
//
//	tcp4 LISTEN 127.0.0.1:7000; 7001 -> 7000 established, "hello" sent;
//	     7005 -> 7000 closed by the client (TIME_WAIT)
//	tcp6 LISTEN [::1]:7003; [::1]:7010 -> 7003 established, "v6" sent
//	dual-stack LISTEN [::]:7004; 127.0.0.1:7006 -> 7004, "abc" sent
//	udp4 127.0.0.1:7002 unconnected; 7009 -> 7002 connected, ping/pong
//	udp6 [::1]:7007 unconnected; [::1]:7008 -> 7007 connected, ping/pong
func setupLab(t testing.TB, ns string) {
	t.Helper()
	var closers []io.Closer
	t.Cleanup(func() {
		for _, c := range closers {
			c.Close()
		}
	})
	err := InNetns(ns, func() error {
		deadline := time.Now().Add(10 * time.Second) // no step may hang the test
		keep := func(c io.Closer, err error) error {
			if err == nil {
				closers = append(closers, c)
				if dc, ok := c.(interface{ SetDeadline(time.Time) error }); ok {
					return dc.SetDeadline(deadline)
				}
			}
			return err
		}
		listen := func(network, addr string) (*net.TCPListener, error) {
			l, err := net.Listen(network, addr)
			if err != nil {
				return nil, err
			}
			tl := l.(*net.TCPListener)
			return tl, keep(tl, err)
		}
		// connect dials from a fixed port, accepts, and sends msg.
		connect := func(ln *net.TCPListener, network, local, remote, msg string) (client, server net.Conn, err error) {
			laddr, err := net.ResolveTCPAddr(network, local)
			if err != nil {
				return nil, nil, err
			}
			d := net.Dialer{LocalAddr: laddr, Deadline: deadline}
			if client, err = d.Dial(network, remote); keep(client, err) != nil {
				return nil, nil, fmt.Errorf("dial %s -> %s: %w", local, remote, err)
			}
			if server, err = ln.Accept(); keep(server, err) != nil {
				return nil, nil, err
			}
			if _, err = client.Write([]byte(msg)); err != nil {
				return nil, nil, err
			}
			_, err = io.ReadFull(server, make([]byte, len(msg)))
			return client, server, err
		}
		udpPair := func(network, server, client string) error {
			saddr, _ := net.ResolveUDPAddr(network, server)
			caddr, _ := net.ResolveUDPAddr(network, client)
			s, err := net.ListenUDP(network, saddr)
			if keep(s, err) != nil {
				return err
			}
			c, err := net.DialUDP(network, caddr, saddr)
			if keep(c, err) != nil {
				return err
			}
			buf := make([]byte, 16)
			if _, err := c.Write([]byte("ping")); err != nil {
				return err
			}
			_, from, err := s.ReadFromUDP(buf)
			if err != nil {
				return err
			}
			if _, err := s.WriteToUDP([]byte("pong"), from); err != nil {
				return err
			}
			_, err = c.Read(buf)
			return err
		}

		ln4, err := listen("tcp4", "127.0.0.1:7000")
		if err != nil {
			return err
		}
		if _, _, err := connect(ln4, "tcp4", "127.0.0.1:7001", "127.0.0.1:7000", "hello"); err != nil {
			return err
		}
		c5, s5, err := connect(ln4, "tcp4", "127.0.0.1:7005", "127.0.0.1:7000", "x")
		if err != nil {
			return err
		}
		c5.Close() // the client closes first, so its socket ends in TIME_WAIT
		if _, err := io.ReadAll(s5); err != nil {
			return err
		}
		s5.Close()
		ln6, err := listen("tcp6", "[::1]:7003")
		if err != nil {
			return err
		}
		if _, _, err := connect(ln6, "tcp6", "[::1]:7010", "[::1]:7003", "v6"); err != nil {
			return err
		}
		dual, err := listen("tcp", "[::]:7004")
		if err != nil {
			return err
		}
		if _, _, err := connect(dual, "tcp4", "127.0.0.1:7006", "127.0.0.1:7004", "abc"); err != nil {
			return err
		}
		if err := udpPair("udp4", "127.0.0.1:7002", "127.0.0.1:7009"); err != nil {
			return err
		}
		return udpPair("udp6", "[::1]:7007", "[::1]:7008")
	})
	if err != nil {
		t.Fatalf("setting up sockets in %s: %v", ns, err)
	}
}

// helperEnv makes the test binary a process that holds N loopback TCP
// connections (2N+1 sockets), since one process may not open enough
// descriptors for a large dump.
const helperEnv = "TCPSENTRY_NETLINK_TEST_HOLD"

func holdConnections(arg string) int {
	n, err := strconv.Atoi(arg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	conns := make([]net.Conn, 0, 2*n)
	accepted := make(chan []net.Conn, 1)
	go func() {
		var srv []net.Conn
		for range n {
			c, err := ln.Accept()
			if err != nil {
				break
			}
			srv = append(srv, c)
		}
		accepted <- srv
	}()
	for range n {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		conns = append(conns, c)
	}
	conns = append(conns, <-accepted...)
	fmt.Printf("ready %d\n", len(conns)+1)
	io.Copy(io.Discard, os.Stdin) // hold until the test closes our stdin
	// Unreachable conns would be closed by their finalizers at the next GC,
	// while the test counts them.
	runtime.KeepAlive(conns)
	runtime.KeepAlive(ln)
	return 0
}

// manySockets starts helper processes in a fresh namespace that together
// hold helpers*(2*pairs+1) TCP sockets, and returns the namespace.
func manySockets(t testing.TB, helpers, pairs int) string {
	t.Helper()
	ns := newNetns(t)
	for range helpers {
		cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"="+strconv.Itoa(pairs))
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		ready := make(chan string, 1)
		go func() {
			line, _ := bufio.NewReader(stdout).ReadString('\n')
			ready <- line
			exited <- cmd.Wait()
		}()
		t.Cleanup(func() {
			stdin.Close()
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill() // by PID: only our helper
				<-exited
			}
		})
		select {
		case line := <-ready:
			if want := fmt.Sprintf("ready %d\n", 2*pairs+1); line != want {
				t.Fatalf("helper %d said %q, want %q", cmd.Process.Pid, line, want)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("helper %d not ready after 60s", cmd.Process.Pid)
		}
	}
	return ns
}

// TestSocketsMany dumps more than 50,000 sockets, the design's target, and
// reports the time: run with -v to see it.
func TestSocketsMany(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 54,000 sockets")
	}
	const helpers, pairs = 3, 9000
	ns := manySockets(t, helpers, pairs)
	var d *Dumper
	if err := InNetns(ns, func() (err error) { d, err = NewDumper(); return err }); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var (
		best  = time.Hour
		n     int
		socks []model.Socket
	)
	allocs := testing.AllocsPerRun(5, func() {
		t0 := time.Now()
		var err error
		socks, err = d.Sockets(context.Background(), DumpOptions{})
		best = min(best, time.Since(t0))
		if err != nil {
			t.Fatal(err)
		}
		n = len(socks)
	})
	t.Logf("%d sockets dumped in %v (best of 6), %.0f allocations per dump", n, best, allocs)
	if want := helpers * (2*pairs + 1); n < want {
		t.Fatalf("%d sockets dumped, want at least %d", n, want)
	}
	withInfo := 0
	for _, s := range socks {
		if s.TCP != nil {
			withInfo++
		}
	}
	if withInfo != n {
		t.Errorf("%d of %d TCP sockets have tcp_info", withInfo, n)
	}
	if allocs > float64(n)/20 {
		t.Errorf("%.0f allocations for %d sockets: the dump allocates per socket", allocs, n)
	}
	if best > time.Second {
		t.Errorf("dumping %d sockets took %v; the target is well under 100ms", n, best)
	}
}

func BenchmarkSocketsMany(b *testing.B) {
	ns := manySockets(b, 3, 9000)
	var d *Dumper
	if err := InNetns(ns, func() (err error) { d, err = NewDumper(); return err }); err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		socks, err := d.Sockets(context.Background(), DumpOptions{})
		if err != nil {
			b.Fatal(err)
		}
		n = len(socks)
	}
	b.ReportMetric(float64(n), "sockets")
}

// noCapEnv makes the test binary report what Conntrack and Sockets return,
// for TestWithoutNetAdmin, which runs it without CAP_NET_ADMIN.
const noCapEnv = "TCPSENTRY_NETLINK_TEST_NOCAP"

func reportWithoutCaps() int {
	_, err := Conntrack(context.Background())
	fmt.Printf("conntrack unavailable=%v: %v\n", errors.Is(err, ErrUnavailable), err)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return 2
	}
	defer ln.Close()
	socks, err := Sockets(context.Background(), DumpOptions{})
	_, found := findSocket(socks, model.ProtoTCP, ln.Addr().(*net.TCPAddr).AddrPort(), netip.MustParseAddrPort("0.0.0.0:0"))
	fmt.Printf("sockets: own listener found=%v: %v\n", found, err)
	return 0
}

// Without CAP_NET_ADMIN conntrack is refused with ErrUnavailable and a
// reason, while sock_diag still works (it needs no privilege).
func TestWithoutNetAdmin(t *testing.T) {
	testenv.NeedRoot(t)
	setpriv := testenv.NeedTool(t, "setpriv")
	cmd := exec.Command(setpriv, "--bounding-set=-net_admin", "--inh-caps=-net_admin", os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), noCapEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(string(out), "conntrack unavailable=true: conntrack ipv4: unavailable: operation not permitted (needs CAP_NET_ADMIN)") {
		t.Errorf("conntrack without CAP_NET_ADMIN:\n%s", out)
	}
	if !strings.Contains(string(out), "sockets: own listener found=true: <nil>") {
		t.Errorf("sock_diag without CAP_NET_ADMIN should work:\n%s", out)
	}
}
