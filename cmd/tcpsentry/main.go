// Command tcpsentry finds suspicious TCP connections on a live Linux host,
// in captures and in Zeek conn.log. This package is CLI wiring only: flags,
// subcommands and exit codes; the work is done in internal/.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"syscall"

	"github.com/spf13/cobra"
)

// Exit codes shared by every subcommand; check and analyze use exitFindings.
const (
	exitOK       = 0
	exitFindings = 1
	exitError    = 2
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// exitCodeError carries a non-error exit status (findings) out of RunE.
type exitCodeError struct{ code int }

func (e exitCodeError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// newRootCmd builds the command tree; finish stops what the run started
// (the CPU profile) whether or not the command failed.
func newRootCmd() (root *cobra.Command, finish func()) {
	root = &cobra.Command{
		Use:   "tcpsentry",
		Short: "Connection analysis for incident response",
		Long: `tcpsentry finds suspicious TCP connections on a live Linux host, in live
traffic, in pcap/pcapng captures and in Zeek conn.log, and says what is
wrong, why, and how sure it is.`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// A hidden flag for performance work on real hosts.
	var cpuProfile string
	root.PersistentFlags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile to this file")
	_ = root.PersistentFlags().MarkHidden("cpuprofile")
	var stopProfile func()
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if cpuProfile == "" {
			return nil
		}
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return err
		}
		stopProfile = func() { pprof.StopCPUProfile(); f.Close() }
		return nil
	}
	root.AddCommand(newConnsCmd(), newCheckCmd(), newAnalyzeCmd(), newEvalCmd(), newFlowsCmd(), newConfigCmd(), newBaselineCmd(), newWatchCmd(), newFleetCmd())
	return root, func() {
		if stopProfile != nil {
			stopProfile()
		}
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	root, finish := newRootCmd()
	err := root.ExecuteContext(ctx)
	finish()
	stop()
	os.Exit(exitStatus(err))
}

// oneShotGC tunes the collector for a command that builds one snapshot and
// exits: the heap only grows until the output is written, so collecting
// while it grows is wasted work (a fifth of conns' CPU at 100k sockets).
// The collector stays off until the heap nears oneShotHeapLimit, and works
// as usual beyond it, so a huge host still fits in memory.
func oneShotGC() {
	debug.SetGCPercent(-1)
	debug.SetMemoryLimit(oneShotHeapLimit)
}

// oneShotHeapLimit keeps conns under 150 MiB RSS at 100k sockets, where its
// whole heap, never collected, is about 110 MiB.
const oneShotHeapLimit = 128 << 20

func exitStatus(err error) int {
	if err == nil {
		return exitOK
	}
	var ec exitCodeError
	if errors.As(err, &ec) {
		return ec.code
	}
	fmt.Fprintln(os.Stderr, "tcpsentry:", err)
	return exitError
}
