package sink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/leodido/go-syslog/v4/rfc5424"

	"github.com/tcpsentry/tcpsentry/internal/alert"
)

// SyslogSDID is the structured-data element of every message: our name at
// the "example" private enterprise number RFC 5424 §7.2.2 reserves for
// documentation (32473), as tcpsentry has none of its own.
const SyslogSDID = "tcpsentry@32473"

// SyslogSeverity maps an alert severity to an RFC 5424 severity:
// critical → 2 (crit), high → 3 (err), medium → 4 (warning), low → 5 (notice).
// Nothing tcpsentry finds makes the host unusable (0, emerg) or demands
// action from every operator at once (1, alert).
func SyslogSeverity(s alert.Severity) uint8 {
	switch s {
	case alert.Critical:
		return 2
	case alert.High:
		return 3
	case alert.Medium:
		return 4
	default:
		return 5
	}
}

// SyslogOptions configures a Syslog sink.
type SyslogOptions struct {
	Network  string // udp (RFC 5426), tcp (RFC 6587 octet counting) or tls (RFC 5425)
	Address  string // host:port
	Facility uint8  // 0–23
	Title    bool   // MSG is the title instead of the alert JSON
	// CAFile and ServerName verify a TLS server; empty means the system
	// roots and the host of Address.
	CAFile, ServerName string
	Hostname           string // HOSTNAME field; empty means os.Hostname
}

// Syslog sends RFC 5424 messages. It connects lazily and reconnects after
// any failure, so a syslog server that is down at start or restarts later
// only delays delivery.
//
// What "delivered" means differs by transport: over UDP a datagram that
// left the host counts (only an ICMP port unreachable for an earlier
// datagram is noticed); over TCP and TLS a message written to the kernel
// counts, since RFC 6587 and 5425 have no application acknowledgement.
// Before each write the connection is probed for a peer that has closed it,
// so that a restarted server does not silently swallow the next alert.
type Syslog struct {
	opts   SyslogOptions
	tls    *tls.Config
	pid    string
	mu     sync.Mutex
	conn   net.Conn
	stream bool
}

// NewSyslog checks the options and loads the CA file; it does not connect.
func NewSyslog(opts SyslogOptions) (*Syslog, error) {
	s := &Syslog{opts: opts, pid: strconv.Itoa(os.Getpid())}
	switch opts.Network {
	case "udp":
	case "tcp":
		s.stream = true
	case "tls":
		s.stream = true
		host, _, err := net.SplitHostPort(opts.Address)
		if err != nil {
			return nil, fmt.Errorf("syslog %s: %w", opts.Address, err)
		}
		s.tls = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
		if opts.ServerName != "" {
			s.tls.ServerName = opts.ServerName
		}
		if opts.CAFile != "" {
			pool, err := loadCA(opts.CAFile)
			if err != nil {
				return nil, fmt.Errorf("syslog: %w", err)
			}
			s.tls.RootCAs = pool
		}
	default:
		return nil, fmt.Errorf("syslog: network %q: want udp, tcp or tls", opts.Network)
	}
	if opts.Facility > 23 {
		return nil, fmt.Errorf("syslog: facility %d outside 0–23", opts.Facility)
	}
	if s.opts.Hostname == "" {
		s.opts.Hostname, _ = os.Hostname()
	}
	s.opts.Hostname = printASCII(s.opts.Hostname, 255)
	return s, nil
}

// loadCA reads a PEM bundle.
func loadCA(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca_file %s: no PEM certificate in it", path)
	}
	return pool, nil
}

// printASCII keeps the printable US-ASCII that RFC 5424 header fields
// allow, at most max bytes; "-" (nil value) when nothing is left.
func printASCII(s string, max int) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s) && len(b) < max; i++ {
		if s[i] >= 33 && s[i] <= 126 {
			b = append(b, s[i])
		}
	}
	if len(b) == 0 {
		return "-"
	}
	return string(b)
}

// sdEscaper writes the RFC 5424 §6.3.3 escapes. go-syslog's SetParameter
// takes a value in this escaped form and drops one that is not (or is not
// valid UTF-8) silently, leaving an empty parameter.
var sdEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, `]`, `\]`)

