package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/eval"
	"github.com/tcpsentry/tcpsentry/internal/output"
)

func newEvalCmd() *cobra.Command {
	var (
		configPath string
		truthPath  string
		jsonOut    bool
		mapping    []string
		opts       analyzeOptions
	)
	cmd := &cobra.Command{
		Use:   "eval --truth truth.csv INPUT...",
		Short: "Score the traffic detectors on labelled captures or conn.logs",
		Long: `Run the traffic detectors over the inputs, as analyze does, and score the
alerts against ground truth: a CSV with the header event,start,end,src,dst,label
(times in epoch seconds; src and dst an address, a CIDR or empty for any;
label "benign" or an attack class such as portscan, synflood, c2, exfil,
beacon).

Per attack class it reports recall (events matched by an alert of that
class), precision (alerts of that class matching such an event) and the
detection latency (the event time an alert was raised minus the event's
start); for benign traffic, the share of benign events that drew an alert
and how many alerts fell on benign or on unlabelled traffic. An alert
matches an event when their times meet (±1 s) and its addresses fit the
event's. Detectors map to classes as: scan, rapid-attempts → portscan;
flood → synflood; beacon → beacon; exfiltration, packet-size → exfil;
suspicious-port, blocklisted-ip, long-connection, reverse-shell → c2;
lateral-movement → lateral; anomaly → anomaly; change it with
--map DETECTOR=CLASS.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			classes := eval.DefaultClasses()
			for _, m := range mapping {
				det, class, ok := strings.Cut(m, "=")
				if !ok || det == "" || class == "" {
					return fmt.Errorf("--map %q: want DETECTOR=CLASS", m)
				}
				classes[det] = strings.ToLower(class)
			}
			f, err := os.Open(truthPath)
			if err != nil {
				return fmt.Errorf("--truth: %w", err)
			}
			events, errs := eval.ReadTruth(f, truthPath)
			f.Close()
			for _, e := range errs {
				output.WriteWarnings(cmd.ErrOrStderr(), []string{e.Error()})
			}
			if len(events) == 0 {
				return fmt.Errorf("%s: no usable events", truthPath)
			}
			cfg, err := config.Load(configPath)
			if err != nil {
				return err
			}
			alerts, err := analyzeFiles(cmd, cfg, args, &opts)
			if err != nil {
				return err
			}
			r := eval.Score(alerts, events, classes)
			w := cmd.OutOrStdout()
			if jsonOut {
				b, err := json.Marshal(r)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(w, "%s\n", b)
				return err
			}
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "class\tevents\tdetected\trecall\talerts\tcorrect\tprecision\tlatency median s\tlatency max s\t")
			for _, c := range r.Classes {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f%%\t%d\t%d\t%.1f%%\t%.3f\t%.3f\t\n", c.Class, c.Events, c.Detected,
					100*c.Recall, c.Alerts, c.Correct, 100*c.Precision, c.LatencyMedianS, c.LatencyMaxS)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			_, err = fmt.Fprintf(w, "benign events: %d, with an alert: %d (false-positive rate %.1f%%); alerts on benign traffic: %d (%d high or critical); alerts on unlabelled traffic: %d; alerts in all: %d\n",
				r.BenignEvents, r.BenignAlerted, 100*r.FalsePositiveR, r.AlertsOnBenign, r.HighOnBenign, r.AlertsOnUncovered, r.TotalAlerts)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&truthPath, "truth", "", "ground truth CSV: event,start,end,src,dst,label (required)")
	f.StringVar(&configPath, "config", "", "YAML config overlaying the built-in defaults")
	f.BoolVar(&jsonOut, "json", false, "the report as one JSON object")
	f.StringSliceVar(&mapping, "map", nil, "DETECTOR=CLASS: which attack class a detector's alerts claim (repeatable)")
	opts.register(f)
	_ = cmd.MarkFlagRequired("truth")
	return cmd
}
