package model

import (
	"net/netip"
	"strings"
	"time"
)

// ConnState is Zeek's conn_state: a summary of how a connection went,
// computed from the two TCP endpoint states (see flow.ConnStateTCP and
// flow.ConnStateUDP).
// UDP uses S0, SF, SHR and OTH; other protocols OTH.
type ConnState string

// Zeek's conn_state values, with Zeek's own meaning.
const (
	ConnS0     ConnState = "S0"     // SYN seen, no reply
	ConnS1     ConnState = "S1"     // established, not terminated
	ConnSF     ConnState = "SF"     // normal establishment and termination
	ConnREJ    ConnState = "REJ"    // connection attempt rejected (RST to SYN)
	ConnS2     ConnState = "S2"     // established, close attempt by originator only
	ConnS3     ConnState = "S3"     // established, close attempt by responder only
	ConnRSTO   ConnState = "RSTO"   // established, originator aborted with RST
	ConnRSTR   ConnState = "RSTR"   // responder sent a RST
	ConnRSTOS0 ConnState = "RSTOS0" // originator sent SYN then RST, no SYN-ACK seen
	ConnRSTRH  ConnState = "RSTRH"  // responder sent SYN-ACK then RST, no SYN from originator seen
	ConnSH     ConnState = "SH"     // originator sent SYN then FIN, no SYN-ACK seen ("half open")
	ConnSHR    ConnState = "SHR"    // responder sent SYN-ACK then FIN, no SYN from originator seen
	ConnOTH    ConnState = "OTH"    // no SYN seen, midstream traffic
)

// TCPFlags is the flags byte of a TCP header (FIN is bit 0 … CWR bit 7).
type TCPFlags uint8

// TCP header flag bits.
const (
	FlagFIN TCPFlags = 1 << iota
	FlagSYN
	FlagRST
	FlagPSH
	FlagACK
	FlagURG
	FlagECE
	FlagCWR
)

// String returns the flags as letters in header order (e.g. "SA" for
// SYN+ACK, "FPU" for a Xmas probe); "" when no flag is set.
func (f TCPFlags) String() string {
	const letters = "FSRPAUEC"
	var b strings.Builder
	for i := 0; i < 8; i++ {
		if f&(1<<i) != 0 {
			b.WriteByte(letters[i])
		}
	}
	return b.String()
}

// ParseTCPFlags accepts the letters String returns, in any order.
func ParseTCPFlags(s string) (TCPFlags, bool) {
	const letters = "FSRPAUEC"
	var f TCPFlags
	for i := 0; i < len(s); i++ {
		j := strings.IndexByte(letters, s[i])
		if j < 0 {
			return 0, false
		}
		f |= 1 << j
	}
	return f, true
}

// SYNOptions is the set of TCP option kinds in a SYN. The zero value means
// unknown (no SYN seen, or a log without the column).
type SYNOptions uint8

// TCP option kinds tcpsentry records, and SYNSeen, set whenever the SYN
// was seen (so a SYN without options is SYNSeen alone).
const (
	OptMSS SYNOptions = 1 << iota
	OptWScale
	OptSACKOK
	OptTimestamp
	OptOther
	SYNSeen SYNOptions = 1 << 7
)

var synOptionNames = [...]struct {
	opt  SYNOptions
	name string
}{{OptMSS, "mss"}, {OptWScale, "ws"}, {OptSACKOK, "sackok"}, {OptTimestamp, "ts"}, {OptOther, "other"}}

// ParseSYNOptionKinds reads the option kinds from a TCP header's options
// bytes. A malformed list keeps what was read before the damage.
func ParseSYNOptionKinds(b []byte) SYNOptions {
	o := SYNSeen
	for i := 0; i < len(b); {
		kind := b[i]
		switch kind {
		case 0: // end of list
			return o
		case 1: // no-op
			i++
			continue
		}
		if i+1 >= len(b) || b[i+1] < 2 || i+int(b[i+1]) > len(b) {
			return o | OptOther
		}
		switch kind {
		case 2:
			o |= OptMSS
		case 3:
			o |= OptWScale
		case 4:
			o |= OptSACKOK
		case 8:
			o |= OptTimestamp
		default:
			o |= OptOther
		}
		i += int(b[i+1])
	}
	return o
}

