package config

import "fmt"

// Detectors holds each detector's switch and thresholds, keyed by the
// detector names of DESIGN.md.
type Detectors struct {
	SuspiciousPort       Toggle          `yaml:"suspicious-port"`
	UnauthorizedListener Toggle          `yaml:"unauthorized-listener"`
	MissingService       Toggle          `yaml:"missing-service"`
	StatePile            StatePile       `yaml:"state-pile"`
	LongConnection       LongConnection  `yaml:"long-connection"`
	ReverseShell         ReverseShell    `yaml:"reverse-shell"`
	ProcessNetwork       ProcessNetwork  `yaml:"process-network"`
	LateralMovement      LateralMovement `yaml:"lateral-movement"`
	Egress               Egress          `yaml:"egress"`
	BlocklistedIP        Toggle          `yaml:"blocklisted-ip"`
	Scan                 Scan            `yaml:"scan"`
	Flood                Flood           `yaml:"flood"`
	RapidAttempts        RapidAttempts   `yaml:"rapid-attempts"`
}

// RapidAttempts thresholds: a source opening connections far faster than
// its own normal rate or its peers'.
type RapidAttempts struct {
	Enabled bool     `yaml:"enabled"`
	Window  Duration `yaml:"window"` // rates are attempts per window (sliding)
	// MinAttempts in one window before anything is said, whatever the
	// normal: a quiet source doubling from 2 to 4 is not news.
	MinAttempts int     `yaml:"min_attempts"`
	Factor      float64 `yaml:"factor"`      // times the source's own normal rate
	PeerFactor  float64 `yaml:"peer_factor"` // times what a busy peer does (90th percentile)
	// MinHistory windows of its own before a source's normal is trusted;
	// MinPeers source-windows before the peers' is.
	MinHistory       int `yaml:"min_history"`
	MinPeers         int `yaml:"min_peers"`
	CriticalAttempts int `yaml:"critical_attempts"` // attempts in one window reported as critical
	MaxSources       int `yaml:"max_sources"`       // sources tracked at once; the quietest are evicted
}

// Flood thresholds for SYN floods in traffic.
type Flood struct {
	Enabled       bool     `yaml:"enabled"`
	Attempts      int      `yaml:"attempts"`        // half-open attempts on one host:port
	RatePerSecond int      `yaml:"rate_per_second"` // and at least this many in one second
	Window        Duration `yaml:"window"`          // a target quiet this long starts a new episode
	MaxTargets    int      `yaml:"max_targets"`     // targets tracked at once; the quietest is evicted
	MaxSources    int      `yaml:"max_sources"`     // distinct sources remembered per target
}

// Scan thresholds for port scans in traffic.
type Scan struct {
	Enabled         bool     `yaml:"enabled"`
	VerticalPorts   int      `yaml:"vertical_ports"`   // distinct ports probed on one host
	HorizontalHosts int      `yaml:"horizontal_hosts"` // distinct hosts probed on one port
	Window          Duration `yaml:"window"`           // a source idle this long starts a new episode
	// EpisodeGap: a reported scan whose probe type pauses this long and
	// resumes is a new scan, reported on its own.
	EpisodeGap Duration `yaml:"episode_gap"`
	// A block scan: one source, at least BlockPorts ports on each of at
	// least BlockHosts hosts. A distributed scan: DistributedPorts ports of
	// one host probed by DistributedSources sources, each with fewer than 8.
	BlockHosts         int `yaml:"block_hosts"`
	BlockPorts         int `yaml:"block_ports"`
	DistributedSources int `yaml:"distributed_sources"`
	DistributedPorts   int `yaml:"distributed_ports"`
	// Threshold Random Walk (Jung et al. 2004): θ0 and θ1 are the chances
	// that a benign source's and a scanner's first contact succeeds; α and
	// β the wanted false- and true-positive rates.
	TRWTheta0  float64 `yaml:"trw_theta0"`
	TRWTheta1  float64 `yaml:"trw_theta1"`
	TRWAlpha   float64 `yaml:"trw_alpha"`
	TRWBeta    float64 `yaml:"trw_beta"`
	MaxSources int     `yaml:"max_sources"` // sources tracked at once; the longest idle is evicted
	MaxTargets int     `yaml:"max_targets"` // hosts tracked per source
}

