package detect

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

func TestFloodSpoofed(t *testing.T) {
	d := NewFlood(defaults(t))
	e := NewEngine([]Detector{d, NewScan(defaults(t))}, "pcap:test", nil)
	// 5,000 SYNs from random sources over 2.5 s, answered with SYN-ACKs
	// that nobody acknowledges (history "Sh"), to 10.0.0.5:80.
	for i := 0; i < 5000; i++ {
		src := fmt.Sprintf("198.18.%d.%d:%d", i/250, i%250+1, 1024+i%60000)
		e.ObserveConn(probeConn(time.Duration(i)*500*time.Microsecond, src, "10.0.0.5:80", model.ProtoTCP, model.FlagSYN, "Sh", model.ConnS1))
	}
	// Ordinary completed connections to the same service are not counted.
	for i := 0; i < 100; i++ {
		c := probeConn(time.Duration(i)*time.Millisecond, fmt.Sprintf("10.0.1.%d:50000", i+1), "10.0.0.5:80", model.ProtoTCP, model.FlagSYN, "ShADadFf", model.ConnSF)
		c.OrigBytes = 300
		e.ObserveConn(c)
	}
	e.Flush(snapTime.Add(time.Minute))
	as := e.Alerts()
	if len(as) != 1 {
		t.Fatalf("want one flood alert (and no scan), got %d: %+v", len(as), as)
	}
	a := as[0]
	if a.Detector != "flood" || a.Dst != netip.MustParseAddr("10.0.0.5") || a.DstPort != 80 || a.Count != 5000 ||
		a.Evidence["spoofed_likely"] != true || a.Evidence["peak_per_s"] != 2000 || a.Severity != alert.Critical {
		t.Errorf("flood alert = %+v", a)
	}
}

func TestFloodQuietAndBounded(t *testing.T) {
	cfg := defaults(t)
	cfg.Detectors.Flood.MaxTargets = 50
	d := NewFlood(cfg)
	e := NewEngine([]Detector{d}, "pcap:test", nil)
	// Backscatter: the first packet is a SYN-ACK; never a flood.
	for i := 0; i < 3000; i++ {
		e.ObserveConn(probeConn(time.Duration(i)*time.Millisecond, "10.0.0.9:80", fmt.Sprintf("198.18.0.1:%d", 1024+i), model.ProtoTCP, model.FlagSYN|model.FlagACK, "H", model.ConnSHR))
	}
	// A slow trickle of failed attempts: many, but never 200 in a second.
	for i := 0; i < 2000; i++ {
		e.ObserveConn(probeConn(time.Duration(i)*100*time.Millisecond, fmt.Sprintf("10.0.3.%d:40000", i%200+1), "10.0.0.6:443", model.ProtoTCP, model.FlagSYN, "S", model.ConnS0))
	}
	// 1,000 targets hit once each: the table stays at its bound.
	for i := 0; i < 1000; i++ {
		e.ObserveConn(probeConn(time.Duration(i)*time.Millisecond, "10.0.4.1:40000", fmt.Sprintf("10.1.%d.%d:80", i/250, i%250+1), model.ProtoTCP, model.FlagSYN, "S", model.ConnS0))
	}
	e.Flush(snapTime.Add(time.Hour))
	if as := e.Alerts(); len(as) != 0 {
		t.Errorf("alerts: %+v", as)
	}
	if len(d.targets) > 50 || d.Evicted < 950 {
		t.Errorf("targets %d, evicted %d", len(d.targets), d.Evicted)
	}
}
