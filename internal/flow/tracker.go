// Package flow turns packets into connection records that agree with
// Zeek's conn.log: a TCP state machine ported from Zeek's TCP analyzer
// (conn_state, history, sequence-number byte counts, content gaps), UDP,
// ICMP and other-IP records, Zeek's timers, and a bounded flow table that
// evicts the least recently active flow under pressure.
package flow

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/capture"
	"github.com/tcpsentry/tcpsentry/internal/flow/decode"
	"github.com/tcpsentry/tcpsentry/internal/flow/service"
	"github.com/tcpsentry/tcpsentry/internal/flow/table"
	"github.com/tcpsentry/tcpsentry/internal/flow/tcp"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// IP protocol numbers the tracker treats specially.
const (
	ipProtoICMP   = uint8(model.ProtoICMP)
	ipProtoTCP    = uint8(model.ProtoTCP)
	ipProtoUDP    = uint8(model.ProtoUDP)
	ipProtoICMPv6 = uint8(model.ProtoICMPv6)
)

// DecodeError is a packet the tracker could not use: it names the layer
// and field that were wrong. Run adds the file name and packet number.
type DecodeError = decode.Error

// Timeouts are the tracker's timers. The defaults are Zeek's
// (scripts/base/init-bare.zeek) so that records split and end where Zeek's do.
type Timeouts struct {
	TCPInactivity   time.Duration // tcp_inactivity_timeout (5 min): idle established TCP
	UDPInactivity   time.Duration // udp_inactivity_timeout (1 min): idle UDP, and TCP before its handshake completes (as in Zeek)
	ICMPInactivity  time.Duration // icmp_inactivity_timeout (1 min)
	OtherInactivity time.Duration // unknown_ip_inactivity_timeout (1 min): other IP protocols
	TCPAttemptDelay time.Duration // tcp_attempt_delay (5 s): a SYN unanswered this long ends the attempt
	TCPCloseDelay   time.Duration // tcp_close_delay (5 s): state kept after a full close or reset
	TCPSYNTimeout   time.Duration // tcp_SYN_timeout (5 s): first check of a new TCP connection
	TCPSessionTimer time.Duration // tcp_session_timer (6 s): recheck interval after one side closed
	TCPLinger       time.Duration // tcp_connection_linger (5 s): quiet time before a half-closed connection may go
	// TCPHandshakeInactivity ends an idle TCP connection whose handshake
	// never completed (a flood's half-open ones); 0 means UDPInactivity,
	// which is what Zeek uses. Live sources shorten it to see floods end.
	TCPHandshakeInactivity time.Duration
}

// DefaultTimeouts returns Zeek's defaults.
func DefaultTimeouts() Timeouts {
	return Timeouts{
		TCPInactivity:   5 * time.Minute,
		UDPInactivity:   time.Minute,
		ICMPInactivity:  time.Minute,
		OtherInactivity: time.Minute,
		TCPAttemptDelay: 5 * time.Second,
		TCPCloseDelay:   5 * time.Second,
		TCPSYNTimeout:   5 * time.Second,
		TCPSessionTimer: 6 * time.Second,
		TCPLinger:       5 * time.Second,
	}
}

// DefaultMaxFlows is the default flow table bound: about a million
// concurrent flows, in about 400 MB (some 375 bytes per flow with the
// table's index and timer heap; see BenchmarkFlowMemory).
const DefaultMaxFlows = 1 << 20

