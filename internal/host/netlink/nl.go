package netlink

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

const (
	nlHdrLen   = unix.SizeofNlMsghdr // struct nlmsghdr
	attrHdrLen = 4                   // struct nlattr / struct rtattr

	// recvBufSize is the one receive buffer a dump reuses, and the socket
	// queue we ask for. The kernel fills at most ~32 KiB per dump datagram
	// today; the margin means a future kernel's larger datagrams are still
	// read whole (a truncated one would be an error, not silent loss).
	recvBufSize = 1 << 20

	// recvTimeout bounds a wait for the kernel's next datagram when the
	// context has no earlier deadline: a dump never pauses that long.
	recvTimeout = 10 * time.Second

	// maxForeign bounds datagrams from senders other than the kernel that
	// one dump skips, so another process cannot keep it spinning.
	maxForeign = 1024

	// nlaTypeMask strips NLA_F_NESTED and NLA_F_NET_BYTEORDER from a type.
	nlaTypeMask = 0x3fff
)

// ne is the byte order of netlink headers, sock_diag fields not marked
// __be, and struct tcp_info: the host's.
var ne = binary.NativeEndian

func align4(n int) int { return (n + 3) &^ 3 }

// nlHeader is struct nlmsghdr.
type nlHeader struct {
	Len   uint32
	Type  uint16
	Flags uint16
	Seq   uint32
	Pid   uint32
}

// msgIter walks the netlink messages of one datagram. It stops at the first
// framing error (length shorter than a header or beyond the datagram),
// since the messages after it cannot be located.
type msgIter struct {
	b       []byte
	off     int
	at      int // offset of the current message in b
	hdr     nlHeader
	payload []byte // the current message after its header
	err     error
}

func (it *msgIter) next() bool {
	if it.err != nil || it.off >= len(it.b) {
		return false
	}
	rest := len(it.b) - it.off
	if rest < nlHdrLen {
		it.err = fmt.Errorf("message at offset %d: %d trailing bytes, shorter than a netlink header", it.off, rest)
		return false
	}
	m := it.b[it.off:]
	it.hdr = nlHeader{
		Len:   ne.Uint32(m[0:]),
		Type:  ne.Uint16(m[4:]),
		Flags: ne.Uint16(m[6:]),
		Seq:   ne.Uint32(m[8:]),
		Pid:   ne.Uint32(m[12:]),
	}
	l := int(it.hdr.Len)
	switch {
	case l < nlHdrLen:
		it.err = fmt.Errorf("message at offset %d: length %d shorter than a netlink header", it.off, l)
		return false
	case l > rest:
		it.err = fmt.Errorf("message at offset %d: length %d beyond the %d bytes left", it.off, l, rest)
		return false
	}
	it.at = it.off
	it.payload = m[nlHdrLen:l]
	it.off += align4(l) // past the end ends the walk
	return true
}

// attrIter walks a run of netlink attributes. base is the offset of b in
// the message, so errors and at name positions a reader can find.
type attrIter struct {
	b    []byte
	base int
	off  int
	at   int    // offset of the current attribute in the message
	typ  uint16 // current type, flags masked
	val  []byte
	err  error
}

func (it *attrIter) next() bool {
	if it.err != nil || it.off >= len(it.b) {
		return false
	}
	rest := len(it.b) - it.off
	if rest < attrHdrLen {
		it.err = fmt.Errorf("attribute at offset %d: %d trailing bytes, shorter than an attribute header", it.base+it.off, rest)
		return false
	}
	l := int(ne.Uint16(it.b[it.off:]))
	if l < attrHdrLen || l > rest {
		it.err = fmt.Errorf("attribute at offset %d: length %d outside [%d, %d]", it.base+it.off, l, attrHdrLen, rest)
		return false
	}
	it.at = it.base + it.off
	it.typ = ne.Uint16(it.b[it.off+2:]) & nlaTypeMask
	it.val = it.b[it.off+attrHdrLen : it.off+l]
	it.off += align4(l)
	return true
}

// nested returns an iterator over the current attribute's value.
func (it *attrIter) nested() attrIter {
	return attrIter{b: it.val, base: it.at + attrHdrLen}
}

// kernelError is an error the kernel answered a request with, with the
// extended-ack message when the kernel gave one.
type kernelError struct {
	Errno unix.Errno
	Msg   string
}

func (e *kernelError) Error() string {
	if e.Msg != "" {
		return e.Errno.Error() + ": " + e.Msg
	}
	return e.Errno.Error()
}

func (e *kernelError) Unwrap() error { return e.Errno }

