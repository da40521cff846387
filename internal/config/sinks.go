package config

import (
	"fmt"
	"github.com/tcpsentry/tcpsentry/internal/capture"
	"github.com/tcpsentry/tcpsentry/internal/capture/filter"
	"net"
	"net/url"
	"strings"
)

// Sinks configures where watch delivers alerts. Each alert is committed to
// the store's outbox once per enabled sink before delivery, and removed only
// when that sink accepted it.
type Sinks struct {
	// MinSeverity drops alerts below it before they reach the outbox.
	MinSeverity Severity `yaml:"min_severity"`
	// Timeout bounds one delivery attempt of one alert to one sink.
	Timeout Duration    `yaml:"timeout"`
	Stdout  StdoutSink  `yaml:"stdout"`
	JSONL   JSONLSink   `yaml:"jsonl"`
	Syslog  SyslogSink  `yaml:"syslog"`
	Webhook WebhookSink `yaml:"webhook"`
}

// StdoutSink prints the alert table of check on standard output.
type StdoutSink struct {
	Enabled bool `yaml:"enabled"`
}

// JSONLSink appends one alert JSON per line to a file.
type JSONLSink struct {
	Enabled bool   `yaml:"enabled"`
	Path    string `yaml:"path"`
}

// SyslogSink sends RFC 5424 messages over UDP, TCP or TLS.
type SyslogSink struct {
	Enabled    bool   `yaml:"enabled"`
	Network    string `yaml:"network"` // udp, tcp or tls
	Address    string `yaml:"address"` // host:port
	Facility   string `yaml:"facility"`
	Format     string `yaml:"format"` // json or title: what goes in MSG
	CAFile     string `yaml:"ca_file"`
	ServerName string `yaml:"server_name"`
}

// WebhookSink POSTs the alert JSON to a URL.
type WebhookSink struct {
	Enabled    bool              `yaml:"enabled"`
	URL        string            `yaml:"url"`
	Secret     string            `yaml:"secret"`      // HMAC-SHA256 key for X-Tcpsentry-Signature
	SecretFile string            `yaml:"secret_file"` // or read from this file (trailing newline trimmed)
	Headers    map[string]string `yaml:"headers"`
	CAFile     string            `yaml:"ca_file"`
	Timeout    Duration          `yaml:"timeout"` // one HTTP request
	Retries    int               `yaml:"retries"` // extra attempts within one delivery
}

// Watch configures the watch daemon.
type Watch struct {
	Interval Duration `yaml:"interval"` // between host snapshots
	Renotify Duration `yaml:"renotify"` // re-send an unchanged finding after this long; 0 never
	// MetricsListen is the Prometheus /metrics address; empty disables it.
	MetricsListen string   `yaml:"metrics_listen"`
	Grace         Duration `yaml:"grace"` // delivery time allowed on shutdown
	// Store overrides store.path for the daemon; empty means store.path.
	Store string `yaml:"store"`
	// Capture is live capture feeding the traffic detectors.
	Capture WatchCapture `yaml:"capture"`
	// Conntrack follows the kernel's connection tracking events.
	Conntrack WatchConntrack `yaml:"conntrack"`
}

// WatchCapture configures live capture (AF_PACKET) for watch.
type WatchCapture struct {
	Interfaces  []string `yaml:"interfaces"`  // none: capture is off
	Netns       string   `yaml:"netns"`       // network namespace of the interfaces; "" this one
	Filter      string   `yaml:"filter"`      // pcap-filter expression; "" everything
	Promiscuous bool     `yaml:"promiscuous"` // see traffic not addressed to this host
	// Progress is how often open connections are reported in progress (and
	// idle ones expired) so scans and floods alert while they happen.
	Progress Duration `yaml:"progress"`
	// AttemptTimeout ends an unanswered connection attempt, and CloseDelay
	// a closed or reset connection's record; shorter than Zeek's 5 s so
	// scans and floods are seen within about a second.
	AttemptTimeout Duration `yaml:"attempt_timeout"`
	CloseDelay     Duration `yaml:"close_delay"`
	// HandshakeTimeout ends a connection idle before its handshake
	// completed (Zeek: 1 min), so a flood's half-open connections end and
	// count within about a second.
	HandshakeTimeout Duration `yaml:"handshake_timeout"`
	MaxFlows         int      `yaml:"max_flows"` // flow table bound
}

