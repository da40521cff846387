package netlink

import (
	"crypto/rand"
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tcpsentry/tcpsentry/internal/model"
	"github.com/tcpsentry/tcpsentry/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the fixtures")

// nla builds one netlink attribute with host-order header and padding.
func nla(typ uint16, vals ...[]byte) []byte {
	var v []byte
	for _, x := range vals {
		v = append(v, x...)
	}
	b := make([]byte, 4, 4+align4(len(v)))
	ne.PutUint16(b[0:], uint16(4+len(v)))
	ne.PutUint16(b[2:], typ)
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// nest builds a nested attribute, flagged as the kernel flags them.
func nest(typ uint16, children ...[]byte) []byte { return nla(typ|unix.NLA_F_NESTED, children...) }

func be16b(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func be32b(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func be64b(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// nlMsg wraps a payload in a netlink header.
func nlMsg(typ, flags uint16, seq, pid uint32, payload []byte) []byte {
	b := make([]byte, nlHdrLen, nlHdrLen+align4(len(payload)))
	ne.PutUint32(b[0:], uint32(nlHdrLen+len(payload)))
	ne.PutUint16(b[4:], typ)
	ne.PutUint16(b[6:], flags)
	ne.PutUint32(b[8:], seq)
	ne.PutUint32(b[12:], pid)
	b = append(b, payload...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// tcpInfoBytes lays out ti with x/sys's struct, an oracle independent of
// our offsets, truncated to n bytes (an older kernel's tcp_info).
func tcpInfoBytes(ti *unix.TCPInfo, n int) []byte {
	full := unsafe.Slice((*byte)(unsafe.Pointer(ti)), unix.SizeofTCPInfo)
	return append([]byte(nil), full[:min(n, len(full))]...)
}

// encodeInetDiag is parseInetDiag's inverse: the family comes from Local.
func encodeInetDiag(s model.Socket, extra ...[]byte) []byte {
	b := make([]byte, inetDiagMsgLen)
	b[0] = unix.AF_INET6
	if s.Local.Addr().Is4() {
		b[0] = unix.AF_INET
	}
	b[1] = byte(s.State)
	binary.BigEndian.PutUint16(b[idiagSport:], s.Local.Port())
	binary.BigEndian.PutUint16(b[idiagDport:], s.Remote.Port())
	if b[0] == unix.AF_INET {
		a, r := s.Local.Addr().As4(), s.Remote.Addr().As4()
		copy(b[idiagSrc:], a[:])
		copy(b[idiagDst:], r[:])
	} else {
		a, r := s.Local.Addr().As16(), s.Remote.Addr().As16()
		copy(b[idiagSrc:], a[:])
		copy(b[idiagDst:], r[:])
	}
	ne.PutUint32(b[idiagIf:], s.Iface)
	ne.PutUint32(b[idiagRqueue:], s.RecvQ)
	ne.PutUint32(b[idiagWqueue:], s.SendQ)
	ne.PutUint32(b[idiagUID:], s.UID)
	ne.PutUint32(b[idiagInode:], uint32(s.Inode))
	if s.TCP != nil {
		ti := unix.TCPInfo{
			Retransmits:    s.TCP.Retransmits,
			Rtt:            uint32(s.TCP.RTT.Microseconds()),
			Rttvar:         uint32(s.TCP.RTTVar.Microseconds()),
			Total_retrans:  s.TCP.TotalRetrans,
			Bytes_acked:    s.TCP.BytesAcked,
			Bytes_received: s.TCP.BytesReceived,
			Bytes_sent:     s.TCP.BytesSent,
			Segs_out:       s.TCP.SegsOut,
			Segs_in:        s.TCP.SegsIn,
			Last_data_sent: uint32(s.TCP.LastSend.Milliseconds()),
			Last_data_recv: uint32(s.TCP.LastRecv.Milliseconds()),
		}
		b = append(b, nla(inetDiagInfo, tcpInfoBytes(&ti, unix.SizeofTCPInfo))...)
	}
	for _, e := range extra {
		b = append(b, e...)
	}
	return b
}

// encodeTuple and encodeConntrack are parseConntrack's inverse.
func encodeTuple(typ uint16, proto model.Proto, t Tuple) []byte {
	var ip []byte
	if t.Src.Addr().Is4() {
		s, d := t.Src.Addr().As4(), t.Dst.Addr().As4()
		ip = nest(ctaTupleIP, nla(ctaIPv4Src, s[:]), nla(ctaIPv4Dst, d[:]))
	} else {
		s, d := t.Src.Addr().As16(), t.Dst.Addr().As16()
		ip = nest(ctaTupleIP, nla(ctaIPv6Src, s[:]), nla(ctaIPv6Dst, d[:]))
	}
	return nest(typ, ip, nest(ctaTupleProto,
		nla(ctaProtoNum, []byte{byte(proto)}),
		nla(ctaProtoSrcPort, be16b(t.Src.Port())),
		nla(ctaProtoDstPort, be16b(t.Dst.Port()))))
}

func encodeConntrack(f Flow) []byte {
	fam := byte(unix.AF_INET6)
	if f.Orig.Src.Addr().Is4() {
		fam = unix.AF_INET
	}
	ns := func(t interface {
		IsZero() bool
		UnixNano() int64
	}) uint64 {
		if t.IsZero() {
			return 0
		}
		return uint64(t.UnixNano())
	}
	b := []byte{fam, unix.NFNETLINK_V0, 0, 0}
	for _, a := range [][]byte{
		encodeTuple(ctaTupleOrig, f.Proto, f.Orig),
		encodeTuple(ctaTupleReply, f.Proto, f.Reply),
		nla(ctaStatus, be32b(f.Status)),
		nla(ctaTimeout, be32b(f.Timeout)),
		nla(ctaMark, be32b(f.Mark)),
		nla(ctaID, be32b(f.ID)),
		nla(ctaZone, be16b(f.Zone)),
		nest(ctaProtoinfo, nest(ctaProtoinfoTCP, nla(ctaProtoinfoTCPState, []byte{f.TCPState}))),
		nest(ctaCountersOrig, nla(ctaCountersPackets, be64b(f.OrigPackets)), nla(ctaCountersBytes, be64b(f.OrigBytes))),
		nest(ctaCountersReply, nla(ctaCountersPackets, be64b(f.ReplyPackets)), nla(ctaCountersBytes, be64b(f.ReplyBytes))),
		nest(ctaTimestamp, nla(ctaTimestampStart, be64b(ns(f.Start))), nla(ctaTimestampStop, be64b(ns(f.Stop)))),
	} {
		b = append(b, a...)
	}
	return b
}

// readFixture splits a testdata/*.nl file (netlink messages as the kernel
// sent them) into message payloads.
func readFixture(t testing.TB, name string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	it := msgIter{b: b}
	for it.next() {
		out = append(out, it.payload)
	}
	if it.err != nil {
		t.Fatalf("%s: %v", name, it.err)
	}
	return out
}

// socketInode returns the inode of a socket's descriptor as
// /proc/self/fd shows it (socket:[N]), an identity the kernel shares with
// sock_diag's idiag_inode.
func socketInode(t testing.TB, c syscall.Conn) uint64 {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var link string
	var lerr error
	if err := rc.Control(func(fd uintptr) {
		link, lerr = os.Readlink("/proc/self/fd/" + strconv.Itoa(int(fd)))
	}); err != nil {
		t.Fatal(err)
	}
	if lerr != nil {
		t.Fatal(lerr)
	}
	s, ok := strings.CutPrefix(link, "socket:[")
	s, ok2 := strings.CutSuffix(s, "]")
	n, err := strconv.ParseUint(s, 10, 64)
	if !ok || !ok2 || err != nil {
		t.Fatalf("fd link %q is not socket:[N]", link)
	}
	return n
}

func addrPort(t testing.TB, a net.Addr) netip.AddrPort {
	t.Helper()
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	}
	t.Fatalf("address %v of type %T", a, a)
	return netip.AddrPort{}
}

// run runs a command and fails the test with its output when it fails.
func run(t testing.TB, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// newNetns creates a uniquely named network namespace with loopback up,
// deleted when the test ends.
func newNetns(t testing.TB) string {
	t.Helper()
	testenv.NeedRoot(t)
	testenv.NeedTool(t, "ip")
	name := fmt.Sprintf("tsnl-%d-%s", os.Getpid(), strings.ToLower(rand.Text()[:6]))
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", name, err, out)
		}
	})
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

// threadNetns returns the network namespace inode of every thread of this
// process, to check that none was left in a test namespace.
func threadNetns(t testing.TB) map[uint64][]string {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64][]string{}
	for _, task := range tasks {
		var st unix.Stat_t
		if err := unix.Stat("/proc/self/task/"+task.Name()+"/ns/net", &st); err != nil {
			continue // the thread exited
		}
		out[st.Ino] = append(out[st.Ino], task.Name())
	}
	return out
}

func mustInode(t testing.TB, path string) uint64 {
	t.Helper()
	ino, err := NetnsInode(path)
	if err != nil {
		t.Fatal(err)
	}
	return ino
}
