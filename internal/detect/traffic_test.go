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
