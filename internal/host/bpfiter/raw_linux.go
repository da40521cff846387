//go:build linux

package bpfiter

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
	"structs"
	"unsafe"

	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// The fast path: kernel BTF read with parseBTF and the program loaded,
// attached and opened with three bpf(2) calls. cilium/ebpf would decode
// all of vmlinux's BTF for the same three calls.

// kernelBTFPath is the running kernel's BTF.
const kernelBTFPath = "/sys/kernel/btf/vmlinux"

// bpf(2) commands and enum values from uapi linux/bpf.h.
const (
	bpfProgLoad   = 5  // BPF_PROG_LOAD
	bpfLinkCreate = 28 // BPF_LINK_CREATE
	bpfIterCreate = 33 // BPF_ITER_CREATE

	progTypeTracing = 26 // BPF_PROG_TYPE_TRACING
	attachTraceIter = 28 // BPF_TRACE_ITER

	// verifierLogSize holds a rejection's log for this short program many
	// times over; since Linux 6.4 a log that does not fit keeps its end,
	// which is the part we report.
	verifierLogSize = 256 << 10

	// bpfRetries bounds the retries of a call interrupted by a signal
	// (EINTR) or one the verifier asks to repeat (EAGAIN).
	bpfRetries = 5
)

// progLoadAttr is union bpf_attr for BPF_PROG_LOAD up to core_relo_cnt
// (120 bytes); the kernel zero-fills the fields we do not pass. The
// __aligned_u64 pointers are unsafe.Pointer so the garbage collector sees
// them, which matches the uapi layout on 64-bit platforms only: rawSocketFDs
// refuses others.
type progLoadAttr struct {
	_                  structs.HostLayout
	progType           uint32
	insnCnt            uint32
	insns              unsafe.Pointer
	license            unsafe.Pointer
	logLevel           uint32
	logSize            uint32
	logBuf             unsafe.Pointer
	kernVersion        uint32
	progFlags          uint32
	progName           [16]byte // BPF_OBJ_NAME_LEN
	progIfindex        uint32
	expectedAttachType uint32
	progBTFFd          uint32
	funcInfoRecSize    uint32
	funcInfo           unsafe.Pointer
	funcInfoCnt        uint32
	lineInfoRecSize    uint32
	lineInfo           unsafe.Pointer
	lineInfoCnt        uint32
	attachBTFID        uint32
	attachBTFObjFd     uint32 // 0: the ID is in vmlinux's BTF
	coreReloCnt        uint32
}

// linkCreateAttr is union bpf_attr for BPF_LINK_CREATE with the iterator
// fields (32 bytes). No iter_info: task_file with none walks every task.
type linkCreateAttr struct {
	_           structs.HostLayout
	progFd      uint32
	targetFd    uint32
	attachType  uint32
	flags       uint32
	iterInfo    unsafe.Pointer
	iterInfoLen uint32
	_           uint32
}

// iterCreateAttr is union bpf_attr for BPF_ITER_CREATE.
type iterCreateAttr struct {
	_      structs.HostLayout
	linkFd uint32
	flags  uint32
}

// bpfCall is bpf(2), returning the new file descriptor.
func bpfCall(cmd uintptr, attr unsafe.Pointer, size uintptr) (int, error) {
	var errno unix.Errno
	for range bpfRetries {
		var fd uintptr
		fd, _, errno = unix.Syscall(unix.SYS_BPF, cmd, uintptr(attr), size)
		if errno == 0 {
			return int(fd), nil
		}
		if errno != unix.EINTR && errno != unix.EAGAIN {
			break
		}
	}
	return -1, errno
}

// rawSocketFDs is SocketFDs through parseBTF, reading the kernel's BTF
// from btfPath, and raw bpf(2) calls.
func rawSocketFDs(ctx context.Context, btfPath string) ([]FD, error) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		return nil, errors.New("raw bpf(2) path: bpf_attr pointers need a 64-bit platform")
	}
	l, attachID, bo, err := kernelIterTarget(btfPath)
	if err != nil {
		return nil, err
	}
	prog, err := loadProgram(program(l), attachID, bo)
	if err != nil {
		return nil, err
	}
	defer unix.Close(prog)

	la := linkCreateAttr{progFd: uint32(prog), attachType: attachTraceIter}
	lnk, err := bpfCall(bpfLinkCreate, unsafe.Pointer(&la), unsafe.Sizeof(la))
	if err != nil {
		return nil, fmt.Errorf("attach task_file iterator: BPF_LINK_CREATE: %w", err)
	}
	defer unix.Close(lnk)

	ia := iterCreateAttr{linkFd: uint32(lnk)}
	it, err := bpfCall(bpfIterCreate, unsafe.Pointer(&ia), unsafe.Sizeof(ia))
	if err != nil {
		return nil, fmt.Errorf("open iterator: BPF_ITER_CREATE: %w", err)
	}
	defer unix.Close(it)

	return readRecords(ctx, fdReader(it), maxRecords)
}

