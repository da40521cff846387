package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
)

func TestDefaults(t *testing.T) {
	cfg, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if got := len(cfg.Networks.Internal); got < 8 {
		t.Errorf("internal networks = %d, want RFC 1918, RFC 6598, ULA, link-local…", got)
	}
	want := map[Port]bool{4444: false, 31337: false, 6667: false, 1337: false, 12345: false, 5555: false}
	for _, p := range cfg.Ports.Suspicious {
		if p.Reason == "" {
			t.Errorf("suspicious port %d has no reason", p.Port)
		}
		if p.Severity.Severity == 0 {
			t.Errorf("suspicious port %d has no severity", p.Port)
		}
		if _, ok := want[p.Port]; ok {
			want[p.Port] = true
		}
	}
	for p, seen := range want {
		if !seen {
			t.Errorf("default suspicious ports lack %d", p)
		}
	}
	if cfg.Detectors.LongConnection.High.Duration != 7*24*time.Hour {
		t.Errorf("long-connection.high = %v", cfg.Detectors.LongConnection.High.Duration)
	}
	if !cfg.Networks.Internal[0].Contains(netip.MustParseAddr("10.1.2.3")) {
		t.Errorf("first internal network %v", cfg.Networks.Internal[0])
	}
}

func TestOverlayAndRoundTrip(t *testing.T) {
	cfg, err := Parse([]byte("detectors:\n  state-pile:\n    syn_recv: 10\nlisteners:\n  loopback: low\n"), "x.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Detectors.StatePile.SynRecv != 10 || cfg.Detectors.StatePile.CloseWait != 100 {
		t.Errorf("overlay: state-pile = %+v, want syn_recv 10 and default close_wait 100", cfg.Detectors.StatePile)
	}
	if cfg.Listeners.Loopback != "low" || len(cfg.Listeners.Allowed) == 0 {
		t.Errorf("overlay: listeners = %+v", cfg.Listeners)
	}
	out, err := Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(out, "printed")
	if err != nil {
		t.Fatalf("printed config does not load back: %v\n%s", err, out)
	}
	if again.Detectors.StatePile != cfg.Detectors.StatePile || again.Detectors.LongConnection.High != cfg.Detectors.LongConnection.High {
		t.Errorf("round trip changed values")
	}
}

func TestErrorsNameFileLineAndKey(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"unknown key", "detectors:\n  state-pile:\n    syn_recv: 10\n    bogus: 1\n", []string{"bad.yaml:4:", "unknown field \"bogus\""}},
		{"bad prefix", "networks:\n  internal:\n    - 10.0.0.0/8\n    - 10.0.0.0/99\n", []string{"bad.yaml:4:", "networks.internal[1]", "10.0.0.0/99"}},
		{"bad duration", "detectors:\n  long-connection:\n    medium: soon\n", []string{"bad.yaml:3:", "detectors.long-connection.medium", "soon"}},
		{"bad severity", "ports:\n  suspicious:\n    - {port: 1, reason: x, severity: dire}\n", []string{"bad.yaml:3:", "ports.suspicious[0].severity", "dire"}},
		{"bad port", "listeners:\n  allowed:\n    - {port: 70000}\n", []string{"bad.yaml:3:", "listeners.allowed[0].port", "70000"}},
		{"bad type", "detectors:\n  state-pile:\n    syn_recv: many\n", []string{"bad.yaml:3:"}},
		{"bad enum", "listeners:\n  loopback: maybe\n", []string{"bad.yaml:2:", "listeners.loopback", "maybe"}},
		{"threshold", "detectors:\n  state-pile:\n    close_wait: 0\n", []string{"bad.yaml:3:", "close_wait"}},
		{"feed format", "intel:\n  feeds:\n    - {name: a, path: /x, format: csv}\n", []string{"bad.yaml:3:", "intel.feeds[0].format"}},
		{"beacon score", "detectors:\n  beacon:\n    score: 1.5\n", []string{"bad.yaml:3:", "detectors.beacon.score", "1.5"}},
		{"beacon too few", "detectors:\n  beacon:\n    min_connections: 2\n", []string{"bad.yaml:3:", "detectors.beacon.min_connections"}},
		{"exfil pcr", "detectors:\n  exfiltration:\n    min_pcr: 3\n", []string{"bad.yaml:3:", "detectors.exfiltration.min_pcr"}},
		{"long traffic order", "detectors:\n  long-connection:\n    traffic:\n      high: 1m\n", []string{"bad.yaml:4:", "detectors.long-connection.traffic.high"}},
		{"anomaly features", "detectors:\n  anomaly:\n    min_features: 0\n", []string{"bad.yaml:3:", "detectors.anomaly.min_features"}},
	}
	for _, tc := range cases {
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

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Errorf("err = %v", err)
	}
}

func TestLoadFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte("ports:\n  suspicious:\n    - {port: 9999, reason: test, severity: critical}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Ports.Suspicious) != 1 || cfg.Ports.Suspicious[0].Severity.Severity != alert.Critical {
		t.Errorf("lists replace defaults: got %+v", cfg.Ports.Suspicious)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(Defaults())
	f.Add([]byte("detectors:\n  state-pile: {syn_recv: 3}\n"))
	f.Add([]byte("networks: {internal: [1.2.3.4, '::/0']}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = Parse(data, "fuzz.yaml")
	})
}
