package proc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/tcpsentry/tcpsentry/internal/model"
	"github.com/tcpsentry/tcpsentry/internal/testenv"
)

// fakeProc describes one process of a fake /proc tree.
type fakeProc struct {
	stat, status, cmdline string
	exe                   string            // symlink target; "" for none
	fds                   map[string]string // fd name → symlink target; nil for no fd directory
}

// buildFakeProc writes a procfs-like tree: regular files, and symlinks for
// fd entries and exe, since Scan readlinks them.
func buildFakeProc(t *testing.T, procs map[string]fakeProc, stat string) string {
	t.Helper()
	root := fastTempDir(t)
	write := func(p, s string) {
		if err := os.WriteFile(filepath.Join(root, p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, p string) {
		if err := os.Symlink(target, filepath.Join(root, p)); err != nil {
			t.Fatal(err)
		}
	}
	write("stat", stat)
	link("100", "self")
	for name, p := range procs {
		if err := os.Mkdir(filepath.Join(root, name), 0o755); err != nil {
			t.Fatal(err)
		}
		write(name+"/stat", p.stat)
		write(name+"/status", p.status)
		write(name+"/cmdline", p.cmdline)
		if p.exe != "" {
			link(p.exe, name+"/exe")
		}
		if p.fds != nil {
			if err := os.Mkdir(filepath.Join(root, name, "fd"), 0o755); err != nil {
				t.Fatal(err)
			}
			for fd, target := range p.fds {
				link(target, name+"/fd/"+fd)
			}
		}
	}
	return root
}

// fastTempDir is a temporary directory on tmpfs when /dev/shm is there:
// creating a symlink on this machine's ext4 /tmp costs ~0.5 ms.
func fastTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "tcpsentry-proc-test-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func status(uid int) string {
	return fmt.Sprintf("Name:\tx\nState:\tS (sleeping)\nTgid:\t1\nUid:\t%d\t%d\t%d\t%d\nGid:\t0\t0\t0\t0\n", uid, uid, uid, uid)
}

func TestScanFakeTree(t *testing.T) {
	const btime = 1700000000
	procs := map[string]fakeProc{
		"100": {stat: statLine(100, "web (srv) x", 1, 34816, 12345), status: status(1000),
			cmdline: "/usr/bin/web\x00--port\x00\x00", exe: "/usr/bin/web (deleted)",
			fds: map[string]string{"0": "/dev/null", "3": "socket:[111]", "4": "socket:[222]",
				"5": "pipe:[9]", "9": "socket:[111]", "10": "anon_inode:[eventpoll]"}},
		"200": {stat: statLine(200, "sh", 100, 0, 200), status: status(0), cmdline: "sh\x00",
			exe: "/bin/dash", fds: map[string]string{"3": "socket:[111]", "7": "socket:[bad]", "8": "socket:[333"}},
		// no socket: only with AllProcesses
		"300": {stat: statLine(300, "cron", 1, 0, 100), status: status(0), cmdline: "cron\x00",
			exe: "/usr/sbin/cron", fds: map[string]string{"0": "/dev/null"}},
		// exited between listing and reading: no fd directory any more
		"400": {stat: statLine(400, "gone", 1, 0, 100), status: status(0)},
		// other user's process: the hook denies its fd directory
		"500": {stat: statLine(500, "secret", 1, 0, 100), status: status(33), cmdline: "secret\x00",
			fds: map[string]string{"3": "socket:[555]"}},
		// kernel thread: no exe, empty cmdline, no descriptors
		"600": {stat: statLine(600, "kworker/0:1", 2, 0, 1), status: status(0), fds: map[string]string{}},
		// unparsable stat: recorded as an error, the socket still attributed
		"700": {stat: "garbage", status: status(4242), cmdline: "odd\x00",
			fds: map[string]string{"0": "socket:[444]"}},
		// own zombie: its fd directory refuses even its owner; not "denied"
		"800":   {stat: strings.Replace(statLine(800, "defunct", 100, 0, 5), " S ", " Z ", 1), status: status(0)},
		"12abc": {},
		"sys":   {},
	}
	root := buildFakeProc(t, procs, "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n")
	passwd := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(passwd, []byte("root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := hooks{openFD: func(pid int32) error {
		if pid == 500 || pid == 800 {
			return unix.EACCES
		}
		return nil
	}}

	wantOwners := map[uint64][]model.Owner{
		111: {{PID: 100, FDs: []int32{3, 9}}, {PID: 200, FDs: []int32{3}}},
		222: {{PID: 100, FDs: []int32{4}}},
		444: {{PID: 700, FDs: []int32{0}}},
	}
	start := func(ticks int) time.Time {
		return time.Unix(btime, 0).Add(time.Duration(ticks) * 10 * time.Millisecond)
	}
	wantProcs := map[int32]*model.Process{
		100: {PID: 100, PPID: 1, Name: "web (srv) x", Exe: "/usr/bin/web (deleted)",
			Cmdline: []string{"/usr/bin/web", "--port", ""}, UID: 1000, User: "alice", Start: start(12345), TTY: 34816},
		200: {PID: 200, PPID: 100, Name: "sh", Exe: "/bin/dash", Cmdline: []string{"sh"}, User: "root", Start: start(200)},
		700: {PID: 700, UID: 4242, Cmdline: []string{"odd"}},
	}
	for _, all := range []bool{false, true} {
		t.Run(fmt.Sprintf("all=%v", all), func(t *testing.T) {
			tab, err := scan(context.Background(), Options{Root: root, Passwd: passwd, AllProcesses: all, Workers: 3}, h)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(wantOwners, tab.Owners); diff != "" {
				t.Errorf("Owners (-want +got):\n%s", diff)
			}
			want := wantProcs
			if all {
				want = cloneMap(wantProcs)
				want[300] = &model.Process{PID: 300, PPID: 1, Name: "cron", Exe: "/usr/sbin/cron",
					Cmdline: []string{"cron"}, User: "root", Start: start(100)}
				want[600] = &model.Process{PID: 600, PPID: 2, Name: "kworker/0:1", User: "root", Start: start(1)}
			}
			if diff := cmp.Diff(want, tab.Processes); diff != "" {
				t.Errorf("Processes (-want +got):\n%s", diff)
			}
			if tab.Scanned != 5 || tab.Denied != 1 || tab.Gone != 2 || tab.ErrorCount != 1 {
				t.Errorf("Scanned, Denied, Gone, ErrorCount = %d, %d, %d, %d; want 5, 1, 2, 1",
					tab.Scanned, tab.Denied, tab.Gone, tab.ErrorCount)
			}
			if len(tab.Errors) != 1 || !strings.Contains(tab.Errors[0].Error(), "/700/stat: field comm") {
				t.Errorf("Errors = %v, want one naming 700/stat and field comm", tab.Errors)
			}
			denied := "could not read fds of 1 process owned by other users (pid 500): permission denied (need root, or CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE)"
			if os.Geteuid() == 0 {
				denied = "could not read fds of 1 protected process (pid 500) even as root: permission denied; their sockets are not attributed"
			}
			wantWarn := []string{denied, "1 error reading /proc, first: " + root + "/700/stat: field comm: invalid syntax"}
			if diff := cmp.Diff(wantWarn, tab.Warnings()); diff != "" {
				t.Errorf("Warnings (-want +got):\n%s", diff)
			}
		})
	}
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// TestScanFakeTreeNoBtimeNoPasswd: without /proc/stat or a passwd file the
// scan still attributes sockets; start times and names stay empty.
func TestScanFakeTreeNoBtimeNoPasswd(t *testing.T) {
	root := buildFakeProc(t, map[string]fakeProc{
		"1": {stat: statLine(1, "init", 0, 0, 5), status: status(0), cmdline: "init\x00",
			fds: map[string]string{"4": "socket:[9]"}},
	}, "")
	os.Remove(filepath.Join(root, "stat"))
	tab, err := Scan(context.Background(), Options{Root: root, Passwd: filepath.Join(root, "nope")})
	if err != nil {
		t.Fatal(err)
	}
	p := tab.Processes[1]
	if p == nil || !p.Start.IsZero() || p.User != "" || p.Name != "init" || len(tab.Owners[9]) != 1 {
		t.Errorf("Processes[1] = %+v, Owners = %v", p, tab.Owners)
	}
	if tab.ErrorCount != 1 || !strings.Contains(tab.Errors[0].Error(), "boot time") {
		t.Errorf("Errors = %v, want one about the boot time", tab.Errors)
	}
}

// TestScanDeniedChmod: unprivileged, a fd directory with mode 000 is
// counted as denied. Root bypasses permission bits, so root skips this
// (TestScanFakeTree covers the counting through the hook).
func TestScanDeniedChmod(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root bypasses mode 000; the hook-based TestScanFakeTree covers Denied")
	}
	root := buildFakeProc(t, map[string]fakeProc{
		"1": {stat: statLine(1, "x", 0, 0, 5), status: status(0), fds: map[string]string{"4": "socket:[9]"}},
	}, "btime 1\n")
	fdDir := filepath.Join(root, "1", "fd")
	if err := os.Chmod(fdDir, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(fdDir, 0o755) }) // so that TempDir can remove it
	tab, err := Scan(context.Background(), Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	if tab.Denied != 1 || len(tab.Owners) != 0 {
		t.Errorf("Denied = %d, Owners = %v; want 1 and none", tab.Denied, tab.Owners)
	}
}

func TestScanErrors(t *testing.T) {
	if _, err := Scan(context.Background(), Options{Root: "/nonexistent/proc"}); err == nil ||
		!strings.Contains(err.Error(), "/nonexistent/proc") {
		t.Errorf("Scan(missing root) error = %v, want one naming the root", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Scan(ctx, Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Scan(cancelled) error = %v, want context.Canceled", err)
	}
}

// socketFile returns a loopback listener and a dup of its descriptor as an
// *os.File (to hand to a child), with the socket's inode and both fd numbers.
func socketFile(t *testing.T) (f *os.File, inode uint64, fds []int32) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	tl := ln.(*net.TCPListener)
	inode = sockInode(t, tl)
	rc, err := tl.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(fd uintptr) { fds = append(fds, int32(fd)) }) //nolint:errcheck
	f, err = tl.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fds = append(fds, int32(f.Fd()))
	slices.Sort(fds)
	return f, inode, fds
}

// startChild starts cmd and kills and reaps it by PID when the test ends.
func startChild(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.Kill(cmd.Process.Pid, unix.SIGKILL)
		cmd.Wait() //nolint:errcheck // killed on purpose
	})
}

