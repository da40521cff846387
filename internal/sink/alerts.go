// Package sink writes alerts where a responder reads them. This file holds
// the terminal table and JSON lines used by check and analyze.
package sink

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/output"
)

// WriteJSONLines writes one alert per line in the DESIGN.md contract. An
// optional status ("new", "renotify", "unchanged") is added as "status".
func WriteJSONLines(w io.Writer, alerts []alert.Alert, status string) error {
	for _, a := range alerts {
		b, err := json.Marshal(a)
		if err != nil {
			return fmt.Errorf("alert %s: %w", a.ID, err)
		}
		if status != "" {
			b = append(b[:len(b)-1], fmt.Sprintf(",%q:%q}", "status", status)...)
		}
		b = append(b, '\n')
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// TableOptions controls the human-readable alert table.
type TableOptions struct {
	Color bool
	Width int // terminal width; 0 means unlimited
}

var severityColor = map[alert.Severity]string{
	alert.Critical: "\x1b[1;41;97m",
	alert.High:     "\x1b[1;31m",
	alert.Medium:   "\x1b[33m",
	alert.Low:      "\x1b[36m",
}

// WriteTable writes alerts as a block per alert: a headline with severity,
// detector and title, then the entity, process and evidence. Everything that
// came from a process or packet is escaped for the terminal.
func WriteTable(w io.Writer, alerts []alert.Alert, label string, opts TableOptions) error {
	for _, a := range alerts {
		sev := strings.ToUpper(a.Severity.String())
		if opts.Color {
			sev = severityColor[a.Severity] + sev + "\x1b[0m"
		}
		head := fmt.Sprintf("%-8s %s %s", sev, a.Detector, output.Sanitize(a.Title))
		if label != "" {
			head += " [" + label + "]"
		}
		if _, err := fmt.Fprintln(w, head); err != nil {
			return err
		}
		var lines []string
		if a.Src.IsValid() || a.Dst.IsValid() {
			lines = append(lines, "flow: "+flowText(a))
		}
		if p := a.Process; p != nil {
			s := fmt.Sprintf("process: %s pid %d", output.Sanitize(p.Name), p.PID)
			if p.User != "" {
				s += " user " + output.Sanitize(p.User)
			}
			if p.Exe != "" {
				s += " exe " + output.Sanitize(p.Exe)
			}
			if len(p.Cmdline) > 0 {
				s += " cmd " + output.Sanitize(strings.Join(p.Cmdline, " "))
			}
			lines = append(lines, s)
		}
		conf := fmt.Sprintf("confidence %.2f", a.Confidence)
		if len(a.Attack) > 0 {
			conf += "  ATT&CK " + strings.Join(a.Attack, ",")
		}
		conf += fmt.Sprintf("  seen %s", a.FirstSeen.UTC().Format(time.RFC3339))
		if a.Count > 1 {
			conf += fmt.Sprintf(" .. %s ×%d", a.LastSeen.UTC().Format(time.RFC3339), a.Count)
		}
		lines = append(lines, conf)
		if ev := evidenceText(a.Evidence); ev != "" {
			lines = append(lines, "evidence: "+ev)
		}
		for _, l := range lines {
			if opts.Width > 4 && len([]rune(l)) > opts.Width-4 {
				l = string([]rune(l)[:opts.Width-5]) + "…"
			}
			if _, err := fmt.Fprintln(w, "    "+l); err != nil {
				return err
			}
		}
	}
	return nil
}

func flowText(a alert.Alert) string {
	end := func(addr fmt.Stringer, valid bool, port uint16, hasPort bool) string {
		s := "*"
		if valid {
			s = addr.String()
		}
		if hasPort {
			if strings.Contains(s, ":") {
				s = "[" + s + "]"
			}
			s += fmt.Sprintf(":%d", port)
		}
		return s
	}
	proto := ""
	if a.Proto != 0 {
		proto = a.Proto.String() + " "
	}
	return proto + end(a.Src, a.Src.IsValid(), a.SrcPort, a.HasSrcPort) + " → " + end(a.Dst, a.Dst.IsValid(), a.DstPort, a.HasDstPort)
}

func evidenceText(ev map[string]any) string {
	keys := make([]string, 0, len(ev))
	for k := range ev {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%s", k, output.Sanitize(fmt.Sprint(ev[k]))))
	}
	return strings.Join(parts, " ")
}