// WatchConntrack configures conntrack events for watch.
type WatchConntrack struct {
	Enabled bool   `yaml:"enabled"`
	Netns   string `yaml:"netns"` // "" this one
}

// syslogFacilities are RFC 5424's facility names and codes.
var syslogFacilities = map[string]uint8{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
	"uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

// SyslogFacility returns the code of a facility name.
func SyslogFacility(name string) (uint8, bool) {
	f, ok := syslogFacilities[strings.ToLower(name)]
	return f, ok
}

// semanticSinks checks the sinks and watch sections.
func (c *Config) semanticSinks(report func(path string, err error)) {
	s := c.Sinks
	if s.Timeout.Duration <= 0 {
		report("$.sinks.timeout", fmt.Errorf("%v: must be positive", s.Timeout.Duration))
	}
	if s.JSONL.Enabled && s.JSONL.Path == "" {
		report("$.sinks.jsonl.path", fmt.Errorf("missing (jsonl is enabled)"))
	}
	if sl := s.Syslog; sl.Enabled {
		switch sl.Network {
		case "udp", "tcp", "tls":
		default:
			report("$.sinks.syslog.network", fmt.Errorf("%q: want udp, tcp or tls", sl.Network))
		}
		if _, _, err := net.SplitHostPort(sl.Address); err != nil {
			report("$.sinks.syslog.address", fmt.Errorf("%q: want host:port", sl.Address))
		}
		if _, ok := SyslogFacility(sl.Facility); !ok {
			report("$.sinks.syslog.facility", fmt.Errorf("%q: want kern, user, daemon, auth, authpriv, local0…local7 or another RFC 5424 name", sl.Facility))
		}
		if sl.Format != "json" && sl.Format != "title" {
			report("$.sinks.syslog.format", fmt.Errorf("%q: want json or title", sl.Format))
		}
	}
	if w := s.Webhook; w.Enabled {
		u, err := url.Parse(w.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			report("$.sinks.webhook.url", fmt.Errorf("%q: want an http:// or https:// URL", w.URL))
		}
		if w.Secret != "" && w.SecretFile != "" {
			report("$.sinks.webhook.secret_file", fmt.Errorf("give secret or secret_file, not both"))
		}
		if w.Timeout.Duration <= 0 {
			report("$.sinks.webhook.timeout", fmt.Errorf("%v: must be positive", w.Timeout.Duration))
		}
		if w.Retries < 0 || w.Retries > 10 {
			report("$.sinks.webhook.retries", fmt.Errorf("%d: want 0 to 10", w.Retries))
		}
	}
	wa := c.Watch
	if wa.Interval.Duration < 100_000_000 { // 100ms: below that a snapshot cannot finish
		report("$.watch.interval", fmt.Errorf("%v: must be at least 100ms", wa.Interval.Duration))
	}
	if wa.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(wa.MetricsListen); err != nil {
			report("$.watch.metrics_listen", fmt.Errorf("%q: want host:port, or empty to disable", wa.MetricsListen))
		}
	}
	cp := wa.Capture
	for _, v := range []struct {
		key string
		d   Duration
	}{{"progress", cp.Progress}, {"attempt_timeout", cp.AttemptTimeout}, {"close_delay", cp.CloseDelay},
		{"handshake_timeout", cp.HandshakeTimeout}} {
		if v.d.Duration < 10_000_000 {
			report("$.watch.capture."+v.key, fmt.Errorf("%v: must be at least 10ms", v.d.Duration))
		}
	}
	if cp.MaxFlows < 1 {
		report("$.watch.capture.max_flows", fmt.Errorf("%d: must be at least 1", cp.MaxFlows))
	}
	if cp.Filter != "" {
		if _, err := filter.Compile(cp.Filter, capture.LinkEthernet); err != nil {
			report("$.watch.capture.filter", err)
		}
	}
}
