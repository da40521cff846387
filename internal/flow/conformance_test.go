package flow

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/tcpsentry/tcpsentry/internal/model"
	"github.com/tcpsentry/tcpsentry/internal/zeeklog"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// zeekPair is a trace and the conn.log Zeek wrote for it (Zeek's btest
// baselines, testdata/zeek-pairs/*/README.md says how Zeek was run).
type zeekPair struct {
	name, pcap, log string
	checksums       bool // Zeek ran without -C
}

func zeekPairs(t *testing.T) []zeekPair {
	t.Helper()
	root := filepath.Join("testdata", "zeek-pairs")
	wiki := filepath.Join(root, "opt.basic", "wikipedia.pcap")
	p := func(dir, pcap, log string) zeekPair {
		readme, err := os.ReadFile(filepath.Join(root, dir, "README.md"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(pcap, string(filepath.Separator)) {
			pcap = filepath.Join(root, dir, pcap)
		}
		return zeekPair{name: dir + "/" + log, pcap: pcap, log: filepath.Join(root, dir, log),
			checksums: !bytes.Contains(readme, []byte(" -C "))}
	}
	return []zeekPair{
		p("core.cisco-fabric-path", "cisco-fabric-path.pcap", "conn.log"),
		p("core.mpls-in-vlan", "mpls-in-vlan.pcap", "conn.log"),
		p("core.pppoe-over-qinq", "pppoe-over-qinq.pcap", "conn.log"),
		p("core.radiotap", "radiotap.pcap", "conn.log"),
		p("core.tcp.missing-syn", "missing-syn.pcap", "conn.log"),
		p("core.tcp.rxmit-history", "retransmit-fast009.pcap", "conn-1.log"),
		p("core.tcp.rxmit-history", wiki, "conn-2.log"),
		p("core.wlanmon", "wlanmon.pcap", "conn.log"),
		// opt.basic's baseline is the run with checksum validation.
		p("opt.basic", "wikipedia.pcap", "conn.log"),
		p("scripts.base.protocols.ftp.ftp-ipv4", "ipv4.pcap", "conn.log"),
		p("scripts.base.protocols.irc.basic", "irc-dcc-send.pcapng", "conn.log"),
		p("scripts.base.protocols.pop3.basic", "pop3.pcap", "conn.log"),
		p("scripts.base.protocols.ssh.half-duplex-client", "ssh.client-side-half-duplex.pcap", "conn.log"),
	}
}

// trackFile runs one capture through a fresh tracker.
func trackFile(t *testing.T, path string, checksums bool) []*model.Conn {
	t.Helper()
	var out []*model.Conn
	_, err := Run(context.Background(), Input{
		Paths:   []string{path},
		Options: Options{Checksums: checksums},
		Emit:    func(c *model.Conn) { out = append(out, c) },
		Warn:    func(err error) { t.Logf("warning: %v", err) },
	})
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return out
}

// readBaseline reads a btest baseline, whose ts column is masked.
func readBaseline(t *testing.T, path string) []*model.Conn {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.ReplaceAll(b, []byte("XXXXXXXXXX.XXXXXX"), []byte("0.000000"))
	r, err := zeeklog.NewReader(bytes.NewReader(b), path)
	if err != nil {
		t.Fatal(err)
	}
	var out []*model.Conn
	for {
		c, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("baseline: %v", err)
		}
		out = append(out, c)
	}
	return out
}

type connKey struct {
	proto      model.Proto
	orig, resp string
}

func keyOf(c *model.Conn) connKey {
	p := c.Proto
	if p == model.ProtoICMPv6 {
		p = model.ProtoICMP
	}
	return connKey{p, c.Orig.String(), c.Resp.String()}
}

// compared are the fields the conformance criterion is about.
var compared = []string{"conn_state", "history", "orig_pkts", "resp_pkts", "orig_ip_bytes", "resp_ip_bytes", "orig_bytes", "resp_bytes"}

func fieldValue(c *model.Conn, f string) string {
	u := func(set bool, v uint64) string {
		if !set {
			return "-"
		}
		return fmt.Sprint(v)
	}
	switch f {
	case "conn_state":
		return string(c.ConnState)
	case "history":
		if !c.Has(model.FieldHistory) {
			return "-"
		}
		return c.History
	case "orig_pkts":
		return u(c.Has(model.FieldOrigPkts), c.OrigPkts)
	case "resp_pkts":
		return u(c.Has(model.FieldRespPkts), c.RespPkts)
	case "orig_ip_bytes":
		return u(c.Has(model.FieldOrigIPBytes), c.OrigIPBytes)
	case "resp_ip_bytes":
		return u(c.Has(model.FieldRespIPBytes), c.RespIPBytes)
	case "orig_bytes":
		return u(c.Has(model.FieldOrigBytes), c.OrigBytes)
	case "resp_bytes":
		return u(c.Has(model.FieldRespBytes), c.RespBytes)
	case "missed_bytes":
		return u(c.Has(model.FieldMissedBytes), c.MissedBytes)
	case "duration":
		if !c.Has(model.FieldDuration) {
			return "-"
		}
		return fmt.Sprintf("%.6f", c.Duration.Seconds())
	}
	return "?"
}

// TestZeekConformance compares our records with Zeek's own conn.log for
// every trace in testdata/zeek-pairs and writes the differences by
// category to testdata/conformance-report.txt (-update regenerates it).
func TestZeekConformance(t *testing.T) {
	var rep strings.Builder
	var zeekRows, matched, tcpMatched, tcpIdentical, extraOurs int
	cats := map[string][]string{}
	for _, pr := range zeekPairs(t) {
		ours := trackFile(t, pr.pcap, pr.checksums)
		zeek := readBaseline(t, pr.log)
		byKey := map[connKey][]*model.Conn{}
		for _, c := range ours {
			byKey[keyOf(c)] = append(byKey[keyOf(c)], c)
		}
		used := map[*model.Conn]bool{}
		for _, z := range zeek {
			zeekRows++
			k := keyOf(z)
			var o *model.Conn
			for _, c := range byKey[k] {
				if !used[c] {
					o = c
					break
				}
			}
			if o == nil {
				rk := connKey{k.proto, k.resp, k.orig}
				cat := "missing in tcpsentry"
				if len(byKey[rk]) > 0 {
					cat = "direction differs"
				}
				cats[cat] = append(cats[cat], fmt.Sprintf("%s: %s %s -> %s (zeek history %s)", pr.name, zeeklog.ProtoName(z.Proto), z.Orig, z.Resp, z.History))
				continue
			}
			used[o] = true
			matched++
			same := true
			for _, f := range append(compared, "missed_bytes", "duration") {
				zv, ov := fieldValue(z, f), fieldValue(o, f)
				if zv == ov {
					continue
				}
				if f == "duration" || f == "missed_bytes" {
					cats[f] = append(cats[f], fmt.Sprintf("%s: %s %s -> %s: zeek %s, ours %s", pr.name, zeeklog.ProtoName(z.Proto), z.Orig, z.Resp, zv, ov))
					continue
				}
				same = false
				cats[f] = append(cats[f], fmt.Sprintf("%s: %s %s -> %s: zeek %s, ours %s", pr.name, zeeklog.ProtoName(z.Proto), z.Orig, z.Resp, zv, ov))
			}
			if z.Proto == model.ProtoTCP {
				tcpMatched++
				if same {
					tcpIdentical++
				}
			}
		}
		for _, c := range ours {
			if !used[c] {
				extraOurs++
				cats["extra in tcpsentry"] = append(cats["extra in tcpsentry"], fmt.Sprintf("%s: %s %s -> %s history %s", pr.name, zeeklog.ProtoName(c.Proto), c.Orig, c.Resp, c.History))
			}
		}
	}
	pct := 100 * float64(tcpIdentical) / float64(max(tcpMatched, 1))
	fmt.Fprintf(&rep, "Zeek conformance (testdata/zeek-pairs; Zeek btest baselines)\n\n")
	fmt.Fprintf(&rep, "zeek rows: %d, matched by 5-tuple and order: %d, extra tcpsentry rows: %d\n", zeekRows, matched, extraOurs)
	fmt.Fprintf(&rep, "matched TCP rows: %d, identical on %s: %d (%.1f%%)\n", tcpMatched, strings.Join(compared, ", "), tcpIdentical, pct)
	names := make([]string, 0, len(cats))
	for k := range cats {
		names = append(names, k)
	}
	sort.Strings(names)
	if len(names) == 0 {
		fmt.Fprintf(&rep, "\nno differences\n")
	}
	for _, k := range names {
		fmt.Fprintf(&rep, "\n%s (%d):\n", k, len(cats[k]))
		for _, l := range cats[k] {
			fmt.Fprintf(&rep, "  %s\n", l)
		}
	}
	t.Log("\n" + rep.String())
	golden := filepath.Join("testdata", "conformance-report.txt")
	if *update {
		if err := os.WriteFile(golden, []byte(rep.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	} else if want, err := os.ReadFile(golden); err != nil || string(want) != rep.String() {
		t.Errorf("conformance report differs from %s (run with -update after checking it)", golden)
	}
	if pct < 99 {
		t.Errorf("only %.1f%% of matched TCP rows identical, want >= 99%%", pct)
	}
	if matched != zeekRows {
		t.Errorf("%d of %d Zeek rows unmatched", zeekRows-matched, zeekRows)
	}
}

// TestZeekRSTBehavior checks the history and conn_state Zeek printed for
// four single-connection RST traces.
func TestZeekRSTBehavior(t *testing.T) {
	dir := filepath.Join("testdata", "zeek-pairs", "scripts.base.protocols.conn.conn_state-RST-behavior")
	want, err := os.ReadFile(filepath.Join(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	var got strings.Builder

	for _, f := range []string{"single-rst.pcap", "syn-then-rst.pcap", "syn-then-ack-then-rst.pcap", "syn-then-stuff-then-rst.pcap"} {
		cs := trackFile(t, filepath.Join(dir, f), false)
		if len(cs) != 1 {
			t.Fatalf("%s: %d records, want 1", f, len(cs))
		}
		fmt.Fprintf(&got, "%s, %s\n", cs[0].History, cs[0].ConnState)
	}
	var lines []string
	for _, l := range strings.Split(string(want), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l+"\n")
		}
	}
	if got.String() != strings.Join(lines, "") {
		t.Errorf("got\n%swant\n%s", got.String(), want)
	}
}

// TestFlowsRoundTrip: our records written as a Zeek TSV conn.log and as
// JSON lines, and read back by our reader, are the same records.
func TestFlowsRoundTrip(t *testing.T) {
	var all []*model.Conn
	for _, pr := range zeekPairs(t) {
		all = append(all, trackFile(t, pr.pcap, pr.checksums)...)
	}
	for _, format := range []string{"tsv", "json"} {
		var buf bytes.Buffer
		var w interface {
			Write(*model.Conn) error
			Close() error
		}
		if format == "tsv" {
			w = zeeklog.NewTSVWriter(&buf)
		} else {
			w = zeeklog.NewJSONWriter(&buf)
		}
		for _, c := range all {
			if err := w.Write(c); err != nil {
				t.Fatal(err)
			}
		}
		w.Close()
		r, err := zeeklog.NewReader(&buf, format)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; ; i++ {
			c, err := r.Next()
			if err == io.EOF {
				if i != len(all) {
					t.Errorf("%s: read %d of %d records", format, i, len(all))
				}
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", format, err)
			}
			if d := zeeklog.Diff(all[i], c); d != "" {
				t.Errorf("%s record %d: %s", format, i, d)
			}
		}
	}
}
