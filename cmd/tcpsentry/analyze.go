package main

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/baseline"
	"github.com/tcpsentry/tcpsentry/internal/capture"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/detect"
	"github.com/tcpsentry/tcpsentry/internal/flow"
	"github.com/tcpsentry/tcpsentry/internal/model"
	"github.com/tcpsentry/tcpsentry/internal/output"
	"github.com/tcpsentry/tcpsentry/internal/sink"
	"github.com/tcpsentry/tcpsentry/internal/store"
	"github.com/tcpsentry/tcpsentry/internal/zeeklog"
)

func newAnalyzeCmd() *cobra.Command {
	var (
		configPath string
		jsonOut    bool
		minSev     string
		opts       analyzeOptions
		top        int
	)
	cmd := &cobra.Command{
		Use:   "analyze FILE...",
		Short: "Run the traffic detectors over pcap/pcapng captures and Zeek conn.logs",
		Long: `Turn each capture (pcap or pcapng, gzip or not; "-" reads one from stdin) into
connection records as ` + "`tcpsentry flows`" + ` does, read each Zeek conn.log (TSV
or JSON), and run the traffic detectors over the records. The format is
recognised from the content, not the name. Alerts follow the same JSON
contract as check.

Traffic detectors: suspicious-port (answered connections to known-bad
ports); scan (vertical and horizontal port scans, typed by probe: SYN,
connect, FIN, NULL, Xmas, ACK, Maimon, UDP; and the Threshold Random Walk
test on first contacts); flood (SYN floods on one host:port, spoofed
sources or not); beacon (regular check-ins per source→destination:port and
per source→destination, RITA-style time, size and histogram scores, ranked);
long-connection (connections over the duration thresholds, reported as
still open when the record says so — the flow tracker's records at the end
of a capture and Zeek's open_conn.log — and pairs connected for most of the
input's span); exfiltration (outbound volume per pair and per source with
the producer–consumer ratio, and upload spikes against the source's own
history); packet-size and anomaly (against the traffic model learned with
"tcpsentry baseline learn FILE..." and read from the store; without one
they stay quiet and say so once).

--top N keeps the N best-scored alerts of each detector: beacons by their
beacon score, exfiltration by bytes, long connections by duration,
anomalies by their score, others by confidence.

Exit status: 0 when nothing at or above --min-severity was found, 1 when
something was, 2 on error.`,
		Example: `  tcpsentry analyze incident.pcapng
  tcpsentry analyze --json conn.log.gz | jq 'select(.severity=="high")'`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			min, err := alert.ParseSeverity(minSev)
			if err != nil {
				return fmt.Errorf("--min-severity: %w", err)
			}
			cfg, err := config.Load(configPath)
			if err != nil {
				return err
			}
			alerts, err := analyzeFiles(cmd, cfg, args, &opts)
			if err != nil {
				return err
			}
			var found []alert.Alert
			for _, a := range alerts {
				if a.Severity >= min {
					found = append(found, a)
				}
			}
			found = topPerDetector(found, top)
			w := bufio.NewWriter(cmd.OutOrStdout())
			if jsonOut {
				err = sink.WriteJSONLines(w, found, "")
			} else {
				err = sink.WriteTable(w, found, "", sink.TableOptions{Color: output.ColorEnabled(os.Stdout)})
			}
			if err == nil {
				err = w.Flush()
			}
			if err != nil {
				return err
			}
			if len(found) > 0 {
				return exitCodeError{exitFindings}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "YAML config overlaying the built-in defaults")
	f.BoolVar(&jsonOut, "json", false, "alerts as JSON lines (the DESIGN.md alert contract)")
	f.StringVar(&minSev, "min-severity", "low", "report and set the exit status only for findings at or above: low, medium, high, critical")
	f.IntVar(&top, "top", 0, "keep only the N best-scored alerts of each detector (beacons by beacon score, transfers by bytes, …); 0 keeps all")
	opts.register(f)
	return cmd
}

// analyzeOptions are the input flags analyze and eval share.
type analyzeOptions struct {
	checksums bool
	maxFlows  int
	storePath string
	noStore   bool
	model     string
}

// defaultMaxFlows bounds the flow table of a capture read from a file
// (analyze --max-flows, watch --read).
const defaultMaxFlows = 1 << 20

func (o *analyzeOptions) register(f *pflag.FlagSet) {
	f.BoolVar(&o.checksums, "checksums", false, "validate checksums and drop bad packets, as Zeek does without -C")
	f.IntVar(&o.maxFlows, "max-flows", defaultMaxFlows, "flow table bound; the least recently active flow is emitted early when full (memory stays flat at the bound)")
	f.StringVar(&o.storePath, "store", "", "SQLite store holding the learned traffic model (default: store.path from the config); never created by analyze")
	f.BoolVar(&o.noStore, "no-store", false, "do not read the learned traffic model: packet-size and anomaly stay quiet")
	f.StringVar(&o.model, "model", "traffic", "name of the learned traffic model (tcpsentry baseline learn --model)")
}

// trafficModel loads the learned traffic model, if the store exists and
// holds one; an absent store or model is not an error (the detectors that
// need it say so), an unreadable one is a warning.
func (o *analyzeOptions) trafficModel(ctx context.Context, cfg *config.Config) (*baseline.TrafficModel, []string) {
	if o.noStore {
		return nil, nil
	}
	path := o.storePath
	if path == "" {
		path = cfg.Store.Path
	}
	if _, err := os.Stat(path); err != nil {
		if o.storePath != "" {
			return nil, []string{fmt.Sprintf("--store %s: %v", path, err)}
		}
		return nil, nil
	}
	st, err := store.Open(ctx, path)
	if err != nil {
		return nil, []string{fmt.Sprintf("traffic model not loaded: %v", err)}
	}
	defer st.Close()
	m, err := st.LoadTrafficModel(ctx, o.model)
	if err != nil {
		return nil, []string{fmt.Sprintf("traffic model not loaded: %v", err)}
	}
	return m, nil
}

// readInput turns one file into connection records: a capture through the
// flow tracker, anything else as a Zeek conn.log. Records of Zeek's (or
// RITA's) open_conn.log describe connections still open and are marked so.
// It reports whether the file could be read at all.
func readInput(ctx context.Context, path string, o *analyzeOptions, observe func(*model.Conn), warn func(error)) bool {
	if capture.IsCapture(path) {
		if _, err := flow.Run(ctx, flow.Input{
			Paths: []string{path}, Options: flow.Options{Checksums: o.checksums, MaxFlows: o.maxFlows}, Emit: observe, Warn: warn,
		}); err != nil {
			warn(err)
			return false
		}
		return true
	}
	records, warned := 0, 0
	open := strings.HasPrefix(filepath.Base(path), "open_conn")
	// Parsing runs on its own goroutine, handing records over in batches,
	// so that on two cores parsing and detection overlap. Errors travel in
	// the batches too, so that warn is only called from here.
	type batch struct {
		conns []*model.Conn
		errs  []error
	}
	const batchSize = 512
	ch := make(chan batch, 8)
	var readErr error
	go func() {
		defer close(ch)
		cur := batch{conns: make([]*model.Conn, 0, batchSize)}
		flush := func() {
			ch <- cur
			cur = batch{conns: make([]*model.Conn, 0, batchSize)}
		}
		readErr = zeeklog.ReadFiles([]string{path}, func(c *model.Conn) {
			if cur.conns = append(cur.conns, c); len(cur.conns) == batchSize {
				flush()
			}
		}, func(err error) {
			cur.errs = append(cur.errs, err)
			if len(cur.errs) >= batchSize {
				flush()
			}
		})
		if len(cur.conns) > 0 || len(cur.errs) > 0 {
			ch <- cur
		}
	}()
	for b := range ch {
		for _, c := range b.conns {
			records++
			if open {
				c.End = model.EndEOF
			}
			observe(c)
		}
		for _, err := range b.errs {
			warned++
			warn(err)
		}
	}
	// Errors are reported through warn; a file that gave nothing but
	// warnings was not a conn.log at all.
	return readErr == nil && (records > 0 || warned == 0)
}

// analyzeFiles runs the traffic detectors over captures and conn.logs and
// returns the aggregated alerts; what could not be read is warned about on
// stderr, and it fails only when no file could be read at all.
func analyzeFiles(cmd *cobra.Command, cfg *config.Config, args []string, o *analyzeOptions) ([]alert.Alert, error) {
	ctx := cmd.Context()
	deps, warnings := buildDeps(ctx, cfg, nil, "")
	stderr := cmd.ErrOrStderr()
	m, ws := o.trafficModel(ctx, cfg)
	deps.Traffic = m
	output.WriteWarnings(stderr, append(warnings, ws...))
	var mu sync.Mutex // the detectors' goroutines warn too
	warn := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		output.WriteWarnings(stderr, []string{err.Error()})
	}
	// The detectors run in groups on every core, beside the parser.
	engine := detect.NewParallel(detect.TrafficDetectors(cfg, deps), runtime.GOMAXPROCS(0), "", nil, warn)
	observe := engine.ObserveConn
	read := 0
	for _, path := range args {
		if capture.IsCapture(path) {
			engine.SetSource("pcap:" + path)
		} else {
			engine.SetSource("conn.log:" + path)
		}
		if readInput(ctx, path, o, observe, warn) {
			read++
		}
	}
	engine.Flush(time.Time{})
	if read == 0 {
		return nil, fmt.Errorf("no input could be read: not captures or Zeek conn.logs, or unreadable (see the warnings above)")
	}
	output.WriteWarnings(stderr, engine.Notes())
	return engine.Alerts(), nil
}

// alertScore ranks alerts within a detector: the detector's own score in
// the evidence when it has one, else its confidence.
func alertScore(a *alert.Alert) float64 {
	if v, ok := a.Evidence["score"]; ok {
		switch x := v.(type) {
		case float64:
			return x
		case int:
			return float64(x)
		}
	}
	return a.Confidence
}

// topPerDetector keeps the n best-scored alerts of each detector (n ≤ 0:
// all), in their original order.
func topPerDetector(as []alert.Alert, n int) []alert.Alert {
	if n <= 0 {
		return as
	}
	byDet := map[string][]int{}
	for i := range as {
		byDet[as[i].Detector] = append(byDet[as[i].Detector], i)
	}
	keep := make([]bool, len(as))
	for _, idx := range byDet {
		slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(alertScore(&as[b]), alertScore(&as[a])) })
		for _, i := range idx[:min(n, len(idx))] {
			keep[i] = true
		}
	}
	out := as[:0:0]
	for i := range as {
		if keep[i] {
			out = append(out, as[i])
		}
	}
	return out
}
