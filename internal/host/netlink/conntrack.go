package netlink

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// Tuple is one direction of a conntrack entry as the kernel saw it.
// Ports are 0 for protocols without ports (ICMP).
type Tuple struct {
	Src, Dst netip.AddrPort
}

// Flow is one conntrack entry. Integer fields are 0 when the kernel did not
// send them.
type Flow struct {
	Proto model.Proto // from the original tuple
	Orig  Tuple       // as the first packet went
	Reply Tuple       // as replies are expected (differs from reversed Orig under NAT)
	// Start is when conntrack created the entry; zero when
	// net.netfilter.nf_conntrack_timestamp was off at that moment.
	Start time.Time
	// Stop is when the entry died; zero while it lives (the dump's case).
	Stop time.Time
	// TCPState is conntrack's own TCP state (enum tcp_conntrack: 1
	// SYN_SENT, 3 ESTABLISHED, 7 TIME_WAIT, 8 CLOSE, …), not model.TCPState.
	TCPState uint8
	Status   uint32 // IPS_* bits: 1<<1 SEEN_REPLY, 1<<2 ASSURED, 1<<3 CONFIRMED, …
	Timeout  uint32 // seconds until the entry expires unless refreshed
	ID       uint32 // the kernel's entry id, stable while the entry lives
	Mark     uint32 // connmark
	Zone     uint16 // conntrack zone; 0 is the default

	// Packet and byte counters per direction: non-zero only with
	// net.netfilter.nf_conntrack_acct=1 when the entry was created.
	OrigPackets, OrigBytes   uint64
	ReplyPackets, ReplyBytes uint64
}

// ctnetlink attribute types, linux/netfilter/nfnetlink_conntrack.h.
const (
	ctaTupleOrig     = 1
	ctaTupleReply    = 2
	ctaStatus        = 3
	ctaProtoinfo     = 4
	ctaTimeout       = 7
	ctaMark          = 8
	ctaCountersOrig  = 9
	ctaCountersReply = 10
	ctaID            = 12
	ctaZone          = 18
	ctaTimestamp     = 20

	ctaTupleIP    = 1
	ctaTupleProto = 2

	ctaIPv4Src = 1
	ctaIPv4Dst = 2
	ctaIPv6Src = 3
	ctaIPv6Dst = 4

	ctaProtoNum     = 1
	ctaProtoSrcPort = 2
	ctaProtoDstPort = 3

	ctaProtoinfoTCP      = 1
	ctaProtoinfoTCPState = 1

	ctaCountersPackets   = 1 // be64
	ctaCountersBytes     = 2 // be64
	ctaCounters32Packets = 3 // be32, from kernels before 2.6.27
	ctaCounters32Bytes   = 4

	ctaTimestampStart = 1
	ctaTimestampStop  = 2

	ipctnlMsgCtGet = 1
	nfgenmsgLen    = 4 // struct nfgenmsg: family, version, res_id (be16)
)

// Conntrack reads the conntrack table with a Dumper used once, in the
// calling thread's network namespace; see Dumper.Conntrack.
func Conntrack(ctx context.Context) ([]Flow, error) {
	d, err := NewDumper()
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Conntrack(ctx)
}

// Conntrack dumps the conntrack table for IPv4 then IPv6, in the kernel's
// order. An empty table (conntrack not in use in the namespace) is an
// empty result, not an error. Without CAP_NET_ADMIN the error wraps
// ErrUnavailable. Malformed entries are skipped and reported in an error
// wrapping ErrIncomplete, returned with the flows that were read.
func (d *Dumper) Conntrack(ctx context.Context) ([]Flow, error) {
	if d.nf == nil {
		return nil, d.nfErr
	}
	var (
		out  []Flow
		soft []error
	)
	for _, f := range [...]Family{IPv4, IPv6} {
		what := "conntrack " + f.String()
		start := len(out)
		parse := func(off int, b []byte) error {
			fl, err := parseConntrack(b)
			if err != nil {
				return fmt.Errorf("message at offset %d: %w", off, err)
			}
			if len(out) == cap(out) {
				out = slices.Grow(out, max(len(out), 256)) // double: append's 1.25x copies a big table ~5 times
			}
			out = append(out, fl)
			return nil
		}
		reset := func() { out = out[:start] }
		req := [nfgenmsgLen]byte{byte(f), unix.NFNETLINK_V0}
		sf, err := d.nf.dumpConsistent(ctx, d.buffer(), unix.NFNL_SUBSYS_CTNETLINK<<8|ipctnlMsgCtGet, req[:], parse, reset)
		if err != nil {
			return nil, unavailable(what, err, "needs CAP_NET_ADMIN")
		}
		if sf != nil {
			soft = append(soft, fmt.Errorf("%s: %w: %w", what, ErrIncomplete, sf))
		}
	}
	return out, errors.Join(soft...)
}

