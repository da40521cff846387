package netlink

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// Family is an address family that sockets are enumerated for.
type Family uint8

// The address families a dump covers.
const (
	IPv4 Family = unix.AF_INET
	IPv6 Family = unix.AF_INET6
)

// String returns "ipv4" or "ipv6", as error messages name a dump.
func (f Family) String() string {
	switch f {
	case IPv4:
		return "ipv4"
	case IPv6:
		return "ipv6"
	}
	return fmt.Sprintf("family-%d", uint8(f))
}

// DumpOptions restricts a socket dump. The zero value dumps everything:
// TCP and UDP, IPv4 and IPv6, every state, with TCP info.
type DumpOptions struct {
	Protos    []model.Proto    // model.ProtoTCP, model.ProtoUDP; empty means both
	Families  []Family         // empty means both
	States    []model.TCPState // empty means every state, BOUND_INACTIVE included (it costs the kernel a walk of all bound sockets per dump, ~15%)
	NoTCPInfo bool             // leave Socket.TCP nil: smaller replies, when only endpoints matter
}

// Dumper holds open netlink sockets for repeated dumps and the one receive
// buffer they share. Its sockets belong to the network namespace of the
// thread that called NewDumper, whichever thread dumps later: open it inside
// InNetns and the dumps may run anywhere. Not safe for concurrent use.
type Dumper struct {
	diag, nf       *conn
	diagErr, nfErr error // why a socket could not be opened
	buf            []byte
	lastCount      int // sockets in the last dump, to size the next result
}

// NewDumper opens a sock_diag and a netfilter netlink socket in the calling
// thread's network namespace. It fails only when neither opens; a refused
// one is reported by Sockets or Conntrack, wrapping ErrUnavailable.
func NewDumper() (*Dumper, error) {
	d := &Dumper{}
	var err error
	if d.diag, err = dial(unix.NETLINK_SOCK_DIAG); err != nil {
		d.diagErr = unavailable("sock_diag: opening netlink socket", err, "")
	}
	if d.nf, err = dial(unix.NETLINK_NETFILTER); err != nil {
		d.nfErr = unavailable("conntrack: opening netlink socket", err, "")
	}
	if d.diag == nil && d.nf == nil {
		return nil, errors.Join(d.diagErr, d.nfErr)
	}
	return d, nil
}

// Close closes the netlink sockets.
func (d *Dumper) Close() error {
	var errs []error
	for _, c := range [...]*conn{d.diag, d.nf} {
		if c != nil {
			errs = append(errs, c.close())
		}
	}
	d.diag, d.nf = nil, nil
	return errors.Join(errs...)
}

func (d *Dumper) buffer() []byte {
	if d.buf == nil {
		d.buf = make([]byte, recvBufSize)
	}
	return d.buf
}

// Sockets enumerates sockets with a Dumper used once, in the calling
// thread's network namespace; see Dumper.Sockets.
func Sockets(ctx context.Context, opts DumpOptions) ([]model.Socket, error) {
	d, err := NewDumper()
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Sockets(ctx, opts)
}

// tcpInfoSlab is how many TCPInfo values are allocated at once, so that a
// dump allocates per slab rather than per socket.
const tcpInfoSlab = 512

