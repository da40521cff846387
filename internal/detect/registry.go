package detect

import (
	"github.com/tcpsentry/tcpsentry/internal/baseline"
	"github.com/tcpsentry/tcpsentry/internal/config"
)

// Deps are the shared resources some detectors need beyond the config.
type Deps struct {
	// Intel matches remote addresses against blocklists; nil disables blocklisted-ip.
	Intel IntelChecker
	// Profiles is the learned baseline; nil when none was learned.
	Profiles ProfileSource
	// Traffic is the learned traffic model (packet-size, anomaly); nil
	// when none was learned, and those detectors then stay quiet.
	Traffic *baseline.TrafficModel
}

// entry is one row of the registry: a detector's name, whether the config
// enables it, and how to build it.
type entry struct {
	name    string
	enabled func(*config.Detectors) bool
	build   func(*config.Config, Deps) Detector
}

// registry lists every host detector in the order they run. Adding a
// detector means adding a row here, a config section and a file.
var registry = []entry{
	{"suspicious-port", func(d *config.Detectors) bool { return d.SuspiciousPort.Enabled },
		func(c *config.Config, _ Deps) Detector { return NewSuspiciousPort(c) }},
	{"unauthorized-listener", func(d *config.Detectors) bool { return d.UnauthorizedListener.Enabled },
		func(c *config.Config, _ Deps) Detector { return NewUnauthorizedListener(c) }},
	{"missing-service", func(d *config.Detectors) bool { return d.MissingService.Enabled },
		func(c *config.Config, _ Deps) Detector { return NewMissingService(c) }},
	{"state-pile", func(d *config.Detectors) bool { return d.StatePile.Enabled },
		func(c *config.Config, _ Deps) Detector { return NewStatePile(c) }},
	{"long-connection", func(d *config.Detectors) bool { return d.LongConnection.Enabled },
		func(c *config.Config, _ Deps) Detector { return NewLongConnection(c) }},
	{"reverse-shell", func(d *config.Detectors) bool { return d.ReverseShell.Enabled },
		func(c *config.Config, _ Deps) Detector { return NewReverseShell(c) }},
	{"process-network", func(d *config.Detectors) bool { return d.ProcessNetwork.Enabled },
		func(c *config.Config, deps Deps) Detector { return NewProcessNetwork(c, deps.Profiles) }},
	{"lateral-movement", func(d *config.Detectors) bool { return d.LateralMovement.Enabled },
		func(c *config.Config, deps Deps) Detector { return NewLateralMovement(c, deps.Profiles) }},
	{"egress", func(d *config.Detectors) bool { return d.Egress.Enabled },
		func(c *config.Config, deps Deps) Detector { return NewEgress(c, deps.Profiles) }},
	{"blocklisted-ip", func(d *config.Detectors) bool { return d.BlocklistedIP.Enabled },
		func(c *config.Config, deps Deps) Detector { return NewBlocklistedIP(c, deps.Intel) }},
}

// HostDetectors builds the enabled host detectors.
func HostDetectors(cfg *config.Config, deps Deps) []Detector {
	var out []Detector
	for _, e := range registry {
		if e.enabled(&cfg.Detectors) {
			out = append(out, e.build(cfg, deps))
		}
	}
	return out
}

// trafficRegistry lists the detectors that read connection records.
var trafficRegistry = []entry{
	{"suspicious-port", func(d *config.Detectors) bool { return d.SuspiciousPort.Enabled },
		func(c *config.Config, _ Deps) Detector { return NewSuspiciousPort(c) }},
	{"scan", func(d *config.Detectors) bool { return d.Scan.Enabled },
		func(c *config.Config, _ Deps) Detector { return NewScan(c) }},
	{"flood", func(d *config.Detectors) bool { return d.Flood.Enabled },
		func(c *config.Config, _ Deps) Detector { return NewFlood(c) }},
	{"rapid-attempts", func(d *config.Detectors) bool { return d.RapidAttempts.Enabled },
		func(c *config.Config, _ Deps) Detector { return NewRapidAttempts(c) }},
	{"beacon", func(d *config.Detectors) bool { return d.Beacon.Enabled },
		func(c *config.Config, _ Deps) Detector { return NewBeacon(c) }},
	{"long-connection", func(d *config.Detectors) bool { return d.LongConnection.Enabled },
		func(c *config.Config, _ Deps) Detector { return NewLongConnectionTraffic(c) }},
	{"exfiltration", func(d *config.Detectors) bool { return d.Exfiltration.Enabled },
		func(c *config.Config, _ Deps) Detector { return NewExfiltration(c) }},
	{"packet-size", func(d *config.Detectors) bool { return d.PacketSize.Enabled },
		func(c *config.Config, deps Deps) Detector { return NewPacketSize(c, deps.Traffic) }},
	{"anomaly", func(d *config.Detectors) bool { return d.Anomaly.Enabled },
		func(c *config.Config, deps Deps) Detector { return NewAnomaly(c, deps.Traffic) }},
}

// TrafficDetectors builds the enabled detectors for connection records.
func TrafficDetectors(cfg *config.Config, deps Deps) []Detector {
	var out []Detector
	for _, e := range trafficRegistry {
		if e.enabled(&cfg.Detectors) {
			out = append(out, e.build(cfg, deps))
		}
	}
	return out
}

// Names lists every registered detector name, enabled or not.
func Names() []string {
	out := make([]string, len(registry))
	for i, e := range registry {
		out[i] = e.name
	}
	return out
}
