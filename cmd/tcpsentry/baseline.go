package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcpsentry/tcpsentry/internal/baseline"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/detect"
	"github.com/tcpsentry/tcpsentry/internal/host"
	"github.com/tcpsentry/tcpsentry/internal/model"
	"github.com/tcpsentry/tcpsentry/internal/output"
	"github.com/tcpsentry/tcpsentry/internal/store"
)

func newBaselineCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "baseline",
		Short: "Learn and show what is normal for this host",
	}
	cmd.AddCommand(newBaselineLearnCmd(), newBaselineShowCmd())
	return cmd
}

func newBaselineLearnCmd() *cobra.Command {
	var (
		common   commonFlags
		duration time.Duration
		interval time.Duration
		netns    []string
		opts     analyzeOptions
	)
	cmd := &cobra.Command{
		Use:   "learn [FILE...]",
		Short: "Learn what is normal: this host's network use, or traffic from captures and conn.logs",
		Long: `Without files: take a snapshot of the host every --interval for --for, and
record per executable the ports it listens on, the remote ports and networks
(/24, /48) it connects to. The result replaces the host's baseline in the
store; check's process-network, lateral-movement and egress detectors then
flag what it has not seen. Learn on a host you trust.

With files (pcap/pcapng or Zeek conn.log, recognised by content as analyze
does): learn the traffic model that analyze's packet-size and anomaly
detectors compare against — per destination port, the usual bytes per
packet each way, and per feature (duration, bytes and packets each way,
bytes per packet) the median and spread of established connections. It is
stored under --model (default "traffic"), replacing the previous one. Learn
on traffic you trust: what it contains becomes normal.`,
		Example: `  tcpsentry baseline learn --for 30m
  tcpsentry baseline learn last-week/conn.*.log.gz
  tcpsentry analyze today.pcap            # packet-size and anomaly now run`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if len(args) > 0 {
				return learnTraffic(cmd, common, &opts, args)
			}
			if interval <= 0 || duration < 0 {
				return fmt.Errorf("--interval must be positive and --for not negative")
			}
			cfg, err := config.Load(common.configPath)
			if err != nil {
				return err
			}
			st := common.openStore(ctx, cfg, cmd.ErrOrStderr())
			if st == nil {
				return fmt.Errorf("baseline learn needs the store")
			}
			defer st.Close()
			set := baseline.NewSet()
			start := time.Now()
			deadline := start.Add(duration)
			ticker := time.NewTicker(interval)
			defer ticker.Stop()
			snaps := 0
			for {
				snap, err := host.Collect(ctx, host.Options{Netns: netns, Processes: true})
				if err != nil {
					return err
				}
				if snaps == 0 {
					output.WriteWarnings(cmd.ErrOrStderr(), snap.Warnings)
				}
				set.Observe(snap)
				snaps++
				if !time.Now().Before(deadline) {
					break
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("baseline learn interrupted after %d snapshots; nothing saved", snaps)
				case <-ticker.C:
				}
			}
			set.Learned = time.Since(start)
			if err := st.SaveBaseline(ctx, hostSource(), set, time.Now()); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "learned %d executables from %d snapshots over %s into %s\n",
				len(set.Profiles), snaps, set.Learned.Round(time.Second), st.Path())
			return nil
		},
	}
	common.register(cmd)
	cmd.Flags().DurationVar(&duration, "for", 10*time.Minute, "how long to learn")
	cmd.Flags().DurationVar(&interval, "interval", 10*time.Second, "time between snapshots")
	cmd.Flags().StringSliceVar(&netns, "netns", nil, "learn from network namespace NAME or PATH instead of the caller's")
	cmd.Flags().StringVar(&opts.model, "model", "traffic", "with files: name the traffic model is stored under")
	cmd.Flags().BoolVar(&opts.checksums, "checksums", false, "with captures: drop packets with bad checksums")
	cmd.Flags().IntVar(&opts.maxFlows, "max-flows", 1<<20, "with captures: flow table bound")
	return cmd
}

// learnTraffic learns the traffic model from files and stores it.
func learnTraffic(cmd *cobra.Command, common commonFlags, opts *analyzeOptions, args []string) error {
	ctx := cmd.Context()
	cfg, err := config.Load(common.configPath)
	if err != nil {
		return err
	}
	l := baseline.NewTrafficLearner(cfg.Detectors.Anomaly.MaxGroups)
	stderr := cmd.ErrOrStderr()
	warn := func(err error) { output.WriteWarnings(stderr, []string{err.Error()}) }
	var inputs []string
	for _, path := range args {
		if readInput(ctx, path, opts, func(c *model.Conn) { l.Observe(c, detect.Established(c)) }, warn) {
			inputs = append(inputs, path)
		}
	}
	if len(inputs) == 0 {
		return fmt.Errorf("no input could be read: not captures or Zeek conn.logs, or unreadable (see the warnings above)")
	}
	m, err := l.Model(inputs, cfg.Detectors.Anomaly.MinSamples, time.Now().UTC())
	if err != nil {
		return err
	}
	st := common.openStore(ctx, cfg, stderr)
	if st == nil {
		return fmt.Errorf("baseline learn needs the store")
	}
	defer st.Close()
	if err := st.SaveTrafficModel(ctx, opts.model, m, time.Now()); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "learned traffic model %q from %d of %d records (established connections), %d port groups with their own profile, into %s\n",
		opts.model, m.Used, m.Records, len(m.Anomaly.Groups), st.Path())
	return nil
}

