// Package bpfiter lists every socket file descriptor on the host with one
// BPF task_file iterator, as a fast path for socket→process attribution.
//
// The /proc walk in package proc costs one readlinkat per descriptor (about
// 60 ms of wall time at 20,000 sockets). A BPF iterator over all tasks'
// files ("iter/task_file") lets the kernel visit the same descriptors
// in-kernel and hand back only the sockets as fixed-size records, a few
// read(2) calls in all.
//
// The program is built in Go with cilium/ebpf's asm package rather than
// compiled from C, so there is no clang in the build and no generated
// object to keep in step with the kernel: every structure offset it uses
// (the iterator context, task_struct.tgid, file.f_inode, inode.i_mode and
// inode.i_ino, bpf_iter_meta.seq) is read from the running kernel's BTF at
// load time.
//
// Two load paths do the same thing. The fast one reads kernel BTF with a
// minimal reader of its own (one walk indexing ~126,000 types, then only
// the dozen the program touches decoded: 2-3 ms) and loads, attaches and
// opens the iterator with three raw bpf(2) calls. Any error there falls
// back to cilium/ebpf, which decodes the whole of kernel BTF first
// (15-25 ms) but has met more kernels.
//
// Requirements: kernel BTF (/sys/kernel/btf/vmlinux), BPF iterators (Linux
// 5.8+), and the privileges to load a tracing program (CAP_BPF and
// CAP_PERFMON, in practice root). Any missing piece makes [SocketFDs]
// return an error wrapping [ErrUnavailable], and the caller falls back to
// /proc.
//
// PID namespaces: the iterator walks the tasks of every PID namespace and
// reports task_struct.tgid, which is the PID as the init PID namespace sees
// it, whatever namespace the caller is in. This matches /proc only when the
// caller shares the init PID namespace (as tcpsentry on a host does); a
// caller inside a container must translate or fall back to /proc.
package bpfiter

import "errors"

// ErrUnavailable is wrapped by every error [SocketFDs] returns: no BTF, no
// privilege, a verifier rejection, iterators unsupported, a short read.
// Callers test it with errors.Is and fall back to /proc.
var ErrUnavailable = errors.New("bpf task_file iterator unavailable")

// FD is one socket file descriptor as the kernel's task_file iterator saw
// it.
type FD struct {
	// TGID is the owning process (thread group) ID in the init PID
	// namespace.
	TGID int32
	// FD is the descriptor number in that process's file table.
	FD int32
	// Inode is the socket's inode number, the N of "socket:[N]" in
	// /proc/PID/fd and the inode field of sock_diag and /proc/net.
	Inode uint64
}
