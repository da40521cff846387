package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/capture/live"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/flow"
	"github.com/tcpsentry/tcpsentry/internal/host/netlink"
	"github.com/tcpsentry/tcpsentry/internal/metrics"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// liveFlags are watch's command-line switches for its live sources.
type liveFlags struct {
	interfaces []string
	filter     string
	netns      string
	conntrack  bool
	read       []string // recorded captures or conn.logs to replay
}

// apply lays the flags over the config's watch.capture and watch.conntrack.
func (f liveFlags) apply(cfg *config.Config) {
	if len(f.interfaces) > 0 {
		cfg.Watch.Capture.Interfaces = f.interfaces
	}
	if f.filter != "" {
		cfg.Watch.Capture.Filter = f.filter
	}
	if f.netns != "" {
		cfg.Watch.Capture.Netns = f.netns
		cfg.Watch.Conntrack.Netns = f.netns
	}
	if f.conntrack {
		cfg.Watch.Conntrack.Enabled = true
	}
}

// buildSources makes watch's live connection sources from the config.
// Opening them (which needs privileges) happens in Run, so that an error
// is logged by the daemon rather than refusing to start the host view.
func buildSources(cfg *config.Config, m *metrics.Metrics, log *slog.Logger) []connSource {
	var out []connSource
	if c := cfg.Watch.Capture; len(c.Interfaces) > 0 {
		out = append(out, &captureSource{cfg: c, metrics: m, log: log})
	}
	if c := cfg.Watch.Conntrack; c.Enabled {
		out = append(out, &conntrackSource{cfg: c, log: log})
	}
	return out
}

// fileSources replays the files of --read.
func (f liveFlags) fileSources(log *slog.Logger) []connSource {
	var out []connSource
	for _, p := range f.read {
		out = append(out, &fileSource{path: p, log: log})
	}
	return out
}

// captureSource is live capture through the flow tracker: finished
// connections and, every Progress, in-progress records of open ones.
type captureSource struct {
	cfg     config.WatchCapture
	metrics *metrics.Metrics
	log     *slog.Logger
}

func (s *captureSource) Name() string { return "capture:" + strings.Join(s.cfg.Interfaces, ",") }

func (s *captureSource) Run(ctx context.Context, out chan<- *model.Conn) error {
	src, err := live.Open(live.Options{Interfaces: s.cfg.Interfaces, Netns: s.cfg.Netns, Filter: s.cfg.Filter,
		Promiscuous: s.cfg.Promiscuous})
	if err != nil {
		return err
	}
	defer src.Close()
	names := make([]string, 0, len(s.cfg.Interfaces))
	for _, i := range src.Interfaces() {
		names = append(names, i.Name)
	}
	s.log.Info("live capture started", "interfaces", strings.Join(names, ","), "filter", s.cfg.Filter, "netns", s.cfg.Netns)
	send := func(c *model.Conn) {
		select {
		case out <- c:
		case <-ctx.Done():
		}
	}
	timeouts := flow.DefaultTimeouts()
	timeouts.TCPAttemptDelay = s.cfg.AttemptTimeout.Duration
	timeouts.TCPSYNTimeout = s.cfg.AttemptTimeout.Duration
	timeouts.TCPCloseDelay = s.cfg.CloseDelay.Duration
	timeouts.TCPHandshakeInactivity = s.cfg.HandshakeTimeout.Duration
	var last live.Stats
	var lastFlows flow.Stats
	_, err = flow.RunLive(ctx, flow.LiveInput{
		Source: src, Names: names,
		Options:  flow.Options{MaxFlows: s.cfg.MaxFlows, Timeouts: timeouts},
		Emit:     send,
		Progress: send,
		Interval: s.cfg.Progress.Duration,
		Tick: func(_ time.Time, fs flow.Stats) {
			st := src.Stats()
			s.metrics.Packets.Add(float64(st.Delivered - last.Delivered))
			if d := st.Drops - last.Drops; d > 0 {
				s.metrics.KernelDrops.Add(float64(d))
				s.log.Warn("the kernel dropped packets before capture read them", "drops", d, "total", st.Drops)
			}
			if d := fs.Evicted - lastFlows.Evicted; d > 0 {
				s.metrics.Evictions.WithLabelValues("flow-table").Add(float64(d))
			}
			last, lastFlows = st, fs
		},
		Warn: func(err error) { s.log.Warn("live capture", "err", err) },
	})
	return err
}

// conntrackSource turns the kernel's conntrack events into records: a
// connection when it ends, with packet and byte counters and its whole
// lifetime, so one that came and went between two snapshots is seen.
type conntrackSource struct {
	cfg config.WatchConntrack
	log *slog.Logger
}

func (s *conntrackSource) Name() string { return "conntrack" }

func (s *conntrackSource) Run(ctx context.Context, out chan<- *model.Conn) error {
	// State updates too: a TCP connection ends for its endpoints at
	// TIME_WAIT, two minutes before conntrack destroys the entry.
	l, err := netlink.ListenConntrack(netlink.EventOptions{Netns: s.cfg.Netns, Updates: true,
		Warn: func(err error) { s.log.Warn("conntrack events", "err", err) }})
	if err != nil {
		return fmt.Errorf("conntrack events: %w", err)
	}
	defer l.Close()
	s.log.Info("conntrack events started", "netns", s.cfg.Netns)
	// The uids of connections already given as ended (at TIME_WAIT), so
	// their destroy event is not a second end; bounded by starting afresh.
	ended := map[string]struct{}{}
	return l.Run(ctx, func(ev netlink.Event) {
		c := netlink.EventConn(ev)
		if c == nil {
			return
		}
		// Every record after the new event's is an update of it.
		c.Update = ev.Type != netlink.EventNew
		switch {
		case ev.Type == netlink.EventDestroy:
			if _, done := ended[c.UID]; done {
				delete(ended, c.UID)
				return
			}
		case c.End == model.EndClosed:
			if _, done := ended[c.UID]; done {
				return // TIME_WAIT, then CLOSE: one end
			}
			if len(ended) >= 1<<16 {
				clear(ended)
			}
			ended[c.UID] = struct{}{}
		}
		select {
		case out <- c:
		case <-ctx.Done():
		}
	})
}

// fileSource replays a recorded capture (pcap, pcapng) or Zeek conn.log
// through the same path as live records: the traffic detectors and, with
// --publish, the fleet. It reads the file once, as fast as the detectors
// take the records (event time comes from the file), and then ends while
// watch goes on.
type fileSource struct {
	path string
	log  *slog.Logger
}

func (s *fileSource) Name() string { return "read:" + s.path }

func (s *fileSource) Run(ctx context.Context, out chan<- *model.Conn) error {
	n, warned := 0, 0
	start := time.Now()
	ok := readInput(ctx, s.path, &analyzeOptions{maxFlows: defaultMaxFlows}, func(c *model.Conn) {
		select {
		case out <- c:
			n++
		case <-ctx.Done():
		}
	}, func(err error) {
		if warned++; warned <= 20 {
			s.log.Warn("reading recorded traffic", "file", s.path, "err", err)
		}
	})
	if !ok {
		return fmt.Errorf("%s: not a readable capture or conn.log", s.path)
	}
	s.log.Info("recorded traffic read", "file", s.path, "records", n, "warnings", warned, "took", time.Since(start).Round(time.Millisecond))
	return nil
}
