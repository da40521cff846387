package proc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Parsers of /proc and /etc/passwd contents. Each is a pure function over
// bytes or a reader so that tests and fuzzers feed it without a /proc, and
// none allocates on the per-descriptor path (parseSocketLink).

var (
	errSyntax = errors.New("invalid syntax")
	errRange  = errors.New("value out of range")
	errShort  = errors.New("too few fields")
)

// parseUint parses a decimal number that must fit in bits bits, without
// allocating (strconv would, for the string conversion and its errors).
func parseUint(b []byte, bits uint) (uint64, error) {
	if len(b) == 0 {
		return 0, errSyntax
	}
	max := uint64(1)<<bits - 1
	if bits == 64 {
		max = ^uint64(0)
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, errSyntax
		}
		d := uint64(c - '0')
		if v > (max-d)/10 {
			return 0, errRange
		}
		v = v*10 + d
	}
	return v, nil
}

// parseInt is parseUint with an optional leading minus sign.
func parseInt(b []byte, bits uint) (int64, error) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	v, err := parseUint(b, bits)
	if err != nil {
		return 0, err
	}
	lim := uint64(1) << (bits - 1)
	if neg {
		if v > lim {
			return 0, errRange
		}
		return -int64(v), nil
	}
	if v >= lim {
		return 0, errRange
	}
	return int64(v), nil
}

// parseHex parses a hexadecimal number of at most bits bits, without allocating.
func parseHex(b []byte, bits uint) (uint64, error) {
	if len(b) == 0 {
		return 0, errSyntax
	}
	if uint(len(b))*4 > bits {
		b = bytes.TrimLeft(b, "0") // tolerate zero padding beyond the width
		if uint(len(b))*4 > bits {
			return 0, errRange
		}
	}
	var v uint64
	for _, c := range b {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, errSyntax
		}
		v = v<<4 | uint64(d)
	}
	return v, nil
}

// parseSocketLink returns the inode of an fd link target of the form
// "socket:[INODE]"; ok is false for any other target (files, pipes,
// anon inodes) or a malformed number.
func parseSocketLink(b []byte) (inode uint64, ok bool) { return parseInodeLink(b, "socket:[") }

// parsePipeLink recognises "pipe:[INODE]", the target of a pipe descriptor.
func parsePipeLink(b []byte) (inode uint64, ok bool) { return parseInodeLink(b, "pipe:[") }

func parseInodeLink(b []byte, prefix string) (inode uint64, ok bool) {
	if len(b) < len(prefix)+2 || string(b[:len(prefix)]) != prefix || b[len(b)-1] != ']' {
		return 0, false
	}
	v, err := parseUint(b[len(prefix):len(b)-1], 64)
	return v, err == nil
}

// statInfo is what tcpsentry takes from /proc/PID/stat.
type statInfo struct {
	Comm      string // between the first '(' and the last ')', raw
	State     byte   // R, S, D, Z (zombie), X (dead), …
	PPID      int32
	TTY       uint32 // tty_nr: controlling terminal as the kernel encodes dev_t (major in bits 8-15); 0 for none
	StartTime uint64 // clock ticks (USER_HZ) after boot
}

// parseStat parses /proc/PID/stat. The comm field is in parentheses and may
// itself hold spaces, parentheses and newlines (a process chooses its own
// name), so the fixed fields are found after the LAST ')'.
func parseStat(b []byte) (statInfo, error) {
	var s statInfo
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return s, fmt.Errorf("field comm: %w", errSyntax)
	}
	s.Comm = string(b[open+1 : end])
	// After the comm come fields 3 (state) … 52; we need 4 (ppid), 7
	// (tty_nr) and 22 (starttime), numbered as in proc(5).
	rest := b[end+1:]
	field := 2
	for field < 22 {
		rest = bytes.TrimLeft(rest, " ")
		if len(rest) == 0 {
			return s, fmt.Errorf("field %d: %w", field+1, errShort)
		}
		field++
		i := bytes.IndexByte(rest, ' ')
		if i < 0 {
			i = len(rest)
		}
		tok := bytes.TrimRight(rest[:i], "\n")
		rest = rest[i:]
		switch field {
		case 3:
			if len(tok) > 0 {
				s.State = tok[0]
			}
		case 4:
			v, err := parseInt(tok, 32)
			if err != nil {
				return s, fmt.Errorf("field ppid: %w", err)
			}
			s.PPID = int32(v)
		case 7:
			v, err := parseInt(tok, 32) // printed as %d of a dev_t
			if err != nil {
				return s, fmt.Errorf("field tty_nr: %w", err)
			}
			s.TTY = uint32(v)
		case 22:
			v, err := parseUint(tok, 64)
			if err != nil {
				return s, fmt.Errorf("field starttime: %w", err)
			}
			s.StartTime = v
		}
	}
	return s, nil
}

