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
	Beacon               Beacon          `yaml:"beacon"`
	Exfiltration         Exfiltration    `yaml:"exfiltration"`
	PacketSize           PacketSize      `yaml:"packet-size"`
	Anomaly              Anomaly         `yaml:"anomaly"`
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

// Beacon thresholds: regular connections from one source to one
// destination, scored in the spirit of RITA.
type Beacon struct {
	Enabled        bool    `yaml:"enabled"`
	MinConnections int     `yaml:"min_connections"` // successful connections a pair needs before it is scored
	Score          float64 `yaml:"score"`           // report pairs scoring at least this (0–1)
	MediumScore    float64 `yaml:"medium_score"`    // and at medium from this score
	HighScore      float64 `yaml:"high_score"`      // and at high from this one
	// MinTimeScore gates on the regularity of the intervals (their
	// MAD/median score, less its sampling error): regular sizes and an
	// all-day spread without regular intervals are not a beacon.
	MinTimeScore float64 `yaml:"min_time_score"`
	// Weights of the three sub-scores in the total; they need not sum to 1.
	WeightTime      float64 `yaml:"weight_time"`
	WeightSize      float64 `yaml:"weight_size"`
	WeightHistogram float64 `yaml:"weight_histogram"`
	// Expected lists services that poll on a fixed schedule by design
	// (NTP); their score is multiplied by ExpectedFactor, not hidden.
	Expected       []ExpectedPeriodic `yaml:"expected"`
	ExpectedFactor float64            `yaml:"expected_factor"`
	// Proxies are web proxies: a beacon to one is reported with the
	// client that made it, one from one says the client is behind it.
	Proxies    []Prefix `yaml:"proxies"`
	MaxPairs   int      `yaml:"max_pairs"`   // pairs tracked at once; the longest idle is evicted
	MaxSamples int      `yaml:"max_samples"` // connection times kept per pair (the newest)
}

// ExpectedPeriodic is a service known to poll on a schedule.
type ExpectedPeriodic struct {
	Proto  Proto  `yaml:"proto"`
	Port   Port   `yaml:"port"`
	Reason string `yaml:"reason"`
}

// Exfiltration thresholds on outbound volume.
type Exfiltration struct {
	Enabled     bool    `yaml:"enabled"`
	PairBytes   uint64  `yaml:"pair_bytes"`   // bytes one source sends one destination
	SourceBytes uint64  `yaml:"source_bytes"` // bytes one source sends to all destinations
	HighBytes   uint64  `yaml:"high_bytes"`   // reported at high from this volume (external destinations)
	MinPCR      float64 `yaml:"min_pcr"`      // producer–consumer ratio: (sent-received)/(sent+received)
	// Upload spikes against the source's own history.
	SpikeBucket   Duration `yaml:"spike_bucket"`      // history granularity
	SpikeHistory  int      `yaml:"spike_history"`     // buckets of history kept per source
	SpikeMinHist  int      `yaml:"spike_min_history"` // buckets needed before spikes are judged
	SpikeFactor   float64  `yaml:"spike_factor"`      // a bucket this many times the median bucket is a spike
	SpikeMinBytes uint64   `yaml:"spike_min_bytes"`   // and at least this many bytes
	MaxPairs      int      `yaml:"max_pairs"`
	MaxSources    int      `yaml:"max_sources"`
}

// PacketSize thresholds against the learned per-port size profile.
type PacketSize struct {
	Enabled    bool    `yaml:"enabled"`
	Z          float64 `yaml:"z"`           // robust z-score of log bytes per packet
	MinPackets uint64  `yaml:"min_packets"` // packets one direction needs before it is judged
	MinSamples int     `yaml:"min_samples"` // connections a port's profile needs to be trusted
	// RangeMargin (log2 units) widens the learned range (0.1%–99.9%)
	// before a size counts as outside it.
	RangeMargin float64 `yaml:"range_margin"`
}

// Anomaly thresholds for the learned multivariate model.
type Anomaly struct {
	Enabled     bool    `yaml:"enabled"`
	Score       float64 `yaml:"score"`        // report connections scoring at least this
	FreeZ       float64 `yaml:"free_z"`       // |z| every feature may reach without adding to the score
	FeatureZ    float64 `yaml:"feature_z"`    // a feature counts as deviating from this robust z
	MinFeatures int     `yaml:"min_features"` // features that must deviate together
	MinSamples  int     `yaml:"min_samples"`  // training connections a port group needs; else the global group
	MaxGroups   int     `yaml:"max_groups"`   // port groups learned (the busiest)
	MaxAlerts   int     `yaml:"max_alerts"`   // distinct findings kept; beyond, only counted
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
	// Traffic holds the thresholds for connection records (analyze).
	Traffic LongConnectionTraffic `yaml:"traffic"`
	// IgnoreProcesses are expected to hold long sessions (sshd, databases).
	IgnoreProcesses []string `yaml:"ignore_processes"`
}

