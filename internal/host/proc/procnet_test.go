package proc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/tcpsentry/tcpsentry/internal/model"
	"github.com/tcpsentry/tcpsentry/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

func renderSockets(socks []model.Socket) string {
	var b strings.Builder
	for _, s := range socks {
		fmt.Fprintf(&b, "%s %s %s %s sendq=%d recvq=%d uid=%d inode=%d\n", s.Proto,
			model.SocketStateName(s.Proto, s.State), s.Local, s.Remote, s.SendQ, s.RecvQ, s.UID, s.Inode)
	}
	return b.String()
}

// TestReadProcNetGolden parses a real capture of /proc/net/{tcp,tcp6,udp,udp6}
// taken with loopback listeners, connections (one with unread data), a
// dual-stack listener with an IPv4-mapped peer, and bound/connected UDP.
func TestReadProcNetGolden(t *testing.T) {
	socks, err := ReadProcNet("testdata/proc")
	if err != nil {
		t.Fatal(err)
	}
	got := renderSockets(socks)
	golden := "testdata/procnet.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("ReadProcNet(testdata/proc) (-want +got):\n%s", diff)
	}
}

// TestReadProcNetBadLines: every bad line is named by file, line and field,
// and the good lines around them are still returned.
func TestReadProcNetBadLines(t *testing.T) {
	socks, err := ReadProcNet("testdata/badproc")
	wantSocks := []model.Socket{
		{Proto: model.ProtoTCP, State: model.StateListen, Local: netip.MustParseAddrPort("127.0.0.1:34567"),
			Remote: netip.MustParseAddrPort("0.0.0.0:0"), Inode: 12862},
		{Proto: model.ProtoTCP, State: model.StateEstablished, Local: netip.MustParseAddrPort("127.0.0.1:22"),
			Remote: netip.MustParseAddrPort("127.0.0.1:55330"), SendQ: 16, RecvQ: 32, UID: 1000, Inode: 777},
	}
	if diff := cmp.Diff(wantSocks, socks, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
		t.Errorf("sockets (-want +got):\n%s", diff)
	}
	f := "testdata/badproc/thread-self/net/tcp"
	wantErrs := []string{
		f + `:3: field local_address "0100007G:8707": invalid syntax`,
		f + `:4: field rem_address "00000000": invalid syntax`,
		f + `:5: field st "XX": invalid syntax`,
		f + `:6: field tx_queue:rx_queue "00000000-00000000": invalid syntax`,
		f + `:7: field uid "-5": invalid syntax`,
		f + `:8: field inode "99999999999999999999999": value out of range`,
		f + `:9: field rem_address "": too few fields`,
		f + `:12: field local_address "00000000000000000000000001000000:0016": invalid syntax`,
		f + `:13: field local_address "0100007F:10000": invalid syntax`,
	}
	if err == nil {
		t.Fatal("no error for bad lines")
	}
	if diff := cmp.Diff(wantErrs, strings.Split(err.Error(), "\n")); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
	var le *lineError
	if !errors.As(err, &le) || le.File != f || !errors.Is(err, errSyntax) {
		t.Errorf("error %v does not unwrap to a *lineError naming %s", err, f)
	}
}

func TestReadProcNetMissingRoot(t *testing.T) {
	socks, err := ReadProcNet(t.TempDir())
	if err != nil || len(socks) != 0 {
		t.Errorf("ReadProcNet(empty dir) = %v, %v; want nothing, no error", socks, err)
	}
}

// TestParseHexAddrPort checks the kernel's per-word host byte order against
// addresses formatted the way the kernel formats them on this machine.
func TestParseHexAddrPort(t *testing.T) {
	for _, s := range []string{"127.0.0.1:3306", "10.1.2.3:0", "255.255.255.255:65535",
		"[::1]:22", "[fe80::1:2:3:4]:443", "[::ffff:127.0.0.1]:8080", "[2001:db8::dead:beef]:1"} {
		ap := netip.MustParseAddrPort(s)
		raw := ap.Addr().AsSlice()
		var hex strings.Builder
		for i := 0; i < len(raw); i += 4 {
			fmt.Fprintf(&hex, "%08X", binary.NativeEndian.Uint32(raw[i:]))
		}
		in := fmt.Sprintf("%s:%04X", hex.String(), ap.Port())
		got, err := parseHexAddrPort([]byte(in), ap.Addr().Is6())
		if err != nil || got != ap {
			t.Errorf("parseHexAddrPort(%q) = %v, %v; want %v", in, got, err, ap)
		}
	}
	if binary.NativeEndian.Uint16([]byte{1, 0}) == 1 { // little-endian: the documented examples
		got, _ := parseHexAddrPort([]byte("0100007F:0CEA"), false)
		if want := netip.MustParseAddrPort("127.0.0.1:3306"); got != want {
			t.Errorf("0100007F:0CEA = %v, want %v", got, want)
		}
		got, _ = parseHexAddrPort([]byte("0000000000000000FFFF00000100007F:1F90"), true)
		if want := netip.MustParseAddrPort("[::ffff:127.0.0.1]:8080"); got != want {
			t.Errorf("v4-mapped = %v, want %v", got, want)
		}
	}
}

