package bpfiter

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/tcpsentry/tcpsentry/internal/host/proc"
	"github.com/tcpsentry/tcpsentry/internal/testenv"
)

// paths are the load paths every SocketFDs test runs through: each must
// work on its own, not only as the other's fallback.
var paths = []struct {
	name string
	p    loadPath
}{{"raw", pathRaw}, {"cilium", pathCilium}}

// socketFDs runs SocketFDs through path p, skipping (or failing under
// TCPSENTRY_E2E=1) when the kernel or our privileges do not allow it.
func socketFDs(tb testing.TB, p loadPath) []FD {
	tb.Helper()
	testenv.NeedRoot(tb)
	fds, err := socketFDsVia(context.Background(), p, kernelBTFPath)
	why := "BPF iterators unavailable"
	if err != nil {
		why += ": " + err.Error()
	}
	testenv.Need(tb, err == nil, why)
	return fds
}

// socketInode is what /proc/PID/fd/N says: the N of "socket:[N]".
func socketInode(tb testing.TB, pid, fd int) uint64 {
	tb.Helper()
	target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
	if err != nil {
		tb.Fatal(err)
	}
	var ino uint64
	if _, err := fmt.Sscanf(target, "socket:[%d]", &ino); err != nil {
		tb.Fatalf("/proc/%d/fd/%d -> %q: %v", pid, fd, target, err)
	}
	return ino
}

// rawFD is the descriptor behind a net.Conn or net.Listener, without the
// dup that File() makes.
func rawFD(tb testing.TB, c syscall.Conn) int {
	tb.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		tb.Fatal(err)
	}
	var fd int
	if err := rc.Control(func(u uintptr) { fd = int(u) }); err != nil {
		tb.Fatal(err)
	}
	return fd
}

type key struct{ tgid, fd int32 }

// index maps (tgid, fd) to inode and fails on a repeated pair.
func index(tb testing.TB, fds []FD) map[key]uint64 {
	tb.Helper()
	m := make(map[key]uint64, len(fds))
	for _, fd := range fds {
		k := key{fd.TGID, fd.FD}
		if _, dup := m[k]; dup {
			tb.Errorf("(tgid %d, fd %d) reported twice", k.tgid, k.fd)
		}
		m[k] = fd.Inode
	}
	return m
}

func TestSocketFDs(t *testing.T) {
	testenv.NeedRoot(t)
	sleep := testenv.NeedTool(t, "sleep")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()

	// The child inherits a dup of the listener as its fd 3.
	lnFile, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer lnFile.Close()
	cmd := exec.Command(sleep, "60")
	cmd.ExtraFiles = []*os.File{lnFile}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()

	self := os.Getpid()
	want := map[key]uint64{}
	for _, fd := range []int{
		rawFD(t, ln.(*net.TCPListener)),
		rawFD(t, client.(*net.TCPConn)),
		rawFD(t, server.(*net.TCPConn)),
		int(lnFile.Fd()),
	} {
		want[key{int32(self), int32(fd)}] = socketInode(t, self, fd)
	}
	child := cmd.Process.Pid
	want[key{int32(child), 3}] = socketInode(t, child, 3)
	if want[key{int32(child), 3}] != want[key{int32(self), int32(lnFile.Fd())}] {
		t.Fatal("child's fd 3 is not the listener")
	}

	for _, path := range paths {
		t.Run(path.name, func(t *testing.T) {
			got := index(t, socketFDs(t, path.p))
			for k, ino := range want {
				if g, ok := got[k]; !ok {
					t.Errorf("tgid %d fd %d (socket:[%d]) missing", k.tgid, k.fd, ino)
				} else if g != ino {
					t.Errorf("tgid %d fd %d: inode %d, /proc says %d", k.tgid, k.fd, g, ino)
				}
			}
			// Everything reported for this process is a socket with that
			// inode (descriptors closed since are not: the runtime may
			// close its own).
			for k, ino := range got {
				if k.tgid != int32(self) {
					continue
				}
				target, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", k.fd))
				if err == nil && target != fmt.Sprintf("socket:[%d]", ino) {
					t.Errorf("fd %d reported as socket:[%d], /proc says %s", k.fd, ino, target)
				}
			}
		})
	}
}

// TestSocketFDsThreadWithOwnFileTable makes the kernel visit this process
// twice: a thread that unshared its file table is not skipped as a
// duplicate, so every descriptor comes back under our tgid again and must
// be reported once.
func TestSocketFDsThreadWithOwnFileTable(t *testing.T) {
	testenv.NeedRoot(t)
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pair[0])
	defer unix.Close(pair[1])

	unshared := make(chan error)
	release := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Never unlocked: the thread exits with this goroutine and takes
		// its private file table with it, so no other goroutine ever runs
		// with it.
		runtime.LockOSThread()
		unshared <- unix.Unshare(unix.CLONE_FILES)
		<-release
	}()
	if err := <-unshared; err != nil {
		close(release)
		t.Fatalf("unshare(CLONE_FILES): %v", err)
	}
	defer func() {
		close(release)
		<-done
	}()

	self := int32(os.Getpid())
	for _, path := range paths {
		t.Run(path.name, func(t *testing.T) {
			got := index(t, socketFDs(t, path.p))
			for _, fd := range pair {
				if got[key{self, int32(fd)}] != socketInode(t, int(self), fd) {
					t.Errorf("fd %d: inode %d, want %d", fd, got[key{self, int32(fd)}], socketInode(t, int(self), fd))
				}
			}
		})
	}
}

