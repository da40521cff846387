package netlink

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// EventType is what happened to a conntrack entry.
type EventType uint8

// Conntrack event types.
const (
	EventNew     EventType = 1 // the entry was created (a connection's first packet)
	EventUpdate  EventType = 2 // its state changed (only with EventOptions.Updates)
	EventDestroy EventType = 3 // it ended: closed and timed out, or expired idle
)

func (t EventType) String() string {
	switch t {
	case EventNew:
		return "new"
	case EventUpdate:
		return "update"
	case EventDestroy:
		return "destroy"
	}
	return fmt.Sprintf("event-%d", uint8(t))
}

// Event is one conntrack event: the entry as the kernel sent it. A
// destroy event carries the counters (with nf_conntrack_acct=1) and the
// start and stop times (with nf_conntrack_timestamp=1).
type Event struct {
	Type EventType
	Flow Flow
}

// TCPEnded reports whether the event's entry is a TCP connection both
// ends have closed or one has reset (TIME_WAIT or CLOSE).
func (ev Event) TCPEnded() bool {
	return ev.Flow.Proto == model.ProtoTCP && (ev.Flow.TCPState == ctTCPTimeWait || ev.Flow.TCPState == ctTCPClose)
}

// EventOptions configure ListenConntrack.
type EventOptions struct {
	// Netns is the network namespace to follow (a name under /run/netns or
	// a path); "" is the caller's.
	Netns string
	// Updates subscribes to state changes too (NFNLGRP_CONNTRACK_UPDATE);
	// by default only new and destroy events come.
	Updates bool
	// RcvBuf is the socket receive buffer; default 8 MiB. Events that do
	// not fit are lost (the kernel says ENOBUFS) and counted in Overruns.
	RcvBuf int
	// Warn receives what did not stop the listener: a sysctl that could not
	// be enabled, malformed events (the first few).
	Warn func(error)
}

// EventStats count what a listener saw.
type EventStats struct {
	Events    uint64 // events delivered
	Overruns  uint64 // receive buffer overruns (ENOBUFS): one or more events lost each
	Malformed uint64 // messages that did not parse, skipped
}

// EventListener follows the conntrack events of one network namespace.
// Run must not be called concurrently with itself or Close; Stats may be
// called from any goroutine.
type EventListener struct {
	fd   int
	wake int
	warn func(error)
	buf  []byte

	events, overruns, malformed atomic.Uint64
}

// acctSysctl turns on per-connection packet and byte counters.
const acctSysctl = "/proc/sys/net/netfilter/nf_conntrack_acct"

// ListenConntrack opens a netlink socket in the namespace and joins the
// conntrack new and destroy groups (and update, if asked). As root it first
// enables net.netfilter.nf_conntrack_acct and nf_conntrack_timestamp there,
// so that destroy events carry counters and times; connections created
// before that have neither. Lacking CAP_NET_ADMIN, the error wraps
// ErrUnavailable. Events come only for what conntrack tracks: in a
// namespace where no rule uses conntrack (no ct match, no NAT), none.
func ListenConntrack(opts EventOptions) (*EventListener, error) {
	warn := opts.Warn
	if warn == nil {
		warn = func(error) {}
	}
	rcv := opts.RcvBuf
	if rcv <= 0 {
		rcv = 8 << 20
	}
	l := &EventListener{fd: -1, wake: -1, warn: warn, buf: make([]byte, 1<<16)}
	open := func() error {
		for _, p := range []string{acctSysctl, timestampSysctl} {
			if _, err := enableSysctl(p); err != nil {
				warn(fmt.Errorf("conntrack events: enabling %s: %w", p, err))
			}
		}
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		if err != nil {
			return unavailable("conntrack events", os.NewSyscallError("socket", err), "needs CAP_NET_ADMIN")
		}
		l.fd = fd
		// SO_RCVBUFFORCE passes rmem_max as root; SO_RCVBUF is capped by it.
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcv) != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcv)
		}
		if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return os.NewSyscallError("bind", err)
		}
		groups := []int{unix.NFNLGRP_CONNTRACK_NEW, unix.NFNLGRP_CONNTRACK_DESTROY}
		if opts.Updates {
			groups = append(groups, unix.NFNLGRP_CONNTRACK_UPDATE)
		}
		for _, g := range groups {
			if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, g); err != nil {
				return unavailable("conntrack events", os.NewSyscallError("setsockopt NETLINK_ADD_MEMBERSHIP", err), "needs CAP_NET_ADMIN")
			}
		}
		return nil
	}
	var err error
	if opts.Netns != "" {
		err = InNetns(opts.Netns, open)
	} else {
		err = open()
	}
	if err == nil {
		if l.wake, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
			err = os.NewSyscallError("eventfd", err)
		}
	}
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("conntrack events: %w", err)
	}
	return l, nil
}

