package proc

import (
	"cmp"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// Details reads the details (name, exe, cmdline, user, start) of the given
// processes without reading their descriptors: for callers that learned
// which process holds which socket some other way (a BPF iterator).
// Processes that exited are left out; a process whose stat cannot be read
// is left out with its error among the returned ones.
func Details(opts Options, pids []int32) (map[int32]*model.Process, []error) {
	root := cmp.Or(opts.Root, "/proc")
	rootfd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, []error{fmt.Errorf("opening %s: %w", root, err)}
	}
	defer unix.Close(rootfd)
	var errs []error
	btime, err := readBtime(root + "/stat")
	if err != nil {
		errs = append(errs, err)
	}
	passwd := cmp.Or(opts.Passwd, "/etc/passwd")
	users, uerrs := readUsers(passwd)
	for _, e := range uerrs {
		errs = append(errs, fmt.Errorf("%s: %w", passwd, e))
	}
	w := &worker{root: root, rootfd: rootfd, btime: btime,
		path: make([]byte, unix.PathMax+1), file: make([]byte, 0, 4096)}
	out := make(map[int32]*model.Process, len(pids))
	for _, pid := range pids {
		if _, done := out[pid]; done {
			continue
		}
		if p := w.detailsOf(pid); p != nil {
			p.User = users[p.UID]
			out[pid] = p
		}
	}
	return out, append(errs, w.errs...)
}
