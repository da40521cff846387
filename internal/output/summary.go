package output

import (
	"cmp"
	"io"
	"slices"
	"strconv"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// stateKey is a protocol and state: UDP's ESTABLISHED is not TCP's.
type stateKey struct {
	proto model.Proto
	state model.TCPState
}

// stateCount is how many sockets are in one protocol and state.
type stateCount struct {
	stateKey
	n int
}

// processCount is one row of the by-process summary.
type processCount struct {
	pid    int32 // -1 for sockets that no process holds
	name   string
	n      int
	states []stateCount
}

// summary is what WriteSummary counts, in output order.
type summary struct {
	total     int
	byProto   []stateCount // state unused
	byState   []stateCount
	byProcess []processCount
	unowned   processCount
}

// sortCounts orders by count, largest first, then protocol and state
// number, so equal counts come out the same way every run.
func sortCounts(cs []stateCount) {
	slices.SortFunc(cs, func(a, b stateCount) int {
		return cmp.Or(cmp.Compare(b.n, a.n), cmp.Compare(a.proto, b.proto), cmp.Compare(a.state, b.state))
	})
}

func countsOf(m map[stateKey]int) []stateCount {
	out := make([]stateCount, 0, len(m))
	for k, n := range m {
		out = append(out, stateCount{k, n})
	}
	sortCounts(out)
	return out
}

func summarize(snap *model.Snapshot, socks []model.Socket) summary {
	byProto := map[stateKey]int{}
	byState := map[stateKey]int{}
	procStates := map[int32]map[stateKey]int{}
	unowned := map[stateKey]int{}
	for i := range socks {
		s := &socks[i]
		k := stateKey{s.Proto, s.State}
		byProto[stateKey{proto: s.Proto}]++
		byState[k]++
		if len(s.Owners) == 0 {
			unowned[k]++
		}
		for _, o := range s.Owners {
			m := procStates[o.PID]
			if m == nil {
				m = map[stateKey]int{}
				procStates[o.PID] = m
			}
			m[k]++
		}
	}
	sum := summary{
		total:   len(socks),
		byProto: countsOf(byProto),
		byState: countsOf(byState),
		unowned: processCount{pid: -1, states: countsOf(unowned)},
	}
	for _, c := range sum.unowned.states {
		sum.unowned.n += c.n
	}
	for pid, m := range procStates {
		pc := processCount{pid: pid, states: countsOf(m)}
		for _, c := range pc.states {
			pc.n += c.n
		}
		if snap != nil {
			if p := snap.Processes[pid]; p != nil {
				pc.name = p.Name
			}
		}
		sum.byProcess = append(sum.byProcess, pc)
	}
	slices.SortFunc(sum.byProcess, func(a, b processCount) int {
		return cmp.Or(cmp.Compare(b.n, a.n), cmp.Compare(a.name, b.name), cmp.Compare(a.pid, b.pid))
	})
	return sum
}

// WriteSummary writes how many of socks are in each protocol and state,
// and how many each process holds, in which states, largest counts first.
// A socket held by several processes counts once for each of them;
// sockets that no process holds (TIME_WAIT, request sockets, or owners not
// visible without privileges) are counted apart. With jsonMode the summary
// is one JSON object (fields in docs/conns-json.md), else text for people.
func WriteSummary(w io.Writer, snap *model.Snapshot, socks []model.Socket, jsonMode bool) error {
	sum := summarize(snap, socks)
	var b []byte
	if jsonMode {
		b = appendSummaryJSON(b, snap, &sum)
	} else {
		b = appendSummaryText(b, snap, &sum)
	}
	_, err := w.Write(b)
	return err
}

func appendSummaryText(b []byte, snap *model.Snapshot, sum *summary) []byte {
	b = append(b, "Sockets: "...)
	b = strconv.AppendInt(b, int64(sum.total), 10)
	if len(sum.byProto) > 0 {
		b = append(b, " ("...)
		for i, c := range sum.byProto {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = append(b, c.proto.String()...)
			b = append(b, ' ')
			b = strconv.AppendInt(b, int64(c.n), 10)
		}
		b = append(b, ')')
	}
	if snap != nil {
		if snap.Host != "" {
			b = append(b, " on "...)
			b = append(b, Sanitize(snap.Host)...)
		}
		if !snap.Time.IsZero() {
			b = append(b, " at "...)
			b = snap.Time.UTC().AppendFormat(b, "2006-01-02T15:04:05Z07:00")
		}
	}
	b = append(b, "\n"...)
	if sum.total == 0 {
		return b
	}

	rows := make([][3]string, 0, len(sum.byState))
	for _, c := range sum.byState {
		rows = append(rows, [3]string{c.proto.String(), model.SocketStateName(c.proto, c.state), strconv.Itoa(c.n)})
	}
	b = append(b, '\n')
	b = appendTextTable(b, [3]string{"Proto", "State", "Count"}, rows, 2)

	rows = rows[:0]
	procs := sum.byProcess
	if sum.unowned.n > 0 {
		// The unowned row sorts with the others by count; among equal
		// counts it goes last.
		procs = append(slices.Clone(procs), sum.unowned)
		slices.SortStableFunc(procs, func(a, b processCount) int { return cmp.Compare(b.n, a.n) })
	}
	for _, p := range procs {
		who := "(no process)"
		if p.pid >= 0 {
			who = Sanitize(orQuestion(p.name)) + "/" + strconv.FormatInt(int64(p.pid), 10)
		}
		rows = append(rows, [3]string{strconv.Itoa(p.n), who, formatStateCounts(p.states)})
	}
	b = append(b, '\n')
	return appendTextTable(b, [3]string{"Count", "Process", "States"}, rows, 0)
}

// appendTextTable writes a small left-aligned table, with column
// rightCol aligned right; the last column is not padded.
func appendTextTable(b []byte, header [3]string, rows [][3]string, rightCol int) []byte {
	var widths [3]int
	for c := range 3 {
		widths[c] = displayWidth(header[c])
		for _, r := range rows {
			widths[c] = max(widths[c], displayWidth(r[c]))
		}
	}
	line := func(r *[3]string) {
		for c := range 3 {
			pad := widths[c] - displayWidth(r[c])
			if c > 0 {
				b = append(b, ' ')
			}
			if c == rightCol {
				b = appendSpaces(b, pad)
			}
			b = append(b, r[c]...)
			if c != rightCol && c != 2 {
				b = appendSpaces(b, pad)
			}
		}
		b = append(b, '\n')
	}
	line(&header)
	for i := range rows {
		line(&rows[i])
	}
	return b
}

// formatStateCounts writes "tcp ESTABLISHED 38, tcp LISTEN 2".
func formatStateCounts(cs []stateCount) string {
	var b []byte
	for i, c := range cs {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, c.proto.String()...)
		b = append(b, ' ')
		b = append(b, model.SocketStateName(c.proto, c.state)...)
		b = append(b, ' ')
		b = strconv.AppendInt(b, int64(c.n), 10)
	}
	return string(b)
}

