// Package host takes a Snapshot of a live Linux host: sockets from netlink
// SOCK_DIAG (or /proc/net when netlink is refused), their owning processes
// from /proc, and connection start times from conntrack, for one or more
// network namespaces.
package host

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/host/bpfiter"
	"github.com/tcpsentry/tcpsentry/internal/host/netlink"
	"github.com/tcpsentry/tcpsentry/internal/host/proc"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// Options says what to collect.
type Options struct {
	// Netns lists namespaces by name (ip netns) or path; empty means the
	// caller's own namespace.
	Netns []string
	// AllNetns collects every namespace: named ones and those of processes.
	AllNetns bool
	// Processes attributes sockets to processes.
	Processes bool
	// Conntrack reads connection start times.
	Conntrack bool
	// EnableTimestamps turns on net.netfilter.nf_conntrack_timestamp where
	// it is off (root only), and says so in the snapshot's warnings.
	EnableTimestamps bool
	// Pipes follows pipes between socket holders and other processes (how a
	// shell behind `ncat -e` reaches the network). It needs the /proc walk;
	// without it, root in the initial PID namespace uses a BPF iterator,
	// which finds socket owners several times faster.
	Pipes bool
	// ProcRoot and Passwd point process attribution at another tree (tests).
	ProcRoot, Passwd string
	// NoTCPInfo leaves out TCP info (rtt, retransmits, bytes) when nothing
	// will show it: the kernel fills it per socket, a fifth of a dump.
	NoTCPInfo bool
}

// initPIDNamespace is the inode of the initial PID namespace
// (PROC_PID_INIT_INO), whose pid numbers BPF iterators report.
const initPIDNamespace = "pid:[4026531836]"

func inInitPIDNamespace() bool {
	l, err := os.Readlink("/proc/self/ns/pid")
	return err == nil && l == initPIDNamespace
}

// groupFDs turns BPF iterator records into socket inode → owners.
func groupFDs(fds []bpfiter.FD) map[uint64][]model.Owner {
	refs := make([]proc.Ref, len(fds))
	for i, f := range fds {
		refs[i] = proc.Ref{Inode: f.Inode, PID: f.TGID, FD: f.FD}
	}
	return proc.GroupOwners(refs)
}

// attachOwners sets socket owners found by the BPF iterator and reads the
// details of the owning processes from /proc.
func attachOwners(snap *model.Snapshot, byInode map[uint64][]model.Owner, popts proc.Options) []string {
	pids := map[int32]bool{}
	for i := range snap.Sockets {
		s := &snap.Sockets[i]
		if s.Inode == 0 {
			continue
		}
		s.Owners = byInode[s.Inode]
		for _, o := range s.Owners {
			pids[o.PID] = true
		}
	}
	list := make([]int32, 0, len(pids))
	for pid := range pids {
		list = append(list, pid)
	}
	slices.Sort(list)
	procs, errs := proc.Details(popts, list)
	snap.Processes = procs
	if len(errs) > 0 {
		return []string{fmt.Sprintf("%d errors reading process details, first: %v", len(errs), errs[0])}
	}
	return nil
}

// target is one namespace to enumerate.
type target struct {
	label string // shown on sockets; "" for the caller's own namespace
	path  string // ns file to enter; "" to stay
}

// nsResult is what one namespace yielded.
type nsResult struct {
	socks    []model.Socket
	ages     *netlink.AgeIndex
	notes    []string
	fallback error // why sock_diag was refused, when /proc/net was used
	ctErr    error // why conntrack could not be read
}

