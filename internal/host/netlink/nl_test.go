package netlink

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

func TestMsgIter(t *testing.T) {
	two := append(nlMsg(20, 2, 1, 5, []byte("abc")), nlMsg(3, 2, 1, 5, []byte{0, 0, 0, 0})...)
	for _, c := range []struct {
		name    string
		b       []byte
		want    []string // type:payload
		wantErr string
	}{
		{name: "empty", b: nil},
		{name: "two messages, the first padded", b: two, want: []string{"20:abc", "3:\x00\x00\x00\x00"}},
		{name: "last message unpadded", b: nlMsg(20, 0, 1, 5, []byte("abc"))[:nlHdrLen+3], want: []string{"20:abc"}},
		{name: "length shorter than a header", b: append(nlMsg(20, 0, 1, 5, []byte("abcd")), 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
			want: []string{"20:abcd"}, wantErr: "message at offset 20: length 12 shorter than a netlink header"},
		{name: "length beyond the datagram", b: nlMsg(20, 0, 1, 5, []byte("abcd"))[:18],
			wantErr: "message at offset 0: length 20 beyond the 18 bytes left"},
		{name: "trailing bytes", b: append(nlMsg(20, 0, 1, 5, nil), 1, 2, 3),
			want: []string{"20:"}, wantErr: "message at offset 16: 3 trailing bytes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			it := msgIter{b: c.b}
			for it.next() {
				got = append(got, fmt.Sprintf("%d:%s", it.hdr.Type, it.payload))
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("messages %q, want %q", got, c.want)
			}
			if (it.err == nil) != (c.wantErr == "") || (it.err != nil && !strings.Contains(it.err.Error(), c.wantErr)) {
				t.Errorf("error %v, want %q", it.err, c.wantErr)
			}
		})
	}
}

// errorMsg builds an NLMSG_ERROR payload as the kernel does with
// NETLINK_CAP_ACK and NETLINK_EXT_ACK set.
func errorMsg(errno unix.Errno, text string) []byte {
	p := ne.AppendUint32(nil, negErrno(errno))
	p = append(p, nlMsg(20, 0x301, 7, 9, nil)...) // the request's header
	if text != "" {
		p = append(p, nla(unix.NLMSGERR_ATTR_MSG, append([]byte(text), 0))...)
	}
	return p
}

func TestParseErrorMsg(t *testing.T) {
	if err := parseErrorMsg(0, errorMsg(0, "")); err != nil {
		t.Errorf("ack: %v", err)
	}
	err := parseErrorMsg(unix.NLM_F_CAPPED|unix.NLM_F_ACK_TLVS, errorMsg(unix.EPERM, "no such family"))
	if !errors.Is(err, unix.EPERM) || err.Error() != "operation not permitted: no such family" {
		t.Errorf("capped with text: %v", err)
	}
	// Uncapped: the whole request (here with a 4-byte body) precedes the TLVs.
	p := ne.AppendUint32(nil, negErrno(unix.ENOENT))
	p = append(p, nlMsg(20, 0x301, 7, 9, []byte{1, 2, 3, 4})...)
	p = append(p, nla(unix.NLMSGERR_ATTR_MSG, []byte("gone\x00"))...)
	if err := parseErrorMsg(unix.NLM_F_ACK_TLVS, p); !errors.Is(err, unix.ENOENT) || !strings.HasSuffix(err.Error(), ": gone") {
		t.Errorf("uncapped with text: %v", err)
	}
	// An echoed length pointing past the payload loses the text, not the errno.
	p[4] = 0xff
	if err := parseErrorMsg(unix.NLM_F_ACK_TLVS, p); !errors.Is(err, unix.ENOENT) {
		t.Errorf("bad echoed length: %v", err)
	}
	if err := parseErrorMsg(0, []byte{1, 2}); err == nil || !strings.Contains(err.Error(), "shorter than an errno") {
		t.Errorf("2-byte payload: %v", err)
	}
}

