package detect

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// attempt is a SYN-started connection from src to dst at snapTime+at.
func attempt(at time.Duration, src, dst string, history string, state model.ConnState) *model.Conn {
	return &model.Conn{TS: snapTime.Add(at), UID: "C" + dst, Orig: netip.MustParseAddrPort(src), Resp: netip.MustParseAddrPort(dst),
		Proto: model.ProtoTCP, FirstFlags: model.FlagSYN, History: history, ConnState: state}
}

func TestRapidAttempts(t *testing.T) {
	cfg := defaults(t)
	cases := []struct {
		name     string
		feed     func(e *Engine)
		want     int // alerts
		severity alert.Severity
		pattern  string
	}{
		{"brute force on one port", func(e *Engine) {
			for i := range 300 { // 300 attempts in 3 s at one ssh server
				e.ObserveConn(attempt(time.Duration(i)*10*time.Millisecond, "10.0.0.66:40000", "10.0.0.5:22", "ShADadR", model.ConnRSTO))
			}
		}, 1, alert.High, "one-target"},
		{"worm fan-out, critical", func(e *Engine) {
			for i := range 2000 { // 2,000 hosts in 4 s
				e.ObserveConn(attempt(time.Duration(i)*2*time.Millisecond, "10.0.0.66:40000", fmt.Sprintf("10.1.%d.%d:445", i/250, i%250+1), "S", model.ConnS0))
			}
		}, 1, alert.Critical, "fan-out"},
		{"busy but steady client", func(e *Engine) {
			// 60 connections every 10 s for 10 minutes: below min_attempts.
			for i := range 3600 {
				e.ObserveConn(attempt(time.Duration(i)*time.Second/6, "10.0.0.7:40000", "10.0.0.80:443", "ShADadFf", model.ConnSF))
			}
		}, 0, 0, ""},
		{"fast against its own normal", func(e *Engine) {
			// 20 per 10 s for 10 minutes, then 250 in 5 s: ten times its normal.
			for i := range 1200 {
				e.ObserveConn(attempt(time.Duration(i)*time.Second/2, "10.0.0.9:40000", "10.0.0.80:443", "ShADadFf", model.ConnSF))
			}
			for i := range 250 {
				e.ObserveConn(attempt(600*time.Second+time.Duration(i)*20*time.Millisecond, "10.0.0.9:40000", fmt.Sprintf("10.0.3.%d:80", i%200+1), "S", model.ConnS0))
			}
		}, 1, alert.High, "fan-out"},
		{"backscatter is not an attempt", func(e *Engine) {
			for i := range 500 {
				c := attempt(time.Duration(i)*time.Millisecond, "10.0.0.5:80", fmt.Sprintf("203.0.113.%d:1234", i%250), "^h", model.ConnSHR)
				c.FirstFlags = model.FlagSYN | model.FlagACK
				e.ObserveConn(c)
			}
		}, 0, 0, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEngine([]Detector{NewRapidAttempts(cfg)}, "pcap:test", nil)
			tc.feed(e)
			e.Flush(snapTime.Add(time.Hour))
			as := e.Alerts()
			if len(as) != tc.want {
				t.Fatalf("%d alerts, want %d: %+v", len(as), tc.want, as)
			}
			if tc.want == 0 {
				return
			}
			a := as[0]
			if a.Severity != tc.severity || a.Evidence["pattern"] != tc.pattern || a.Detector != "rapid-attempts" || a.Raised.IsZero() {
				t.Errorf("alert = %s %q %v", a.Severity, a.Title, a.Evidence)
			}
		})
	}
}

func TestRapidAttemptsOwnNormalRaisesTheBar(t *testing.T) {
	// A source that always opens 150 connections per 10 s (a proxy, a
	// crawler) is its own normal: only the first windows, before its
	// history counts, may raise anything.
	e := NewEngine([]Detector{NewRapidAttempts(defaults(t))}, "pcap:test", nil)
	for i := range 9000 { // 15 per second for 10 minutes
		e.ObserveConn(attempt(time.Duration(i)*time.Second/15, "10.0.0.20:40000", fmt.Sprintf("198.51.100.%d:443", i%200+1), "ShADadFf", model.ConnSF))
	}
	e.Flush(snapTime.Add(time.Hour))
	for _, a := range e.Alerts() {
		if a.LastSeen.After(snapTime.Add(2 * time.Minute)) {
			t.Errorf("steady source alerted after its normal was learned: %q last seen %v", a.Title, a.LastSeen.Sub(snapTime))
		}
	}
}

func TestRapidAttemptsBounded(t *testing.T) {
	cfg := defaults(t)
	cfg.Detectors.RapidAttempts.MaxSources = 100
	d := NewRapidAttempts(cfg)
	e := NewEngine([]Detector{d}, "pcap:test", nil)
	for i := range 10000 {
		src := fmt.Sprintf("10.%d.%d.%d:1", i>>16&255, i>>8&255, i&255)
		e.ObserveConn(attempt(time.Duration(i)*time.Millisecond, src, "10.0.0.5:80", "S", model.ConnS0))
		e.ObserveConn(attempt(time.Duration(i)*time.Millisecond, src, "10.0.0.5:81", "S", model.ConnS0))
	}
	if len(d.sources) > 100 || d.Evicted < 9900 {
		t.Errorf("%d sources kept, %d evicted", len(d.sources), d.Evicted)
	}
}

func TestRapidAttemptsSweepThenFlood(t *testing.T) {
	// One source sweeps 300 ports, then hammers port 80: two findings, a
	// fan-out and a one-target one, even though no window was quiet.
	e := NewEngine([]Detector{NewRapidAttempts(defaults(t))}, "pcap:test", nil)
	for i := range 300 {
		e.ObserveConn(attempt(time.Duration(i)*10*time.Millisecond, "10.0.0.66:40000", fmt.Sprintf("10.0.0.5:%d", i+1), "Sr", model.ConnREJ))
	}
	for i := range 2000 {
		e.ObserveConn(attempt(3*time.Second+time.Duration(i)*time.Millisecond, fmt.Sprintf("10.0.0.66:%d", 1024+i), "10.0.0.5:80", "S", model.ConnS0))
	}
	e.Flush(snapTime.Add(time.Hour))
	as := e.Alerts()
	patterns := map[string]alert.Alert{}
	for _, a := range as {
		patterns[a.Evidence["pattern"].(string)] = a
	}
	if len(as) != 2 || patterns["fan-out"].ID == "" || patterns["one-target"].ID == "" {
		t.Fatalf("alerts: %+v", as)
	}
	if ft := patterns["one-target"]; ft.Raised.Before(snapTime.Add(3*time.Second)) || ft.Severity != alert.Critical {
		t.Errorf("one-target alert raised %v, severity %s", ft.Raised.Sub(snapTime), ft.Severity)
	}
}