func FuzzParseProcNet(f *testing.F) {
	for _, p := range []string{"testdata/proc/thread-self/net/tcp", "testdata/proc/thread-self/net/tcp6",
		"testdata/proc/thread-self/net/udp", "testdata/badproc/thread-self/net/tcp"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, strings.HasSuffix(p, "6"))
	}
	f.Fuzz(func(t *testing.T, raw []byte, v6 bool) {
		socks, errs := parseProcNet(bytes.NewReader(raw), model.ProtoTCP, v6)
		lines := bytes.Count(raw, []byte("\n")) + 1
		if len(socks)+len(errs) > lines {
			t.Fatalf("%d sockets and %d errors from %d lines", len(socks), len(errs), lines)
		}
		for _, s := range socks {
			if s.Local.Addr().Is6() != v6 || s.Remote.Addr().Is6() != v6 {
				t.Fatalf("socket %+v in a v6=%v table", s, v6)
			}
		}
	})
}

// sockInode returns the inode of a socket held by a net listener or conn.
func sockInode(t *testing.T, c syscall.Conn) uint64 {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return st.Ino
}

// TestReadProcNetLive finds the test's own loopback sockets in the live
// tables, which checks the byte order on this machine end to end.
func TestReadProcNetLive(t *testing.T) {
	type want struct {
		inode uint64
		sock  model.Socket
	}
	var wants []want
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	uid := uint32(os.Getuid())
	wants = append(wants, want{sockInode(t, ln.(*net.TCPListener)), model.Socket{Proto: model.ProtoTCP,
		State: model.StateListen, Local: ln.Addr().(*net.TCPAddr).AddrPort(), UID: uid}})
	uc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	wants = append(wants, want{sockInode(t, uc.(*net.UDPConn)), model.Socket{Proto: model.ProtoUDP,
		State: model.StateClose, Local: uc.LocalAddr().(*net.UDPAddr).AddrPort(), UID: uid}})
	if ln6, err := net.Listen("tcp6", "[::1]:0"); err == nil {
		defer ln6.Close()
		wants = append(wants, want{sockInode(t, ln6.(*net.TCPListener)), model.Socket{Proto: model.ProtoTCP,
			State: model.StateListen, Local: ln6.Addr().(*net.TCPAddr).AddrPort(), UID: uid}})
	}

	socks, err := ReadProcNet("")
	if err != nil {
		t.Fatal(err)
	}
	byInode := map[uint64]model.Socket{}
	for _, s := range socks {
		byInode[s.Inode] = s
	}
	for _, w := range wants {
		s, ok := byInode[w.inode]
		if !ok {
			t.Errorf("socket %v (inode %d) not in /proc/net", w.sock.Local, w.inode)
			continue
		}
		if s.Proto != w.sock.Proto || s.State != w.sock.State || s.Local != w.sock.Local || s.UID != w.sock.UID {
			t.Errorf("inode %d = %+v, want %+v", w.inode, s, w.sock)
		}
	}
}

// TestReadProcNetThreadNetns: a goroutine locked to a thread that entered a
// new network namespace sees that namespace's sockets, not the host's.
func TestReadProcNetThreadNetns(t *testing.T) {
	testenv.NeedRoot(t)
	host, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	hostInode := sockInode(t, host.(*net.TCPListener))

	type result struct {
		inode uint64
		socks []model.Socket
		err   error
	}
	done := make(chan result)
	go func() {
		// Never unlocked: the thread is in another namespace, so the
		// runtime must discard it when this goroutine exits.
		runtime.LockOSThread()
		var r result
		defer func() { done <- r }()
		if r.err = unix.Unshare(unix.CLONE_NEWNET); r.err != nil {
			return
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			r.err = err
			return
		}
		defer unix.Close(fd)
		// lo is down in a new namespace; the wildcard address needs no interface.
		if r.err = unix.Bind(fd, &unix.SockaddrInet4{Port: 0}); r.err != nil {
			return
		}
		if r.err = unix.Listen(fd, 1); r.err != nil {
			return
		}
		var st unix.Stat_t
		if r.err = unix.Fstat(fd, &st); r.err != nil {
			return
		}
		r.inode = st.Ino
		r.socks, r.err = ReadProcNet("")
	}()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	var sawOwn bool
	for _, s := range r.socks {
		if s.Inode == hostInode {
			t.Errorf("host socket %d seen from the new namespace", hostInode)
		}
		sawOwn = sawOwn || s.Inode == r.inode
	}
	if !sawOwn || len(r.socks) != 1 {
		t.Errorf("namespace sockets = %s; want only inode %d", renderSockets(r.socks), r.inode)
	}
}