func orQuestion(s string) string {
	if s == "" {
		return "?"
	}
	return s
}

func appendSummaryJSON(b []byte, snap *model.Snapshot, sum *summary) []byte {
	b = append(b, '{')
	first := true
	if snap != nil && snap.Host != "" {
		b = appendJSONString(appendKey(b, "host", true), snap.Host)
		first = false
	}
	if snap != nil && !snap.Time.IsZero() {
		b = appendTime(appendKey(b, "time", first), snap.Time)
		first = false
	}
	b = strconv.AppendInt(appendKey(b, "sockets", first), int64(sum.total), 10)
	b = appendKey(b, "by_proto", false)
	b = append(b, '{')
	for i, c := range sum.byProto {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, c.proto.String())
		b = append(b, ':')
		b = strconv.AppendInt(b, int64(c.n), 10)
	}
	b = append(b, '}')
	b = appendStateCountsJSON(appendKey(b, "by_state", false), sum.byState)
	b = appendKey(b, "by_process", false)
	b = append(b, '[')
	for i := range sum.byProcess {
		p := &sum.byProcess[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(appendKey(append(b, '{'), "pid", true), int64(p.pid), 10)
		if p.name != "" {
			b = appendStringField(b, "name", p.name)
		}
		b = appendIntField(b, "count", int64(p.n))
		b = appendStateCountsJSON(appendKey(b, "states", false), p.states)
		b = append(b, '}')
	}
	b = append(b, ']')
	b = strconv.AppendInt(appendKey(append(appendKey(b, "unowned", false), '{'), "count", true), int64(sum.unowned.n), 10)
	b = appendStateCountsJSON(appendKey(b, "states", false), sum.unowned.states)
	return append(b, '}', '}', '\n')
}

// appendStateCountsJSON writes [{"proto":"tcp","state":"LISTEN","count":2},…].
func appendStateCountsJSON(b []byte, cs []stateCount) []byte {
	b = append(b, '[')
	for i, c := range cs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"proto":`...)
		b = appendJSONString(b, c.proto.String())
		b = appendStringField(b, "state", model.SocketStateName(c.proto, c.state))
		b = appendIntField(b, "count", int64(c.n))
		b = append(b, '}')
	}
	return append(b, ']')
}
