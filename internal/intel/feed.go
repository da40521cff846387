// Package intel answers "is this remote address known bad?" for the blocklisted-ip detector and
// later traffic detectors: threat-intel CIDR feeds (plain lists, FireHOL netsets, Spamhaus
// DROP/EDROP in text and JSON lines), an allowlist that overrides them, and a GeoIP country
// policy over a MaxMind-format database.
//
// Feeds are untrusted input: parsing never panics, a bad line yields an error naming the file,
// line and field, and the good lines around it are still used.
package intel

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Entry is one prefix listed by a feed.
type Entry struct {
	// Prefix is the listed network, masked; a bare address becomes a /32 or /128 and an
	// IPv4-mapped IPv6 prefix of length ≥ 96 is stored as the IPv4 prefix it maps.
	Prefix netip.Prefix
	// Feed is the name of the feed (or allowlist) that listed the prefix.
	Feed string
	// Ref is the feed's own reference for the entry, such as a Spamhaus SBL id; empty when the
	// feed gives none.
	Ref string
}

// Format selects the grammar of a feed file.
type Format int

const (
	// FormatAuto recognises each line on its own, so one file may mix text and JSON lines.
	FormatAuto Format = iota
	// FormatPlain is one IP or CIDR per line with '#' or ';' comments (whole-line or trailing).
	FormatPlain
	// FormatNetset is FireHOL's netset: FormatPlain with a metadata header of "# Key : value"
	// comments, which is kept in Feed.Meta.
	FormatNetset
	// FormatDROP is Spamhaus DROP/EDROP text: "1.10.16.0/20 ; SBL256894", the text after ';'
	// becoming Entry.Ref.
	FormatDROP
	// FormatDROPJSON is Spamhaus's JSON lines: {"cidr":"1.10.16.0/20","sblid":"SBL256894",...}
	// plus a {"type":"metadata",...} line.
	FormatDROPJSON
)

var formatNames = [...]string{"auto", "plain", "netset", "drop", "drop-json"}

// String returns the name ParseFormat accepts, so that configs and messages agree.
func (f Format) String() string {
	if f >= 0 && int(f) < len(formatNames) {
		return formatNames[f]
	}
	return "Format(" + strconv.Itoa(int(f)) + ")"
}

// ParseFormat maps a config value ("", "auto", "plain", "netset", "drop", "drop-json") to a
// Format.
func ParseFormat(s string) (Format, error) {
	if s == "" {
		return FormatAuto, nil
	}
	for i, n := range formatNames {
		if strings.EqualFold(s, n) {
			return Format(i), nil
		}
	}
	return FormatAuto, fmt.Errorf("unknown feed format %q (want one of %s)", s, strings.Join(formatNames[:], ", "))
}

// FeedSpec names one feed file to load.
type FeedSpec struct {
	// Path is the feed file; errors name it. Gzip-compressed files are recognised by content.
	Path string
	// Name identifies the feed in matches and alerts; empty means the file's base name.
	Name string
	// Format is the grammar; the zero value recognises it line by line.
	Format Format
}

// Feed is the parsed content of one feed.
type Feed struct {
	// Name is the feed name copied into every entry.
	Name string
	// Entries are the good lines, in file order.
	Entries []Entry
	// Meta holds header metadata ("source", "maintainer", "last-modified", Spamhaus JSON
	// "timestamp", ...) with lower-case keys, so that an alert can say how fresh a feed was.
	Meta map[string]string
}

// Limits that keep a hostile or corrupt feed from exhausting memory through its errors.
const (
	// MaxLineLen is the longest line parsed; longer ones are reported and skipped.
	MaxLineLen = 64 << 10
	// MaxErrors is how many line errors one feed reports before summarising the rest.
	MaxErrors  = 100
	maxMeta    = 64  // metadata keys kept per feed
	maxMetaLen = 256 // bytes of a metadata value
	maxShown   = 80
)

// Errors that LineError.Err holds, so callers can test the kind with errors.Is.
var (
	ErrInvalidIP        = errors.New("invalid IP")
	ErrInvalidPrefixLen = errors.New("invalid prefix length")
	ErrMissing          = errors.New("missing")
	ErrTrailingText     = errors.New("unexpected text after the address")
	ErrLineTooLong      = errors.New("line too long")
	ErrWrongFormat      = errors.New("line does not match the feed format")
)

// LineError is a bad line in a feed or allowlist: FILE:LINE: field "F": "VALUE": reason.
type LineError struct {
	File  string // the feed path (or the allowlist source)
	Line  int    // 1-based line number
	Field string // which part of the line: "cidr", "json", "line", ...
	Value string // the offending text, possibly shortened
	Err   error  // the reason, one of the Err* values or a wrapped decoder error
}

// Error renders the value with %q so that control characters from a hostile feed cannot reach a
// terminal raw.
func (e *LineError) Error() string {
	return fmt.Sprintf("%s:%d: field %q: %q: %v", e.File, e.Line, e.Field, e.Value, e.Err)
}