// String is "" when unknown, "none" for a SYN without options, else the
// kinds joined by commas ("mss,ws,sackok,ts").
func (o SYNOptions) String() string {
	if o&SYNSeen == 0 {
		return ""
	}
	var names []string
	for _, n := range synOptionNames {
		if o&n.opt != 0 {
			names = append(names, n.name)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ",")
}

// ParseSYNOptions accepts what String returns.
func ParseSYNOptions(s string) (SYNOptions, bool) {
	if s == "" {
		return 0, true
	}
	o := SYNSeen
	if s == "none" {
		return o, true
	}
next:
	for _, part := range strings.Split(s, ",") {
		for _, n := range synOptionNames {
			if part == n.name {
				o |= n.opt
				continue next
			}
		}
		return 0, false
	}
	return o, true
}

// KernelStack reports whether the SYN looks like an operating system's
// connect(): it offers window scaling, SACK or timestamps, which bare
// raw-socket probes leave out.
func (o SYNOptions) KernelStack() bool {
	return o&SYNSeen != 0 && o&(OptWScale|OptSACKOK|OptTimestamp) != 0
}

// ConnField names a Conn field that can be unset ("-" in a Zeek log).
// Conn.Unset is a set of them.
type ConnField uint16

// Fields of Conn that Zeek may leave unset.
const (
	FieldDuration ConnField = 1 << iota
	FieldOrigBytes
	FieldRespBytes
	FieldLocalOrig
	FieldLocalResp
	FieldMissedBytes
	FieldHistory
	FieldOrigPkts
	FieldOrigIPBytes
	FieldRespPkts
	FieldRespIPBytes
	FieldConnState
	FieldFirstFlags
)

// EndReason says why a flow tracker emitted a Conn record.
type EndReason string

// Why a record was emitted. Records read from a Zeek log have "".
const (
	EndClosed  EndReason = "closed"  // both sides closed or reset, after Zeek's close delay
	EndTimeout EndReason = "timeout" // inactivity or connection-attempt timeout
	EndEvicted EndReason = "evicted" // flow table full: the least recently active flow made room
	EndEOF     EndReason = "eof"     // still open when the input ended
	// EndOpen marks an in-progress record of a live source: the
	// connection is still open, its counters and duration are so far, and
	// later records with the same uid supersede it.
	EndOpen EndReason = "open"
)

// Conn is one connection summary, field for field compatible with Zeek's
// conn.log (scripts/base/protocols/conn/main.zeek), plus tcpsentry's own
// fields after Zeek's. Times are event times (packet or log timestamps).
type Conn struct {
	TS    time.Time      // ts: time of the first packet of the connection
	UID   string         // uid: unique identifier of the connection ("C…" like Zeek's; not Zeek's value for the same trace)
	Orig  netip.AddrPort // id.orig_h, id.orig_p: originator; for ICMP the port is the ICMP type
	Resp  netip.AddrPort // id.resp_h, id.resp_p: responder; for ICMP the port is the ICMP code or reply type
	Proto Proto          // proto and ip_proto: IP protocol number (tcp, udp, icmp; others are Zeek's "unknown_transport")

	Service string // service: application protocols detected, comma-separated; "" when none (tcpsentry does not detect them)

	// Duration is last packet time minus first, as Zeek counts it (packets
	// after both sides closed do not extend it); unset when zero.
	Duration time.Duration
	// OrigBytes is payload bytes sent by the originator, taken from TCP
	// sequence numbers (so it counts bytes missing from the capture too),
	// or the sum of UDP/ICMP payload lengths; unset when Duration is.
	OrigBytes uint64
	RespBytes uint64 // resp_bytes: like OrigBytes, for the responder

	ConnState ConnState // conn_state: see ConnState
	LocalOrig bool      // local_orig: originator is in a local network; unset when no local networks are configured
	LocalResp bool      // local_resp: responder is in a local network; unset like LocalOrig

	MissedBytes uint64 // missed_bytes: bytes acknowledged but never seen (content gaps), both directions
	// History is Zeek's history string: S syn, H syn-ack, A pure ack, D data,
	// F fin, R rst, C bad checksum, G content gap, I fin+rst, Q multi-flag,
	// T retransmission, W zero window, ^ direction flipped; upper case from
	// the originator, lower case from the responder. "" when nothing was recorded.
	History string

	OrigPkts    uint64 // orig_pkts: packets from the originator (after checksum and header checks)
	OrigIPBytes uint64 // orig_ip_bytes: sum of IP total lengths of the originator's packets
	RespPkts    uint64 // resp_pkts: packets from the responder
	RespIPBytes uint64 // resp_ip_bytes: sum of IP total lengths of the responder's packets

	TunnelParents []string // tunnel_parents: uids of encapsulating connections; nil when not tunnelled

	// FirstFlags is the TCP flags of the first packet seen for the
	// connection, before any role flip (scan typing needs it: a lone FIN, a
	// NULL or a Xmas probe); 0 for non-TCP connections and in Zeek logs.
	FirstFlags TCPFlags
	// SYNOptions lists the TCP options of the originator's first SYN.
	// Raw-packet scanners send bare SYNs (nmap -sS: MSS only) while a
	// kernel's connect() offers window scaling, SACK and timestamps, so
	// this tells a connect() scan of closed ports from a SYN scan.
	SYNOptions SYNOptions

	// End says why the record was emitted; "" for records read from logs.
	End EndReason
	// Update marks a record of a connection already given in an earlier
	// in-progress record (same UID): detectors that count connections
	// count the first record only, and take outcomes from the last.
	Update bool

	// Unset lists the Zeek fields that were unset ("-"); their values
	// above are zero then, meaning "unknown", not "zero".
	Unset ConnField
}

// Has reports whether field f is set.
func (c *Conn) Has(f ConnField) bool { return c.Unset&f == 0 }

// LastSeen is the time of the last packet counted in Duration.
func (c *Conn) LastSeen() time.Time { return c.TS.Add(c.Duration) }

// TotalBytes is OrigBytes+RespBytes: payload both ways.
func (c *Conn) TotalBytes() uint64 { return c.OrigBytes + c.RespBytes }

// Flipped reports whether the tracker decided the first packet seen came
// from the responder (history starts with '^').
func (c *Conn) Flipped() bool { return strings.HasPrefix(c.History, "^") }

// FormatUID writes a Zeek-style connection uid from 112 bits (x and the top
// 48 of y): "C" and base-62 digits, as Zeek's look (not Zeek's values).
func FormatUID(x, y uint64) string {
	const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	var b [24]byte
	i := len(b)
	for _, v := range [2]uint64{x, y >> 16} {
		for v > 0 {
			i--
			b[i] = digits[v%62]
			v /= 62
		}
	}
	i--
	b[i] = 'C'
	return string(b[i:])
}