// parseConntrack decodes one ctnetlink entry: the payload after the netlink
// header (struct nfgenmsg, then attributes whose values are big-endian).
// Both tuples must be present; everything else is optional.
func parseConntrack(b []byte) (Flow, error) {
	var f Flow
	if len(b) < nfgenmsgLen {
		return f, fmt.Errorf("length %d shorter than nfgenmsg (%d)", len(b), nfgenmsgLen)
	}
	if b[0] != unix.AF_INET && b[0] != unix.AF_INET6 {
		return f, fmt.Errorf("nfgenmsg family %d, want AF_INET or AF_INET6", b[0])
	}
	var (
		haveOrig, haveReply bool
		err                 error
	)
	it := attrIter{b: b[nfgenmsgLen:], base: nfgenmsgLen}
	for err == nil && it.next() {
		switch it.typ {
		case ctaTupleOrig:
			var proto uint8
			proto, err = parseTuple(it.nested(), &f.Orig, "CTA_TUPLE_ORIG")
			f.Proto, haveOrig = model.Proto(proto), true
		case ctaTupleReply:
			_, err = parseTuple(it.nested(), &f.Reply, "CTA_TUPLE_REPLY")
			haveReply = true
		case ctaStatus:
			f.Status, err = be32(&it, "CTA_STATUS")
		case ctaTimeout:
			f.Timeout, err = be32(&it, "CTA_TIMEOUT")
		case ctaMark:
			f.Mark, err = be32(&it, "CTA_MARK")
		case ctaID:
			f.ID, err = be32(&it, "CTA_ID")
		case ctaZone:
			var z []byte
			if z, err = fixed(&it, "CTA_ZONE", 2); err == nil {
				f.Zone = binary.BigEndian.Uint16(z)
			}
		case ctaProtoinfo:
			f.TCPState, err = parseProtoinfo(it.nested())
		case ctaCountersOrig:
			f.OrigPackets, f.OrigBytes, err = parseCounters(it.nested(), "CTA_COUNTERS_ORIG")
		case ctaCountersReply:
			f.ReplyPackets, f.ReplyBytes, err = parseCounters(it.nested(), "CTA_COUNTERS_REPLY")
		case ctaTimestamp:
			f.Start, f.Stop, err = parseTimestamp(it.nested())
		}
	}
	switch {
	case err != nil:
		return f, err
	case it.err != nil:
		return f, it.err
	case !haveOrig:
		return f, errors.New("no CTA_TUPLE_ORIG")
	case !haveReply:
		return f, errors.New("no CTA_TUPLE_REPLY")
	}
	return f, nil
}

// fixed returns the current attribute's value when it has exactly n bytes.
func fixed(it *attrIter, name string, n int) ([]byte, error) {
	if len(it.val) != n {
		return nil, fmt.Errorf("%s at offset %d: value of %d bytes, want %d", name, it.at, len(it.val), n)
	}
	return it.val, nil
}

func be32(it *attrIter, name string) (uint32, error) {
	v, err := fixed(it, name, 4)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(v), nil
}

func be64(it *attrIter, name string) (uint64, error) {
	v, err := fixed(it, name, 8)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(v), nil
}