// Stats returns the counters so far.
func (l *EventListener) Stats() EventStats {
	return EventStats{Events: l.events.Load(), Overruns: l.overruns.Load(), Malformed: l.malformed.Load()}
}

// Run calls fn with each event until ctx ends (then it returns nil) or the
// socket fails. A receive buffer overrun is counted (Stats.Overruns),
// reported through Warn, and reading goes on: the events lost are gone,
// the ones after are good. fn runs on Run's goroutine; Event values are
// fn's to keep.
func (l *EventListener) Run(ctx context.Context, fn func(Event)) error {
	// Wake the poll when ctx ends; on return, wait for a wake-up already
	// under way, so that Close never closes the eventfd under it.
	wake := l.wake
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(done)
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		_, _ = unix.Write(wake, one[:])
	})
	defer func() {
		if !stop() {
			<-done
		}
	}()
	fds := []unix.PollFd{{Fd: int32(l.fd), Events: unix.POLLIN}, {Fd: int32(l.wake), Events: unix.POLLIN}}
	for {
		if ctx.Err() != nil {
			return nil
		}
		if _, err := unix.Poll(fds, -1); err != nil && err != unix.EINTR {
			return fmt.Errorf("conntrack events: %w", os.NewSyscallError("poll", err))
		}
		if fds[1].Revents != 0 {
			return nil
		}
		// Read what is queued without waiting again.
		for range 1024 {
			n, _, _, from, err := unix.Recvmsg(l.fd, l.buf, nil, unix.MSG_DONTWAIT)
			if err == unix.EAGAIN || err == unix.EINTR {
				break
			}
			if err == unix.ENOBUFS {
				if l.overruns.Add(1) <= 3 {
					l.warn(errors.New("conntrack events: receive buffer overrun (ENOBUFS): events were lost; counted in overruns"))
				}
				continue
			}
			if err != nil {
				return fmt.Errorf("conntrack events: %w", os.NewSyscallError("recvmsg", err))
			}
			if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
				continue // not from the kernel
			}
			l.datagram(l.buf[:n], fn)
		}
	}
}

// datagram hands the events of one datagram to fn.
func (l *EventListener) datagram(b []byte, fn func(Event)) {
	err := parseEvents(b, func(ev Event) {
		l.events.Add(1)
		fn(ev)
	}, func(err error) {
		if l.malformed.Add(1) <= 5 {
			l.warn(fmt.Errorf("conntrack events: %w", err))
		}
	})
	if err != nil {
		if l.malformed.Add(1) <= 5 {
			l.warn(fmt.Errorf("conntrack events: %w", err))
		}
	}
}

// parseEvents walks a datagram of ctnetlink event messages, calling ok
// with each event and bad with each message that did not parse. The error
// is a framing error that hides the rest of the datagram.
func parseEvents(b []byte, ok func(Event), bad func(error)) error {
	it := msgIter{b: b}
	for it.next() {
		h := it.hdr
		if h.Type>>8 != unix.NFNL_SUBSYS_CTNETLINK {
			continue
		}
		var typ EventType
		switch h.Type & 0xff {
		case 0: // IPCTNL_MSG_CT_NEW: creation when flagged so, else an update
			typ = EventUpdate
			if h.Flags&(unix.NLM_F_CREATE|unix.NLM_F_EXCL) != 0 {
				typ = EventNew
			}
		case 2: // IPCTNL_MSG_CT_DELETE
			typ = EventDestroy
		default:
			continue
		}
		f, err := parseConntrack(it.payload)
		if err != nil {
			bad(fmt.Errorf("%s event at offset %d: %w", typ, it.at, err))
			continue
		}
		ok(Event{Type: typ, Flow: f})
	}
	return it.err
}

// Close closes the socket.
func (l *EventListener) Close() error {
	var errs []error
	if l.fd >= 0 {
		errs = append(errs, unix.Close(l.fd))
		l.fd = -1
	}
	if l.wake >= 0 {
		errs = append(errs, unix.Close(l.wake))
		l.wake = -1
	}
	return errors.Join(errs...)
}

// Conntrack TCP states (enum tcp_conntrack) and status bits (IPS_*) that
// EventConn reads.
const (
	ctTCPSynSent     = 1
	ctTCPEstablished = 3
	ctTCPTimeWait    = 7
	ctTCPClose       = 8
	ipsSeenReply     = 1 << 1
	ipsAssured       = 1 << 2
)

