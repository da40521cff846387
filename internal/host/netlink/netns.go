package netlink

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns add NAME` bind-mounts a namespace.
const netnsDir = "/run/netns"

// Namespace is a network namespace to enumerate.
type Namespace struct {
	// Name is the `ip netns` name, or "pid:N" for a namespace found only
	// through process N (the lowest PID in it, usually a container's init).
	// Empty for the caller's own namespace.
	Name string
	// Path is the file that InNetns enters: /run/netns/NAME, /proc/PID/ns/net,
	// or /proc/self/ns/net for the caller's own.
	Path string
	// Inode identifies the namespace: two paths with the same inode (on
	// nsfs) are one namespace.
	Inode uint64
	// Self marks the caller's own namespace (that of the thread calling
	// Discover), which needs no InNetns.
	Self bool
}

// NetnsPath turns a name (as `ip netns` uses) into /run/netns/NAME; a
// value containing a slash is already a path and is returned as is.
func NetnsPath(nameOrPath string) (string, error) {
	switch {
	case strings.ContainsRune(nameOrPath, '/'):
		return nameOrPath, nil
	case nameOrPath == "", nameOrPath == ".", nameOrPath == "..":
		return "", fmt.Errorf("netns name %q: not a namespace name", nameOrPath)
	}
	return filepath.Join(netnsDir, nameOrPath), nil
}

// NetnsInode returns the inode that identifies the network namespace at
// path, following /proc/PID/ns/net links, and checks that path is one.
func NetnsInode(path string) (uint64, error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return 0, &os.PathError{Op: "statfs", Path: path, Err: err}
	}
	if fs.Type != unix.NSFS_MAGIC {
		// e.g. a /run/netns entry left over from a crash, no longer mounted.
		return 0, fmt.Errorf("%s: not a namespace file (filesystem type %#x)", path, fs.Type)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return st.Ino, nil
}

// ListNamed lists the names under /run/netns (`ip netns list`), sorted.
// No directory means no named namespaces, not an error.
func ListNamed() ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, nil
}

// Discover lists each distinct network namespace once: the caller's own
// first, then named ones (ip netns), then those in use only by processes,
// found through /proc/*/ns/net. A name for the caller's own namespace, or
// two names for one namespace, yield one entry (the first). Processes that
// exit or cannot be inspected during the scan are skipped; a process path
// may go stale before it is entered, which InNetns then reports.
func Discover() ([]Namespace, error) {
	self, err := NetnsInode("/proc/thread-self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("identifying own network namespace: %w", err)
	}
	out := []Namespace{{Path: "/proc/self/ns/net", Inode: self, Self: true}}
	seen := map[uint64]bool{self: true}

	names, err := ListNamed()
	if err != nil {
		return nil, fmt.Errorf("listing named network namespaces: %w", err)
	}
	for _, n := range names {
		p := filepath.Join(netnsDir, n)
		ino, err := NetnsInode(p)
		if err != nil || seen[ino] {
			continue
		}
		seen[ino] = true
		out = append(out, Namespace{Name: n, Path: p, Inode: ino})
	}

	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	pids := make([]int, 0, len(ents))
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids) // the lowest PID represents a namespace, whatever ReadDir's order
	for _, pid := range pids {
		p := "/proc/" + strconv.Itoa(pid) + "/ns/net"
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil || seen[st.Ino] {
			continue
		}
		seen[st.Ino] = true
		out = append(out, Namespace{Name: "pid:" + strconv.Itoa(pid), Path: p, Inode: st.Ino})
	}
	return out, nil
}

// InNetns runs fn on an OS thread that is inside the network namespace
// nameOrPath (a name under /run/netns or a path, see NetnsPath), and
// returns fn's error. Sockets that fn opens stay in that namespace for
// their life (a Dumper made there may dump from anywhere), and /proc/net,
// /proc/thread-self/net and /proc/sys/net opened in fn show it.
//
// fn runs on a new goroutine locked to its thread, so the caller's thread
// never changes namespace. Goroutines that fn starts run on other threads,
// in the original namespace. When the thread cannot return to its original
// namespace, it is left locked so the runtime discards it instead of
// reusing it for other goroutines; so is it when fn calls runtime.Goexit,
// which InNetns reports as an error. (The runtime cannot end the process's
// main thread and parks it for good instead: /proc/self, which shows the
// main thread, then shows that namespace; /proc/thread-self is reliable.)
// A panic in fn is re-raised in the caller.
func InNetns(nameOrPath string, fn func() error) error {
	path, err := NetnsPath(nameOrPath)
	if err != nil {
		return err
	}
	type result struct {
		err      error
		panicked bool
		panicVal any
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		var (
			res                result
			returned, restored bool
		)
		defer func() {
			if restored {
				runtime.UnlockOSThread()
			}
			if !returned && res.err == nil {
				res.err = fmt.Errorf("netns %s: fn called runtime.Goexit", path)
			}
			done <- res
		}()
		restored, res.err = runIn(path, func() (err error) {
			defer func() {
				if p := recover(); p != nil {
					res.panicked, res.panicVal = true, p
				}
			}()
			err = fn()
			return err
		})
		returned = true
	}()
	res := <-done
	if res.panicked {
		panic(res.panicVal)
	}
	return res.err
}

// runIn does InNetns's work on the locked thread. restored is false only
// when the thread is left in the wrong namespace.
func runIn(path string, fn func() error) (restored bool, err error) {
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return true, fmt.Errorf("netns: saving the current namespace: %w", &os.PathError{Op: "open", Path: "/proc/thread-self/ns/net", Err: err})
	}
	defer unix.Close(orig)
	target, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return true, fmt.Errorf("netns: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	err = unix.Setns(target, unix.CLONE_NEWNET)
	unix.Close(target)
	if err != nil {
		return true, fmt.Errorf("netns: entering %s: %w", path, os.NewSyscallError("setns", err))
	}
	ferr := fn()
	if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
		return false, errors.Join(ferr, fmt.Errorf("netns: returning from %s (thread discarded): %w", path, os.NewSyscallError("setns", err)))
	}
	return true, ferr
}