// sdValue prepares a PARAM-VALUE for the builder.
func sdValue(v string) string {
	return sdEscaper.Replace(strings.ToValidUTF8(v, "\uFFFD"))
}

// Name implements Sink.
func (s *Syslog) Name() string { return "syslog" }

// Format builds the RFC 5424 message for a at time now.
func (s *Syslog) Format(a alert.Alert, now time.Time) ([]byte, error) {
	m := &rfc5424.SyslogMessage{}
	m.SetPriority(s.opts.Facility*8 + SyslogSeverity(a.Severity))
	m.SetVersion(1)
	ts := now.UTC().Truncate(time.Microsecond)
	m.Timestamp = &ts
	if s.opts.Hostname != "-" {
		m.SetHostname(s.opts.Hostname)
	}
	m.SetAppname("tcpsentry")
	m.SetProcID(s.pid)
	m.SetMsgID(printASCII(a.Detector, 32))
	m.SetParameter(SyslogSDID, "detector", sdValue(a.Detector))
	m.SetParameter(SyslogSDID, "severity", a.Severity.String())
	m.SetParameter(SyslogSDID, "id", sdValue(a.ID))
	if a.Src.IsValid() {
		m.SetParameter(SyslogSDID, "src", a.Src.String())
	}
	if a.Dst.IsValid() {
		m.SetParameter(SyslogSDID, "dst", a.Dst.String())
	}
	if a.HasDstPort {
		m.SetParameter(SyslogSDID, "dst_port", strconv.Itoa(int(a.DstPort)))
	}
	if s.opts.Title {
		m.SetMessage(strings.ToValidUTF8(a.Title, "\uFFFD"))
	} else {
		b, err := body(a)
		if err != nil {
			return nil, err
		}
		m.SetMessage(string(b))
	}
	out, err := m.String()
	if err != nil {
		return nil, fmt.Errorf("syslog: alert %s: %w", a.ID, err)
	}
	return []byte(out), nil
}

// maxDatagram is the largest UDP payload over IPv4.
const maxDatagram = 65507

// Send implements Sink.
func (s *Syslog) Send(ctx context.Context, a alert.Alert) error {
	msg, err := s.Format(a, time.Now())
	if err != nil {
		return err
	}
	if !s.stream && len(msg) > maxDatagram {
		return fmt.Errorf("syslog udp %s: alert %s: message of %d bytes does not fit a datagram; use format: title or tcp", s.opts.Address, a.ID, len(msg))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil && s.stream && peerClosed(s.conn) {
		s.conn.Close()
		s.conn = nil
	}
	if s.conn == nil {
		if err := s.dial(ctx); err != nil {
			return err
		}
	}
	if s.stream {
		// RFC 6587 §3.4.1 octet counting: "LEN SP MSG".
		msg = append(strconv.AppendInt(nil, int64(len(msg)), 10), append([]byte{' '}, msg...)...)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = s.conn.SetWriteDeadline(dl)
	} else {
		_ = s.conn.SetWriteDeadline(time.Time{})
	}
	if _, err := s.conn.Write(msg); err != nil {
		// A partial write leaves the stream out of frame: start afresh.
		s.conn.Close()
		s.conn = nil
		return fmt.Errorf("syslog %s %s: alert %s: %w", s.opts.Network, s.opts.Address, a.ID, err)
	}
	return nil
}

func (s *Syslog) dial(ctx context.Context) error {
	var d net.Dialer
	var c net.Conn
	var err error
	switch s.opts.Network {
	case "tls":
		td := tls.Dialer{NetDialer: &d, Config: s.tls}
		c, err = td.DialContext(ctx, "tcp", s.opts.Address)
	default:
		c, err = d.DialContext(ctx, s.opts.Network, s.opts.Address)
	}
	if err != nil {
		return fmt.Errorf("syslog %s %s: %w", s.opts.Network, s.opts.Address, err)
	}
	s.conn = c
	return nil
}

// peerClosed reports whether the server has closed a stream connection:
// a syslog server never writes, so a read that does not time out at once
// means EOF or a reset.
func peerClosed(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
	var b [1]byte
	_, err := c.Read(b[:])
	_ = c.SetReadDeadline(time.Time{})
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		return false
	}
	return true
}

// Close implements Sink.
func (s *Syslog) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	return err
}
