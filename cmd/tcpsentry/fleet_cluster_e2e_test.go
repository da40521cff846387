package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/fleet"
	"github.com/tcpsentry/tcpsentry/internal/fleet/natstest"
)

// subjectAlerts reads every alert on subject (tcpsentry.fleet.alert, or
// a sentry's tcpsentry.alert.<host>).
func subjectAlerts(t *testing.T, urls []string, subject string) []alert.Alert {
	t.Helper()
	nc, err := fleet.Connect(fleet.ConnectOptions{URLs: urls, Name: "reader"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	// A plain ephemeral consumer: an ordered one retries its own creation
	// without end while the cluster is electing leaders.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	cons, err := js.CreateConsumer(ctx, fleet.AlertStream, jetstream.ConsumerConfig{FilterSubject: subject,
		AckPolicy: jetstream.AckNonePolicy, DeliverPolicy: jetstream.DeliverAllPolicy, InactiveThreshold: time.Minute})
	if err != nil {
		t.Logf("reading %s: %v", subject, err)
		return nil
	}
	var out []alert.Alert
	for range 100 {
		batch, err := cons.Fetch(100, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Logf("reading %s: %v", subject, err)
			return out
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var a alert.Alert
			if err := json.Unmarshal(m.Data(), &a); err != nil {
				t.Fatalf("%s: %v", subject, err)
			}
			out = append(out, a)
		}
		if n == 0 {
			break
		}
	}
	return out
}

