// Command flowgen writes a large, deterministic, realistic-looking pcap for
// bench/flows.sh: thousands of concurrent TCP connections with handshakes,
// requests and responses (some bulk), delayed acks, FIN and RST closes,
// rejected and unanswered SYNs, retransmissions and capture loss, plus DNS
// and QUIC-like UDP, ICMP echo, and a share of IPv6. Frames are Ethernet
// with correct IP, TCP and UDP checksums and full payloads.
//
//	go run ./bench/flowgen -packets 5000000 -o bench/out/flows-5M.pcap
//
// The same -seed and flags always give the same file.
package main

import (
	"bufio"
	"encoding/binary"
	"flag"
	"fmt"
	"github.com/tcpsentry/tcpsentry/internal/flow/decode"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/capture"
)

// Session kinds, with their share of new sessions (per mille).
const (
	kindHTTP    = iota // request/response exchanges, normal close
	kindChat           // interactive: small messages both ways (ssh, chat, MQTT)
	kindBulk           // one long download
	kindReject         // SYN answered by RST
	kindNoReply        // SYN retransmitted, never answered
	kindDNS            // UDP request and response
	kindQUIC           // UDP stream both ways
	kindPing           // ICMP echo request and reply
	numKinds
)

var kindShare = [numKinds]int{kindHTTP: 600, kindChat: 120, kindBulk: 4, kindReject: 50, kindNoReply: 30, kindDNS: 152, kindQUIC: 34, kindPing: 10}

var kindNames = [numKinds]string{"tcp-http", "tcp-chat", "tcp-bulk", "tcp-rejected", "tcp-unanswered", "udp-dns", "udp-quic", "icmp-echo"}

// step is one packet of a session's plan. Sequence numbers are filled in
// when it is written, so retransmissions and losses stay consistent.
type step struct {
	delay int64 // ns after the previous step of the session
	dir   uint8 // 0 client → server, 1 server → client
	flags uint8 // TCP flags
	plen  uint16
	mode  uint8 // modeNormal, modeRexmit (resend the last data segment), modeLost (not captured)
}

const (
	modeNormal = iota
	modeRexmit
	modeLost
)

// TCP flag bits.
const (
	fFIN = 0x01
	fSYN = 0x02
	fRST = 0x04
	fPSH = 0x08
	fACK = 0x10
)

const mss = 1448

type tuple struct {
	c, s   netip.Addr
	cp, sp uint16
	proto  uint8
}

type session struct {
	kind   int
	t      tuple
	v6     bool
	plan   []step
	i      int
	next   int64 // time of plan[i]
	hidx   int
	seq    [2]uint32 // next sequence number per direction
	last   [2]uint32 // seq of the last data segment per direction (retransmissions)
	lastN  [2]uint16
	synned [2]bool
	ipid   [2]uint16
	tsval  [2]uint32
}

type gen struct {
	rng      *rand.Rand
	w        *capture.Writer
	now      int64
	heap     []*session
	active   map[tuple]bool
	frame    []byte
	l4buf    []byte // transport header and payload, built before the IP header
	payload  []byte
	packets  int
	lost     int
	bytes    int64
	sessions [numKinds]int
	v6       int // per mille of sessions over IPv6
}

func main() {
	out := flag.String("o", "bench/out/flows-5M.pcap", "output pcap")
	packets := flag.Int("packets", 5_000_000, "packets to write (at least)")
	concurrent := flag.Int("concurrent", 5000, "sessions open at any time")
	seed := flag.Uint64("seed", 1, "random seed")
	v6 := flag.Int("v6", 100, "per mille of sessions over IPv6")
	flag.Parse()
	if err := run(*out, *packets, *concurrent, *seed, *v6); err != nil {
		fmt.Fprintln(os.Stderr, "flowgen:", err)
		os.Exit(1)
	}
}

