package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
)

// LinkType is a pcap LINKTYPE_ value (www.tcpdump.org/linktypes.html).
type LinkType uint32

// Link types this package decodes.
const (
	LinkNull      LinkType = 0   // BSD loopback: 4-byte address family, host byte order
	LinkEthernet  LinkType = 1   // Ethernet II / 802.3, with VLAN, QinQ, MPLS, PPPoE, LLC/SNAP, …
	LinkPPP       LinkType = 9   // PPP
	LinkFDDI      LinkType = 10  // FDDI with 802.2 LLC
	LinkRawOld    LinkType = 12  // raw IP (OpenBSD DLT_RAW value)
	LinkRawOld2   LinkType = 14  // raw IP (BSD/OS DLT_RAW value)
	LinkPPPHDLC   LinkType = 50  // PPP in HDLC-like framing
	LinkRaw       LinkType = 101 // raw IPv4 or IPv6
	LinkIEEE80211 LinkType = 105 // 802.11 without radio header
	LinkLoop      LinkType = 108 // OpenBSD loopback: 4-byte address family, network byte order
	LinkLinuxSLL  LinkType = 113 // Linux cooked capture v1
	LinkRadiotap  LinkType = 127 // 802.11 with radiotap header
	LinkIPv4      LinkType = 228 // raw IPv4
	LinkIPv6      LinkType = 229 // raw IPv6
	LinkNFLog     LinkType = 239 // Linux netfilter NFLOG
	LinkLinuxSLL2 LinkType = 276 // Linux cooked capture v2
)

var linkNames = map[LinkType]string{
	LinkNull: "null", LinkEthernet: "ethernet", LinkPPP: "ppp", LinkFDDI: "fddi", LinkRawOld: "raw",
	LinkRawOld2: "raw", LinkPPPHDLC: "ppp-hdlc", LinkRaw: "raw", LinkIEEE80211: "ieee802.11",
	LinkLoop: "loop", LinkLinuxSLL: "linux-sll", LinkRadiotap: "radiotap", LinkIPv4: "ipv4",
	LinkIPv6: "ipv6", LinkNFLog: "nflog", LinkLinuxSLL2: "linux-sll2",
}

// String returns a short name ("ethernet", "linux-sll2") or "linktype-N".
func (l LinkType) String() string {
	if n, ok := linkNames[l]; ok {
		return n
	}
	return "linktype-" + strconv.FormatUint(uint64(l), 10)
}

// Supported reports whether DecodeLink understands l.
func (l LinkType) Supported() bool { _, ok := linkNames[l]; return ok }

// Network is the network-layer protocol found under the link layer.
type Network uint8

// Network-layer protocols DecodeLink reports.
const (
	NetOther Network = iota // a valid frame that carries no IP (ARP, LLDP, STP, 802.11 management, …)
	NetIPv4
	NetIPv6
)

// Link-layer errors. DecodeLink wraps them with the field that was wrong.
var (
	ErrUnsupportedLink = errors.New("unsupported link type")
	ErrTruncated       = errors.New("truncated")
)

// Ethernet types the decoder follows.
const (
	etherIPv4     = 0x0800
	etherIPv6     = 0x86dd
	etherVLAN     = 0x8100
	etherQinQ     = 0x88a8
	etherQinQOld  = 0x9100
	etherQinQOld2 = 0x9200
	etherMPLS     = 0x8847
	etherMPLSMC   = 0x8848
	etherPPPoE    = 0x8864
	etherPBB      = 0x88e7
	etherFabric   = 0x8903 // Cisco FabricPath
	etherVNTag    = 0x8926
)

// maxTags bounds nested VLAN/MPLS/encapsulation headers, so that a crafted
// frame costs bounded work.
const maxTags = 16