// Collect takes one snapshot. Failures to read parts of the host (other
// users' processes, conntrack, a refused netlink family) become warnings;
// Collect fails only when no socket table at all could be read.
func Collect(ctx context.Context, opts Options) (*model.Snapshot, error) {
	snap := &model.Snapshot{Time: time.Now(), Processes: map[int32]*model.Process{}}
	snap.Host, _ = os.Hostname()
	targets, err := resolveTargets(opts)
	if err != nil {
		return nil, err
	}

	// Process attribution reads /proc while netlink dumps run: the two do
	// not depend on each other until the end.
	var (
		wg        sync.WaitGroup
		table     *proc.Table
		procErr   error
		bpfOwners map[uint64][]model.Owner
	)
	if opts.Processes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !opts.Pipes && opts.ProcRoot == "" && os.Geteuid() == 0 && inInitPIDNamespace() {
				fds, err := bpfiter.SocketFDs(ctx)
				if err == nil {
					// Grouped here, while the netlink dump still runs.
					bpfOwners = groupFDs(fds)
					return
				}
				// Fall back quietly: the /proc walk gives the same answer, slower.
			}
			table, procErr = proc.Scan(ctx, proc.Options{Root: opts.ProcRoot, Passwd: opts.Passwd})
		}()
	}

	results := make([]nsResult, len(targets))
	var fatal []error
	for i, t := range targets {
		r, err := collectNetns(ctx, t, opts)
		if err != nil {
			fatal = append(fatal, err)
			continue
		}
		results[i] = r
	}
	wg.Wait()
	if len(fatal) == len(targets) {
		return nil, errors.Join(fatal...)
	}

	total := 0
	for _, r := range results {
		total += len(r.socks)
	}
	// One namespace (the common case) hands its slice over; copying 100k
	// sockets costs more than the rest of the assembly.
	if len(results) > 1 {
		snap.Sockets = make([]model.Socket, 0, total)
	}
	warnings := newWarnings()
	for _, err := range fatal {
		warnings.add(err.Error())
	}
	for i, r := range results {
		t := targets[i]
		for _, n := range r.notes {
			warnings.add(n)
		}
		if r.fallback != nil {
			warnings.add(fmt.Sprintf("netlink sock_diag unavailable (%v): read /proc/net instead, without TCP info", r.fallback))
		}
		if r.ctErr != nil {
			warnings.add(fmt.Sprintf("connection ages unknown: %v", r.ctErr))
		}
		for j := range r.socks {
			s := &r.socks[j]
			s.Netns = t.label
			if r.ages != nil && s.Remote.Port() != 0 {
				if start, ok := r.ages.Start(s.Proto, s.Local, s.Remote); ok {
					s.ConnStart = start
				}
			}
		}
		if len(results) == 1 {
			snap.Sockets = r.socks
		} else {
			snap.Sockets = append(snap.Sockets, r.socks...)
		}
	}

	if opts.Processes {
		switch {
		case bpfOwners != nil:
			for _, w := range attachOwners(snap, bpfOwners, proc.Options{Passwd: opts.Passwd}) {
				warnings.add(w)
			}
		case procErr != nil:
			warnings.add(fmt.Sprintf("process attribution failed: %v", procErr))
		case table != nil:
			table.Attach(snap.Sockets)
			snap.Processes = table.Processes
			snap.Pipes = table.Pipes
			for _, w := range table.Warnings() {
				warnings.add(w)
			}
		}
	}
	snap.Warnings = warnings.lines()
	if uid := os.Geteuid(); uid != 0 && len(snap.Warnings) > 1 {
		// Unprivileged, the gaps share one cause: say it once, on one line.
		snap.Warnings = []string{fmt.Sprintf("running as uid %d, not root: %s", uid, strings.Join(snap.Warnings, "; "))}
	}
	return snap, nil
}