func run(path string, packets, concurrent int, seed uint64, v6 int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	w, err := capture.NewWriter(bw, capture.LinkEthernet)
	if err != nil {
		return err
	}
	g := &gen{
		rng:     rand.New(rand.NewPCG(seed, seed^0x5eed)),
		w:       w,
		now:     time.Date(2026, 11, 23, 2, 0, 0, 0, time.UTC).UnixNano(),
		active:  map[tuple]bool{},
		frame:   make([]byte, 0, 2048),
		l4buf:   make([]byte, 0, 2048),
		payload: make([]byte, 1<<16),
		v6:      v6,
	}
	for i := range g.payload {
		g.payload[i] = byte(g.rng.Uint32())
	}
	start := g.now
	for i := 0; i < concurrent; i++ {
		// Stagger the first sessions over a second.
		g.push(g.newSession(g.now + g.rng.Int64N(int64(time.Second))))
	}
	for g.packets < packets {
		s := g.heap[0]
		if s.next > g.now {
			g.now = s.next
		}
		if err := g.emit(s); err != nil {
			return err
		}
		s.i++
		if s.i < len(s.plan) {
			s.next = g.now + s.plan[s.i].delay
			g.fix(0)
			continue
		}
		delete(g.active, s.t)
		g.pop()
		g.push(g.newSession(g.now + g.rng.Int64N(int64(time.Millisecond))))
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	var total int
	for _, n := range g.sessions {
		total += n
	}
	fmt.Fprintf(os.Stderr, "flowgen: %s: %d packets (%d more lost on purpose), %d MiB, %.1f s of traffic, %d concurrent sessions, %d sessions started:",
		path, g.packets, g.lost, g.bytes>>20, float64(g.now-start)/1e9, concurrent, total)
	for k, n := range g.sessions {
		fmt.Fprintf(os.Stderr, " %s %d", kindNames[k], n)
	}
	fmt.Fprintln(os.Stderr)
	return nil
}

// logUniform draws from [lo, hi) with a log-uniform distribution.
func (g *gen) logUniform(lo, hi float64) float64 {
	return lo * math.Exp(g.rng.Float64()*math.Log(hi/lo))
}

func (g *gen) dur(lo, hi time.Duration) int64 {
	return int64(g.logUniform(float64(lo), float64(hi)))
}

func (g *gen) pickKind() int {
	x := g.rng.IntN(1000)
	for k, n := range kindShare {
		if x < n {
			return k
		}
		x -= n
	}
	return kindHTTP
}

var tcpPorts = []uint16{443, 443, 443, 443, 443, 80, 80, 22, 8080, 3306, 5432, 25, 993}

var chatPorts = []uint16{22, 22, 22, 1883, 8883, 6667, 5222, 443}

func (g *gen) newSession(at int64) *session {
	s := &session{kind: g.pickKind(), next: at}
	g.sessions[s.kind]++
	s.v6 = g.rng.IntN(1000) < g.v6
	for {
		s.t = g.tuple(s.kind, s.v6)
		if !g.active[s.t] {
			break
		}
	}
	g.active[s.t] = true
	s.seq = [2]uint32{g.rng.Uint32(), g.rng.Uint32()}
	s.tsval = [2]uint32{g.rng.Uint32(), g.rng.Uint32()}
	s.plan = g.plan(s.kind, s.plan[:0])
	s.plan[0].delay = 0
	return s
}

func (g *gen) tuple(kind int, v6 bool) tuple {
	host := g.rng.IntN(4000)
	srv := g.rng.IntN(600)
	var t tuple
	if v6 {
		t.c = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, byte(host >> 8), byte(host)})
		t.s = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, byte(srv >> 8), byte(srv)})
	} else {
		t.c = netip.AddrFrom4([4]byte{10, byte(host >> 8), byte(host), 10})
		t.s = netip.AddrFrom4([4]byte{198, 18 + byte(srv>>8), byte(srv), 1})
	}
	t.cp = uint16(32768 + g.rng.IntN(28232))
	switch kind {
	case kindDNS:
		t.proto, t.sp = 17, 53
		t.s = netip.AddrFrom4([4]byte{10, 0, 0, 53})
		if v6 {
			t.s = netip.MustParseAddr("2001:db8::53")
		}
	case kindQUIC:
		t.proto, t.sp = 17, 443
	case kindPing:
		t.proto = 1
		if v6 {
			t.proto = 58
		}
		t.cp, t.sp = uint16(g.rng.IntN(65536)), 0 // echo identifier
	case kindChat:
		t.proto, t.sp = 6, chatPorts[g.rng.IntN(len(chatPorts))]
	default:
		t.proto, t.sp = 6, tcpPorts[g.rng.IntN(len(tcpPorts))]
		if g.rng.IntN(20) == 0 {
			t.sp = uint16(1024 + g.rng.IntN(30000))
		}
	}
	return t
}

