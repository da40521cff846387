package output

import (
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// TableOptions tunes WriteTable.
type TableOptions struct {
	// Width is the terminal width in cells; lines are kept within it by
	// truncating the Process column, then User and Netns, never the
	// addresses. 0 means no limit.
	Width int
	// Color turns on ANSI colours for states. The caller decides (see
	// ColorEnabled): WriteTable never looks at the terminal itself.
	Color bool
	// UserName returns the user name of a uid, or "" when unknown (the uid
	// is shown then). Nil works as in JSONOptions.
	UserName func(uid uint32) string
}

// ColorEnabled reports whether output to f should be coloured: f is a
// terminal, NO_COLOR is unset or empty (https://no-color.org) and TERM is
// not "dumb".
func ColorEnabled(f *os.File) bool {
	return colorEnabled(f != nil && term.IsTerminal(int(f.Fd())), os.Getenv)
}

func colorEnabled(isTerminal bool, getenv func(string) string) bool {
	return isTerminal && getenv("NO_COLOR") == "" && getenv("TERM") != "dumb"
}

// Table columns, in display order.
const (
	colNetns = iota
	colNetid
	colState
	colRecvQ
	colSendQ
	colLocal
	colPeer
	colAge
	colUser
	colProcess
	numCols
)

var colHeaders = [numCols]string{
	"Netns", "Netid", "State", "Recv-Q", "Send-Q",
	"Local Address:Port", "Peer Address:Port", "Age", "User", "Process",
}

// colRightAligned marks the numeric-like columns, aligned right as ss does.
var colRightAligned = [numCols]bool{colRecvQ: true, colSendQ: true, colAge: true}

// shrinkOrder lists the columns that may be truncated to fit the width,
// first to last, with the width each keeps at least. Addresses, states
// and ages are never cut: they are what the responder acts on.
var shrinkOrder = [...]struct{ col, min int }{
	{colProcess, 10},
	{colUser, 8}, // "www-data", "postgres"
	{colNetns, 8},
}

// ANSI SGR sequences.
const (
	sgrReset  = "\x1b[0m"
	sgrBold   = "\x1b[1m"
	sgrGreen  = "\x1b[32m"
	sgrYellow = "\x1b[33m"
)

// stateColor picks the colour of a state cell: listeners green, the
// states where sockets pile up when something is wrong (half-open
// handshakes, peers closed but the application did not) yellow. The table
// does not judge suspicion; detectors do.
func stateColor(p model.Proto, s model.TCPState) string {
	switch {
	case s == model.StateListen, p == model.ProtoUDP && s == model.StateClose:
		return sgrGreen
	case s == model.StateSynRecv, s == model.StateNewSynRecv, s == model.StateCloseWait:
		return sgrYellow
	}
	return ""
}

// ageBoundLegend explains the "<=" marker; it is printed under the table
// when the marker is used.
const ageBoundLegend = "Age <=D: at most D old: no conntrack start time, its oldest owner started D ago\n"

// WriteTable writes socks as an aligned table in the style of ss, one
// socket per line, in the order of socks. Every name is sanitised; see
// TableOptions for width and colour.
func WriteTable(w io.Writer, snap *model.Snapshot, socks []model.Socket, opts TableOptions) error {
	users := newUserNames(opts.UserName, snap)
	showNetns := false
	for i := range socks {
		if socks[i].Netns != "" {
			showNetns = true
			break
		}
	}

	rows := make([]tableRow, len(socks))
	bounded := false
	for i := range socks {
		s := &socks[i]
		r := &rows[i].cells
		if showNetns {
			r[colNetns] = orDash(Sanitize(s.Netns))
		}
		r[colNetid] = s.Proto.String()
		r[colState] = model.SocketStateName(s.Proto, s.State)
		r[colRecvQ] = strconv.FormatUint(uint64(s.RecvQ), 10)
		r[colSendQ] = strconv.FormatUint(uint64(s.SendQ), 10)
		r[colLocal] = formatAddrPort(s.Local)
		r[colPeer] = formatAddrPort(s.Remote)
		age := ageOf(snap, s)
		switch {
		case !age.known:
			r[colAge] = "-"
		case age.kind == ageProcess:
			r[colAge] = "<=" + formatAge(age.d)
			bounded = true
		default:
			r[colAge] = formatAge(age.d)
		}
		r[colUser] = Sanitize(users.orUID(s.UID))
		r[colProcess] = formatOwners(snap, s.Owners)
		if opts.Color {
			rows[i].sgr = stateColor(s.Proto, s.State)
		}
		rows[i].measure()
	}

	header := tableRow{cells: colHeaders}
	header.measure()
	if opts.Color {
		header.sgr = sgrBold
	}
	var widths [numCols]int
	for c := range numCols {
		if c == colNetns && !showNetns {
			continue
		}
		widths[c] = header.widths[c]
		for i := range rows {
			widths[c] = max(widths[c], rows[i].widths[c])
		}
	}
	fitWidths(&widths, opts.Width)

	b := make([]byte, 0, flushAt+4096)
	b = appendRow(b, &widths, &header, true)
	for i := range rows {
		b = appendRow(b, &widths, &rows[i], false)
		if len(b) >= flushAt {
			if _, err := w.Write(b); err != nil {
				return err
			}
			b = b[:0]
		}
	}
	if bounded {
		b = append(b, ageBoundLegend...)
	}
	_, err := w.Write(b)
	return err
}

// fitWidths narrows the shrinkable columns, in shrinkOrder, until a line
// fits in limit cells. When even their minimums do not fit, lines are left
// longer than the limit rather than cutting an address.
func fitWidths(widths *[numCols]int, limit int) {
	if limit <= 0 {
		return
	}
	total := -1 // no separator before the first column
	for _, w := range widths {
		if w > 0 {
			total += w + 1
		}
	}
	for _, s := range shrinkOrder {
		if total <= limit {
			return
		}
		w := widths[s.col]
		if w <= s.min {
			continue
		}
		cut := min(total-limit, w-s.min)
		widths[s.col] -= cut
		total -= cut
	}
}

// tableRow is one line of the table before layout.
type tableRow struct {
	cells  [numCols]string
	widths [numCols]int // display width of each cell, measured once
	sgr    string       // colour of the State cell (of every cell for the header); "" for none
}

func (r *tableRow) measure() {
	for c, s := range r.cells {
		r.widths[c] = displayWidth(s)
	}
}

// appendRow appends one line: cells padded to their column width and
// separated by one space, the last column unpadded so lines have no
// trailing blanks.
func appendRow(b []byte, widths *[numCols]int, r *tableRow, header bool) []byte {
	last := numCols - 1
	for last > 0 && widths[last] == 0 {
		last--
	}
	first := true
	for c := 0; c <= last; c++ {
		if widths[c] == 0 {
			continue
		}
		if !first {
			b = append(b, ' ')
		}
		first = false
		cell, cw := r.cells[c], r.widths[c]
		if cw > widths[c] {
			cell = truncateWidth(cell, widths[c])
			cw = displayWidth(cell)
		}
		pad := widths[c] - cw
		if colRightAligned[c] {
			b = appendSpaces(b, pad)
		}
		sgr := r.sgr
		if c != colState && !header {
			sgr = ""
		}
		if sgr != "" {
			b = append(b, sgr...)
		}
		b = append(b, cell...)
		if sgr != "" {
			b = append(b, sgrReset...)
		}
		if !colRightAligned[c] && c != last {
			b = appendSpaces(b, pad)
		}
	}
	return append(b, '\n')
}

func appendSpaces(b []byte, n int) []byte {
	for ; n > 0; n-- {
		b = append(b, ' ')
	}
	return b
}

// formatAddrPort writes an endpoint as ss does: IPv6 in brackets, port 0
// (a listener's peer, an unconnected socket) as "*".
func formatAddrPort(ap netip.AddrPort) string {
	a := ap.Addr()
	if !a.IsValid() {
		return "*"
	}
	var buf [64]byte // an IPv6 address with port, without zone, fits
	b := buf[:0]
	if a.Is6() {
		b = append(b, '[')
		b = a.AppendTo(b)
		b = append(b, ']')
	} else {
		b = a.AppendTo(b)
	}
	b = append(b, ':')
	if ap.Port() == 0 {
		b = append(b, '*')
	} else {
		b = strconv.AppendUint(b, uint64(ap.Port()), 10)
	}
	if a.Zone() != "" {
		// A zone is an interface name, which is text from outside.
		return Sanitize(string(b))
	}
	return string(b)
}

// formatOwners lists the owners as name/pid, comma-separated; "?" stands
// for a name the snapshot does not have.
func formatOwners(snap *model.Snapshot, owners []model.Owner) string {
	if len(owners) == 0 {
		return "-"
	}
	var sb strings.Builder
	for i := range owners {
		if i > 0 {
			sb.WriteByte(',')
		}
		name := ""
		if snap != nil {
			if p := snap.Processes[owners[i].PID]; p != nil {
				name = p.Name
			}
		}
		if name == "" {
			name = "?"
		}
		sb.WriteString(Sanitize(name))
		sb.WriteByte('/')
		sb.WriteString(strconv.FormatInt(int64(owners[i].PID), 10))
	}
	return sb.String()
}

// formatAge writes a duration in its two largest units, as people read
// ages: "42s", "5m3s", "3h12m", "2d3h".
func formatAge(d time.Duration) string {
	const day = 24 * time.Hour
	var big, small time.Duration
	var bigU, smallU string
	switch {
	case d < time.Minute:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	case d < time.Hour:
		big, bigU, small, smallU = time.Minute, "m", time.Second, "s"
	case d < day:
		big, bigU, small, smallU = time.Hour, "h", time.Minute, "m"
	default:
		big, bigU, small, smallU = day, "d", time.Hour, "h"
	}
	s := strconv.FormatInt(int64(d/big), 10) + bigU
	if n := (d % big) / small; n > 0 {
		s += strconv.FormatInt(int64(n), 10) + smallU
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