// parseStatusUID returns the real uid, the first number of the "Uid:" line
// of /proc/PID/status (real, effective, saved, filesystem).
func parseStatusUID(b []byte) (uint32, error) {
	rest, ok := findLine(b, "Uid:")
	if !ok {
		return 0, fmt.Errorf("field Uid: missing")
	}
	f := bytes.Fields(rest)
	if len(f) == 0 {
		return 0, fmt.Errorf("field Uid: %w", errShort)
	}
	v, err := parseUint(f[0], 32)
	if err != nil {
		return 0, fmt.Errorf("field Uid: %w", err)
	}
	return uint32(v), nil
}

// findLine returns the rest of the first line of b that starts with prefix.
func findLine(b []byte, prefix string) ([]byte, bool) {
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if rest, ok := bytes.CutPrefix(line, []byte(prefix)); ok {
			return rest, true
		}
	}
	return nil, false
}

// parseCmdline splits /proc/PID/cmdline into argv. The kernel ends every
// argument with a NUL; exactly one trailing NUL is dropped, so empty
// arguments (and the NUL padding some setproctitle implementations leave)
// are kept as empty strings: they are evidence, not noise. A process that
// rewrote its argv into one space-separated string yields one element, as
// is. Kernel threads have an empty cmdline: nil.
func parseCmdline(b []byte) []string {
	if len(b) == 0 {
		return nil
	}
	if b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	out := make([]string, 0, bytes.Count(b, []byte{0})+1)
	for {
		i := bytes.IndexByte(b, 0)
		if i < 0 {
			return append(out, string(b))
		}
		out = append(out, string(b[:i]))
		b = b[i+1:]
	}
}

// parseBtime returns the boot time in seconds since the epoch from the
// "btime" line of /proc/stat.
func parseBtime(b []byte) (int64, error) {
	rest, ok := findLine(b, "btime ")
	if !ok {
		return 0, fmt.Errorf("field btime: missing")
	}
	v, err := parseInt(bytes.TrimSpace(rest), 64)
	if err != nil {
		return 0, fmt.Errorf("field btime: %w", err)
	}
	return v, nil
}

// parsePasswd maps uid to user name from an /etc/passwd-format reader
// (name:password:uid:gid:gecos:home:shell). The first entry for a uid wins,
// as getpwuid(3) does. Comments, blank lines and NIS "+"/"-" lines are
// skipped; a malformed line is reported with its line number and field and
// the other lines are still used.
func parsePasswd(r io.Reader) (map[uint32]string, []error) {
	users := make(map[uint32]string)
	var errs []error
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if len(b) == 0 || b[0] == '#' || b[0] == '+' || b[0] == '-' {
			continue
		}
		f := bytes.SplitN(b, []byte(":"), 4)
		if len(f) < 4 {
			errs = append(errs, fmt.Errorf("line %d: field uid: %w", line, errShort))
			continue
		}
		if len(f[0]) == 0 {
			errs = append(errs, fmt.Errorf("line %d: field name: empty", line))
			continue
		}
		uid, err := parseUint(f[2], 32)
		if err != nil {
			errs = append(errs, fmt.Errorf("line %d: field uid %s: %w", line, strconv.Quote(string(f[2])), err))
			continue
		}
		if _, dup := users[uint32(uid)]; !dup {
			users[uint32(uid)] = string(f[0])
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("line %d: %w", line+1, err))
	}
	return users, errs
}