// benchSockets is how many sockets the benchmarks hold in this process.
const benchSockets = 5000

// holdSockets opens n sockets as AF_UNIX pairs: the iterator and /proc
// treat every socket alike, and pairs need no ports or listeners.
func holdSockets(tb testing.TB, n int) []int {
	tb.Helper()
	fds := make([]int, 0, n)
	tb.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	for len(fds) < n {
		p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			tb.Fatalf("after %d sockets: %v", len(fds), err)
		}
		fds = append(fds, p[0], p[1])
	}
	return fds
}

// BenchmarkSocketFDs is the whole of SocketFDs (BTF, load, attach, read)
// through each load path, for every socket on the host: benchSockets here
// plus whatever else runs. sockets/op says how many that was, ns/socket
// the cost of each.
func BenchmarkSocketFDs(b *testing.B) {
	holdSockets(b, benchSockets)
	for _, path := range append(paths, struct {
		name string
		p    loadPath
	}{"auto", pathAuto}) {
		b.Run(path.name, func(b *testing.B) {
			socketFDs(b, path.p)
			b.ReportAllocs()
			var n int
			for b.Loop() {
				fds, err := socketFDsVia(context.Background(), path.p, kernelBTFPath)
				if err != nil {
					b.Fatal(err)
				}
				n = len(fds)
			}
			b.ReportMetric(float64(n), "sockets/op")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/socket")
		})
	}
}

// BenchmarkReadlinkSelf is the comparison figure: a plain readlink loop
// over /proc/self/fd for the same benchSockets sockets, which is what
// attribution through /proc costs per descriptor before any directory
// listing or other process.
func BenchmarkReadlinkSelf(b *testing.B) {
	fds := holdSockets(b, benchSockets)
	b.ReportAllocs()
	for b.Loop() {
		for _, fd := range fds {
			target, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
			if err != nil || len(target) < 9 || target[:8] != "socket:[" {
				b.Fatalf("fd %d: %q %v", fd, target, err)
			}
		}
	}
	b.ReportMetric(float64(len(fds)), "sockets/op")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(fds)), "ns/socket")
}

// BenchmarkProcScan is the path SocketFDs replaces, over the same host:
// proc.Scan with benchSockets held here, for a like-for-like figure when
// other processes hold sockets too.
func BenchmarkProcScan(b *testing.B) {
	holdSockets(b, benchSockets)
	testenv.NeedRoot(b)
	b.ReportAllocs()
	var n int
	for b.Loop() {
		t, err := proc.Scan(context.Background(), proc.Options{})
		if err != nil {
			b.Fatal(err)
		}
		n = 0
		for _, owners := range t.Owners {
			for _, o := range owners {
				n += len(o.FDs)
			}
		}
	}
	b.ReportMetric(float64(n), "sockets/op")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/socket")
}

// TestLoadProgramRejected checks the raw path's second try: a program the
// verifier refuses comes back with the tail of the verifier's log.
func TestLoadProgramRejected(t *testing.T) {
	testenv.NeedRoot(t)
	b, err := parseBTF(kernelBTF(t))
	if err != nil {
		t.Fatal(err)
	}
	_, attachID, err := b.iterTarget()
	if err != nil {
		t.Fatal(err)
	}
	// A load far past the end of the 32-byte context.
	bad := asm.Instructions{
		asm.LoadMem(asm.R0, asm.R1, 4000, asm.DWord),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	}
	fd, err := loadProgram(bad, attachID, b.bo)
	if err == nil {
		unix.Close(fd)
		t.Fatal("verifier accepted an out-of-bounds context load")
	}
	if !strings.Contains(err.Error(), "verifier rejected the program") || !strings.Contains(err.Error(), "log tail:\n") {
		t.Errorf("no verifier log in %v", err)
	}
	t.Log(err)
}

// TestSocketFDsFallback breaks the raw path (its BTF is a file that is not
// BTF) and checks that SocketFDs still answers through cilium/ebpf, and
// that the raw path alone reports why it failed.
func TestSocketFDsFallback(t *testing.T) {
	testenv.NeedRoot(t)
	socketFDs(t, pathCilium)
	notBTF := filepath.Join(t.TempDir(), "vmlinux")
	if err := os.WriteFile(notBTF, []byte("not BTF at all, but long enough for a header"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := socketFDsVia(context.Background(), pathRaw, notBTF)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "bad magic") {
		t.Errorf("raw path on bad BTF: %v", err)
	}
	self := int32(os.Getpid())
	pair := holdSockets(t, 2)
	fds, err := socketFDsVia(context.Background(), pathAuto, notBTF)
	if err != nil {
		t.Fatalf("no fallback: %v", err)
	}
	got := index(t, fds)
	for _, fd := range pair {
		if got[key{self, int32(fd)}] != socketInode(t, int(self), fd) {
			t.Errorf("fd %d: inode %d, want %d", fd, got[key{self, int32(fd)}], socketInode(t, int(self), fd))
		}
	}
}