// plan lays out a session's packets.
func (g *gen) plan(kind int, p []step) []step {
	rtt := g.dur(300*time.Microsecond, 150*time.Millisecond)
	add := func(delay int64, dir, flags uint8, n int, mode uint8) {
		p = append(p, step{delay: delay, dir: dir, flags: flags, plen: uint16(n), mode: mode})
	}
	half := func() int64 { return rtt/2 + g.rng.Int64N(rtt/8+1) }
	pace := func() int64 { return g.dur(20*time.Microsecond, 2*time.Millisecond) }
	switch kind {
	case kindDNS:
		for q := 1 + g.rng.IntN(2); q > 0; q-- {
			add(g.dur(time.Millisecond, 200*time.Millisecond), 0, 0, 28+g.rng.IntN(40), modeNormal)
			if g.rng.IntN(50) > 0 {
				add(half()*2, 1, 0, 60+g.rng.IntN(300), modeNormal)
			}
		}
		return p
	case kindQUIC:
		add(0, 0, 0, 1200, modeNormal)
		add(half()*2, 1, 0, 1200, modeNormal)
		for n := 10 + g.rng.IntN(80); n > 0; n-- {
			dir := uint8(1)
			if g.rng.IntN(4) == 0 {
				dir = 0
			}
			add(pace(), dir, 0, 40+g.rng.IntN(1200), modeNormal)
		}
		return p
	case kindPing:
		for n := 1 + g.rng.IntN(5); n > 0; n-- {
			add(g.dur(900*time.Millisecond, 1100*time.Millisecond), 0, 8, 56, modeNormal)
			add(half()*2, 1, 0, 56, modeNormal)
		}
		return p
	}
	add(0, 0, fSYN, 0, modeNormal)
	switch kind {
	case kindReject:
		add(half()*2, 1, fRST|fACK, 0, modeNormal)
		return p
	case kindNoReply:
		add(int64(time.Second), 0, fSYN, 0, modeRexmit)
		add(int64(2*time.Second), 0, fSYN, 0, modeRexmit)
		return p
	}
	add(half(), 1, fSYN|fACK, 0, modeNormal)
	add(half(), 0, fACK, 0, modeNormal)
	if kind == kindChat {
		// Small messages, each answered or acked; the client port is
		// often a well-known one (ssh, mqtt, irc).
		for n := 10 + g.rng.IntN(120); n > 0; n-- {
			dir := uint8(g.rng.IntN(2))
			add(g.dur(time.Millisecond, 300*time.Millisecond), dir, fACK|fPSH, 20+int(g.logUniform(1, 400)), modeNormal)
			if g.rng.IntN(3) > 0 {
				add(half(), 1-dir, fACK|fPSH, 20+int(g.logUniform(1, 200)), modeNormal)
			} else {
				add(half(), 1-dir, fACK, 0, modeNormal)
			}
		}
		add(g.dur(time.Millisecond, time.Second), 0, fFIN|fACK, 0, modeNormal)
		add(half(), 1, fFIN|fACK, 0, modeNormal)
		add(half(), 0, fACK, 0, modeNormal)
		return p
	}
	exchanges := 1 + g.rng.IntN(3)
	if kind == kindBulk {
		exchanges = 1
	}
	for x := 0; x < exchanges; x++ {
		// Request: one to three segments.
		req := 150 + g.rng.IntN(900)
		if g.rng.IntN(10) == 0 {
			req += g.rng.IntN(3000)
		}
		delay := int64(0)
		if x > 0 {
			delay = g.dur(time.Millisecond, 500*time.Millisecond)
		}
		for req > 0 {
			n := min(req, mss)
			add(delay, 0, fACK|fPSH, n, modeNormal)
			req -= n
			delay = pace()
		}
		// Response: segments from the server, the client acks every second one.
		segs := int(g.logUniform(1, 16))
		if kind == kindBulk {
			segs = 100 + g.rng.IntN(500)
		}
		lossAt, rexmitAt := -1, -1
		switch r := g.rng.IntN(100); {
		case r < 2 && segs > 2:
			lossAt = 1 + g.rng.IntN(segs-1)
		case r < 6:
			rexmitAt = g.rng.IntN(segs)
		}
		delay = half() + g.dur(200*time.Microsecond, 50*time.Millisecond)
		for i := 0; i < segs; i++ {
			n := mss
			if i == segs-1 {
				n = 1 + g.rng.IntN(mss)
			}
			mode := uint8(modeNormal)
			if i == lossAt {
				mode = modeLost
			}
			add(delay, 1, fACK|fPSH, n, mode)
			if i == rexmitAt {
				add(rtt, 1, fACK|fPSH, n, modeRexmit)
			}
			if i%2 == 1 || i == segs-1 {
				add(pace(), 0, fACK, 0, modeNormal)
			}
			delay = pace()
		}
	}
	// Close.
	switch r := g.rng.IntN(100); {
	case r < 75: // client closes first
		add(g.dur(time.Millisecond, time.Second), 0, fFIN|fACK, 0, modeNormal)
		add(half(), 1, fFIN|fACK, 0, modeNormal)
		add(half(), 0, fACK, 0, modeNormal)
	case r < 88: // server closes first
		add(g.dur(time.Millisecond, 2*time.Second), 1, fFIN|fACK, 0, modeNormal)
		add(half(), 0, fFIN|fACK, 0, modeNormal)
		add(half(), 1, fACK, 0, modeNormal)
	case r < 96: // client aborts
		add(g.dur(time.Millisecond, time.Second), 0, fRST|fACK, 0, modeNormal)
	default: // still open when the capture ends, or idle: no close seen
	}
	return p
}

