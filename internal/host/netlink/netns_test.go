package netlink

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpsentry/tcpsentry/internal/model"
	"github.com/tcpsentry/tcpsentry/internal/testenv"
)

func TestNetnsPath(t *testing.T) {
	for _, c := range []struct{ in, want, err string }{
		{in: "blue", want: "/run/netns/blue"},
		{in: "/proc/1/ns/net", want: "/proc/1/ns/net"},
		{in: "./x", want: "./x"},
		{in: "", err: "not a namespace name"},
		{in: "..", err: "not a namespace name"},
	} {
		got, err := NetnsPath(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("NetnsPath(%q) error %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("NetnsPath(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func TestInNetns(t *testing.T) {
	ns := newNetns(t)
	host := mustInode(t, "/proc/self/ns/net")
	target := mustInode(t, "/run/netns/"+ns)
	if host == target {
		t.Fatal("a new namespace has the host's inode")
	}

	var (
		inside uint64
		lnIno  uint64
		inSock []model.Socket
		d      *Dumper
	)
	var ln net.Listener
	err := InNetns(ns, func() error {
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			return err
		}
		inside = st.Ino
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		ln = l
		if inSock, err = Sockets(context.Background(), DumpOptions{}); err != nil {
			return err
		}
		d, err = NewDumper()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	defer d.Close()
	if inside != target {
		t.Errorf("fn ran in netns inode %d, want %d", inside, target)
	}
	lnIno = socketInode(t, ln.(*net.TCPListener))
	hasInode := func(socks []model.Socket) bool {
		return slices.ContainsFunc(socks, func(s model.Socket) bool { return s.Inode == lnIno })
	}
	if !hasInode(inSock) {
		t.Errorf("listener (inode %d) missing from the dump inside its namespace", lnIno)
	}
	hostSock, err := Sockets(context.Background(), DumpOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if hasInode(hostSock) {
		t.Errorf("the namespace's listener shows in the host dump")
	}
	// A Dumper opened inside keeps its namespace when used outside.
	later, err := d.Sockets(context.Background(), DumpOptions{Protos: []model.Proto{model.ProtoTCP}})
	if err != nil {
		t.Fatal(err)
	}
	if !hasInode(later) || len(later) != 1 {
		t.Errorf("Dumper opened in the namespace, used outside: %d sockets, listener present %v; want just it", len(later), hasInode(later))
	}

	// Errors from fn come back as they are; a missing namespace is named.
	sentinel := errors.New("sentinel")
	if err := InNetns(ns, func() error { return sentinel }); err != sentinel {
		t.Errorf("fn's error came back as %v", err)
	}
	missing := "tsnl-missing-" + strconv.Itoa(os.Getpid())
	err = InNetns(missing, func() error { t.Error("fn ran for a missing namespace"); return nil })
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "/run/netns/"+missing) {
		t.Errorf("missing namespace: error %v", err)
	}
	if err := InNetns("/proc/self/status", func() error { return nil }); err == nil || !strings.Contains(err.Error(), "setns") {
		t.Errorf("entering a file that is no namespace: error %v", err)
	}

	// A panic in fn reaches the caller, and the thread still goes home.
	func() {
		defer func() {
			if p := recover(); p != "boom" {
				t.Errorf("recovered %v, want boom", p)
			}
		}()
		InNetns(ns, func() error { panic("boom") })
		t.Error("InNetns returned after fn panicked")
	}()
	// runtime.Goexit (t.FailNow in fn) leaves fn without returning. The
	// thread is then given up, and when it is the main thread the runtime
	// parks it for good, still in the namespace: /proc/self would show that
	// namespace for the rest of this process, so try it in a child.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), goexitEnv+"="+ns)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "fn called runtime.Goexit") {
		t.Errorf("fn that called runtime.Goexit: %v, %s", err, out)
	}

	// Many entries and exits leave no thread of this process in the test
	// namespace: each returned or was discarded.
	for range 50 {
		if err := InNetns(ns, func() error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if threads := threadNetns(t); len(threads[target]) != 0 {
		t.Errorf("threads %v still in the test namespace", threads[target])
	}
}

// A namespace's /proc/sys shows through InNetns: the timestamp sysctl
// written inside does not change the host's.
func TestEnableTimestampsNetns(t *testing.T) {
	ns := newNetns(t)
	host, err := os.ReadFile(timestampSysctl)
	if err != nil {
		t.Fatal(err)
	}
	var before []byte
	var changed bool
	if err := InNetns(ns, func() (err error) {
		if before, err = os.ReadFile(timestampSysctl); err != nil {
			return err
		}
		changed, err = EnableTimestamps()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(before)) != "0" || !changed {
		t.Errorf("fresh namespace: sysctl was %q, changed %v; want 0 and true", before, changed)
	}
	if after, _ := os.ReadFile(timestampSysctl); string(after) != string(host) {
		t.Errorf("host sysctl went from %q to %q", host, after)
	}
}

// startIn runs a long sleep (optionally through a wrapper such as
// unshare -n or ip netns exec) and kills it, by PID, when the test ends.
func startIn(t *testing.T, args ...string) int {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// The wrapper execs sleep in the same PID once its namespace is set:
	// wait (bounded) until the PID's namespace differs from ours.
	self := mustInode(t, "/proc/self/ns/net")
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cmd.Process.Pid))
		if ino, err := NetnsInode(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)); err == nil && ino != self && strings.TrimSpace(string(comm)) == "sleep" {
			return cmd.Process.Pid
		}
	}
	t.Fatalf("%v did not enter another namespace", args)
	return 0
}

func TestDiscover(t *testing.T) {
	ns := newNetns(t)
	testenv.NeedTool(t, "unshare")
	named := mustInode(t, "/run/netns/"+ns)
	inNamed := startIn(t, "ip", "netns", "exec", ns, "sleep", "300")
	anon := startIn(t, "unshare", "--net", "sleep", "300")
	anonIno := mustInode(t, fmt.Sprintf("/proc/%d/ns/net", anon))
	// A second name for our own namespace must not make it two entries.
	alias := fmt.Sprintf("tsnl-self-%d-%s", os.Getpid(), strings.ToLower(rand.Text()[:6]))
	run(t, "ip", "netns", "attach", alias, strconv.Itoa(os.Getpid()))
	t.Cleanup(func() { exec.Command("ip", "netns", "del", alias).Run() })

	names, err := ListNamed()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(names, ns) || !slices.Contains(names, alias) || !slices.IsSorted(names) {
		t.Errorf("ListNamed = %v, want %s and %s, sorted", names, ns, alias)
	}

	nss, err := Discover()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	byName := map[string]Namespace{}
	for i, n := range nss {
		if seen[n.Inode] {
			t.Errorf("namespace inode %d listed twice", n.Inode)
		}
		seen[n.Inode] = true
		byName[n.Name] = n
		if n.Self != (i == 0) {
			t.Errorf("entry %d %+v: Self %v, want only the first", i, n, n.Self)
		}
		if ino := mustInode(t, n.Path); ino != n.Inode {
			t.Errorf("%+v: path has inode %d", n, ino)
		}
	}
	if nss[0].Inode != mustInode(t, "/proc/self/ns/net") {
		t.Errorf("first entry %+v is not our namespace", nss[0])
	}
	if n, ok := byName[ns]; !ok || n.Inode != named || n.Path != "/run/netns/"+ns {
		t.Errorf("named namespace %s: %+v, %v", ns, n, ok)
	}
	if _, ok := byName["pid:"+strconv.Itoa(inNamed)]; ok {
		t.Errorf("the process in %s was listed apart from its name", ns)
	}
	if _, ok := byName[alias]; ok {
		t.Errorf("the alias of our own namespace was listed apart from it")
	}
	// The anonymous namespace is represented by its lowest PID, ours.
	if n, ok := byName["pid:"+strconv.Itoa(anon)]; !ok || n.Inode != anonIno || n.Path != fmt.Sprintf("/proc/%d/ns/net", anon) {
		t.Errorf("process-only namespace of PID %d: %+v, %v; all: %+v", anon, n, ok, nss)
	}
}

// goexitEnv makes the test binary call InNetns(ns, fn) with an fn that
// calls runtime.Goexit, and print the error.
const goexitEnv = "TCPSENTRY_NETLINK_TEST_GOEXIT"

func goexitInNetns(ns string) int {
	err := InNetns(ns, func() error { runtime.Goexit(); return nil })
	fmt.Println(err)
	if err == nil {
		return 1
	}
	return 0
}