// Toggle is a detector with no thresholds.
type Toggle struct {
	Enabled bool `yaml:"enabled"`
}

// StatePile thresholds: counts of sockets in one state per listener or process.
type StatePile struct {
	Enabled   bool `yaml:"enabled"`
	SynRecv   int  `yaml:"syn_recv"`   // half-open connections on one listener (SYN flood)
	SynSent   int  `yaml:"syn_sent"`   // outstanding connection attempts of one process (scan, worm)
	CloseWait int  `yaml:"close_wait"` // connections one process never closed (stuck or abused service)
}

// LongConnection thresholds on connection age.
type LongConnection struct {
	Enabled bool     `yaml:"enabled"`
	Medium  Duration `yaml:"medium"` // age reported at medium
	High    Duration `yaml:"high"`   // age reported at high
	// IgnoreProcesses are expected to hold long sessions (sshd, databases).
	IgnoreProcesses []string `yaml:"ignore_processes"`
}

// ReverseShell lists programs that must not have a socket as stdio.
type ReverseShell struct {
	Enabled      bool     `yaml:"enabled"`
	Interpreters []string `yaml:"interpreters"`
}

// ProcessNetwork restricts which processes may use the network.
type ProcessNetwork struct {
	Enabled bool          `yaml:"enabled"`
	Rules   []ProcessRule `yaml:"rules"`
	// Baseline flags what a learned per-executable profile has not seen.
	Baseline bool `yaml:"baseline"`
}

// ProcessRule is a policy for one process name (or exe path).
type ProcessRule struct {
	Process       string   `yaml:"process"`
	Deny          bool     `yaml:"deny"`           // must not use the network at all
	AllowPorts    []Port   `yaml:"allow_ports"`    // remote ports it may connect to
	AllowNetworks []Prefix `yaml:"allow_networks"` // remote networks it may connect to
	Severity      Severity `yaml:"severity"`
}

// LateralMovement watches internal→internal admin protocols.
type LateralMovement struct {
	Enabled    bool   `yaml:"enabled"`
	AdminPorts []Port `yaml:"admin_ports"`
}

// Egress watches internal→external connections.
type Egress struct {
	Enabled bool `yaml:"enabled"`
	// AllowedPorts are remote ports any process may reach outside.
	AllowedPorts []Port `yaml:"allowed_ports"`
}

