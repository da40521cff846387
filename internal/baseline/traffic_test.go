package baseline

import (
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

func TestHistSummary(t *testing.T) {
	const bin = 1.0 / histRes
	cases := []struct {
		name                string
		values              []float64
		median, mad, lo, hi float64
	}{
		{"constant", []float64{10, 10, 10, 10}, 10, 0, 10, 10},
		{"symmetric", []float64{8, 9, 10, 11, 12}, 10, 1, 8, 12},
		{"clamped", []float64{-5, 100}, 0, 0, 0, histMax},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var h hist
			for _, v := range tc.values {
				h.add(v)
			}
			s := h.summary()
			near := func(got, want float64) bool { return math.Abs(got-want) <= bin }
			if s.N != len(tc.values) || !near(s.Median, tc.median) || !near(s.MAD, tc.mad) || !near(s.Lo, tc.lo) || !near(s.Hi, tc.hi) {
				t.Errorf("summary of %v = %+v; want median %v mad %v range %v–%v (±%v)", tc.values, s, tc.median, tc.mad, tc.lo, tc.hi, bin)
			}
		})
	}
}

func TestTrafficLearner(t *testing.T) {
	l := NewTrafficLearner(2) // room for two port groups
	add := func(port uint16, n int, proto model.Proto, use bool) {
		for i := 0; i < n; i++ {
			c := &model.Conn{TS: time.Unix(int64(i), 0), Proto: proto, Resp: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), port),
				Duration: time.Second, OrigBytes: 1000, OrigPkts: 10, OrigIPBytes: 1400, RespBytes: 63, RespPkts: 1}
			l.Observe(c, use)
		}
	}
	if _, err := l.Model(nil, 1, time.Unix(0, 0)); err == nil {
		t.Error("a model from nothing")
	}
	add(443, 300, model.ProtoTCP, true)
	add(53, 50, model.ProtoUDP, true)
	add(8080, 300, model.ProtoTCP, true) // beyond the two groups: global only
	add(22, 1000, model.ProtoTCP, false) // failed attempts: counted, not learned
	m, err := l.Model([]string{"x"}, 100, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Check(); err != nil {
		t.Fatal(err)
	}
	if m.Records != 1650 || m.Used != 650 || m.Anomaly.Global[1].N != 650 {
		t.Errorf("records %d used %d global n %d", m.Records, m.Used, m.Anomaly.Global[1].N)
	}
	if m.Anomaly.Groups["tcp/443"] == nil || m.Anomaly.Groups["udp/53"] != nil || m.Anomaly.Groups["tcp/8080"] != nil {
		t.Errorf("groups: %v (want tcp/443 only: udp/53 is under min_samples, tcp/8080 beyond max_groups)", m.Anomaly.Groups)
	}
	if ps := m.PacketSize["tcp/443"]; ps == nil || math.Abs(math.Exp2(ps.Orig.Median)-140) > 140*0.05 {
		t.Errorf("tcp/443 bytes per packet: %+v, want ~140", ps)
	}
}
