// Package config is tcpsentry's YAML configuration: embedded defaults that
// work with no file at all, overlaid by the user's file; unknown keys and bad
// values are errors naming file, line and key.
package config

import (
	_ "embed"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/parser"
)

//go:embed defaults.yaml
var defaultsYAML []byte

// Defaults returns the embedded default configuration as YAML text.
func Defaults() []byte { return append([]byte(nil), defaultsYAML...) }

// Config is the whole configuration. Every field is documented in
// defaults.yaml, which is what `tcpsentry config` prints when no file is given.
type Config struct {
	Networks  Networks  `yaml:"networks"`
	Ports     Ports     `yaml:"ports"`
	Listeners Listeners `yaml:"listeners"`
	Services  Services  `yaml:"services"`
	Detectors Detectors `yaml:"detectors"`
	Allowlist Allowlist `yaml:"allowlist"`
	Intel     Intel     `yaml:"intel"`
	Store     Store     `yaml:"store"`
	Sinks     Sinks     `yaml:"sinks"`
	Watch     Watch     `yaml:"watch"`
	Fleet     Fleet     `yaml:"fleet"`
}

// Networks says which addresses are "ours".
type Networks struct {
	Internal []Prefix `yaml:"internal"`
}

// Ports lists known-bad ports and where well-known services belong.
type Ports struct {
	Suspicious []SuspiciousPort `yaml:"suspicious"`
	// Services maps a service name to its standard ports; a listener of that
	// service's process elsewhere is "a well-known service on a non-standard port".
	Services []ServicePorts `yaml:"services"`
	// Protocols gives each application protocol (as identified from the
	// first payload bytes, or Zeek's service field) its standard ports: a
	// protocol spoken on another protocol's port, or on a suspicious port,
	// is reported (ATT&CK T1571).
	Protocols []ProtocolPorts `yaml:"protocols"`
}

// ProtocolPorts lists the ports an application protocol belongs on.
type ProtocolPorts struct {
	Name     string   `yaml:"name"` // Zeek's service name: ssh, http, ssl, irc, …
	Ports    []Port   `yaml:"ports"`
	Severity Severity `yaml:"severity"` // when it is found on another protocol's port
}

// SuspiciousPort is a port with a reason to distrust it.
type SuspiciousPort struct {
	Port     Port     `yaml:"port"`
	Proto    Proto    `yaml:"proto,omitempty"`
	Reason   string   `yaml:"reason"`
	Severity Severity `yaml:"severity"`
}

// ServicePorts ties service processes to their standard ports.
type ServicePorts struct {
	Name      string   `yaml:"name"`
	Processes []string `yaml:"processes"`
	Ports     []Port   `yaml:"ports"`
}

// Listeners configures the unauthorized-listener detector.
type Listeners struct {
	Allowed []ListenerRule `yaml:"allowed"`
	// Loopback is how loopback-only listeners are reported: "low" or "ignore".
	Loopback string `yaml:"loopback"`
}

// ListenerRule allows a listener; empty fields match anything.
type ListenerRule struct {
	Port    Port    `yaml:"port"`
	Proto   Proto   `yaml:"proto,omitempty"`
	Process string  `yaml:"process,omitempty"`
	Address *Prefix `yaml:"address,omitempty"`
}

// Services lists listeners that must exist (missing-service).
type Services struct {
	Expected []ExpectedService `yaml:"expected"`
}

// ExpectedService is a listener that must be present.
type ExpectedService struct {
	Name    string `yaml:"name"`
	Port    Port   `yaml:"port"`
	Proto   Proto  `yaml:"proto,omitempty"`
	Process string `yaml:"process,omitempty"`
}

// Allowlist is never alerted on.
type Allowlist struct {
	Addresses []Prefix `yaml:"addresses"`
	Processes []string `yaml:"processes"`
}

// Intel configures address feeds and GeoIP.
type Intel struct {
	Feeds []Feed `yaml:"feeds"`
	GeoIP GeoIP  `yaml:"geoip"`
}

