package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/fleet"
	"github.com/tcpsentry/tcpsentry/internal/flow"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// TestFleetEndToEnd runs the commands as a user would: a JetStream
// nats-server, `tcpsentry fleet init` (twice: idempotent), three
// `tcpsentry watch --read FILE --publish` sentries replaying what their
// hosts recorded, and two `tcpsentry fleet` processes whose JSON lines
// sinks must receive the fleet-destination, fleet-scan and
// fleet-lateral-chain findings, each once; the sentries' and analyzers'
// /metrics must account for every record.
func TestFleetEndToEnd(t *testing.T) {
	n := newNATS(t)
	n.start()
	url := n.url()
	dir := t.TempDir()

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

	// Settled before the records come: a rebalancing mid-run hands a
	// partition over, and its new owner re-raises from the replay what the
	// old one had delivered (same id; TestFleetClusterEndToEnd covers it).
	owned := func(d *daemon) float64 {
		v, _ := metricValue(httpGet(t, "http://"+d.metricsAddr(t)+"/metrics"), "tcpsentry_fleet_partitions_owned")
		return v
	}
	waitFor(t, 30*time.Second, "the two analyzers owning 2 partitions each", func() bool {
		return owned(analyzers[0]) == 2 && owned(analyzers[1]) == 2
	})

	// Three sentries publish what their hosts recorded (real traffic,
	// captured by lab/fleet-record.sh): each beacons to one external
	// address, receives ten refused probes from one scanner, and takes
	// part in a lateral-movement chain. They are `tcpsentry watch --read
	// FILE --publish` processes.
	sentries, records := startRecordedSentries(t, dir, fleetCfg)
	total := 0
	for _, n := range records {
		total += int(n)
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
	waitFor(t, 60*time.Second, "fleet-destination, fleet-scan and fleet-lateral-chain alerts in the analyzers' sinks", func() bool {
		seen := map[string]bool{}
		for _, a := range read() {
			seen[a.Detector] = true
		}
		return seen["fleet-destination"] && seen["fleet-scan"] && seen["fleet-lateral-chain"]
	})
	// Every record acknowledged by the stream, as the sentries count it,
	// and each sentry's own finding (the vertical scan of its host) on its
	// alert subject.
	for i, d := range sentries {
		waitMetric(t, d, d.metricsAddr(t), "tcpsentry_fleet_records_acked_total", records[i], 20*time.Second)
		host := []string{"sentry-a", "sentry-b", "sentry-c"}[i]
		waitFor(t, 20*time.Second, "the scan alert of "+host+" on "+fleet.AlertSubject(host), func() bool {
			for _, a := range subjectAlerts(t, []string{url}, fleet.AlertSubject(host)) {
				if a.Detector == "scan" && strings.Contains(a.Title, netip.AddrFrom4([4]byte{10, 0, byte(i + 1), 10}).String()) {
					return true
				}
				t.Logf("on %s: %s %q dst %v", fleet.AlertSubject(host), a.Detector, a.Title, a.Dst)
			}
			return false
		})
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
	if processed < float64(2*total) {
		t.Errorf("analyzers processed %v record messages, want at least %d (%d records, two sides)", processed, 2*total, total)
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

// startRecordedSentries starts three `tcpsentry watch --read <recorded
// capture> --publish` sentries (internal/fleet/testdata/recorded, real
// traffic captured by lab/fleet-record.sh) with fleetCfg's fleet section,
// and returns them with the number of records each capture holds.
func startRecordedSentries(t *testing.T, dir, fleetCfg string) ([]*daemon, []float64) {
	t.Helper()
	var sentries []*daemon
	var records []float64
	for _, host := range []string{"sentry-a", "sentry-b", "sentry-c"} {
		input, err := filepath.Abs(filepath.Join("..", "..", "internal", "fleet", "testdata", "recorded", host+".pcap"))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		if _, err := flow.Run(t.Context(), flow.Input{Paths: []string{input}, Emit: func(*model.Conn) { n++ },
			Warn: func(err error) { t.Errorf("%s: %v", input, err) }}); err != nil {
			t.Fatal(err)
		}
		records = append(records, float64(n))
		cfg := filepath.Join(dir, host+".yaml")
		body := fleetCfg + "  host: " + host + "\nsinks:\n  stdout: {enabled: false}\n" +
			"watch:\n  interval: 1h\n  metrics_listen: 127.0.0.1:0\n  grace: 2s\n  store: " + filepath.Join(dir, host+".db") + "\n"
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		sentries = append(sentries, startWatch(t, "--config", cfg, "--read", input))
	}
	return sentries, records
}
