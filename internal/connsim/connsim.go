// Package connsim generates connection records of known shape for tests
// and benchmarks: beacons with a chosen interval, jitter and size, user
// traffic (browsing in working hours), NTP polls, uploads, a background mix
// of services, and long sessions. The same seed always gives the same
// records. Records are in event time from Start; callers sort them or
// write them with zeeklog.
package connsim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// Start is the event time generated traffic begins at (a Monday, 00:00 UTC).
var Start = time.Date(2026, 11, 16, 0, 0, 0, 0, time.UTC)

// Gen makes records; it numbers their uids and source ports.
type Gen struct {
	rng  *rand.Rand
	uid  int
	port uint16
	zipf *rand.Zipf
	nsrv int
}

// New returns a generator seeded with seed.
func New(seed uint64) *Gen {
	return &Gen{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), port: 32768}
}

// Rand exposes the generator's random source.
func (g *Gen) Rand() *rand.Rand { return g.rng }

// Conn is one completed TCP (or UDP) connection with the given payload
// each way; packets and IP bytes follow from an MSS of 1448 bytes.
func (g *Gen) Conn(ts time.Time, src, dst netip.Addr, dport uint16, proto model.Proto, dur time.Duration, sent, recv uint64) model.Conn {
	g.uid++
	g.port++
	if g.port < 32768 {
		g.port = 32768
	}
	c := model.Conn{
		TS: ts, UID: fmt.Sprintf("Csim%08d", g.uid), Orig: netip.AddrPortFrom(src, g.port), Resp: netip.AddrPortFrom(dst, dport),
		Proto: proto, Duration: dur, OrigBytes: sent, RespBytes: recv, End: model.EndClosed,
	}
	seg := func(b uint64) uint64 { return (b + 1447) / 1448 }
	switch proto {
	case model.ProtoTCP:
		c.ConnState, c.History = model.ConnSF, "ShADadFf"
		c.FirstFlags = model.FlagSYN
		// handshake and close packets, plus one ack per two data segments
		c.OrigPkts = 3 + seg(sent) + seg(recv)/2
		c.RespPkts = 2 + seg(recv) + seg(sent)/2
		c.OrigIPBytes = c.OrigPkts*52 + sent
		c.RespIPBytes = c.RespPkts*52 + recv
	default:
		c.ConnState, c.History = model.ConnSF, "Dd"
		c.OrigPkts, c.RespPkts = max(1, seg(sent)), seg(recv)
		c.OrigIPBytes = c.OrigPkts*28 + sent
		c.RespIPBytes = c.RespPkts*28 + recv
		if recv == 0 {
			c.ConnState, c.History = model.ConnS0, "D"
		}
	}
	return c
}

// Failed is a TCP attempt nobody answered (Zeek S0).
func (g *Gen) Failed(ts time.Time, src, dst netip.Addr, dport uint16) model.Conn {
	c := g.Conn(ts, src, dst, dport, model.ProtoTCP, 0, 0, 0)
	c.ConnState, c.History = model.ConnS0, "S"
	c.OrigPkts, c.RespPkts, c.OrigIPBytes, c.RespIPBytes = 1, 0, 60, 0
	c.Unset = model.FieldDuration | model.FieldOrigBytes | model.FieldRespBytes
	return c
}

// Beacon is a check-in every Interval, each start moved by up to ±Jitter
// of the interval (uniform), sending Size bytes (±SizeJitter of it) and
// receiving Reply bytes, from From for Span.
type Beacon struct {
	Src, Dst         netip.Addr
	Port             uint16
	Proto            model.Proto
	Interval         time.Duration
	Jitter           float64
	Size, Reply      uint64
	SizeJitter       float64
	From             time.Time
	Span             time.Duration
	FailEvery        int // every FailEvery-th check-in fails (0: none)
	ConnectionLength time.Duration
}

// Beacon generates the check-ins.
func (g *Gen) Beacon(b Beacon) []model.Conn {
	var out []model.Conn
	n := int(b.Span / b.Interval)
	for i := 0; i < n; i++ {
		t := b.From.Add(time.Duration(i) * b.Interval)
		t = t.Add(time.Duration((g.rng.Float64()*2 - 1) * b.Jitter * float64(b.Interval)))
		if b.FailEvery > 0 && i%b.FailEvery == b.FailEvery-1 {
			out = append(out, g.Failed(t, b.Src, b.Dst, b.Port))
			continue
		}
		size := float64(b.Size) * (1 + (g.rng.Float64()*2-1)*b.SizeJitter)
		dur := b.ConnectionLength
		if dur == 0 {
			dur = 150 * time.Millisecond
		}
		out = append(out, g.Conn(t, b.Src, b.Dst, b.Port, cmpOr(b.Proto, model.ProtoTCP), dur, uint64(size), b.Reply))
	}
	return out
}

func cmpOr(p, d model.Proto) model.Proto {
	if p == 0 {
		return d
	}
	return p
}

