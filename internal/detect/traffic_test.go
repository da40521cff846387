package detect

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

func conn(orig, resp string, proto model.Proto, state model.ConnState, respPkts uint64) *model.Conn {
	return &model.Conn{TS: snapTime, UID: "C1", Orig: netip.MustParseAddrPort(orig), Resp: netip.MustParseAddrPort(resp),
		Proto: proto, ConnState: state, RespPkts: respPkts, Duration: time.Second}
}

func TestSuspiciousPortTraffic(t *testing.T) {
	cases := []struct {
		name string
		c    *model.Conn
		want []want
	}{
		{"established to 4444", conn("10.0.0.66:40000", "10.0.0.5:4444", model.ProtoTCP, model.ConnSF, 5),
			[]want{{alert.High, "10.0.0.66 talked to 10.0.0.5:4444 on suspicious port tcp/4444", 0}}},
		{"still open to 31337", conn("10.0.0.66:40000", "10.0.0.5:31337", model.ProtoTCP, model.ConnS1, 2),
			[]want{{alert.High, "suspicious port tcp/31337", 0}}},
		{"unanswered probe", conn("10.0.0.66:40000", "10.0.0.5:4444", model.ProtoTCP, model.ConnS0, 0), nil},
		{"rejected probe", conn("10.0.0.66:40000", "10.0.0.5:4444", model.ProtoTCP, model.ConnREJ, 1), nil},
		{"ordinary port", conn("10.0.0.66:40000", "10.0.0.5:443", model.ProtoTCP, model.ConnSF, 5), nil},
		{"udp answered", conn("10.0.0.66:40000", "10.0.0.5:6667", model.ProtoUDP, model.ConnSF, 1),
			nil}, // 6667 is listed for tcp only
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEngine([]Detector{NewSuspiciousPort(defaults(t))}, "host:test", nil)
			if errs := e.ObserveConn(tc.c); len(errs) != 0 {
				t.Fatal(errs)
			}
			check(t, e.Alerts(), tc.want)
		})
	}
	// The same pair seen twice is one alert with a count.
	e := NewEngine(TrafficDetectors(defaults(t), Deps{}), "pcap:x", nil)
	e.ObserveConn(conn("10.0.0.66:40000", "10.0.0.5:4444", model.ProtoTCP, model.ConnSF, 5))
	e.ObserveConn(conn("10.0.0.66:40001", "10.0.0.5:4444", model.ProtoTCP, model.ConnSF, 5))
	if as := e.Alerts(); len(as) != 1 || as[0].Count != 2 {
		t.Errorf("aggregation: %+v", as)
	}
}

func TestProtocolOnAnotherPort(t *testing.T) {
	svc := func(c *model.Conn, service string) *model.Conn { c.Service = service; return c }
	cases := []struct {
		name string
		c    *model.Conn
		want []want
	}{
		{"ssh on 443", svc(conn("10.0.0.7:40000", "203.0.113.9:443", model.ProtoTCP, model.ConnSF, 5), "ssh"),
			[]want{{alert.High, "SSH spoken on port 443, which belongs to TLS", 0}}},
		{"http on 6667", svc(conn("10.0.0.7:40000", "203.0.113.9:6667", model.ProtoTCP, model.ConnSF, 5), "http"),
			[]want{{alert.Medium, "HTTP spoken on port 6667, which belongs to IRC", 0}}},
		{"tls on 4444", svc(conn("10.0.0.7:40000", "203.0.113.9:4444", model.ProtoTCP, model.ConnSF, 5), "ssl"),
			[]want{{alert.High, "TLS spoken on suspicious port 4444", 0}}},
		{"tls on 443", svc(conn("10.0.0.7:40000", "203.0.113.9:443", model.ProtoTCP, model.ConnSF, 5), "ssl"), nil},
		{"tls on an unlisted port", svc(conn("10.0.0.7:40000", "203.0.113.9:50443", model.ProtoTCP, model.ConnSF, 5), "ssl"), nil},
		{"smtp on 465", svc(conn("10.0.0.7:40000", "203.0.113.9:465", model.ProtoTCP, model.ConnSF, 5), "smtp"), nil},
		{"zeek service list", svc(conn("10.0.0.7:40000", "203.0.113.9:80", model.ProtoTCP, model.ConnSF, 5), "ssl,http"),
			[]want{{alert.Medium, "TLS spoken on port 80, which belongs to HTTP", 0}}},
		{"unknown service name", svc(conn("10.0.0.7:40000", "203.0.113.9:22", model.ProtoTCP, model.ConnSF, 5), "krb"), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEngine([]Detector{NewSuspiciousPort(defaults(t))}, "host:test", nil)
			e.ObserveConn(tc.c)
			as := e.Alerts()
			check(t, as, tc.want)
			for _, a := range as {
				if a.Attack[0] != "T1571" || a.Evidence["service"] == nil {
					t.Errorf("alert %q: attack %v evidence %v", a.Title, a.Attack, a.Evidence)
				}
			}
		})
	}
}