// DecodeLink strips the link layer of a frame of type lt and returns the
// network-layer protocol and its bytes (which may still carry link padding:
// the IP total length says where the datagram ends). It does not allocate.
func DecodeLink(lt LinkType, frame []byte) (Network, []byte, error) {
	switch lt {
	case LinkEthernet:
		if len(frame) < 14 {
			return 0, nil, fmt.Errorf("ethernet header: %w (%d bytes)", ErrTruncated, len(frame))
		}
		return etherPayload(binary.BigEndian.Uint16(frame[12:14]), frame[14:])
	case LinkRaw, LinkRawOld, LinkRawOld2, LinkIPv4, LinkIPv6:
		return ipByVersion(frame)
	case LinkNull, LinkLoop:
		if len(frame) < 4 {
			return 0, nil, fmt.Errorf("loopback header: %w", ErrTruncated)
		}
		// The family is in the capturing host's byte order for DLT_NULL, so
		// accept both; values differ per OS for IPv6 (24, 28, 30).
		fam := binary.LittleEndian.Uint32(frame[:4])
		if fam > 0xffff {
			fam = binary.BigEndian.Uint32(frame[:4])
		}
		switch fam {
		case 2:
			return NetIPv4, frame[4:], nil
		case 10, 24, 28, 30:
			return NetIPv6, frame[4:], nil
		}
		return NetOther, nil, nil
	case LinkLinuxSLL:
		if len(frame) < 16 {
			return 0, nil, fmt.Errorf("linux-sll header: %w", ErrTruncated)
		}
		return etherPayload(binary.BigEndian.Uint16(frame[14:16]), frame[16:])
	case LinkLinuxSLL2:
		if len(frame) < 20 {
			return 0, nil, fmt.Errorf("linux-sll2 header: %w", ErrTruncated)
		}
		return etherPayload(binary.BigEndian.Uint16(frame[0:2]), frame[20:])
	case LinkPPP:
		return pppPayload(frame)
	case LinkPPPHDLC:
		if len(frame) >= 2 && frame[0] == 0xff && frame[1] == 0x03 {
			frame = frame[2:]
		}
		return pppPayload(frame)
	case LinkFDDI:
		if len(frame) < 13 {
			return 0, nil, fmt.Errorf("fddi header: %w", ErrTruncated)
		}
		return llcPayload(frame[13:])
	case LinkRadiotap:
		if len(frame) < 8 {
			return 0, nil, fmt.Errorf("radiotap header: %w", ErrTruncated)
		}
		n := int(binary.LittleEndian.Uint16(frame[2:4]))
		if n < 8 || n > len(frame) {
			return 0, nil, fmt.Errorf("radiotap length %d: %w", n, ErrTruncated)
		}
		return wlanPayload(frame[n:])
	case LinkIEEE80211:
		return wlanPayload(frame)
	case LinkNFLog:
		return nflogPayload(frame)
	}
	return 0, nil, fmt.Errorf("%w %s", ErrUnsupportedLink, lt)
}

// etherPayload follows an Ethernet type through tags and encapsulations.
func etherPayload(typ uint16, b []byte) (Network, []byte, error) {
	for i := 0; i < maxTags; i++ {
		switch {
		case typ == etherIPv4:
			return NetIPv4, b, nil
		case typ == etherIPv6:
			return NetIPv6, b, nil
		case typ == etherVLAN || typ == etherQinQ || typ == etherQinQOld || typ == etherQinQOld2:
			if len(b) < 4 {
				return 0, nil, fmt.Errorf("vlan tag: %w", ErrTruncated)
			}
			typ, b = binary.BigEndian.Uint16(b[2:4]), b[4:]
		case typ == etherVNTag:
			if len(b) < 6 {
				return 0, nil, fmt.Errorf("vn-tag: %w", ErrTruncated)
			}
			typ, b = binary.BigEndian.Uint16(b[4:6]), b[6:]
		case typ == etherFabric:
			// FTag/TTL (2 bytes), then a whole inner Ethernet header.
			if len(b) < 16 {
				return 0, nil, fmt.Errorf("fabricpath header: %w", ErrTruncated)
			}
			typ, b = binary.BigEndian.Uint16(b[14:16]), b[16:]
		case typ == etherPBB:
			// I-TAG (4 bytes), then the customer's MAC addresses and type.
			if len(b) < 18 {
				return 0, nil, fmt.Errorf("pbb i-tag: %w", ErrTruncated)
			}
			typ, b = binary.BigEndian.Uint16(b[16:18]), b[18:]
		case typ == etherMPLS || typ == etherMPLSMC:
			return mplsPayload(b)
		case typ == etherPPPoE:
			if len(b) < 6 {
				return 0, nil, fmt.Errorf("pppoe header: %w", ErrTruncated)
			}
			return pppPayload(b[6:])
		case typ < 0x0600:
			// 802.3 length field: an 802.2 LLC header follows.
			return llcPayload(b)
		default:
			return NetOther, nil, nil
		}
	}
	return 0, nil, fmt.Errorf("link headers nested more than %d deep", maxTags)
}