// Options configure a Tracker. The zero value means Zeek's defaults.
type Options struct {
	// MaxFlows bounds the flow table; when full, the least recently active
	// flow is emitted (End "evicted") to make room. 0 means DefaultMaxFlows.
	MaxFlows int
	// Checksums validates IP, TCP, UDP and ICMP checksums and drops bad
	// packets, as Zeek does without -C. Off by default: captures taken on
	// the sending host often carry offloaded, unfilled checksums.
	Checksums bool
	// Timeouts; a zero Timeouts means DefaultTimeouts().
	Timeouts Timeouts
	// LikelyServerPort says whether a port is a well-known service port;
	// it decides the direction of connections whose start was not seen.
	// nil means DefaultLikelyServerPort (Zeek's likely_server_ports).
	LikelyServerPort func(proto model.Proto, port uint16) bool
	// UIDSeed makes uids differ between runs; uids are deterministic for
	// the same seed and input.
	UIDSeed uint64
	// MaxFragments bounds IP datagrams under reassembly (default 4096).
	MaxFragments int
}

func (o *Options) maxInitialWindow() int { return 16384 } // Zeek's tcp_max_initial_window

// Stats count what the tracker saw. Evicted and Errors are what an
// operator should watch.
type Stats struct {
	Packets      uint64 // frames given to Packet
	NonIP        uint64 // frames without IP (ARP, LLDP, 802.11 management, …)
	Errors       uint64 // frames that could not be decoded
	Unsupported  uint64 // frames of a link type with no decoder
	BadChecksums uint64 // packets dropped for a bad checksum (Options.Checksums)
	Fragments    uint64 // IP fragments received
	Reassembled  uint64 // datagrams rebuilt from fragments
	FragDropped  uint64 // fragment reassemblies abandoned (table full)
	Flows        uint64 // flows created
	Emitted      uint64 // records emitted
	Evicted      uint64 // flows emitted early because the table was full
	Active       int    // flows in the table now
}

// Tracker assembles packets into connections. It is not safe for
// concurrent use.
type Tracker struct {
	opts  Options
	emit  func(*model.Conn)
	flows *table.Table[flow]
	// exts holds the rare parts of flows (see flowExt); freeExt lists
	// unused ones, which keep their slices' storage for reuse.
	exts    []flowExt
	freeExt []uint32
	inact   [numInact]int64 // inactivity timeouts by flow.inact
	now     int64
	seq     uint64
	stats   Stats
	frags   *decode.Reassembler
	pkt     decode.Packet
	key     table.Key
	// Flows changed since the last Progress call (see progress.go); kept
	// only once Progress has been called.
	dirty   []table.ID
	dirtyOn bool
}

// NewTracker returns a tracker that calls emit for each finished
// connection. emit owns the record it is given.
func NewTracker(opts Options, emit func(*model.Conn)) *Tracker {
	if opts.MaxFlows <= 0 {
		opts.MaxFlows = DefaultMaxFlows
	}
	if opts.Timeouts == (Timeouts{}) {
		opts.Timeouts = DefaultTimeouts()
	}
	if opts.LikelyServerPort == nil {
		opts.LikelyServerPort = DefaultLikelyServerPort
	}
	if opts.MaxFragments <= 0 {
		opts.MaxFragments = 4096
	}
	to := opts.Timeouts
	return &Tracker{
		opts:  opts,
		emit:  emit,
		flows: table.New[flow](min(opts.MaxFlows, 1<<10)),
		exts:  make([]flowExt, 1, 64), // index 0 is "none"
		inact: [numInact]int64{int64(to.UDPInactivity), int64(to.TCPInactivity), int64(to.ICMPInactivity), int64(to.OtherInactivity),
			int64(cmp.Or(to.TCPHandshakeInactivity, to.UDPInactivity))},
		frags: decode.NewReassembler(opts.MaxFragments),
	}
}

// Stats returns the counters so far.
func (t *Tracker) Stats() Stats {
	s := t.stats
	s.Active = t.flows.Len()
	return s
}

