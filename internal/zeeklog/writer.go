package zeeklog

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// tsvFields are the columns the TSV writer emits: Zeek's conn.log, then
// tcpsentry's own (which Zeek tools pass through as extra columns).
var tsvFields = [...]struct{ name, typ string }{
	{"ts", "time"}, {"uid", "string"}, {"id.orig_h", "addr"}, {"id.orig_p", "port"},
	{"id.resp_h", "addr"}, {"id.resp_p", "port"}, {"proto", "enum"}, {"service", "string"},
	{"duration", "interval"}, {"orig_bytes", "count"}, {"resp_bytes", "count"},
	{"conn_state", "string"}, {"local_orig", "bool"}, {"local_resp", "bool"},
	{"missed_bytes", "count"}, {"history", "string"}, {"orig_pkts", "count"},
	{"orig_ip_bytes", "count"}, {"resp_pkts", "count"}, {"resp_ip_bytes", "count"},
	{"tunnel_parents", "set[string]"}, {"ip_proto", "count"},
	{"first_flags", "string"}, {"syn_options", "string"}, {"end_reason", "string"},
}

// TSVWriter writes a Zeek-style TSV conn.log. Call Close to write #close.
type TSVWriter struct {
	w       *bufio.Writer
	started bool
	last    time.Time
	buf     []byte
}

// NewTSVWriter returns a writer; the header is written with the first record
// (its #open time is that record's ts, so output is reproducible).
func NewTSVWriter(w io.Writer) *TSVWriter { return &TSVWriter{w: bufio.NewWriter(w)} }

func zeekStamp(t time.Time) string { return t.UTC().Format("2006-01-02-15-04-05") }

func (tw *TSVWriter) header(open time.Time) {
	b := tw.w
	b.WriteString("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n")
	b.WriteString("#open\t" + zeekStamp(open) + "\n#fields")
	for _, f := range tsvFields {
		b.WriteString("\t" + f.name)
	}
	b.WriteString("\n#types")
	for _, f := range tsvFields {
		b.WriteString("\t" + f.typ)
	}
	b.WriteString("\n")
}

// Write writes one record.
func (tw *TSVWriter) Write(c *model.Conn) error {
	if !tw.started {
		tw.header(c.TS)
		tw.started = true
	}
	if c.TS.After(tw.last) {
		tw.last = c.TS
	}
	b := tw.buf[:0]
	b = appendTime(b, c.TS)
	b = tsvStr(b, c.UID)
	b = append(b, '\t')
	b = append(b, c.Orig.Addr().String()...)
	b = append(b, '\t')
	b = strconv.AppendUint(b, uint64(c.Orig.Port()), 10)
	b = append(b, '\t')
	b = append(b, c.Resp.Addr().String()...)
	b = append(b, '\t')
	b = strconv.AppendUint(b, uint64(c.Resp.Port()), 10)
	b = append(b, '\t')
	b = append(b, ProtoName(c.Proto)...)
	if c.Service == "" {
		b = append(b, "\t-"...)
	} else {
		b = tsvStr(b, c.Service)
	}
	b = append(b, '\t')
	if c.Has(model.FieldDuration) {
		b = appendSeconds(b, c.Duration)
	} else {
		b = append(b, '-')
	}
	b = tsvCount(b, c.OrigBytes, c.Has(model.FieldOrigBytes))
	b = tsvCount(b, c.RespBytes, c.Has(model.FieldRespBytes))
	if c.Has(model.FieldConnState) {
		b = tsvStr(b, string(c.ConnState))
	} else {
		b = append(b, "\t-"...)
	}
	b = tsvBool(b, c.LocalOrig, c.Has(model.FieldLocalOrig))
	b = tsvBool(b, c.LocalResp, c.Has(model.FieldLocalResp))
	b = tsvCount(b, c.MissedBytes, c.Has(model.FieldMissedBytes))
	if c.Has(model.FieldHistory) {
		b = tsvStr(b, c.History)
	} else {
		b = append(b, "\t-"...)
	}
	b = tsvCount(b, c.OrigPkts, c.Has(model.FieldOrigPkts))
	b = tsvCount(b, c.OrigIPBytes, c.Has(model.FieldOrigIPBytes))
	b = tsvCount(b, c.RespPkts, c.Has(model.FieldRespPkts))
	b = tsvCount(b, c.RespIPBytes, c.Has(model.FieldRespIPBytes))
	switch {
	case c.TunnelParents == nil:
		b = append(b, "\t-"...)
	case len(c.TunnelParents) == 0:
		b = append(b, "\t(empty)"...)
	default:
		b = append(b, '\t')
		for i, p := range c.TunnelParents {
			if i > 0 {
				b = append(b, ',')
			}
			b = escape(b, p, true)
		}
	}
	b = tsvCount(b, uint64(c.Proto), true)
	if c.Has(model.FieldFirstFlags) {
		b = tsvStr(b, c.FirstFlags.String())
	} else {
		b = append(b, "\t-"...)
	}
	if o := c.SYNOptions.String(); o != "" {
		b = tsvStr(b, o)
	} else {
		b = append(b, "\t-"...)
	}
	if c.End == "" {
		b = append(b, "\t-"...)
	} else {
		b = tsvStr(b, string(c.End))
	}
	b = append(b, '\n')
	tw.buf = b
	_, err := tw.w.Write(b)
	return err
}