func TestUnavailable(t *testing.T) {
	for _, c := range []struct {
		err   error
		unav  bool
		wantS string
	}{
		{&kernelError{Errno: unix.EPERM}, true, "conntrack ipv4: unavailable: operation not permitted (needs CAP_NET_ADMIN)"},
		{&kernelError{Errno: unix.ENOENT}, true, "conntrack ipv4: unavailable: no such file or directory"},
		{os.NewSyscallError("socket", unix.EPROTONOSUPPORT), true, "conntrack ipv4: unavailable: socket: protocol not supported"},
		{&kernelError{Errno: unix.EINVAL}, false, "conntrack ipv4: invalid argument"},
		{errors.New("message at offset 0: length 3"), false, "conntrack ipv4: message at offset 0: length 3"},
	} {
		got := unavailable("conntrack ipv4", c.err, "needs CAP_NET_ADMIN")
		if errors.Is(got, ErrUnavailable) != c.unav || got.Error() != c.wantS || !errors.Is(got, c.err) {
			t.Errorf("unavailable(%v) = %q (ErrUnavailable %v), want %q (%v)", c.err, got, errors.Is(got, ErrUnavailable), c.wantS, c.unav)
		}
	}
}

// fakePeer opens a conn and a second netlink socket that plays the kernel
// for it (NETLINK_USERSOCK lets two sockets talk), so tests can script any
// reply, malformed or not.
func fakePeer(t *testing.T) (c, peer *conn) {
	t.Helper()
	var err error
	if c, err = dial(unix.NETLINK_USERSOCK); err != nil {
		t.Skipf("NETLINK_USERSOCK: %v", err)
	}
	t.Cleanup(func() { c.close() })
	if peer, err = dial(unix.NETLINK_USERSOCK); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.close() })
	c.peer = peer.portid
	return c, peer
}

// serve answers requests on peer: for request i (0-based) with sequence
// number seq, it sends script(i, seq)'s datagrams to c.
func serve(peer, c *conn, requests int, script func(i int, seq uint32) [][]byte) <-chan error {
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 4096)
		for i := range requests {
			n, _, err := unix.Recvfrom(peer.fd, buf, 0)
			if err != nil {
				done <- err
				return
			}
			if n < nlHdrLen {
				done <- fmt.Errorf("request of %d bytes", n)
				return
			}
			for _, d := range script(i, ne.Uint32(buf[8:])) {
				if err := unix.Sendto(peer.fd, d, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: c.portid}); err != nil {
					done <- err
					return
				}
			}
		}
		done <- nil
	}()
	return done
}

