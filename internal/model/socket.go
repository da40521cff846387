// Package model is tcpsentry's shared vocabulary: the records every source
// produces and every detector consumes (see DESIGN.md, "two record kinds").
package model

import (
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Proto is an IP protocol number as the kernel and the wire use it.
type Proto uint8

// The protocols tcpsentry enumerates and tracks.
const (
	ProtoICMP   Proto = 1
	ProtoTCP    Proto = 6
	ProtoUDP    Proto = 17
	ProtoICMPv6 Proto = 58
)

// String returns the lower-case protocol name used in output and filters.
func (p Proto) String() string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoICMP:
		return "icmp"
	case ProtoICMPv6:
		return "icmp6"
	}
	return "proto-" + strconv.Itoa(int(p))
}

// ParseProto accepts the names String returns.
func ParseProto(s string) (Proto, bool) {
	switch strings.ToLower(s) {
	case "tcp":
		return ProtoTCP, true
	case "udp":
		return ProtoUDP, true
	case "icmp":
		return ProtoICMP, true
	case "icmp6", "icmpv6":
		return ProtoICMPv6, true
	}
	return 0, false
}

// TCPState is the kernel's socket state number (include/net/tcp_states.h).
// UDP sockets use the same numbers: ESTABLISHED when connected, CLOSE when not.
type TCPState uint8

// Kernel socket states.
const (
	StateEstablished TCPState = 1
	StateSynSent     TCPState = 2
	StateSynRecv     TCPState = 3
	StateFinWait1    TCPState = 4
	StateFinWait2    TCPState = 5
	StateTimeWait    TCPState = 6
	StateClose       TCPState = 7
	StateCloseWait   TCPState = 8
	StateLastAck     TCPState = 9
	StateListen      TCPState = 10
	StateClosing     TCPState = 11
	StateNewSynRecv  TCPState = 12
	StateBoundInact  TCPState = 13
	stateMax         TCPState = 14
)

var stateNames = [stateMax]string{
	"UNKNOWN", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT",
	"CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV", "BOUND_INACTIVE",
}

// String returns the kernel's name of the state (ESTABLISHED, SYN_RECV, …).
func (s TCPState) String() string {
	if s < stateMax {
		return stateNames[s]
	}
	return "STATE_" + strconv.Itoa(int(s))
}

// AllStates lists every state the kernel can report, in kernel order.
func AllStates() []TCPState {
	out := make([]TCPState, 0, stateMax-1)
	for s := StateEstablished; s < stateMax; s++ {
		out = append(out, s)
	}
	return out
}

// ParseState accepts kernel names (SYN_RECV), ss names (syn-recv, estab,
// unconn) and is case-insensitive.
func ParseState(name string) (TCPState, bool) {
	n := strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	switch n {
	case "ESTAB":
		return StateEstablished, true
	case "UNCONN":
		return StateClose, true
	case "FIN_WAIT_1":
		return StateFinWait1, true
	case "FIN_WAIT_2":
		return StateFinWait2, true
	}
	for i, s := range stateNames {
		if i > 0 && s == n {
			return TCPState(i), true
		}
	}
	return 0, false
}

// SocketStateName is the display name of a socket's state: UDP's CLOSE is
// shown as UNCONN (unconnected), as ss does, since a UDP socket never "closes".
func SocketStateName(p Proto, s TCPState) string {
	if p == ProtoUDP && s == StateClose {
		return "UNCONN"
	}
	return s.String()
}

// TCPInfo is the part of the kernel's struct tcp_info that a responder
// needs. Present only for TCP sockets whose info the kernel returned.
type TCPInfo struct {
	RTT           time.Duration // smoothed round-trip time
	RTTVar        time.Duration // round-trip time variance
	Retransmits   uint8         // retransmits of the current unacknowledged segment
	TotalRetrans  uint32        // segments retransmitted over the socket's life
	BytesAcked    uint64        // bytes sent and acknowledged by the peer
	BytesReceived uint64        // bytes received from the peer
	BytesSent     uint64        // bytes sent, retransmissions included (kernel >= 4.19; 0 before)
	SegsOut       uint32        // segments sent
	SegsIn        uint32        // segments received
	LastSend      time.Duration // time since data was last sent
	LastRecv      time.Duration // time since data was last received
}

// Process is a process that holds a socket open.
type Process struct {
	PID     int32     `json:"pid"`
	PPID    int32     `json:"ppid"`
	Name    string    `json:"name"`              // comm, as the kernel holds it (may be spoofed by the process)
	Exe     string    `json:"exe,omitempty"`     // resolved /proc/PID/exe; empty when not readable
	Cmdline []string  `json:"cmdline,omitempty"` // argv; empty for kernel threads or when not readable
	UID     uint32    `json:"uid"`               // real uid
	User    string    `json:"user,omitempty"`    // user name of UID; empty when unknown
	Start   time.Time `json:"start"`             // process start time (from /proc/PID/stat and btime)
	TTY     uint32    `json:"tty,omitempty"`     // controlling terminal device number; 0 means none
}

// Owner says which process holds a socket and through which descriptors.
type Owner struct {
	PID int32   `json:"pid"`
	FDs []int32 `json:"fds"` // descriptor numbers that refer to the socket (0, 1, 2 matter for shells)
}

// Socket is one kernel socket at snapshot time.
type Socket struct {
	Netns  string // network namespace name or path; empty for the caller's own
	Proto  Proto
	State  TCPState
	Local  netip.AddrPort
	Remote netip.AddrPort // unspecified address and port 0 for listeners and unconnected UDP
	RecvQ  uint32         // bytes queued for the application; for listeners, the accept queue length
	SendQ  uint32         // bytes not yet acknowledged; for listeners, the accept backlog
	UID    uint32         // socket owner's uid
	Inode  uint64         // socket inode; 0 for sockets without one (TIME_WAIT, request sockets)
	Iface  uint32         // bound interface index; 0 when not bound
	TCP    *TCPInfo
	Owners []Owner

	// ConnStart is when conntrack first saw the connection; zero when
	// conntrack had no entry with a timestamp (age unknown, not guessed).
	ConnStart time.Time
}

// IsListener reports whether the socket accepts connections (TCP LISTEN)
// or is an unconnected bound UDP socket.
func (s *Socket) IsListener() bool {
	if s.Proto == ProtoTCP {
		return s.State == StateListen
	}
	return s.Proto == ProtoUDP && s.State == StateClose
}

// Snapshot is the host's sockets at one moment, with the processes that own them.
type Snapshot struct {
	Time      time.Time          // when the enumeration started
	Host      string             // host name
	Sockets   []Socket           // all namespaces requested, in kernel order per namespace
	Processes map[int32]*Process // every process that owns at least one socket, and the relay peers below
	// Pipes maps a pipe inode to the processes holding it, for pipes shared
	// between a socket holder and another process: how a shell spawned by
	// `ncat -e` reaches the network without holding the socket itself.
	Pipes map[uint64][]Owner
	// Warnings say, once each, what could not be read and why (privileges,
	// a refused netlink family, a missing conntrack); the data that could be
	// read is still in the snapshot.
	Warnings []string
}