// semantic checks relations between values; report names the YAML path.
func (c *Config) semantic(report func(path string, err error)) {
	if l := c.Listeners.Loopback; l != "low" && l != "ignore" {
		report("$.listeners.loopback", fmt.Errorf("%q: want low or ignore", l))
	}
	sp := c.Detectors.StatePile
	for _, v := range []struct {
		key string
		n   int
	}{{"syn_recv", sp.SynRecv}, {"syn_sent", sp.SynSent}, {"close_wait", sp.CloseWait}} {
		if v.n < 1 {
			report("$.detectors.state-pile."+v.key, fmt.Errorf("%d: must be at least 1", v.n))
		}
	}
	sc := c.Detectors.Scan
	for _, v := range []struct {
		key string
		n   int
	}{{"vertical_ports", sc.VerticalPorts}, {"horizontal_hosts", sc.HorizontalHosts}, {"max_sources", sc.MaxSources}, {"max_targets", sc.MaxTargets}} {
		if v.n < 1 {
			report("$.detectors.scan."+v.key, fmt.Errorf("%d: must be at least 1", v.n))
		}
	}
	for _, v := range []struct {
		key string
		p   float64
	}{{"trw_theta0", sc.TRWTheta0}, {"trw_theta1", sc.TRWTheta1}, {"trw_alpha", sc.TRWAlpha}, {"trw_beta", sc.TRWBeta}} {
		if !(v.p > 0 && v.p < 1) {
			report("$.detectors.scan."+v.key, fmt.Errorf("%v: must be between 0 and 1", v.p))
		}
	}
	if sc.TRWTheta1 >= sc.TRWTheta0 {
		report("$.detectors.scan.trw_theta1", fmt.Errorf("%v: must be below trw_theta0 (%v): scanners fail more often", sc.TRWTheta1, sc.TRWTheta0))
	}
	fl := c.Detectors.Flood
	for _, v := range []struct {
		key string
		n   int
	}{{"attempts", fl.Attempts}, {"rate_per_second", fl.RatePerSecond}, {"max_targets", fl.MaxTargets}, {"max_sources", fl.MaxSources}} {
		if v.n < 1 {
			report("$.detectors.flood."+v.key, fmt.Errorf("%d: must be at least 1", v.n))
		}
	}
	sc = c.Detectors.Scan
	for _, v := range []struct {
		key string
		n   int
	}{{"block_hosts", sc.BlockHosts}, {"block_ports", sc.BlockPorts}, {"distributed_sources", sc.DistributedSources}, {"distributed_ports", sc.DistributedPorts}} {
		if v.n < 2 {
			report("$.detectors.scan."+v.key, fmt.Errorf("%d: must be at least 2", v.n))
		}
	}
	if g := c.Detectors.Scan.EpisodeGap.Duration; g <= 0 {
		report("$.detectors.scan.episode_gap", fmt.Errorf("%v: must be positive", g))
	}
	ra := c.Detectors.RapidAttempts
	for _, v := range []struct {
		key string
		n   int
	}{{"min_attempts", ra.MinAttempts}, {"min_history", ra.MinHistory}, {"min_peers", ra.MinPeers},
		{"critical_attempts", ra.CriticalAttempts}, {"max_sources", ra.MaxSources}} {
		if v.n < 1 {
			report("$.detectors.rapid-attempts."+v.key, fmt.Errorf("%d: must be at least 1", v.n))
		}
	}
	for _, v := range []struct {
		key string
		f   float64
	}{{"factor", ra.Factor}, {"peer_factor", ra.PeerFactor}} {
		if v.f < 1 {
			report("$.detectors.rapid-attempts."+v.key, fmt.Errorf("%g: must be at least 1", v.f))
		}
	}
	if ra.Window.Duration <= 0 {
		report("$.detectors.rapid-attempts.window", fmt.Errorf("must be positive"))
	}
	lc := c.Detectors.LongConnection
	if lc.High.Duration < lc.Medium.Duration {
		report("$.detectors.long-connection.high", fmt.Errorf("%v is shorter than medium (%v)", lc.High.Duration, lc.Medium.Duration))
	}
	for i, f := range c.Intel.Feeds {
		switch f.Format {
		case "", "auto", "plain", "netset", "drop":
		default:
			report(fmt.Sprintf("$.intel.feeds[%d].format", i), fmt.Errorf("%q: want auto, plain, netset or drop", f.Format))
		}
		if f.Path == "" {
			report(fmt.Sprintf("$.intel.feeds[%d].path", i), fmt.Errorf("missing"))
		}
	}
	for i, pp := range c.Ports.Protocols {
		if pp.Name == "" {
			report(fmt.Sprintf("$.ports.protocols[%d].name", i), fmt.Errorf("missing"))
		}
		if len(pp.Ports) == 0 {
			report(fmt.Sprintf("$.ports.protocols[%d].ports", i), fmt.Errorf("missing"))
		}
	}
	for i, r := range c.Detectors.ProcessNetwork.Rules {
		if r.Process == "" {
			report(fmt.Sprintf("$.detectors.process-network.rules[%d].process", i), fmt.Errorf("missing"))
		}
	}
}
