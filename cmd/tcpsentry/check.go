package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/detect"
	"github.com/tcpsentry/tcpsentry/internal/host"
	"github.com/tcpsentry/tcpsentry/internal/model"
	"github.com/tcpsentry/tcpsentry/internal/output"
	"github.com/tcpsentry/tcpsentry/internal/sink"
	"github.com/tcpsentry/tcpsentry/internal/store"
)

// commonFlags are shared by the subcommands that load config and the store.
type commonFlags struct {
	configPath string
	storePath  string
	noStore    bool
}

func (c *commonFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&c.configPath, "config", "", "YAML config overlaying the built-in defaults (see `tcpsentry config`)")
	cmd.Flags().StringVar(&c.storePath, "store", "", "SQLite store path (default: store.path from the config)")
	cmd.Flags().BoolVar(&c.noStore, "no-store", false, "do not open the store: nothing is remembered between runs")
}

// openStore opens the configured store; failure to open it is a warning,
// not an error, because the detection itself does not need it.
func (c *commonFlags) openStore(ctx context.Context, cfg *config.Config, warn io.Writer) *store.Store {
	if c.noStore {
		return nil
	}
	path := c.storePath
	if path == "" {
		path = cfg.Store.Path
	}
	st, err := store.Open(ctx, path)
	if err != nil {
		fmt.Fprintf(warn, "tcpsentry: warning: %v; findings are not remembered between runs\n", err)
		return nil
	}
	return st
}

func hostSource() string {
	name, err := os.Hostname()
	if err != nil || name == "" {
		name = "localhost"
	}
	return "host:" + name
}

