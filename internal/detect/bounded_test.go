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
	// Tables fill, then oscillate as batches are evicted: compare the
	// peaks of the heap sampled over the second quarter and the second half.
	var early, late uint64
	for i := 0; i < 1_000_000; i++ {
		c.TS = snapTime.Add(time.Duration(i) * 10 * time.Microsecond)
		c.Orig = netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, byte(i >> 16), byte(i >> 8), byte(i)}), uint16(i))
		e.ObserveConn(c)
		if i >= 250_000 && i%25_000 == 0 {
			if h := heap(); i < 500_000 {
				early = max(early, h)
			} else {
				late = max(late, h)
			}
		}
	}
	t.Logf("peak heap over 250k–500k records %d MiB, over 500k–1M %d MiB", early>>20, late>>20)
	if late > early+early/10 {
		t.Errorf("heap grew from %d to %d MiB under spoofed sources", early>>20, late>>20)
	}
	e.Flush(c.TS)
	as := e.Alerts()
	if len(as) != 1 || as[0].Detector != "flood" || as[0].Count != 1_000_000 {
		t.Errorf("want one flood alert counting every attempt, got %+v", as)
	}
}
