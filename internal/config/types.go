package config

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
)

// The scalar types below never fail while YAML is decoded: they keep the
// bad text and report it from check, so that the loader can name the line
// and key of the value (goccy/go-yaml drops the position of errors returned
// by UnmarshalText).

// checker is implemented by values that validate themselves after decoding.
type checker interface{ check() error }

// Prefix is an address prefix; a bare address means a single host.
type Prefix struct {
	netip.Prefix
	bad string
	err error
}

// MustPrefix parses s or panics; for defaults written in code and tests.
func MustPrefix(s string) Prefix {
	var p Prefix
	_ = p.UnmarshalText([]byte(s))
	if p.err != nil {
		panic(p.err)
	}
	return p
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Prefix) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	*p = Prefix{}
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			p.bad, p.err = s, fmt.Errorf("%q is not an address or CIDR", s)
			return nil
		}
		a = a.Unmap()
		p.Prefix = netip.PrefixFrom(a, a.BitLen())
		return nil
	}
	pr, err := netip.ParsePrefix(s)
	if err != nil {
		p.bad, p.err = s, fmt.Errorf("%q is not a CIDR prefix", s)
		return nil
	}
	if pr.Addr().Is4In6() && pr.Bits() >= 96 {
		pr = netip.PrefixFrom(pr.Addr().Unmap(), pr.Bits()-96)
	}
	p.Prefix = pr.Masked()
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (p Prefix) MarshalText() ([]byte, error) {
	if p.err != nil {
		return []byte(p.bad), nil
	}
	return []byte(p.Prefix.String()), nil
}

func (p Prefix) check() error { return p.err }

// Duration is a time.Duration written as "90s", "24h" or "7d".
type Duration struct {
	time.Duration
	bad string
	err error
}

// UnmarshalText implements encoding.TextUnmarshaler; "d" means 24h.
func (d *Duration) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	*d = Duration{}
	if n, ok := strings.CutSuffix(s, "d"); ok {
		var days float64
		if _, err := fmt.Sscanf(n, "%g", &days); err == nil && days >= 0 {
			d.Duration = time.Duration(days * float64(24*time.Hour))
			return nil
		}
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		d.bad, d.err = s, fmt.Errorf("%q is not a duration like 90s, 15m, 24h or 7d", s)
		return nil
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) {
	if d.err != nil {
		return []byte(d.bad), nil
	}
	if d.Duration%(24*time.Hour) == 0 && d.Duration > 0 {
		return fmt.Appendf(nil, "%dd", d.Duration/(24*time.Hour)), nil
	}
	return []byte(d.Duration.String()), nil
}

func (d Duration) check() error { return d.err }

// Severity is an alert severity in config.
type Severity struct {
	alert.Severity
	bad string
	err error
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Severity) UnmarshalText(b []byte) error {
	*s = Severity{}
	v, err := alert.ParseSeverity(strings.TrimSpace(string(b)))
	if err != nil {
		s.bad, s.err = string(b), err
		return nil
	}
	s.Severity = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (s Severity) MarshalText() ([]byte, error) {
	if s.err != nil {
		return []byte(s.bad), nil
	}
	return []byte(s.Severity.String()), nil
}

func (s Severity) check() error { return s.err }

// Proto is "tcp" or "udp" (empty means tcp).
type Proto string

func (p Proto) check() error {
	switch p {
	case "", "tcp", "udp":
		return nil
	}
	return fmt.Errorf("proto %q: want tcp or udp", string(p))
}

// Port is a TCP/UDP port number.
type Port int

func (p Port) check() error {
	if p < 0 || p > 65535 {
		return fmt.Errorf("port %d out of range 0-65535", int(p))
	}
	return nil
}