// clusterHealthy reports whether the fleet's streams each have a leader
// and two current replicas.
func clusterHealthy(t *testing.T, urls []string) bool {
	nc, err := fleet.Connect(fleet.ConnectOptions{URLs: urls, Name: "health"})
	if err != nil {
		return false
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	for _, name := range []string{fleet.ConnStream, fleet.AlertStream, "KV_" + fleet.LeaseBucket} {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		st, err := js.Stream(ctx, name)
		cancel()
		if err != nil {
			return false
		}
		cl := st.CachedInfo().Cluster
		if cl == nil || cl.Leader == "" || len(cl.Replicas) != 2 {
			return false
		}
		for _, r := range cl.Replicas {
			if !r.Current || r.Offline {
				return false
			}
		}
	}
	return true
}

// TestFleetClusterEndToEnd is the fleet's fault test with the real
// commands: a three-node cluster of Debian's nats-server with R3 streams
// (`tcpsentry fleet init`), two `tcpsentry fleet` processes that must
// share the partitions, one NATS node SIGKILLed before the sentries
// publish, three `tcpsentry watch --read <recorded capture> --publish`
// sentries, then one analyzer SIGKILLed after the records are in. The
// guarantees checked: every record is acknowledged (none lost, the
// sentries' counters), the survivor takes over every partition, and each
// fleet finding is on tcpsentry.fleet.alert once per id and severity;
// the analyzers' own sinks may hold a finding twice (the crashed one
// delivered it, the survivor raised it again from the replay), always
// with the same id, which is what a receiver dedupes on.
func TestFleetClusterEndToEnd(t *testing.T) {
	c := natstest.StartCluster(t)
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fleetCfg := "fleet:\n  urls: [" + strings.Join(c.URLs, ", ") + "]\n  partitions: 4\n  replicas: 3\n  lease_ttl: 2s\n"
	initCfg := write("init.yaml", fleetCfg)
	var out, errOut string
	code := -1
	for range 40 { // until the cluster has elected its meta leader
		if out, errOut, code = run(t, "fleet", "init", "--config", initCfg, "--timeout", "5s"); code == 0 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if code != 0 || !strings.Contains(out, "replicas 3") {
		t.Fatalf("fleet init on the cluster: exit %d\n%s%s", code, out, errOut)
	}

	var analyzers []*daemon
	for i := range 2 {
		cfg := write(fmt.Sprintf("fleet%d.yaml", i), fleetCfg+"  store: "+filepath.Join(dir, fmt.Sprintf("fleet%d.db", i))+
			"\n  metrics_listen: 127.0.0.1:0\nsinks:\n  stdout: {enabled: false}\n  jsonl: {enabled: true, path: "+
			filepath.Join(dir, fmt.Sprintf("fleet%d.jsonl", i))+"}\n")
		analyzers = append(analyzers, startDaemon(t, "fleet", "--config", cfg, "--name", fmt.Sprint("an", i)))
	}
	owned := func(d *daemon) float64 {
		v, _ := metricValue(httpGet(t, "http://"+d.metricsAddr(t)+"/metrics"), "tcpsentry_fleet_partitions_owned")
		return v
	}
	waitFor(t, 60*time.Second, "the two analyzers sharing the 4 partitions", func() bool {
		a, b := owned(analyzers[0]), owned(analyzers[1])
		return a > 0 && b > 0 && a+b == 4
	})
	// A node dying seconds after the cluster formed, before every replica
	// caught up, is a different test (nats-server 2.9 can then lose its
	// quorum): kill one of a healthy cluster.
	waitFor(t, 60*time.Second, "every stream with a leader and two current replicas", func() bool { return clusterHealthy(t, c.URLs) })
	t.Logf("partitions owned: an0 %v, an1 %v; killing NATS node 1", owned(analyzers[0]), owned(analyzers[1]))
	c.Kill(1)

	sentries, records := startRecordedSentries(t, dir, fleetCfg)
	for i, d := range sentries {
		waitMetric(t, d, d.metricsAddr(t), "tcpsentry_fleet_records_acked_total", records[i], 90*time.Second)
	}
	t.Logf("all %v records acknowledged with one node down; SIGKILLing analyzer an0", records)
	_ = analyzers[0].cmd.Process.Signal(syscall.SIGKILL)
	<-analyzers[0].done
	waitFor(t, 60*time.Second, "the survivor owning all 4 partitions", func() bool { return owned(analyzers[1]) == 4 })

	var as []alert.Alert
	waitFor(t, 2*time.Minute, "fleet-destination, fleet-scan and fleet-lateral-chain on tcpsentry.fleet.alert", func() bool {
		as = subjectAlerts(t, []string{c.URLs[0], c.URLs[2]}, fleet.FleetAlertSubject)
		got := map[string]bool{}
		for _, a := range as {
			got[a.Detector] = true
		}
		return got["fleet-destination"] && got["fleet-scan"] && got["fleet-lateral-chain"]
	})
	_ = analyzers[1].cmd.Process.Signal(syscall.SIGTERM)
	<-analyzers[1].done
	if analyzers[1].err != nil {
		t.Errorf("survivor after SIGTERM: %v", analyzers[1].err)
	}
	for _, d := range sentries {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		<-d.done
	}

	onSubject := map[string]int{}
	perDetector := map[string]map[string]bool{}
	for _, a := range as {
		onSubject[a.ID+"/"+a.Severity.String()]++
		if perDetector[a.Detector] == nil {
			perDetector[a.Detector] = map[string]bool{}
		}
		perDetector[a.Detector][a.ID] = true
		t.Logf("on the subject: %s %s %s %q", a.ID, a.Severity, a.Detector, a.Title)
	}
	for k, n := range onSubject {
		if n != 1 {
			t.Errorf("fleet alert %s on tcpsentry.fleet.alert %d times", k, n)
		}
	}
	for _, d := range []string{"fleet-destination", "fleet-scan", "fleet-lateral-chain"} {
		if len(perDetector[d]) != 1 {
			t.Errorf("%s: %d findings (ids %v), want one", d, len(perDetector[d]), perDetector[d])
		}
	}
	// The sinks: every line is a finding the subject has, by id.
	ids := map[string]bool{}
	for _, a := range as {
		ids[a.ID] = true
	}
	lines, dup := 0, map[string]int{}
	for i := range 2 {
		b, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("fleet%d.jsonl", i)))
		for _, l := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
			var a alert.Alert
			if json.Unmarshal(l, &a) != nil || !strings.HasPrefix(a.Detector, "fleet-") {
				continue
			}
			lines++
			dup[a.ID]++
			if !ids[a.ID] {
				t.Errorf("analyzer %d's sink has fleet alert %s (%s) that is not on the subject", i, a.ID, a.Detector)
			}
		}
	}
	twice := 0
	for _, n := range dup {
		if n > 1 {
			twice++
		}
	}
	t.Logf("sinks: %d fleet alert lines, %d ids, %d of them delivered by both analyzers (same id)", lines, len(dup), twice)
}
