package proc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// userHZ is the unit of /proc/PID/stat's starttime. The kernel exports
// times to user space in USER_HZ ticks, which is 100 on every architecture
// Go runs Linux on (sysconf(_SC_CLK_TCK) reads it from the auxv as
// AT_CLKTCK, and it does not change with CONFIG_HZ), so it is a constant.
const userHZ = 100

// maxErrors bounds Table.Errors: a broken /proc would otherwise give one
// error per process, and the caller prints a summary, not a list.
const maxErrors = 20

// Options configures Scan. The zero value scans /proc as the host sees it.
type Options struct {
	// Root is the procfs mount to walk; "" means "/proc". Tests point it at
	// a fake tree of directories, files and symlinks.
	Root string
	// Passwd is the passwd(5) file that names uids; "" means "/etc/passwd".
	Passwd string
	// AllProcesses puts processes that own no socket into Table.Processes
	// too, for detectors that look at process trees. Off by default because
	// their details cost four more reads per process.
	AllProcesses bool
	// Workers is how many processes are read in parallel; 0 means GOMAXPROCS.
	Workers int
}

// Table is the result of one Scan: who holds which socket.
type Table struct {
	// Owners maps a socket inode to the processes holding it open, sorted
	// by PID, each with its descriptor numbers in ascending order. A socket
	// shared by several processes (inherited across fork, passed over a
	// unix socket) lists all of them.
	Owners map[uint64][]model.Owner
	// Processes holds every process that appears in Owners (and, with
	// Options.AllProcesses, every process whose descriptors were read).
	Processes map[int32]*model.Process
	// Scanned counts the processes whose descriptors were read.
	Scanned int
	// Denied counts processes whose descriptors could not be read for lack
	// of privilege; their sockets have no owner in Owners.
	Denied int
	// Pipes maps a pipe inode to its holders, for pipes shared between a
	// socket holder and another process (a shell relayed to the network).
	Pipes map[uint64][]model.Owner
	// DeniedPIDs names the first few of them, sorted.
	DeniedPIDs []int32
	// Gone counts processes that exited during the scan and were skipped.
	Gone int
	// Errors holds the first maxErrors unexpected failures, each naming the
	// file and field; ErrorCount counts all of them. The scan goes on past
	// them: the processes and fields that could be read are in the table.
	Errors     []error
	ErrorCount int
}

// Attach sets the Owners of every socket in socks from the table, by inode.
// The owner slices are shared with the table, not copied.
func (t *Table) Attach(socks []model.Socket) {
	for i := range socks {
		if socks[i].Inode != 0 {
			socks[i].Owners = t.Owners[socks[i].Inode]
		}
	}
}

// Warnings returns one line per kind of trouble, for model.Snapshot.Warnings,
// so that a responder sees "143 processes could not be read" once rather
// than an error per process.
func (t *Table) Warnings() []string {
	var out []string
	if t.Denied > 0 {
		slices.Sort(t.DeniedPIDs)
		pids := ""
		if t.Denied <= maxNamedDenied {
			pids = fmt.Sprintf(" (pid %s)", joinPIDs(t.DeniedPIDs))
		}
		if os.Geteuid() == 0 {
			// Root is refused only by processes a security module or
			// non-dumpable state protects: say so rather than blame privileges.
			out = append(out, fmt.Sprintf("could not read fds of %d protected %s%s even as root: permission denied; their sockets are not attributed",
				t.Denied, plural(t.Denied, "process", "processes"), pids))
		} else {
			out = append(out, fmt.Sprintf("could not read fds of %d %s owned by other users%s: permission denied "+
				"(need root, or CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE)", t.Denied, plural(t.Denied, "process", "processes"), pids))
		}
	}
	if t.ErrorCount > 0 {
		out = append(out, fmt.Sprintf("%d %s reading /proc, first: %v",
			t.ErrorCount, plural(t.ErrorCount, "error", "errors"), t.Errors[0]))
	}
	return out
}

// maxNamedDenied is how many refused pids a warning names.
const maxNamedDenied = 5

