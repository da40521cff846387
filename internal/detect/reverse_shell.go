package detect

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// ReverseShell reports shells and interpreters wired to the network: a
// socket as stdin, stdout or stderr (`ncat -e /bin/sh`, `bash -i >&
// /dev/tcp/…`, socat exec), or, less certainly, an interpreter without a
// terminal whose only network peers are other hosts.
type ReverseShell struct {
	interpreters map[string]bool
}

// NewReverseShell builds the detector from its interpreter list.
func NewReverseShell(cfg *config.Config) *ReverseShell {
	d := &ReverseShell{interpreters: map[string]bool{}}
	for _, n := range cfg.Detectors.ReverseShell.Interpreters {
		d.interpreters[n] = true
	}
	return d
}

// Name implements Detector.
func (*ReverseShell) Name() string { return "reverse-shell" }

// isInterpreter matches comm or exe base name, and versioned names such as
// python3.11 or perl5.36 by their alphabetic stem.
func (d *ReverseShell) isInterpreter(p *model.Process) bool {
	for _, n := range []string{p.Name, exeBase(p)} {
		if d.interpreters[n] || d.interpreters[strings.TrimRight(n, "0123456789.")] {
			return true
		}
	}
	return false
}

type procSockets struct {
	stdio  []*model.Socket // connected sockets on fd 0, 1 or 2
	relay  *relay          // stdio piped to a process holding a remote connection
	fds    map[*model.Socket][]int32
	remote []*model.Socket // connected sockets to other hosts
	local  int             // connected sockets to this host, and listeners
}

// relay is a shell's stdio reaching the network through another process.
type relay struct {
	via  *model.Process
	sock *model.Socket
	fds  []int32
}

// relays finds interpreters whose stdin or stdout is a pipe shared with a
// process that holds a connected socket (`ncat -e`, `socat EXEC:`), and
// records them in byPID.
func (d *ReverseShell) relays(snap *model.Snapshot, byPID map[int32]*procSockets) {
	if len(snap.Pipes) == 0 {
		return
	}
	connected := map[int32]*model.Socket{} // first connected TCP socket per holder
	for i := range snap.Sockets {
		s := &snap.Sockets[i]
		if s.Proto != model.ProtoTCP || s.State != model.StateEstablished {
			continue
		}
		for _, o := range s.Owners {
			if cur, ok := connected[o.PID]; !ok || (!isRemote(cur.Remote.Addr()) && isRemote(s.Remote.Addr())) {
				connected[o.PID] = s
			}
		}
	}
	inodes := make([]uint64, 0, len(snap.Pipes))
	for ino := range snap.Pipes {
		inodes = append(inodes, ino)
	}
	slices.Sort(inodes)
	for _, ino := range inodes {
		owners := snap.Pipes[ino]
		for _, o := range owners {
			p := snap.Processes[o.PID]
			if p == nil || !d.isInterpreter(p) {
				continue
			}
			var stdio []int32
			for _, fd := range o.FDs {
				if fd <= 1 { // stdin or stdout: the command channel
					stdio = append(stdio, fd)
				}
			}
			if len(stdio) == 0 {
				continue
			}
			for _, q := range owners {
				s := connected[q.PID]
				via := snap.Processes[q.PID]
				if q.PID == o.PID || s == nil || via == nil {
					continue
				}
				ps := byPID[o.PID]
				if ps == nil {
					ps = &procSockets{fds: map[*model.Socket][]int32{}}
					byPID[o.PID] = ps
				}
				if ps.relay == nil {
					ps.relay = &relay{via: via, sock: s}
				}
				if ps.relay.via == via {
					ps.relay.fds = append(ps.relay.fds, stdio...)
				}
				break
			}
		}
	}
}

