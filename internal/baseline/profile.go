// Package baseline learns what is normal for a host: per executable, the
// ports it listens on, the remote ports and networks it reaches and the
// peers it talks to. Detectors flag what the profile has not seen.
package baseline

import (
	"net/netip"
	"sort"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// Bounds keep one profile small however busy the executable: beyond them a
// set stops growing and Saturated records that it did, so that detectors
// stop treating "not seen" as "new".
const (
	maxPorts = 1024
	maxNets  = 4096
)

// Profile is what one executable was seen doing while the baseline was learned.
type Profile struct {
	Exe         string                `json:"exe"`          // executable path, or comm when the exe was unreadable
	ListenPorts map[string]bool       `json:"listen_ports"` // "tcp/22", "udp/53"
	RemotePorts map[string]bool       `json:"remote_ports"` // "tcp/443" for connections it made
	RemoteNets  map[netip.Prefix]bool `json:"remote_nets"`  // /24 (IPv4) or /48 (IPv6) of peers it connected to
	Saturated   bool                  `json:"saturated"`    // a set hit its bound: treat the profile as permissive
	FirstSeen   time.Time             `json:"first_seen"`
	LastSeen    time.Time             `json:"last_seen"`
	Snapshots   int                   `json:"snapshots"` // snapshots in which it had network activity
}

// Key names an executable in profiles: its exe path, else its comm.
func Key(p *model.Process) string {
	if p.Exe != "" {
		return p.Exe
	}
	return "comm:" + p.Name
}

// NetOf is the network a remote address is generalised to: a /24 for IPv4
// and a /48 for IPv6, so that a service behind a few addresses is one entry.
func NetOf(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 24
	if a.Is6() {
		bits = 48
	}
	p, _ := a.Prefix(bits)
	return p
}

// PortKey formats a proto/port pair as stored in a profile.
func PortKey(proto model.Proto, port uint16) string {
	return proto.String() + "/" + itoa(port)
}

func itoa(v uint16) string {
	var b [5]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}

func newProfile(exe string, t time.Time) *Profile {
	return &Profile{Exe: exe, ListenPorts: map[string]bool{}, RemotePorts: map[string]bool{}, RemoteNets: map[netip.Prefix]bool{}, FirstSeen: t, LastSeen: t}
}

func (p *Profile) addPort(set map[string]bool, k string) {
	if len(set) >= maxPorts && !set[k] {
		p.Saturated = true
		return
	}
	set[k] = true
}

func (p *Profile) addNet(n netip.Prefix) {
	if len(p.RemoteNets) >= maxNets && !p.RemoteNets[n] {
		p.Saturated = true
		return
	}
	p.RemoteNets[n] = true
}

// Set is the profiles of a host, by Key.
type Set struct {
	Profiles map[string]*Profile
	Learned  time.Duration // how long the learning ran
}

// NewSet returns an empty set.
func NewSet() *Set { return &Set{Profiles: map[string]*Profile{}} }

// Profile returns the profile of an executable key.
func (s *Set) Profile(key string) (*Profile, bool) {
	if s == nil {
		return nil, false
	}
	p, ok := s.Profiles[key]
	return p, ok
}

// Observe adds one snapshot to the set. Listeners record their port; a
// connection the host made (not accepted from a local listener) records the
// remote port and network. Loopback peers are not recorded: they say
// nothing about the network.
func (s *Set) Observe(snap *model.Snapshot) {
	type portID struct {
		netns string
		proto model.Proto
		port  uint16
	}
	listening := map[portID]bool{}
	for i := range snap.Sockets {
		sk := &snap.Sockets[i]
		if sk.Proto == model.ProtoTCP && sk.State == model.StateListen {
			listening[portID{sk.Netns, sk.Proto, sk.Local.Port()}] = true
		}
	}
	active := map[*Profile]bool{}
	for i := range snap.Sockets {
		sk := &snap.Sockets[i]
		for _, o := range sk.Owners {
			proc := snap.Processes[o.PID]
			if proc == nil {
				continue
			}
			key := Key(proc)
			p := s.Profiles[key]
			if p == nil {
				p = newProfile(key, snap.Time)
				s.Profiles[key] = p
			}
			if snap.Time.After(p.LastSeen) {
				p.LastSeen = snap.Time
			}
			active[p] = true
			switch {
			case sk.IsListener():
				p.addPort(p.ListenPorts, PortKey(sk.Proto, sk.Local.Port()))
			case listening[portID{sk.Netns, sk.Proto, sk.Local.Port()}]:
				// accepted connection: the peer chose us, nothing to learn about our habits
			case sk.Remote.Addr().IsValid() && !sk.Remote.Addr().Unmap().IsLoopback() && !sk.Remote.Addr().IsUnspecified():
				p.addPort(p.RemotePorts, PortKey(sk.Proto, sk.Remote.Port()))
				p.addNet(NetOf(sk.Remote.Addr()))
			}
		}
	}
	for p := range active {
		p.Snapshots++
	}
}

// Keys returns the profile keys in order.
func (s *Set) Keys() []string {
	keys := make([]string, 0, len(s.Profiles))
	for k := range s.Profiles {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
