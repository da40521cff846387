package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	syslog "github.com/leodido/go-syslog/v4"
	"github.com/leodido/go-syslog/v4/octetcounting"
	"github.com/leodido/go-syslog/v4/rfc5424"

	"github.com/tcpsentry/tcpsentry/internal/sink"
	"github.com/tcpsentry/tcpsentry/internal/testenv"
)

// syncBuffer collects a child's output while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// hookReceiver is the webhook receiver of the e2e tests: it checks the
// signature and records deliveries by alert id; while down it answers 503.
type hookReceiver struct {
	t      *testing.T
	secret []byte
	down   atomic.Bool
	mu     sync.Mutex
	byID   map[string][]jsonAlert
	failed map[string]int // 503s answered per alert id
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	var a jsonAlert
	if err := json.Unmarshal(body, &a); err != nil {
		h.t.Errorf("webhook body is not alert JSON: %v\n%s", err, body)
		http.Error(w, "bad json", http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down.Load() {
		h.failed[a.ID]++
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	if sig := r.Header.Get(sink.SignatureHeader); !hmac.Equal([]byte(sig), []byte(sink.Sign(h.secret, body))) {
		h.t.Errorf("webhook signature %q does not match the body", sig)
	}
	h.byID[a.ID] = append(h.byID[a.ID], a)
}

func (h *hookReceiver) find(match func(jsonAlert) bool) (jsonAlert, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, as := range h.byID {
		if match(as[0]) {
			return as[0], len(as)
		}
	}
	return jsonAlert{}, 0
}

func (h *hookReceiver) failedFor(id string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.failed[id]
}

// syslogReceiver is a TCP syslog server that parses octet-counted RFC 5424
// strictly; a malformed message fails the test.
type syslogReceiver struct {
	t    *testing.T
	addr string
	mu   sync.Mutex
	msgs []*rfc5424.SyslogMessage
}

func newSyslogReceiver(t *testing.T) *syslogReceiver {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &syslogReceiver{t: t, addr: ln.Addr().String()}
	var conns sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Go(func() {
				defer c.Close()
				p := octetcounting.NewParser(syslog.WithListener(func(res *syslog.Result) {
					if res.Error != nil {
						t.Errorf("syslog message is not octet-counted RFC 5424: %v", res.Error)
						return
					}
					s.mu.Lock()
					s.msgs = append(s.msgs, res.Message.(*rfc5424.SyslogMessage))
					s.mu.Unlock()
				}))
				p.Parse(c)
			})
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return s
}

// find returns the id in the structured data of a message whose MSG
// (the alert JSON) matches, checking it against the alert.
func (s *syslogReceiver) find(match func(jsonAlert) bool) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.msgs {
		var a jsonAlert
		if m.Message == nil || json.Unmarshal([]byte(*m.Message), &a) != nil {
			continue
		}
		if match(a) {
			sd := (*m.StructuredData)[sink.SyslogSDID]
			if sd["id"] != a.ID || sd["detector"] != a.Detector || sd["severity"] != a.Severity {
				s.t.Errorf("syslog structured data %v disagrees with the alert %+v", sd, a)
			}
			return sd["id"], true
		}
	}
	return "", false
}

// daemon is a running `tcpsentry watch`.
type daemon struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	stdout *syncBuffer
	done   chan struct{}
	err    error
}

func startWatch(t *testing.T, args ...string) *daemon {
	t.Helper()
	return startDaemon(t, append([]string{"watch"}, args...)...)
}

// startDaemon runs tcpsentry with args until the test ends.
func startDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	d := &daemon{stderr: &syncBuffer{}, stdout: &syncBuffer{}, done: make(chan struct{})}
	d.cmd = exec.Command(binPath, args...)
	testenv.DieWithParent(d.cmd)
	d.cmd.Stdout, d.cmd.Stderr = d.stdout, d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	// Bounded: whatever the test does, the daemon does not outlive it.
	t.Cleanup(func() {
		_ = d.cmd.Process.Kill()
		<-d.done
		if t.Failed() {
			t.Logf("%s stderr:\n%s", args[0], d.stderr.String())
		}
	})
	return d
}

