// Package sockfilter selects sockets for `tcpsentry conns`: it parses the
// filter flags once (Parse), reporting a bad value with the flag that
// carried it, and then tests each socket of a snapshot (Match) without
// allocating.
//
// Criteria combine with AND; the values given for one criterion combine
// with OR, so `--dport 80 --dport 443 --state established` means
// "established, to port 80 or 443".
package sockfilter

import (
	"fmt"
	"math"
	"net/netip"
	"os/user"
	"path"
	"strconv"
	"strings"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// Spec holds the raw values of the filter flags, as the command line gave
// them. Empty fields do not filter.
type Spec struct {
	// States are kernel state names (SYN_RECV), ss names (syn-recv, estab,
	// unconn, closed), case-insensitive, or the groups all, connected (all
	// but LISTEN and CLOSE/UNCONN), synchronized (connected but SYN_SENT),
	// listening (TCP LISTEN and UDP UNCONN), bucket (SYN_RECV, TIME_WAIT)
	// and big (all but bucket), with ss's meanings.
	States []string
	// Protos are protocol names: tcp, udp.
	Protos []string
	// Family is "4", "inet" or "ipv4" for AF_INET sockets, "6", "inet6" or
	// "ipv6" for AF_INET6 ones (dual-stack sockets included), "" for both.
	Family string
	// SPorts and DPorts are local and remote ports: "443" or a range
	// "1000-2000", inclusive.
	SPorts, DPorts []string
	// Addrs are addresses ("10.0.0.1", "2001:db8::1") or prefixes
	// ("10.0.0.0/8") matched against either end; SrcAddrs against the
	// local end only, DstAddrs against the remote end. IPv4-mapped IPv6
	// addresses match IPv4 prefixes, and the other way round.
	Addrs, SrcAddrs, DstAddrs []string
	// PIDs are process ids; a socket matches when one of its owners has one.
	PIDs []int
	// ProcessNames match an owner's name (comm) or the base name of its
	// executable, exactly or as a glob ("python*", "kworker/*"): path.Match
	// syntax, except that '*' and '?' match '/' too.
	ProcessNames []string
	// Users are user names or numeric uids, matched against the socket's
	// uid and its owners' uids.
	Users []string
	// Listening keeps only listening TCP and unconnected UDP sockets.
	Listening bool

	// LookupUser resolves a user name to its uid for Users; nil uses the
	// system user database. Tests set it.
	LookupUser func(name string) (uid uint32, ok bool)
}

// Error is a filter value that Parse rejected.
type Error struct {
	Flag   string // the flag, with dashes: "--sport"
	Value  string // the value as given
	Reason string // what is wrong with it
}

// Error formats the error as the command line shows it:
// `--sport "70000": port out of range 0-65535`.
func (e *Error) Error() string {
	return fmt.Sprintf("%s %q: %s", e.Flag, e.Value, e.Reason)
}

// Filter is a parsed Spec. The zero value and a nil *Filter match every
// socket.
type Filter struct {
	// Bit s of tcpStates (udpStates for every other protocol) is set when
	// state s matches; stateFilter is false when no state was asked for.
	stateFilter          bool
	tcpStates, udpStates uint64
	protos               []model.Proto
	family               family
	sports, dports       []portRange
	addrs, srcs, dsts    []netip.Prefix
	pids                 []int32
	names                []namePattern
	uids                 []uint32
	listening            bool
}

type family uint8

const (
	familyAny family = iota
	family4
	family6
)

// portRange is an inclusive range of ports; a single port has lo == hi.
type portRange struct{ lo, hi uint16 }

// namePattern is one --process value.
type namePattern struct {
	pattern string
	glob    bool // has glob metacharacters: use globMatch
}

// commLen is the longest process name the kernel keeps (TASK_COMM_LEN-1):
// longer names are cut, so "systemd-resolved" runs as "systemd-resolve".
const commLen = 15

// Parse checks every value of spec and returns the filter they describe.
// The first bad value is returned as an *Error naming its flag.
func Parse(spec Spec) (*Filter, error) {
	f := &Filter{listening: spec.Listening}
	var err error
	if err = f.parseStates(spec.States); err != nil {
		return nil, err
	}
	for _, v := range spec.Protos {
		p, ok := model.ParseProto(strings.TrimSpace(v))
		if !ok || (p != model.ProtoTCP && p != model.ProtoUDP) {
			return nil, &Error{"--proto", v, "want tcp or udp"}
		}
		f.protos = append(f.protos, p)
	}
	switch strings.ToLower(strings.TrimSpace(spec.Family)) {
	case "":
	case "4", "inet", "ipv4":
		f.family = family4
	case "6", "inet6", "ipv6":
		f.family = family6
	default:
		return nil, &Error{"--family", spec.Family, "want 4 (inet, ipv4) or 6 (inet6, ipv6)"}
	}
	if f.sports, err = parsePorts("--sport", spec.SPorts); err != nil {
		return nil, err
	}
	if f.dports, err = parsePorts("--dport", spec.DPorts); err != nil {
		return nil, err
	}
	if f.addrs, err = parsePrefixes("--addr", spec.Addrs); err != nil {
		return nil, err
	}
	if f.srcs, err = parsePrefixes("--src", spec.SrcAddrs); err != nil {
		return nil, err
	}
	if f.dsts, err = parsePrefixes("--dst", spec.DstAddrs); err != nil {
		return nil, err
	}
	for _, pid := range spec.PIDs {
		if pid <= 0 || pid > math.MaxInt32 {
			return nil, &Error{"--pid", strconv.Itoa(pid), "want a process id, 1-2147483647"}
		}
		f.pids = append(f.pids, int32(pid))
	}
	for _, v := range spec.ProcessNames {
		p := strings.TrimSpace(v)
		if p == "" {
			return nil, &Error{"--process", v, "empty name"}
		}
		if _, err := path.Match(p, ""); err != nil {
			return nil, &Error{"--process", v, "bad glob pattern"}
		}
		f.names = append(f.names, namePattern{pattern: p, glob: strings.ContainsAny(p, `*?[\`)})
	}
	lookup := spec.LookupUser
	if lookup == nil {
		lookup = systemUser
	}
	for _, v := range spec.Users {
		u := strings.TrimSpace(v)
		if n, err := strconv.ParseUint(u, 10, 32); err == nil {
			f.uids = append(f.uids, uint32(n))
			continue
		}
		if u == "" {
			return nil, &Error{"--user", v, "empty user"}
		}
		uid, ok := lookup(u)
		if !ok {
			return nil, &Error{"--user", v, "no such user"}
		}
		f.uids = append(f.uids, uid)
	}
	return f, nil
}

// systemUser looks a user name up in the system database (pure Go:
// /etc/passwd).
func systemUser(name string) (uint32, bool) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseUint(u.Uid, 10, 32)
	return uint32(n), err == nil
}

// stateBit is the mask bit of state s; the kernel's states are below 64.
func stateBit(s model.TCPState) uint64 {
	if s >= 64 {
		return 0
	}
	return 1 << s
}

// parseStates fills the per-protocol state masks. Two masks, because
// "listening" means LISTEN for TCP but CLOSE (UNCONN) for UDP.
func (f *Filter) parseStates(values []string) error {
	var all uint64
	for _, s := range model.AllStates() {
		all |= stateBit(s)
	}
	listenClose := stateBit(model.StateListen) | stateBit(model.StateClose)
	bucket := stateBit(model.StateSynRecv) | stateBit(model.StateNewSynRecv) | stateBit(model.StateTimeWait)
	for _, v := range values {
		name := strings.ToLower(strings.TrimSpace(v))
		var tcp, udp uint64
		switch name {
		case "all":
			tcp, udp = ^uint64(0), ^uint64(0)
		case "connected":
			tcp = all &^ listenClose
			udp = tcp
		case "synchronized":
			tcp = all &^ listenClose &^ stateBit(model.StateSynSent)
			udp = tcp
		case "listening":
			tcp, udp = stateBit(model.StateListen), stateBit(model.StateClose)
		case "bucket":
			tcp, udp = bucket, bucket
		case "big":
			tcp, udp = all&^bucket, all&^bucket
		case "closed": // ss's name for CLOSE
			tcp, udp = stateBit(model.StateClose), stateBit(model.StateClose)
		default:
			st, ok := model.ParseState(name)
			if !ok {
				return &Error{"--state", v, "unknown state (want a state such as established, syn-recv, listen, unconn, or all, connected, synchronized, listening, bucket, big)"}
			}
			tcp = stateBit(st)
			if st == model.StateSynRecv {
				// Request sockets are NEW_SYN_RECV inside the kernel;
				// "syn-recv" means both, as in ss.
				tcp |= stateBit(model.StateNewSynRecv)
			}
			udp = tcp
		}
		f.stateFilter = true
		f.tcpStates |= tcp
		f.udpStates |= udp
	}
	return nil
}

func parsePorts(flag string, values []string) ([]portRange, error) {
	var out []portRange
	for _, v := range values {
		s := strings.TrimPrefix(strings.TrimSpace(v), ":") // ss writes ":443"
		lo, hi, isRange := strings.Cut(s, "-")
		if !isRange {
			hi = lo
		}
		l, err := parsePort(lo)
		if err != nil {
			return nil, &Error{flag, v, err.Error()}
		}
		h, err := parsePort(hi)
		if err != nil {
			return nil, &Error{flag, v, err.Error()}
		}
		if l > h {
			return nil, &Error{flag, v, "range runs backwards"}
		}
		out = append(out, portRange{l, h})
	}
	return out, nil
}

func parsePort(s string) (uint16, error) {
	if s == "" {
		return 0, fmt.Errorf("want a port or a range like 1000-2000")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("not a port number (service names are not supported)")
		}
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("port out of range 0-65535")
	}
	return uint16(n), nil
}

// parsePrefixes parses addresses and CIDR prefixes into prefixes, turning
// IPv4-mapped IPv6 ones into IPv4 so that one comparison (against
// unmapped socket addresses) serves both spellings.
func parsePrefixes(flag string, values []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range values {
		s := strings.TrimSpace(v)
		if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
			s = s[1 : len(s)-1]
		}
		var p netip.Prefix
		if strings.Contains(s, "/") {
			var err error
			if p, err = netip.ParsePrefix(s); err != nil {
				return nil, &Error{flag, v, "not an address or CIDR prefix"}
			}
		} else {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, &Error{flag, v, "not an address or CIDR prefix"}
			}
			if a.Zone() != "" {
				return nil, &Error{flag, v, "IPv6 zones are not supported"}
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Match reports whether socket s, from snapshot snap, passes every
// criterion. snap supplies the owners' names and uids; it may be nil, and
// then only --pid can match an owner. Match does not allocate.
func (f *Filter) Match(snap *model.Snapshot, s *model.Socket) bool {
	if f == nil {
		return true
	}
	if f.listening && !s.IsListener() {
		return false
	}
	if f.stateFilter {
		mask := f.udpStates
		if s.Proto == model.ProtoTCP {
			mask = f.tcpStates
		}
		if mask&stateBit(s.State) == 0 {
			return false
		}
	}
	if len(f.protos) > 0 && !containsProto(f.protos, s.Proto) {
		return false
	}
	if f.family != familyAny {
		// The socket's family, as the kernel has it: a dual-stack socket
		// is AF_INET6 even when its addresses are IPv4-mapped.
		a := s.Local.Addr()
		if !a.IsValid() {
			a = s.Remote.Addr()
		}
		if f.family == family4 && !a.Is4() || f.family == family6 && !a.Is6() {
			return false
		}
	}
	if len(f.sports) > 0 && !inPorts(f.sports, s.Local.Port()) {
		return false
	}
	if len(f.dports) > 0 && !inPorts(f.dports, s.Remote.Port()) {
		return false
	}
	if len(f.addrs) > 0 && !inPrefixes(f.addrs, s.Local.Addr()) && !inPrefixes(f.addrs, s.Remote.Addr()) {
		return false
	}
	if len(f.srcs) > 0 && !inPrefixes(f.srcs, s.Local.Addr()) {
		return false
	}
	if len(f.dsts) > 0 && !inPrefixes(f.dsts, s.Remote.Addr()) {
		return false
	}
	if len(f.pids) > 0 && !f.matchPIDs(s) {
		return false
	}
	if len(f.names) > 0 && !f.matchNames(snap, s) {
		return false
	}
	if len(f.uids) > 0 && !f.matchUsers(snap, s) {
		return false
	}
	return true
}

func containsProto(ps []model.Proto, p model.Proto) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

func inPorts(rs []portRange, port uint16) bool {
	for _, r := range rs {
		if r.lo <= port && port <= r.hi {
			return true
		}
	}
	return false
}

// inPrefixes matches a socket address, unmapped and without its zone,
// against the prefixes (which Parse unmapped too).
func inPrefixes(ps []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (f *Filter) matchPIDs(s *model.Socket) bool {
	for i := range s.Owners {
		for _, pid := range f.pids {
			if s.Owners[i].PID == pid {
				return true
			}
		}
	}
	return false
}

func (f *Filter) matchNames(snap *model.Snapshot, s *model.Socket) bool {
	if snap == nil {
		return false
	}
	for i := range s.Owners {
		p := snap.Processes[s.Owners[i].PID]
		if p == nil {
			continue
		}
		exe := ""
		if p.Exe != "" {
			// A deleted executable reads as "/path/name (deleted)"; it is
			// still that program, and the one a responder looks for.
			exe = path.Base(strings.TrimSuffix(p.Exe, " (deleted)"))
		}
		for _, n := range f.names {
			if n.match(p.Name) || exe != "" && n.match(exe) {
				return true
			}
		}
	}
	return false
}

// match tests one name. A literal longer than the kernel keeps also
// matches its cut form, so --process systemd-resolved finds the process
// even when its exe is unreadable (another user's, without privileges).
func (n namePattern) match(name string) bool {
	if name == "" {
		return false
	}
	if n.glob {
		return globMatch(n.pattern, name)
	}
	if name == n.pattern {
		return true
	}
	return len(name) == commLen && len(n.pattern) > commLen && n.pattern[:commLen] == name
}

func (f *Filter) matchUsers(snap *model.Snapshot, s *model.Socket) bool {
	for _, uid := range f.uids {
		if s.UID == uid {
			return true
		}
	}
	if snap == nil {
		return false
	}
	for i := range s.Owners {
		p := snap.Processes[s.Owners[i].PID]
		if p == nil {
			continue
		}
		for _, uid := range f.uids {
			if p.UID == uid {
				return true
			}
		}
	}
	return false
}