// Unwrap lets errors.Is see the reason.
func (e *LineError) Unwrap() error { return e.Err }

// ParseFeed parses a feed of any supported format, recognised line by line. name becomes each
// Entry's Feed and the file named in errors. It never fails as a whole: bad lines are returned
// as *LineError values and the rest is parsed.
func ParseFeed(r io.Reader, name string) (entries []Entry, errs []error) {
	f, errs := ReadFeed(r, FeedSpec{Path: name, Name: name})
	return f.Entries, errs
}

// ReadFeed parses a feed as spec describes (spec.Path is used only in errors) and keeps its
// header metadata. Gzip input is decompressed transparently.
func ReadFeed(r io.Reader, spec FeedSpec) (*Feed, []error) {
	p := parser{spec: spec, feed: &Feed{Name: spec.Name}, header: true}
	br := bufio.NewReaderSize(r, MaxLineLen)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return p.feed, []error{fmt.Errorf("%s: gzip: %w", spec.Path, err)}
		}
		defer zr.Close()
		br = bufio.NewReaderSize(zr, MaxLineLen)
	}
	p.run(br)
	p.feed.Entries = slices.Concat(append(p.chunks, p.cur)...)
	if p.dropped > 0 {
		p.errs = append(p.errs, fmt.Errorf("%s: %d more bad lines not shown", spec.Path, p.dropped))
	}
	return p.feed, p.errs
}

type parser struct {
	spec    FeedSpec
	feed    *Feed
	errs    []error
	dropped int
	line    int
	header  bool // no entry seen yet: comments may carry metadata
	// Entries are collected in chunks and joined once at the end: appending to one slice
	// would copy a million-entry feed several times over as it grows.
	chunks [][]Entry
	cur    []Entry
}

func (p *parser) fail(field, value string, err error) {
	if len(p.errs) >= MaxErrors {
		p.dropped++
		return
	}
	if len(value) > maxShown {
		value = value[:maxShown] + "…"
	}
	p.errs = append(p.errs, &LineError{File: p.spec.Path, Line: p.line, Field: field, Value: value, Err: err})
}

func (p *parser) run(br *bufio.Reader) {
	for {
		raw, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			p.line++
			p.fail("line", string(raw[:maxShown+1]), ErrLineTooLong)
			for err == bufio.ErrBufferFull {
				_, err = br.ReadSlice('\n')
			}
			if err == io.EOF {
				return
			}
			if err != nil {
				p.errs = append(p.errs, fmt.Errorf("%s: read: %w", p.spec.Path, err))
				return
			}
			continue
		}
		if len(raw) > 0 {
			p.line++
			if p.line == 1 {
				raw = bytes.TrimPrefix(raw, []byte("\xef\xbb\xbf"))
			}
			p.parseLine(bytes.TrimSpace(raw))
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			p.errs = append(p.errs, fmt.Errorf("%s: read: %w", p.spec.Path, err))
			return
		}
	}
}

func (p *parser) parseLine(line []byte) {
	if len(line) == 0 {
		return
	}
	switch line[0] {
	case '#', ';':
		if p.header {
			p.headerMeta(line[1:])
		}
		return
	case '{':
		if p.spec.Format != FormatAuto && p.spec.Format != FormatDROPJSON {
			p.fail("line", string(line), ErrWrongFormat)
			return
		}
		p.parseJSON(line)
		return
	}
	if p.spec.Format == FormatDROPJSON {
		p.fail("line", string(line), ErrWrongFormat)
		return
	}
	var ref []byte
	if i := bytes.IndexAny(line, "#;"); i >= 0 {
		if line[i] == ';' {
			ref = bytes.TrimSpace(line[i+1:])
			if j := bytes.IndexByte(ref, '#'); j >= 0 {
				ref = bytes.TrimSpace(ref[:j])
			}
		}
		line = bytes.TrimSpace(line[:i])
	}
	if bytes.ContainsAny(line, " \t") {
		p.fail("line", string(line), ErrTrailingText)
		return
	}
	p.add(line, ref)
}

// headerMeta keeps "Key : value" comments from the header, where FireHOL and Spamhaus state the
// source, maintainer and dates.
func (p *parser) headerMeta(c []byte) {
	k, v, ok := bytes.Cut(c, []byte(":"))
	if !ok || len(p.feed.Meta) >= maxMeta {
		return
	}
	if len(v) == 0 || v[0] != ' ' && v[0] != '\t' { // "hash:net", "https://..." are prose
		return
	}
	k, v = bytes.TrimSpace(k), bytes.TrimSpace(v)
	if len(k) == 0 || len(k) > 32 || len(v) == 0 {
		return
	}
	for _, ch := range k {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == ' ' || ch == '-' || ch == '_') {
			return
		}
	}
	p.setMeta(strings.ToLower(string(k)), string(v))
}

