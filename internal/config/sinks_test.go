package config

import (
	"strings"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
)

func TestSinksDefaults(t *testing.T) {
	cfg, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Sinks
	if !s.Stdout.Enabled || s.JSONL.Enabled || s.Syslog.Enabled || s.Webhook.Enabled {
		t.Errorf("default sinks %+v: want only stdout", s)
	}
	if s.MinSeverity.Severity != alert.Low || s.Timeout.Duration != 15*time.Second {
		t.Errorf("min_severity %v timeout %v", s.MinSeverity.Severity, s.Timeout.Duration)
	}
	w := cfg.Watch
	if w.MetricsListen != "127.0.0.1:9737" || w.Interval.Duration != 30*time.Second || w.Store != "" || w.Grace.Duration != 5*time.Second {
		t.Errorf("watch defaults %+v", w)
	}
}

func TestSinksOverlay(t *testing.T) {
	cfg, err := Parse([]byte(`sinks:
  syslog: {enabled: true, network: tls, address: "logs.example:6514", ca_file: /etc/ca.pem}
  webhook:
    enabled: true
    url: https://hooks.example/tcpsentry
    secret: k
    headers: {Authorization: "Bearer t"}
watch:
  interval: 5s
  metrics_listen: ""
`), "w.yaml")
	if err != nil {
		t.Fatal(err)
	}
	sl := cfg.Sinks.Syslog
	if !sl.Enabled || sl.Network != "tls" || sl.Facility != "local0" || sl.Format != "json" {
		t.Errorf("syslog %+v: overlay must keep the default facility and format", sl)
	}
	if cfg.Sinks.Webhook.Headers["Authorization"] != "Bearer t" || cfg.Sinks.Webhook.Retries != 3 {
		t.Errorf("webhook %+v", cfg.Sinks.Webhook)
	}
	if !cfg.Sinks.Stdout.Enabled || cfg.Watch.MetricsListen != "" || cfg.Watch.Interval.Duration != 5*time.Second {
		t.Errorf("stdout %v watch %+v", cfg.Sinks.Stdout.Enabled, cfg.Watch)
	}
}

func TestSinksErrorsNameFileLineAndKey(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"syslog network", "sinks:\n  syslog:\n    enabled: true\n    network: carrier-pigeon\n", []string{"bad.yaml:4:", "sinks.syslog.network", "carrier-pigeon"}},
		{"syslog address", "sinks:\n  syslog:\n    enabled: true\n    address: nowhere\n", []string{"bad.yaml:4:", "sinks.syslog.address"}},
		{"syslog facility", "sinks:\n  syslog:\n    enabled: true\n    facility: local9\n", []string{"bad.yaml:4:", "sinks.syslog.facility", "local9"}},
		{"webhook url", "sinks:\n  webhook:\n    enabled: true\n    url: ftp://x/y\n", []string{"bad.yaml:4:", "sinks.webhook.url"}},
		{"webhook url missing", "sinks:\n  webhook:\n    enabled: true\n", []string{"sinks.webhook.url"}},
		{"webhook retries", "sinks:\n  webhook:\n    enabled: true\n    url: http://x/\n    retries: 99\n", []string{"bad.yaml:5:", "sinks.webhook.retries"}},
		{"jsonl path", "sinks:\n  jsonl:\n    enabled: true\n    path: \"\"\n", []string{"bad.yaml:4:", "sinks.jsonl.path"}},
		{"min severity", "sinks:\n  min_severity: dire\n", []string{"bad.yaml:2:", "sinks.min_severity", "dire"}},
		{"interval", "watch:\n  interval: 1ms\n", []string{"bad.yaml:2:", "watch.interval"}},
		{"metrics", "watch:\n  metrics_listen: 9737\n", []string{"bad.yaml:2:", "watch.metrics_listen"}},
		{"unknown sink", "sinks:\n  pager: {enabled: true}\n", []string{"bad.yaml:2:", "pager"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), "bad.yaml")
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}
