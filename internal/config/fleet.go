package config

import (
	"fmt"
	"net"
	"net/url"
)

// Fleet configures publishing to NATS JetStream (`watch --publish`) and the
// central analyzer (`tcpsentry fleet`).
type Fleet struct {
	// URLs of the NATS servers; a watch publishes only when one is given
	// (here or with --publish).
	URLs      []string `yaml:"urls"`
	CredsFile string   `yaml:"creds_file"` // NATS credentials (JWT + nkey seed); "" none
	CAFile    string   `yaml:"ca_file"`    // CA for tls:// servers; "" the system roots
	// Host names this sentry in subjects; "" the kernel's host name.
	Host string `yaml:"host"`
	// Partitions is how many partitions source addresses hash into; every
	// sentry and analyzer of a fleet must agree, and changing it needs new
	// streams.
	Partitions int `yaml:"partitions"`
	Replicas   int `yaml:"replicas"` // stream and lease bucket replicas (1, 3 or 5)
	// Retention limits of the streams (0: unlimited).
	ConnMaxAge    Duration `yaml:"conn_max_age"`
	ConnMaxBytes  int64    `yaml:"conn_max_bytes"`
	AlertMaxAge   Duration `yaml:"alert_max_age"`
	AlertMaxBytes int64    `yaml:"alert_max_bytes"`
	// Duplicates is JetStream's dedup window for Nats-Msg-Id.
	Duplicates Duration `yaml:"duplicates"`
	// PublishBuffer is how many records a sentry has published and not
	// yet seen acknowledged at once (and the queue in front of the spool).
	PublishBuffer int `yaml:"publish_buffer"`
	// Spool is the directory where a sentry keeps records until the
	// stream acknowledges them; "" is the watch store's path + ".spool".
	Spool string `yaml:"spool"`
	// SpoolMaxBytes caps the spool; beyond it new records are dropped
	// and counted. It sizes the longest broker outage that loses nothing.
	SpoolMaxBytes int64 `yaml:"spool_max_bytes"`
	// SpoolSync is how often the spool is forced to disk: a machine crash
	// loses at most this much; a crash of the sentry alone loses nothing.
	SpoolSync Duration `yaml:"spool_sync"`
	// LeaseTTL is how long an analyzer's claim on a partition lives
	// without renewal: a dead analyzer's partitions are taken over after it.
	LeaseTTL Duration `yaml:"lease_ttl"`
	// MaxPartitions caps the partitions one analyzer claims (0: as many as
	// are free); with N analyzers, partitions/N shares the work.
	MaxPartitions int `yaml:"max_partitions"`
	// Replay is how far back (in stream time) a partition's new owner
	// replays the records its previous owner had processed, to rebuild
	// detector state; 0 turns it off. Cover the longest detector window.
	Replay Duration `yaml:"replay"`
	// Store is the analyzer's alert store (history and outbox).
	Store string `yaml:"store"`
	// MetricsListen is where `tcpsentry fleet` serves Prometheus metrics;
	// "" turns them off.
	MetricsListen string `yaml:"metrics_listen"`
	// Destination is the fleet-destination detector: one external
	// destination contacted by at least MinHosts sentries within Window.
	Destination FleetDestination `yaml:"destination"`
	// Scan is the fleet-scan detector: one source probing at least
	// MinTargets host:port pairs, seen by at least MinSentries sentries.
	Scan FleetScan `yaml:"scan"`
	// Chain is the fleet-lateral-chain detector: an admin-protocol
	// connection A→B followed by B→C within Window (admin ports from
	// detectors.lateral-movement).
	Chain FleetChain `yaml:"chain"`
}

// FleetChain tunes the fleet-lateral-chain detector.
type FleetChain struct {
	Enabled  bool     `yaml:"enabled"`
	Window   Duration `yaml:"window"`
	MaxHosts int      `yaml:"max_hosts"` // state bound per partition
}

// FleetDestination tunes the fleet-destination detector.
type FleetDestination struct {
	Enabled  bool     `yaml:"enabled"`
	MinHosts int      `yaml:"min_hosts"`
	Window   Duration `yaml:"window"`
	MaxDests int      `yaml:"max_destinations"` // state bound per partition
}

// FleetScan tunes the fleet-scan detector.
type FleetScan struct {
	Enabled     bool     `yaml:"enabled"`
	MinTargets  int      `yaml:"min_targets"`
	MinSentries int      `yaml:"min_sentries"`
	Window      Duration `yaml:"window"`
	MaxSources  int      `yaml:"max_sources"` // state bound per partition
}

func (c *Config) semanticFleet(report func(path string, err error)) {
	f := c.Fleet
	for _, u := range f.URLs {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "nats" && p.Scheme != "tls") || p.Host == "" {
			report("$.fleet.urls", fmt.Errorf("%q: want nats://host:port or tls://host:port", u))
		}
	}
	if f.Partitions < 1 || f.Partitions > 1024 {
		report("$.fleet.partitions", fmt.Errorf("%d: want 1 to 1024", f.Partitions))
	}
	if f.Replicas != 1 && f.Replicas != 3 && f.Replicas != 5 {
		report("$.fleet.replicas", fmt.Errorf("%d: want 1, 3 or 5", f.Replicas))
	}
	if f.PublishBuffer < 1 {
		report("$.fleet.publish_buffer", fmt.Errorf("%d: must be at least 1", f.PublishBuffer))
	}
	if f.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(f.MetricsListen); err != nil {
			report("$.fleet.metrics_listen", fmt.Errorf("%q: want host:port, or empty to disable", f.MetricsListen))
		}
	}
	if f.SpoolMaxBytes < 1<<20 {
		report("$.fleet.spool_max_bytes", fmt.Errorf("%d: must be at least 1 MiB", f.SpoolMaxBytes))
	}
	if f.SpoolSync.Duration <= 0 {
		report("$.fleet.spool_sync", fmt.Errorf("%v: must be positive", f.SpoolSync.Duration))
	}
	if f.LeaseTTL.Duration < 1_000_000_000 {
		report("$.fleet.lease_ttl", fmt.Errorf("%v: must be at least 1s", f.LeaseTTL.Duration))
	}
	if f.MaxPartitions < 0 {
		report("$.fleet.max_partitions", fmt.Errorf("%d: must not be negative", f.MaxPartitions))
	}
	if d := f.Destination; d.MinHosts < 2 || d.Window.Duration <= 0 || d.MaxDests < 1 {
		report("$.fleet.destination", fmt.Errorf("min_hosts must be at least 2, window positive, max_destinations at least 1"))
	}
	if s := f.Scan; s.MinTargets < 2 || s.MinSentries < 2 || s.Window.Duration <= 0 || s.MaxSources < 1 {
		report("$.fleet.scan", fmt.Errorf("min_targets and min_sentries must be at least 2, window positive, max_sources at least 1"))
	}
	if c := f.Chain; c.Window.Duration <= 0 || c.MaxHosts < 1 {
		report("$.fleet.chain", fmt.Errorf("window must be positive, max_hosts at least 1"))
	}
}
