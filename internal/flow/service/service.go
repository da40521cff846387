// Package service names the application protocol a connection speaks from
// the first payload bytes of each direction, the way Zeek's dynamic protocol
// detection fills conn.log's service field, so that a protocol on a port
// that is not its own (SSH on 443, HTTP on 6667) can be reported.
//
// Only the first payload of each direction is looked at: the checks are a
// handful of byte comparisons, cheap enough for the flow tracker's hot path,
// and strict enough that random bytes rarely match.
package service

import (
	"bytes"
	"encoding/binary"
)

// ID is an identified protocol; Unknown when nothing matched.
type ID uint8

// Protocols, named as Zeek names them in conn.log's service field.
const (
	Unknown ID = iota
	SSH
	HTTP
	TLS
	IRC
	SMB
	RDP
	DNS
	SMTP
	FTP
	POP3
	IMAP
	SOCKS
	MySQL
	RFB
	numIDs
)

var names = [numIDs]string{
	Unknown: "", SSH: "ssh", HTTP: "http", TLS: "ssl", IRC: "irc", SMB: "smb", RDP: "rdp", DNS: "dns",
	SMTP: "smtp", FTP: "ftp", POP3: "pop3", IMAP: "imap", SOCKS: "socks", MySQL: "mysql", RFB: "rfb",
}

// String is Zeek's service name ("ssl" for TLS), "" for Unknown.
func (id ID) String() string {
	if id >= numIDs {
		return ""
	}
	return names[id]
}

// Transport is the transport protocol a payload came over.
type Transport uint8

// Transports Identify understands.
const (
	TCP Transport = iota
	UDP
)

// Identify names the protocol of a connection's first payload in one
// direction; fromOrig tells whether the originator sent it (a client's
// request and a server's greeting look different).
func Identify(tr Transport, payload []byte, fromOrig bool) ID {
	if len(payload) == 0 {
		return Unknown
	}
	if tr == UDP {
		if isDNS(payload, fromOrig) {
			return DNS
		}
		return Unknown
	}
	b := payload
	switch {
	case bytes.HasPrefix(b, []byte("SSH-")) && len(b) >= 8 && (bytes.HasPrefix(b[4:], []byte("2.0-")) || bytes.HasPrefix(b[4:], []byte("1."))):
		return SSH
	case isTLS(b):
		return TLS
	case isSMB(b):
		return SMB
	case isRDP(b):
		return RDP
	}
	if fromOrig {
		switch {
		case isHTTPRequest(b):
			return HTTP
		case isIRCClient(b):
			return IRC
		case hasPrefixFold(b, "EHLO ") || hasPrefixFold(b, "HELO "):
			return SMTP
		case isSOCKS(b):
			return SOCKS
		case len(b) > 2 && b[0] == 0 && isDNSMessage(b[2:], true) && int(binary.BigEndian.Uint16(b)) == len(b)-2:
			return DNS
		}
		return Unknown
	}
	switch {
	case bytes.HasPrefix(b, []byte("HTTP/1.")) || bytes.HasPrefix(b, []byte("HTTP/2 ")):
		return HTTP
	case isIRCServer(b):
		return IRC
	case bytes.HasPrefix(b, []byte("220")) && len(b) > 3 && (b[3] == ' ' || b[3] == '-'):
		line := firstLine(b)
		switch {
		case containsFold(line, "SMTP"):
			return SMTP
		case containsFold(line, "FTP"):
			return FTP
		}
	case bytes.HasPrefix(b, []byte("+OK")):
		return POP3
	case bytes.HasPrefix(b, []byte("* OK")) || bytes.HasPrefix(b, []byte("* PREAUTH")):
		return IMAP
	case bytes.HasPrefix(b, []byte("RFB 00")) && len(b) >= 12 && b[11] == '\n':
		return RFB
	case isMySQLGreeting(b):
		return MySQL
	case len(b) > 2 && isDNSMessage(b[2:], false) && int(binary.BigEndian.Uint16(b)) == len(b)-2:
		return DNS
	}
	return Unknown
}

// isTLS matches a TLS record carrying a ClientHello or ServerHello (SSL 3.0
// to TLS 1.3 all use record versions 3.0–3.4), or an SSLv2-framed
// ClientHello as old clients send.
func isTLS(b []byte) bool {
	if len(b) >= 6 && b[0] == 0x16 && b[1] == 3 && b[2] <= 4 {
		n := int(binary.BigEndian.Uint16(b[3:5]))
		return n >= 4 && n <= 1<<14+2048 && (b[5] == 1 || b[5] == 2)
	}
	// SSLv2 header: 2-byte length with the top bit set, type 1, version.
	return len(b) >= 5 && b[0]&0x80 != 0 && b[2] == 1 && (b[3] == 3 || (b[3] == 0 && b[4] == 2))
}

// isSMB matches a NetBIOS session message holding an SMB1, SMB2/3 or
// encrypted SMB3 header.
func isSMB(b []byte) bool {
	if len(b) < 8 || b[0] != 0 {
		return false
	}
	switch string(b[4:8]) {
	case "\xffSMB", "\xfeSMB", "\xfdSMB":
		return true
	}
	return false
}

