package output

import (
	"io"
	"net/netip"
	"strconv"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// JSONOptions tunes WriteJSON.
type JSONOptions struct {
	// UserName returns the user name of a uid, or "" when unknown. Nil
	// uses the names the snapshot's processes carry, then the system user
	// database.
	UserName func(uid uint32) string
}

// flushAt is how much WriteJSON buffers before writing, so that an
// unbuffered writer sees few large writes rather than one per socket.
const flushAt = 64 << 10

// WriteJSON writes one JSON object per socket, one per line, in the order
// of socks. The field names are a contract documented in docs/conns-json.md. snap
// supplies the process details of the owners and the time ages are
// measured at; it may be nil, and then neither is known.
func WriteJSON(w io.Writer, snap *model.Snapshot, socks []model.Socket, opts JSONOptions) error {
	e := jsonEncoder{
		snap:  snap,
		users: newUserNames(opts.UserName, snap),
		procs: make(map[int32][]byte),
	}
	b := make([]byte, 0, flushAt+4096)
	for i := range socks {
		b = e.appendSocket(b, &socks[i])
		b = append(b, '\n')
		if len(b) >= flushAt {
			if _, err := w.Write(b); err != nil {
				return err
			}
			b = b[:0]
		}
	}
	if len(b) > 0 {
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// jsonEncoder holds what one WriteJSON call reuses across sockets.
type jsonEncoder struct {
	snap  *model.Snapshot
	users *userNames
	// procs caches each process's encoded fields (everything but fds): a
	// server process owns thousands of sockets and its command line can be
	// kilobytes, so it is escaped once, not once per socket.
	procs map[int32][]byte
}

func (e *jsonEncoder) appendSocket(b []byte, s *model.Socket) []byte {
	b = append(b, '{')
	first := true
	if s.Netns != "" {
		b = appendJSONString(appendKey(b, "netns", true), s.Netns)
		first = false
	}
	b = appendJSONString(appendKey(b, "proto", first), s.Proto.String())
	if fam := family(s); fam != "" {
		b = appendStringField(b, "family", fam)
	}
	b = appendStringField(b, "state", model.SocketStateName(s.Proto, s.State))
	b = appendAddrFields(b, "local_addr", "local_port", s.Local)
	b = appendAddrFields(b, "remote_addr", "remote_port", s.Remote)
	b = appendUintField(b, "recv_q", uint64(s.RecvQ))
	b = appendUintField(b, "send_q", uint64(s.SendQ))
	b = appendUintField(b, "uid", uint64(s.UID))
	if u := e.users.name(s.UID); u != "" {
		b = appendStringField(b, "user", u)
	}
	if s.Inode != 0 {
		b = appendUintField(b, "inode", s.Inode)
	}
	if s.Iface != 0 {
		b = appendUintField(b, "iface", uint64(s.Iface))
	}
	age := ageOf(e.snap, s)
	switch age.kind {
	case ageConntrack:
		b = appendKey(b, "conn_start", false)
		b = appendTime(b, s.ConnStart)
		if age.known {
			b = appendSeconds(appendKey(b, "age_s", false), age.d)
		}
	case ageProcess:
		b = appendSeconds(appendKey(b, "age_max_s", false), age.d)
		b = appendIntField(b, "age_max_pid", int64(age.pid))
	}
	if s.TCP != nil {
		b = appendTCPInfo(appendKey(b, "tcp", false), s.TCP)
	}
	b = appendKey(b, "processes", false)
	b = append(b, '[')
	for i := range s.Owners {
		if i > 0 {
			b = append(b, ',')
		}
		b = e.appendOwner(b, &s.Owners[i])
	}
	b = append(b, ']')
	if e.snap != nil {
		if !e.snap.Time.IsZero() {
			b = appendTime(appendKey(b, "time", false), e.snap.Time)
		}
		if e.snap.Host != "" {
			b = appendStringField(b, "host", e.snap.Host)
		}
	}
	return append(b, '}')
}

// family names the socket's address family from its addresses; a dual-stack
// socket talking to an IPv4 peer is "ipv6" (its addresses are IPv4-mapped),
// as the kernel reports it.
func family(s *model.Socket) string {
	a := s.Local.Addr()
	if !a.IsValid() {
		a = s.Remote.Addr()
	}
	switch {
	case a.Is4():
		return "ipv4"
	case a.Is6():
		return "ipv6"
	}
	return ""
}

// appendAddrFields writes an address and port pair; both are null when
// the address is invalid (the collector could not read it).
func appendAddrFields(b []byte, addrKey, portKey string, ap netip.AddrPort) []byte {
	a := ap.Addr()
	b = appendKey(b, addrKey, false)
	switch {
	case !a.IsValid():
		b = append(b, "null"...)
		return append(appendKey(b, portKey, false), "null"...)
	case a.Zone() != "":
		b = appendJSONString(b, a.String()) // the zone is an interface name: escape it
	default:
		b = append(b, '"')
		b = a.AppendTo(b)
		b = append(b, '"')
	}
	return appendUintField(b, portKey, uint64(ap.Port()))
}

func appendTCPInfo(b []byte, t *model.TCPInfo) []byte {
	b = append(b, `{"rtt_ms":`...)
	b = appendMillis(b, t.RTT)
	b = appendMillis(appendKey(b, "rttvar_ms", false), t.RTTVar)
	b = appendUintField(b, "retransmits", uint64(t.Retransmits))
	b = appendUintField(b, "total_retrans", uint64(t.TotalRetrans))
	b = appendUintField(b, "bytes_acked", t.BytesAcked)
	b = appendUintField(b, "bytes_received", t.BytesReceived)
	b = appendUintField(b, "bytes_sent", t.BytesSent)
	b = appendUintField(b, "segs_out", uint64(t.SegsOut))
	b = appendUintField(b, "segs_in", uint64(t.SegsIn))
	b = appendMillis(appendKey(b, "last_send_ms", false), t.LastSend)
	b = appendMillis(appendKey(b, "last_recv_ms", false), t.LastRecv)
	return append(b, '}')
}

// appendOwner writes one owner: the cached process fields when the
// snapshot has the process, else only its pid, then its descriptors.
func (e *jsonEncoder) appendOwner(b []byte, o *model.Owner) []byte {
	b = append(b, '{')
	if enc, ok := e.procs[o.PID]; ok {
		b = append(b, enc...)
	} else {
		start := len(b)
		b = e.appendProcess(b, o.PID)
		e.procs[o.PID] = append([]byte(nil), b[start:]...)
	}
	b = appendKey(b, "fds", false)
	b = append(b, '[')
	for i, fd := range o.FDs {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(fd), 10)
	}
	return append(b, ']', '}')
}

// appendProcess writes the fields of process pid, without braces.
func (e *jsonEncoder) appendProcess(b []byte, pid int32) []byte {
	b = strconv.AppendInt(appendKey(b, "pid", true), int64(pid), 10)
	var p *model.Process
	if e.snap != nil {
		p = e.snap.Processes[pid]
	}
	if p == nil {
		return b
	}
	b = appendIntField(b, "ppid", int64(p.PPID))
	b = appendStringField(b, "name", p.Name)
	if p.Exe != "" {
		b = appendStringField(b, "exe", p.Exe)
	}
	if len(p.Cmdline) > 0 {
		b = appendKey(b, "cmdline", false)
		b = append(b, '[')
		for i, arg := range p.Cmdline {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, arg)
		}
		b = append(b, ']')
	}
	b = appendUintField(b, "uid", uint64(p.UID))
	user := p.User
	if user == "" {
		user = e.users.name(p.UID)
	}
	if user != "" {
		b = appendStringField(b, "user", user)
	}
	if !p.Start.IsZero() {
		b = appendTime(appendKey(b, "start", false), p.Start)
	}
	if p.TTY != 0 {
		b = appendUintField(b, "tty", uint64(p.TTY))
	}
	return b
}

// ageKind says what is known about how long a socket has existed.
type ageKind uint8

const (
	ageUnknown   ageKind = iota
	ageConntrack         // conntrack's start time of the connection
	ageProcess           // only an upper bound: the start of the oldest owning process
)

// socketAge is what ageOf found.
type socketAge struct {
	kind  ageKind
	known bool          // d is meaningful (the snapshot has a time)
	d     time.Duration // the age, or its upper bound; never negative
	pid   int32         // for ageProcess: the process whose start bounds the age
}

// ageOf measures ages at the snapshot's time, never the wall clock, so the
// same snapshot renders the same way later and in tests.
//
// Without a conntrack start, a socket is no older than the process that
// created it, and that process is normally still among its owners (the
// creator, or a process it forked that still holds it). The oldest
// owner's start therefore bounds the age from above. The bound can be
// too low when every process that held the socket at creation has exited
// or passed it on (a daemon that forked after opening it, systemd socket
// activation): docs/conns-json.md says so.
func ageOf(snap *model.Snapshot, s *model.Socket) socketAge {
	var now time.Time
	if snap != nil {
		now = snap.Time
	}
	if !s.ConnStart.IsZero() {
		a := socketAge{kind: ageConntrack}
		if !now.IsZero() {
			a.known = true
			a.d = max(now.Sub(s.ConnStart), 0)
		}
		return a
	}
	if now.IsZero() {
		return socketAge{}
	}
	var oldest *model.Process
	var pid int32
	for i := range s.Owners {
		p := snap.Processes[s.Owners[i].PID]
		if p == nil || p.Start.IsZero() {
			continue
		}
		if oldest == nil || p.Start.Before(oldest.Start) {
			oldest, pid = p, s.Owners[i].PID
		}
	}
	if oldest == nil {
		return socketAge{}
	}
	return socketAge{kind: ageProcess, known: true, d: max(now.Sub(oldest.Start), 0), pid: pid}
}
