//go:build linux

package bpfiter

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
)

const (
	// recordSize is one emitted record: tgid u32, fd u32, inode u64, in
	// host byte order, laid out on the BPF stack at r10-16.
	recordSize = 16

	// maxRecords bounds the read: a kernel bug or a hostile load that
	// keeps the iterator producing must not grow our memory without end.
	// 50M socket fds (800 MB of records) is far past any real host.
	maxRecords = 50_000_000

	// readSize is one read(2). The kernel fills its seq_file buffer
	// (8 pages) per read, so a larger buffer would not save syscalls.
	readSize = 32 << 10

	// sIFMT and sIFSOCK are the file-type bits of i_mode (uapi stat.h,
	// fixed across kernels and architectures).
	sIFMT   = 0o170000
	sIFSOCK = 0o140000

	// verifierLines is how much of a rejection's verifier log we keep:
	// the verdict is at the end, and the lead needs it verbatim.
	verifierLines = 12
)

// SocketFDs returns every socket file descriptor of every process on the
// host, read in one pass of a BPF task_file iterator. TGIDs are as the init
// PID namespace sees them (see the package doc). Threads that share their
// leader's file table are skipped by the kernel; a (TGID, FD) pair that
// still repeats (a thread that unshared its file table) is reported once,
// as its first occurrence, which is the one /proc/TGID/fd shows.
//
// Each call loads, attaches and releases its own program, so nothing is
// left in the kernel afterwards. Every error wraps [ErrUnavailable]; a
// cancelled ctx also wraps ctx.Err().
func SocketFDs(ctx context.Context) ([]FD, error) {
	return socketFDsVia(ctx, pathAuto, kernelBTFPath)
}

// loadPath selects how SocketFDs loads its program; tests force each one.
type loadPath int

const (
	// pathAuto tries pathRaw and falls back to pathCilium on any error.
	pathAuto loadPath = iota
	// pathRaw parses kernel BTF with parseBTF and calls bpf(2) directly.
	pathRaw
	// pathCilium lets cilium/ebpf decode kernel BTF and load the program:
	// slower, but proven on more kernels.
	pathCilium
)

// socketFDsVia is SocketFDs through path p, the raw path reading kernel
// BTF from btfPath (tests point it elsewhere to make the raw path fail).
func socketFDsVia(ctx context.Context, p loadPath, btfPath string) ([]FD, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if p == pathCilium {
		return ciliumSocketFDs(ctx)
	}
	fds, rawErr := rawSocketFDs(ctx, btfPath)
	if rawErr == nil {
		slog.DebugContext(ctx, "bpfiter: socket fds read", "path", "raw bpf(2)", "fds", len(fds))
		return fds, nil
	}
	if p == pathRaw || ctx.Err() != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, rawErr)
	}
	slog.DebugContext(ctx, "bpfiter: raw bpf(2) path failed, trying cilium/ebpf", "err", rawErr)
	fds, err := ciliumSocketFDs(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w (raw bpf(2) path: %v)", err, rawErr)
	}
	slog.DebugContext(ctx, "bpfiter: socket fds read", "path", "cilium/ebpf", "fds", len(fds))
	return fds, nil
}

// ciliumSocketFDs is SocketFDs through cilium/ebpf, the original path and
// the fallback of the raw one.
func ciliumSocketFDs(ctx context.Context) ([]FD, error) {
	// One cache per call, shared by the layout lookup and the program
	// load, so kernel BTF is parsed once and nothing outlives the call.
	cache := btf.NewCache()
	spec, err := cache.Kernel()
	if err != nil {
		return nil, fmt.Errorf("%w: load kernel BTF: %w", ErrUnavailable, err)
	}
	l, err := resolveLayout(spec)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}

	coll, err := ebpf.NewCollectionWithOptions(&ebpf.CollectionSpec{
		Programs: map[string]*ebpf.ProgramSpec{progName: {
			Name:         progName,
			Type:         ebpf.Tracing,
			AttachType:   ebpf.AttachTraceIter,
			AttachTo:     "task_file",
			Instructions: program(l),
			// bpf_seq_write is GPL-only; the program is ours and MIT,
			// which the kernel accepts as "Dual MIT/GPL".
			License: "Dual MIT/GPL",
		}},
	}, ebpf.CollectionOptions{Cache: cache})
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			tail := ve.Log[max(0, len(ve.Log)-verifierLines):]
			return nil, fmt.Errorf("%w: verifier rejected the program: %w; log tail:\n%s",
				ErrUnavailable, ve.Cause, strings.Join(tail, "\n"))
		}
		return nil, fmt.Errorf("%w: load program: %w", ErrUnavailable, err)
	}
	defer coll.Close()

	it, err := link.AttachIter(link.IterOptions{Program: coll.Programs[progName]})
	if err != nil {
		return nil, fmt.Errorf("%w: attach task_file iterator: %w", ErrUnavailable, err)
	}
	defer it.Close()

	r, err := it.Open()
	if err != nil {
		return nil, fmt.Errorf("%w: open iterator: %w", ErrUnavailable, err)
	}
	defer r.Close()

	fds, err := readRecords(ctx, r, maxRecords)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return fds, nil
}

// progName is the program's name in the kernel (bpftool prog show).
const progName = "tcps_sock_fds"

