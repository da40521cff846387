package proc

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// lineError is a bad line in a /proc/net table: the other lines are still used.
type lineError struct {
	File  string // empty when parsing a reader that has no name
	Line  int    // 1-based, the header being line 1
	Field string // column name as in the header (local_address, st, …)
	Value string // offending text, shortened
	Err   error
}

func (e *lineError) Error() string {
	where := "line " + strconv.Itoa(e.Line)
	if e.File != "" {
		where = e.File + ":" + strconv.Itoa(e.Line)
	}
	return fmt.Sprintf("%s: field %s %q: %v", where, e.Field, e.Value, e.Err)
}

func (e *lineError) Unwrap() error { return e.Err }

// ReadProcNet enumerates TCP and UDP sockets from the text tables under
// root/thread-self/net (root "" means "/proc"): the fallback for when
// netlink SOCK_DIAG is refused. It has no TCPInfo, no interface and, for
// listeners, no backlog (SendQ is 0; RecvQ is the accept queue length).
//
// /proc/net shows the network namespace of the thread that opens it, hence
// thread-self: a caller that locked its goroutine to a thread
// (runtime.LockOSThread) and setns'd that thread into another namespace
// gets that namespace's sockets. Socket.Netns is left empty for the
// caller, which knows which namespace it entered, to fill in.
//
// A missing table (tcp6 and udp6 without IPv6) is skipped. Bad lines are
// reported in the returned error, each naming file, line and field, and
// the sockets of the good lines are returned with it.
func ReadProcNet(root string) ([]model.Socket, error) {
	dir := cmp.Or(root, "/proc") + "/thread-self/net/"
	files := [...]struct {
		name  string
		proto model.Proto
		v6    bool
	}{
		{"tcp", model.ProtoTCP, false},
		{"tcp6", model.ProtoTCP, true},
		{"udp", model.ProtoUDP, false},
		{"udp6", model.ProtoUDP, true},
	}
	var socks []model.Socket
	var errs []error
	for _, f := range files {
		path := dir + f.name
		fh, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s, perrs := parseProcNet(fh, f.proto, f.v6)
		fh.Close()
		for _, e := range perrs {
			if le, ok := e.(*lineError); ok {
				le.File = path
			} else {
				e = fmt.Errorf("%s: %w", path, e)
			}
			errs = append(errs, e)
		}
		socks = append(socks, s...)
	}
	return socks, errors.Join(errs...)
}

// Column indexes of a /proc/net/{tcp,udp}[6] line, split on blanks.
const (
	colSl = iota
	colLocal
	colRemote
	colState
	colQueues // tx_queue:rx_queue
	colTimer  // tr:tm->when
	colRetr
	colUID
	colTimeout
	colInode
	nCols
)

// parseProcNet parses one /proc/net/{tcp,tcp6,udp,udp6} table. Addresses
// are hex words in host byte order (on x86, 0100007F is 127.0.0.1; IPv6 is
// four such 32-bit words), ports are big-endian hex, st is the kernel state
// number in hex (model.TCPState), queues are hex, uid and inode decimal.
// IPv4-mapped addresses in the v6 tables are kept as IPv6, as netlink
// reports them. A bad line yields an error and no socket; parsing goes on.
func parseProcNet(r io.Reader, proto model.Proto, v6 bool) ([]model.Socket, []error) {
	colNames := [nCols]string{"sl", "local_address", "rem_address", "st", "tx_queue:rx_queue",
		"tr:tm->when", "retrnsmt", "uid", "timeout", "inode"}
	var socks []model.Socket
	var errs []error
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	line := 0
	var f [nCols][]byte
	for sc.Scan() {
		line++
		n := splitFields(sc.Bytes(), f[:])
		if n == 0 || string(f[colSl]) == "sl" {
			continue // blank or header
		}
		s, col, err := parseProcNetLine(&f, n, proto, v6)
		if err != nil {
			val := string(f[col])
			if len(val) > 64 {
				val = val[:64] + "…"
			}
			errs = append(errs, &lineError{Line: line, Field: colNames[col], Value: val, Err: err})
			continue
		}
		socks = append(socks, s)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("line %d: %w", line+1, err))
	}
	return socks, errs
}

// splitFields splits b on spaces and tabs into f (extra fields are ignored)
// and returns how many it filled, without allocating.
func splitFields(b []byte, f [][]byte) int {
	n := 0
	for n < len(f) {
		b = bytes.TrimLeft(b, " \t")
		if len(b) == 0 {
			break
		}
		i := bytes.IndexAny(b, " \t")
		if i < 0 {
			i = len(b)
		}
		f[n], b = b[:i], b[i:]
		n++
	}
	for i := n; i < len(f); i++ {
		f[i] = nil
	}
	return n
}

// parseProcNetLine decodes the fields of one line; on error, col says which.
func parseProcNetLine(f *[nCols][]byte, n int, proto model.Proto, v6 bool) (s model.Socket, col int, err error) {
	if n < nCols {
		return s, min(n, nCols-1), errShort
	}
	s.Proto = proto
	if s.Local, err = parseHexAddrPort(f[colLocal], v6); err != nil {
		return s, colLocal, err
	}
	if s.Remote, err = parseHexAddrPort(f[colRemote], v6); err != nil {
		return s, colRemote, err
	}
	st, err := parseHex(f[colState], 8)
	if err != nil {
		return s, colState, err
	}
	s.State = model.TCPState(st)
	tx, rx, ok := bytes.Cut(f[colQueues], []byte(":"))
	if !ok {
		return s, colQueues, errSyntax
	}
	q, err := parseHex(tx, 32)
	if err != nil {
		return s, colQueues, err
	}
	s.SendQ = uint32(q)
	if q, err = parseHex(rx, 32); err != nil {
		return s, colQueues, err
	}
	s.RecvQ = uint32(q)
	uid, err := parseUint(f[colUID], 32)
	if err != nil {
		return s, colUID, err
	}
	s.UID = uint32(uid)
	if s.Inode, err = parseUint(f[colInode], 64); err != nil {
		return s, colInode, err
	}
	return s, 0, nil
}

// parseHexAddrPort decodes "0100007F:0CEA" (or 32 hex digits for IPv6).
func parseHexAddrPort(b []byte, v6 bool) (netip.AddrPort, error) {
	a, p, ok := bytes.Cut(b, []byte(":"))
	words := 1
	if v6 {
		words = 4
	}
	if !ok || len(a) != 8*words || len(p) != 4 {
		return netip.AddrPort{}, errSyntax
	}
	port, err := parseHex(p, 16)
	if err != nil {
		return netip.AddrPort{}, err
	}
	var raw [16]byte
	for i := range words {
		w, err := parseHex(a[8*i:8*i+8], 32)
		if err != nil {
			return netip.AddrPort{}, err
		}
		// The kernel prints each 32-bit word of the network-order address
		// as a host-order integer; writing it back in host order restores
		// the network-order bytes.
		binary.NativeEndian.PutUint32(raw[4*i:], uint32(w))
	}
	var addr netip.Addr
	if v6 {
		addr = netip.AddrFrom16(raw)
	} else {
		addr = netip.AddrFrom4([4]byte(raw[:4]))
	}
	return netip.AddrPortFrom(addr, uint16(port)), nil
}