// makeKey fills k with the packet's flow key, the lower endpoint first
// (except one-way ICMP messages, which Zeek keys by direction), and
// reports whether the source is the key's A side.
func makeKey(p *decode.Packet, k *table.Key) (srcIsA bool) {
	k.Proto, k.Flags = p.Proto, 0
	if p.V6 {
		k.Flags |= table.KeyV6
	}
	if p.OneWay || !table.Less(&p.Dst, p.DstPort, &p.Src, p.SrcPort) {
		if p.OneWay {
			k.Flags |= table.KeyOneWay
		}
		k.A, k.B, k.AP, k.BP = p.Src, p.Dst, p.SrcPort, p.DstPort
		return true
	}
	k.A, k.B, k.AP, k.BP = p.Dst, p.Src, p.DstPort, p.SrcPort
	return false
}

// Inactivity timeouts a flow can be under (flow.inact).
const (
	inactUDP       = iota // UDP
	inactTCP              // TCP after the handshake
	inactICMP             // ICMP
	inactOther            // other IP protocols
	inactHandshake        // TCP until its handshake completes: UDP's in Zeek, shorter live
	numInact
)

// histInline is the history kept in the flow itself; longer histories
// (rare: repeated retransmissions, resets, …) move to the flow's flowExt.
const histInline = 11

// flow is one connection's state. It holds no pointers, so that the
// table's storage is not scanned by the garbage collector; its rare parts
// live in a flowExt. The fields most packets touch come first, so that
// they share cache lines with the table's key.
type flow struct {
	last int64 // unix nanoseconds

	origPkts, origIPBytes, respPkts, respIPBytes uint64

	histSeen uint32 // Zeek's history bits (histSYN …), resp bits << 16
	id       table.ID
	ext      uint32 // index in Tracker.exts; 0 when the flow has none

	hist       [histInline]byte
	histLen    uint8 // letters in hist
	bits       flowBits
	firstFlags model.TCPFlags
	synOpts    model.SYNOptions // of the originator's first SYN
	// svc is the protocol of each side's first payload, a nibble each
	// (originator low, responder high): 0 not seen yet, else service.ID+1.
	svc                    uint8
	inact                  uint8 // inactivity timeout in force (inactUDP …)
	origIsA                bool  // the originator is the key's A side
	origActive, respActive bool  // UDP/ICMP: a packet was seen from that side

	tcp tcp.Conn

	start int64  // unix nanoseconds
	seq   uint64 // creation number, for the uid and the order of Flush

	// Timers (unix ns, 0 = none), as Zeek's: inactivity, connection
	// attempt, delete after close, and up to two expire checks.
	inactAt, attemptAt, deleteAt int64
	expireAt                     [2]int64

	origLen, respLen uint64 // UDP/ICMP payload bytes
}

// flowBits are a flow's yes/no facts, packed to keep flow small.
type flowBits uint8

const (
	bitHistExt  flowBits = 1 << iota // the history outgrew hist: it is in the flowExt
	bitDirty                         // listed in Tracker.dirty (progress.go)
	bitReported                      // given in an in-progress record: later records are updates
)

// flowExt is the rarely needed part of a flow, allocated when first used.
type flowExt struct {
	holes  [2][]tcp.Range // per TCP endpoint (tcp.Conn.Eps index): data received above a hole
	hist   []byte         // the whole history, once longer than histInline
	missed uint64         // content gap bytes, both directions
	// Scaled history counters of bad checksums ('C') and content gaps
	// ('G') per endpoint (Eps index; for UDP, 0 is the originator).
	badChecksums, gaps [2]uint32
	histLastHi         [2][3]uint32 // high halves of tcp.Endpoint.HistLast
}

// extOf returns fl's flowExt, or nil when it has none.
func (t *Tracker) extOf(fl *flow) *flowExt {
	if fl.ext == 0 {
		return nil
	}
	return &t.exts[fl.ext]
}

// needExt returns fl's flowExt, giving it one if needed.
func (t *Tracker) needExt(fl *flow) *flowExt {
	if fl.ext == 0 {
		if n := len(t.freeExt); n > 0 {
			fl.ext, t.freeExt = t.freeExt[n-1], t.freeExt[:n-1]
		} else {
			fl.ext = uint32(len(t.exts))
			t.exts = append(t.exts, flowExt{})
		}
	}
	return &t.exts[fl.ext]
}