// parseTuple decodes CTA_TUPLE_{ORIG,REPLY}: addresses (both required, one
// family) and, when present, protocol number and ports.
func parseTuple(it attrIter, t *Tuple, name string) (proto uint8, err error) {
	var (
		src, dst     netip.Addr
		sport, dport uint16
	)
	for err == nil && it.next() {
		switch it.typ {
		case ctaTupleIP:
			ip := it.nested()
			for err == nil && ip.next() {
				var v []byte
				switch ip.typ {
				case ctaIPv4Src, ctaIPv4Dst:
					if v, err = fixed(&ip, "CTA_IP_V4", 4); err == nil {
						a := netip.AddrFrom4([4]byte(v))
						if ip.typ == ctaIPv4Src {
							src = a
						} else {
							dst = a
						}
					}
				case ctaIPv6Src, ctaIPv6Dst:
					if v, err = fixed(&ip, "CTA_IP_V6", 16); err == nil {
						a := netip.AddrFrom16([16]byte(v))
						if ip.typ == ctaIPv6Src {
							src = a
						} else {
							dst = a
						}
					}
				}
			}
			err = cmpErr(err, ip.err)
		case ctaTupleProto:
			pr := it.nested()
			for err == nil && pr.next() {
				var v []byte
				switch pr.typ {
				case ctaProtoNum:
					if v, err = fixed(&pr, "CTA_PROTO_NUM", 1); err == nil {
						proto = v[0]
					}
				case ctaProtoSrcPort:
					if v, err = fixed(&pr, "CTA_PROTO_SRC_PORT", 2); err == nil {
						sport = binary.BigEndian.Uint16(v)
					}
				case ctaProtoDstPort:
					if v, err = fixed(&pr, "CTA_PROTO_DST_PORT", 2); err == nil {
						dport = binary.BigEndian.Uint16(v)
					}
				}
			}
			err = cmpErr(err, pr.err)
		}
	}
	switch {
	case err != nil || it.err != nil:
		// The parent is named here, not passed down, so that the happy
		// path builds no strings.
		return 0, fmt.Errorf("%s: %w", name, cmpErr(err, it.err))
	case !src.IsValid() || !dst.IsValid():
		return 0, fmt.Errorf("%s: source or destination address missing", name)
	case src.Is4() != dst.Is4():
		return 0, fmt.Errorf("%s: source %v and destination %v of different families", name, src, dst)
	}
	*t = Tuple{Src: netip.AddrPortFrom(src, sport), Dst: netip.AddrPortFrom(dst, dport)}
	return proto, nil
}

// cmpErr returns the first non-nil error.
func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// parseProtoinfo returns CTA_PROTOINFO_TCP_STATE; other protocols' info is
// skipped (0).
func parseProtoinfo(it attrIter) (state uint8, err error) {
	for err == nil && it.next() {
		if it.typ != ctaProtoinfoTCP {
			continue
		}
		tcp := it.nested()
		for err == nil && tcp.next() {
			if tcp.typ == ctaProtoinfoTCPState {
				var v []byte
				if v, err = fixed(&tcp, "CTA_PROTOINFO_TCP_STATE", 1); err == nil {
					state = v[0]
				}
			}
		}
		err = cmpErr(err, tcp.err)
	}
	return state, cmpErr(err, it.err)
}

// parseCounters decodes CTA_COUNTERS_{ORIG,REPLY}, 64-bit or old 32-bit.
func parseCounters(it attrIter, name string) (packets, bytes uint64, err error) {
	for err == nil && it.next() {
		var v uint32
		switch it.typ {
		case ctaCountersPackets:
			packets, err = be64(&it, "CTA_COUNTERS_PACKETS")
		case ctaCountersBytes:
			bytes, err = be64(&it, "CTA_COUNTERS_BYTES")
		case ctaCounters32Packets:
			v, err = be32(&it, "CTA_COUNTERS32_PACKETS")
			packets = uint64(v)
		case ctaCounters32Bytes:
			v, err = be32(&it, "CTA_COUNTERS32_BYTES")
			bytes = uint64(v)
		}
	}
	if err = cmpErr(err, it.err); err != nil {
		return 0, 0, fmt.Errorf("%s: %w", name, err)
	}
	return packets, bytes, nil
}

// parseTimestamp decodes CTA_TIMESTAMP: CLOCK_REALTIME nanoseconds.
func parseTimestamp(it attrIter) (start, stop time.Time, err error) {
	for err == nil && it.next() {
		var ns uint64
		switch it.typ {
		case ctaTimestampStart:
			if ns, err = be64(&it, "CTA_TIMESTAMP_START"); err == nil && ns != 0 {
				start = time.Unix(0, int64(ns))
			}
		case ctaTimestampStop:
			if ns, err = be64(&it, "CTA_TIMESTAMP_STOP"); err == nil && ns != 0 {
				stop = time.Unix(0, int64(ns))
			}
		}
	}
	return start, stop, cmpErr(err, it.err)
}

// timestampSysctl is read and written through /proc/sys, which shows the
// network namespace of the thread that opens it.
const timestampSysctl = "/proc/sys/net/netfilter/nf_conntrack_timestamp"