// LongConnectionTraffic thresholds on connection records.
type LongConnectionTraffic struct {
	Low          Duration `yaml:"low"`           // one connection this long is reported at low
	Medium       Duration `yaml:"medium"`        // at medium
	High         Duration `yaml:"high"`          // at high
	PairCoverage float64  `yaml:"pair_coverage"` // a pair whose connections cover this share of the window
	PairWindow   Duration `yaml:"pair_window"`   // judged only when the input spans at least this
	// PairMinDuration: shorter connections do not count toward coverage.
	PairMinDuration Duration `yaml:"pair_min_duration"`
	MaxPairs        int      `yaml:"max_pairs"`
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
	bc := c.Detectors.Beacon
	for _, v := range []struct {
		key string
		n   int
	}{{"min_connections", bc.MinConnections}, {"max_pairs", bc.MaxPairs}, {"max_samples", bc.MaxSamples}} {
		if v.n < 1 {
			report("$.detectors.beacon."+v.key, fmt.Errorf("%d: must be at least 1", v.n))
		}
	}
	if bc.MinConnections < 4 {
		report("$.detectors.beacon.min_connections", fmt.Errorf("%d: at least 4 (three intervals) are needed to judge regularity", bc.MinConnections))
	}
	if bc.MaxSamples < bc.MinConnections {
		report("$.detectors.beacon.max_samples", fmt.Errorf("%d: below min_connections (%d)", bc.MaxSamples, bc.MinConnections))
	}
	for _, v := range []struct {
		key string
		p   float64
	}{{"score", bc.Score}, {"min_time_score", bc.MinTimeScore}, {"medium_score", bc.MediumScore}, {"high_score", bc.HighScore}, {"expected_factor", bc.ExpectedFactor},
		{"weight_time", bc.WeightTime}, {"weight_size", bc.WeightSize}, {"weight_histogram", bc.WeightHistogram}} {
		if !(v.p >= 0 && v.p <= 1) {
			report("$.detectors.beacon."+v.key, fmt.Errorf("%v: must be between 0 and 1", v.p))
		}
	}
	if bc.WeightTime+bc.WeightSize+bc.WeightHistogram == 0 {
		report("$.detectors.beacon.weight_time", fmt.Errorf("all weights are 0"))
	}
	if bc.MediumScore < bc.Score || bc.HighScore < bc.MediumScore {
		report("$.detectors.beacon.high_score", fmt.Errorf("want score ≤ medium_score ≤ high_score"))
	}
	ex := c.Detectors.Exfiltration
	for _, v := range []struct {
		key string
		n   int
	}{{"spike_history", ex.SpikeHistory}, {"spike_min_history", ex.SpikeMinHist}, {"max_pairs", ex.MaxPairs}, {"max_sources", ex.MaxSources}} {
		if v.n < 1 {
			report("$.detectors.exfiltration."+v.key, fmt.Errorf("%d: must be at least 1", v.n))
		}
	}
	if ex.SpikeMinHist > ex.SpikeHistory {
		report("$.detectors.exfiltration.spike_min_history", fmt.Errorf("%d: more than spike_history (%d)", ex.SpikeMinHist, ex.SpikeHistory))
	}
	if ex.PairBytes == 0 || ex.SourceBytes == 0 {
		report("$.detectors.exfiltration.pair_bytes", fmt.Errorf("pair_bytes and source_bytes must be positive"))
	}
	if ex.MinPCR < -1 || ex.MinPCR > 1 {
		report("$.detectors.exfiltration.min_pcr", fmt.Errorf("%v: must be between -1 and 1", ex.MinPCR))
	}
	if ex.SpikeBucket.Duration <= 0 {
		report("$.detectors.exfiltration.spike_bucket", fmt.Errorf("must be positive"))
	}
	if ex.SpikeFactor <= 1 {
		report("$.detectors.exfiltration.spike_factor", fmt.Errorf("%v: must be above 1", ex.SpikeFactor))
	}
	if ps := c.Detectors.PacketSize; ps.Z <= 0 || ps.MinSamples < 1 || ps.RangeMargin < 0 {
		report("$.detectors.packet-size.z", fmt.Errorf("z must be positive, min_samples at least 1, range_margin not negative"))
	}
	an := c.Detectors.Anomaly
	if an.Score <= 0 || an.FeatureZ <= 0 || an.FreeZ < 0 {
		report("$.detectors.anomaly.score", fmt.Errorf("score and feature_z must be positive, free_z not negative"))
	}
	for _, v := range []struct {
		key string
		n   int
	}{{"min_features", an.MinFeatures}, {"min_samples", an.MinSamples}, {"max_groups", an.MaxGroups}, {"max_alerts", an.MaxAlerts}} {
		if v.n < 1 {
			report("$.detectors.anomaly."+v.key, fmt.Errorf("%d: must be at least 1", v.n))
		}
	}
	lt := c.Detectors.LongConnection.Traffic
	if lt.Medium.Duration < lt.Low.Duration || lt.High.Duration < lt.Medium.Duration {
		report("$.detectors.long-connection.traffic.high", fmt.Errorf("want low ≤ medium ≤ high"))
	}
	if !(lt.PairCoverage > 0 && lt.PairCoverage <= 1) {
		report("$.detectors.long-connection.traffic.pair_coverage", fmt.Errorf("%v: must be above 0 and at most 1", lt.PairCoverage))
	}
	if lt.MaxPairs < 1 {
		report("$.detectors.long-connection.traffic.max_pairs", fmt.Errorf("%d: must be at least 1", lt.MaxPairs))
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
