package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/model"
	"github.com/tcpsentry/tcpsentry/internal/testenv"
	"github.com/tcpsentry/tcpsentry/internal/zeeklog"
)

// TestFleetEndToEnd runs the commands as a user would: a JetStream
// nats-server, `tcpsentry fleet init` (twice: idempotent), three
// `tcpsentry watch --read FILE --publish` sentries replaying what their
// hosts recorded, and two `tcpsentry fleet` processes whose JSON lines
// sinks must receive the fleet-destination and fleet-scan findings, each
// once; the sentries' and analyzers' /metrics must account for every
// record.
func TestFleetEndToEnd(t *testing.T) {
	bin := testenv.NeedTool(t, "nats-server")
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	srv := exec.Command(bin, "-a", "127.0.0.1", "-p", fmt.Sprint(port), "-js", "-sd", filepath.Join(dir, "js"))
	var srvLog bytes.Buffer
	srv.Stdout, srv.Stderr = &srvLog, &srvLog
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	waitFor(t, 10*time.Second, "nats-server listening", func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fleetCfg := "fleet:\n  urls: [" + url + "]\n  partitions: 4\n  lease_ttl: 2s\n"
	initCfg := write("init.yaml", fleetCfg)
	for range 2 {
		out, errOut, code := run(t, "fleet", "init", "--config", initCfg)
		if code != 0 || !strings.Contains(out, "ready") {
			t.Fatalf("fleet init: exit %d\n%s%s", code, out, errOut)
		}
	}

	// Two analyzers, each with its own store and JSON lines sink.
	var analyzers []*daemon
	for i := range 2 {
		jsonl := filepath.Join(dir, fmt.Sprintf("fleet%d.jsonl", i))
		cfg := write(fmt.Sprintf("fleet%d.yaml", i), fleetCfg+"  store: "+filepath.Join(dir, fmt.Sprintf("fleet%d.db", i))+
			"\n  metrics_listen: 127.0.0.1:0\nsinks:\n  stdout: {enabled: false}\n  jsonl: {enabled: true, path: "+jsonl+"}\n")
		analyzers = append(analyzers, startDaemon(t, "fleet", "--config", cfg, "--name", fmt.Sprint("an", i)))
	}

	// Three sentries publish what their hosts recorded: each beacons to
	// one external address and receives 10 refused probes from one
	// scanner. They are `tcpsentry watch --read FILE --publish` processes.
	now := time.Now().Add(-time.Minute)
	var sentries []*daemon
	for i, host := range []string{"sentry-a", "sentry-b", "sentry-c"} {
		var recs []*model.Conn
		me := netip.AddrFrom4([4]byte{10, 1, byte(i), 10})
		for k := range 4 {
			recs = append(recs, &model.Conn{TS: now.Add(time.Duration(k) * 10 * time.Second), UID: fmt.Sprintf("B%d%d", i, k),
				Orig: netip.AddrPortFrom(me, uint16(40000+k)), Resp: netip.MustParseAddrPort("203.0.113.7:443"),
				Proto: model.ProtoTCP, ConnState: model.ConnSF, Duration: time.Second, End: model.EndClosed})
		}
		for k := range 10 {
			recs = append(recs, &model.Conn{TS: now.Add(time.Duration(i*10+k) * 10 * time.Millisecond), UID: fmt.Sprintf("S%d%d", i, k),
				Orig: netip.MustParseAddrPort("198.51.100.9:61000"), Resp: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i), byte(20 + k)}), 22),
				Proto: model.ProtoTCP, ConnState: model.ConnREJ, FirstFlags: model.FlagSYN, End: model.EndClosed, Unset: model.FieldDuration})
		}
		var log []byte
		for _, c := range recs {
			log = append(zeeklog.AppendJSON(log, c), '\n')
		}
		input := write(host+".log", string(log))
		cfg := write(host+".yaml", fleetCfg+"  host: "+host+"\nsinks:\n  stdout: {enabled: false}\n"+
			"watch:\n  interval: 1h\n  metrics_listen: 127.0.0.1:0\n  grace: 2s\n  store: "+filepath.Join(dir, host+".db")+"\n")
		sentries = append(sentries, startWatch(t, "--config", cfg, "--read", input))
	}

	type line struct{ ID, Detector, Title string }
	read := func() []line {
		var out []line
		for i := range 2 {
			b, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("fleet%d.jsonl", i)))
			for _, l := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
				var a line
				if json.Unmarshal(l, &a) == nil && a.ID != "" {
					out = append(out, a)
				}
			}
		}
		return out
	}
	waitFor(t, 60*time.Second, "fleet-destination and fleet-scan alerts in the analyzers' sinks", func() bool {
		seen := map[string]bool{}
		for _, a := range read() {
			seen[a.Detector] = true
		}
		return seen["fleet-destination"] && seen["fleet-scan"]
	})
	// Every record acknowledged by the stream, as the sentries count it.
	for i, d := range sentries {
		waitMetric(t, d, d.metricsAddr(t), "tcpsentry_fleet_records_acked_total", 14, 20*time.Second)
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		<-d.done
		if d.err != nil {
			t.Errorf("sentry %d: %v", i, d.err)
		}
	}
	// The analyzers processed them all, once per side.
	var processed float64
	for _, a := range analyzers {
		v, ok := metricValue(httpGet(t, "http://"+a.metricsAddr(t)+"/metrics"), "tcpsentry_fleet_records_processed_total")
		if !ok {
			t.Fatalf("tcpsentry_fleet_records_processed_total not exported by an analyzer")
		}
		processed += v
	}
	if processed < 2*42 {
		t.Errorf("analyzers processed %v record messages, want at least %d (42 records, two sides)", processed, 2*42)
	}
	for _, a := range analyzers {
		_ = a.cmd.Process.Signal(syscall.SIGTERM)
	}
	for i, a := range analyzers {
		<-a.done
		if a.err != nil {
			t.Errorf("analyzer %d: %v", i, a.err)
		}
	}
	ids := map[string]int{}
	for _, a := range read() {
		ids[a.ID]++
		t.Logf("%s %s %q", a.ID, a.Detector, a.Title)
	}
	for id, n := range ids {
		if n != 1 {
			t.Errorf("alert %s delivered %d times", id, n)
		}
	}
}
