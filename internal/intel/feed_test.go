package intel

import (
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func TestParsePrefix(t *testing.T) {
	tests := []struct {
		in   string
		want string
		err  error
	}{
		{"192.0.2.1", "192.0.2.1/32", nil},
		{"192.0.2.77/24", "192.0.2.0/24", nil},
		{"0.0.0.0/0", "0.0.0.0/0", nil},
		{"2001:db8::1", "2001:db8::1/128", nil},
		{"2001:db8:ffff::/32", "2001:db8::/32", nil},
		{"::ffff:192.0.2.1", "192.0.2.1/32", nil},
		{"::ffff:192.0.2.0/120", "192.0.2.0/24", nil},
		{"::ffff:0:0/96", "0.0.0.0/0", nil},
		{"::/80", "::/80", nil},
		{"300.1.2.3/8", "", ErrInvalidIP},
		{"fe80::1%eth0", "", ErrInvalidIP},
		{"", "", ErrInvalidIP},
		{"1.2.3.4/", "", ErrInvalidPrefixLen},
		{"1.2.3.4/33", "", ErrInvalidPrefixLen},
		{"1.2.3.4/+8", "", ErrInvalidPrefixLen},
		{"1.2.3.4/0008", "", ErrInvalidPrefixLen},
		{"::/129", "", ErrInvalidPrefixLen},
	}
	for _, tt := range tests {
		got, err := ParsePrefix(tt.in)
		if !errors.Is(err, tt.err) {
			t.Errorf("ParsePrefix(%q) error = %v, want %v", tt.in, err, tt.err)
			continue
		}
		if err == nil && got.String() != tt.want {
			t.Errorf("ParsePrefix(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestParseFeedLines(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []string // "prefix ref"
		wantErr []string
	}{
		{"plain", "1.2.3.4\n10.0.0.0/8\n", []string{"1.2.3.4/32 ", "10.0.0.0/8 "}, nil},
		{"comments and blanks", "# c\n; c\n\n  \n1.2.3.4 # trailing\n", []string{"1.2.3.4/32 "}, nil},
		{"no final newline", "1.2.3.4", []string{"1.2.3.4/32 "}, nil},
		{"drop", "1.10.16.0/20 ; SBL256894\n", []string{"1.10.16.0/20 SBL256894"}, nil},
		{"drop ref then comment", "1.10.16.0/20 ; SBL1 # x\n", []string{"1.10.16.0/20 SBL1"}, nil},
		{"json", `{"cidr":"1.10.16.0/20","sblid":"SBL256894","rir":"apnic"}`, []string{"1.10.16.0/20 SBL256894"}, nil},
		{"json metadata only", `{"type":"metadata","timestamp":1}`, nil, nil},
		{"bad ip", "300.1.2.3/8\n1.2.3.4\n", []string{"1.2.3.4/32 "},
			[]string{`f:1: field "cidr": "300.1.2.3/8": invalid IP`}},
		{"bad json cidr", `{"cidr":"1.2.3.4/99"}`, nil,
			[]string{`f:1: field "cidr": "1.2.3.4/99": invalid prefix length`}},
		{"missing cidr", "\n" + `{"sblid":"SBL1"}`, nil, []string{`f:2: field "cidr": "": missing`}},
		{"broken json", `{"cidr":`, nil, []string{`f:1: field "json": "{\"cidr\":": unexpected end of JSON input`}},
		{"trailing text", "1.2.3.4 5.6.7.8\n", nil, []string{`f:1: field "line": "1.2.3.4 5.6.7.8": unexpected text after the address`}},
		{"escapes control bytes", "\x1b[31m\n", nil, []string{`f:1: field "cidr": "\x1b[31m": invalid IP`}},
		{"bom", "\xef\xbb\xbf1.2.3.4\n", []string{"1.2.3.4/32 "}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries, errs := ParseFeed(strings.NewReader(tt.in), "f")
			var got, gotErr []string
			for _, e := range entries {
				if e.Feed != "f" {
					t.Errorf("entry feed = %q, want f", e.Feed)
				}
				got = append(got, e.Prefix.String()+" "+e.Ref)
			}
			for _, err := range errs {
				gotErr = append(gotErr, err.Error())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("entries = %q, want %q", got, tt.want)
			}
			if !slices.Equal(gotErr, tt.wantErr) {
				t.Errorf("errors = %q, want %q", gotErr, tt.wantErr)
			}
		})
	}
}

func TestReadFeedFormat(t *testing.T) {
	in := "1.2.3.4 ; SBL1\n{\"cidr\":\"5.6.7.8\"}\n"
	for _, tt := range []struct {
		format  Format
		entries int
		errs    int
	}{{FormatAuto, 2, 0}, {FormatPlain, 1, 1}, {FormatNetset, 1, 1}, {FormatDROP, 1, 1}, {FormatDROPJSON, 1, 1}} {
		f, errs := ReadFeed(strings.NewReader(in), FeedSpec{Path: "p", Name: "n", Format: tt.format})
		if len(f.Entries) != tt.entries || len(errs) != tt.errs {
			t.Errorf("%v: %d entries %d errors (%v), want %d and %d", tt.format, len(f.Entries), len(errs), errs, tt.entries, tt.errs)
		}
		for _, err := range errs {
			if !errors.Is(err, ErrWrongFormat) {
				t.Errorf("%v: error %v, want ErrWrongFormat", tt.format, err)
			}
		}
	}
}

func TestParseFormat(t *testing.T) {
	for i, n := range formatNames {
		f, err := ParseFormat(strings.ToUpper(n))
		if err != nil || f != Format(i) || f.String() != n {
			t.Errorf("ParseFormat(%q) = %v, %v", n, f, err)
		}
	}
	if f, err := ParseFormat(""); f != FormatAuto || err != nil {
		t.Errorf("ParseFormat(\"\") = %v, %v", f, err)
	}
	if _, err := ParseFormat("csv"); err == nil {
		t.Error("ParseFormat(csv) did not fail")
	}
}

func TestReadFeedLimits(t *testing.T) {
	long := strings.Repeat("9", MaxLineLen+10)
	in := "1.1.1.1\n" + long + "\n2.2.2.2\n" + long // the last long line has no newline
	entries, errs := ParseFeed(strings.NewReader(in), "f")
	if len(entries) != 2 || len(errs) != 2 {
		t.Fatalf("got %d entries, errors %v", len(entries), errs)
	}
	for i, line := range []int{2, 4} {
		var le *LineError
		if !errors.As(errs[i], &le) || le.Line != line || !errors.Is(le, ErrLineTooLong) || len(le.Value) > maxShown+4 {
			t.Errorf("error %d = %v, want line %d too long", i, errs[i], line)
		}
	}

	garbage := strings.Repeat("x\n", MaxErrors+25)
	_, errs = ParseFeed(strings.NewReader(garbage), "f")
	if len(errs) != MaxErrors+1 || !strings.Contains(errs[MaxErrors].Error(), "25 more bad lines") {
		t.Errorf("got %d errors, last %v", len(errs), errs[len(errs)-1])
	}
}

func TestReadFeedGzip(t *testing.T) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	fmt.Fprint(zw, "# gz\n192.0.2.0/24\n")
	zw.Close()
	entries, errs := ParseFeed(&buf, "gz")
	if len(errs) != 0 || len(entries) != 1 || entries[0].Prefix != netip.MustParsePrefix("192.0.2.0/24") {
		t.Errorf("entries %v errors %v", entries, errs)
	}
	_, errs = ParseFeed(strings.NewReader("\x1f\x8bnot gzip"), "bad.gz")
	if len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), "bad.gz: gzip: ") {
		t.Errorf("errors %v, want one gzip error", errs)
	}
}

