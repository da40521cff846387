package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tcpsentry/tcpsentry/internal/fleet"
	"github.com/tcpsentry/tcpsentry/internal/testenv"
)

// TestWatchLivePublish: a sentry captures live traffic in a namespace lab
// and publishes it. A real nmap SYN scan of 50 ports from the attacker
// must reach the TCPSENTRY_CONN stream as records (one per probed port,
// under the sentry's host name) and the sentry's scan alert must reach
// tcpsentry.alert.<host>.
func TestWatchLivePublish(t *testing.T) {
	testenv.NeedRoot(t)
	testenv.NeedTool(t, "nmap")
	n := newNATS(t)
	n.start()
	l := newLab(t)
	victimDev := strings.Fields(mustRun(t, "ip", "-n", l.victim, "-o", "link", "show", "type", "veth"))[1]
	victimDev = strings.TrimSuffix(strings.SplitN(victimDev, "@", 2)[0], ":")

	dir := t.TempDir()
	cfg := filepath.Join(dir, "watch.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, `fleet:
  urls: [%s]
  host: live-sentry
  partitions: 4
sinks:
  stdout: {enabled: false}
watch:
  interval: 1h
  metrics_listen: 127.0.0.1:0
  grace: 2s
  store: %s
`, n.url(), filepath.Join(dir, "store.db")), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := run(t, "fleet", "init", "--config", cfg); code != 0 {
		t.Fatalf("fleet init: exit %d\n%s%s", code, out, errOut)
	}
	d := startWatch(t, "--config", cfg, "--capture", victimDev, "--netns", l.victim)
	waitFor(t, 20*time.Second, "live capture to start", func() bool { return strings.Contains(d.stderr.String(), "live capture started") })

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", "netns", "exec", l.attacker, "nmap", "-sS", "-n", "-Pn", "-T4",
		"-p1-50", l.victimIP).CombinedOutput(); err != nil {
		t.Fatalf("nmap: %v\n%s", err, out)
	}

	nc, err := fleet.Connect(fleet.ConnectOptions{URLs: []string{n.url()}, Name: "reader"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	cons, err := js.OrderedConsumer(ctx, fleet.ConnStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ports := map[uint16]bool{}
	deadline := time.Now().Add(20 * time.Second)
	for len(ports) < 50 && time.Now().Before(deadline) {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			c, host, err := fleet.Decode(&nats.Msg{Subject: m.Subject(), Data: m.Data(), Header: m.Headers()})
			if err != nil {
				t.Fatalf("record on %s: %v", m.Subject(), err)
			}
			if host != "live-sentry" {
				t.Fatalf("record on %s: host %q", m.Subject(), host)
			}
			if c.Orig.Addr().String() == l.attackerIP && c.Resp.Addr().String() == l.victimIP && c.Resp.Port() >= 1 && c.Resp.Port() <= 50 {
				ports[c.Resp.Port()] = true
			}
		}
	}
	if len(ports) < 50 {
		t.Fatalf("the stream holds records of %d of the 50 probed ports", len(ports))
	}
	waitFor(t, 20*time.Second, "the scan alert on "+fleet.AlertSubject("live-sentry"), func() bool {
		for _, a := range subjectAlerts(t, []string{n.url()}, fleet.AlertSubject("live-sentry")) {
			if a.Detector == "scan" && a.Src.String() == l.attackerIP {
				return true
			}
		}
		return false
	})
}