func joinPIDs(pids []int32) string {
	parts := make([]string, len(pids))
	for i, p := range pids {
		parts[i] = strconv.Itoa(int(p))
	}
	return strings.Join(parts, ", ")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// Scan walks the process directories under opts.Root and returns which
// process holds which socket, with the details of those processes.
//
// Only thread-group leaders (/proc/PID) are read, not /proc/PID/task: the
// threads of a process share its descriptor table unless one unshared it
// (rare, and not worth a readdir per thread). Processes that exit during
// the scan are skipped silently, processes that may not be read are
// counted in Table.Denied; Scan itself fails only when Root cannot be
// listed or ctx is done.
func Scan(ctx context.Context, opts Options) (*Table, error) {
	return scan(ctx, opts, hooks{})
}

// hooks lets tests inject failures that a real /proc cannot be made to
// produce on demand (EACCES when the test runs as root).
type hooks struct {
	// openFD, when set and returning an error, replaces opening /proc/PID/fd.
	openFD func(pid int32) error
}

func scan(ctx context.Context, opts Options, h hooks) (*Table, error) {
	root := cmp.Or(opts.Root, "/proc")
	rootfd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", root, err)
	}
	defer unix.Close(rootfd)
	pids, err := listPIDs(rootfd)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", root, err)
	}

	t := &Table{}
	var errs []error
	btime, err := readBtime(root + "/stat")
	if err != nil {
		errs = append(errs, err) // start times stay zero; everything else still works
	}
	passwd := cmp.Or(opts.Passwd, "/etc/passwd")
	users, uerrs := readUsers(passwd)
	for _, e := range uerrs {
		errs = append(errs, fmt.Errorf("%s: %w", passwd, e))
	}

	n := opts.Workers
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	n = max(1, min(n, len(pids)))
	ws := make([]*worker, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for i := range ws {
		w := &worker{
			root: root, rootfd: rootfd, btime: btime, all: opts.AllProcesses, hooks: h,
			dents: make([]byte, 32<<10), link: make([]byte, 64),
			path: make([]byte, unix.PathMax+1), file: make([]byte, 0, 4096),
		}
		ws[i] = w
		wg.Go(func() { w.run(ctx, pids, &next) })
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("scanning %s: %w", root, err)
	}

	total, nprocs := 0, 0
	for _, w := range ws {
		total += len(w.refs)
		nprocs += len(w.procs)
		t.Scanned += w.scanned
		t.Denied += w.denied
		t.DeniedPIDs = append(t.DeniedPIDs, w.deniedPIDs...)
		t.Gone += w.gone
		errs = append(errs, w.errs...)
		t.ErrorCount += w.nerr - len(w.errs)
	}
	t.ErrorCount += len(errs)
	t.Errors = errs[:min(len(errs), maxErrors)]

	refs := make([]Ref, 0, total)
	var pipes []Ref
	t.Processes = make(map[int32]*model.Process, nprocs)
	for _, w := range ws {
		refs = append(refs, w.refs...)
		pipes = append(pipes, w.pipes...)
		for _, p := range w.procs {
			p.User = users[p.UID]
			t.Processes[p.PID] = p
		}
	}
	t.Owners = GroupOwners(refs)
	t.Pipes = relayPipes(GroupOwners(pipes), t.Processes)
	// The other ends of relay pipes on stdin, stdout or stderr are the
	// shells and interpreters a socket holder feeds: read their details too.
	for _, owners := range t.Pipes {
		for _, o := range owners {
			if _, ok := t.Processes[o.PID]; ok || o.FDs[0] > 2 {
				continue
			}
			if p := ws[0].detailsOf(o.PID); p != nil {
				p.User = users[p.UID]
				t.Processes[o.PID] = p
			}
		}
	}
	return t, nil
}

// relayPipes keeps the pipes shared between a process that holds a socket
// and another process: `ncat -e /bin/sh` and its kin give the shell pipes
// to a socket holder rather than the socket itself.
func relayPipes(all map[uint64][]model.Owner, socketHolders map[int32]*model.Process) map[uint64][]model.Owner {
	out := map[uint64][]model.Owner{}
	for inode, owners := range all {
		if len(owners) < 2 {
			continue
		}
		for _, o := range owners {
			if _, ok := socketHolders[o.PID]; ok {
				out[inode] = owners
				break
			}
		}
	}
	return out
}

// detailsOf reads one process's details outside the scan loop; nil if it
// exited or could not be read.
func (w *worker) detailsOf(pid int32) *model.Process {
	w.name = append(strconv.AppendInt(w.name[:0], int64(pid), 10), 0)
	dirfd, err := openat(w.rootfd, &w.name[0], unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil
	}
	defer unix.Close(dirfd)
	return w.details(pid, dirfd)
}

// Ref is one descriptor that refers to a socket (or a pipe).
type Ref struct {
	Inode uint64
	PID   int32
	FD    int32
}

