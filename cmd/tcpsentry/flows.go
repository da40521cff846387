package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/tcpsentry/tcpsentry/internal/capture"
	"github.com/tcpsentry/tcpsentry/internal/flow"
	"github.com/tcpsentry/tcpsentry/internal/model"
	"github.com/tcpsentry/tcpsentry/internal/zeeklog"
)

// connWriter is what the three output formats share.
type connWriter interface {
	Write(*model.Conn) error
	Close() error
}

func newFlowsCmd() *cobra.Command {
	var (
		jsonOut   bool
		format    string
		checksums bool
		maxFlows  int
		stats     bool
		noProg    bool
	)
	cmd := &cobra.Command{
		Use:   "flows FILE...",
		Short: "Turn pcap/pcapng captures (or Zeek conn.logs) into connection records",
		Long: `Read pcap and pcapng captures (gzip-compressed or not; "-" is stdin) and
print one Zeek conn.log-compatible record per connection: conn_state, history,
bytes from sequence numbers, packets and IP bytes each way, missed bytes.
The files are read in order as one capture. Zeek conn.logs (TSV or JSON,
gzip or not) are read too and printed in the chosen format.

--checksums validates IP/TCP/UDP/ICMP checksums and drops bad packets, as
Zeek does without -C (captures taken on the sending host often have
offloaded, unfilled checksums, so it is off by default).`,
		Example: `  tcpsentry flows trace.pcap
  tcpsentry flows --json trace.pcapng.gz | jq 'select(.conn_state=="S0")'
  tcpsentry flows --format zeek a.pcap b.pcap > conn.log
  tcpdump -w - -i eth0 | tcpsentry flows -`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if jsonOut {
				format = "json"
			}
			out := cmd.OutOrStdout()
			var w connWriter
			switch format {
			case "table":
				w = newFlowTable(out)
			case "json":
				w = zeeklog.NewJSONWriter(out)
			case "zeek", "tsv":
				w = zeeklog.NewTSVWriter(out)
			default:
				return fmt.Errorf("--format %q: want table, json or zeek", format)
			}
			warn := func(err error) { fmt.Fprintln(os.Stderr, "tcpsentry: warning:", err) }
			var werr error
			emit := func(c *model.Conn) {
				if err := w.Write(c); err != nil && werr == nil {
					werr = err
				}
			}
			var captures, logs []string
			for _, a := range args {
				if capture.IsCapture(a) {
					captures = append(captures, a)
				} else {
					logs = append(logs, a)
				}
			}
			if len(logs) > 0 {
				// Each unreadable file was already reported as a warning.
				if err := zeeklog.ReadFiles(logs, emit, warn); err != nil && len(captures) == 0 {
					return fmt.Errorf("no records: none of the %d input files could be read", len(logs))
				}
			}
			if len(captures) > 0 {
				in := flow.Input{
					Paths:   captures,
					Options: flow.Options{Checksums: checksums, MaxFlows: maxFlows},
					Emit:    emit,
					Warn:    warn,
				}
				if !noProg && term.IsTerminal(int(os.Stderr.Fd())) {
					in.Progress = progressBar(os.Stderr)
				}
				st, err := flow.Run(cmd.Context(), in)
				if in.Progress != nil {
					fmt.Fprint(os.Stderr, "\r\033[K")
				}
				if err != nil {
					return err
				}
				if st.Evicted > 0 {
					warn(fmt.Errorf("flow table full (%d flows): %d flows emitted early; raise --max-flows", maxFlows, st.Evicted))
				}
				if stats {
					fmt.Fprintln(os.Stderr, "tcpsentry:", st)
				}
			}
			if err := w.Close(); err != nil {
				return err
			}
			return werr
		},
	}
	f := cmd.Flags()
	f.BoolVar(&jsonOut, "json", false, "JSON lines with Zeek's field names (same as --format json)")
	f.StringVar(&format, "format", "table", "output: table, json, or zeek (a TSV conn.log)")
	f.BoolVar(&checksums, "checksums", false, "validate checksums and drop bad packets, as Zeek does without -C")
	f.IntVar(&maxFlows, "max-flows", flow.DefaultMaxFlows, "flow table bound; the least recently active flow is emitted early when full")
	f.BoolVar(&stats, "stats", false, "print packet and flow counters to stderr at the end")
	f.BoolVar(&noProg, "no-progress", false, "no progress bar on a terminal")
	return cmd
}

// progressBar draws "file 42%" on a terminal for inputs of known size
// above 32 MiB; smaller files finish before it would be useful.
func progressBar(w io.Writer) func(string, int64, int64) {
	last := time.Time{}
	return func(path string, read, size int64) {
		if size < 32<<20 || time.Since(last) < 200*time.Millisecond {
			return
		}
		last = time.Now()
		pct := min(100, 100*read/size)
		fmt.Fprintf(w, "\r\033[K%s %3d%% [%-30s] %d/%d MiB", path, pct, strings.Repeat("#", int(pct*30/100)), read>>20, size>>20)
	}
}

// flowTable prints records as an aligned table for people.
type flowTable struct {
	tw *tabwriter.Writer
	n  int
}

func newFlowTable(w io.Writer) *flowTable {
	return &flowTable{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
}

func (t *flowTable) Write(c *model.Conn) error {
	if t.n == 0 {
		fmt.Fprintln(t.tw, "TIME\tPROTO\tORIG\tRESP\tSTATE\tHISTORY\tDURATION\tORIG_BYTES\tRESP_BYTES\tPKTS\tUID")
	}
	t.n++
	dur, ob, rb := "-", "-", "-"
	if c.Has(model.FieldDuration) {
		dur = c.Duration.Round(time.Microsecond).String()
	}
	if c.Has(model.FieldOrigBytes) {
		ob = strconv.FormatUint(c.OrigBytes, 10)
	}
	if c.Has(model.FieldRespBytes) {
		rb = strconv.FormatUint(c.RespBytes, 10)
	}
	hist := c.History
	if hist == "" {
		hist = "-"
	}
	_, err := fmt.Fprintf(t.tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\n",
		c.TS.UTC().Format("2006-01-02T15:04:05.000000Z"), zeeklog.ProtoName(c.Proto), c.Orig, c.Resp,
		safe(string(c.ConnState)), safe(hist), dur, ob, rb, c.OrigPkts, c.RespPkts, safe(c.UID))
	return err
}

func (t *flowTable) Close() error { return t.tw.Flush() }

// safe quotes strings from logs that would put control characters on a terminal.
func safe(s string) string {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}
