// Package eval scores tcpsentry's alerts against labelled ground truth:
// per attack class, recall, precision, false positives and detection
// latency, in event time.
package eval

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Event is one labelled stretch of traffic.
type Event struct {
	ID         string
	Start, End time.Time
	Src, Dst   netip.Prefix // an address is a /32 or /128; an invalid prefix means "any"
	Label      string       // "benign" or an attack class (portscan, synflood, c2, exfil, beacon, …)
	Line       int          // line in the truth file, for messages
}

// Benign is the label of traffic that is not an attack.
const Benign = "benign"

// truthHeader is the contract of DESIGN.md.
var truthHeader = []string{"event", "start", "end", "src", "dst", "label"}

// ReadTruth parses a truth CSV with the header event,start,end,src,dst,label
// (times in epoch seconds, fractions allowed; src and dst an address, a
// CIDR, or empty for any). A bad row is reported as NAME:LINE with the
// field and skipped; the other rows are used.
func ReadTruth(r io.Reader, name string) ([]Event, []error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	cr.ReuseRecord = true
	head, err := cr.Read()
	if err != nil {
		return nil, []error{fmt.Errorf("%s:1: reading the header: %w", name, err)}
	}
	if len(head) != len(truthHeader) {
		return nil, []error{fmt.Errorf("%s:1: header %q: want %s", name, strings.Join(head, ","), strings.Join(truthHeader, ","))}
	}
	for i, h := range head {
		if strings.TrimPrefix(strings.TrimSpace(strings.ToLower(h)), "\ufeff") != truthHeader[i] {
			return nil, []error{fmt.Errorf("%s:1: header %q: want %s", name, strings.Join(head, ","), strings.Join(truthHeader, ","))}
		}
	}
	var events []Event
	var errs []error
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) { // a malformed row: report it, read on
				errs = append(errs, fmt.Errorf("%s:%d: %v", name, pe.Line, pe.Err))
				continue
			}
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			break
		}
		line, _ := cr.FieldPos(0) // valid only after a successful Read
		ev, err := parseRow(rec, line)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %w", name, line, err))
			continue
		}
		events = append(events, ev)
	}
	return events, errs
}

func parseRow(rec []string, line int) (Event, error) {
	if len(rec) != len(truthHeader) {
		return Event{}, fmt.Errorf("%d fields, want %d (%s)", len(rec), len(truthHeader), strings.Join(truthHeader, ","))
	}
	ev := Event{ID: strings.TrimSpace(rec[0]), Label: strings.ToLower(strings.TrimSpace(rec[5])), Line: line}
	var err error
	if ev.Start, err = epoch(rec[1]); err != nil {
		return ev, fmt.Errorf("field \"start\": %w", err)
	}
	if ev.End, err = epoch(rec[2]); err != nil {
		return ev, fmt.Errorf("field \"end\": %w", err)
	}
	if ev.End.Before(ev.Start) {
		return ev, fmt.Errorf("field \"end\": %s is before start %s", strings.TrimSpace(rec[2]), strings.TrimSpace(rec[1]))
	}
	if ev.Src, err = prefix(rec[3]); err != nil {
		return ev, fmt.Errorf("field \"src\": %w", err)
	}
	if ev.Dst, err = prefix(rec[4]); err != nil {
		return ev, fmt.Errorf("field \"dst\": %w", err)
	}
	if ev.Label == "" {
		return ev, fmt.Errorf("field \"label\": empty")
	}
	return ev, nil
}

func epoch(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1e11 {
		return time.Time{}, fmt.Errorf("%q is not epoch seconds", s)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(math.Round(frac*1e9))).UTC(), nil
}

func prefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "*" {
		return netip.Prefix{}, nil
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("%q is not an address or CIDR", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}