// isRDP matches a TPKT header (RFC 1006) around an X.224 connection request
// or confirm, which is how every RDP session opens.
func isRDP(b []byte) bool {
	if len(b) < 11 || b[0] != 3 || b[1] != 0 {
		return false
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if n < 11 || n > 4096 {
		return false
	}
	li := int(b[4]) // X.224 length indicator: header bytes after it
	if li < 6 || li+5 > n {
		return false
	}
	return b[5] == 0xe0 || b[5] == 0xd0
}

var httpMethods = []string{"GET ", "POST ", "HEAD ", "PUT ", "DELETE ", "OPTIONS ", "CONNECT ", "PATCH ", "TRACE ", "PRI * HTTP/2"}

func isHTTPRequest(b []byte) bool {
	for _, m := range httpMethods {
		if bytes.HasPrefix(b, []byte(m)) {
			rest := b[len(m):]
			if m == "PRI * HTTP/2" {
				return true
			}
			// A request target: origin form, absolute URI, authority or "*".
			return len(rest) > 0 && (rest[0] == '/' || rest[0] == '*' || isAlnum(rest[0]))
		}
	}
	return false
}

func isIRCClient(b []byte) bool {
	for _, p := range []string{"NICK ", "USER ", "PASS ", "CAP LS", "CAP REQ "} {
		if bytes.HasPrefix(b, []byte(p)) {
			return true
		}
	}
	return false
}

// isIRCServer matches ":server NOTICE …" or a numeric reply on the first
// line, which IRC servers send on connect.
func isIRCServer(b []byte) bool {
	if len(b) < 8 || b[0] != ':' {
		return false
	}
	line := firstLine(b)
	sp := bytes.IndexByte(line, ' ')
	if sp < 2 {
		return false
	}
	cmd := line[sp+1:]
	if bytes.HasPrefix(cmd, []byte("NOTICE ")) {
		return true
	}
	return len(cmd) >= 4 && isDigit(cmd[0]) && isDigit(cmd[1]) && isDigit(cmd[2]) && cmd[3] == ' '
}

// isSOCKS matches a SOCKS5 greeting (version, method count, methods) or a
// SOCKS4 CONNECT/BIND request ending with its NUL-terminated user id.
func isSOCKS(b []byte) bool {
	switch {
	case len(b) >= 3 && b[0] == 5 && b[1] >= 1 && len(b) == 2+int(b[1]):
		for _, m := range b[2:] {
			if m > 9 && m < 0x80 || m == 0xff {
				return false
			}
		}
		return true
	case len(b) >= 9 && b[0] == 4 && (b[1] == 1 || b[1] == 2) && b[len(b)-1] == 0:
		return true
	}
	return false
}

// isMySQLGreeting matches the server's handshake v10 packet: 3-byte
// length, sequence 0, protocol 10, a NUL-terminated version string.
func isMySQLGreeting(b []byte) bool {
	if len(b) < 10 || b[3] != 0 || b[4] != 10 {
		return false
	}
	// The greeting fits one segment: its length is what arrived.
	if n := int(b[0]) | int(b[1])<<8 | int(b[2])<<16; n+4 != len(b) {
		return false
	}
	end := bytes.IndexByte(b[5:], 0)
	return end > 0 && isDigit(b[5])
}

// isDNS matches a DNS message over UDP.
func isDNS(b []byte, query bool) bool { return isDNSMessage(b, query) }

// isDNSMessage checks the header counts and walks the first question's
// name: labels of 1–63 bytes (or a compression pointer in a response),
// then type and class.
func isDNSMessage(b []byte, query bool) bool {
	if len(b) < 17 {
		return false
	}
	qr := b[2]&0x80 != 0
	opcode := b[2] >> 3 & 0xf
	qd := binary.BigEndian.Uint16(b[4:6])
	an := binary.BigEndian.Uint16(b[6:8])
	ns := binary.BigEndian.Uint16(b[8:10])
	if qr == query || opcode > 5 || qd != 1 {
		return false
	}
	if query && (an != 0 || ns != 0) {
		return false
	}
	i := 12
	for n := 0; ; n++ {
		if i >= len(b) || n > 127 {
			return false
		}
		l := int(b[i])
		if l == 0 {
			i++
			break
		}
		if l > 63 {
			return false
		}
		i += 1 + l
	}
	if i+4 > len(b) {
		return false
	}
	class := binary.BigEndian.Uint16(b[i+2 : i+4])
	return class == 1 || class == 3 || class == 4 || class == 255 || class&0x7fff == 1 // IN, CH, HS, ANY; mDNS sets the top bit
}

func firstLine(b []byte) []byte {
	if i := bytes.IndexAny(b, "\r\n"); i >= 0 {
		return b[:i]
	}
	return b
}

func hasPrefixFold(b []byte, p string) bool {
	return len(b) >= len(p) && bytes.EqualFold(b[:len(p)], []byte(p))
}

func containsFold(b []byte, s string) bool {
	return bytes.Contains(bytes.ToUpper(b), []byte(s))
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isAlnum(c byte) bool {
	return isDigit(c) || c|0x20 >= 'a' && c|0x20 <= 'z'
}

// The flow tracker keeps an ID in four bits.
var _ = [1]struct{}{}[numIDs>>4]