// mplsPayload skips an MPLS label stack and guesses the payload from the IP
// version nibble, as Zeek does (MPLS does not say what it carries).
func mplsPayload(b []byte) (Network, []byte, error) {
	for i := 0; ; i++ {
		if len(b) < 4 {
			return 0, nil, fmt.Errorf("mpls label: %w", ErrTruncated)
		}
		bottom := b[2]&1 != 0
		b = b[4:]
		if bottom {
			break
		}
		if i >= maxTags {
			return 0, nil, fmt.Errorf("mpls label stack deeper than %d", maxTags)
		}
	}
	return ipByVersion(b)
}

func ipByVersion(b []byte) (Network, []byte, error) {
	if len(b) < 1 {
		return 0, nil, fmt.Errorf("ip version: %w", ErrTruncated)
	}
	switch b[0] >> 4 {
	case 4:
		return NetIPv4, b, nil
	case 6:
		return NetIPv6, b, nil
	}
	return NetOther, nil, nil
}

func pppPayload(b []byte) (Network, []byte, error) {
	if len(b) < 1 {
		return 0, nil, fmt.Errorf("ppp protocol: %w", ErrTruncated)
	}
	// Protocol-field compression: an odd first byte is a one-byte protocol.
	var proto uint16
	if b[0]&1 != 0 {
		proto, b = uint16(b[0]), b[1:]
	} else {
		if len(b) < 2 {
			return 0, nil, fmt.Errorf("ppp protocol: %w", ErrTruncated)
		}
		proto, b = binary.BigEndian.Uint16(b[:2]), b[2:]
	}
	switch proto {
	case 0x0021:
		return NetIPv4, b, nil
	case 0x0057:
		return NetIPv6, b, nil
	}
	return NetOther, nil, nil
}

// llcPayload follows an 802.2 LLC header; only SNAP carries an Ethernet type.
func llcPayload(b []byte) (Network, []byte, error) {
	if len(b) < 3 {
		return 0, nil, fmt.Errorf("llc header: %w", ErrTruncated)
	}
	if b[0] == 0xaa && b[1] == 0xaa && b[2] == 0x03 {
		if len(b) < 8 {
			return 0, nil, fmt.Errorf("snap header: %w", ErrTruncated)
		}
		return etherPayload(binary.BigEndian.Uint16(b[6:8]), b[8:])
	}
	return NetOther, nil, nil
}

// wlanPayload decodes an 802.11 data frame down to its LLC/SNAP payload.
func wlanPayload(b []byte) (Network, []byte, error) {
	if len(b) < 24 {
		return 0, nil, fmt.Errorf("802.11 header: %w", ErrTruncated)
	}
	fc0, fc1 := b[0], b[1]
	if (fc0>>2)&3 != 2 { // not a data frame
		return NetOther, nil, nil
	}
	sub := fc0 >> 4
	if sub&0x4 != 0 { // null data: no payload
		return NetOther, nil, nil
	}
	if fc1&0x40 != 0 { // protected: encrypted payload
		return NetOther, nil, nil
	}
	n := 24
	if fc1&3 == 3 { // to-DS and from-DS: four addresses
		n += 6
	}
	if sub&0x8 != 0 { // QoS data
		n += 2
		if fc1&0x80 != 0 { // order bit: HT control field
			n += 4
		}
	}
	if len(b) < n {
		return 0, nil, fmt.Errorf("802.11 header: %w", ErrTruncated)
	}
	return llcPayload(b[n:])
}

// nflogPayload finds the packet TLV (type 9) of an NFLOG record.
func nflogPayload(b []byte) (Network, []byte, error) {
	if len(b) < 4 {
		return 0, nil, fmt.Errorf("nflog header: %w", ErrTruncated)
	}
	family := b[0]
	b = b[4:]
	for len(b) >= 4 {
		// TLV lengths are host byte order; NFLOG captures are from Linux on
		// little-endian hosts in practice.
		l := int(binary.LittleEndian.Uint16(b[0:2]))
		t := binary.LittleEndian.Uint16(b[2:4]) & 0x7fff
		if l < 4 || l > len(b) {
			return 0, nil, fmt.Errorf("nflog tlv length %d: %w", l, ErrTruncated)
		}
		if t == 9 {
			v := b[4:l]
			switch family {
			case 2:
				return NetIPv4, v, nil
			case 10:
				return NetIPv6, v, nil
			}
			return ipByVersion(v)
		}
		pad := (l + 3) &^ 3
		if pad > len(b) {
			break
		}
		b = b[pad:]
	}
	return NetOther, nil, nil
}