// Heap of sessions by next packet time.

func (g *gen) push(s *session) {
	s.hidx = len(g.heap)
	g.heap = append(g.heap, s)
	g.up(s.hidx)
}

func (g *gen) pop() {
	n := len(g.heap) - 1
	g.swap(0, n)
	g.heap = g.heap[:n]
	if n > 0 {
		g.fix(0)
	}
}

func (g *gen) fix(i int) {
	g.down(i)
	g.up(i)
}

func (g *gen) swap(i, j int) {
	g.heap[i], g.heap[j] = g.heap[j], g.heap[i]
	g.heap[i].hidx, g.heap[j].hidx = i, j
}

func (g *gen) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if g.heap[p].next <= g.heap[i].next {
			return
		}
		g.swap(i, p)
		i = p
	}
}

func (g *gen) down(i int) {
	for {
		l := 2*i + 1
		if l >= len(g.heap) {
			return
		}
		m := l
		if r := l + 1; r < len(g.heap) && g.heap[r].next < g.heap[l].next {
			m = r
		}
		if g.heap[i].next <= g.heap[m].next {
			return
		}
		g.swap(i, m)
		i = m
	}
}

var (
	macClient = []byte{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	macRouter = []byte{0x02, 0x00, 0x00, 0x00, 0x00, 0xfe}
)

// emit writes the session's current step.
func (g *gen) emit(s *session) error {
	st := s.plan[s.i]
	d := st.dir
	src, dst := s.t.c, s.t.s
	sp, dp := s.t.cp, s.t.sp
	if d == 1 {
		src, dst, sp, dp = dst, src, dp, sp
	}
	b := g.frame[:0]
	if d == 0 {
		b = append(b, macRouter...)
		b = append(b, macClient...)
	} else {
		b = append(b, macClient...)
		b = append(b, macRouter...)
	}
	if s.v6 {
		b = append(b, 0x86, 0xdd)
	} else {
		b = append(b, 0x08, 0x00)
	}
	ipStart := len(b)
	var l4 []byte
	switch s.t.proto {
	case 6:
		l4 = g.tcpSegment(s, st, sp, dp)
	case 17:
		l4 = make8(g.l4buf, 8)
		binary.BigEndian.PutUint16(l4[0:], sp)
		binary.BigEndian.PutUint16(l4[2:], dp)
		binary.BigEndian.PutUint16(l4[4:], uint16(8+int(st.plen)))
		l4 = append(l4, g.payload[:st.plen]...)
	case 1, 58:
		l4 = make8(g.l4buf, 8)
		typ := st.flags // 8 echo request, 0 reply (ICMPv6 128/129)
		if s.t.proto == 58 {
			typ = 128
			if d == 1 {
				typ = 129
			}
		}
		l4[0] = typ
		binary.BigEndian.PutUint16(l4[4:], s.t.cp)
		binary.BigEndian.PutUint16(l4[6:], uint16(s.i/2))
		l4 = append(l4, g.payload[:st.plen]...)
	}
	// IP header.
	if s.v6 {
		b = append(b, 0x60, 0, 0, 0, 0, 0, s.t.proto, 64)
		binary.BigEndian.PutUint16(b[ipStart+4:], uint16(len(l4)))
		a, z := src.As16(), dst.As16()
		b = append(b, a[:]...)
		b = append(b, z[:]...)
	} else {
		ttl := byte(64)
		if d == 1 {
			ttl = 53
		}
		s.ipid[d]++
		b = append(b, 0x45, 0, 0, 0, 0, 0, 0x40, 0, ttl, s.t.proto, 0, 0)
		binary.BigEndian.PutUint16(b[ipStart+2:], uint16(20+len(l4)))
		binary.BigEndian.PutUint16(b[ipStart+4:], s.ipid[d])
		a, z := src.As4(), dst.As4()
		b = append(b, a[:]...)
		b = append(b, z[:]...)
		binary.BigEndian.PutUint16(b[ipStart+10:], ^decode.Checksum(b[ipStart:ipStart+20], 0))
	}
	// Transport checksum over the pseudo-header.
	var ps uint32
	if s.v6 {
		a, z := src.As16(), dst.As16()
		ps = sumWords(a[:]) + sumWords(z[:])
	} else {
		a, z := src.As4(), dst.As4()
		ps = sumWords(a[:]) + sumWords(z[:])
	}
	ps += uint32(s.t.proto) + uint32(len(l4))
	switch s.t.proto {
	case 6:
		binary.BigEndian.PutUint16(l4[16:], ^decode.Checksum(l4, ps))
	case 17:
		c := ^decode.Checksum(l4, ps)
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[6:], c)
	case 1:
		binary.BigEndian.PutUint16(l4[2:], ^decode.Checksum(l4, 0))
	case 58:
		binary.BigEndian.PutUint16(l4[2:], ^decode.Checksum(l4, ps))
	}
	b = append(b, l4...)
	g.frame, g.l4buf = b[:0], l4[:0]
	if st.mode == modeLost {
		g.lost++
		return nil
	}
	g.packets++
	g.bytes += int64(len(b)) + 16
	return g.w.WritePacket(time.Unix(0, g.now), b, 0)
}

