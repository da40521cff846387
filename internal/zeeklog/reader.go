// Package zeeklog reads and writes Zeek conn.log files: Zeek's TSV format
// with its #separator/#fields/#types headers, and JSON lines. The reader
// takes any field order, extra fields, several concatenated logs, gzip and
// headerless files; a bad line is reported with file:line and skipped.
package zeeklog

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// maxLine bounds one log line; longer lines are reported and skipped.
const maxLine = 1 << 20

// LineError is a line that could not be read. Fatal errors end the file.
type LineError struct {
	File  string
	Line  int // 1-based
	Field string
	Err   error
	Fatal bool
}

func (e *LineError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err)
	}
	return fmt.Sprintf("%s:%d: field %s: %v", e.File, e.Line, e.Field, e.Err)
}

func (e *LineError) Unwrap() error { return e.Err }

// ErrNotConnLog says a file is not a Zeek conn log at all.
var ErrNotConnLog = errors.New("not a Zeek conn log")

// field identifies a conn.log column.
type field uint8

const (
	fUnknown field = iota
	fTS
	fUID
	fOrigH
	fOrigP
	fRespH
	fRespP
	fProto
	fService
	fDuration
	fOrigBytes
	fRespBytes
	fConnState
	fLocalOrig
	fLocalResp
	fMissedBytes
	fHistory
	fOrigPkts
	fOrigIPBytes
	fRespPkts
	fRespIPBytes
	fTunnelParents
	fIPProto
	fFirstFlags
	fSYNOptions
	fEnd
)

// fieldByName knows Zeek's names, the scope-separator variant (id_orig_h)
// and the common field_name_map renames (src, dst, src_port, dst_port).
func fieldByName(n string) field {
	switch strings.ReplaceAll(strings.ToLower(n), ".", "_") {
	case "ts":
		return fTS
	case "uid":
		return fUID
	case "id_orig_h", "orig_h", "src", "src_ip", "id_orig_addr":
		return fOrigH
	case "id_orig_p", "orig_p", "src_port":
		return fOrigP
	case "id_resp_h", "resp_h", "dst", "dst_ip", "id_resp_addr":
		return fRespH
	case "id_resp_p", "resp_p", "dst_port":
		return fRespP
	case "proto":
		return fProto
	case "service":
		return fService
	case "duration":
		return fDuration
	case "orig_bytes":
		return fOrigBytes
	case "resp_bytes":
		return fRespBytes
	case "conn_state":
		return fConnState
	case "local_orig":
		return fLocalOrig
	case "local_resp":
		return fLocalResp
	case "missed_bytes":
		return fMissedBytes
	case "history":
		return fHistory
	case "orig_pkts":
		return fOrigPkts
	case "orig_ip_bytes":
		return fOrigIPBytes
	case "resp_pkts":
		return fRespPkts
	case "resp_ip_bytes":
		return fRespIPBytes
	case "tunnel_parents":
		return fTunnelParents
	case "ip_proto":
		return fIPProto
	case "first_flags":
		return fFirstFlags
	case "syn_options":
		return fSYNOptions
	case "end_reason", "end":
		return fEnd
	}
	return fUnknown
}

// standardFields is the column order of a headerless conn.log: Zeek's
// default (ip_proto is the 22nd column in Zeek 6 and later).
var standardFields = [...]string{"ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto",
	"service", "duration", "orig_bytes", "resp_bytes", "conn_state", "local_orig", "local_resp",
	"missed_bytes", "history", "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes",
	"tunnel_parents", "ip_proto"}

// Reader reads conn records from one log stream.
type Reader struct {
	name    string
	br      *bufio.Reader
	closers []io.Closer
	line    int
	sep     string
	setSep  string
	empty   string
	unset   string
	fields  []field
	header  bool // a #fields header was seen
	data    int  // data lines read
	parsed  int  // data lines parsed
	buf     []byte
	cols    []string
	done    bool
}

