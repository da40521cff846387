package store

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/baseline"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

func TestTrafficModelRoundTrip(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	if m, err := s.LoadTrafficModel(ctx, "traffic"); m != nil || err != nil {
		t.Fatalf("empty store: %v, %v", m, err)
	}
	l := baseline.NewTrafficLearner(8)
	for i := 0; i < 300; i++ {
		c := &model.Conn{TS: time.Unix(int64(i), 0), Proto: model.ProtoTCP, Resp: netip.MustParseAddrPort("10.0.0.1:443"),
			Duration: time.Second, OrigBytes: uint64(500 + i), RespBytes: 9000, OrigPkts: 5, RespPkts: 9}
		l.Observe(c, true)
	}
	m, err := l.Model([]string{"a.log"}, 100, time.Unix(1000, 0).UTC())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SaveTrafficModel(ctx, "traffic", m, time.Unix(1000, 0)); err != nil {
		t.Fatal(err)
	}
	got, err := s.LoadTrafficModel(ctx, "traffic")
	if err != nil {
		t.Fatal(err)
	}
	if got.Used != 300 || got.Anomaly.Groups["tcp/443"] == nil || got.PacketSize["tcp/443"].Orig.N != 300 {
		t.Errorf("round trip lost data: %+v", got)
	}
	// A model from another version is refused with a reason, not misread.
	if _, err := s.db.ExecContext(ctx, `UPDATE traffic_models SET model = replace(model, '"version":1', '"version":99')`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadTrafficModel(ctx, "traffic"); err == nil || !strings.Contains(err.Error(), "learn it again") {
		t.Errorf("old model: %v", err)
	}
}
