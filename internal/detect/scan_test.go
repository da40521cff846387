package detect

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// probeConn is one scan probe as the flow tracker records it.
func probeConn(at time.Duration, src, dst string, proto model.Proto, flags model.TCPFlags, history string, state model.ConnState) *model.Conn {
	return &model.Conn{TS: snapTime.Add(at), UID: "C" + dst, Orig: netip.MustParseAddrPort(src), Resp: netip.MustParseAddrPort(dst),
		Proto: proto, FirstFlags: flags, History: history, ConnState: state}
}

func TestProbeType(t *testing.T) {
	cases := []struct {
		flags   model.TCPFlags
		history string
		proto   model.Proto
		want    string
	}{
		{model.FlagSYN, "S", model.ProtoTCP, "syn"},
		{model.FlagSYN, "ShR", model.ProtoTCP, "syn"},
		{model.FlagSYN, "ShAR", model.ProtoTCP, "connect"},
		{model.FlagSYN | model.FlagECE | model.FlagCWR, "S", model.ProtoTCP, "syn"},
		{0, "", model.ProtoTCP, "null"},
		{model.FlagFIN, "F", model.ProtoTCP, "fin"},
		{model.FlagFIN | model.FlagPSH | model.FlagURG, "F", model.ProtoTCP, "xmas"},
		{model.FlagACK, "A", model.ProtoTCP, "ack"},
		{model.FlagFIN | model.FlagACK, "F", model.ProtoTCP, "maimon"},
		{0, "", model.ProtoUDP, "udp"},
		{model.FlagSYN | model.FlagACK, "H", model.ProtoTCP, ""},
	}
	for _, tc := range cases {
		c := probeConn(0, "10.0.0.66:40000", "10.0.0.5:22", tc.proto, tc.flags, tc.history, model.ConnS0)
		if got := probeType(c); got != tc.want {
			t.Errorf("flags %q history %q: %q, want %q", tc.flags, tc.history, got, tc.want)
		}
	}
	// From a Zeek conn.log without first_flags: typed from the history.
	c := probeConn(0, "10.0.0.66:40000", "10.0.0.5:22", model.ProtoTCP, 0, "ShAR", model.ConnRSTO)
	c.Unset |= model.FieldFirstFlags
	if got := probeType(c); got != "connect" {
		t.Errorf("history-only connect probe typed %q", got)
	}
	// A kernel's SYN (window scaling, SACK, timestamps) to a closed port
	// is a connect() scan; nmap's bare raw SYN is a SYN scan.
	c = probeConn(0, "10.0.0.66:40000", "10.0.0.5:22", model.ProtoTCP, model.FlagSYN, "Sr", model.ConnREJ)
	c.SYNOptions = model.SYNSeen | model.OptMSS | model.OptSACKOK | model.OptTimestamp | model.OptWScale
	if got := probeType(c); got != "connect" {
		t.Errorf("kernel SYN typed %q", got)
	}
	c.SYNOptions = model.SYNSeen | model.OptMSS
	if got := probeType(c); got != "syn" {
		t.Errorf("raw SYN typed %q", got)
	}
	// A conversation is not a probe.
	c = probeConn(0, "10.0.0.66:40000", "10.0.0.5:22", model.ProtoTCP, model.FlagSYN, "ShADadFf", model.ConnSF)
	c.OrigBytes = 120
	if got := probeType(c); got != "" {
		t.Errorf("conversation typed %q", got)
	}
}

func TestScanVertical(t *testing.T) {
	e := NewEngine([]Detector{NewScan(defaults(t))}, "pcap:test", nil)
	for p := 1; p <= 100; p++ {
		h, st := "S", model.ConnS0
		if p%30 == 0 { // three open ports: SYN-ACK, then the scanner's RST
			h, st = "ShR", model.ConnRSTO
		} else if p%2 == 0 { // closed: RST from the target
			h, st = "Sr", model.ConnREJ
		}
		e.ObserveConn(probeConn(time.Duration(p)*time.Millisecond, "10.0.0.66:40000", fmt.Sprintf("10.0.0.5:%d", p), model.ProtoTCP, model.FlagSYN, h, st))
	}
	e.Flush(snapTime.Add(time.Second))
	as := e.Alerts()
	if len(as) != 1 {
		t.Fatalf("alerts: %+v", as)
	}
	a := as[0]
	if a.Severity != alert.Critical || a.Title != "vertical SYN scan of 10.0.0.5: 100 ports" || a.Count != 100 ||
		a.Evidence["answered"] != 3 || a.Evidence["kind"] != "vertical" || a.Evidence["probe"] != "syn" ||
		!a.FirstSeen.Equal(snapTime.Add(time.Millisecond)) || a.Src != netip.MustParseAddr("10.0.0.66") || a.Attack[0] != "T1046" {
		t.Errorf("vertical scan alert = %+v", a)
	}
	// The alert came at the 20th distinct port: latency is bounded by the threshold.
	if ports := a.Evidence["ports"]; ports != 100 {
		t.Errorf("evidence ports = %v", ports)
	}
}