// Open opens a log file (gzip detected from the content); "-" is stdin.
func Open(path string) (*Reader, error) {
	if path == "-" {
		return NewReader(os.Stdin, "-")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	r, err := NewReader(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	r.closers = append(r.closers, f)
	return r, nil
}

// NewReader reads a conn log from r; name is used in errors.
func NewReader(r io.Reader, name string) (*Reader, error) {
	rd := &Reader{name: name}
	br := bufio.NewReaderSize(r, 1<<16)
	if head, _ := br.Peek(2); len(head) == 2 && head[0] == 0x1f && head[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, &LineError{File: name, Line: 0, Err: fmt.Errorf("gzip: %w", err), Fatal: true}
		}
		rd.closers = append(rd.closers, zr)
		br = bufio.NewReaderSize(zr, 1<<16)
	}
	rd.br = br
	rd.resetHeader()
	return rd, nil
}

func (r *Reader) resetHeader() {
	r.sep, r.setSep, r.empty, r.unset = "\t", ",", "(empty)", "-"
	r.fields = r.fields[:0]
	for _, n := range standardFields {
		r.fields = append(r.fields, fieldByName(n))
	}
	r.header = false
}

// Close releases the file (not stdin).
func (r *Reader) Close() error {
	var first error
	for i := len(r.closers) - 1; i >= 0; i-- {
		if err := r.closers[i].Close(); err != nil && first == nil {
			first = err
		}
	}
	r.closers = nil
	return first
}

// Next returns the next record, io.EOF at the end, or a *LineError for a
// line that was skipped (call Next again) or, if Fatal, for a file that is
// not a conn log (Next then returns io.EOF).
func (r *Reader) Next() (*model.Conn, error) {
	for {
		if r.done {
			return nil, io.EOF
		}
		line, err := r.readLine()
		if err == io.EOF {
			r.done = true
			return nil, io.EOF
		}
		if err != nil {
			return nil, err
		}
		if len(line) == 0 {
			continue
		}
		if line[0] == '#' {
			if err := r.directive(line); err != nil {
				return nil, err
			}
			continue
		}
		r.data++
		var c *model.Conn
		if line[0] == '{' {
			c, err = r.parseJSON(line)
		} else {
			c, err = r.parseTSV(line)
		}
		if err != nil {
			if r.parsed == 0 && !r.header && r.data == 1 && line[0] != '{' {
				// No header and the first line is not a conn row: this is
				// not a conn log, so do not report every line of it.
				r.done = true
				cause := err
				var le *LineError
				if errors.As(err, &le) {
					cause = le.Err
				}
				return nil, &LineError{File: r.name, Line: r.line, Err: fmt.Errorf("%w: first line: %v", ErrNotConnLog, cause), Fatal: true}
			}
			return nil, err
		}
		r.parsed++
		return c, nil
	}
}

func (r *Reader) readLine() ([]byte, error) {
	r.buf = r.buf[:0]
	tooLong := false
	for {
		chunk, err := r.br.ReadSlice('\n')
		if len(r.buf)+len(chunk) > maxLine {
			tooLong = true
		} else {
			r.buf = append(r.buf, chunk...)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF && len(r.buf) == 0 && !tooLong {
			return nil, io.EOF
		}
		if err != nil && err != io.EOF {
			// A read error (e.g. a cut gzip stream) ends the file.
			r.done = true
			return nil, &LineError{File: r.name, Line: r.line + 1, Err: err, Fatal: true}
		}
		break
	}
	r.line++
	if tooLong {
		return nil, &LineError{File: r.name, Line: r.line, Err: fmt.Errorf("line longer than %d bytes", maxLine)}
	}
	return bytes.TrimRight(r.buf, "\r\n"), nil
}

func (r *Reader) directive(line []byte) error {
	s := string(line)
	key, val, _ := strings.Cut(s[1:], r.sep)
	if strings.HasPrefix(s, "#separator") {
		// "#separator \x09": the separator is not known yet, so a space separates.
		v := strings.TrimSpace(strings.TrimPrefix(s, "#separator"))
		sep := unescape(v)
		if sep == "" {
			return &LineError{File: r.name, Line: r.line, Field: "#separator", Err: errors.New("empty separator")}
		}
		r.resetHeader()
		r.sep = sep
		return nil
	}
	switch key {
	case "set_separator":
		r.setSep = unescape(val)
	case "empty_field":
		r.empty = unescape(val)
	case "unset_field":
		r.unset = unescape(val)
	case "fields":
		r.fields = r.fields[:0]
		for _, n := range strings.Split(val, r.sep) {
			r.fields = append(r.fields, fieldByName(n))
		}
		r.header = true
	}
	return nil
}

func (r *Reader) parseTSV(line []byte) (*model.Conn, error) {
	r.cols = r.cols[:0]
	rest := string(line)
	for {
		i := strings.Index(rest, r.sep)
		if i < 0 {
			r.cols = append(r.cols, rest)
			break
		}
		r.cols = append(r.cols, rest[:i])
		rest = rest[i+len(r.sep):]
	}
	if len(r.cols) != len(r.fields) {
		// A headerless log may lack the newer ip_proto column.
		if r.header || len(r.cols) != len(r.fields)-1 {
			return nil, &LineError{File: r.name, Line: r.line, Err: fmt.Errorf("%d fields, header has %d", len(r.cols), len(r.fields))}
		}
	}
	c := &model.Conn{Unset: model.FieldLocalOrig | model.FieldLocalResp | model.FieldFirstFlags}
	var ipProto int = -1
	var protoName string
	seen := uint32(0)
	for i, col := range r.cols {
		f := r.fields[i]
		if f == fUnknown {
			continue
		}
		seen |= 1 << f
		unset := col == r.unset
		var v string
		if !unset {
			if col == r.empty {
				v = ""
			} else {
				v = unescape(col)
			}
		}
		if f == fTunnelParents && !unset {
			// Split before unescaping: an element may contain an escaped separator.
			c.TunnelParents = []string{}
			if col != r.empty {
				for _, e := range strings.Split(col, r.setSep) {
					c.TunnelParents = append(c.TunnelParents, unescape(e))
				}
			}
			continue
		}
		if err := r.setField(c, f, v, unset, &ipProto, &protoName); err != nil {
			return nil, &LineError{File: r.name, Line: r.line, Field: fieldName(f), Err: err}
		}
	}
	for _, need := range [...]field{fTS, fOrigH, fOrigP, fRespH, fRespP} {
		if seen&(1<<need) == 0 {
			return nil, &LineError{File: r.name, Line: r.line, Field: fieldName(need), Err: errors.New("missing")}
		}
	}
	if err := finishProto(c, protoName, ipProto); err != nil {
		return nil, &LineError{File: r.name, Line: r.line, Field: "proto", Err: err}
	}
	return c, nil
}

// setField stores one TSV value (already unescaped; unset means "-").
func (r *Reader) setField(c *model.Conn, f field, v string, unset bool, ipProto *int, protoName *string) error {
	if unset {
		switch f {
		case fTS, fOrigH, fOrigP, fRespH, fRespP:
			return errors.New("unset")
		case fDuration:
			c.Unset |= model.FieldDuration
		case fOrigBytes:
			c.Unset |= model.FieldOrigBytes
		case fRespBytes:
			c.Unset |= model.FieldRespBytes
		case fConnState:
			c.Unset |= model.FieldConnState
		case fMissedBytes:
			c.Unset |= model.FieldMissedBytes
		case fHistory:
			c.Unset |= model.FieldHistory
		case fOrigPkts:
			c.Unset |= model.FieldOrigPkts
		case fOrigIPBytes:
			c.Unset |= model.FieldOrigIPBytes
		case fRespPkts:
			c.Unset |= model.FieldRespPkts
		case fRespIPBytes:
			c.Unset |= model.FieldRespIPBytes
		}
		return nil
	}
	var err error
	switch f {
	case fTS:
		c.TS, err = parseTime(v)
	case fUID:
		c.UID = v
	case fOrigH, fRespH:
		var a netip.Addr
		a, err = netip.ParseAddr(v)
		if f == fOrigH {
			c.Orig = netip.AddrPortFrom(a, c.Orig.Port())
		} else {
			c.Resp = netip.AddrPortFrom(a, c.Resp.Port())
		}
	case fOrigP, fRespP:
		var p uint64
		p, err = strconv.ParseUint(v, 10, 16)
		if f == fOrigP {
			c.Orig = netip.AddrPortFrom(c.Orig.Addr(), uint16(p))
		} else {
			c.Resp = netip.AddrPortFrom(c.Resp.Addr(), uint16(p))
		}
	case fProto:
		*protoName = v
	case fIPProto:
		var p uint64
		p, err = strconv.ParseUint(v, 10, 8)
		*ipProto = int(p)
	case fService:
		c.Service = v
	case fDuration:
		var d time.Duration
		d, err = parseDuration(v)
		c.Duration = d
	case fOrigBytes:
		c.OrigBytes, err = strconv.ParseUint(v, 10, 64)
	case fRespBytes:
		c.RespBytes, err = strconv.ParseUint(v, 10, 64)
	case fConnState:
		c.ConnState = model.ConnState(v)
	case fLocalOrig, fLocalResp:
		var b bool
		switch v {
		case "T":
			b = true
		case "F":
		default:
			err = fmt.Errorf("bad bool %q", v)
		}
		if f == fLocalOrig {
			c.LocalOrig, c.Unset = b, c.Unset&^model.FieldLocalOrig
		} else {
			c.LocalResp, c.Unset = b, c.Unset&^model.FieldLocalResp
		}
	case fMissedBytes:
		c.MissedBytes, err = strconv.ParseUint(v, 10, 64)
	case fHistory:
		c.History = v
	case fOrigPkts:
		c.OrigPkts, err = strconv.ParseUint(v, 10, 64)
	case fOrigIPBytes:
		c.OrigIPBytes, err = strconv.ParseUint(v, 10, 64)
	case fRespPkts:
		c.RespPkts, err = strconv.ParseUint(v, 10, 64)
	case fRespIPBytes:
		c.RespIPBytes, err = strconv.ParseUint(v, 10, 64)
	case fFirstFlags:
		var ok bool
		c.FirstFlags, ok = model.ParseTCPFlags(v)
		if !ok {
			err = fmt.Errorf("bad TCP flags %q", v)
		}
		c.Unset &^= model.FieldFirstFlags
	case fSYNOptions:
		var ok bool
		if c.SYNOptions, ok = model.ParseSYNOptions(v); !ok {
			err = fmt.Errorf("bad SYN options %q", v)
		}
	case fEnd:
		c.End = model.EndReason(v)
	}
	return err
}

func finishProto(c *model.Conn, name string, ipProto int) error {
	if ipProto >= 0 {
		c.Proto = model.Proto(ipProto)
		return nil
	}
	switch name {
	case "tcp":
		c.Proto = model.ProtoTCP
	case "udp":
		c.Proto = model.ProtoUDP
	case "icmp":
		c.Proto = model.ProtoICMP
		if c.Orig.Addr().Is6() && !c.Orig.Addr().Is4In6() {
			c.Proto = model.ProtoICMPv6
		}
	case "unknown_transport", "":
		c.Proto = 0
	default:
		if p, ok := model.ParseProto(name); ok {
			c.Proto = p
			return nil
		}
		return fmt.Errorf("unknown protocol %q", name)
	}
	return nil
}

// parseTime parses Zeek's epoch seconds ("1517336042.090842") exactly, or
// an RFC 3339 time (JSON::TS_ISO8601).
func parseTime(s string) (time.Time, error) {
	if strings.ContainsAny(s, "T:") {
		return time.Parse(time.RFC3339Nano, s)
	}
	ns, err := parseDecimalNanos(s)
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(0, ns).UTC(), nil
}

func parseDuration(s string) (time.Duration, error) {
	ns, err := parseDecimalNanos(s)
	return time.Duration(ns), err
}

// parseDecimalNanos parses "123.456789" as nanoseconds without float rounding.
func parseDecimalNanos(s string) (int64, error) {
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	ip, fp, _ := strings.Cut(s, ".")
	if ip == "" && fp == "" {
		return 0, fmt.Errorf("bad number %q", s)
	}
	var sec int64
	if ip != "" {
		v, err := strconv.ParseInt(ip, 10, 64)
		if err != nil || v > 9e9 {
			return 0, fmt.Errorf("bad number %q", s)
		}
		sec = v
	}
	var frac int64
	for i := 0; i < 9; i++ {
		frac *= 10
		if i < len(fp) {
			d := fp[i]
			if d < '0' || d > '9' {
				return 0, fmt.Errorf("bad number %q", s)
			}
			frac += int64(d - '0')
		}
	}
	for i := 9; i < len(fp); i++ {
		if fp[i] < '0' || fp[i] > '9' {
			return 0, fmt.Errorf("bad number %q", s)
		}
	}
	ns := sec*1e9 + frac
	if neg {
		ns = -ns
	}
	return ns, nil
}

// unescape decodes Zeek's \xHH escapes (and \\).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] == 'x' {
			if v, err := strconv.ParseUint(s[i+2:i+4], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		if s[i] == '\\' && i+1 < len(s) && s[i+1] == '\\' {
			b.WriteByte('\\')
			i++
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func fieldName(f field) string {
	for _, n := range standardFields {
		if fieldByName(n) == f {
			return n
		}
	}
	switch f {
	case fFirstFlags:
		return "first_flags"
	case fSYNOptions:
		return "syn_options"
	case fEnd:
		return "end_reason"
	}
	return "?"
}

// jsonConn is a Zeek JSON conn record; pointers tell absent from zero.
type jsonConn struct {
	TS            json.RawMessage `json:"ts"`
	UID           string          `json:"uid"`
	OrigH         *string         `json:"id.orig_h"`
	OrigP         *int64          `json:"id.orig_p"`
	RespH         *string         `json:"id.resp_h"`
	RespP         *int64          `json:"id.resp_p"`
	Proto         string          `json:"proto"`
	Service       string          `json:"service"`
	Duration      *float64        `json:"duration"`
	OrigBytes     *uint64         `json:"orig_bytes"`
	RespBytes     *uint64         `json:"resp_bytes"`
	ConnState     *string         `json:"conn_state"`
	LocalOrig     *bool           `json:"local_orig"`
	LocalResp     *bool           `json:"local_resp"`
	MissedBytes   *uint64         `json:"missed_bytes"`
	History       *string         `json:"history"`
	OrigPkts      *uint64         `json:"orig_pkts"`
	OrigIPBytes   *uint64         `json:"orig_ip_bytes"`
	RespPkts      *uint64         `json:"resp_pkts"`
	RespIPBytes   *uint64         `json:"resp_ip_bytes"`
	TunnelParents []string        `json:"tunnel_parents"`
	IPProto       *int            `json:"ip_proto"`
	FirstFlags    *string         `json:"first_flags"`
	SYNOptions    string          `json:"syn_options"`
	End           string          `json:"end"`
}

// ParseJSON reads one Zeek JSON conn record (what AppendJSON writes, or
// Zeek's own); name is used in errors.
func ParseJSON(line []byte, name string) (*model.Conn, error) {
	r := Reader{name: name, line: 1}
	return r.parseJSON(line)
}

func (r *Reader) parseJSON(line []byte) (*model.Conn, error) {
	var j jsonConn
	if err := json.Unmarshal(line, &j); err != nil {
		return nil, &LineError{File: r.name, Line: r.line, Err: fmt.Errorf("json: %w", err)}
	}
	bad := func(f string, err error) error { return &LineError{File: r.name, Line: r.line, Field: f, Err: err} }
	c := &model.Conn{UID: j.UID, Service: j.Service, TunnelParents: j.TunnelParents, End: model.EndReason(j.End)}
	switch {
	case len(j.TS) == 0:
		return nil, bad("ts", errors.New("missing"))
	case j.TS[0] == '"':
		var s string
		if err := json.Unmarshal(j.TS, &s); err != nil {
			return nil, bad("ts", err)
		}
		t, err := parseTime(s)
		if err != nil {
			return nil, bad("ts", err)
		}
		c.TS = t
	default:
		t, err := parseTime(string(j.TS))
		if err != nil {
			return nil, bad("ts", err)
		}
		c.TS = t
	}
	if j.OrigH == nil || j.RespH == nil || j.OrigP == nil || j.RespP == nil {
		return nil, bad("id", errors.New("missing address or port"))
	}
	oa, err := netip.ParseAddr(*j.OrigH)
	if err != nil {
		return nil, bad("id.orig_h", err)
	}
	ra, err := netip.ParseAddr(*j.RespH)
	if err != nil {
		return nil, bad("id.resp_h", err)
	}
	if *j.OrigP < 0 || *j.OrigP > 65535 {
		return nil, bad("id.orig_p", fmt.Errorf("port %d out of range", *j.OrigP))
	}
	if *j.RespP < 0 || *j.RespP > 65535 {
		return nil, bad("id.resp_p", fmt.Errorf("port %d out of range", *j.RespP))
	}
	c.Orig = netip.AddrPortFrom(oa, uint16(*j.OrigP))
	c.Resp = netip.AddrPortFrom(ra, uint16(*j.RespP))
	ipProto := -1
	if j.IPProto != nil {
		ipProto = *j.IPProto
	}
	if err := finishProto(c, j.Proto, ipProto); err != nil {
		return nil, bad("proto", err)
	}
	if j.Duration != nil {
		c.Duration = time.Duration(*j.Duration*1e6+0.5) * time.Microsecond
	} else {
		c.Unset |= model.FieldDuration
	}
	u64 := func(p *uint64, dst *uint64, f model.ConnField) {
		if p == nil {
			c.Unset |= f
			return
		}
		*dst = *p
	}
	u64(j.OrigBytes, &c.OrigBytes, model.FieldOrigBytes)
	u64(j.RespBytes, &c.RespBytes, model.FieldRespBytes)
	u64(j.MissedBytes, &c.MissedBytes, model.FieldMissedBytes)
	u64(j.OrigPkts, &c.OrigPkts, model.FieldOrigPkts)
	u64(j.OrigIPBytes, &c.OrigIPBytes, model.FieldOrigIPBytes)
	u64(j.RespPkts, &c.RespPkts, model.FieldRespPkts)
	u64(j.RespIPBytes, &c.RespIPBytes, model.FieldRespIPBytes)
	if j.ConnState != nil {
		c.ConnState = model.ConnState(*j.ConnState)
	} else {
		c.Unset |= model.FieldConnState
	}
	if j.History != nil {
		c.History = *j.History
	} else {
		c.Unset |= model.FieldHistory
	}
	if j.LocalOrig != nil {
		c.LocalOrig = *j.LocalOrig
	} else {
		c.Unset |= model.FieldLocalOrig
	}
	if j.LocalResp != nil {
		c.LocalResp = *j.LocalResp
	} else {
		c.Unset |= model.FieldLocalResp
	}
	if j.FirstFlags != nil {
		f, ok := model.ParseTCPFlags(*j.FirstFlags)
		if !ok {
			return nil, bad("first_flags", fmt.Errorf("bad TCP flags %q", *j.FirstFlags))
		}
		c.FirstFlags = f
	} else {
		c.Unset |= model.FieldFirstFlags
	}
	o, ok := model.ParseSYNOptions(j.SYNOptions)
	if !ok {
		return nil, bad("syn_options", fmt.Errorf("bad SYN options %q", j.SYNOptions))
	}
	c.SYNOptions = o
	return c, nil
}

// ReadFiles reads every log in paths in order, calling emit for each record
// and warn for each skipped line or unreadable file. It fails only if no
// file could be read.
func ReadFiles(paths []string, emit func(*model.Conn), warn func(error)) error {
	if warn == nil {
		warn = func(error) {}
	}
	var ok int
	var last error
	for _, p := range paths {
		r, err := Open(p)
		if err != nil {
			warn(err)
			last = err
			continue
		}
		ok++
		for {
			c, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				warn(err)
				continue
			}
			emit(c)
		}
		r.Close()
	}
	if ok == 0 && last != nil {
		return last
	}
	return nil
}
