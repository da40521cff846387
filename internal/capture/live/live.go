// Package live captures packets from network interfaces through Linux
// AF_PACKET sockets with a TPACKET_V3 memory-mapped ring, in pure Go over
// golang.org/x/sys/unix (gopacket's afpacket needs cgo).
//
// A Source reads one or more interfaces (optionally inside another network
// namespace) and hands each frame to a callback as a capture.Packet: the
// interface's link type, the kernel's nanosecond timestamp, and the bytes
// in place in the ring (no copy, no allocation per packet). A pcap-filter
// expression is compiled (see package filter) and attached before the
// socket is bound to its interface, so no unfiltered packet is queued.
// Kernel counters (packets, drops, freezes) are read with
// PACKET_STATISTICS and kept cumulative in Stats.
//
// On the loopback device each frame is delivered once (the kernel shows a
// packet socket both the outgoing frame and its looped-back copy; the
// outgoing one is skipped). VLAN tags that the kernel stripped on receipt
// are not put back: the frame is seen untagged (the filter's "vlan" tests
// the stripped tag).
//
// Capture needs CAP_NET_RAW; without it Open's error says so.
package live

import (
	"errors"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/capture"
)

// Options configure a Source.
type Options struct {
	// Interfaces to capture on, by name. At least one.
	Interfaces []string
	// Netns, when set, is the network namespace the interfaces are in: a
	// name under /run/netns or a path (see netlink.NetnsPath). The sockets
	// are opened there; reading them works from any thread.
	Netns string
	// Filter is a pcap-filter expression; "" captures everything.
	Filter string
	// Promiscuous puts the interfaces in promiscuous mode while the
	// Source is open (the kernel counts it and undoes it at close).
	Promiscuous bool
	// Fanout, when non-zero, joins the sockets to the PACKET_FANOUT_HASH
	// group of that id (per interface: the kernel scopes groups by
	// network namespace, and a group spans one interface's sockets), so
	// that several Sources, each with its own flow tracker, share an
	// interface's traffic by flow.
	Fanout uint16
	// BlockSize is the size of one ring block (a power of two multiple of
	// the page size; default 1 MiB) and Blocks their number per interface
	// (default 32): the ring holds BlockSize*Blocks bytes of frames.
	BlockSize int
	Blocks    int
	// BlockTimeout is how long the kernel keeps a partly filled block
	// before handing it over, so that a quiet link still delivers
	// promptly (default 50 ms).
	BlockTimeout time.Duration
}

// Stats are cumulative counters since Open, summed over the interfaces.
type Stats struct {
	Packets     uint64 // frames the kernel passed the filter (including dropped ones)
	Drops       uint64 // frames the kernel dropped: the ring was full
	FreezeQueue uint64 // times the ring was full and the kernel stopped filling it
	Delivered   uint64 // frames handed to the callback
}

// Interface is one interface a Source reads.
type Interface struct {
	Name  string
	Index int
	Link  capture.LinkType
}

// ErrPermission is wrapped by Open's error when the process lacks
// CAP_NET_RAW.
var ErrPermission = errors.New("live capture needs CAP_NET_RAW (run as root or grant the capability)")

func (o *Options) defaults() {
	if o.BlockSize <= 0 {
		o.BlockSize = 1 << 20
	}
	if o.Blocks <= 0 {
		o.Blocks = 32
	}
	if o.BlockTimeout <= 0 {
		o.BlockTimeout = 50 * time.Millisecond
	}
}
