package detect

import (
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// TestTrafficDetectorsBoundedUnderSpoofedFlood feeds one million half-open
// connections from distinct spoofed sources through every traffic
// detector: the heap must stop growing once the tables are full.
func TestTrafficDetectorsBoundedUnderSpoofedFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("one million records; skipped with -short")
	}
	e := NewEngine(TrafficDetectors(defaults(t), Deps{}), "pcap:flood", nil)
	c := &model.Conn{Proto: model.ProtoTCP, FirstFlags: model.FlagSYN, History: "Sh", ConnState: model.ConnS1,
		Resp: netip.MustParseAddrPort("10.0.0.5:80")}
	heap := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	var at250k uint64
	for i := 0; i < 1_000_000; i++ {
		c.TS = snapTime.Add(time.Duration(i) * 10 * time.Microsecond)
		c.Orig = netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, byte(i >> 16), byte(i >> 8), byte(i)}), uint16(i))
		e.ObserveConn(c)
		if i == 250_000 {
			at250k = heap()
		}
	}
	end := heap()
	t.Logf("heap after 250k records %d MiB, after 1M %d MiB", at250k>>20, end>>20)
	if end > at250k+at250k/5 {
		t.Errorf("heap grew from %d to %d MiB between 250k and 1M spoofed sources", at250k>>20, end>>20)
	}
	e.Flush(c.TS)
	as := e.Alerts()
	if len(as) != 1 || as[0].Detector != "flood" || as[0].Count != 1_000_000 {
		t.Errorf("want one flood alert counting every attempt, got %+v", as)
	}
}