// parseErrorMsg decodes an NLMSG_ERROR payload: a negative errno (0 is an
// acknowledgement), the request's header (capped) or whole request, then
// extended-ack attributes when flags has NLM_F_ACK_TLVS.
func parseErrorMsg(flags uint16, p []byte) error {
	if len(p) < 4 {
		return fmt.Errorf("NLMSG_ERROR: payload of %d bytes, shorter than an errno", len(p))
	}
	code := int32(ne.Uint32(p))
	if code == 0 {
		return nil
	}
	e := &kernelError{Errno: unix.Errno(-code)}
	if flags&unix.NLM_F_ACK_TLVS == 0 || len(p) < 4+nlHdrLen {
		return e
	}
	skip := 4 + nlHdrLen
	if flags&unix.NLM_F_CAPPED == 0 {
		skip = 4 + int(ne.Uint32(p[4:])) // the whole request was echoed
	}
	if skip > len(p) {
		return e
	}
	it := attrIter{b: p[skip:], base: skip}
	for it.next() {
		if it.typ == unix.NLMSGERR_ATTR_MSG {
			e.Msg = string(trimNUL(it.val))
		}
	}
	return e
}

func trimNUL(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return b
}

// conn is one netlink socket. It is bound to the network namespace of the
// thread that opened it, for its whole life.
type conn struct {
	fd     int
	portid uint32 // ours, assigned by the kernel at bind
	seq    uint32
	peer   uint32 // who answers: 0, the kernel (tests put a scripted socket here)
	// pending is the sequence number of a dump abandoned midway, 0 if none:
	// the kernel refuses a new dump on the socket (EBUSY) until the old one
	// has been read to its end.
	pending uint32
}

// dial opens and binds a netlink socket of the given protocol
// (unix.NETLINK_SOCK_DIAG, unix.NETLINK_NETFILTER).
func dial(proto int) (*conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	// Failing options cost speed or detail, never correctness: ignore them.
	// A large queue lets the kernel run ahead of us within a dump.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, recvBufSize)
	// Strict checking (off by default) would have the kernel reject dump
	// requests whose reserved fields or attributes it does not expect;
	// say so explicitly so an inherited default cannot change that.
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK, 0)
	// Errors carry a text reason (extended ack) and not our whole request.
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1)
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("bind", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("getsockname", err)
	}
	nsa, ok := sa.(*unix.SockaddrNetlink)
	if !ok {
		unix.Close(fd)
		return nil, fmt.Errorf("getsockname: %T, not a netlink address", sa)
	}
	return &conn{fd: fd, portid: nsa.Pid}, nil
}

func (c *conn) close() error { return unix.Close(c.fd) }

// dumpResult is what a dump that reached NLMSG_DONE has to report besides
// its messages: neither stops the dump, both make its result incomplete.
type dumpResult struct {
	interrupted bool  // NLM_F_DUMP_INTR: the table changed during the dump
	malformed   error // the first few messages fn rejected, and how many more
}

// dump sends a dump request (typ, NLM_F_REQUEST|NLM_F_DUMP, body after the
// header) and calls fn with each reply message's payload and its offset in
// its datagram, until NLMSG_DONE. fn's errors do not stop the dump: one bad
// message costs one record, and they come back in dumpResult. A framing
// error, a kernel error or the context stop it and are returned as err.
func (c *conn) dump(ctx context.Context, buf []byte, typ uint16, body []byte, fn func(off int, payload []byte) error) (res dumpResult, err error) {
	if c.pending != 0 {
		if err := c.drain(buf); err != nil {
			return res, fmt.Errorf("finishing an abandoned dump: %w", err)
		}
	}
	c.seq++
	seq := c.seq
	req := make([]byte, nlHdrLen+len(body))
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], typ)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], seq)
	ne.PutUint32(req[12:], c.portid)
	copy(req[nlHdrLen:], body)

	timeout := recvTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	if timeout <= 0 {
		return res, context.DeadlineExceeded
	}
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return res, os.NewSyscallError("setsockopt SO_RCVTIMEO", err)
	}
	if err := unix.Sendto(c.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: c.peer}); err != nil {
		return res, os.NewSyscallError("sendto", err)
	}
	c.pending = seq // until the dump's end is read

	var (
		bad     []error
		nbad    int
		foreign int
	)
	done := func() dumpResult {
		if nbad > len(bad) {
			bad = append(bad, fmt.Errorf("and %d more malformed messages", nbad-len(bad)))
		}
		res.malformed = errors.Join(bad...)
		return res
	}
	for {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		n, fromPeer, err := c.recv(buf, timeout, 0)
		if err != nil {
			return res, err
		}
		if !fromPeer {
			if foreign++; foreign > maxForeign {
				return res, fmt.Errorf("more than %d datagrams from senders other than the kernel", maxForeign)
			}
			continue
		}
		it := msgIter{b: buf[:n]}
		for it.next() {
			h := it.hdr
			if h.Seq != seq {
				continue // the rest of an earlier request that was abandoned
			}
			if h.Pid != c.portid {
				return res, fmt.Errorf("message at offset %d: port id %d, want ours, %d", it.at, h.Pid, c.portid)
			}
			if h.Flags&unix.NLM_F_DUMP_INTR != 0 {
				res.interrupted = true
			}
			switch h.Type {
			case unix.NLMSG_NOOP:
				continue
			case unix.NLMSG_OVERRUN:
				return res, fmt.Errorf("message at offset %d: NLMSG_OVERRUN, data lost", it.at)
			case unix.NLMSG_ERROR:
				c.pending = 0
				if err := parseErrorMsg(h.Flags, it.payload); err != nil {
					return res, err
				}
				return done(), nil // an acknowledgement ends a request too
			case unix.NLMSG_DONE:
				c.pending = 0
				if err := doneStatus(it.payload); err != nil {
					return res, err
				}
				return done(), nil
			}
			if err := fn(it.at, it.payload); err != nil {
				if nbad++; len(bad) < 5 {
					bad = append(bad, err)
				}
			}
		}
		if it.err != nil {
			return res, it.err
		}
	}
}

