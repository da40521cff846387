package detect

import (
	"encoding/binary"
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/baseline"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/connsim"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

func TestDescribe(t *testing.T) {
	cases := []struct {
		name              string
		xs                []float64
		median, mad, skew float64
		dispersion        float64
	}{
		{"symmetric", []float64{1, 2, 3, 4, 5}, 3, 1, 0, 2.0 / 3},
		{"constant", []float64{5, 5, 5, 5}, 5, 0, 0, 1},
		{"right-skewed", []float64{1, 2, 3, 10, 20}, 3, 2, 0.75, 1.0 / 3},
		{"median on a quartile", []float64{1, 1, 1, 2, 10}, 1, 0, 0, 1},
		{"all zero", []float64{0, 0, 0}, 0, 0, 0, 1},
		{"empty", nil, 0, 0, 0, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := describe(tc.xs)
			if math.Abs(r.median-tc.median) > 1e-9 || math.Abs(r.mad-tc.mad) > 1e-9 || math.Abs(r.skew-tc.skew) > 1e-9 ||
				math.Abs(r.dispersionScore()-tc.dispersion) > 1e-9 {
				t.Errorf("describe(%v) = %+v, dispersion %v; want median %v mad %v skew %v dispersion %v",
					tc.xs, r, r.dispersionScore(), tc.median, tc.mad, tc.skew, tc.dispersion)
			}
		})
	}
}

func TestIsOpen(t *testing.T) {
	for end, want := range map[model.EndReason]bool{
		"": false, model.EndClosed: false, model.EndTimeout: false, model.EndEvicted: false,
		model.EndEOF: true, "update": true,
	} {
		if got := isOpen(&model.Conn{End: end}); got != want {
			t.Errorf("isOpen(End %q) = %v, want %v", end, got, want)
		}
	}
}

func TestEstablished(t *testing.T) {
	cases := []struct {
		name    string
		proto   model.Proto
		history string
		state   model.ConnState
		unset   model.ConnField
		resp    uint64
		want    bool
	}{
		{"complete", model.ProtoTCP, "ShADadFf", model.ConnSF, 0, 3, true},
		{"unanswered", model.ProtoTCP, "S", model.ConnS0, 0, 0, false},
		{"rejected", model.ProtoTCP, "Sr", model.ConnREJ, 0, 1, false},
		{"syn-ack never acked", model.ProtoTCP, "Sh", model.ConnS1, 0, 1, false},
		{"flipped, complete", model.ProtoTCP, "^hADad", model.ConnS1, 0, 2, true},
		{"no history, SF", model.ProtoTCP, "", model.ConnSF, model.FieldHistory, 2, true},
		{"no history, S0", model.ProtoTCP, "", model.ConnS0, model.FieldHistory, 0, false},
		{"udp answered", model.ProtoUDP, "Dd", model.ConnSF, 0, 1, true},
	}
	for _, tc := range cases {
		c := &model.Conn{Proto: tc.proto, History: tc.history, ConnState: tc.state, Unset: tc.unset, RespPkts: tc.resp}
		if got := established(c); got != tc.want {
			t.Errorf("%s: established = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// FuzzTrafficDetectors feeds arbitrary connection records (any addresses,
// ports, times in any order, sizes up to the maximum, odd histories and
// states) through every traffic detector, with and without a learned
// model: none may panic or emit an invalid alert.
func FuzzTrafficDetectors(f *testing.F) {
	f.Add([]byte("0123456789abcdef0123456789abcdef0123456789abcdef"))
	f.Add(make([]byte, 96))
	seed := make([]byte, 0, 40*30)
	for i := 0; i < 30; i++ {
		rec := make([]byte, 40)
		binary.LittleEndian.PutUint32(rec[0:], uint32(i*60))
		copy(rec[4:], []byte{10, 0, 0, 1, 198, 51, 100, 7})
		binary.LittleEndian.PutUint16(rec[12:], 443)
		rec[14] = 6
		binary.LittleEndian.PutUint32(rec[16:], 300)
		rec[36] = 0
		seed = append(seed, rec...)
	}
	f.Add(seed)
	cfg, err := loadDefaults()
	if err != nil {
		f.Fatal(err)
	}
	learned := fuzzModel()
	histories := []string{"ShADadFf", "S", "Sr", "Sh", "^hADad", "", "D", "Dd", "ShAdDaFfR"}
	states := []model.ConnState{model.ConnSF, model.ConnS0, model.ConnREJ, model.ConnS1, model.ConnOTH, model.ConnRSTO, ""}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, deps := range []Deps{{}, {Traffic: learned}} {
			e := NewEngine(TrafficDetectors(cfg, deps), "fuzz", nil)
			t0 := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
			for b := data; len(b) >= 40; b = b[40:] {
				var src, dst [4]byte
				copy(src[:], b[4:8])
				copy(dst[:], b[8:12])
				c := &model.Conn{
					TS:       t0.Add(time.Duration(int32(binary.LittleEndian.Uint32(b[0:]))) * time.Millisecond * 37),
					Orig:     netip.AddrPortFrom(netip.AddrFrom4(src), uint16(b[13])<<8|uint16(b[12])),
					Resp:     netip.AddrPortFrom(netip.AddrFrom4(dst), binary.LittleEndian.Uint16(b[12:])),
					Proto:    model.Proto(b[14]),
					Duration: time.Duration(binary.LittleEndian.Uint32(b[20:])) * time.Millisecond * time.Duration(1+b[15]),
					// Sizes scale up to near the maximum to reach overflow edges.
					OrigBytes: uint64(binary.LittleEndian.Uint32(b[16:])) << (b[15] % 40),
					RespBytes: uint64(binary.LittleEndian.Uint32(b[24:])) << (b[35] % 40),
					OrigPkts:  uint64(binary.LittleEndian.Uint16(b[28:])),
					RespPkts:  uint64(binary.LittleEndian.Uint16(b[30:])),
					History:   histories[int(b[32])%len(histories)],
					ConnState: states[int(b[33])%len(states)],
					Unset:     model.ConnField(binary.LittleEndian.Uint16(b[34:])) & (model.FieldHistory | model.FieldOrigIPBytes | model.FieldDuration),
				}
				c.OrigIPBytes = c.OrigBytes + 40*c.OrigPkts
				if b[36]&1 == 1 {
					c.End = model.EndEOF
				}
				if errs := e.ObserveConn(c); len(errs) > 0 {
					t.Fatal(errs)
				}
			}
			e.Flush(time.Time{})
			if e.Invalid > 0 {
				t.Fatalf("%d invalid alerts", e.Invalid)
			}
		}
	})
}

func loadDefaults() (*config.Config, error) { return config.Load("") }

// fuzzModel is a traffic model learned from a little generated traffic.
func fuzzModel() *baseline.TrafficModel {
	l := baseline.NewTrafficLearner(64)
	g := connsim.New(5)
	for i := 0; i < 5000; i++ {
		c := g.MixOne(simClients, simServers, connsim.Start.Add(time.Duration(i)*time.Second))
		l.Observe(&c, established(&c))
	}
	m, err := l.Model(nil, 100, connsim.Start)
	if err != nil {
		panic(err)
	}
	return m
}