// releaseExt returns fl's flowExt, keeping its storage for the next user.
func (t *Tracker) releaseExt(fl *flow) {
	if fl.ext == 0 {
		return
	}
	x := &t.exts[fl.ext]
	*x = flowExt{holes: [2][]tcp.Range{x.holes[0][:0], x.holes[1][:0]}, hist: x.hist[:0]}
	t.freeExt = append(t.freeExt, fl.ext)
	fl.ext = 0
}

func (t *Tracker) orig(fl *flow) (netip.Addr, uint16) {
	k := t.flows.Key(fl.id)
	v6 := k.Flags&table.KeyV6 != 0
	if fl.origIsA {
		return decode.Addr(k.A, v6), k.AP
	}
	return decode.Addr(k.B, v6), k.BP
}

func (t *Tracker) resp(fl *flow) (netip.Addr, uint16) {
	k := t.flows.Key(fl.id)
	v6 := k.Flags&table.KeyV6 != 0
	if fl.origIsA {
		return decode.Addr(k.B, v6), k.BP
	}
	return decode.Addr(k.A, v6), k.AP
}

// checkHistory records code the first time the (mask, direction) is seen
// and reports whether it had been seen before (Zeek's CheckHistory).
func (t *Tracker) checkHistory(fl *flow, isOrig bool, mask uint32, code byte) bool {
	if !isOrig {
		mask <<= 16
	}
	if fl.histSeen&mask == 0 {
		fl.histSeen |= mask
		t.addHistory(fl, isOrig, code)
		return false
	}
	return true
}

func (t *Tracker) addHistory(fl *flow, isOrig bool, code byte) {
	if !isOrig {
		code = lower(code)
	}
	t.appendHistory(fl, code)
}

func (t *Tracker) appendHistory(fl *flow, code byte) {
	if fl.bits&bitHistExt == 0 {
		if int(fl.histLen) < len(fl.hist) {
			fl.hist[fl.histLen] = code
			fl.histLen++
			return
		}
		x := t.needExt(fl)
		x.hist = append(x.hist[:0], fl.hist[:]...)
		fl.bits |= bitHistExt
	}
	x := t.needExt(fl)
	x.hist = append(x.hist, code)
}