// TestScanLiveSharedSocket: a socket inherited by a child is attributed to
// both processes, and the child's details are right.
func TestScanLiveSharedSocket(t *testing.T) {
	sleep := testenv.NeedTool(t, "sleep")
	f, inode, selfFDs := socketFile(t)
	before := time.Now()
	cmd := exec.Command(sleep, "300")
	cmd.ExtraFiles = []*os.File{f} // fd 3 in the child
	startChild(t, cmd)
	child := int32(cmd.Process.Pid)

	tab, err := Scan(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	self := int32(os.Getpid())
	want := []model.Owner{{PID: self, FDs: selfFDs}, {PID: child, FDs: []int32{3}}}
	if self > child {
		want[0], want[1] = want[1], want[0]
	}
	if diff := cmp.Diff(want, tab.Owners[inode]); diff != "" {
		t.Errorf("Owners[%d] (-want +got):\n%s", inode, diff)
	}

	p := tab.Processes[child]
	if p == nil {
		t.Fatalf("child %d not in Processes", child)
	}
	exe, err := filepath.EvalSymlinks(sleep)
	if err != nil {
		t.Fatal(err)
	}
	uid := uint32(os.Getuid())
	var name string
	if u, err := user.LookupId(strconv.Itoa(int(uid))); err == nil {
		name = u.Username
	}
	wantP := &model.Process{PID: child, PPID: self, Name: "sleep", Exe: exe, Cmdline: cmd.Args, UID: uid,
		User: name, Start: p.Start, TTY: p.TTY}
	if diff := cmp.Diff(wantP, p); diff != "" {
		t.Errorf("child process (-want +got):\n%s", diff)
	}
	// btime has one-second resolution and starttime 10 ms.
	if p.Start.Before(before.Add(-2*time.Second)) || p.Start.After(after.Add(2*time.Second)) {
		t.Errorf("child start %v not within [%v, %v] ± 2s", p.Start, before, after)
	}

	sp := tab.Processes[self]
	selfExe, _ := os.Executable()
	if sp == nil || sp.Exe != selfExe || sp.PPID != int32(os.Getppid()) || !slices.Equal(sp.Cmdline, os.Args) {
		t.Errorf("test process = %+v; want exe %s, ppid %d, cmdline %q", sp, selfExe, os.Getppid(), os.Args)
	}
	if tab.Scanned == 0 || tab.ErrorCount != 0 {
		t.Errorf("Scanned = %d, Errors = %v", tab.Scanned, tab.Errors)
	}

	socks := []model.Socket{{Inode: inode}, {Inode: 0}}
	tab.Attach(socks)
	if len(socks[0].Owners) != 2 || socks[1].Owners != nil {
		t.Errorf("Attach = %+v", socks)
	}
}

// TestScanExitingProcesses: processes that exit during scans (while their
// descriptors, stat or cmdline are being read) never produce an error.
func TestScanExitingProcesses(t *testing.T) {
	trueBin := testenv.NeedTool(t, "true")
	f, _, _ := socketFile(t)
	const spawners, perSpawner = 4, 100
	deadline := time.Now().Add(10 * time.Second)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range spawners {
		wg.Go(func() {
			for i := 0; i < perSpawner && time.Now().Before(deadline); i++ {
				select {
				case <-stop:
					return
				default:
				}
				cmd := exec.Command(trueBin)
				cmd.ExtraFiles = []*os.File{f}
				cmd.Run() //nolint:errcheck // only its short life matters
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	defer func() { close(stop); <-done }()

	scans, gone := 0, 0
	for {
		select {
		case <-done:
			t.Logf("%d scans, %d processes gone mid-scan", scans, gone)
			if scans == 0 {
				t.Error("no scan ran")
			}
			return
		default:
		}
		tab, err := Scan(context.Background(), Options{AllProcesses: scans%2 == 1})
		if err != nil {
			t.Fatal(err)
		}
		if tab.ErrorCount != 0 {
			t.Fatalf("scan %d: errors %v", scans, tab.Errors)
		}
		scans++
		gone += tab.Gone
	}
}

// TestScanUnprivileged runs a real scan without privileges: directly when
// the test is unprivileged, else by re-running the test binary as nobody.
// Other users' processes (pid 1 at least) are counted as denied, once, and
// the user's own processes are still attributed.
func TestScanUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		var st unix.Stat_t
		if err := unix.Stat("/proc/1", &st); err != nil || st.Uid == uint32(os.Geteuid()) {
			t.Skip("no process of another user to be denied")
		}
		tab, err := Scan(context.Background(), Options{})
		if err != nil {
			t.Fatal(err)
		}
		if tab.Denied == 0 || len(tab.Warnings()) == 0 {
			t.Errorf("Denied = %d, Warnings = %q", tab.Denied, tab.Warnings())
		}
		return
	}
	sleep := testenv.NeedTool(t, "sleep")
	nobody, err := user.Lookup("nobody")
	testenv.Need(t, err == nil, "user nobody")
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}

	// nobody must be able to execute a copy of the test binary.
	dir := t.TempDir()
	for d := dir; d != filepath.Dir(d) && strings.HasPrefix(d, os.TempDir()+"/"); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "proc.test")
	copyFile(t, exe, bin)

	// A socket held by root (this process) and by a child running as nobody.
	f, inode, _ := socketFile(t)
	child := exec.Command(sleep, "300")
	child.ExtraFiles = []*os.File{f}
	child.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	startChild(t, child)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = append(os.Environ(), helperEnv+"=scan", "TCPSENTRY_PROC_INODES="+strconv.FormatUint(inode, 10))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scan as nobody: %v", err)
	}
	var res helperScanResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if res.Denied == 0 || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "permission denied") {
		t.Errorf("as nobody: Denied = %d, Warnings = %q", res.Denied, res.Warnings)
	}
	if len(res.Errors) != 0 {
		t.Errorf("as nobody: errors %q", res.Errors)
	}
	if got := res.Owners[inode]; !slices.Equal(got, []int32{int32(child.Process.Pid)}) {
		t.Errorf("as nobody: owners of %d = %v, want only the nobody child %d", inode, got, child.Process.Pid)
	}
	t.Logf("as nobody: %d processes read, %d denied; warning: %s", res.Scanned, res.Denied, res.Warnings[0])
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkScan times a whole attribution of the host with N listening
// sockets: some in this process, the rest in helper processes (one process
// may hold at most 20,000 descriptors here).
func BenchmarkScan(b *testing.B) {
	for _, n := range []int{2000, 50000} {
		b.Run(fmt.Sprintf("sockets=%d", n), func(b *testing.B) {
			setupSockets(b, n)
			b.ReportAllocs()
			var tab *Table
			for b.Loop() {
				var err error
				if tab, err = Scan(context.Background(), Options{}); err != nil {
					b.Fatal(err)
				}
			}
			if len(tab.Owners) < n {
				b.Fatalf("%d sockets attributed, want at least %d", len(tab.Owners), n)
			}
			b.ReportMetric(float64(len(tab.Owners)), "sockets")
		})
	}
}

