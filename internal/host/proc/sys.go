package proc

import (
	"encoding/binary"
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The hot path passes NUL-terminated names straight to the kernel:
// unix.Openat and unix.Readlinkat copy every name into a fresh []byte
// (BytePtrFromString), which would cost one allocation per descriptor. Names
// come either from constants below (read-only string data), from a worker's
// own buffer, or from the getdents buffer, where the kernel has already
// NUL-terminated them.
const (
	nameFD      = "fd\x00"
	nameStat    = "stat\x00"
	nameStatus  = "status\x00"
	nameCmdline = "cmdline\x00"
	nameExe     = "exe\x00"
)

// cname points at the first byte of a NUL-terminated constant.
func cname(s string) *byte { return unsafe.StringData(s) }

// openat opens name (NUL-terminated) relative to dirfd, close-on-exec.
func openat(dirfd int, name *byte, flags int) (int, error) {
	r, _, e := unix.Syscall6(unix.SYS_OPENAT, uintptr(dirfd), uintptr(unsafe.Pointer(name)),
		uintptr(flags|unix.O_CLOEXEC), 0, 0, 0)
	if e != 0 {
		return -1, e // Errno values are small: boxing them does not allocate
	}
	return int(r), nil
}

// readlinkat reads the target of name (NUL-terminated) relative to dirfd
// into buf and returns its length; a target longer than buf is truncated.
func readlinkat(dirfd int, name *byte, buf []byte) (int, error) {
	r, _, e := unix.Syscall6(unix.SYS_READLINKAT, uintptr(dirfd), uintptr(unsafe.Pointer(name)),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// maxFileSize bounds what readFileAt reads: a command line can be as large
// as the argument space (ARG_MAX, often several MiB); beyond this the rest
// is dropped so that one hostile process cannot balloon a worker's memory.
const maxFileSize = 4 << 20

// readFileAt reads the whole of name relative to dirfd into *buf (grown and
// kept for reuse) and returns the bytes read, which alias *buf.
func readFileAt(dirfd int, name *byte, buf *[]byte) ([]byte, error) {
	fd, err := openat(dirfd, name, unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	b := (*buf)[:0]
	for {
		if len(b) == cap(b) {
			if cap(b) >= maxFileSize {
				break
			}
			b = append(b, 0)[:len(b)]
		}
		n, err := unix.Read(fd, b[len(b):cap(b)])
		if err != nil {
			*buf = b
			return nil, err
		}
		if n == 0 {
			break
		}
		b = b[:len(b)+n]
	}
	*buf = b
	return b, nil
}

// dirent is one entry of a getdents64 buffer: name excludes the NUL, and
// cname points at the NUL-terminated name for the *at syscalls.
type dirent struct {
	name  []byte
	cname *byte
}

// nextDirent decodes the linux_dirent64 at b[off:] (d_ino u64, d_off s64,
// d_reclen u16, d_type u8, d_name NUL-terminated) and returns the offset of
// the next one; ok is false when the buffer holds no further whole entry.
func nextDirent(b []byte, off int) (d dirent, next int, ok bool) {
	const nameOff = 19
	if off+nameOff >= len(b) {
		return d, len(b), false
	}
	reclen := int(binary.NativeEndian.Uint16(b[off+16:]))
	if reclen <= nameOff || off+reclen > len(b) {
		return d, len(b), false
	}
	rec := b[off+nameOff : off+reclen]
	n := 0
	for n < len(rec) && rec[n] != 0 {
		n++
	}
	if n == len(rec) { // no terminating NUL: never from the kernel
		return d, len(b), false
	}
	return dirent{name: rec[:n], cname: &rec[0]}, off + reclen, true
}

// gone reports whether err means the process exited while we looked.
func gone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
}

// denied reports whether err means we lack the privilege to look.
func denied(err error) bool {
	return errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM)
}
