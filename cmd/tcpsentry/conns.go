package main

import (
	"bufio"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/tcpsentry/tcpsentry/internal/host"
	"github.com/tcpsentry/tcpsentry/internal/model"
	"github.com/tcpsentry/tcpsentry/internal/output"
	"github.com/tcpsentry/tcpsentry/internal/sockfilter"
)

func newConnsCmd() *cobra.Command {
	var (
		spec      sockfilter.Spec
		tcp, udp  bool
		v4, v6    bool
		netns     []string
		allNetns  bool
		jsonOut   bool
		summary   bool
		noProc    bool
		noCT      bool
		noEnable  bool
		wideTable bool
	)
	cmd := &cobra.Command{
		Use:   "conns",
		Short: "List every TCP/UDP socket with its process and connection age",
		Long: `List every TCP and UDP socket (IPv4 and IPv6, every state) with queues,
uid, TCP info, the processes that hold it (pid, ppid, name, exe, cmdline,
user, start time) and, from conntrack, when the connection started.

Sockets come from netlink SOCK_DIAG (falling back to /proc/net when netlink
is refused); their owners from a BPF task_file iterator when run as root
(else from /proc/*/fd) and the owners' details from /proc; ages from
conntrack with net.netfilter.nf_conntrack_timestamp, which tcpsentry turns
on when run as root (it applies to connections opened after that). An age is shown only
when conntrack knows it; otherwise "-", or "<=AGE" when the only bound is
the start time of the oldest owning process (the connection cannot be older).

Filters combine with AND; repeated values of one filter combine with OR.`,
		Example: `  tcpsentry conns
  tcpsentry conns -t -s established --dport 443
  tcpsentry conns --listening --json
  tcpsentry conns --process 'python*' --addr 10.0.0.0/8
  tcpsentry conns --all-netns --summary`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			oneShotGC()
			if tcp {
				spec.Protos = append(spec.Protos, "tcp")
			}
			if udp {
				spec.Protos = append(spec.Protos, "udp")
			}
			switch {
			case v4 && !v6:
				spec.Family = "4"
			case v6 && !v4:
				spec.Family = "6"
			}
			filter, err := sockfilter.Parse(spec)
			if err != nil {
				return err
			}
			snap, err := host.Collect(cmd.Context(), host.Options{
				Netns:            netns,
				AllNetns:         allNetns,
				Processes:        !noProc,
				Conntrack:        !noCT,
				EnableTimestamps: !noCT && !noEnable,
				// The table and the summary show no TCP info; JSON does.
				NoTCPInfo: !jsonOut,
			})
			if err != nil {
				return err
			}
			socks := make([]model.Socket, 0, len(snap.Sockets))
			for i := range snap.Sockets {
				if filter.Match(snap, &snap.Sockets[i]) {
					socks = append(socks, snap.Sockets[i])
				}
			}
			stderr := cmd.ErrOrStderr()
			output.WriteWarnings(stderr, snap.Warnings)
			w := bufio.NewWriterSize(cmd.OutOrStdout(), 256<<10)
			defer w.Flush()
			switch {
			case summary:
				err = output.WriteSummary(w, snap, socks, jsonOut)
			case jsonOut:
				err = output.WriteJSON(w, snap, socks, output.JSONOptions{})
			default:
				opts := output.TableOptions{Color: output.ColorEnabled(os.Stdout)}
				if !wideTable && term.IsTerminal(int(os.Stdout.Fd())) {
					if width, _, werr := term.GetSize(int(os.Stdout.Fd())); werr == nil {
						opts.Width = width
					}
				}
				err = output.WriteTable(w, snap, socks, opts)
			}
			if err != nil {
				return err
			}
			return w.Flush()
		},
	}
	f := cmd.Flags()
	f.StringSliceVarP(&spec.States, "state", "s", nil, "socket states: kernel or ss names (established, syn-recv, close-wait, listen, unconn…), or the groups connected, listening, all")
	f.BoolVarP(&tcp, "tcp", "t", false, "TCP sockets only (with -u: both)")
	f.BoolVarP(&udp, "udp", "u", false, "UDP sockets only (with -t: both)")
	f.BoolVarP(&v4, "ipv4", "4", false, "IPv4 sockets only")
	f.BoolVarP(&v6, "ipv6", "6", false, "IPv6 sockets only")
	f.StringSliceVar(&spec.SPorts, "sport", nil, "local port or range (22, 1000-2000)")
	f.StringSliceVar(&spec.DPorts, "dport", nil, "remote port or range")
	f.StringSliceVar(&spec.Addrs, "addr", nil, "address or CIDR at either end")
	f.StringSliceVar(&spec.SrcAddrs, "src", nil, "local address or CIDR")
	f.StringSliceVar(&spec.DstAddrs, "dst", nil, "remote address or CIDR")
	f.IntSliceVar(&spec.PIDs, "pid", nil, "owning process id")
	f.StringSliceVar(&spec.ProcessNames, "process", nil, "owning process name or exe base name (glob)")
	f.StringSliceVar(&spec.Users, "user", nil, "socket or process owner (name or uid)")
	f.BoolVarP(&spec.Listening, "listening", "l", false, "listening TCP and unconnected UDP sockets only")
	f.StringSliceVar(&netns, "netns", nil, "network namespace NAME (from ip netns) or PATH (e.g. /proc/PID/ns/net); repeatable")
	f.BoolVar(&allNetns, "all-netns", false, "every network namespace: named ones and those of running processes")
	f.BoolVar(&jsonOut, "json", false, "JSON lines, one socket per line (field names in the README)")
	f.BoolVar(&summary, "summary", false, "counts by state and by process")
	f.BoolVar(&noProc, "no-processes", false, "skip process attribution")
	f.BoolVar(&noCT, "no-conntrack", false, "skip conntrack (no connection ages)")
	f.BoolVar(&noEnable, "no-enable-timestamps", false, "do not turn on net.netfilter.nf_conntrack_timestamp")
	f.BoolVarP(&wideTable, "wide", "w", false, "do not truncate the table to the terminal width")
	cmd.MarkFlagsMutuallyExclusive("netns", "all-netns")
	return cmd
}