// EventConn turns a conntrack event into a connection record: a destroy
// event into a finished one (End "closed" for TCP that closed or reset,
// "timeout" otherwise), a new or update event into an in-progress one
// (End "open").
//
// The record is what conntrack can vouch for, no more: the originator and
// responder are the original tuple (before NAT); ts is the entry's start
// and duration its stop minus start (unset without timestamps) — the
// entry's life, which runs past the last packet by the close timeout (for
// TCP, TIME_WAIT's: 120 s by default), so it is longer than Zeek's; packet
// counts and orig_ip_bytes/resp_ip_bytes are conntrack's counters, which
// count whole IP packets (unset without nf_conntrack_acct), while payload
// bytes (orig_bytes, resp_bytes), history, missed bytes and the first
// packet's flags stay unset. conn_state is derived only where conntrack's
// state and status say it without guessing a direction:
//
//	TCP  no reply seen: S0 (SYN_SENT), RSTOS0 (closed: only the originator could have reset it)
//	     reply seen, handshake not completed (not ASSURED), closed: REJ
//	     ESTABLISHED: S1; TIME_WAIT (both sides sent FIN): SF
//	     otherwise (a reset after the handshake, a half close): unset, since
//	     conntrack does not record which side sent it
//	UDP  SF when a reply was seen, else S0
//	other  OTH
func EventConn(ev Event) *model.Conn {
	f := &ev.Flow
	c := &model.Conn{
		TS:    f.Start.UTC(),
		UID:   ctUID(f),
		Orig:  f.Orig.Src,
		Resp:  f.Orig.Dst,
		Proto: f.Proto,
		Unset: model.FieldOrigBytes | model.FieldRespBytes | model.FieldLocalOrig | model.FieldLocalResp |
			model.FieldMissedBytes | model.FieldHistory | model.FieldFirstFlags,
		End: model.EndOpen,
	}
	if f.Start.IsZero() {
		// No timestamp: when the event came is the best bound there is.
		c.TS = time.Now().UTC()
		c.Unset |= model.FieldDuration
	}
	if ev.Type == EventDestroy {
		// Closed when TCP saw its end (FINs or a reset); anything else
		// (UDP, an idle TCP connection) ended by conntrack's timeout.
		c.End = model.EndTimeout
		if ev.TCPEnded() {
			c.End = model.EndClosed
		}
		if !f.Start.IsZero() && !f.Stop.IsZero() && f.Stop.After(f.Start) {
			c.Duration = f.Stop.Sub(f.Start)
		} else {
			c.Unset |= model.FieldDuration
		}
	} else if ev.Type == EventUpdate && ev.TCPEnded() {
		// The endpoints are done (conntrack keeps the entry through
		// TIME_WAIT, two minutes by default): the connection ended now.
		c.End = model.EndClosed
		if !f.Start.IsZero() {
			c.Duration = max(time.Since(f.Start), 0)
		}
	} else if !f.Start.IsZero() {
		c.Duration = max(time.Since(f.Start), 0)
	}
	if f.OrigPackets == 0 && f.ReplyPackets == 0 {
		// Accounting was off when the entry was made (a live entry has
		// at least its first packet counted).
		c.Unset |= model.FieldOrigPkts | model.FieldRespPkts | model.FieldOrigIPBytes | model.FieldRespIPBytes
	} else {
		c.OrigPkts, c.OrigIPBytes, c.RespPkts, c.RespIPBytes = f.OrigPackets, f.OrigBytes, f.ReplyPackets, f.ReplyBytes
	}
	reply, assured := f.Status&ipsSeenReply != 0, f.Status&ipsAssured != 0
	switch f.Proto {
	case model.ProtoTCP:
		switch {
		case !reply && f.TCPState == ctTCPSynSent:
			c.ConnState = model.ConnS0
		case !reply && f.TCPState == ctTCPClose:
			c.ConnState = model.ConnRSTOS0
		case reply && !assured && f.TCPState == ctTCPClose:
			c.ConnState = model.ConnREJ
		case f.TCPState == ctTCPEstablished:
			c.ConnState = model.ConnS1
		case f.TCPState == ctTCPTimeWait:
			c.ConnState = model.ConnSF
		default:
			c.Unset |= model.FieldConnState
		}
	case model.ProtoUDP:
		c.ConnState = model.ConnS0
		if reply {
			c.ConnState = model.ConnSF
		}
	default:
		c.ConnState = model.ConnOTH
	}
	return c
}

// ctUID makes a Zeek-style uid from the entry's identity (kernel id,
// start time, original tuple), so that a connection's in-progress and
// final records share it.
func ctUID(f *Flow) string {
	h := fnv.New64a()
	var b [8]byte
	binary.BigEndian.PutUint32(b[:4], f.ID)
	binary.BigEndian.PutUint32(b[4:], uint32(f.Zone))
	h.Write(b[:])
	binary.BigEndian.PutUint64(b[:], uint64(f.Start.UnixNano()))
	h.Write(b[:])
	for _, ap := range []netip.AddrPort{f.Orig.Src, f.Orig.Dst} {
		a := ap.Addr().As16()
		h.Write(a[:])
		binary.BigEndian.PutUint16(b[:2], ap.Port())
		h.Write(b[:2])
	}
	h.Write([]byte{byte(f.Proto)})
	x := h.Sum64()
	return model.FormatUID(x, x*0x9e3779b97f4a7c15^x>>29)
}