// ObserveSnapshot implements SnapshotDetector.
func (d *ReverseShell) ObserveSnapshot(snap *model.Snapshot, emit Emit) {
	byPID := map[int32]*procSockets{}
	for i := range snap.Sockets {
		s := &snap.Sockets[i]
		if s.Proto != model.ProtoTCP && s.Proto != model.ProtoUDP {
			continue
		}
		connected := s.State == model.StateEstablished || s.State == model.StateCloseWait
		for _, o := range s.Owners {
			p := snap.Processes[o.PID]
			if p == nil || !d.isInterpreter(p) {
				continue
			}
			ps := byPID[o.PID]
			if ps == nil {
				ps = &procSockets{fds: map[*model.Socket][]int32{}}
				byPID[o.PID] = ps
			}
			switch {
			case !connected:
				ps.local++
			case isRemote(s.Remote.Addr()):
				ps.remote = append(ps.remote, s)
			default:
				ps.local++
			}
			if !connected {
				continue
			}
			for _, fd := range o.FDs {
				if fd <= 2 {
					ps.fds[s] = append(ps.fds[s], fd)
				}
			}
			if len(ps.fds[s]) > 0 {
				ps.stdio = append(ps.stdio, s)
			}
		}
	}
	d.relays(snap, byPID)
	pids := make([]int32, 0, len(byPID))
	for pid := range byPID {
		pids = append(pids, pid)
	}
	sort.Slice(pids, func(i, j int) bool { return pids[i] < pids[j] })
	ix := newListenerIndex(snap)
	for _, pid := range pids {
		ps, p := byPID[pid], snap.Processes[pid]
		switch {
		case ps.relay != nil:
			r := ps.relay
			a := socketAlert(snap, r.sock, p, ix)
			a.Entity = fmt.Sprintf("relay pid %d %s", pid, r.sock.Remote)
			a.Title = fmt.Sprintf("%s (pid %d) has its standard I/O piped to %s (pid %d), connected to %v",
				p.Name, pid, r.via.Name, r.via.PID, r.sock.Remote)
			a.Severity, a.Confidence = alert.Critical, 0.9
			if !isRemote(r.sock.Remote.Addr()) {
				a.Severity, a.Confidence = alert.High, 0.6
			}
			a.Attack = []string{"T1059", "T1059.004"}
			a.Evidence = map[string]any{
				"shape":     "stdio_pipe_relay",
				"stdio_fd":  r.fds,
				"relay_pid": r.via.PID,
				"relay":     r.via.Name,
				"peer":      r.sock.Remote.String(),
				"has_tty":   p.TTY != 0,
			}
			emit(a)
		case len(ps.stdio) > 0:
			s := ps.stdio[0]
			a := socketAlert(snap, s, p, ix)
			a.Entity = fmt.Sprintf("stdio pid %d %s", pid, s.Remote)
			a.Title = fmt.Sprintf("%s (pid %d) has its standard I/O connected to %v", p.Name, pid, s.Remote)
			a.Severity, a.Confidence = alert.Critical, 0.95
			if !isRemote(s.Remote.Addr()) {
				// A local peer is still a shell on a socket, but it may be a
				// test harness or an inetd-style service on this host.
				a.Severity, a.Confidence = alert.High, 0.7
			}
			a.Attack = []string{"T1059", "T1059.004"}
			a.Evidence = map[string]any{
				"shape":    "socket_stdio",
				"stdio_fd": ps.fds[s],
				"peer":     s.Remote.String(),
				"has_tty":  p.TTY != 0,
				"bind":     ix.accepted(s),
			}
			emit(a)
		case len(ps.remote) > 0 && ps.local == 0 && p.TTY == 0:
			s := ps.remote[0]
			a := socketAlert(snap, s, p, ix)
			a.Entity = fmt.Sprintf("remote-only pid %d %s", pid, s.Remote)
			a.Title = fmt.Sprintf("interpreter %s (pid %d) without a terminal talks only to %v", p.Name, pid, s.Remote)
			a.Severity, a.Confidence = alert.High, 0.6
			a.Attack = []string{"T1059"}
			peers := make([]string, 0, len(ps.remote))
			for _, r := range ps.remote {
				peers = append(peers, r.Remote.String())
			}
			a.Evidence = map[string]any{"shape": "remote_only_no_tty", "peers": peers, "has_tty": false}
			emit(a)
		}
	}
}