// GroupOwners turns descriptor references into inode → owners. All owners
// and descriptor lists share two backing arrays (three allocations in all,
// plus the map), with capacities clipped so that a caller's append cannot
// overwrite a neighbour.
func GroupOwners(refs []Ref) map[uint64][]model.Owner {
	slices.SortFunc(refs, func(a, b Ref) int {
		switch {
		case a.Inode != b.Inode:
			return cmp.Compare(a.Inode, b.Inode)
		case a.PID != b.PID:
			return cmp.Compare(a.PID, b.PID)
		}
		return cmp.Compare(a.FD, b.FD)
	})
	inodes, owners := 0, 0
	for i := range refs {
		if i == 0 || refs[i].Inode != refs[i-1].Inode {
			inodes++
			owners++
		} else if refs[i].PID != refs[i-1].PID {
			owners++
		}
	}
	m := make(map[uint64][]model.Owner, inodes)
	all := make([]model.Owner, 0, owners)
	fds := make([]int32, len(refs))
	for i := 0; i < len(refs); {
		inode, first := refs[i].Inode, len(all)
		for i < len(refs) && refs[i].Inode == inode {
			pid, start := refs[i].PID, i
			for i < len(refs) && refs[i].Inode == inode && refs[i].PID == pid {
				fds[i] = refs[i].FD
				i++
			}
			all = append(all, model.Owner{PID: pid, FDs: fds[start:i:i]})
		}
		m[inode] = all[first:len(all):len(all)]
	}
	return m
}

// worker reads processes handed out by an atomic counter, so that one
// process with 20,000 descriptors does not hold up a fixed share of pids.
// Its buffers are reused for every process it reads.
type worker struct {
	root   string
	rootfd int
	btime  int64 // boot time, seconds since the epoch; 0 when unknown
	all    bool
	hooks  hooks

	refs                  []Ref
	pipes                 []Ref // pipe descriptors, to follow stdio relayed to a socket holder
	procs                 []*model.Process
	scanned, denied, gone int
	deniedPIDs            []int32 // the first few, to name in the warning
	errs                  []error // at most maxErrors
	nerr                  int

	dents []byte // getdents64 buffer
	link  []byte // fd link target; long enough for any "socket:[N]"
	path  []byte // exe link target, PATH_MAX
	file  []byte // contents of stat, status, cmdline
	name  []byte // NUL-terminated pid
}

func (w *worker) run(ctx context.Context, pids []int32, next *atomic.Int64) {
	for ctx.Err() == nil {
		i := next.Add(1) - 1
		if i >= int64(len(pids)) {
			return
		}
		w.process(pids[i])
	}
}

func (w *worker) errorf(pid int32, file string, err error) {
	w.nerr++
	if len(w.errs) < maxErrors {
		w.errs = append(w.errs, fmt.Errorf("%s/%d/%s: %w", w.root, pid, file, err))
	}
}

// process reads one process's descriptors and, if it holds a socket (or
// every process is wanted), its details.
func (w *worker) process(pid int32) {
	w.name = append(strconv.AppendInt(w.name[:0], int64(pid), 10), 0)
	dirfd, err := openat(w.rootfd, &w.name[0], unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		w.classify(pid, "", err)
		return
	}
	defer unix.Close(dirfd)
	mark, pmark := len(w.refs), len(w.pipes)
	if err := w.readFDs(pid, dirfd); err != nil {
		w.refs, w.pipes = w.refs[:mark], w.pipes[:pmark]
		if denied(err) && w.dead(dirfd) {
			err = unix.ESRCH // a zombie's fd directory is closed even to its owner
		}
		w.classify(pid, "fd", err)
		return
	}
	w.scanned++
	if len(w.refs) == mark && !w.all {
		return
	}
	p := w.details(pid, dirfd)
	if p == nil { // exited meanwhile: its descriptors are closed now
		w.refs = w.refs[:mark]
		w.gone++
		return
	}
	w.procs = append(w.procs, p)
}

// classify counts a failure to read a process as gone, denied or an error.
func (w *worker) classify(pid int32, file string, err error) {
	switch {
	case gone(err):
		w.gone++
	case denied(err):
		w.denied++
		if len(w.deniedPIDs) < maxNamedDenied {
			w.deniedPIDs = append(w.deniedPIDs, pid)
		}
	default:
		w.errorf(pid, file, err)
	}
}