// Browsing is a user visiting a site during working hours (09–17) of each
// day in [from, from+days): bursts of a few connections per page, pages
// separated by exponential think times, sizes log-normal.
func (g *Gen) Browsing(src, dst netip.Addr, from time.Time, days int) []model.Conn {
	var out []model.Conn
	for d := 0; d < days; d++ {
		day := from.Add(time.Duration(d) * 24 * time.Hour)
		t := day.Add(9*time.Hour + time.Duration(g.rng.IntN(1800))*time.Second)
		end := day.Add(17 * time.Hour)
		for t.Before(end) {
			for k := 0; k < 1+g.rng.IntN(6); k++ {
				at := t.Add(time.Duration(g.rng.IntN(2000)) * time.Millisecond)
				out = append(out, g.Conn(at, src, dst, 443, model.ProtoTCP, time.Duration(200+g.rng.IntN(20000))*time.Millisecond,
					g.logNormal(900, 0.6), g.logNormal(30000, 1.5)))
			}
			t = t.Add(time.Duration(g.rng.ExpFloat64() * float64(3*time.Minute)))
		}
	}
	return out
}

// KeepAlive is a web page left open that polls its server every interval
// (±20%) during working hours, with replies of varying size: periodic, but
// only while someone works and with user-driven sizes.
func (g *Gen) KeepAlive(src, dst netip.Addr, interval time.Duration, from time.Time, days int) []model.Conn {
	var out []model.Conn
	for d := 0; d < days; d++ {
		day := from.Add(time.Duration(d) * 24 * time.Hour)
		for t := day.Add(9 * time.Hour); t.Before(day.Add(17 * time.Hour)); t = t.Add(interval) {
			at := t.Add(time.Duration((g.rng.Float64()*0.4 - 0.2) * float64(interval)))
			out = append(out, g.Conn(at, src, dst, 443, model.ProtoTCP, time.Duration(100+g.rng.IntN(900))*time.Millisecond,
				g.logNormal(700, 0.8), g.logNormal(4000, 1.2)))
		}
	}
	return out
}

// NTP is ntpd polling a server: the poll interval starts at 64 s and
// doubles up to 1024 s, with a few percent of randomisation; 48 bytes
// each way over UDP.
func (g *Gen) NTP(src, dst netip.Addr, from time.Time, span time.Duration) []model.Conn {
	var out []model.Conn
	poll := 64 * time.Second
	for t, i := from, 0; t.Before(from.Add(span)); i++ {
		out = append(out, g.Conn(t, src, dst, 123, model.ProtoUDP, 20*time.Millisecond, 48, 48))
		if i%8 == 7 && poll < 1024*time.Second {
			poll *= 2
		}
		t = t.Add(time.Duration(float64(poll) * (1 + 0.05*(g.rng.Float64()*2-1))))
	}
	return out
}

// Mix is a background of ordinary services from clients to servers:
// web, DNS (to the first four servers, the resolvers), mail and SSH, n records starting at from over span.
func (g *Gen) Mix(clients, servers []netip.Addr, from time.Time, span time.Duration, n int) []model.Conn {
	out := make([]model.Conn, 0, n)
	for i := 0; i < n; i++ {
		out = append(out, g.MixOne(clients, servers, from.Add(time.Duration(g.rng.Int64N(int64(span))))))
	}
	return out
}

// MixOne is one background record at t. Servers are chosen by a Zipf law
// (s = 1.2), as popularity goes: a few servers get most connections, a
// long tail gets one now and then.
func (g *Gen) MixOne(clients, servers []netip.Addr, t time.Time) model.Conn {
	if g.zipf == nil || g.nsrv != len(servers) {
		g.zipf, g.nsrv = rand.NewZipf(g.rng, 1.2, 1, uint64(len(servers)-1)), len(servers)
	}
	src := clients[g.rng.IntN(len(clients))]
	dst := servers[g.zipf.Uint64()]
	switch r := g.rng.IntN(100); {
	case r < 55:
		return g.Conn(t, src, dst, 443, model.ProtoTCP, time.Duration(50+g.rng.IntN(30000))*time.Millisecond, g.logNormal(800, 0.7), g.logNormal(20000, 1.6))
	case r < 70:
		return g.Conn(t, src, dst, 80, model.ProtoTCP, time.Duration(30+g.rng.IntN(5000))*time.Millisecond, g.logNormal(400, 0.5), g.logNormal(8000, 1.4))
	case r < 90:
		// Clients ask a few resolvers, not every server.
		dst = servers[g.rng.IntN(min(4, len(servers)))]
		return g.Conn(t, src, dst, 53, model.ProtoUDP, time.Duration(1+g.rng.IntN(80))*time.Millisecond, 30+uint64(g.rng.IntN(30)), 60+uint64(g.rng.IntN(200)))
	case r < 95:
		return g.Conn(t, src, dst, 25, model.ProtoTCP, time.Duration(200+g.rng.IntN(3000))*time.Millisecond, g.logNormal(5000, 1.2), 400+uint64(g.rng.IntN(200)))
	default:
		return g.Conn(t, src, dst, 22, model.ProtoTCP, time.Duration(1000+g.rng.IntN(600000))*time.Millisecond, g.logNormal(4000, 1.0), g.logNormal(6000, 1.0))
	}
}

// logNormal draws around median with the given sigma (natural log).
func (g *Gen) logNormal(median float64, sigma float64) uint64 {
	return uint64(median * math.Exp(sigma*g.rng.NormFloat64()))
}

// Sort orders records by start time, as a conn.log is.
func Sort(cs []model.Conn) {
	slices.SortStableFunc(cs, func(a, b model.Conn) int { return a.TS.Compare(b.TS) })
}

// Addr returns 10.a.b.c style addresses for tests.
func Addr(s string) netip.Addr { return netip.MustParseAddr(s) }
