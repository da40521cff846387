// Package metrics defines tcpsentry's Prometheus metrics on a registry of
// its own, so that watch and each test build an independent set and no
// package-level state is shared.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is one set of tcpsentry metrics and the registry that exposes them.
type Metrics struct {
	Registry *prometheus.Registry

	Alerts        *prometheus.CounterVec // alerts queued for delivery, by detector and severity
	Sockets       *prometheus.GaugeVec   // sockets in the latest host snapshot, by proto and state
	Cycles        prometheus.Counter     // host snapshot cycles completed
	CycleErrors   prometheus.Counter     // cycles that failed (snapshot or store)
	CycleSeconds  prometheus.Histogram   // duration of one cycle
	Flows         prometheus.Counter     // connection records fed to the traffic detectors
	Packets       prometheus.Counter     // packets seen by live capture
	KernelDrops   prometheus.Counter     // packets the kernel dropped before capture read them
	Evictions     *prometheus.CounterVec // state evicted under pressure, by table
	SinkDelivered *prometheus.CounterVec // alerts a sink accepted
	SinkFailures  *prometheus.CounterVec // failed delivery attempts, by sink
	OutboxDepth   *prometheus.GaugeVec   // rows waiting in the outbox, by sink
}

// New builds the metrics on a fresh registry, with the Go runtime and
// process collectors.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tcpsentry_alerts_total", Help: "Alerts queued for delivery (new or renotified findings), by detector and severity.",
		}, []string{"detector", "severity"}),
		Sockets: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tcpsentry_sockets", Help: "Sockets in the latest host snapshot, by protocol and state.",
		}, []string{"proto", "state"}),
		Cycles: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tcpsentry_snapshot_cycles_total", Help: "Host snapshot cycles completed.",
		}),
		CycleErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tcpsentry_snapshot_cycle_errors_total", Help: "Host snapshot cycles that failed.",
		}),
		CycleSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tcpsentry_snapshot_cycle_seconds", Help: "Duration of one snapshot, detection and store cycle.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 10),
		}),
		Flows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tcpsentry_flows_total", Help: "Connection records fed to the traffic detectors.",
		}),
		Packets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tcpsentry_packets_total", Help: "Packets read by live capture.",
		}),
		KernelDrops: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tcpsentry_kernel_drops_total", Help: "Packets the kernel dropped before live capture read them.",
		}),
		Evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tcpsentry_evictions_total", Help: "Entries evicted from bounded state under pressure, by table.",
		}, []string{"table"}),
		SinkDelivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tcpsentry_sink_delivered_total", Help: "Alerts a sink accepted.",
		}, []string{"sink"}),
		SinkFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tcpsentry_sink_failures_total", Help: "Failed delivery attempts, by sink.",
		}, []string{"sink"}),
		OutboxDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tcpsentry_outbox_depth", Help: "Alerts waiting in the outbox, by sink.",
		}, []string{"sink"}),
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Alerts, m.Sockets, m.Cycles, m.CycleErrors, m.CycleSeconds, m.Flows, m.Packets,
		m.KernelDrops, m.Evictions, m.SinkDelivered, m.SinkFailures, m.OutboxDepth,
	)
	return m
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// CounterFunc registers a counter whose value f reads at scrape time, for
// counts another package keeps (the fleet publisher's and analyzer's).
func (m *Metrics) CounterFunc(name, help string, f func() float64) {
	m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
}

// GaugeFunc registers a gauge whose value f reads at scrape time.
func (m *Metrics) GaugeFunc(name, help string, f func() float64) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}