func newCheckCmd() *cobra.Command {
	var (
		common   commonFlags
		jsonOut  bool
		minSev   string
		renotify time.Duration
		showAll  bool
		netns    []string
		allNetns bool
		recorded string
	)
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Inspect the live host once and report suspicious connections, listeners and processes",
		Long: `Run every enabled host detector once over a snapshot of the host's
sockets, processes and conntrack ages, and report what is wrong, why, how
sure tcpsentry is, and the MITRE ATT&CK technique.

Exit status: 0 when nothing at or above --min-severity was found, 1 when
something was, 2 on error.

Findings are remembered in the store: a finding already reported is not
printed again until --renotify has passed or its severity rises (use --all
to print everything found), and a finding that is gone is reported as
cleared. Cron-friendly: tcpsentry check --min-severity high || notify.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			oneShotGC()
			ctx := cmd.Context()
			stderr := cmd.ErrOrStderr()
			min, err := alert.ParseSeverity(minSev)
			if err != nil {
				return fmt.Errorf("--min-severity: %w", err)
			}
			cfg, err := config.Load(common.configPath)
			if err != nil {
				return err
			}
			st := common.openStore(ctx, cfg, stderr)
			if st != nil {
				defer st.Close()
			}
			source := hostSource()
			var snap *model.Snapshot
			var warnings []string
			if recorded != "" {
				snap, warnings, err = readSnapshot(recorded)
				if err != nil {
					return err
				}
				if snap.Host != "" {
					source = "host:" + snap.Host
				}
			} else {
				snap, err = host.Collect(ctx, host.Options{Netns: netns, AllNetns: allNetns, Processes: true, Pipes: true, Conntrack: true, EnableTimestamps: true})
				if err != nil {
					return err
				}
			}
			deps, depWarnings := buildDeps(ctx, cfg, st, source)
			warnings = append(warnings, depWarnings...)
			output.WriteWarnings(stderr, append(warnings, snap.Warnings...))
			engine := detect.NewEngine(detect.HostDetectors(cfg, deps), source, nil)
			for _, err := range engine.ObserveSnapshot(snap) {
				output.WriteWarnings(stderr, []string{err.Error()})
			}
			var found []alert.Alert
			for _, a := range engine.Alerts() {
				if a.Severity >= min {
					found = append(found, a)
				}
			}
			w := bufio.NewWriter(cmd.OutOrStdout())
			defer w.Flush()
			report := reporter{w: w, json: jsonOut, color: output.ColorEnabled(os.Stdout)}
			if st == nil {
				if err := report.alerts(found, ""); err != nil {
					return err
				}
			} else {
				out, err := st.Reconcile(ctx, source, snap.Time, engine.Detectors(), engine.Alerts(), renotify)
				if err != nil {
					return err
				}
				if err := report.outcome(out, min, showAll); err != nil {
					return err
				}
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if len(found) > 0 {
				return exitCodeError{exitFindings}
			}
			return nil
		},
	}
	common.register(cmd)
	f := cmd.Flags()
	f.BoolVar(&jsonOut, "json", false, "alerts as JSON lines (the DESIGN.md alert contract, plus \"status\")")
	f.StringVar(&minSev, "min-severity", "low", "report and set the exit status only for findings at or above: low, medium, high, critical")
	f.DurationVar(&renotify, "renotify", 24*time.Hour, "report an unchanged finding again after this long; 0 never")
	f.BoolVar(&showAll, "all", false, "print every finding, also those already reported")
	f.StringSliceVar(&netns, "netns", nil, "check network namespace NAME or PATH instead of the caller's")
	f.BoolVar(&allNetns, "all-netns", false, "check every network namespace")
	f.StringVar(&recorded, "snapshot", "", "check a snapshot recorded with `tcpsentry conns --json` (FILE, or - for stdin) instead of the live host")
	cmd.MarkFlagsMutuallyExclusive("netns", "all-netns", "snapshot")
	return cmd
}

// readSnapshot loads a recorded `conns --json` file; bad lines become
// warnings naming file and line, and the rest is checked.
func readSnapshot(path string) (*model.Snapshot, []string, error) {
	var r io.Reader = os.Stdin
	name := "stdin"
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, nil, err
		}
		defer f.Close()
		r, name = f, path
	}
	snap, errs := output.ReadJSON(r, name)
	var warnings []string
	for _, e := range errs {
		warnings = append(warnings, e.Error())
	}
	if len(snap.Sockets) == 0 {
		if len(errs) > 0 {
			return nil, warnings, fmt.Errorf("%s: no sockets recorded (not `tcpsentry conns --json` output? first error: %v)", name, errs[0])
		}
		return nil, warnings, fmt.Errorf("%s: no sockets recorded", name)
	}
	if snap.Time.IsZero() {
		snap.Time = time.Now()
		warnings = append(warnings, name+": no snapshot time recorded; ages are measured from now")
	}
	return snap, warnings, nil
}

// reporter prints check results as a table or JSON lines.
type reporter struct {
	w     io.Writer
	json  bool
	color bool
}

func (r reporter) alerts(as []alert.Alert, status string) error {
	if r.json {
		return sink.WriteJSONLines(r.w, as, status)
	}
	label := ""
	if status == "renotify" || status == "unchanged" {
		label = "still present"
	}
	return sink.WriteTable(r.w, as, label, sink.TableOptions{Color: r.color})
}

func (r reporter) outcome(out store.Outcome, min alert.Severity, all bool) error {
	filter := func(as []alert.Alert) []alert.Alert {
		var k []alert.Alert
		for _, a := range as {
			if a.Severity >= min {
				k = append(k, a)
			}
		}
		return k
	}
	if err := r.alerts(filter(out.New), "new"); err != nil {
		return err
	}
	if err := r.alerts(filter(out.Renotify), "renotify"); err != nil {
		return err
	}
	if all {
		if err := r.alerts(filter(out.Unchanged), "unchanged"); err != nil {
			return err
		}
	}
	for _, c := range out.Cleared {
		if c.Severity < min {
			continue
		}
		var err error
		if r.json {
			var b []byte
			b, err = json.Marshal(struct {
				ID        string    `json:"id"`
				Detector  string    `json:"detector"`
				Title     string    `json:"title"`
				Severity  string    `json:"severity"`
				Status    string    `json:"status"`
				FirstSeen time.Time `json:"first_seen"`
				LastSeen  time.Time `json:"last_seen"`
			}{c.ID, c.Detector, c.Title, c.Severity.String(), "cleared", c.FirstSeen, c.LastSeen})
			if err == nil {
				_, err = r.w.Write(append(b, '\n'))
			}
		} else {
			_, err = fmt.Fprintf(r.w, "CLEARED  %s %s (seen %s .. %s)\n", c.Detector, output.Sanitize(c.Title),
				c.FirstSeen.Format(time.RFC3339), c.LastSeen.Format(time.RFC3339))
		}
		if err != nil {
			return err
		}
	}
	return nil
}
