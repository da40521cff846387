package fleet

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/flow"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// Scenario of the fleet tests: three sentries whose hosts all beacon to one
// external address, a scanner whose sweep touches each sentry's subnet a
// little, and background connections.
var (
	scenarioStart  = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	beaconDst      = netip.MustParseAddrPort("203.0.113.7:443")
	scannerAddr    = netip.MustParseAddr("198.51.100.9")
	scenarioHosts  = []string{"sentry-a", "sentry-b", "sentry-c"}
	beaconInterval = time.Minute
)

// scenario returns sentry i's records in event-time order: 6 beacons a
// minute apart, 10 refused probes from the scanner (30 over the fleet, each
// sentry below fleet.scan.min_targets on its own), one hop of a
// lateral-movement chain (sentries 0 and 1), and background connections to
// internal servers and to distinct external addresses.
func scenario(i, background int) []*model.Conn {
	host := netip.AddrFrom4([4]byte{10, 0, byte(i + 1), 10})
	var out []*model.Conn
	n := 0
	add := func(c *model.Conn) {
		n++
		c.UID = fmt.Sprintf("C%d-%06d", i, n)
		out = append(out, c)
	}
	for k := range 6 {
		ts := scenarioStart.Add(time.Duration(k)*beaconInterval + time.Duration(i)*time.Second)
		add(&model.Conn{TS: ts, Orig: netip.AddrPortFrom(host, uint16(40000+k)), Resp: beaconDst, Proto: model.ProtoTCP,
			Duration: 200 * time.Millisecond, OrigBytes: 300, RespBytes: 1200, ConnState: model.ConnSF, History: "ShADadFf",
			OrigPkts: 6, RespPkts: 5, OrigIPBytes: 620, RespIPBytes: 1460, End: model.EndClosed})
	}
	for k := range 10 {
		ts := scenarioStart.Add(2*time.Minute + time.Duration(i*10+k)*50*time.Millisecond)
		dst := netip.AddrFrom4([4]byte{10, 0, byte(i + 1), byte(20 + k)})
		add(&model.Conn{TS: ts, Orig: netip.AddrPortFrom(scannerAddr, 61000), Resp: netip.AddrPortFrom(dst, 22),
			Proto: model.ProtoTCP, ConnState: model.ConnREJ, History: "Sr", OrigPkts: 1, RespPkts: 1,
			OrigIPBytes: 44, RespIPBytes: 40, FirstFlags: model.FlagSYN, End: model.EndClosed,
			Unset: model.FieldDuration | model.FieldOrigBytes | model.FieldRespBytes})
	}
	// A lateral-movement chain: sentry 0's host logs into sentry 1's over
	// SSH, which then opens SMB to sentry 2's.
	switch i {
	case 0:
		add(&model.Conn{TS: scenarioStart.Add(3 * time.Minute), Orig: netip.AddrPortFrom(host, 50000), Resp: netip.MustParseAddrPort("10.0.2.10:22"),
			Proto: model.ProtoTCP, Duration: 30 * time.Second, OrigBytes: 4000, RespBytes: 9000, ConnState: model.ConnSF, History: "ShADadFf", End: model.EndClosed})
	case 1:
		add(&model.Conn{TS: scenarioStart.Add(3*time.Minute + 20*time.Second), Orig: netip.AddrPortFrom(host, 50001), Resp: netip.MustParseAddrPort("10.0.3.10:445"),
			Proto: model.ProtoTCP, Duration: 5 * time.Second, OrigBytes: 2000, RespBytes: 3000, ConnState: model.ConnSF, History: "ShADadFf", End: model.EndClosed})
	}
	for k := range background {
		ts := scenarioStart.Add(time.Duration(k) * time.Second / time.Duration(max(background/300, 1)))
		var dst netip.Addr
		if k%2 == 0 {
			dst = netip.AddrFrom4([4]byte{10, 0, byte(i + 1), byte(100 + k%50)})
		} else {
			// external destinations unique to this host: never shared
			dst = netip.AddrFrom4([4]byte{byte(11 + i), byte(k >> 16), byte(k >> 8), byte(k)})
		}
		add(&model.Conn{TS: ts, Orig: netip.AddrPortFrom(host, uint16(1024+k%60000)), Resp: netip.AddrPortFrom(dst, 443),
			Proto: model.ProtoTCP, Duration: time.Second, OrigBytes: 500, RespBytes: 5000, ConnState: model.ConnSF,
			History: "ShADadFf", OrigPkts: 8, RespPkts: 9, OrigIPBytes: 920, RespIPBytes: 5470, End: model.EndClosed})
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].TS.Before(out[b].TS) })
	return out
}

// recordedScenario returns sentry i's records: what its host recorded
// (testdata/recorded/<sentry>.pcap through the flow tracker: six beacons
// to 203.0.113.7:443, ten refused probes from 198.51.100.9, its hops of a
// lateral-movement chain, a little background) and, for volume,
// `background` generated connections to addresses no other sentry sees,
// spread over the recording, in event-time order.
func recordedScenario(t testing.TB, i, background int) []*model.Conn {
	t.Helper()
	path := filepath.Join("testdata", "recorded", scenarioHosts[i]+".pcap")
	var out []*model.Conn
	if _, err := flow.Run(t.Context(), flow.Input{Paths: []string{path},
		Emit: func(c *model.Conn) { out = append(out, c) },
		Warn: func(err error) { t.Errorf("%s: %v", path, err) },
	}); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no connections", path)
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].TS.Before(out[b].TS) })
	start, span := out[0].TS, out[len(out)-1].TS.Sub(out[0].TS)
	host := netip.AddrFrom4([4]byte{10, 0, byte(i + 1), 10})
	// Random times and servers: background must not look periodic.
	rng := rand.New(rand.NewPCG(uint64(i), 7))
	for k := range background {
		dst := netip.AddrFrom4([4]byte{byte(11 + i), byte(k >> 16), byte(k >> 8), byte(k)})
		if k%2 == 0 {
			dst = netip.AddrFrom4([4]byte{10, 0, byte(i + 1), byte(100 + rng.IntN(50))})
		}
		out = append(out, &model.Conn{TS: start.Add(time.Duration(rng.Int64N(int64(span)))), UID: fmt.Sprintf("G%d-%06d", i, k),
			Orig: netip.AddrPortFrom(host, uint16(1024+k%60000)), Resp: netip.AddrPortFrom(dst, 443),
			Proto: model.ProtoTCP, Duration: time.Second, OrigBytes: 500, RespBytes: 5000, ConnState: model.ConnSF,
			History: "ShADadFf", OrigPkts: 8, RespPkts: 9, OrigIPBytes: 920, RespIPBytes: 5470, End: model.EndClosed})
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].TS.Before(out[b].TS) })
	return out
}
