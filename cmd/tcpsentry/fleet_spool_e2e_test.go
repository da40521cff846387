package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tcpsentry/tcpsentry/internal/fleet"
	"github.com/tcpsentry/tcpsentry/internal/model"
	"github.com/tcpsentry/tcpsentry/internal/testenv"
	"github.com/tcpsentry/tcpsentry/internal/zeeklog"
)

// natsProc is Debian's nats-server with JetStream on a fixed loopback port
// and store, so that it can be stopped and started again.
type natsProc struct {
	t    *testing.T
	bin  string
	port int
	dir  string
	cmd  *exec.Cmd
}

func newNATS(t *testing.T) *natsProc {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	n := &natsProc{t: t, bin: testenv.NeedTool(t, "nats-server"), port: port, dir: t.TempDir()}
	t.Cleanup(n.stop)
	return n
}

func (n *natsProc) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

func (n *natsProc) start() {
	n.t.Helper()
	n.cmd = exec.Command(n.bin, "-a", "127.0.0.1", "-p", strconv.Itoa(n.port), "-js", "-sd", filepath.Join(n.dir, "js"))
	testenv.DieWithParent(n.cmd)
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	waitFor(n.t, 15*time.Second, "nats-server listening", func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", n.port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func (n *natsProc) stop() {
	if n.cmd != nil && n.cmd.ProcessState == nil {
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
		_ = n.cmd.Wait()
	}
}

// metricValue reads one unlabelled sample from a Prometheus exposition.
func metricValue(body, name string) (float64, bool) {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}

func waitMetric(t *testing.T, d *daemon, addr, name string, want float64, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		if !d.running() {
			t.Fatalf("the daemon exited: %v", d.err)
		}
		v, ok := metricValue(httpGet(t, "http://"+addr+"/metrics"), name)
		if ok && v == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is %v (exported: %v) after %v, want %v", name, v, ok, limit, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSentryCrashKeepsSpooledRecords: a sentry reads recorded records
// while the broker is down, so they wait in its spool; it is SIGKILLed;
// the broker comes back; started again (without input), the sentry
// publishes every spooled record, each stored once.
func TestSentryCrashKeepsSpooledRecords(t *testing.T) {
	const records = 30000
	n := newNATS(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "sentry.yaml")
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, `fleet:
  urls: [%s]
  host: crashy
  partitions: 4
  publish_buffer: 512
sinks:
  stdout: {enabled: false}
watch:
  interval: 1h
  metrics_listen: 127.0.0.1:0
  grace: 1s
  store: %s
`, n.url(), filepath.Join(dir, "sentry.db")), 0o600); err != nil {
		t.Fatal(err)
	}
	n.start()
	if out, errOut, code := run(t, "fleet", "init", "--config", cfgPath); code != 0 {
		t.Fatalf("fleet init: exit %d\n%s%s", code, out, errOut)
	}
	n.stop()

	// The recorded input: a JSON conn.log.
	logPath := filepath.Join(dir, "conn.log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	bw := bufio.NewWriter(f)
	start := time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)
	var line []byte
	for i := range records {
		c := &model.Conn{TS: start.Add(time.Duration(i) * time.Millisecond), UID: fmt.Sprintf("K%06d", i),
			Orig: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 7, byte(i >> 8), byte(i)}), uint16(20000+i%40000)),
			Resp: netip.MustParseAddrPort("192.0.2.10:443"), Proto: model.ProtoTCP, ConnState: model.ConnSF,
			Duration: time.Second, OrigBytes: 100, RespBytes: 2000, History: "ShADadFf", End: model.EndClosed}
		line = append(zeeklog.AppendJSON(line[:0], c), '\n')
		bw.Write(line)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	d := startWatch(t, "--config", cfgPath, "--read", logPath)
	addr := d.metricsAddr(t)
	waitMetric(t, d, addr, "tcpsentry_fleet_records_spooled_total", records, 60*time.Second)
	if v, _ := metricValue(httpGet(t, "http://"+addr+"/metrics"), "tcpsentry_fleet_records_acked_total"); v != 0 {
		t.Fatalf("%v records acknowledged with the broker down", v)
	}
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done

	n.start()
	d = startWatch(t, "--config", cfgPath)
	addr = d.metricsAddr(t)
	waitMetric(t, d, addr, "tcpsentry_fleet_spool_backlog_records", 0, 90*time.Second)
	body := httpGet(t, "http://"+addr+"/metrics")
	acked, _ := metricValue(body, "tcpsentry_fleet_records_acked_total")
	dropped, _ := metricValue(body, "tcpsentry_fleet_records_dropped_total")
	if acked != records || dropped != 0 {
		t.Fatalf("after the restart: %v acknowledged, %v dropped; want %d and 0", acked, dropped, records)
	}
	if !regexp.MustCompile(`publishing records spooled before this start" .*records=30000`).MatchString(d.stderr.String()) {
		t.Errorf("the restart did not log the spooled backlog:\n%s", d.stderr.String())
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	<-d.done
	if d.err != nil {
		t.Errorf("watch after SIGTERM: %v", d.err)
	}

	// Every record in the stream once.
	nc, err := fleet.Connect(fleet.ConnectOptions{URLs: []string{n.url()}, Name: "reader"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, fleet.ConnStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	uids := map[string]int{}
	total := 0
	for total < records {
		batch, err := cons.Fetch(2000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			c, host, err := fleet.Decode(&nats.Msg{Subject: m.Subject(), Data: m.Data(), Header: m.Headers()})
			if err != nil || host != "crashy" {
				t.Fatalf("stream message %s: host %q, %v", m.Subject(), host, err)
			}
			uids[c.UID]++
			got++
		}
		if got == 0 {
			break
		}
		total += got
	}
	if total != records || len(uids) != records {
		t.Fatalf("stream holds %d messages, %d distinct records; want %d of each", total, len(uids), records)
	}
	t.Logf("%d records spooled with the broker down, sentry SIGKILLed, restarted: all %d stored once", records, len(uids))
}

// TestFleetInitUnreachable: with no server answering, fleet init gives up
// after --timeout and says why, naming the connection error.
func TestFleetInitUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close() // nothing listens there now
	start := time.Now()
	_, errOut, code := run(t, "fleet", "init", "--server", fmt.Sprintf("nats://127.0.0.1:%d", port), "--timeout", "1500ms")
	if code != 2 || !strings.Contains(errOut, "connection refused") || !strings.Contains(errOut, "no NATS server of") {
		t.Fatalf("fleet init against a closed port: exit %d, stderr %q; want exit 2 naming the refused connection", code, errOut)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("fleet init took %v with --timeout 1.5s", took)
	}
}
