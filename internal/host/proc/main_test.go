package proc

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary doubles as a helper process (re-exec'd with helperEnv
// set) so that tests can hold sockets in other processes and scan as
// another user without any tool but the binary itself.
const helperEnv = "TCPSENTRY_PROC_HELPER"

func TestMain(m *testing.M) {
	switch mode := os.Getenv(helperEnv); {
	case mode == "":
		os.Exit(m.Run())
	case strings.HasPrefix(mode, "listen="):
		helperListen(mode)
	case mode == "scan":
		helperScan()
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", helperEnv, mode)
		os.Exit(2)
	}
}

// helperListen ("listen=N,first=K") opens N listening TCP sockets on the
// loopback addresses benchAddr(K) … benchAddr(K+N-1), says "ready" and
// holds them until its stdin closes.
func helperListen(mode string) {
	var n, first int
	if _, err := fmt.Sscanf(mode, "listen=%d,first=%d", &n, &first); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fds, err := openListeners(first, n)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin) //nolint:errcheck // returns when the parent closes stdin
	closeAll(fds)
	os.Exit(0)
}

// helperScanResult is what helperScan prints, as JSON.
type helperScanResult struct {
	Denied, Scanned int
	Errors          []string
	Warnings        []string
	Owners          map[uint64][]int32 // inode → owner pids, for the inodes asked for
}

// helperScan scans /proc and prints a helperScanResult; the inodes whose
// owners to report are in TCPSENTRY_PROC_INODES (comma-separated).
func helperScan() {
	tab, err := Scan(context.Background(), Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	res := helperScanResult{Denied: tab.Denied, Scanned: tab.Scanned, Warnings: tab.Warnings(),
		Owners: map[uint64][]int32{}}
	for _, e := range tab.Errors {
		res.Errors = append(res.Errors, e.Error())
	}
	for s := range strings.SplitSeq(os.Getenv("TCPSENTRY_PROC_INODES"), ",") {
		ino, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			continue
		}
		res.Owners[ino] = []int32{}
		for _, o := range tab.Owners[ino] {
			res.Owners[ino] = append(res.Owners[ino], o.PID)
		}
	}
	json.NewEncoder(os.Stdout).Encode(res) //nolint:errcheck
	os.Exit(0)
}

// benchAddr is the i-th loopback address used for test listeners,
// 127.200.0.1 upwards: one fixed port on many addresses gives 50,000
// listeners without exhausting the ephemeral port range, and 127.200/16
// is unlikely to collide with anyone else's loopback tests.
func benchAddr(i int) netip.AddrPort {
	i++
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, byte(200 + i>>16), byte(i >> 8), byte(i)}), 40123)
}

// openListeners opens n listening TCP sockets on benchAddr(first…).
func openListeners(first, n int) ([]int, error) {
	fds := make([]int, 0, n)
	for i := first; i < first+n; i++ {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			closeAll(fds)
			return nil, fmt.Errorf("socket %d: %w", i, err)
		}
		fds = append(fds, fd)
		a := benchAddr(i)
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			closeAll(fds)
			return nil, err
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: a.Addr().As4(), Port: int(a.Port())}); err != nil {
			closeAll(fds)
			return nil, fmt.Errorf("bind %v: %w", a, err)
		}
		if err := unix.Listen(fd, 1); err != nil {
			closeAll(fds)
			return nil, fmt.Errorf("listen %v: %w", a, err)
		}
	}
	return fds, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// startHelper re-execs the test binary in helper mode and returns once it
// says "ready"; cleanup closes its stdin, kills it by PID and waits.
func startHelper(tb testing.TB, cmd *exec.Cmd) {
	tb.Helper()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		stdin.Close()
		unix.Kill(cmd.Process.Pid, unix.SIGKILL)
		cmd.Wait() //nolint:errcheck // killed on purpose
	})
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("helper said %q", line)
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			tb.Fatalf("helper %v: %v", cmd.Args, err)
		}
	case <-time.After(60 * time.Second):
		tb.Fatalf("helper %v: not ready after 60s", cmd.Args)
	}
}

// startListenHelper starts a helper holding n listeners from benchAddr(first).
func startListenHelper(tb testing.TB, first, n int) *exec.Cmd {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=listen=%d,first=%d", helperEnv, n, first))
	startHelper(tb, cmd)
	return cmd
}