// history returns the history string.
func (t *Tracker) history(fl *flow) string {
	if fl.bits&bitHistExt != 0 {
		return string(t.exts[fl.ext].hist)
	}
	return string(fl.hist[:fl.histLen])
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// scaledHistory counts an event in *n and adds its letter at the 1st,
// 10th, 100th … occurrence (Zeek's ScaledHistoryEntry).
func (t *Tracker) scaledHistory(fl *flow, isOrig bool, code byte, n *uint32) {
	*n++
	switch *n {
	case 1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9:
		t.addHistory(fl, isOrig, code)
	}
}

func (fl *flow) addExpire(at int64) {
	switch {
	case fl.expireAt[0] == 0:
		fl.expireAt[0] = at
	case fl.expireAt[1] == 0:
		fl.expireAt[1] = at
	default:
		// Two checks pending already: keep the earlier ones.
	}
}

func (fl *flow) due() int64 {
	d := int64(0)
	for _, x := range [5]int64{fl.inactAt, fl.attemptAt, fl.deleteAt, fl.expireAt[0], fl.expireAt[1]} {
		if x != 0 && (d == 0 || x < d) {
			d = x
		}
	}
	return d
}

// Packet decodes one captured frame and updates the flow it belongs to.
// An error means the frame was not used; it wraps capture.ErrUnsupportedLink
// for link types without a decoder, or is a *DecodeError.
func (t *Tracker) Packet(p *capture.Packet) error {
	t.stats.Packets++
	nw, l3, err := capture.DecodeLink(p.Link, p.Data)
	if err != nil {
		if errors.Is(err, capture.ErrUnsupportedLink) {
			t.stats.Unsupported++
			return err
		}
		t.stats.Errors++
		return &DecodeError{Layer: "link", Field: p.Link.String(), Err: err}
	}
	if nw == capture.NetOther {
		t.stats.NonIP++
		return nil
	}
	wire := p.WireLen - (len(p.Data) - len(l3))
	return t.IP(p.Time.UnixNano(), nw == capture.NetIPv6, l3, wire)
}

// IP processes one IP datagram seen at ts (unix ns); wire is its length on
// the wire (>= len(b) when the capture was cut short).
func (t *Tracker) IP(ts int64, v6 bool, b []byte, wire int) error {
	t.advance(ts)
	p := &t.pkt
	if err := decode.IP(p, v6, b, wire, t.opts.Checksums); err != nil {
		t.stats.Errors++
		var de *DecodeError
		if errors.As(err, &de) && de.Field == "checksum" {
			t.stats.BadChecksums++
		}
		return err
	}
	if p.Frag {
		t.stats.Fragments++
		whole, ok := t.frags.Add(p, ts)
		t.stats.FragDropped += t.frags.TakeDropped()
		if !ok {
			return nil
		}
		t.stats.Reassembled++
		if err := decode.IP(p, v6, whole, len(whole), false); err != nil {
			t.stats.Errors++
			return err
		}
		p.Frag = false
	}
	if err := decode.Transport(p, t.opts.Checksums); err != nil {
		t.stats.Errors++
		return err
	}
	t.track(p, ts)
	return nil
}

// DefaultLikelyServerPort is Zeek's default likely_server_ports: the ports
// its analyzers register for, per transport.
func DefaultLikelyServerPort(proto model.Proto, port uint16) bool {
	switch proto {
	case model.ProtoTCP:
		switch port {
		case 21, 2811, 22, 23, 25, 587, 53, 80, 81, 631, 1080, 3128, 8000, 8080, 8888,
			88, 110, 135, 139, 143, 389, 3268, 443, 445, 502, 563, 585, 614, 636, 989, 990,
			992, 993, 995, 5223, 1883, 3306, 3389, 5222, 5269, 5432, 6379, 6666, 6667, 6668,
			6669, 20000, 1812:
			return true
		}
	case model.ProtoUDP:
		switch port {
		case 53, 67, 68, 69, 88, 123, 137, 138, 161, 162, 443, 514, 1812, 1813, 2123, 2152,
			3544, 4789, 5060, 5072, 5353, 5355, 6081, 47808:
			return true
		}
	}
	return false
}

// track updates (or creates) the flow of a decoded packet.
func (t *Tracker) track(p *decode.Packet, ts int64) {
	key := &t.key
	srcIsA := makeKey(p, key)
	_, fl := t.flows.Find(key)
	if fl != nil && p.Proto == ipProtoTCP && fl.tcp.IsReuse(p.TCP.Flags, p.TCP.Seq) {
		t.remove(fl, model.EndClosed)
		fl = nil
	}
	if fl == nil {
		fl = t.newFlow(p, key, srcIsA, ts)
	} else {
		t.flows.Touch(fl.id)
	}
	t.markDirty(fl)
	isOrig := srcIsA == fl.origIsA
	counted := true
	switch p.Proto {
	case ipProtoTCP:
		counted = t.tcpPacket(fl, isOrig, &p.TCP, p.ChecksumOK, ts)
	default:
		if !p.ChecksumOK {
			counted = false
			if p.Proto == ipProtoUDP {
				t.scaledHistory(fl, isOrig, 'C', &t.needExt(fl).badChecksums[fl.tcp.Index(isOrig)])
			}
			break
		}
		fl.last = ts
		if isOrig {
			fl.origActive = true
			fl.origLen += uint64(p.PayloadLen)
		} else {
			fl.respActive = true
			fl.respLen += uint64(p.PayloadLen)
		}
		if p.Proto == ipProtoUDP {
			t.checkHistory(fl, isOrig, histData, 'D')
		}
	}
	if !counted {
		t.stats.BadChecksums++
		return
	}
	t.sniff(fl, isOrig, p)
	if isOrig {
		fl.origPkts++
		fl.origIPBytes += uint64(p.IPLen)
	} else {
		fl.respPkts++
		fl.respIPBytes += uint64(p.IPLen)
	}
}

var broadcast4 = [16]byte{12: 255, 13: 255, 14: 255, 15: 255}

func (t *Tracker) newFlow(p *decode.Packet, key *table.Key, srcIsA bool, ts int64) *flow {
	if t.flows.Len() >= t.opts.MaxFlows {
		if id := t.flows.Oldest(); id != 0 {
			t.stats.Evicted++
			t.remove(t.flows.Get(id), model.EndEvicted)
		}
	}
	id, fl := t.flows.Insert(key)
	t.seq++
	t.stats.Flows++
	fl.id, fl.origIsA, fl.start, fl.last, fl.seq = id, srcIsA, ts, ts, t.seq

	proto := model.Proto(p.Proto)
	var flip bool
	switch p.Proto {
	case ipProtoTCP:
		fl.tcp.Init()
		fl.firstFlags = p.TCP.Flags
		f := p.TCP.Flags
		if f&(model.FlagSYN|model.FlagACK) == model.FlagSYN {
			fl.synOpts = model.ParseSYNOptionKinds(p.TCP.Options)
		}
		if f&model.FlagSYN == 0 || f&model.FlagACK != 0 {
			// Started midway or with a SYN-ACK: guess the server by port
			// (not for SYN-ACKs to two server ports, which stealth scans send).
			if t.opts.LikelyServerPort(proto, p.SrcPort) {
				if t.opts.LikelyServerPort(proto, p.DstPort) {
					flip = f&model.FlagSYN == 0 && p.SrcPort < p.DstPort
				} else {
					flip = true
				}
			}
		}
		fl.inact = inactHandshake // until the handshake completes (UDP's timeout in Zeek)
		fl.expireAt[0] = ts + int64(t.opts.Timeouts.TCPSYNTimeout)
	case ipProtoUDP:
		flip = t.opts.LikelyServerPort(proto, p.SrcPort) && !t.opts.LikelyServerPort(proto, p.DstPort)
		fl.inact = inactUDP
	case ipProtoICMP, ipProtoICMPv6:
		fl.inact = inactICMP
	default:
		fl.inact = inactOther
	}
	if flip && !(!p.V6 && p.Dst == broadcast4) {
		t.flipRoles(fl)
	}
	if d := t.inact[fl.inact]; d > 0 {
		fl.inactAt = ts + d
	}
	t.reschedule(fl)
	return fl
}

// sniff names the protocol of the first payload each side sends.
func (t *Tracker) sniff(fl *flow, isOrig bool, p *decode.Packet) {
	shift := uint8(0)
	if !isOrig {
		shift = 4
	}
	if fl.svc>>shift&0xf != 0 {
		return
	}
	var id service.ID
	switch p.Proto {
	case ipProtoTCP:
		if len(p.TCP.Payload) == 0 || p.TCP.Flags&model.FlagRST != 0 {
			return
		}
		id = service.Identify(service.TCP, p.TCP.Payload, isOrig)
	case ipProtoUDP:
		if len(p.UDPPayload) == 0 {
			return
		}
		id = service.Identify(service.UDP, p.UDPPayload, isOrig)
	default:
		return
	}
	fl.svc |= (uint8(id) + 1) << shift
}

// serviceOf is the record's service field: the protocols identified,
// the originator's first, comma-separated as in Zeek.
func serviceOf(fl *flow) string {
	var a, b service.ID
	if n := fl.svc & 0xf; n > 0 {
		a = service.ID(n - 1)
	}
	if n := fl.svc >> 4; n > 0 {
		b = service.ID(n - 1)
	}
	switch {
	case a == service.Unknown:
		return b.String()
	case b == service.Unknown || b == a:
		return a.String()
	}
	return a.String() + "," + b.String()
}

// flipRoles swaps originator and responder (Zeek's Connection::FlipRoles).
func (t *Tracker) flipRoles(fl *flow) {
	fl.origIsA = !fl.origIsA
	fl.tcp.Flip()
	fl.origPkts, fl.respPkts = fl.respPkts, fl.origPkts
	fl.origIPBytes, fl.respIPBytes = fl.respIPBytes, fl.origIPBytes
	fl.svc = fl.svc>>4 | fl.svc<<4
	t.appendHistory(fl, '^')
}

func (t *Tracker) setInactivityTimeout(fl *flow, which uint8) {
	if t.inact[which] == t.inact[fl.inact] {
		fl.inact = which
		return
	}
	fl.inact = which
	fl.inactAt = 0
	if d := t.inact[which]; d > 0 {
		fl.inactAt = fl.last + d
	}
	t.reschedule(fl)
}

// reschedule puts fl's earliest timer on the table's timer heap.
func (t *Tracker) reschedule(fl *flow) { t.flows.Schedule(fl.id, fl.due()) }

// advance fires the timers due at or before now, like Zeek's timer
// manager does before each packet.
func (t *Tracker) advance(now int64) {
	t.now = now
	for {
		id, due := t.flows.Earliest()
		if id == 0 || due > now {
			break
		}
		t.fire(t.flows.Get(id), due, now)
	}
	t.frags.Expire(now)
	t.stats.FragDropped += t.frags.TakeDropped()
}

// Advance moves the clock to now without a packet, so that timers fire in
// silence (live capture).
func (t *Tracker) Advance(now time.Time) { t.advance(now.UnixNano()) }

func (t *Tracker) fire(fl *flow, d, now int64) {
	tcpTO := t.opts.Timeouts
	switch {
	case fl.deleteAt == d:
		t.remove(fl, model.EndClosed)
		return
	case fl.attemptAt == d:
		fl.attemptAt = 0
		c := &fl.tcp
		if c.IsActive && (c.Orig().State == tcp.SynSent || c.Orig().State == tcp.SynAckSent) && c.Resp().State == tcp.Inactive {
			c.IsActive = false
			t.remove(fl, model.EndTimeout)
			return
		}
	case fl.expireAt[0] == d || fl.expireAt[1] == d:
		if fl.expireAt[0] == d {
			fl.expireAt[0] = 0
		} else {
			fl.expireAt[1] = 0
		}
		c := &fl.tcp
		if !c.IsActive {
			break
		}
		o, r := c.Orig(), c.Resp()
		if fl.last+int64(tcpTO.TCPLinger) < now {
			if (o.Closed() || r.Closed()) && (o.Closed() && r.Closed() || o.State == tcp.Reset || r.State == tcp.Reset || o.State == tcp.Inactive || r.State == tcp.Inactive) {
				c.IsActive = false
				t.remove(fl, model.EndTimeout)
				return
			}
			if r.State == tcp.Inactive && o.State == tcp.Inactive {
				t.remove(fl, model.EndTimeout)
				return
			}
		}
		fl.addExpire(now + int64(tcpTO.TCPSessionTimer))
	case fl.inactAt == d:
		fl.inactAt = 0
		to := t.inact[fl.inact]
		if fl.last+to <= now {
			t.remove(fl, model.EndTimeout)
			return
		}
		fl.inactAt = fl.last + to
	default:
		// Stale heap entry; recompute below.
	}
	t.reschedule(fl)
}

// Flush emits every flow still in the table (End "eof"), oldest first, as
// at the end of a capture.
func (t *Tracker) Flush() {
	all := make([]*flow, 0, t.flows.Len())
	for _, fl := range t.flows.All() {
		all = append(all, fl)
	}
	slices.SortFunc(all, func(a, b *flow) int {
		if a.start != b.start {
			return cmp.Compare(a.start, b.start)
		}
		return cmp.Compare(a.seq, b.seq)
	})
	for _, fl := range all {
		t.remove(fl, model.EndEOF)
	}
}

// remove emits fl's record and frees its table entry.
func (t *Tracker) remove(fl *flow, why model.EndReason) {
	var c *model.Conn
	if t.emit != nil {
		c = t.record(fl, why)
	}
	t.releaseExt(fl)
	fl.bits &^= bitDirty // its ID may be reused; Progress skips it
	t.flows.Delete(fl.id)
	t.stats.Emitted++
	if t.emit != nil {
		t.emit(c)
	}
}

// record builds the conn.log record of a flow.
func (t *Tracker) record(fl *flow, why model.EndReason) *model.Conn {
	oa, op := t.orig(fl)
	ra, rp := t.resp(fl)
	proto := t.flows.Key(fl.id).Proto
	c := &model.Conn{
		TS:          time.Unix(0, fl.start).UTC(),
		UID:         uid(t.opts.UIDSeed, fl.seq),
		Orig:        netip.AddrPortFrom(oa, op),
		Resp:        netip.AddrPortFrom(ra, rp),
		Proto:       model.Proto(proto),
		History:     t.history(fl),
		Service:     serviceOf(fl),
		OrigPkts:    fl.origPkts,
		OrigIPBytes: fl.origIPBytes,
		RespPkts:    fl.respPkts,
		RespIPBytes: fl.respIPBytes,
		End:         why,
		Update:      fl.bits&bitReported != 0,
		Unset:       model.FieldLocalOrig | model.FieldLocalResp,
	}
	if x := t.extOf(fl); x != nil {
		c.MissedBytes = x.missed
	}
	var os, rs uint64
	switch proto {
	case ipProtoTCP:
		o, r := fl.tcp.Orig(), fl.tcp.Resp()
		os, rs = o.Size(r), r.Size(o)
		c.FirstFlags = fl.firstFlags
		c.SYNOptions = fl.synOpts
		c.ConnState = ConnStateTCP(EndpointState(o.State), EndpointState(r.State), os, rs, c.History)
	case ipProtoUDP:
		os, rs = fl.origLen, fl.respLen
		c.ConnState = ConnStateUDP(fl.origActive, fl.respActive)
		c.Unset |= model.FieldFirstFlags
	default:
		os, rs = fl.origLen, fl.respLen
		if proto != ipProtoICMP && proto != ipProtoICMPv6 {
			os, rs = 0, 0
		}
		c.ConnState = model.ConnOTH
		c.Unset |= model.FieldFirstFlags
	}
	if d := fl.last - fl.start; d > 0 {
		c.Duration = time.Duration(d)
		c.OrigBytes, c.RespBytes = os, rs
	} else {
		// Zeek logs no duration and no byte counts for a zero-length connection.
		c.Unset |= model.FieldDuration | model.FieldOrigBytes | model.FieldRespBytes
	}
	if c.History == "" {
		c.Unset |= model.FieldHistory
	}
	return c
}

// uid makes a Zeek-style connection uid: "C" and 96 bits in base 62,
// deterministic for a seed and a flow number.
func uid(seed, n uint64) string {
	x := splitmix(seed ^ n*0x9e3779b97f4a7c15)
	return model.FormatUID(x, splitmix(x^n))
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// String describes the counters for a one-line summary.
func (s Stats) String() string {
	return fmt.Sprintf("%d packets, %d flows, %d records, %d evicted, %d undecodable, %d non-IP, %d unsupported link, %d bad checksums, %d fragments (%d datagrams rebuilt)",
		s.Packets, s.Flows, s.Emitted, s.Evicted, s.Errors, s.NonIP, s.Unsupported, s.BadChecksums, s.Fragments, s.Reassembled)
}
