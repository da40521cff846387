package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/detect"
	"github.com/tcpsentry/tcpsentry/internal/host"
	"github.com/tcpsentry/tcpsentry/internal/metrics"
	"github.com/tcpsentry/tcpsentry/internal/model"
	"github.com/tcpsentry/tcpsentry/internal/output"
	"github.com/tcpsentry/tcpsentry/internal/sink"
	"github.com/tcpsentry/tcpsentry/internal/store"
)

func newWatchCmd() *cobra.Command {
	var (
		configPath string
		storePath  string
		once       bool
		interval   time.Duration
		logLevel   string
		live       liveFlags
		publish    []string
	)
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Watch the live host continuously and deliver alerts to the configured sinks",
		Long: `Take a host snapshot every watch.interval, log new listeners and
connections, run the host detectors on each snapshot, and deliver new
findings to the sinks of the config's sinks section (stdout table, JSON
lines file, RFC 5424 syslog, webhook). Prometheus metrics are served on
watch.metrics_listen (127.0.0.1:9737 by default).

Every alert is committed to the store's outbox, once per sink, before it
is sent, and leaves the outbox only when that sink accepted it: delivery
is at least once, across crashes and restarts, and a receiver dedupes on
the alert's stable "id". A finding already delivered is not sent again
until watch.renotify has passed or its severity rises.

Signals: SIGTERM and SIGINT stop after delivering what can be delivered
within watch.grace; SIGHUP reloads the config (a bad config is logged and
the old one kept) and reopens the JSON lines file.

With --capture IFACE (watch.capture) live traffic goes through the flow
tracker to the traffic detectors (scan, flood, rapid-attempts,
suspicious-port), with open connections reported as they progress; with
--conntrack (watch.conntrack) every connection the kernel tracks is
reported when it ends, so one that came and went between two snapshots is
still seen. --netns runs both in a network namespace. --read FILE replays
a recorded capture or conn.log through the same path once, at file speed
(event time from the file): a sentry can publish what a host recorded.

With --publish nats://HOST:PORT (fleet.urls) the traffic records and the
alerts are also published to NATS JetStream for 'tcpsentry fleet'
(docs/fleet.md): records through an on-disk spool (fleet.spool) that
keeps them until the stream acknowledges them, across broker outages and
restarts of watch, alerts through the outbox like any sink.

With --once, one cycle runs and the outbox is drained; the exit status is
that of check: 0 nothing found, 1 findings, 2 error. Logs go to stderr.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			w := &watcher{
				log: log, configPath: configPath, storePath: storePath,
				interval: interval, stdout: cmd.OutOrStdout(), source: hostSource(),
				metrics: metrics.New(), live: live, publishURLs: publish,
			}
			return w.run(cmd.Context(), once)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "YAML config overlaying the built-in defaults (see `tcpsentry config`); reloaded on SIGHUP")
	f.StringVar(&storePath, "store", "", "SQLite store path (default: watch.store, else store.path from the config)")
	f.BoolVar(&once, "once", false, "run one cycle, deliver, and exit with check's status (0 nothing found, 1 findings, 2 error)")
	f.DurationVar(&interval, "interval", 0, "time between host snapshots (default: watch.interval from the config)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.StringSliceVar(&live.interfaces, "capture", nil, "capture live traffic on these interfaces (AF_PACKET; overrides watch.capture.interfaces)")
	f.StringVar(&live.filter, "filter", "", "pcap-filter expression for --capture (overrides watch.capture.filter)")
	f.StringVar(&live.netns, "netns", "", "network namespace (name or path) of the captured interfaces and of conntrack")
	f.BoolVar(&live.conntrack, "conntrack", false, "follow conntrack events (sets watch.conntrack.enabled)")
	f.StringSliceVar(&live.read, "read", nil, "also replay these recorded captures (pcap, pcapng) or Zeek conn.logs through the traffic detectors and --publish, once")
	f.StringSliceVar(&publish, "publish", nil, "publish records and alerts to these NATS JetStream servers (overrides fleet.urls)")
	return cmd
}

// connSource is a live source of connection records: conntrack events,
// AF_PACKET capture through the flow tracker. Run sends in-progress and
// closed records, stamped with event time, until ctx ends.
type connSource interface {
	Name() string
	Run(ctx context.Context, out chan<- *model.Conn) error
}

// watcher is the state of one watch process.
type watcher struct {
	log        *slog.Logger
	configPath string
	storePath  string
	interval   time.Duration // from --interval; 0 means the config's
	stdout     io.Writer
	source     string
	metrics    *metrics.Metrics
	// sources feed the traffic detectors: live capture, conntrack events.
	sources []connSource
	live    liveFlags // command-line overrides of watch.capture and watch.conntrack
	// publishURLs overrides fleet.urls; pub publishes to the fleet (nil: off).
	publishURLs []string
	pub         *publisher

	cfg  *config.Config
	deps detect.Deps
	st   *store.Store

	sinks    []sink.Sink
	disp     *sink.Dispatcher
	dispStop context.CancelFunc
	dispDone chan struct{}

	prev      map[sockKey]bool // sockets of the previous snapshot; nil before the first
	warned    map[string]bool  // snapshot warnings already logged
	trafficDs []detect.Detector
	traffic   *detect.Engine
	evicted   map[string]int // eviction counts already in the metrics, by detector
}

func (w *watcher) run(ctx context.Context, once bool) error {
	// Catch SIGHUP before anything else: its default action would end the
	// daemon if logrotate sent it during start-up.
	hup := make(chan os.Signal, 1)
	if !once {
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		// A closed stdout (the reader of a pipe went away) must be a
		// failed delivery of the stdout sink, not the end of the daemon.
		signal.Ignore(syscall.SIGPIPE)
	}
	cfg, err := config.Load(w.configPath)
	if err != nil {
		return err
	}
	w.live.apply(cfg)
	w.cfg = cfg
	for _, f := range w.live.read {
		// A mistyped path fails the start, not a log line later.
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("--read: %w", err)
		}
	}
	if !once && w.sources == nil {
		w.sources = append(buildSources(cfg, w.metrics, w.log), w.live.fileSources(w.log)...)
	}
	path := w.storePath
	if path == "" {
		path = cfg.Watch.Store
	}
	if path == "" {
		path = cfg.Store.Path
	}
	w.st, err = store.Open(ctx, path)
	if err != nil {
		return err
	}
	defer w.st.Close()
	w.loadDeps(ctx)
	sinks, err := buildSinks(cfg, w.stdout)
	if err != nil {
		return err
	}
	if w.pub, err = w.startPublish(path); err != nil {
		return err
	}
	defer func() { w.pub.close(w.cfg.Watch.Grace.Duration) }()
	w.startSinks(w.pub.withSink(sinks))
	defer w.stopSinks()
	w.log.Info("watch started", "store", path, "sinks", strings.Join(w.disp.Names(), ","),
		"interval", w.cycleInterval(), "source", w.source)
	w.checkOutbox(ctx)

	if once {
		found, err := w.cycle(ctx)
		w.shutdown()
		if err != nil {
			return err
		}
		if found > 0 {
			return exitCodeError{exitFindings}
		}
		return nil
	}

	stopMetrics, err := w.serveMetrics(cfg.Watch.MetricsListen)
	if err != nil {
		return err
	}
	defer stopMetrics()

	conns := make(chan *model.Conn, 4096)
	srcCtx, srcStop := context.WithCancel(ctx)
	var srcWG sync.WaitGroup
	defer func() { srcStop(); srcWG.Wait() }()
	for _, s := range w.sources {
		srcWG.Go(func() {
			if err := s.Run(srcCtx, conns); err != nil && srcCtx.Err() == nil {
				w.log.Error("connection source stopped", "source", s.Name(), "err", err)
			}
		})
	}
	w.trafficDs = detect.TrafficDetectors(cfg, w.deps)
	w.traffic = detect.NewEngine(w.trafficDs, w.source, w.log)
	// Alerts the detectors raised are committed (and so delivered) within
	// 200 ms; their windows are closed, which for some (beacon scoring)
	// means work over every pair, every 5 s, so that time moves on in
	// silence too.
	flush := time.NewTicker(200 * time.Millisecond)
	defer flush.Stop()
	var lastFlush time.Time

	if _, err := w.cycle(ctx); err != nil {
		w.log.Error("snapshot cycle failed", "err", err)
	}
	tick := time.NewTicker(w.cycleInterval())
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			w.log.Info("stopping", "grace", w.cfg.Watch.Grace.Duration)
			w.flushTraffic(context.WithoutCancel(ctx), time.Now(), true)
			w.shutdown()
			return nil
		case <-hup:
			old := w.cycleInterval()
			w.reload(ctx)
			if iv := w.cycleInterval(); iv != old {
				tick.Reset(iv)
			}
		case c := <-conns:
			w.metrics.Flows.Inc()
			w.pub.record(c)
			for _, err := range w.traffic.ObserveConn(c) {
				w.log.Error("traffic detector failed", "err", err)
			}
		case now := <-flush.C:
			full := now.Sub(lastFlush) >= trafficFlushEvery
			if full {
				lastFlush = now
			}
			w.flushTraffic(ctx, now, full)
		case <-tick.C:
			if _, err := w.cycle(ctx); err != nil {
				w.log.Error("snapshot cycle failed", "err", err)
			}
		}
	}
}

func (w *watcher) cycleInterval() time.Duration {
	if w.interval > 0 {
		return w.interval
	}
	return w.cfg.Watch.Interval.Duration
}

// loadDeps loads the baseline and intel feeds, at start and on reload.
func (w *watcher) loadDeps(ctx context.Context) {
	deps, warnings := buildDeps(ctx, w.cfg, w.st, w.source)
	for _, s := range warnings {
		w.log.Warn(s)
	}
	w.deps = deps
}

// checkOutbox warns about alerts that no configured sink will deliver:
// rows of a sink that was turned off wait until it is turned on again.
func (w *watcher) checkOutbox(ctx context.Context) {
	if len(w.sinks) == 0 {
		w.log.Warn("no sink is enabled: findings are recorded in the store but sent nowhere")
	}
	depth, err := w.st.OutboxDepth(ctx)
	if err != nil {
		w.log.Error("reading the outbox", "err", err)
		return
	}
	configured := map[string]bool{}
	for _, n := range w.disp.Names() {
		configured[n] = true
	}
	for sk, n := range depth {
		if configured[sk] {
			w.log.Info("delivering alerts queued before this start", "sink", sk, "pending", n)
		} else {
			w.log.Warn("alerts queued for a sink that is not enabled; kept until it is", "sink", sk, "pending", n)
		}
	}
}

// buildSinks opens the enabled sinks of cfg.
func buildSinks(cfg *config.Config, stdout io.Writer) ([]sink.Sink, error) {
	var sinks []sink.Sink
	fail := func(err error) ([]sink.Sink, error) {
		for _, s := range sinks {
			s.Close()
		}
		return nil, err
	}
	sc := cfg.Sinks
	if sc.Stdout.Enabled {
		color := false
		if f, ok := stdout.(*os.File); ok {
			color = output.ColorEnabled(f)
		}
		sinks = append(sinks, sink.NewTable(stdout, sink.TableOptions{Color: color}))
	}
	if sc.JSONL.Enabled {
		j, err := sink.NewJSONL(sc.JSONL.Path)
		if err != nil {
			return fail(err)
		}
		sinks = append(sinks, j)
	}
	if c := sc.Syslog; c.Enabled {
		fac, _ := config.SyslogFacility(c.Facility)
		s, err := sink.NewSyslog(sink.SyslogOptions{Network: c.Network, Address: c.Address, Facility: fac,
			Title: c.Format == "title", CAFile: c.CAFile, ServerName: c.ServerName})
		if err != nil {
			return fail(err)
		}
		sinks = append(sinks, s)
	}
	if c := sc.Webhook; c.Enabled {
		var secret []byte
		if c.Secret != "" {
			secret = []byte(c.Secret)
		}
		if c.SecretFile != "" {
			b, err := os.ReadFile(c.SecretFile)
			if err != nil {
				return fail(fmt.Errorf("webhook secret_file: %w", err))
			}
			secret = []byte(strings.TrimRight(string(b), "\r\n"))
		}
		s, err := sink.NewWebhook(sink.WebhookOptions{URL: c.URL, Secret: secret, Headers: c.Headers,
			CAFile: c.CAFile, Timeout: c.Timeout.Duration, Retries: c.Retries})
		if err != nil {
			return fail(err)
		}
		sinks = append(sinks, s)
	}
	return sinks, nil
}

func (w *watcher) startSinks(sinks []sink.Sink) {
	w.sinks = sinks
	w.disp = sink.NewDispatcher(w.st, sinks, sink.DispatchOptions{
		Timeout: w.cfg.Sinks.Timeout.Duration, Log: w.log, Metrics: w.metrics,
	})
	ctx, cancel := context.WithCancel(context.Background())
	w.dispStop, w.dispDone = cancel, make(chan struct{})
	go func() {
		defer close(w.dispDone)
		w.disp.Run(ctx)
	}()
}

// stopSinks stops the dispatcher and closes the sinks; idempotent.
func (w *watcher) stopSinks() {
	if w.dispStop == nil {
		return
	}
	w.dispStop()
	<-w.dispDone
	w.dispStop = nil
	for _, s := range w.sinks {
		if err := s.Close(); err != nil {
			w.log.Warn("closing sink", "sink", s.Name(), "err", err)
		}
	}
}

// shutdown delivers what it can within watch.grace, then stops the sinks;
// what is left stays in the outbox for the next start.
func (w *watcher) shutdown() {
	if w.dispStop == nil {
		return
	}
	w.dispStop()
	<-w.dispDone
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.Watch.Grace.Duration)
	defer cancel()
	if err := w.disp.Drain(ctx); err != nil {
		w.log.Warn("undelivered alerts stay in the outbox for the next start", "err", err)
	}
	w.stopSinks()
}

// reload applies a changed config on SIGHUP. A config that does not load,
// or whose sinks cannot be opened, is logged and the old one kept; the JSON
// lines file is reopened either way (logrotate sends SIGHUP after a rename).
func (w *watcher) reload(ctx context.Context) {
	cfg, err := config.Load(w.configPath)
	if err == nil {
		w.live.apply(cfg)
		var sinks []sink.Sink
		sinks, err = buildSinks(cfg, w.stdout)
		if err == nil {
			if cfg.Watch.MetricsListen != w.cfg.Watch.MetricsListen || cfg.Watch.Store != w.cfg.Watch.Store || cfg.Store.Path != w.cfg.Store.Path {
				w.log.Warn("a changed watch.metrics_listen, watch.store or store.path takes effect at the next start")
			}
			if fmt.Sprint(cfg.Watch.Capture, cfg.Watch.Conntrack) != fmt.Sprint(w.cfg.Watch.Capture, w.cfg.Watch.Conntrack) {
				w.log.Warn("a changed watch.capture or watch.conntrack takes effect at the next start")
			}
			w.stopSinks()
			w.cfg = cfg
			w.loadDeps(ctx)
			w.trafficDs = detect.TrafficDetectors(cfg, w.deps)
			w.traffic = detect.NewEngine(w.trafficDs, w.source, w.log)
			w.evicted = nil
			w.startSinks(w.pub.withSink(sinks))
			w.log.Info("config reloaded", "config", w.configPath, "sinks", strings.Join(w.disp.Names(), ","))
			w.checkOutbox(ctx)
			return
		}
	}
	w.log.Error("config reload failed; keeping the previous config", "config", w.configPath, "err", err)
	for _, s := range w.sinks {
		if r, ok := s.(sink.Reopener); ok {
			if err := r.Reopen(); err != nil {
				w.log.Error("reopening sink", "sink", s.Name(), "err", err)
			}
		}
	}
}

// serveMetrics starts the Prometheus endpoint; addr "" disables it.
func (w *watcher) serveMetrics(addr string) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", w.metrics.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			w.log.Error("metrics server stopped", "err", err)
		}
	}()
	w.log.Info("metrics listening", "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// cycle takes one host snapshot, logs what is new since the last one, runs
// the host detectors, and commits new findings to the outbox. It returns
// how many findings at or above sinks.min_severity the snapshot has.
func (w *watcher) cycle(ctx context.Context) (int, error) {
	start := time.Now()
	snap, err := host.Collect(ctx, host.Options{Processes: true, Pipes: true, Conntrack: true, EnableTimestamps: true})
	if err != nil {
		w.metrics.CycleErrors.Inc()
		return 0, err
	}
	if w.warned == nil {
		w.warned = map[string]bool{}
	}
	for _, s := range snap.Warnings {
		if !w.warned[s] {
			w.warned[s] = true
			w.log.Warn(s)
		}
	}
	w.diff(snap)
	engine := detect.NewEngine(detect.HostDetectors(w.cfg, w.deps), w.source, w.log)
	for _, err := range engine.ObserveSnapshot(snap) {
		w.log.Error("host detector failed", "err", err)
	}
	alerts := w.atLeastMin(engine.Alerts())
	if err := w.commit(ctx, snap.Time, engine.Detectors(), alerts); err != nil {
		w.metrics.CycleErrors.Inc()
		return len(alerts), err
	}
	w.metrics.Cycles.Inc()
	w.metrics.CycleSeconds.Observe(time.Since(start).Seconds())
	return len(alerts), nil
}

func (w *watcher) atLeastMin(as []alert.Alert) []alert.Alert {
	min := w.cfg.Sinks.MinSeverity.Severity
	var keep []alert.Alert
	for _, a := range as {
		if a.Severity >= min {
			keep = append(keep, a)
		}
	}
	return keep
}

// commit reconciles alerts with the store and queues the new and renotified
// ones for every sink in the same transaction, then wakes the dispatcher.
// ran lists the detectors whose absent findings are cleared; nil for
// traffic, whose findings end with their window rather than a snapshot.
func (w *watcher) commit(ctx context.Context, now time.Time, ran []string, alerts []alert.Alert) error {
	out, err := w.st.Commit(ctx, w.source, now, ran, alerts, w.cfg.Watch.Renotify.Duration, w.disp.Names())
	if err != nil {
		return err
	}
	for _, set := range []struct {
		as     []alert.Alert
		status string
	}{{out.New, "new"}, {out.Renotify, "renotify"}} {
		for _, a := range set.as {
			w.metrics.Alerts.WithLabelValues(a.Detector, a.Severity.String()).Inc()
			w.log.Warn("alert", "status", set.status, "id", a.ID, "detector", a.Detector,
				"severity", a.Severity.String(), "title", output.Sanitize(a.Title))
		}
	}
	for _, c := range out.Cleared {
		w.log.Info("finding cleared", "id", c.ID, "detector", c.Detector, "title", output.Sanitize(c.Title))
	}
	if len(out.New)+len(out.Renotify) > 0 {
		w.disp.Wake()
	}
	return nil
}

// trafficFlushEvery is how often watch closes the traffic detectors'
// windows (Flush); alerts already raised are committed every tick.
const trafficFlushEvery = 5 * time.Second

// flushTraffic commits the alerts the traffic detectors raised, after
// closing their windows at now when closeWindows is set; the engine is
// replaced so each alert is taken once.
func (w *watcher) flushTraffic(ctx context.Context, now time.Time, closeWindows bool) {
	if len(w.sources) == 0 || w.traffic == nil {
		return
	}
	if closeWindows {
		w.traffic.Flush(now)
		w.countEvictions()
	}
	alerts := w.atLeastMin(w.traffic.Alerts())
	if len(alerts) == 0 {
		return
	}
	w.traffic = detect.NewEngine(w.trafficDs, w.source, w.log)
	if err := w.commit(ctx, now, nil, alerts); err != nil {
		w.log.Error("committing traffic alerts", "err", err)
	}
}

// countEvictions moves the traffic detectors' eviction counts (state
// dropped to stay bounded under a flood of sources) into the metrics.
func (w *watcher) countEvictions() {
	for _, d := range w.trafficDs {
		var n int
		switch d := d.(type) {
		case *detect.Scan:
			n = d.Evicted
		case *detect.Flood:
			n = d.Evicted
		default:
			continue
		}
		if w.evicted == nil {
			w.evicted = map[string]int{}
		}
		if delta := n - w.evicted[d.Name()]; delta > 0 {
			w.metrics.Evictions.WithLabelValues(d.Name()).Add(float64(delta))
		}
		w.evicted[d.Name()] = n
	}
}

// sockKey identifies a socket across snapshots; the state is left out so
// that SYN_SENT becoming ESTABLISHED is not a new connection.
type sockKey struct {
	netns         string
	proto         model.Proto
	listener      bool
	local, remote string
}

// maxNewLogged bounds the per-cycle log lines about new sockets; a scan or
// a busy server would otherwise flood the journal.
const maxNewLogged = 50

// diff logs listeners and connections that were not in the previous
// snapshot and updates the sockets gauge.
func (w *watcher) diff(snap *model.Snapshot) {
	cur := make(map[sockKey]bool, len(snap.Sockets))
	type pstate struct{ proto, state string }
	counts := map[pstate]int{}
	var newListeners, newConns, logged int
	for i := range snap.Sockets {
		s := &snap.Sockets[i]
		state := s.State.String()
		if s.Proto == model.ProtoUDP {
			state = "UNCONN"
			if s.Remote.Port() != 0 {
				state = "ESTAB"
			}
		}
		counts[pstate{s.Proto.String(), state}]++
		listener := s.IsListener()
		isConn := !listener && (s.State == model.StateEstablished || s.State == model.StateSynSent || s.State == model.StateSynRecv ||
			(s.Proto == model.ProtoUDP && s.Remote.Port() != 0))
		if !listener && !isConn {
			continue
		}
		k := sockKey{s.Netns, s.Proto, listener, s.Local.String(), s.Remote.String()}
		cur[k] = true
		if w.prev == nil || w.prev[k] {
			continue
		}
		if listener {
			newListeners++
		} else {
			newConns++
		}
		if logged >= maxNewLogged {
			continue
		}
		logged++
		attrs := []any{"proto", s.Proto.String(), "local", s.Local.String()}
		if !listener {
			attrs = append(attrs, "remote", s.Remote.String(), "state", s.State.String())
		}
		if s.Netns != "" {
			attrs = append(attrs, "netns", s.Netns)
		}
		for _, o := range s.Owners {
			if p := snap.Processes[o.PID]; p != nil {
				attrs = append(attrs, "pid", p.PID, "process", output.Sanitize(p.Name))
				break
			}
		}
		if listener {
			w.log.Info("new listener", attrs...)
		} else {
			w.log.Info("new connection", attrs...)
		}
	}
	if w.prev == nil {
		w.log.Info("first snapshot", "sockets", len(snap.Sockets), "listeners_and_connections", len(cur))
	} else if logged < newListeners+newConns {
		w.log.Info("more new sockets than logged", "listeners", newListeners, "connections", newConns, "logged", logged)
	}
	w.prev = cur
	w.metrics.Sockets.Reset()
	for k, n := range counts {
		w.metrics.Sockets.WithLabelValues(k.proto, k.state).Set(float64(n))
	}
}