// TestGolden parses each sample feed in testdata and compares entries, metadata and errors with
// its .golden file; go test -update rewrites them.
func TestGolden(t *testing.T) {
	for _, name := range []string{"firehol_level1.netset", "spamhaus_drop.txt", "spamhaus_drop_v6.json", "plain_mixed.txt"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join("testdata", name)
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			feed, errs := ReadFeed(f, FeedSpec{Path: path, Name: feedName(path)})
			var b strings.Builder
			for _, e := range feed.Entries {
				fmt.Fprintf(&b, "entry %s feed=%s ref=%q\n", e.Prefix, e.Feed, e.Ref)
			}
			keys := make([]string, 0, len(feed.Meta))
			for k := range feed.Meta {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				fmt.Fprintf(&b, "meta %s=%q\n", k, feed.Meta[k])
			}
			for _, err := range errs {
				fmt.Fprintf(&b, "error %s\n", err)
			}
			golden := path + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if b.String() != string(want) {
				t.Errorf("mismatch with %s (go test -update to accept):\n%s", golden, b.String())
			}
		})
	}
}

func FuzzParseFeed(f *testing.F) {
	for _, s := range []string{
		"1.2.3.4\n10.0.0.0/8 # c\n",
		"1.10.16.0/20 ; SBL256894\n",
		`{"cidr":"1.10.16.0/20","sblid":"SBL256894","rir":"apnic"}` + "\n" + `{"type":"metadata","timestamp":1}`,
		"# Maintainer : FireHOL\n2001:db8::/32\n::ffff:1.2.3.0/120\n",
		"300.1.2.3/8\nfe80::1%eth0\n1.2.3.4/33\n\x00\xff",
		"\x1f\x8b\x08\x00",
	} {
		f.Add([]byte(s))
	}
	paths, _ := filepath.Glob("testdata/*")
	for _, p := range paths { // the sample feeds, not their goldens or the GeoIP database
		if ext := filepath.Ext(p); ext != ".golden" && ext != ".mmdb" {
			if b, err := os.ReadFile(p); err == nil {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, errs := ParseFeed(bytes.NewReader(data), "fz")
		if len(errs) > MaxErrors+1 {
			t.Fatalf("%d errors, cap is %d", len(errs), MaxErrors+1)
		}
		for _, err := range errs {
			var le *LineError
			if errors.As(err, &le) && (le.File != "fz" || le.Line < 1 || len(le.Value) > maxShown+4) {
				t.Fatalf("bad LineError %#v", le)
			}
		}
		var text strings.Builder
		for _, e := range entries {
			p := e.Prefix
			if !p.IsValid() || p != p.Masked() || p.Addr().Zone() != "" || p.Addr().Is4In6() && p.Bits() >= 96 || e.Feed != "fz" {
				t.Fatalf("entry not normalised: %+v", e)
			}
			fmt.Fprintf(&text, "%s\n", p)
		}
		// What was parsed must read back unchanged.
		again, errs := ParseFeed(strings.NewReader(text.String()), "fz")
		if len(errs) != 0 || len(again) != len(entries) {
			t.Fatalf("reparse: %d entries %v, want %d", len(again), errs, len(entries))
		}
		for i := range again {
			if again[i].Prefix != entries[i].Prefix {
				t.Fatalf("reparse entry %d = %s, want %s", i, again[i].Prefix, entries[i].Prefix)
			}
		}
	})
}

// FuzzParsePrefix checks the hand-written fast path against netip: both accept the same
// strings, bare addresses aside, and agree on the result.
func FuzzParsePrefix(f *testing.F) {
	for _, s := range []string{"1.2.3.4", "1.2.3.4/24", "01.2.3.4", "1.2.3.256", "1.2.3.4/08", "::ffff:1.2.3.4/104", "1.2.3", "1..2.3", "2001:db8::/32"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParsePrefix(s)
		ref := s
		if !strings.Contains(s, "/") {
			if a, err := netip.ParseAddr(s); err == nil {
				ref = fmt.Sprintf("%s/%d", s, a.BitLen())
			}
		}
		want, werr := netip.ParsePrefix(ref)
		if (err == nil) != (werr == nil) {
			t.Fatalf("ParsePrefix(%q) error %v, netip says %v", s, err, werr)
		}
		if werr == nil {
			if a := want.Addr(); a.Is4In6() && want.Bits() >= 96 {
				want = netip.PrefixFrom(a.Unmap(), want.Bits()-96)
			}
			if want.Masked() != got {
				t.Fatalf("ParsePrefix(%q) = %s, netip gives %s", s, got, want.Masked())
			}
		}
	})
}