// tcpSegment builds the TCP header and payload of a step and advances the
// session's sequence numbers.
func (g *gen) tcpSegment(s *session, st step, sp, dp uint16) []byte {
	d := st.dir
	hlen := 32 // timestamps option
	if st.flags&fSYN != 0 {
		hlen = 40 // MSS, SACK permitted, timestamps, window scale
	}
	if st.flags&fRST != 0 {
		hlen = 20
	}
	l4 := make8(g.l4buf, hlen)
	seq := s.seq[d]
	n := int(st.plen)
	switch {
	case st.mode == modeRexmit && st.flags&fSYN != 0:
		seq--
	case st.mode == modeRexmit:
		seq, n = s.last[d], int(s.lastN[d])
	}
	var ack uint32
	flags := st.flags
	if s.synned[1-d] {
		ack = s.seq[1-d]
		flags |= fACK
	} else {
		flags &^= fACK
		if flags&fRST != 0 {
			// A RST answering a SYN acks it.
			ack, flags = s.seq[1-d]+1, flags|fACK
		}
	}
	binary.BigEndian.PutUint16(l4[0:], sp)
	binary.BigEndian.PutUint16(l4[2:], dp)
	binary.BigEndian.PutUint32(l4[4:], seq)
	binary.BigEndian.PutUint32(l4[8:], ack)
	l4[12] = byte(hlen/4) << 4
	l4[13] = flags
	win := uint16(501)
	if flags&fSYN != 0 {
		win = 64240
	}
	binary.BigEndian.PutUint16(l4[14:], win)
	s.tsval[d] += 1 + uint32(g.rng.IntN(3))
	o := l4[20:hlen]
	switch hlen {
	case 40:
		copy(o, []byte{2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 3, 7})
		binary.BigEndian.PutUint32(o[8:], s.tsval[d])
		binary.BigEndian.PutUint32(o[12:], s.tsval[1-d])
	case 32:
		copy(o, []byte{1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0})
		binary.BigEndian.PutUint32(o[4:], s.tsval[d])
		binary.BigEndian.PutUint32(o[8:], s.tsval[1-d])
	}
	if n > 0 {
		off := g.rng.IntN(len(g.payload) - n)
		l4 = append(l4, g.payload[off:off+n]...)
	}
	if st.mode != modeRexmit {
		if n > 0 {
			s.last[d], s.lastN[d] = seq, uint16(n)
		}
		s.seq[d] += uint32(n)
		if flags&(fSYN|fFIN) != 0 {
			s.seq[d]++
		}
	}
	if flags&fSYN != 0 {
		s.synned[d] = true
	}
	return l4
}

// make8 returns buf extended to n zero bytes.
func make8(buf []byte, n int) []byte {
	buf = buf[:n]
	clear(buf)
	return buf
}

func sumWords(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	return s
}