// Sockets enumerates TCP and UDP sockets with SOCK_DIAG_BY_FAMILY, one dump
// per protocol and family in the order TCP, UDP × IPv4, IPv6, each in the
// kernel's order. Socket.Netns and Owners are left for the caller.
//
// A refused request (no sock_diag, no inet_diag for a protocol, EPERM)
// returns an error wrapping ErrUnavailable and no sockets: the caller
// should read /proc/net instead. Malformed messages, or a dump the kernel
// flagged interrupted twice, return the sockets that were read together
// with an error wrapping ErrIncomplete that says what may be missing.
func (d *Dumper) Sockets(ctx context.Context, opts DumpOptions) ([]model.Socket, error) {
	if d.diag == nil {
		return nil, d.diagErr
	}
	protos := opts.Protos
	if len(protos) == 0 {
		protos = []model.Proto{model.ProtoTCP, model.ProtoUDP}
	}
	fams := opts.Families
	if len(fams) == 0 {
		fams = []Family{IPv4, IPv6}
	}
	states := ^uint32(0)
	if len(opts.States) > 0 {
		states = 0
		for _, s := range opts.States {
			states |= 1 << (s & 31)
		}
	}

	var (
		// Sized from the last dump: append's growth for large slices
		// (1.25x) would allocate and copy the result about five times over.
		out   = make([]model.Socket, 0, d.lastCount+d.lastCount/8+64)
		slab  []model.TCPInfo
		start int
		soft  []error
	)
	for _, p := range protos {
		if p != model.ProtoTCP && p != model.ProtoUDP {
			return nil, fmt.Errorf("sock_diag: protocol %v not supported, only tcp and udp", p)
		}
		for _, f := range fams {
			what := "sock_diag " + p.String() + "/" + f.String()
			if f != IPv4 && f != IPv6 {
				return nil, fmt.Errorf("%s: unknown family", what)
			}
			var req [inetDiagReqLen]byte
			req[0] = byte(f)
			req[1] = byte(p)
			if p == model.ProtoTCP && !opts.NoTCPInfo {
				req[2] = 1 << (inetDiagInfo - 1)
			}
			ne.PutUint32(req[4:], states)
			start = len(out)
			parse := func(off int, b []byte) error {
				if len(slab) == cap(slab) {
					slab = make([]model.TCPInfo, 0, tcpInfoSlab)
				}
				if len(out) == cap(out) {
					out = slices.Grow(out, len(out)) // double, for the same reason
				}
				out = append(out, model.Socket{})
				s := &out[len(out)-1]
				ti := &slab[:cap(slab)][len(slab)] // taken only if the reply has tcp_info
				hasInfo, err := parseInetDiagInto(b, p, s, ti)
				if err != nil {
					out = out[:len(out)-1]
					return fmt.Errorf("message at offset %d: %w", off, err)
				}
				if hasInfo {
					slab = slab[:len(slab)+1]
					s.TCP = ti
				}
				return nil
			}
			reset := func() { out = out[:start] }
			sf, err := d.diag.dumpConsistent(ctx, d.buffer(), unix.SOCK_DIAG_BY_FAMILY, req[:], parse, reset)
			if f == IPv6 && errors.Is(err, unix.ENOENT) {
				continue // a kernel built without IPv6 has no IPv6 sockets to miss
			}
			if err != nil {
				return nil, unavailable(what, err, "")
			}
			if sf != nil {
				soft = append(soft, fmt.Errorf("%s: %w: %w", what, ErrIncomplete, sf))
			}
		}
	}
	d.lastCount = len(out)
	return out, errors.Join(soft...)
}

// Sizes and offsets from linux/inet_diag.h.
const (
	inetDiagReqLen = 56 // struct inet_diag_req_v2
	inetDiagInfo   = 2  // INET_DIAG_INFO: the attribute, and bit 1 of idiag_ext, for struct tcp_info
	inetDiagMsgLen = 72 // struct inet_diag_msg

	// struct inet_diag_msg: family, state, timer, retrans, then the
	// inet_diag_sockid (ports and addresses big-endian, the rest host order).
	idiagSport  = 4
	idiagDport  = 6
	idiagSrc    = 8
	idiagDst    = 24
	idiagIf     = 40
	idiagRqueue = 56
	idiagWqueue = 60
	idiagUID    = 64
	idiagInode  = 68
)

// parseInetDiag decodes one SOCK_DIAG_BY_FAMILY reply (the payload after
// the netlink header: struct inet_diag_msg and its attributes). proto is
// the protocol the dump asked for, since the message does not carry it.
//
// For AF_INET6 the 16 address bytes become an IPv6 netip.Addr as they are:
// a dual-stack socket talking IPv4 has a v4-mapped address (::ffff:a.b.c.d),
// kept so, since the socket is an IPv6 one; callers that compare with IPv4
// addresses call Unmap. Link-local addresses get no zone: Socket.Iface has
// the interface index.
func parseInetDiag(b []byte, proto model.Proto) (model.Socket, error) {
	var (
		s  model.Socket
		ti model.TCPInfo
	)
	hasInfo, err := parseInetDiagInto(b, proto, &s, &ti)
	if hasInfo {
		s.TCP = &ti
	}
	return s, err
}