// dead reports whether the process is a zombie (or dead): it holds no
// descriptors, and unprivileged scans should not count it as denied.
func (w *worker) dead(dirfd int) bool {
	b, err := readFileAt(dirfd, cname(nameStat), &w.file)
	if err != nil {
		return gone(err)
	}
	st, err := parseStat(b)
	return err == nil && (st.State == 'Z' || st.State == 'X')
}

// readFDs appends a Ref for every descriptor of the process that refers
// to a socket. This is the hot loop: no allocation per descriptor.
func (w *worker) readFDs(pid int32, dirfd int) error {
	if w.hooks.openFD != nil {
		if err := w.hooks.openFD(pid); err != nil {
			return err
		}
	}
	fdfd, err := openat(dirfd, cname(nameFD), unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer unix.Close(fdfd)
	for {
		n, err := unix.Getdents(fdfd, w.dents)
		if err != nil {
			return err
		}
		if n <= 0 {
			return nil
		}
		for off := 0; ; {
			d, next, ok := nextDirent(w.dents[:n], off)
			if !ok {
				break
			}
			off = next
			fd, err := parseUint(d.name, 31) // also skips "." and ".."
			if err != nil {
				continue
			}
			l, err := readlinkat(fdfd, d.cname, w.link)
			switch {
			case err == nil:
			case gone(err) || errors.Is(err, unix.EINVAL):
				continue // closed since the listing (or, in a fake tree, not a link)
			default:
				return err
			}
			if l >= len(w.link) {
				continue // truncated: longer than any socket link
			}
			if inode, ok := parseSocketLink(w.link[:l]); ok {
				w.refs = append(w.refs, Ref{Inode: inode, PID: pid, FD: int32(fd)})
			} else if inode, ok := parsePipeLink(w.link[:l]); ok {
				w.pipes = append(w.pipes, Ref{Inode: inode, PID: pid, FD: int32(fd)})
			}
		}
	}
}

// details reads stat, status, cmdline and exe. It returns nil when the
// process turned out to have exited; other failures are recorded and the
// fields that could be read are kept.
func (w *worker) details(pid int32, dirfd int) *model.Process {
	p := &model.Process{PID: pid}

	b, err := readFileAt(dirfd, cname(nameStat), &w.file)
	if err == nil {
		var st statInfo
		st, err = parseStat(b)
		p.Name, p.PPID, p.TTY = st.Comm, st.PPID, st.TTY
		if err == nil && w.btime != 0 {
			p.Start = time.Unix(w.btime, 0).Add(time.Duration(st.StartTime) * (time.Second / userHZ))
		}
	}
	if err != nil {
		if gone(err) {
			return nil
		}
		w.errorf(pid, "stat", err)
	}

	b, err = readFileAt(dirfd, cname(nameStatus), &w.file)
	if err == nil {
		p.UID, err = parseStatusUID(b)
	}
	if err != nil {
		if gone(err) {
			return nil
		}
		w.errorf(pid, "status", err)
	}

	b, err = readFileAt(dirfd, cname(nameCmdline), &w.file)
	if err != nil {
		if gone(err) {
			return nil
		}
		w.errorf(pid, "cmdline", err)
	}
	p.Cmdline = parseCmdline(b)

	// exe fails with ENOENT for kernel threads and EACCES for other users'
	// processes without CAP_SYS_PTRACE: both mean "unknown", not an error.
	if l, err := readlinkat(dirfd, cname(nameExe), w.path); err == nil && l > 0 {
		p.Exe = string(w.path[:min(l, len(w.path))])
	}
	return p
}

// listPIDs returns the numeric entries of the procfs root: the thread-group
// leaders (threads are not listed there, though /proc/TID resolves).
func listPIDs(rootfd int) ([]int32, error) {
	buf := make([]byte, 32<<10)
	var pids []int32
	for {
		n, err := unix.Getdents(rootfd, buf)
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return pids, nil
		}
		for off := 0; ; {
			d, next, ok := nextDirent(buf[:n], off)
			if !ok {
				break
			}
			off = next
			if pid, err := parseUint(d.name, 31); err == nil && pid > 0 {
				pids = append(pids, int32(pid))
			}
		}
	}
}

// readBtime reads the boot time from /proc/stat.
func readBtime(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("reading boot time: %w", err)
	}
	v, err := parseBtime(b)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// readUsers parses the passwd file once per scan. A missing file (minimal
// containers) just leaves user names empty.
func readUsers(path string) (map[uint32]string, []error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, []error{err}
	}
	defer f.Close()
	return parsePasswd(f)
}