// Close writes the #close line (if anything was written) and flushes.
func (tw *TSVWriter) Close() error {
	if tw.started {
		tw.w.WriteString("#close\t" + zeekStamp(tw.last) + "\n")
	}
	return tw.w.Flush()
}

// ProtoName is the proto column: tcp, udp, icmp, or Zeek's unknown_transport.
func ProtoName(p model.Proto) string {
	switch p {
	case model.ProtoTCP:
		return "tcp"
	case model.ProtoUDP:
		return "udp"
	case model.ProtoICMP, model.ProtoICMPv6:
		return "icmp"
	}
	return "unknown_transport"
}

func appendTime(b []byte, t time.Time) []byte {
	ns := t.UnixNano()
	sec, us := ns/1e9, (ns%1e9)/1e3
	if ns < 0 && ns%1e9 != 0 {
		sec--
		us = (1e9 + ns%1e9) / 1e3
	}
	b = strconv.AppendInt(b, sec, 10)
	b = append(b, '.')
	return append(b, fmt.Sprintf("%06d", us)...)
}

func appendSeconds(b []byte, d time.Duration) []byte {
	us := d.Microseconds()
	if us < 0 {
		b = append(b, '-')
		us = -us
	}
	b = strconv.AppendInt(b, us/1e6, 10)
	b = append(b, '.')
	return append(b, fmt.Sprintf("%06d", us%1e6)...)
}

func tsvStr(b []byte, s string) []byte {
	b = append(b, '\t')
	switch s {
	case "":
		return append(b, "(empty)"...)
	case "-":
		return append(b, `\x2d`...)
	}
	return escape(b, s, false)
}

func tsvCount(b []byte, v uint64, set bool) []byte {
	b = append(b, '\t')
	if !set {
		return append(b, '-')
	}
	return strconv.AppendUint(b, v, 10)
}

func tsvBool(b []byte, v, set bool) []byte {
	switch {
	case !set:
		return append(b, "\t-"...)
	case v:
		return append(b, "\tT"...)
	}
	return append(b, "\tF"...)
}

// escape writes s with Zeek's \xHH escapes for separators, backslashes
// and non-printable bytes.
func escape(b []byte, s string, inSet bool) []byte {
	if s == "(empty)" {
		return append(b, `\x28empty)`...)
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch < 0x20 || ch >= 0x7f || ch == '\\' || inSet && ch == ',' {
			b = append(b, fmt.Sprintf(`\x%02x`, ch)...)
			continue
		}
		b = append(b, ch)
	}
	return b
}

// JSONWriter writes Zeek JSON lines (unset fields omitted, ts in epoch
// seconds), with tcpsentry's fields after Zeek's.
type JSONWriter struct {
	w   *bufio.Writer
	buf []byte
}

// NewJSONWriter returns a JSON-lines writer; call Close to flush.
func NewJSONWriter(w io.Writer) *JSONWriter { return &JSONWriter{w: bufio.NewWriter(w)} }

// Write writes one record as one line.
func (jw *JSONWriter) Write(c *model.Conn) error {
	b := AppendJSON(jw.buf[:0], c)
	jw.buf = b
	_, err := jw.w.Write(b)
	return err
}