// collectNetns enumerates sockets and conntrack in one namespace. The
// netlink sockets are opened inside it (they stay bound to it), and the two
// dumps then run side by side.
func collectNetns(ctx context.Context, t target, opts Options) (nsResult, error) {
	var (
		r          nsResult
		sockD, ctD *netlink.Dumper
		openErr    error
	)
	setup := func() error {
		sockD, openErr = netlink.NewDumper()
		if !opts.Conntrack {
			return nil
		}
		if opts.EnableTimestamps && os.Geteuid() == 0 {
			changed, err := netlink.EnableTimestamps()
			switch {
			case err != nil:
				r.notes = append(r.notes, fmt.Sprintf("could not enable net.netfilter.nf_conntrack_timestamp%s: %v", where(t), err))
			case changed:
				r.notes = append(r.notes, fmt.Sprintf("enabled net.netfilter.nf_conntrack_timestamp%s: connections opened from now on get a true age", where(t)))
			}
		}
		if netlink.ConntrackEmpty() {
			// Nothing to read, and a dump would walk the whole host's
			// table for it: every socket's age is simply unknown.
			return nil
		}
		var err error
		if ctD, err = netlink.NewDumper(); err != nil {
			r.ctErr = err
		}
		return nil
	}
	if err := inNetns(t, setup); err != nil {
		return r, err
	}
	defer func() {
		for _, d := range []*netlink.Dumper{sockD, ctD} {
			if d != nil {
				d.Close()
			}
		}
	}()

	var (
		wg    sync.WaitGroup
		flows []netlink.Flow
	)
	if ctD != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			flows, err = ctD.Conntrack(ctx)
			if err != nil && errors.Is(err, netlink.ErrIncomplete) {
				r.notes = append(r.notes, fmt.Sprintf("conntrack table%s may be incomplete: %v", where(t), err))
				err = nil
			}
			if err != nil {
				r.ctErr = err
				flows = nil
			}
		}()
	}
	var list []model.Socket
	err := openErr
	if err == nil {
		list, err = sockD.Sockets(ctx, netlink.DumpOptions{NoTCPInfo: opts.NoTCPInfo})
	}
	wg.Wait()
	if flows != nil {
		r.ages = netlink.NewAgeIndex(flows)
	}
	if err != nil && errors.Is(err, netlink.ErrIncomplete) {
		// A malformed or interrupted record cost only itself: keep the rest.
		r.notes = append(r.notes, fmt.Sprintf("socket list%s may be incomplete: %v", where(t), err))
		err = nil
	}
	if err != nil {
		if !errors.Is(err, netlink.ErrUnavailable) {
			return r, wrapNetns(t, err)
		}
		r.fallback = err
		// /proc/thread-self/net shows the namespace of the reading thread.
		if perr := inNetns(t, func() error {
			list, err = proc.ReadProcNet("")
			return err
		}); perr != nil {
			return r, fmt.Errorf("reading sockets from /proc/net: %w", perr)
		}
	}
	r.socks = list
	return r, nil
}

// inNetns runs fn in t's namespace, or right here for the caller's own.
func inNetns(t target, fn func() error) error {
	if t.path == "" {
		return fn()
	}
	return wrapNetns(t, netlink.InNetns(t.path, fn))
}

func wrapNetns(t target, err error) error {
	if err == nil || t.label == "" {
		return err
	}
	return fmt.Errorf("netns %s: %w", t.label, err)
}

func where(t target) string {
	if t.label == "" {
		return ""
	}
	return " in netns " + t.label
}

// resolveTargets turns the options into the namespaces to visit, each
// distinct namespace once.
func resolveTargets(opts Options) ([]target, error) {
	if opts.AllNetns {
		nss, err := netlink.Discover()
		if err != nil {
			return nil, fmt.Errorf("listing network namespaces: %w", err)
		}
		out := make([]target, 0, len(nss))
		for _, ns := range nss {
			if ns.Self {
				out = append(out, target{})
				continue
			}
			out = append(out, target{label: ns.Name, path: ns.Path})
		}
		return out, nil
	}
	if len(opts.Netns) == 0 {
		return []target{{}}, nil
	}
	out := make([]target, 0, len(opts.Netns))
	for _, n := range opts.Netns {
		p, err := netlink.NetnsPath(n)
		if err != nil {
			return nil, err
		}
		out = append(out, target{label: n, path: p})
	}
	return out, nil
}

// warnings keeps one line per distinct message, in first-seen order.
type warnings struct {
	seen  map[string]bool
	order []string
}

func newWarnings() *warnings { return &warnings{seen: map[string]bool{}} }

func (w *warnings) add(s string) {
	if !w.seen[s] {
		w.seen[s] = true
		w.order = append(w.order, s)
	}
}

func (w *warnings) lines() []string { return w.order }