func TestDump(t *testing.T) {
	const msgType = 20
	cat := func(ms ...[]byte) []byte {
		var out []byte
		for _, m := range ms {
			out = append(out, m...)
		}
		return out
	}
	for _, c := range []struct {
		name      string
		requests  int
		bufSize   int
		script    func(pid uint32, i int, seq uint32) [][]byte
		want      string // payloads fn kept, joined by ","
		wantSoft  string
		wantErr   string
		wantErrno unix.Errno
	}{{
		name: "multi-part over datagrams",
		script: func(pid uint32, _ int, seq uint32) [][]byte {
			return [][]byte{
				cat(nlMsg(msgType, unix.NLM_F_MULTI, seq, pid, []byte("a")), nlMsg(msgType, unix.NLM_F_MULTI, seq, pid, []byte("b"))),
				cat(nlMsg(msgType, unix.NLM_F_MULTI, seq, pid, []byte("c")), nlMsg(unix.NLMSG_DONE, unix.NLM_F_MULTI, seq, pid, []byte{0, 0, 0, 0})),
			}
		},
		want: "a,b,c",
	}, {
		name: "replies to an earlier request are skipped; NOOP too",
		script: func(pid uint32, _ int, seq uint32) [][]byte {
			return [][]byte{cat(nlMsg(msgType, 0, seq-1, pid, []byte("old")), nlMsg(unix.NLMSG_NOOP, 0, seq, pid, nil),
				nlMsg(msgType, 0, seq, pid, []byte("a")), nlMsg(unix.NLMSG_DONE, 0, seq, pid, nil))}
		},
		want: "a",
	}, {
		name: "another port id is an error",
		script: func(pid uint32, _ int, seq uint32) [][]byte {
			return [][]byte{cat(nlMsg(msgType, 0, seq, pid, []byte("a")), nlMsg(msgType, 0, seq, pid+1, []byte("b")))}
		},
		want:    "a",
		wantErr: "message at offset 20: port id",
	}, {
		name: "NLMSG_ERROR with extended ack",
		script: func(pid uint32, _ int, seq uint32) [][]byte {
			return [][]byte{nlMsg(unix.NLMSG_ERROR, unix.NLM_F_CAPPED|unix.NLM_F_ACK_TLVS, seq, pid, errorMsg(unix.EPERM, "denied"))}
		},
		wantErr:   "operation not permitted: denied",
		wantErrno: unix.EPERM,
	}, {
		name: "an acknowledgement ends the request",
		script: func(pid uint32, _ int, seq uint32) [][]byte {
			return [][]byte{cat(nlMsg(msgType, 0, seq, pid, []byte("a")), nlMsg(unix.NLMSG_ERROR, 0, seq, pid, errorMsg(0, "")))}
		},
		want: "a",
	}, {
		name: "NLMSG_DONE carrying an errno",
		script: func(pid uint32, _ int, seq uint32) [][]byte {
			return [][]byte{nlMsg(unix.NLMSG_DONE, 0, seq, pid, ne.AppendUint32(nil, negErrno(unix.ENOBUFS)))}
		},
		wantErr:   "no buffer space",
		wantErrno: unix.ENOBUFS,
	}, {
		name: "malformed messages cost themselves only",
		script: func(pid uint32, _ int, seq uint32) [][]byte {
			return [][]byte{cat(nlMsg(msgType, 0, seq, pid, []byte("bad")), nlMsg(msgType, 0, seq, pid, []byte("a")),
				nlMsg(msgType, 0, seq, pid, []byte("bad")), nlMsg(unix.NLMSG_DONE, 0, seq, pid, nil))}
		},
		want:     "a",
		wantSoft: "offset 0: bad payload\noffset 40: bad payload",
	}, {
		name: "a framing error stops the dump",
		script: func(pid uint32, _ int, seq uint32) [][]byte {
			m := nlMsg(msgType, 0, seq, pid, []byte("abcd"))
			ne.PutUint32(m, 8)
			return [][]byte{m}
		},
		wantErr: "message at offset 0: length 8 shorter than a netlink header",
	}, {
		name:     "interrupted once: retried, first attempt dropped",
		requests: 2,
		script: func(pid uint32, i int, seq uint32) [][]byte {
			flags := uint16(unix.NLM_F_MULTI)
			if i == 0 {
				flags |= unix.NLM_F_DUMP_INTR
			}
			return [][]byte{cat(nlMsg(msgType, flags, seq, pid, []byte(fmt.Sprint("try", i))), nlMsg(unix.NLMSG_DONE, flags, seq, pid, nil))}
		},
		want: "try1",
	}, {
		name:     "interrupted twice: the second attempt's records and a soft error",
		requests: 2,
		script: func(pid uint32, i int, seq uint32) [][]byte {
			return [][]byte{cat(nlMsg(msgType, unix.NLM_F_DUMP_INTR, seq, pid, []byte(fmt.Sprint("try", i))), nlMsg(unix.NLMSG_DONE, 0, seq, pid, nil))}
		},
		want:     "try1",
		wantSoft: "interrupted twice",
	}, {
		name:    "a datagram larger than the buffer",
		bufSize: 32,
		script: func(pid uint32, _ int, seq uint32) [][]byte {
			return [][]byte{nlMsg(msgType, 0, seq, pid, make([]byte, 40))}
		},
		wantErr: "datagram larger than the 32-byte receive buffer",
	}, {
		name:    "no answer: bounded by the context's deadline",
		script:  func(uint32, int, uint32) [][]byte { return nil },
		wantErr: "no reply from the kernel within",
	}} {
		t.Run(c.name, func(t *testing.T) {
			conn, peer := fakePeer(t)
			done := serve(peer, conn, max(c.requests, 1), func(i int, seq uint32) [][]byte { return c.script(conn.portid, i, seq) })
			var got []string
			fn := func(off int, p []byte) error {
				if string(p) == "bad" {
					return fmt.Errorf("offset %d: bad payload", off)
				}
				got = append(got, string(p))
				return nil
			}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			soft, err := conn.dumpConsistent(ctx, make([]byte, cmpOr(c.bufSize, 1<<16)), msgType, []byte{1, 2, 3, 4}, fn, func() { got = nil })
			if s := strings.Join(got, ","); s != c.want {
				t.Errorf("kept %q, want %q", s, c.want)
			}
			if (err == nil) != (c.wantErr == "") || (err != nil && !strings.Contains(err.Error(), c.wantErr)) {
				t.Errorf("error %v, want %q", err, c.wantErr)
			}
			if c.wantErrno != 0 && !errors.Is(err, c.wantErrno) {
				t.Errorf("error %v does not wrap %v", err, c.wantErrno)
			}
			if (soft == nil) != (c.wantSoft == "") || (soft != nil && !strings.Contains(soft.Error(), c.wantSoft)) {
				t.Errorf("soft error %v, want %q", soft, c.wantSoft)
			}
			if err := <-done; err != nil {
				t.Errorf("fake peer: %v", err)
			}
		})
	}
}