// program builds the iterator program. In C it would read:
//
//	if (!ctx->task || !ctx->file) return 0;
//	struct inode *ino = ctx->file->f_inode;
//	if (!ino || (ino->i_mode & S_IFMT) != S_IFSOCK) return 0;
//	struct { u32 tgid, fd; u64 ino; } r = {ctx->task->tgid, ctx->fd, ino->i_ino};
//	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
//	return 0;
//
// task and file are trusted BTF pointers the verifier lets us load from
// directly, so no bpf_probe_read_kernel copies are needed. The call with
// NULL task and file that ends each pass is the first check's case.
func program(l layout) asm.Instructions {
	const exit = "exit"
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1), // ctx, kept across the helper call
		asm.LoadMem(asm.R7, asm.R6, l.ctxTask.off, asm.DWord),
		asm.JEq.Imm(asm.R7, 0, exit),
		asm.LoadMem(asm.R8, asm.R6, l.ctxFile.off, asm.DWord),
		asm.JEq.Imm(asm.R8, 0, exit),
		asm.LoadMem(asm.R9, asm.R8, l.fileInode.off, asm.DWord),
		asm.JEq.Imm(asm.R9, 0, exit),

		asm.LoadMem(asm.R2, asm.R9, l.inodeMode.off, l.inodeMode.size),
		asm.And.Imm(asm.R2, sIFMT),
		asm.JNE.Imm(asm.R2, sIFSOCK, exit),

		// Record at r10-16: tgid, fd, inode.
		asm.LoadMem(asm.R2, asm.R7, l.taskTGID.off, l.taskTGID.size),
		asm.StoreMem(asm.RFP, -16, asm.R2, asm.Word),
		asm.LoadMem(asm.R2, asm.R6, l.ctxFD.off, l.ctxFD.size),
		asm.StoreMem(asm.RFP, -12, asm.R2, asm.Word),
		asm.LoadMem(asm.R2, asm.R9, l.inodeIno.off, l.inodeIno.size),
		asm.StoreMem(asm.RFP, -8, asm.R2, asm.DWord),

		// bpf_seq_write(ctx->meta->seq, r10-16, 16)
		asm.LoadMem(asm.R1, asm.R6, l.ctxMeta.off, asm.DWord),
		asm.LoadMem(asm.R1, asm.R1, l.metaSeq.off, asm.DWord),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -recordSize),
		asm.Mov.Imm(asm.R3, recordSize),
		asm.FnSeqWrite.Call(),

		asm.Mov.Imm(asm.R0, 0).WithSymbol(exit),
		asm.Return(),
	}
}

// readRecords drains the iterator, failing past limit records. Each
// read(2) runs the program over as many files as fit the kernel's seq_file
// buffer; records are whole in the kernel buffer but we still carry a
// partial tail over, since nothing promises read(2) returns multiples of
// recordSize.
func readRecords(ctx context.Context, r io.Reader, limit int) ([]FD, error) {
	buf := make([]byte, readSize)
	out := make([]FD, 0, readSize/recordSize)
	var (
		pending int
		d       deduper
	)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n, err := r.Read(buf[pending:])
		pending += n
		whole := pending - pending%recordSize
		for off := 0; off < whole; off += recordSize {
			rec := buf[off : off+recordSize]
			fd := FD{
				TGID:  int32(binary.NativeEndian.Uint32(rec[0:])),
				FD:    int32(binary.NativeEndian.Uint32(rec[4:])),
				Inode: binary.NativeEndian.Uint64(rec[8:]),
			}
			d.observe(fd)
			out = append(out, fd)
		}
		if len(out) > limit {
			return nil, fmt.Errorf("iterator produced more than %d records", limit)
		}
		pending = copy(buf, buf[whole:pending])
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read iterator: %w", err)
		}
	}
	if pending != 0 {
		return nil, fmt.Errorf("iterator ended inside a record (%d stray bytes)", pending)
	}
	if d.repeats {
		out = dedupe(out)
	}
	return out, nil
}

// deduper notices whether dedupe is needed at all, so the common case
// costs a map of processes rather than a map of every descriptor. The
// iterator visits one task at a time and, within a task, fds in
// ascending order; a (tgid, fd) can only repeat if a tgid's run of
// records starts again or a run stops ascending.
type deduper struct {
	done    map[int32]struct{} // tgids whose run has ended
	last    FD
	started bool
	repeats bool
}

func (d *deduper) observe(fd FD) {
	switch {
	case !d.started:
		d.started = true
	case fd.TGID != d.last.TGID:
		if d.done == nil {
			d.done = make(map[int32]struct{})
		}
		d.done[d.last.TGID] = struct{}{}
		if _, ok := d.done[fd.TGID]; ok {
			d.repeats = true
		}
	case fd.FD <= d.last.FD:
		d.repeats = true
	}
	d.last = fd
}

// dedupe keeps the first record of each (tgid, fd), in order.
func dedupe(fds []FD) []FD {
	type key struct{ tgid, fd int32 }
	seen := make(map[key]struct{}, len(fds))
	out := fds[:0]
	for _, fd := range fds {
		k := key{fd.TGID, fd.FD}
		if _, ok := seen[k]; ok {
			continue
		}
		seen[k] = struct{}{}
		out = append(out, fd)
	}
	return out
}