func (p *parser) setMeta(k, v string) {
	if len(v) > maxMetaLen {
		v = strings.ToValidUTF8(v[:maxMetaLen], "")
	}
	if p.feed.Meta == nil {
		p.feed.Meta = make(map[string]string)
	}
	if _, dup := p.feed.Meta[k]; !dup && len(p.feed.Meta) < maxMeta {
		p.feed.Meta[k] = v
	}
}

// dropRecord is one Spamhaus JSON line; the metadata line has Type "metadata" and other fields.
type dropRecord struct {
	Type  string `json:"type"`
	CIDR  string `json:"cidr"`
	SBLID string `json:"sblid"`
}

func (p *parser) parseJSON(line []byte) {
	var rec dropRecord
	if err := json.Unmarshal(line, &rec); err != nil {
		p.fail("json", string(line), err)
		return
	}
	if rec.Type == "metadata" {
		var m map[string]any
		if json.Unmarshal(line, &m) == nil {
			for k, v := range m {
				if s, ok := v.(string); ok && k != "type" {
					p.setMeta(strings.ToLower(k), s)
				} else if f, ok := v.(float64); ok {
					p.setMeta(strings.ToLower(k), strconv.FormatFloat(f, 'f', -1, 64))
				}
			}
		}
		return
	}
	if rec.CIDR == "" {
		p.fail("cidr", "", ErrMissing)
		return
	}
	p.add([]byte(rec.CIDR), []byte(rec.SBLID))
}

func (p *parser) add(s, ref []byte) {
	pfx, err := parsePrefix(s)
	if err != nil {
		p.fail("cidr", string(s), err)
		return
	}
	p.header = false
	e := Entry{Prefix: pfx, Feed: p.spec.Name}
	if len(ref) > 0 {
		e.Ref = string(ref)
	}
	if len(p.cur) == cap(p.cur) {
		if p.cur != nil {
			p.chunks = append(p.chunks, p.cur)
		}
		p.cur = make([]Entry, 0, min(max(2*cap(p.cur), 64), 1<<16))
	}
	p.cur = append(p.cur, e)
}

// ParsePrefix parses an address or CIDR the way feeds write them and normalises it: masked, a
// bare address made a full-length prefix, IPv4-mapped IPv6 unmapped. Unlike
// netip.ParsePrefix it tolerates host bits (feeds often write 10.1.2.3/8) and its error says
// only which part is wrong (ErrInvalidIP or ErrInvalidPrefixLen).
func ParsePrefix(s string) (netip.Prefix, error) { return parsePrefix(s) }

// parsePrefix also takes bytes, so that a feed line is parsed without first copying it to a
// string: loading a million-line feed then allocates only its entries.
func parsePrefix[T string | []byte](s T) (netip.Prefix, error) {
	as, bs := s, s[:0]
	hasLen := false
	for i := range len(s) {
		if s[i] == '/' {
			as, bs, hasLen = s[:i], s[i+1:], true
			break
		}
	}
	addr, ok := parseIPv4(as)
	if !ok {
		var err error
		if addr, err = netip.ParseAddr(string(as)); err != nil || addr.Zone() != "" {
			return netip.Prefix{}, ErrInvalidIP
		}
	}
	bits := addr.BitLen()
	if hasLen {
		if len(bs) == 0 || len(bs) > 3 || len(bs) > 1 && bs[0] == '0' {
			return netip.Prefix{}, ErrInvalidPrefixLen
		}
		n := 0
		for i := range len(bs) {
			if bs[i] < '0' || bs[i] > '9' {
				return netip.Prefix{}, ErrInvalidPrefixLen
			}
			n = n*10 + int(bs[i]-'0')
		}
		if n > bits {
			return netip.Prefix{}, ErrInvalidPrefixLen
		}
		bits = n
	}
	if addr.Is4In6() && bits >= 96 {
		addr, bits = addr.Unmap(), bits-96
	}
	return netip.PrefixFrom(addr, bits).Masked(), nil
}

// parseIPv4 is the fast path for the common dotted quad; anything it does not accept (IPv6, and
// errors, whose wording netip owns) goes to netip.ParseAddr. Like netip it rejects leading
// zeros, which some tools read as octal.
func parseIPv4[T string | []byte](s T) (netip.Addr, bool) {
	var b [4]byte
	field, n, digits := 0, 0, 0
	for i := range len(s) {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			if digits == 1 && n == 0 {
				return netip.Addr{}, false
			}
			n, digits = n*10+int(c-'0'), digits+1
			if n > 255 {
				return netip.Addr{}, false
			}
		case c == '.' && digits > 0 && field < 3:
			b[field], field, n, digits = byte(n), field+1, 0, 0
		default:
			return netip.Addr{}, false
		}
	}
	if field != 3 || digits == 0 {
		return netip.Addr{}, false
	}
	b[3] = byte(n)
	return netip.AddrFrom4(b), true
}
