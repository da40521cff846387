package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcpsentry/tcpsentry/internal/baseline"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/host"
	"github.com/tcpsentry/tcpsentry/internal/output"
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
	)
	cmd := &cobra.Command{
		Use:   "learn",
		Short: "Watch the host for a while and store each executable's normal network use",
		Long: `Take a snapshot of the host every --interval for --for, and record per
executable the ports it listens on, the remote ports and networks (/24, /48)
it connects to. The result replaces the host's baseline in the store;
check's process-network, lateral-movement and egress detectors then flag
what it has not seen. Learn on a host you trust.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
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
	return cmd
}

func newBaselineShowCmd() *cobra.Command {
	var (
		common  commonFlags
		jsonOut bool
	)
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Print the host's learned baseline",
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
	cmd.Flags().BoolVar(&jsonOut, "json", false, "one JSON profile per line")
	return cmd
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
