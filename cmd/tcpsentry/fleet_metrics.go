package main

import (
	"sync/atomic"

	"github.com/tcpsentry/tcpsentry/internal/fleet"
	"github.com/tcpsentry/tcpsentry/internal/metrics"
)

func counter(v *atomic.Uint64) func() float64 { return func() float64 { return float64(v.Load()) } }

// registerPublisherMetrics exports a sentry's publishing counts.
func registerPublisherMetrics(m *metrics.Metrics, p *fleet.ConnPublisher) {
	s := &p.Stats
	m.CounterFunc("tcpsentry_fleet_records_spooled_total", "Connection records written to the fleet spool.", counter(&s.Spooled))
	m.CounterFunc("tcpsentry_fleet_records_published_total", "Record publications to JetStream, republications included.", counter(&s.Published))
	m.CounterFunc("tcpsentry_fleet_records_acked_total", "Records the stream acknowledged.", counter(&s.Acked))
	m.CounterFunc("tcpsentry_fleet_records_retried_total", "Records republished after a failed or missing acknowledgement.", counter(&s.Retried))
	m.CounterFunc("tcpsentry_fleet_records_dropped_total", "Records not spooled: queue or spool full, or a write error.", counter(&s.Dropped))
	m.GaugeFunc("tcpsentry_fleet_spool_backlog_records", "Spooled records the stream has not acknowledged yet.", func() float64 { return float64(p.Backlog()) })
	m.GaugeFunc("tcpsentry_fleet_spool_bytes", "Size of the spool's segment files.", func() float64 { return float64(p.SpoolBytes()) })
}

// registerAnalyzerMetrics exports a fleet analyzer's counts.
func registerAnalyzerMetrics(m *metrics.Metrics, a *fleet.Analyzer) {
	s := &a.Stats
	m.CounterFunc("tcpsentry_fleet_records_processed_total", "Record messages run through the detectors (source and destination sides).", counter(&s.Records))
	m.CounterFunc("tcpsentry_fleet_records_redelivered_total", "Processed record messages that JetStream delivered more than once.", counter(&s.Redelivered))
	m.CounterFunc("tcpsentry_fleet_records_replayed_total", "Records replayed to rebuild a partition's detector state after a change of owner.", counter(&s.Replayed))
	m.CounterFunc("tcpsentry_fleet_records_bad_total", "Record messages that did not decode (skipped).", counter(&s.Bad))
	m.CounterFunc("tcpsentry_fleet_partitions_claimed_total", "Partitions claimed, takeovers included.", counter(&s.Claimed))
	m.CounterFunc("tcpsentry_fleet_partitions_released_total", "Partitions released or lost.", counter(&s.Released))
	m.GaugeFunc("tcpsentry_fleet_partitions_owned", "Partitions this analyzer owns now.", func() float64 { return float64(s.Owned.Load()) })
}