// EnableTimestamps sets net.netfilter.nf_conntrack_timestamp to 1 when it
// is 0 and reports whether it changed it. It acts on the calling thread's
// network namespace: call it inside InNetns for another one. Only entries
// created afterwards get a start time; existing connections stay of unknown
// age. Lacking privilege, or a kernel without conntrack, wraps ErrUnavailable.
func EnableTimestamps() (bool, error) {
	return enableSysctl(timestampSysctl)
}

// conntrackCountSysctl is the number of entries in the reading thread's
// network namespace.
const conntrackCountSysctl = "/proc/sys/net/netfilter/nf_conntrack_count"

// ConntrackEmpty reports whether the conntrack table of the calling
// thread's network namespace is known to hold no entry. A dump walks the
// whole host's hash table, every namespace's buckets, so skipping it when
// this namespace has nothing in it saves tens of milliseconds on a busy
// host. Unknown (conntrack not loaded, unreadable) is false.
func ConntrackEmpty() bool {
	b, err := os.ReadFile(conntrackCountSysctl)
	return err == nil && strings.TrimSpace(string(b)) == "0"
}

func enableSysctl(path string) (bool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return false, unavailable("conntrack timestamps", err, "needs root")
	}
	switch v := strings.TrimSpace(string(b)); v {
	case "1":
		return false, nil
	case "0":
	default:
		return false, fmt.Errorf("conntrack timestamps: %s holds %q, want 0 or 1", path, v)
	}
	if err := os.WriteFile(path, []byte("1\n"), 0); err != nil {
		return false, unavailable("conntrack timestamps", err, "needs root")
	}
	return true, nil
}

// ageKey is one direction of a flow. Addresses are in 16-byte form, so an
// IPv4 address and its v4-mapped IPv6 form (a dual-stack socket's view of
// an IPv4 peer) are the same key; zones are dropped, as conntrack has none.
// No pointers, so a large index costs the garbage collector nothing.
type ageKey struct {
	src, dst     [16]byte
	sport, dport uint16
	proto        model.Proto
}

func keyOf(p model.Proto, src, dst netip.AddrPort) ageKey {
	return ageKey{src: src.Addr().As16(), dst: dst.Addr().As16(), sport: src.Port(), dport: dst.Port(), proto: p}
}

// AgeIndex finds the conntrack start time of a socket's connection, in
// whichever direction conntrack saw it. Build it with NewAgeIndex.
type AgeIndex struct {
	start map[ageKey]int64 // Unix ns; 0 when two entries disagree
}

// NewAgeIndex indexes the flows that have a start time under both
// directional keys, original (src→dst) and reply (src→dst), so that a
// socket matches whether it opened the connection or accepted it, and
// through NAT on either side.
func NewAgeIndex(flows []Flow) *AgeIndex {
	n := 0
	for i := range flows {
		if !flows[i].Start.IsZero() {
			n++
		}
	}
	ix := &AgeIndex{start: make(map[ageKey]int64, 2*n)}
	for i := range flows {
		f := &flows[i]
		if f.Start.IsZero() {
			continue
		}
		ns := f.Start.UnixNano()
		ix.add(keyOf(f.Proto, f.Orig.Src, f.Orig.Dst), ns)
		ix.add(keyOf(f.Proto, f.Reply.Src, f.Reply.Dst), ns)
	}
	return ix
}

func (ix *AgeIndex) add(k ageKey, ns int64) {
	if old, ok := ix.start[k]; ok && old != ns {
		// Two entries (different zones) claim the tuple: the age is
		// unknown rather than guessed.
		ns = 0
	}
	ix.start[k] = ns
}

// Len is the number of directional keys indexed.
func (ix *AgeIndex) Len() int { return len(ix.start) }

// Start returns when conntrack first saw the connection of a socket with
// these endpoints, looking up local→remote then remote→local. IPv4-mapped
// IPv6 endpoints match IPv4 entries. ok is false when no entry with a start
// time matches, or when the match is ambiguous: the age is then unknown.
func (ix *AgeIndex) Start(proto model.Proto, local, remote netip.AddrPort) (start time.Time, ok bool) {
	if ix == nil {
		return time.Time{}, false
	}
	ns, found := ix.start[keyOf(proto, local, remote)]
	if !found {
		ns, found = ix.start[keyOf(proto, remote, local)]
	}
	if !found || ns == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}