// doneStatus is the final status an NLMSG_DONE payload carries: an errno
// or 0 (older kernels send no payload).
func doneStatus(p []byte) error {
	if len(p) >= 4 {
		if code := int32(ne.Uint32(p)); code < 0 {
			return &kernelError{Errno: unix.Errno(-code)}
		}
	}
	return nil
}

// drain reads and discards what is left of the pending dump. It never
// waits: while a dump runs, the kernel queues its next datagram as soon as
// the previous one is read, so an empty queue means the dump has ended.
func (c *conn) drain(buf []byte) error {
	for range maxForeign + 1 {
		n, _, err := c.recv(buf, 0, unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) {
			c.pending = 0
			return nil
		}
		if err != nil {
			return err
		}
		// A framing error hides only the rest of this datagram.
		it := msgIter{b: buf[:n]}
		for it.next() {
			if it.hdr.Seq == c.pending && (it.hdr.Type == unix.NLMSG_DONE || it.hdr.Type == unix.NLMSG_ERROR) {
				c.pending = 0
				return nil
			}
		}
	}
	return fmt.Errorf("still not at its end after %d datagrams", maxForeign+1)
}

// recv reads one datagram into buf and says whether the peer (the kernel)
// sent it: another process may send to our port id too. A receive timeout
// is reported naming timeout; with MSG_DONTWAIT in flags, EAGAIN is.
func (c *conn) recv(buf []byte, timeout time.Duration, flags int) (int, bool, error) {
	for {
		n, _, rflags, from, err := unix.Recvmsg(c.fd, buf, nil, flags)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN && flags&unix.MSG_DONTWAIT == 0:
			return 0, false, fmt.Errorf("no reply from the kernel within %v", timeout)
		case err != nil:
			return 0, false, os.NewSyscallError("recvmsg", err)
		case rflags&unix.MSG_TRUNC != 0:
			return 0, false, fmt.Errorf("datagram larger than the %d-byte receive buffer", len(buf))
		}
		sa, ok := from.(*unix.SockaddrNetlink)
		return n, ok && sa.Pid == c.peer, nil
	}
}

// errInterrupted says the kernel flagged a dump NLM_F_DUMP_INTR twice in a
// row: the table kept changing, so entries may be missing or repeated.
var errInterrupted = errors.New("dump interrupted twice by concurrent changes (NLM_F_DUMP_INTR): entries may be missing or repeated")

// dumpConsistent runs a dump and, when the kernel flags it interrupted,
// calls reset (to drop what fn gathered) and runs it once more. The soft
// error reports malformed messages or a second interruption: the records
// gathered are still good. err means the dump failed.
func (c *conn) dumpConsistent(ctx context.Context, buf []byte, typ uint16, body []byte,
	fn func(off int, payload []byte) error, reset func()) (soft, err error) {
	for attempt := 1; ; attempt++ {
		res, err := c.dump(ctx, buf, typ, body, fn)
		switch {
		case err != nil:
			return nil, err
		case !res.interrupted:
			return res.malformed, nil
		case attempt == 2:
			return errors.Join(res.malformed, errInterrupted), nil
		}
		reset()
	}
}
