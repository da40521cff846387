package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/testenv"
)

// binPath is the tcpsentry binary built once for the end-to-end tests.
var binPath string

func TestMain(m *testing.M) {
	// The test binary doubles as a helper process for tests that need a
	// child with particular sockets.
	if os.Getenv("TCPSENTRY_TEST_HELPER") == "closewait" {
		n, _ := strconv.Atoi(os.Getenv("TCPSENTRY_TEST_N"))
		closeWaitHelper(os.Getenv("TCPSENTRY_TEST_ADDR"), n)
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "tcpsentry-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	// World-readable so the unprivileged test can run it as nobody.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	binPath = filepath.Join(dir, "tcpsentry")
	build := exec.Command("go", "build", "-o", binPath, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building tcpsentry: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// run executes the binary with a bounded time and returns stdout and stderr.
func run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runCmd(t, exec.Command(binPath, args...))
}

func runCmd(t *testing.T, cmd *exec.Cmd) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var o, e bytes.Buffer
	c := exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
	c.Env, c.Dir, c.SysProcAttr = cmd.Env, cmd.Dir, cmd.SysProcAttr
	c.Stdout, c.Stderr = &o, &e
	err := c.Run()
	code = 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("%s: %v", strings.Join(cmd.Args, " "), err)
		}
		code = ee.ExitCode()
	}
	return o.String(), e.String(), code
}

// jsonSocket is the part of a `conns --json` line the tests read.
type jsonSocket struct {
	Netns      string  `json:"netns"`
	Proto      string  `json:"proto"`
	Family     string  `json:"family"`
	State      string  `json:"state"`
	LocalAddr  string  `json:"local_addr"`
	LocalPort  int     `json:"local_port"`
	RemoteAddr string  `json:"remote_addr"`
	RemotePort int     `json:"remote_port"`
	Inode      uint64  `json:"inode"`
	ConnStart  string  `json:"conn_start"`
	AgeS       float64 `json:"age_s"`
	AgeMaxS    float64 `json:"age_max_s"`
	Processes  []struct {
		PID     int      `json:"pid"`
		PPID    int      `json:"ppid"`
		Name    string   `json:"name"`
		Exe     string   `json:"exe"`
		Cmdline []string `json:"cmdline"`
		User    string   `json:"user"`
		Start   string   `json:"start"`
		FDs     []int    `json:"fds"`
	} `json:"processes"`
}

func (s jsonSocket) hasPID(pid int) bool {
	for _, p := range s.Processes {
		if p.PID == pid {
			return true
		}
	}
	return false
}

func parseJSONLines(t *testing.T, out string) []jsonSocket {
	t.Helper()
	var socks []jsonSocket
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for n := 1; sc.Scan(); n++ {
		var s jsonSocket
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatalf("--json line %d is not valid JSON: %v\n%s", n, err, sc.Text())
		}
		socks = append(socks, s)
	}
	return socks
}

// netnsCounter makes namespace names unique within one test binary.
var netnsCounter atomic.Int32

// newNetns creates a network namespace with loopback up and removes it,
// after killing the processes started in it, when the test ends.
func newNetns(t *testing.T) string {
	t.Helper()
	testenv.NeedRoot(t)
	testenv.NeedTool(t, "ip")
	name := fmt.Sprintf("tcpsentry-e2e-%d-%d", os.Getpid(), netnsCounter.Add(1))
	mustRun(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	mustRun(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// startBackground starts a long-running helper process, bounded to two
// minutes, and kills it by PID when the test ends. The returned writer is
// its stdin, kept open so clients like ncat hold their connection.
func startBackground(t *testing.T, name string, args ...string) (*exec.Cmd, io.WriteCloser) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := exec.CommandContext(ctx, name, args...)
	testenv.DieWithParent(cmd)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		cancel()
	})
	return cmd, stdin
}

// waitFor polls cond every 20 ms for at most d; sockets set up by other
// processes have no completion signal the test could wait on instead.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// listening reports whether ss sees a TCP listener on port in netns.
func listening(netns string, port int) bool {
	args := []string{"-tlnH", fmt.Sprintf("sport = :%d", port)}
	if netns != "" {
		args = append([]string{"netns", "exec", netns, "ss"}, args...)
		out, _ := exec.Command("ip", args...).Output()
		return len(bytes.TrimSpace(out)) > 0
	}
	out, _ := exec.Command("ss", args...).Output()
	return len(bytes.TrimSpace(out)) > 0
}