func TestScanEpisodes(t *testing.T) {
	// Two nmap runs against the same host a minute apart, and a slow scan
	// (a probe every 5 s) that is only reported once it adds up.
	e := NewEngine([]Detector{NewScan(defaults(t))}, "pcap:test", nil)
	for run := range 2 {
		for p := 1; p <= 50; p++ {
			at := time.Duration(run)*time.Minute + time.Duration(p)*time.Millisecond
			e.ObserveConn(probeConn(at, "10.0.0.66:40000", fmt.Sprintf("10.0.0.5:%d", p), model.ProtoTCP, model.FlagSYN, "Sr", model.ConnREJ))
		}
	}
	for p := 1; p <= 12; p++ {
		at := 5*time.Minute + time.Duration(p)*5*time.Second
		e.ObserveConn(probeConn(at, "10.0.0.67:40000", fmt.Sprintf("10.0.0.5:%d", p), model.ProtoTCP, model.FlagSYN, "Sr", model.ConnREJ))
	}
	e.Flush(snapTime.Add(time.Hour))
	as := e.Alerts()
	var runs, slow []alert.Alert
	for _, a := range as {
		switch a.Src.String() {
		case "10.0.0.66":
			runs = append(runs, a)
		case "10.0.0.67":
			slow = append(slow, a)
		}
	}
	if len(runs) != 2 || runs[0].Count != 50 || runs[1].Count != 50 || runs[0].ID == runs[1].ID {
		t.Fatalf("two runs: %+v", runs)
	}
	if len(slow) != 1 || !slow[0].Raised.Equal(snapTime.Add(5*time.Minute+50*time.Second)) {
		t.Fatalf("slow scan: %+v", slow)
	}
}

func TestScanHorizontalAndTRW(t *testing.T) {
	e := NewEngine([]Detector{NewScan(defaults(t))}, "pcap:test", nil)
	var first []alert.Alert
	for h := 1; h <= 30; h++ {
		e.ObserveConn(probeConn(time.Duration(h)*time.Second, "10.0.0.66:40000", fmt.Sprintf("10.0.1.%d:445", h), model.ProtoTCP, model.FlagSYN, "S", model.ConnS0))
		if h == 4 {
			first = e.Alerts()
		}
	}
	if len(first) != 1 || first[0].Evidence["method"] != "trw" || first[0].Severity != alert.Medium {
		t.Fatalf("after 4 failed first contacts, want one TRW alert, got %+v", first)
	}
	e.Flush(snapTime.Add(time.Minute))
	as := e.Alerts()
	if len(as) != 2 || as[0].Title != "horizontal SYN scan of port 445: 30 hosts" || as[0].Severity != alert.High || as[0].Count != 30 {
		t.Errorf("alerts = %+v", as)
	}
}

func TestScanQuietOnClients(t *testing.T) {
	e := NewEngine([]Detector{NewScan(defaults(t))}, "pcap:test", nil)
	for h := 1; h <= 50; h++ {
		// A crawler: 50 hosts, every connection answered and carrying data.
		c := probeConn(time.Duration(h)*time.Second, "10.0.0.7:40000", fmt.Sprintf("198.51.100.%d:443", h), model.ProtoTCP, model.FlagSYN, "ShADadFf", model.ConnSF)
		c.OrigBytes, c.RespBytes = 500, 5000
		e.ObserveConn(c)
		// A client retrying one dead service: one target, many attempts.
		e.ObserveConn(probeConn(time.Duration(h)*time.Second, "10.0.0.8:40000", "10.0.0.9:8080", model.ProtoTCP, model.FlagSYN, "S", model.ConnS0))
		// A monitoring probe answered by every host (TRW sees successes).
		e.ObserveConn(probeConn(time.Duration(h)*time.Second, "10.0.0.10:40000", fmt.Sprintf("10.0.2.%d:22", h%10), model.ProtoTCP, model.FlagSYN, "ShAR", model.ConnRSTO))
	}
	e.Flush(snapTime.Add(time.Hour))
	if as := e.Alerts(); len(as) != 0 {
		t.Errorf("benign traffic raised %d alerts: %+v", len(as), as[0])
	}
}

