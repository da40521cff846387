package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/fleet"
	"github.com/tcpsentry/tcpsentry/internal/metrics"
	"github.com/tcpsentry/tcpsentry/internal/sink"
	"github.com/tcpsentry/tcpsentry/internal/store"
)

// fleetFlags are the flags shared by fleet and fleet init.
type fleetFlags struct {
	configPath string
	urls       []string
	logLevel   string
}

func (f *fleetFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.configPath, "config", "", "YAML config overlaying the built-in defaults (its fleet section)")
	fl.StringSliceVar(&f.urls, "server", nil, "NATS server URLs (override fleet.urls), e.g. nats://127.0.0.1:4222")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
}

// load reads the config and applies the flags.
func (f *fleetFlags) load(cmd *cobra.Command) (*config.Config, *slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, nil, fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
	cfg, err := config.Load(f.configPath)
	if err != nil {
		return nil, nil, err
	}
	if len(f.urls) > 0 {
		cfg.Fleet.URLs = f.urls
	}
	return cfg, log, nil
}

func connectOptions(cfg *config.Config, name string, log *slog.Logger) fleet.ConnectOptions {
	return fleet.ConnectOptions{URLs: cfg.Fleet.URLs, CredsFile: cfg.Fleet.CredsFile, CAFile: cfg.Fleet.CAFile, Name: name, Log: log}
}

func newFleetCmd() *cobra.Command {
	var (
		ff        fleetFlags
		storePath string
		name      string
	)
	cmd := &cobra.Command{
		Use:   "fleet",
		Short: "Analyse the records of many sentries from NATS JetStream (fleet scale)",
		Long: `Run one fleet analyzer. Sentries (tcpsentry watch --publish) publish their
connection records to the TCPSENTRY_CONN stream, partitioned by source
and destination address. Every analyzer claims a fair share of the
partitions (fleet.partitions) through leases in the TCPSENTRY_LEASES
bucket, renewed every third of fleet.lease_ttl; a stopped analyzer hands
its partitions back, a dead one's are taken over when its leases lapse.
Each claimed partition is read by durable consumers: the traffic
detectors and fleet-scan see every host's records of the partition's
source addresses, fleet-destination every host's records of its
destination addresses, fleet-lateral-chain both. A partition's new owner
first replays (fleet.replay) what the previous owner had processed, so
detector windows survive the handover.

Fleet alerts are committed to the analyzer's store (fleet.store, else
store.path) and delivered through its outbox to the configured sinks and
to tcpsentry.fleet.alert, at least once, with stable ids. Prometheus
metrics (records processed, redelivered, replayed; partitions owned;
deliveries) are served on fleet.metrics_listen. See docs/fleet.md.
Create the streams first with 'tcpsentry fleet init'.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := ff.load(cmd)
			if err != nil {
				return err
			}
			if name == "" {
				h, _ := os.Hostname()
				name = fmt.Sprintf("%s-%d", fleet.HostToken(h), os.Getpid())
			}
			return runFleet(cmd.Context(), cfg, log, storePath, name, cmd.OutOrStdout())
		},
	}
	ff.add(cmd)
	cmd.Flags().StringVar(&storePath, "store", "", "SQLite store of the analyzer's alerts (default: fleet.store, else store.path)")
	cmd.Flags().StringVar(&name, "name", "", "this analyzer's name in leases; unique per instance (default HOST-PID)")
	cmd.AddCommand(newFleetInitCmd())
	return cmd
}

func newFleetInitCmd() *cobra.Command {
	var ff fleetFlags
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create or update the fleet's JetStream streams and lease bucket (idempotent)",
		Long: `Create the TCPSENTRY_CONN and TCPSENTRY_ALERT streams and the
TCPSENTRY_LEASES key-value bucket with the retention limits, dedup window
and replicas of the config's fleet section, or update existing ones to
them. Running it again changes nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := ff.load(cmd)
			if err != nil {
				return err
			}
			o := connectOptions(cfg, "tcpsentry-fleet-init", log)
			nc, err := fleet.Connect(o)
			if err != nil {
				return err
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			if err := fleet.Init(ctx, js, cfg.Fleet); err != nil {
				if !nc.IsConnected() {
					return fmt.Errorf("no NATS server of %s answered within %v (the connection errors are logged above): %w",
						strings.Join(cfg.Fleet.URLs, ","), timeout, err)
				}
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "streams %s, %s and bucket %s ready (replicas %d)\n",
				fleet.ConnStream, fleet.AlertStream, fleet.LeaseBucket, cfg.Fleet.Replicas)
			return nil
		},
	}
	ff.add(cmd)
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "give up when the servers have not answered within this time")
	return cmd
}

// runFleet runs one analyzer until ctx ends, delivering through a watcher's
// store, outbox and dispatcher.
func runFleet(ctx context.Context, cfg *config.Config, log *slog.Logger, storePath, name string, stdout io.Writer) error {
	if len(cfg.Fleet.URLs) == 0 {
		return fmt.Errorf("fleet: no NATS server (fleet.urls or --server)")
	}
	nc, err := fleet.Connect(connectOptions(cfg, "tcpsentry-fleet-"+name, log))
	if err != nil {
		return err
	}
	defer nc.Close()
	path := storePath
	if path == "" {
		path = cfg.Fleet.Store
	}
	if path == "" {
		path = cfg.Store.Path
	}
	st, err := store.Open(ctx, path)
	if err != nil {
		return err
	}
	defer st.Close()
	w := &watcher{log: log, cfg: cfg, st: st, stdout: stdout, source: "fleet", metrics: metrics.New()}
	sinks, err := buildSinks(cfg, stdout)
	if err != nil {
		return err
	}
	ns, err := fleet.NewAlertSink(nc, fleet.FleetAlertSubject)
	if err != nil {
		return err
	}
	w.startSinks(append(sinks, sink.Sink(ns)))
	defer w.stopSinks()
	deps, warnings := buildDeps(ctx, cfg, st, "fleet")
	for _, s := range warnings {
		log.Warn(s)
	}
	a, err := fleet.NewAnalyzer(nc, fleet.AnalyzerOptions{
		Config: cfg, Deps: deps, Owner: name, Log: log,
		Commit: func(ctx context.Context, now time.Time, alerts []alert.Alert) error {
			return w.commit(ctx, now, nil, w.atLeastMin(alerts))
		},
	})
	if err != nil {
		return err
	}
	registerAnalyzerMetrics(w.metrics, a)
	stopMetrics, err := w.serveMetrics(cfg.Fleet.MetricsListen)
	if err != nil {
		return err
	}
	defer stopMetrics()
	log.Info("fleet analyzer started", "name", name, "servers", strings.Join(cfg.Fleet.URLs, ","),
		"partitions", cfg.Fleet.Partitions, "sinks", strings.Join(w.disp.Names(), ","), "store", path, "metrics", cfg.Fleet.MetricsListen)
	err = a.Run(ctx)
	log.Info("fleet analyzer stopping", "records", a.Stats.Records.Load(), "bad", a.Stats.Bad.Load())
	w.shutdown()
	return err
}