// AppendJSON appends c to b as one Zeek JSON line, newline included (the
// fleet's wire format for a record).
func AppendJSON(b []byte, c *model.Conn) []byte {
	b = append(b, `{"ts":`...)
	b = appendTime(b, c.TS)
	b = jsonStr(b, "uid", c.UID)
	b = jsonStr(b, "id.orig_h", c.Orig.Addr().String())
	b = append(b, `,"id.orig_p":`...)
	b = strconv.AppendUint(b, uint64(c.Orig.Port()), 10)
	b = jsonStr(b, "id.resp_h", c.Resp.Addr().String())
	b = append(b, `,"id.resp_p":`...)
	b = strconv.AppendUint(b, uint64(c.Resp.Port()), 10)
	b = jsonStr(b, "proto", ProtoName(c.Proto))
	if c.Service != "" {
		b = jsonStr(b, "service", c.Service)
	}
	if c.Has(model.FieldDuration) {
		b = append(b, `,"duration":`...)
		b = appendSeconds(b, c.Duration)
	}
	b = jsonCount(b, "orig_bytes", c.OrigBytes, c.Has(model.FieldOrigBytes))
	b = jsonCount(b, "resp_bytes", c.RespBytes, c.Has(model.FieldRespBytes))
	if c.Has(model.FieldConnState) {
		b = jsonStr(b, "conn_state", string(c.ConnState))
	}
	if c.Has(model.FieldLocalOrig) {
		b = append(b, `,"local_orig":`+strconv.FormatBool(c.LocalOrig)...)
	}
	if c.Has(model.FieldLocalResp) {
		b = append(b, `,"local_resp":`+strconv.FormatBool(c.LocalResp)...)
	}
	b = jsonCount(b, "missed_bytes", c.MissedBytes, c.Has(model.FieldMissedBytes))
	if c.Has(model.FieldHistory) {
		b = jsonStr(b, "history", c.History)
	}
	b = jsonCount(b, "orig_pkts", c.OrigPkts, c.Has(model.FieldOrigPkts))
	b = jsonCount(b, "orig_ip_bytes", c.OrigIPBytes, c.Has(model.FieldOrigIPBytes))
	b = jsonCount(b, "resp_pkts", c.RespPkts, c.Has(model.FieldRespPkts))
	b = jsonCount(b, "resp_ip_bytes", c.RespIPBytes, c.Has(model.FieldRespIPBytes))
	if c.TunnelParents != nil {
		tp, _ := json.Marshal(c.TunnelParents)
		b = append(b, `,"tunnel_parents":`...)
		b = append(b, tp...)
	}
	b = jsonCount(b, "ip_proto", uint64(c.Proto), true)
	if c.Has(model.FieldFirstFlags) {
		b = jsonStr(b, "first_flags", c.FirstFlags.String())
	}
	if o := c.SYNOptions.String(); o != "" {
		b = jsonStr(b, "syn_options", o)
	}
	if c.End != "" {
		b = jsonStr(b, "end", string(c.End))
	}
	return append(b, "}\n"...)
}

// Close flushes.
func (jw *JSONWriter) Close() error { return jw.w.Flush() }

func jsonStr(b []byte, k, v string) []byte {
	b = append(b, `,"`+k+`":`...)
	if strings.IndexFunc(v, func(r rune) bool { return r < 0x20 || r == '"' || r == '\\' || r >= 0x7f }) < 0 {
		b = append(b, '"')
		b = append(b, v...)
		return append(b, '"')
	}
	q, _ := json.Marshal(v)
	return append(b, q...)
}

func jsonCount(b []byte, k string, v uint64, set bool) []byte {
	if !set {
		return b
	}
	b = append(b, `,"`+k+`":`...)
	return strconv.AppendUint(b, v, 10)
}

// Diff compares two records as a log stores them (times to the
// microsecond) and describes the first differences; "" when equal.
func Diff(a, b *model.Conn) string {
	var d []string
	add := func(name string, x, y any) {
		if fmt.Sprint(x) != fmt.Sprint(y) {
			d = append(d, fmt.Sprintf("%s: %v != %v", name, x, y))
		}
	}
	add("ts", a.TS.UnixMicro(), b.TS.UnixMicro())
	add("uid", a.UID, b.UID)
	add("orig", a.Orig, b.Orig)
	add("resp", a.Resp, b.Resp)
	add("proto", a.Proto, b.Proto)
	add("service", a.Service, b.Service)
	add("unset", a.Unset, b.Unset)
	if a.Has(model.FieldDuration) {
		add("duration", a.Duration.Microseconds(), b.Duration.Microseconds())
	}
	add("bytes", [2]uint64{a.OrigBytes, a.RespBytes}, [2]uint64{b.OrigBytes, b.RespBytes})
	add("conn_state", a.ConnState, b.ConnState)
	add("local", [2]bool{a.LocalOrig, a.LocalResp}, [2]bool{b.LocalOrig, b.LocalResp})
	add("missed_bytes", a.MissedBytes, b.MissedBytes)
	add("history", a.History, b.History)
	add("pkts", [4]uint64{a.OrigPkts, a.OrigIPBytes, a.RespPkts, a.RespIPBytes}, [4]uint64{b.OrigPkts, b.OrigIPBytes, b.RespPkts, b.RespIPBytes})
	add("tunnel_parents", fmt.Sprintf("%q %v", a.TunnelParents, a.TunnelParents == nil), fmt.Sprintf("%q %v", b.TunnelParents, b.TunnelParents == nil))
	add("first_flags", a.FirstFlags, b.FirstFlags)
	add("syn_options", a.SYNOptions, b.SYNOptions)
	add("end", a.End, b.End)
	return strings.Join(d, "; ")
}