func TestScanStateBounded(t *testing.T) {
	cfg := defaults(t)
	cfg.Detectors.Scan.MaxSources = 10
	d := NewScan(cfg)
	e := NewEngine([]Detector{d}, "pcap:test", nil)
	// Sources seen once stay on probation: no state, nothing to evict.
	for i := 0; i < 1000; i++ {
		src := fmt.Sprintf("198.18.%d.%d:1234", i/250, i%250+1)
		e.ObserveConn(probeConn(time.Duration(i)*time.Millisecond, src, "10.0.0.5:80", model.ProtoTCP, model.FlagSYN, "S", model.ConnS0))
	}
	if len(d.sources) != 0 || d.Evicted != 0 {
		t.Errorf("one probe each: sources %d, evicted %d; want none", len(d.sources), d.Evicted)
	}
	// Sources that come back get state, bounded by evicting the oldest.
	for i := 0; i < 1000; i++ {
		src := fmt.Sprintf("198.19.%d.%d:1234", i/250, i%250+1)
		for _, port := range []string{"80", "81"} {
			e.ObserveConn(probeConn(time.Duration(i)*time.Millisecond, src, "10.0.0.5:"+port, model.ProtoTCP, model.FlagSYN, "S", model.ConnS0))
		}
	}
	if len(d.sources) > 10 || d.Evicted != 1000-len(d.sources) {
		t.Errorf("sources %d, evicted %d; want at most 10, the rest evicted", len(d.sources), d.Evicted)
	}
}

func TestScanBlockAndDistributed(t *testing.T) {
	t.Run("block", func(t *testing.T) {
		// One source, ports 1–30 on 10 hosts, port by port: one block
		// alert, not ten vertical ones.
		e := NewEngine([]Detector{NewScan(defaults(t))}, "pcap:test", nil)
		i := 0
		for p := 1; p <= 30; p++ {
			for h := 1; h <= 10; h++ {
				i++
				e.ObserveConn(probeConn(time.Duration(i)*time.Millisecond, "10.0.0.66:40000", fmt.Sprintf("10.0.1.%d:%d", h, p), model.ProtoTCP, model.FlagSYN, "Sr", model.ConnREJ))
			}
		}
		e.Flush(snapTime.Add(time.Hour))
		var kinds []string
		var block alert.Alert
		for _, a := range e.Alerts() {
			kinds = append(kinds, a.Evidence["kind"].(string))
			if a.Evidence["kind"] == "block" {
				block = a
			}
		}
		// The TRW test reached its bound before the block crossed.
		if block.Evidence == nil || block.Evidence["hosts"] != 10 || block.Evidence["ports"] != 30 || block.Count != 300 || block.Severity != alert.Critical {
			t.Fatalf("block alert %+v among %v", block, kinds)
		}
		if len(kinds) != 2 {
			t.Errorf("block scan also raised %v", kinds)
		}
	})
	t.Run("distributed", func(t *testing.T) {
		// Sixteen sources split ports 1–80 of one host: none crosses the
		// vertical threshold alone.
		e := NewEngine([]Detector{NewScan(defaults(t))}, "pcap:test", nil)
		for p := 1; p <= 80; p++ {
			src := fmt.Sprintf("198.51.100.%d:40000", p%16+1)
			e.ObserveConn(probeConn(time.Duration(p)*100*time.Millisecond, src, fmt.Sprintf("10.0.0.5:%d", p), model.ProtoTCP, model.FlagSYN, "Sr", model.ConnREJ))
		}
		e.Flush(snapTime.Add(time.Hour))
		as := e.Alerts()
		if len(as) != 1 || as[0].Evidence["kind"] != "distributed" || as[0].Dst != netip.MustParseAddr("10.0.0.5") ||
			as[0].Evidence["sources"] != 16 || as[0].Evidence["ports"] != 80 || as[0].Count != 80 || as[0].Src.IsValid() {
			t.Fatalf("alerts: %+v", as)
		}
		// The alert came when the 20th port was touched by the 5th source.
		if !as[0].Raised.Equal(snapTime.Add(2 * time.Second)) {
			t.Errorf("raised at %v", as[0].Raised.Sub(snapTime))
		}
	})
	t.Run("one scanner beside a spoofed flood is not distributed", func(t *testing.T) {
		e := NewEngine([]Detector{NewScan(defaults(t))}, "pcap:test", nil)
		for p := 1; p <= 60; p++ {
			e.ObserveConn(probeConn(time.Duration(p)*time.Millisecond, "10.0.0.66:40000", fmt.Sprintf("10.0.0.5:%d", p), model.ProtoTCP, model.FlagSYN, "Sr", model.ConnREJ))
		}
		for c := 1; c <= 3000; c++ { // spoofed SYNs to one port, two each so they leave probation
			src := fmt.Sprintf("198.51.%d.%d:40000", c/250, c%250)
			e.ObserveConn(probeConn(time.Second, src, "10.0.0.5:80", model.ProtoTCP, model.FlagSYN, "S", model.ConnS0))
			e.ObserveConn(probeConn(time.Second, src, "10.0.0.5:80", model.ProtoTCP, model.FlagSYN, "S", model.ConnS0))
		}
		e.Flush(snapTime.Add(time.Hour))
		for _, a := range e.Alerts() {
			if a.Evidence["kind"] == "distributed" {
				t.Errorf("distributed alert: %s", a.Title)
			}
		}
	})
}
