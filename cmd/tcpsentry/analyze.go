package main

import (
	"bufio"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/capture"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/detect"
	"github.com/tcpsentry/tcpsentry/internal/flow"
	"github.com/tcpsentry/tcpsentry/internal/model"
	"github.com/tcpsentry/tcpsentry/internal/output"
	"github.com/tcpsentry/tcpsentry/internal/sink"
	"github.com/tcpsentry/tcpsentry/internal/zeeklog"
)

func newAnalyzeCmd() *cobra.Command {
	var (
		configPath string
		jsonOut    bool
		minSev     string
		checksums  bool
		maxFlows   int
	)
	cmd := &cobra.Command{
		Use:   "analyze FILE...",
		Short: "Run the traffic detectors over pcap/pcapng captures and Zeek conn.logs",
		Long: `Turn each capture (pcap or pcapng, gzip or not; "-" reads one from stdin) into
connection records as ` + "`tcpsentry flows`" + ` does, read each Zeek conn.log (TSV
or JSON), and run the traffic detectors over the records. The format is
recognised from the content, not the name. Alerts follow the same JSON
contract as check.

Traffic detectors so far: suspicious-port (answered connections to
known-bad ports) and scan (vertical and horizontal port scans, typed by
probe: SYN, connect, FIN, NULL, Xmas, ACK, Maimon, UDP; and the Threshold
Random Walk test on first contacts) and flood (SYN floods on one host:port,
spoofed sources or not). Rapid-attempt detection is planned.

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
			alerts, err := analyzeFiles(cmd, cfg, args, checksums, maxFlows)
			if err != nil {
				return err
			}
			var found []alert.Alert
			for _, a := range alerts {
				if a.Severity >= min {
					found = append(found, a)
				}
			}
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
	f.BoolVar(&checksums, "checksums", false, "validate checksums and drop bad packets, as Zeek does without -C")
	f.IntVar(&maxFlows, "max-flows", 1<<20, "flow table bound; the least recently active flow is emitted early when full (memory stays flat at the bound)")
	return cmd
}

// analyzeFiles runs the traffic detectors over captures and conn.logs and
// returns the aggregated alerts; what could not be read is warned about on
// stderr, and it fails only when no file could be read at all.
func analyzeFiles(cmd *cobra.Command, cfg *config.Config, args []string, checksums bool, maxFlows int) ([]alert.Alert, error) {
	deps, warnings := buildDeps(cmd.Context(), cfg, nil, "")
	stderr := cmd.ErrOrStderr()
	output.WriteWarnings(stderr, warnings)
	warned := 0
	warn := func(err error) {
		warned++
		output.WriteWarnings(stderr, []string{err.Error()})
	}
	engine := detect.NewEngine(detect.TrafficDetectors(cfg, deps), "", nil)
	records := 0
	observe := func(c *model.Conn) {
		records++
		for _, err := range engine.ObserveConn(c) {
			warn(err)
		}
	}
	read := 0
	for _, path := range args {
		records, warned = 0, 0
		if capture.IsCapture(path) {
			engine.SetSource("pcap:" + path)
			if _, err := flow.Run(cmd.Context(), flow.Input{
				Paths: []string{path}, Options: flow.Options{Checksums: checksums, MaxFlows: maxFlows}, Emit: observe, Warn: warn,
			}); err != nil {
				warn(err)
				continue
			}
		} else {
			engine.SetSource("conn.log:" + path)
			// Errors are reported through warn; a file that gave
			// nothing but warnings was not a conn.log at all.
			if err := zeeklog.ReadFiles([]string{path}, observe, warn); err != nil || (records == 0 && warned > 0) {
				continue
			}
		}
		read++
	}
	engine.Flush(time.Time{})
	if read == 0 {
		return nil, fmt.Errorf("no input could be read: not captures or Zeek conn.logs, or unreadable (see the warnings above)")
	}
	return engine.Alerts(), nil
}