// parseInetDiagInto is parseInetDiag writing into storage the caller
// provides, so that a dump does not allocate per socket. It reports whether
// ti was filled (a TCP socket whose reply had INET_DIAG_INFO).
func parseInetDiagInto(b []byte, proto model.Proto, s *model.Socket, ti *model.TCPInfo) (bool, error) {
	if len(b) < inetDiagMsgLen {
		return false, fmt.Errorf("length %d shorter than inet_diag_msg (%d)", len(b), inetDiagMsgLen)
	}
	var src, dst netip.Addr
	switch b[0] {
	case unix.AF_INET:
		src = netip.AddrFrom4([4]byte(b[idiagSrc:]))
		dst = netip.AddrFrom4([4]byte(b[idiagDst:]))
	case unix.AF_INET6:
		src = netip.AddrFrom16([16]byte(b[idiagSrc:]))
		dst = netip.AddrFrom16([16]byte(b[idiagDst:]))
	default:
		return false, fmt.Errorf("inet_diag_msg family %d, want AF_INET or AF_INET6", b[0])
	}
	be := binary.BigEndian
	*s = model.Socket{
		Proto:  proto,
		State:  model.TCPState(b[1]),
		Local:  netip.AddrPortFrom(src, be.Uint16(b[idiagSport:])),
		Remote: netip.AddrPortFrom(dst, be.Uint16(b[idiagDport:])),
		RecvQ:  ne.Uint32(b[idiagRqueue:]),
		SendQ:  ne.Uint32(b[idiagWqueue:]),
		UID:    ne.Uint32(b[idiagUID:]),
		Inode:  uint64(ne.Uint32(b[idiagInode:])),
		Iface:  ne.Uint32(b[idiagIf:]),
	}
	hasInfo := false
	it := attrIter{b: b[inetDiagMsgLen:], base: inetDiagMsgLen}
	for it.next() {
		if it.typ == inetDiagInfo && proto == model.ProtoTCP {
			parseTCPInfo(it.val, ti)
			hasInfo = true
		}
	}
	if it.err != nil {
		return false, it.err
	}
	return hasInfo, nil
}

// Offsets in struct tcp_info (linux/tcp.h), checked against unix.TCPInfo
// in the tests.
const (
	tcpiRetransmits   = 2   // u8
	tcpiLastDataSent  = 44  // u32, ms
	tcpiLastDataRecv  = 52  // u32, ms
	tcpiRTT           = 68  // u32, µs
	tcpiRTTVar        = 72  // u32, µs
	tcpiTotalRetrans  = 100 // u32
	tcpiBytesAcked    = 120 // u64, kernel >= 4.1
	tcpiBytesReceived = 128 // u64, kernel >= 4.1
	tcpiSegsOut       = 136 // u32, kernel >= 4.2
	tcpiSegsIn        = 140 // u32, kernel >= 4.2
	tcpiBytesSent     = 200 // u64, kernel >= 4.19
)

// parseTCPInfo decodes struct tcp_info, which the kernel sends truncated to
// its own size: fields beyond the end of b (an older kernel) are zero.
// Every field of ti is written, so ti may be reused.
func parseTCPInfo(b []byte, ti *model.TCPInfo) {
	var retransmits uint8
	if len(b) > tcpiRetransmits {
		retransmits = b[tcpiRetransmits]
	}
	*ti = model.TCPInfo{
		RTT:           time.Duration(u32(b, tcpiRTT)) * time.Microsecond,
		RTTVar:        time.Duration(u32(b, tcpiRTTVar)) * time.Microsecond,
		Retransmits:   retransmits,
		TotalRetrans:  u32(b, tcpiTotalRetrans),
		BytesAcked:    u64(b, tcpiBytesAcked),
		BytesReceived: u64(b, tcpiBytesReceived),
		BytesSent:     u64(b, tcpiBytesSent),
		SegsOut:       u32(b, tcpiSegsOut),
		SegsIn:        u32(b, tcpiSegsIn),
		LastSend:      time.Duration(u32(b, tcpiLastDataSent)) * time.Millisecond,
		LastRecv:      time.Duration(u32(b, tcpiLastDataRecv)) * time.Millisecond,
	}
}

// u32 and u64 read a host-order field, or 0 when b ends before it.
func u32(b []byte, off int) uint32 {
	if off+4 > len(b) {
		return 0
	}
	return ne.Uint32(b[off:])
}

func u64(b []byte, off int) uint64 {
	if off+8 > len(b) {
		return 0
	}
	return ne.Uint64(b[off:])
}