func (d *daemon) running() bool {
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

var metricsAddrRE = regexp.MustCompile(`msg="metrics listening" addr=(\S+)`)

func (d *daemon) metricsAddr(t *testing.T) string {
	t.Helper()
	var addr string
	waitFor(t, 20*time.Second, "the metrics address in the log", func() bool {
		m := metricsAddrRE.FindStringSubmatch(d.stderr.String())
		if m != nil {
			addr = m[1]
		}
		return addr != ""
	})
	return addr
}

// e2eConfig writes a watch config: only the test's ports are suspicious,
// and only high alerts are sent, so that other sockets on this shared host
// do not matter.
func e2eConfig(t *testing.T, path, storePath, hookURL, secret, syslogAddr, jsonl string, ports ...int) {
	t.Helper()
	var sus strings.Builder
	for _, p := range ports {
		fmt.Fprintf(&sus, "    - {port: %d, reason: \"e2e test port\", severity: high}\n", p)
	}
	jsonlCfg := "{enabled: false}"
	if jsonl != "" {
		jsonlCfg = fmt.Sprintf("{enabled: true, path: %q}", jsonl)
	}
	cfg := fmt.Sprintf(`ports:
  suspicious:
%s
sinks:
  min_severity: high
  timeout: 5s
  stdout: {enabled: true}
  jsonl: %s
  syslog: {enabled: true, network: tcp, address: %q, format: json}
  webhook: {enabled: true, url: %q, secret: %q, timeout: 2s, retries: 1}
watch:
  interval: 300ms
  metrics_listen: 127.0.0.1:0
  grace: 2s
  store: %q
`, sus.String(), jsonlCfg, syslogAddr, hookURL, secret, storePath)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// listenLoopback opens a TCP listener on a free loopback port.
func listenLoopback(t *testing.T) (net.Listener, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, ln.Addr().(*net.TCPAddr).Port
}

func onPort(port int) func(jsonAlert) bool {
	return func(a jsonAlert) bool {
		return a.Detector == "suspicious-port" && a.DstPort != nil && *a.DstPort == port
	}
}

func TestWatchE2E(t *testing.T) {
	dir := t.TempDir()
	secret := "e2e-secret"
	hook := &hookReceiver{t: t, secret: []byte(secret), byID: map[string][]jsonAlert{}, failed: map[string]int{}}
	srv := httptest.NewServer(hook)
	defer srv.Close()
	sl := newSyslogReceiver(t)
	ln1, p1 := listenLoopback(t)
	_ = ln1
	// p2 is reserved now (listener closed) and opened later as the
	// second finding; the port stays suspicious in the config.
	ln2, p2 := listenLoopback(t)
	ln2.Close()
	cfgPath := filepath.Join(dir, "watch.yaml")
	storePath := filepath.Join(dir, "store", "tcpsentry.db")
	e2eConfig(t, cfgPath, storePath, srv.URL+"/hook", secret, sl.addr, "", p1, p2)

	d := startWatch(t, "--config", cfgPath)

	// 1. The suspicious listener reaches the webhook and syslog with one id.
	var a1 jsonAlert
	waitFor(t, 30*time.Second, "the listener alert at the webhook", func() bool {
		var n int
		a1, n = hook.find(onPort(p1))
		return n > 0
	})
	if a1.Severity != "high" || a1.ID == "" {
		t.Errorf("webhook alert %+v", a1)
	}
	waitFor(t, 10*time.Second, "the listener alert at syslog", func() bool {
		id, ok := sl.find(onPort(p1))
		if ok && id != a1.ID {
			t.Fatalf("syslog id %s, webhook id %s", id, a1.ID)
		}
		return ok
	})
	if !strings.Contains(d.stdout.String(), fmt.Sprintf("suspicious port tcp/%d", p1)) {
		t.Errorf("stdout table lacks the alert:\n%s", d.stdout.String())
	}
	if !strings.Contains(d.stderr.String(), "level=WARN msg=alert status=new id="+a1.ID) {
		t.Errorf("no structured log line for the alert")
	}

	// 2. Metrics.
	addr := d.metricsAddr(t)
	waitFor(t, 10*time.Second, "metrics with the delivered alert", func() bool {
		body := httpGet(t, "http://"+addr+"/metrics")
		return strings.Contains(body, `tcpsentry_alerts_total{detector="suspicious-port",severity="high"}`) &&
			strings.Contains(body, `tcpsentry_sink_delivered_total{sink="webhook"}`) &&
			strings.Contains(body, `tcpsentry_outbox_depth{sink="webhook"} 0`) &&
			regexp.MustCompile(`tcpsentry_sockets\{proto="tcp",state="LISTEN"\} [1-9]`).MatchString(body) &&
			regexp.MustCompile(`tcpsentry_snapshot_cycles_total [1-9]`).MatchString(body)
	})

	// 3. An unchanged finding is not sent again.
	time.Sleep(time.Second) // three more cycles at 300ms
	if _, n := hook.find(onPort(p1)); n != 1 {
		t.Errorf("unchanged finding delivered %d times over several cycles, want 1", n)
	}

	// 4. SIGHUP with a bad config: logged with file:line, the daemon keeps running.
	good, _ := os.ReadFile(cfgPath)
	if err := os.WriteFile(cfgPath, append(good, []byte("  bogus_key: 1\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	badLine := strings.Count(string(good), "\n") + 1
	waitFor(t, 10*time.Second, "the reload failure in the log", func() bool {
		s := d.stderr.String()
		return strings.Contains(s, `level=ERROR msg="config reload failed; keeping the previous config"`) &&
			strings.Contains(s, fmt.Sprintf("%s:%d:", cfgPath, badLine))
	})
	if err := os.WriteFile(cfgPath, good, 0o600); err != nil {
		t.Fatal(err)
	}
	if !d.running() {
		t.Fatal("watch exited after a bad config")
	}

	// 5. kill -9 while the webhook receiver is down: the alert committed
	// before the crash is delivered after the restart, with the same id.
	hook.down.Store(true)
	ln2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p2))
	if err != nil {
		t.Skipf("port %d taken meanwhile: %v", p2, err)
	}
	defer ln2.Close()
	var id2 string
	waitFor(t, 30*time.Second, "the second alert at syslog", func() bool {
		var ok bool
		id2, ok = sl.find(onPort(p2))
		return ok
	})
	if want := fmt.Sprintf(`msg="new listener" proto=tcp local=127.0.0.1:%d`, p2); !strings.Contains(d.stderr.String(), want) {
		t.Errorf("log lacks %s", want)
	}
	waitFor(t, 20*time.Second, "a refused webhook delivery", func() bool { return hook.failedFor(id2) > 0 })
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-d.done
	if _, n := hook.find(onPort(p2)); n != 0 {
		t.Fatal("the receiver was down but got the alert")
	}
	hook.down.Store(false)
	d2 := startWatch(t, "--config", cfgPath)
	waitFor(t, 30*time.Second, "the queued alert after the restart", func() bool {
		_, n := hook.find(onPort(p2))
		return n > 0
	})
	got2, _ := hook.find(onPort(p2))
	if got2.ID != id2 {
		t.Errorf("after restart the webhook got id %s, syslog had %s", got2.ID, id2)
	}
	if _, n := hook.find(onPort(p1)); n < 1 {
		t.Error("first alert lost")
	}

	// 6. SIGTERM stops cleanly within the grace period.
	if err := d2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d2.done:
		if d2.err != nil {
			t.Errorf("watch after SIGTERM: %v", d2.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("watch did not stop on SIGTERM")
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestWatchOnceExitStatus(t *testing.T) {
	dir := t.TempDir()
	hook := &hookReceiver{t: t, secret: []byte("k"), byID: map[string][]jsonAlert{}, failed: map[string]int{}}
	srv := httptest.NewServer(hook)
	defer srv.Close()
	sl := newSyslogReceiver(t)
	_, p := listenLoopback(t)
	cfgPath := filepath.Join(dir, "watch.yaml")
	e2eConfig(t, cfgPath, filepath.Join(dir, "s.db"), srv.URL, "k", sl.addr, "", p)
	stdout, stderr, code := run(t, "watch", "--once", "--config", cfgPath)
	if code != exitFindings {
		t.Fatalf("watch --once with a suspicious listener: exit %d, want 1\n%s", code, stderr)
	}
	if !strings.Contains(stdout, fmt.Sprintf("suspicious port tcp/%d", p)) {
		t.Errorf("stdout lacks the alert:\n%s", stdout)
	}
	// --once drains before exiting: the webhook already has it.
	if _, n := hook.find(onPort(p)); n != 1 {
		t.Errorf("webhook got the alert %d times, want 1", n)
	}
	if _, ok := sl.find(onPort(p)); !ok {
		t.Error("syslog did not get the alert")
	}
	// A bad config is exit 2 naming file and line.
	if err := os.WriteFile(cfgPath, []byte("watch:\n  interval: soon\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = run(t, "watch", "--once", "--config", cfgPath)
	if code != exitError || !strings.Contains(stderr, cfgPath+":2:") {
		t.Errorf("bad config: exit %d, stderr %q", code, stderr)
	}
}

// TestWatchJSONLFullDisk puts the JSON lines file on a tiny full tmpfs:
// the error names the file and ENOSPC, the daemon keeps running and
// delivering elsewhere, and after space is freed and SIGHUP the alert
// arrives in the file.
func TestWatchJSONLFullDisk(t *testing.T) {
	testenv.NeedRoot(t)
	testenv.NeedTool(t, "mount")
	dir := t.TempDir()
	mnt := filepath.Join(dir, "tiny")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "mount", "-t", "tmpfs", "-o", "size=64k", "tcpsentry-e2e-sinks", mnt)
	t.Cleanup(func() { _ = exec.Command("umount", mnt).Run() })
	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1024; i++ { // 64k tmpfs: fills long before 4 MiB
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	f.Close()
	jsonl := filepath.Join(mnt, "alerts.jsonl")
	if err := os.WriteFile(jsonl, nil, 0o640); err != nil {
		t.Fatalf("creating the (empty) JSONL file on the full tmpfs: %v", err)
	}

	hook := &hookReceiver{t: t, secret: []byte("k"), byID: map[string][]jsonAlert{}, failed: map[string]int{}}
	srv := httptest.NewServer(hook)
	defer srv.Close()
	sl := newSyslogReceiver(t)
	_, p := listenLoopback(t)
	cfgPath := filepath.Join(dir, "watch.yaml")
	e2eConfig(t, cfgPath, filepath.Join(dir, "s.db"), srv.URL, "k", sl.addr, jsonl, p)
	d := startWatch(t, "--config", cfgPath)

	waitFor(t, 30*time.Second, "the JSONL failure in the log", func() bool {
		s := d.stderr.String()
		return strings.Contains(s, "sink=jsonl") && strings.Contains(s, "no space left on device") && strings.Contains(s, jsonl)
	})
	waitFor(t, 10*time.Second, "webhook delivery despite the full disk", func() bool {
		_, n := hook.find(onPort(p))
		return n > 0
	})
	if !d.running() {
		t.Fatal("watch exited on a full disk")
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the reload in the log", func() bool {
		return strings.Contains(d.stderr.String(), `msg="config reloaded"`)
	})
	waitFor(t, 20*time.Second, "the alert in the JSONL file after space was freed", func() bool {
		b, _ := os.ReadFile(jsonl)
		return bytes.Contains(b, []byte(fmt.Sprintf(`"dst_port":%d`, p)))
	})
	b, _ := os.ReadFile(jsonl)
	for i, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("%s:%d is not JSON (torn write?): %q", jsonl, i+1, line)
		}
	}
}

// TestWatchStdoutClosed runs watch with stdout on a pipe whose reader is
// gone: the stdout sink fails (EPIPE, logged), the daemon keeps running
// and the webhook still gets the alert.
func TestWatchStdoutClosed(t *testing.T) {
	dir := t.TempDir()
	hook := &hookReceiver{t: t, secret: []byte("k"), byID: map[string][]jsonAlert{}, failed: map[string]int{}}
	srv := httptest.NewServer(hook)
	defer srv.Close()
	sl := newSyslogReceiver(t)
	_, p := listenLoopback(t)
	cfgPath := filepath.Join(dir, "watch.yaml")
	e2eConfig(t, cfgPath, filepath.Join(dir, "s.db"), srv.URL, "k", sl.addr, "", p)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	d := &daemon{stderr: &syncBuffer{}, done: make(chan struct{})}
	d.cmd = exec.Command(binPath, "watch", "--config", cfgPath)
	testenv.DieWithParent(d.cmd)
	d.cmd.Stdout, d.cmd.Stderr = w, d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		_ = d.cmd.Process.Kill()
		<-d.done
		if t.Failed() {
			t.Logf("watch stderr:\n%s", d.stderr.String())
		}
	})
	waitFor(t, 30*time.Second, "the webhook delivery", func() bool {
		_, n := hook.find(onPort(p))
		return n > 0
	})
	waitFor(t, 10*time.Second, "the stdout failure in the log", func() bool {
		s := d.stderr.String()
		return strings.Contains(s, "sink=stdout") && strings.Contains(s, "broken pipe")
	})
	if !d.running() {
		t.Fatalf("watch died with stdout closed: %v", d.err)
	}
}

func TestWatchReadMissingFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.pcap")
	_, errOut, code := run(t, "watch", "--read", missing, "--store", filepath.Join(t.TempDir(), "s.db"))
	if code != 2 || !strings.Contains(errOut, "--read") || !strings.Contains(errOut, missing) {
		t.Fatalf("watch --read of a missing file: exit %d, stderr %q; want exit 2 naming the flag and the file", code, errOut)
	}
}