func cmpOr(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

// Datagrams from anyone but the peer are ignored, up to a bound.
func TestDumpForeignSenders(t *testing.T) {
	conn, peer := fakePeer(t)
	other, err := dial(unix.NETLINK_USERSOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer other.close()
	// The spoofed messages carry the sequence number the next dump will use.
	spam := func(n int, seq uint32) error {
		for range n {
			m := nlMsg(20, 0, seq, conn.portid, []byte("spoofed"))
			if err := unix.Sendto(other.fd, m, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: conn.portid}); err != nil {
				return err
			}
		}
		return nil
	}
	var got []string
	fn := func(_ int, p []byte) error { got = append(got, string(p)); return nil }
	buf := make([]byte, 1<<16)

	if err := spam(3, conn.seq+1); err != nil {
		t.Fatal(err)
	}
	done := serve(peer, conn, 1, func(_ int, seq uint32) [][]byte {
		return [][]byte{append(nlMsg(20, 0, seq, conn.portid, []byte("real")), nlMsg(unix.NLMSG_DONE, 0, seq, conn.portid, nil)...)}
	})
	if _, err := conn.dump(context.Background(), buf, 20, nil, fn); err != nil || strings.Join(got, ",") != "real" {
		t.Fatalf("with 3 foreign datagrams: kept %q, error %v", got, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Sent while the dump waits, so the queue never fills.
	spammed := make(chan error, 1)
	next := conn.seq + 1
	go func() { spammed <- spam(maxForeign+1, next) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := conn.dump(ctx, buf, 20, nil, fn); err == nil || !strings.Contains(err.Error(), "datagrams from senders other than the kernel") {
		t.Fatalf("with %d foreign datagrams: error %v", maxForeign+1, err)
	}
	if err := <-spammed; err != nil {
		t.Fatal(err)
	}
}

// FuzzMessages feeds arbitrary datagrams to the message walk and the error
// decoder: neither may panic, and every payload lies inside the datagram.
func FuzzMessages(f *testing.F) {
	f.Add(nlMsg(unix.NLMSG_ERROR, unix.NLM_F_CAPPED|unix.NLM_F_ACK_TLVS, 1, 1, errorMsg(unix.EPERM, "x")))
	f.Add(append(nlMsg(20, 2, 1, 5, []byte("abc")), nlMsg(unix.NLMSG_DONE, 2, 1, 5, []byte{0, 0, 0, 0})...))
	f.Add(nlMsg(unix.NLMSG_ERROR, unix.NLM_F_ACK_TLVS, 1, 1, append(errorMsg(unix.ENOENT, ""), 0xff, 0xff, 0, 0)))
	f.Fuzz(func(t *testing.T, b []byte) {
		it := msgIter{b: b}
		msgs := 0
		for it.next() {
			if msgs++; msgs > len(b)/nlHdrLen {
				t.Fatalf("%d messages from %d bytes", msgs, len(b))
			}
			if it.at+nlHdrLen+len(it.payload) > len(b) {
				t.Fatalf("payload at %d+%d beyond %d bytes", it.at, len(it.payload), len(b))
			}
			if it.hdr.Type == unix.NLMSG_ERROR {
				_ = parseErrorMsg(it.hdr.Flags, it.payload)
			}
		}
	})
}

// negErrno is an errno as netlink carries it: negated, in a u32.
func negErrno(e unix.Errno) uint32 { return uint32(-int32(e)) }

// A dump abandoned midway is read to its end before the next one is sent,
// since the kernel refuses a second dump on a socket (EBUSY) meanwhile.
func TestDumpDrainsAbandoned(t *testing.T) {
	conn, peer := fakePeer(t)
	done := serve(peer, conn, 2, func(i int, seq uint32) [][]byte {
		if i == 0 {
			bad := nlMsg(20, 0, seq, conn.portid, []byte("abcd"))
			ne.PutUint32(bad, 8)
			return [][]byte{bad, nlMsg(20, 0, seq, conn.portid, []byte("stale")), nlMsg(unix.NLMSG_DONE, 0, seq, conn.portid, nil)}
		}
		return [][]byte{append(nlMsg(20, 0, seq, conn.portid, []byte("fresh")), nlMsg(unix.NLMSG_DONE, 0, seq, conn.portid, nil)...)}
	})
	var got []string
	fn := func(_ int, p []byte) error { got = append(got, string(p)); return nil }
	buf := make([]byte, 1<<16)
	if _, err := conn.dump(context.Background(), buf, 20, nil, fn); err == nil || conn.pending != conn.seq {
		t.Fatalf("first dump: error %v, pending %d (seq %d); want a framing error and the dump pending", err, conn.pending, conn.seq)
	}
	if _, err := conn.dump(context.Background(), buf, 20, nil, fn); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "fresh" || conn.pending != 0 {
		t.Errorf("kept %q, pending %d; want just fresh and nothing pending", got, conn.pending)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Malformed replies cost their own records only: Sockets and Conntrack
// return the good ones with an error wrapping ErrIncomplete.
func TestDumperIncomplete(t *testing.T) {
	c, peer := fakePeer(t)
	good := encodeInetDiag(model.Socket{State: model.StateListen, Local: ap("127.0.0.1:22"), Remote: ap("0.0.0.0:0"), Inode: 7})
	flow := encodeConntrack(fullFlow)
	done := serve(peer, c, 3, func(i int, seq uint32) [][]byte {
		var ok, bad []byte
		switch i {
		case 0: // sock_diag tcp/ipv4
			ok, bad = good, good[:10]
		case 1: // conntrack ipv4
			ok, bad = flow, flow[:4]
		default: // conntrack ipv6: empty
			return [][]byte{nlMsg(unix.NLMSG_DONE, 0, seq, c.portid, nil)}
		}
		return [][]byte{append(append(nlMsg(20, 0, seq, c.portid, bad), nlMsg(20, 0, seq, c.portid, ok)...),
			nlMsg(unix.NLMSG_DONE, 0, seq, c.portid, nil)...)}
	})
	d := &Dumper{diag: c, nf: c}
	socks, err := d.Sockets(context.Background(), DumpOptions{Protos: []model.Proto{model.ProtoTCP}, Families: []Family{IPv4}})
	if len(socks) != 1 || socks[0].Inode != 7 || !errors.Is(err, ErrIncomplete) ||
		!strings.Contains(fmt.Sprint(err), "sock_diag tcp/ipv4: incomplete: message at offset 0: length 10 shorter than inet_diag_msg") {
		t.Errorf("Sockets = %d sockets, error %v", len(socks), err)
	}
	flows, err := d.Conntrack(context.Background())
	if len(flows) != 1 || flows[0] != fullFlow || !errors.Is(err, ErrIncomplete) ||
		!strings.Contains(fmt.Sprint(err), "conntrack ipv4: incomplete: message at offset 0: no CTA_TUPLE_ORIG") {
		t.Errorf("Conntrack = %d flows, error %v", len(flows), err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