// BenchmarkSSProcesses times `ss -tlnp` over the same sockets, the anchor
// Scan must beat by a wide margin.
func BenchmarkSSProcesses(b *testing.B) {
	ss, err := exec.LookPath("ss")
	if err != nil {
		b.Skip("ss not on PATH")
	}
	for _, n := range []int{2000, 50000} {
		b.Run(fmt.Sprintf("sockets=%d", n), func(b *testing.B) {
			setupSockets(b, n)
			for b.Loop() {
				if err := exec.Command(ss, "-tlnp").Run(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// setupSockets opens n listeners: up to 2,000 in this process, the rest in
// helpers of at most 12,000 each.
func setupSockets(b *testing.B, n int) {
	b.Helper()
	own := min(n, 2000)
	fds, err := openListeners(0, own)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { closeAll(fds) })
	for first := own; first < n; first += 12000 {
		startListenHelper(b, first, min(12000, n-first))
	}
}

// TestScanAllocsPerFD: the descriptor loop allocates nothing per descriptor;
// what grows with sockets is the result (a few slices and the map), so
// 1,000 more sockets cost a handful of allocations, not a thousand.
func TestScanAllocsPerFD(t *testing.T) {
	tree := func(sockets, others int) string {
		fds := map[string]string{}
		for i := range sockets {
			fds[strconv.Itoa(i)] = fmt.Sprintf("socket:[%d]", 1000+i)
		}
		for i := range others {
			fds[strconv.Itoa(sockets+i)] = "/dev/null"
		}
		return buildFakeProc(t, map[string]fakeProc{
			"1": {stat: statLine(1, "x", 0, 0, 5), status: status(0), cmdline: "x\x00", fds: fds},
		}, "btime 1\n")
	}
	allocs := func(root string) float64 {
		return testing.AllocsPerRun(3, func() {
			if _, err := Scan(context.Background(), Options{Root: root, Passwd: "/nonexistent", Workers: 1}); err != nil {
				t.Fatal(err)
			}
		})
	}
	small, manySockets, manyOthers := allocs(tree(10, 10)), allocs(tree(1010, 10)), allocs(tree(10, 1010))
	t.Logf("allocs: 10 sockets %v, 1,010 sockets %v, 1,010 other fds %v", small, manySockets, manyOthers)
	if manyOthers > small+2 {
		t.Errorf("1,000 non-socket descriptors cost %v allocations, want ~0", manyOthers-small)
	}
	if manySockets > small+30 {
		t.Errorf("1,000 more sockets cost %v allocations, want a few dozen at most", manySockets-small)
	}
}