// kernelIterTarget resolves the iterator's layout and attach target from
// the running kernel's BTF at path, and returns the kernel's byte order. The file
// is mapped rather than read where the kernel allows it (Linux 6.16+):
// copying its ~5 MB is most of the cost, and nothing of it is needed once
// the few values are resolved. MAP_POPULATE maps every page in one call
// instead of taking a fault per page during the walk.
func kernelIterTarget(path string) (layout, uint32, binary.ByteOrder, error) {
	f, err := os.Open(path)
	if err != nil {
		return layout{}, 0, nil, fmt.Errorf("load kernel BTF: %w", err)
	}
	defer f.Close()
	var data []byte
	if st, err := f.Stat(); err == nil && st.Size() > 0 && st.Size() <= math.MaxInt32 {
		m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_POPULATE)
		if err == nil {
			defer unix.Munmap(m)
			data = m
		}
	}
	if data == nil {
		if data, err = io.ReadAll(f); err != nil {
			return layout{}, 0, nil, fmt.Errorf("load kernel BTF: %w", err)
		}
	}
	b, err := parseBTF(data)
	if err != nil {
		return layout{}, 0, nil, fmt.Errorf("load kernel BTF: %s: %w", path, err)
	}
	l, attachID, err := b.iterTarget()
	return l, attachID, b.bo, err
}

// loadProgram loads insns as an iter/task_file program attached to BTF
// ID attachID, encoded in bo, the kernel's byte order as its BTF shows
// it (cilium's asm knows binary.LittleEndian and BigEndian, not
// NativeEndian). A refusal is retried once with a verifier log, so that the
// common case pays for no log and a rejection still says why.
func loadProgram(insns asm.Instructions, attachID uint32, bo binary.ByteOrder) (int, error) {
	var code bytes.Buffer
	if err := insns.Marshal(&code, bo); err != nil {
		return -1, fmt.Errorf("load program: marshal instructions: %w", err)
	}
	buf := code.Bytes()
	// bpf_seq_write is GPL-only; the program is ours and MIT, which the
	// kernel accepts as "Dual MIT/GPL".
	license := []byte("Dual MIT/GPL\x00")
	attr := progLoadAttr{
		progType:           progTypeTracing,
		insnCnt:            uint32(len(buf) / asm.InstructionSize),
		insns:              unsafe.Pointer(&buf[0]),
		license:            unsafe.Pointer(&license[0]),
		expectedAttachType: attachTraceIter,
		attachBTFID:        attachID,
	}
	copy(attr.progName[:len(attr.progName)-1], progName)
	fd, err := bpfCall(bpfProgLoad, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	if err == nil {
		runtime.KeepAlive(buf)
		runtime.KeepAlive(license)
		return fd, nil
	}

	log := make([]byte, verifierLogSize)
	attr.logLevel, attr.logSize, attr.logBuf = 1, uint32(len(log)), unsafe.Pointer(&log[0])
	fd, err2 := bpfCall(bpfProgLoad, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	runtime.KeepAlive(buf)
	runtime.KeepAlive(license)
	runtime.KeepAlive(log)
	if err2 == nil {
		return fd, nil
	}
	if tail := logTail(log, verifierLines); tail != "" {
		return -1, fmt.Errorf("verifier rejected the program: %w; log tail:\n%s", err2, tail)
	}
	return -1, fmt.Errorf("load program: BPF_PROG_LOAD: %w", err)
}

// logTail is the last n lines of a NUL-terminated verifier log.
func logTail(log []byte, n int) string {
	if i := bytes.IndexByte(log, 0); i >= 0 {
		log = log[:i]
	}
	lines := strings.Split(strings.TrimRight(string(log), "\n"), "\n")
	if len(lines) == 1 && lines[0] == "" {
		return ""
	}
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// fdReader reads an iterator descriptor; read(2) returning 0 is the end.
type fdReader int

func (r fdReader) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(int(r), p)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, err
		}
		if n == 0 && len(p) > 0 {
			return 0, io.EOF
		}
		return n, nil
	}
}
