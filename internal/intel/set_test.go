package intel

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadAndCheck(t *testing.T) {
	dir := t.TempDir()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte("# compressed\n203.0.113.0/24\n"))
	zw.Close()
	gzPath := writeFile(t, dir, "extra.txt.gz", gz.String())
	allowPath := writeFile(t, dir, "ours.txt", "# our own ranges\n1.10.16.128/25\nbogus\n")
	missing := filepath.Join(dir, "missing.netset")

	cfg := Config{
		Feeds: []FeedSpec{
			{Path: "testdata/firehol_level1.netset"},
			{Path: "testdata/spamhaus_drop.txt", Name: "spamhaus-drop", Format: FormatDROP},
			{Path: "testdata/spamhaus_drop_v6.json", Name: "spamhaus-drop-v6"},
			{Path: missing},
			{Path: gzPath},
		},
		Allow:      []string{"5.188.10.179", " 2001:67c:254:1::/64 ", "10.0.0.0/40"},
		AllowFiles: []string{allowPath},
	}
	s, errs := Load(cfg)

	var msgs []string
	for _, err := range errs {
		msgs = append(msgs, err.Error())
	}
	wantErrs := []string{
		`testdata/spamhaus_drop.txt:8: field "cidr": "300.1.2.3/8": invalid IP`,
		"testdata/spamhaus_drop_v6.json:4: field \"json\"",
		"testdata/spamhaus_drop_v6.json:5: field \"cidr\": \"\": missing",
		`feed "missing": open ` + missing + ": no such file or directory",
		allowPath + `:3: field "cidr": "bogus": invalid IP`,
		`allowlist:3: field "cidr": "10.0.0.0/40": invalid prefix length`,
	}
	if len(msgs) != len(wantErrs) {
		t.Fatalf("errors:\n%s", strings.Join(msgs, "\n"))
	}
	for i, want := range wantErrs {
		if !strings.HasPrefix(msgs[i], want) {
			t.Errorf("error %d = %s, want %s…", i, msgs[i], want)
		}
	}
	if !errors.Is(errs[3], fs.ErrNotExist) {
		t.Errorf("missing file error %v does not wrap fs.ErrNotExist", errs[3])
	}

	tests := []struct {
		addr    string
		blocked bool
		allowed bool
		prefix  string
		feeds   string // "feed/ref,..." of the block match
	}{
		{"1.10.16.1", true, false, "1.10.16.0/20", "firehol_level1/,spamhaus-drop/SBL256894"},
		{"1.10.16.200", false, true, "1.10.16.0/20", "firehol_level1/,spamhaus-drop/SBL256894"},
		{"::ffff:1.19.3.4", true, false, "1.19.0.0/16", "firehol_level1/,spamhaus-drop/SBL434604"},
		{"5.188.10.179", false, true, "5.188.10.179/32", "firehol_level1/"},
		{"203.0.113.9", true, false, "203.0.113.0/24", "spamhaus-drop-v6/SBL000003,extra/"},
		{"2001:67c:254::1", true, false, "2001:67c:254::/48", "spamhaus-drop-v6/SBL587152"},
		{"2001:67c:254:1::1", false, true, "2001:67c:254::/48", "spamhaus-drop-v6/SBL587152"},
		{"8.8.8.8", false, false, "", ""},
		{"10.0.0.1", false, false, "", ""},
	}
	for _, tt := range tests {
		v := s.Check(netip.MustParseAddr(tt.addr))
		var feeds []string
		for _, e := range v.Block.Entries {
			feeds = append(feeds, e.Feed+"/"+e.Ref)
		}
		prefix := ""
		if v.Listed() {
			prefix = v.Block.Prefix.String()
		}
		if v.Blocked != tt.blocked || v.Allowed != tt.allowed || prefix != tt.prefix || strings.Join(feeds, ",") != tt.feeds {
			t.Errorf("Check(%s) = blocked %v allowed %v %s %v, want %v %v %s %s",
				tt.addr, v.Blocked, v.Allowed, prefix, feeds, tt.blocked, tt.allowed, tt.prefix, tt.feeds)
		}
	}

	infos := s.Feeds()
	if len(infos) != 7 {
		t.Fatalf("Feeds() = %+v", infos)
	}
	fh := infos[0]
	if fh.Name != "firehol_level1" || fh.Entries != 6 || fh.Errors != 0 || fh.Meta["maintainer"] != "FireHOL" {
		t.Errorf("firehol info %+v", fh)
	}
	if m := infos[3]; m.Name != "missing" || m.Errors != 1 || m.Entries != 0 {
		t.Errorf("missing info %+v", m)
	}
	if a := infos[6]; a.Name != AllowlistName || !a.Allow || a.Entries != 2 || a.Errors != 1 {
		t.Errorf("inline allowlist info %+v", a)
	}
	if b, a := s.Len(); b != 12 || a != 3 {
		t.Errorf("Len = %d, %d", b, a)
	}
}

func TestCheckDoesNotAllocate(t *testing.T) {
	s, _ := Load(Config{Feeds: []FeedSpec{{Path: "testdata/firehol_level1.netset"}}, Allow: []string{"1.19.0.0/24"}})
	addrs := []netip.Addr{netip.MustParseAddr("1.19.0.1"), netip.MustParseAddr("1.19.1.1"), netip.MustParseAddr("2001:db8::1")}
	if n := testing.AllocsPerRun(100, func() {
		for _, a := range addrs {
			s.Check(a)
		}
	}); n != 0 {
		t.Errorf("Check allocates %v times", n)
	}
}

func TestEmptySet(t *testing.T) {
	s, errs := Load(Config{})
	if v := s.Check(netip.MustParseAddr("1.2.3.4")); len(errs) != 0 || v.Blocked || v.Allowed || v.Listed() {
		t.Errorf("empty set: %v", errs)
	}
}

func TestFeedName(t *testing.T) {
	for in, want := range map[string]string{
		"/etc/x/firehol_level1.netset.gz": "firehol_level1",
		"drop_v4.json":                    "drop_v4",
		"list":                            "list",
		".hidden":                         ".hidden",
	} {
		if got := feedName(in); got != want {
			t.Errorf("feedName(%s) = %s, want %s", in, got, want)
		}
	}
}
