package detect

import (
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/baseline"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/connsim"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// BenchmarkTrafficDetectors runs every traffic detector (the defaults, no
// learned model) over generated records: a day of 5,000 clients talking
// to 2,000 servers with 20 beacons among them, as bench/conngen writes.
// Each op is one record; records/s and the peak RSS of the process are
// reported. bench/detect.sh runs it with -benchtime 10000000x.
func BenchmarkTrafficDetectors(b *testing.B) {
	benchTraffic(b, Deps{})
}

// BenchmarkTrafficDetectorsWithModel adds packet-size and anomaly, scoring
// against a model learned from the same kind of traffic.
func BenchmarkTrafficDetectorsWithModel(b *testing.B) {
	benchTraffic(b, Deps{Traffic: benchModel(b)})
}

func benchModel(b *testing.B) *baseline.TrafficModel {
	cfg := defaultsB(b)
	l := baseline.NewTrafficLearner(cfg.Detectors.Anomaly.MaxGroups)
	g := connsim.New(99)
	clients, servers := benchAddrs()
	for i := 0; i < 200_000; i++ {
		c := g.MixOne(clients, servers, connsim.Start.Add(time.Duration(i)*time.Millisecond))
		l.Observe(&c, established(&c))
	}
	m, err := l.Model(nil, cfg.Detectors.Anomaly.MinSamples, connsim.Start)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

func benchAddrs() (clients, servers []netip.Addr) {
	clients = make([]netip.Addr, 5000)
	for i := range clients {
		clients[i] = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	servers = make([]netip.Addr, 2000)
	for i := range servers {
		servers[i] = netip.AddrFrom4([4]byte{203, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	return clients, servers
}

func defaultsB(b *testing.B) *config.Config {
	cfg, err := config.Load("")
	if err != nil {
		b.Fatal(err)
	}
	return cfg
}

// BenchmarkTrafficDetectorsParallel is BenchmarkTrafficDetectors with the
// detectors split over GOMAXPROCS goroutines (detect.Parallel), as analyze
// runs them.
func BenchmarkTrafficDetectorsParallel(b *testing.B) {
	benchTrafficWith(b, Deps{}, true)
}

// observer is what the benchmark feeds: an Engine or a Parallel.
type observer interface {
	Flush(time.Time)
	Alerts() []alert.Alert
}

func benchTraffic(b *testing.B, deps Deps) { benchTrafficWith(b, deps, false) }

func benchTrafficWith(b *testing.B, deps Deps, parallel bool) {
	cfg := defaultsB(b)
	clients, servers := benchAddrs()
	g := connsim.New(1)
	// A pool of records reused with advancing times: generating costs
	// more than detecting and must not be what is measured.
	pool := make([]model.Conn, 1<<16)
	for i := range pool {
		pool[i] = g.MixOne(clients, servers, connsim.Start)
	}
	beacons := make([]model.Conn, 20)
	for i := range beacons {
		beacons[i] = g.Conn(connsim.Start, clients[i*97], netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), 443, model.ProtoTCP, 200*time.Millisecond, 400, 120)
	}
	var e observer
	var observe func(*model.Conn)
	if parallel {
		p := NewParallel(TrafficDetectors(cfg, deps), runtime.GOMAXPROCS(0), "bench", nil, func(err error) { b.Error(err) })
		e, observe = p, p.ObserveConn
	} else {
		en := NewEngine(TrafficDetectors(cfg, deps), "bench", nil)
		e, observe = en, func(c *model.Conn) { en.ObserveConn(c) }
	}
	span := 24 * time.Hour
	step := span / time.Duration(max(b.N, 1))
	next := connsim.Start
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		t := connsim.Start.Add(time.Duration(i) * step)
		var c *model.Conn
		if !next.After(t) {
			c = &beacons[i%len(beacons)]
			next = next.Add(3 * time.Second) // each of the 20 beacons once a minute
		} else {
			c = &pool[i&(len(pool)-1)]
		}
		c.TS = t
		observe(c)
	}
	e.Flush(time.Time{})
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
	b.ReportMetric(float64(peakRSS())/(1<<20), "peak-RSS-MiB")
	if b.N >= 1_000_000 {
		n := 0
		for _, a := range e.Alerts() {
			if a.Detector == "beacon" && a.Dst.As4()[0] == 198 {
				n++
			}
		}
		if n != len(beacons) {
			b.Errorf("found %d of the %d beacons", n, len(beacons))
		}
	}
}

// peakRSS is the process's high-water resident set (VmHWM), in bytes.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