func newBaselineShowCmd() *cobra.Command {
	var (
		common  commonFlags
		jsonOut bool
		model   string
	)
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Print the host's learned baseline, or with --model a learned traffic model",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfg, err := config.Load(common.configPath)
			if err != nil {
				return err
			}
			st := common.openStore(ctx, cfg, cmd.ErrOrStderr())
			if st == nil {
				return fmt.Errorf("baseline show needs the store")
			}
			defer st.Close()
			if model != "" {
				return showTrafficModel(cmd, st, model, jsonOut)
			}
			set, at, err := st.LoadBaseline(ctx, hostSource())
			if err != nil {
				return err
			}
			if set == nil {
				return fmt.Errorf("no baseline learned for %s in %s (run tcpsentry baseline learn)", hostSource(), st.Path())
			}
			w := cmd.OutOrStdout()
			if jsonOut {
				enc := json.NewEncoder(w)
				for _, k := range set.Keys() {
					if err := enc.Encode(set.Profiles[k]); err != nil {
						return err
					}
				}
				return nil
			}
			fmt.Fprintf(w, "baseline of %s learned %s\n", hostSource(), at.Format(time.RFC3339))
			for _, k := range set.Keys() {
				p := set.Profiles[k]
				nets := make([]string, 0, len(p.RemoteNets))
				for n := range p.RemoteNets {
					nets = append(nets, n.String())
				}
				slices.Sort(nets)
				sat := ""
				if p.Saturated {
					sat = " (saturated: everything allowed)"
				}
				fmt.Fprintf(w, "%s%s\n  listens: %s\n  connects to ports: %s\n  connects to networks: %s\n",
					output.Sanitize(k), sat, keys(p.ListenPorts), keys(p.RemotePorts), orNone(nets))
			}
			return nil
		},
	}
	common.register(cmd)
	cmd.Flags().BoolVar(&jsonOut, "json", false, "one JSON profile per line (with --model: the model as one JSON object)")
	cmd.Flags().StringVar(&model, "model", "", "show the traffic model of this name (baseline learn FILE... stores \"traffic\")")
	return cmd
}

// showTrafficModel prints what a learned traffic model holds: its inputs,
// and per port group the usual bytes per packet and connection shape.
func showTrafficModel(cmd *cobra.Command, st *store.Store, name string, jsonOut bool) error {
	m, err := st.LoadTrafficModel(cmd.Context(), name)
	if err != nil {
		return err
	}
	if m == nil {
		return fmt.Errorf("no traffic model %q in %s (run tcpsentry baseline learn FILE...)", name, st.Path())
	}
	w := cmd.OutOrStdout()
	if jsonOut {
		return json.NewEncoder(w).Encode(m)
	}
	fmt.Fprintf(w, "traffic model %q learned %s from %d established connections (%d records, %s .. %s)\n",
		name, m.Learned.Format(time.RFC3339), m.Used, m.Records, m.From.UTC().Format(time.RFC3339), m.To.UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "inputs: %s\n", orNone(m.Inputs))
	groups := make([]string, 0, len(m.PacketSize))
	for g := range m.PacketSize {
		groups = append(groups, g)
	}
	slices.SortFunc(groups, func(a, b string) int { return cmp.Compare(m.Anomaly.PortShare[b], m.Anomaly.PortShare[a]) })
	fmt.Fprintf(w, "%-12s %8s %10s %10s %14s %s\n", "port", "share", "orig B/pkt", "resp B/pkt", "median bytes", "own anomaly profile")
	for _, g := range groups {
		p := m.PacketSize[g]
		own := "no (rare: uses all traffic's)"
		median := "-"
		if sums, ok := m.Anomaly.Groups[g]; ok {
			own = "yes"
			median = fmt.Sprintf("%.0f/%.0f", math.Exp2(sums[1].Median)-1, math.Exp2(sums[2].Median)-1)
		}
		fmt.Fprintf(w, "%-12s %7.2f%% %10.0f %10.0f %14s %s\n", g, 100*m.Anomaly.PortShare[g], math.Exp2(p.Orig.Median), math.Exp2(p.Resp.Median), median, own)
	}
	return nil
}

func keys(m map[string]bool) string {
	k := make([]string, 0, len(m))
	for s := range m {
		k = append(k, s)
	}
	slices.Sort(k)
	return orNone(k)
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, " ")
}