// Feed is a blocklist file.
type Feed struct {
	Name   string `yaml:"name"`
	Path   string `yaml:"path"`
	Format string `yaml:"format,omitempty"` // auto, plain, netset, drop
}

// GeoIP is an optional country policy from a MaxMind-format database.
type GeoIP struct {
	Database      string   `yaml:"database"`
	DenyCountries []string `yaml:"deny_countries"`
	AllowOnly     []string `yaml:"allow_only"`
}

// Store is the embedded SQLite store.
type Store struct {
	Path string `yaml:"path"`
}

// Load reads the defaults and overlays path (if non-empty). A value that
// cannot be used is an error naming path, line and key.
func Load(path string) (*Config, error) {
	if path == "" {
		return Parse(nil, "")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data, path)
}

// Parse overlays YAML text named name onto the defaults; nil data means
// the defaults alone.
func Parse(data []byte, name string) (*Config, error) {
	var cfg Config
	if err := decode(defaultsYAML, "(defaults)", &cfg); err != nil {
		return nil, fmt.Errorf("embedded defaults: %w", err)
	}
	if data != nil {
		if err := decode(data, name, &cfg); err != nil {
			return nil, err
		}
	}
	return &cfg, nil
}

// Marshal prints the effective configuration as YAML.
func Marshal(cfg *Config) ([]byte, error) {
	return yaml.MarshalWithOptions(cfg, yaml.IndentSequence(true))
}

// decode overlays data onto cfg: maps and structs merge, lists replace.
func decode(data []byte, name string, cfg *Config) error {
	if err := yaml.UnmarshalWithOptions(data, cfg, yaml.Strict()); err != nil {
		var ye yaml.Error
		if errors.As(err, &ye) && ye.GetToken() != nil {
			pos := ye.GetToken().Position
			return fmt.Errorf("%s:%d:%d: %s", name, pos.Line, pos.Column, ye.GetMessage())
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	var errs []error
	walk(reflect.ValueOf(cfg).Elem(), "$", func(path string, err error) {
		errs = append(errs, fmt.Errorf("%s:%s: %s: %w", name, lineOf(data, path), keyOf(path), err))
	})
	semanticErr := func(path string, err error) {
		errs = append(errs, fmt.Errorf("%s:%s: %s: %w", name, lineOf(data, path), keyOf(path), err))
	}
	cfg.semantic(semanticErr)
	cfg.semanticSinks(semanticErr)
	cfg.semanticFleet(semanticErr)
	return errors.Join(errs...)
}

// walk calls bad for every value under v whose check fails, with its YAML path.
func walk(v reflect.Value, path string, bad func(path string, err error)) {
	if v.Kind() == reflect.Pointer {
		if !v.IsNil() {
			walk(v.Elem(), path, bad)
		}
		return
	}
	if v.CanInterface() {
		if c, ok := v.Interface().(checker); ok {
			if err := c.check(); err != nil {
				bad(path, err)
			}
			if v.Kind() != reflect.Struct {
				return
			}
		}
	}
	switch v.Kind() {
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			walk(v.Field(i), path+"."+tag, bad)
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			walk(v.Index(i), path+"["+strconv.Itoa(i)+"]", bad)
		}
	}
}

// lineOf finds the line of a YAML path in data, or "?" when the value came
// from the defaults rather than this file.
func lineOf(data []byte, path string) string {
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		return "?"
	}
	p, err := yaml.PathString(path)
	if err != nil {
		return "?"
	}
	n, err := p.FilterFile(f)
	if err != nil || n == nil || n.GetToken() == nil {
		return "?"
	}
	return strconv.Itoa(n.GetToken().Position.Line)
}

// keyOf turns "$.detectors.state-pile.syn_recv" into "detectors.state-pile.syn_recv".
func keyOf(path string) string { return strings.TrimPrefix(strings.TrimPrefix(path, "$"), ".") }
