package zeeklog

import (
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

func logFiles(t testing.TB) []string {
	var files []string
	filepath.WalkDir(filepath.Join("testdata", "zeek-logs"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	sort.Strings(files)
	if len(files) == 0 {
		t.Fatal("no test logs")
	}
	return files
}

// TestReadLogs reads every log in testdata: records counted, every bad
// line reported with file:line, compared with testdata/read.golden.
func TestReadLogs(t *testing.T) {
	var out strings.Builder
	for _, f := range logFiles(t) {
		var n int
		var warns []string
		var first *model.Conn
		emit := func(c *model.Conn) {
			if first == nil {
				first = c
			}
			n++
		}
		warn := func(err error) { warns = append(warns, err.Error()) }
		var err error
		if strings.Contains(f, filepath.Join("zeek-logs", "zeek")) {
			// Zeek's btest canonifier masked the timestamps of its baselines.
			b, _ := os.ReadFile(f)
			b = bytes.ReplaceAll(b, []byte("XXXXXXXXXX.XXXXXX"), []byte("0.000000"))
			r, _ := NewReader(bytes.NewReader(b), f)
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
		} else {
			err = ReadFiles([]string{f}, emit, warn)
		}
		fmt.Fprintf(&out, "%s: %d records", filepath.ToSlash(strings.TrimPrefix(f, "testdata/")), n)
		if err != nil {
			fmt.Fprintf(&out, ", error: %v", err)
		}
		if first != nil {
			fmt.Fprintf(&out, "; first: %s %s %s>%s %s %s", first.TS.Format(time.RFC3339Nano), first.UID, first.Orig, first.Resp, first.ConnState, first.History)
		}
		out.WriteString("\n")
		for _, w := range warns {
			if !strings.HasPrefix(w, f+":") {
				t.Errorf("warning does not start with file:line: %s", w)
			}
			fmt.Fprintf(&out, "    %s\n", filepath.ToSlash(w))
		}
	}
	golden := filepath.Join("testdata", "read.golden")
	if *update {
		os.WriteFile(golden, []byte(out.String()), 0o644)
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != out.String() {
		t.Errorf("summary differs from %s (go test -run ReadLogs -update):\n%s", golden, out.String())
	}
}

func readAll(t *testing.T, in string) ([]*model.Conn, []error) {
	t.Helper()
	r, err := NewReader(strings.NewReader(in), "mem.log")
	if err != nil {
		t.Fatal(err)
	}
	var cs []*model.Conn
	var errs []error
	for {
		c, err := r.Next()
		if err == io.EOF {
			return cs, errs
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cs = append(cs, c)
	}
}

func TestTSVHeaders(t *testing.T) {
	in := "#separator \\x7c\n#set_separator|;\n#empty_field|EMPTY\n#unset_field|NONE\n" +
		"#fields|extra|id.resp_p|id.resp_h|id.orig_p|id.orig_h|ts|uid|proto|history|tunnel_parents|orig_bytes|service\n" +
		"x|80|10.0.0.2|1234|10.0.0.1|1.5|C1|tcp|Sh\\x7cA|a;b|NONE|EMPTY\n" +
		"x|80|10.0.0.2|1234|10.0.0.1|bad|C2|tcp|S|EMPTY|5|-\n" +
		"x|80|10.0.0.2|1234\n"
	cs, errs := readAll(t, in)
	if len(cs) != 1 || len(errs) != 2 {
		t.Fatalf("got %d records, errors %v", len(cs), errs)
	}
	c := cs[0]
	if c.Orig != netip.MustParseAddrPort("10.0.0.1:1234") || c.Resp != netip.MustParseAddrPort("10.0.0.2:80") || c.History != "Sh|A" ||
		c.TS != time.Unix(1, 5e8).UTC() || c.Has(model.FieldOrigBytes) || c.Service != "" || strings.Join(c.TunnelParents, ",") != "a,b" || c.Proto != model.ProtoTCP {
		t.Errorf("got %+v", c)
	}
	var le *LineError
	if !errors.As(errs[0], &le) || le.Line != 7 || le.Field != "ts" {
		t.Errorf("first error: %v", errs[0])
	}
	if !strings.HasPrefix(errs[1].Error(), "mem.log:8:") {
		t.Errorf("second error: %v", errs[1])
	}
}

func TestNotAConnLog(t *testing.T) {
	_, errs := readAll(t, "Lorem ipsum dolor sit amet\nconsectetur adipiscing elit\n")
	if len(errs) != 1 || !errors.Is(errs[0], ErrNotConnLog) {
		t.Errorf("got %v", errs)
	}
}

func TestJSON(t *testing.T) {
	in := `{"ts":1517422326.539915,"uid":"C1","id.orig_h":"10.0.0.1","id.orig_p":1,"id.resp_h":"fe80::1","id.resp_p":2,"proto":"icmp","duration":1.5,"orig_pkts":3,"history":"D"}` + "\n" +
		`{"ts":"2018-01-31T18:12:06.539915Z","uid":"C2","id.orig_h":"10.0.0.1","id.orig_p":99999,"id.resp_h":"10.0.0.2","id.resp_p":2,"proto":"tcp"}` + "\n" +
		`{"ts":1,"uid":"C3"` + "\n"
	cs, errs := readAll(t, in)
	if len(cs) != 1 || len(errs) != 2 {
		t.Fatalf("got %d records, errors %v", len(cs), errs)
	}
	c := cs[0]
	if c.Duration != 1500*time.Millisecond || c.OrigPkts != 3 || c.Has(model.FieldRespPkts) || c.Proto != model.ProtoICMP || c.TS.UnixMicro() != 1517422326539915 {
		t.Errorf("got %+v", c)
	}
	if !strings.Contains(errs[0].Error(), "mem.log:2: field id.orig_p") {
		t.Errorf("got %v", errs[0])
	}
}

// sample returns records exercising every field and unset state.
func sample() []*model.Conn {
	return []*model.Conn{
		{TS: time.Unix(1700000000, 123456000).UTC(), UID: "CAbc", Orig: netip.MustParseAddrPort("10.0.0.1:40000"), Resp: netip.MustParseAddrPort("10.0.0.2:80"),
			Proto: model.ProtoTCP, Service: "http", Duration: 1500 * time.Millisecond, OrigBytes: 10, RespBytes: 20, ConnState: model.ConnSF,
			LocalOrig: true, MissedBytes: 3, History: "ShADadFf", OrigPkts: 5, OrigIPBytes: 300, RespPkts: 4, RespIPBytes: 400,
			FirstFlags: model.FlagSYN, End: model.EndEOF, Unset: model.FieldLocalResp},
		{TS: time.Unix(1700000001, 0).UTC(), UID: "C-", Orig: netip.MustParseAddrPort("[fe80::1]:5353"), Resp: netip.MustParseAddrPort("[ff02::fb]:5353"),
			Proto: model.ProtoUDP, ConnState: model.ConnS0, History: "-", OrigPkts: 1, OrigIPBytes: 100, TunnelParents: []string{"Cx", "C,y"},
			Unset: model.FieldDuration | model.FieldOrigBytes | model.FieldRespBytes | model.FieldLocalOrig | model.FieldLocalResp | model.FieldFirstFlags},
		{TS: time.Unix(1700000002, 0).UTC(), UID: "C3", Orig: netip.MustParseAddrPort("1.2.3.4:8"), Resp: netip.MustParseAddrPort("5.6.7.8:0"),
			Proto: model.ProtoICMP, ConnState: model.ConnOTH, TunnelParents: []string{}, FirstFlags: 0, End: model.EndTimeout,
			Unset: model.FieldHistory | model.FieldLocalOrig | model.FieldLocalResp},
		{TS: time.Unix(1700000003, 0).UTC(), UID: "C4", Orig: netip.MustParseAddrPort("1.2.3.4:0"), Resp: netip.MustParseAddrPort("5.6.7.8:0"),
			Proto: 132, ConnState: model.ConnOTH, Unset: model.FieldHistory | model.FieldLocalOrig | model.FieldLocalResp | model.FieldFirstFlags},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, format := range []string{"tsv", "json", "tsv.gz"} {
		var buf bytes.Buffer
		var w interface {
			Write(*model.Conn) error
			Close() error
		}
		var zw *gzip.Writer
		out := io.Writer(&buf)
		if strings.HasSuffix(format, ".gz") {
			zw = gzip.NewWriter(&buf)
			out = zw
		}
		if strings.HasPrefix(format, "json") {
			w = NewJSONWriter(out)
		} else {
			w = NewTSVWriter(out)
		}
		want := sample()
		for _, c := range want {
			if err := w.Write(c); err != nil {
				t.Fatal(err)
			}
		}
		w.Close()
		if zw != nil {
			zw.Close()
		}
		r, err := NewReader(&buf, format)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; ; i++ {
			c, err := r.Next()
			if err == io.EOF {
				if i != len(want) {
					t.Errorf("%s: %d records", format, i)
				}
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", format, err)
			}
			if diff := Diff(want[i], c); diff != "" {
				t.Errorf("%s record %d: %s", format, i, diff)
			}
		}
	}
}

func FuzzConnLog(f *testing.F) {
	for _, p := range logFiles(f) {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		if len(b) > 16<<10 {
			b = b[:16<<10]
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := NewReader(bytes.NewReader(data), "fuzz")
		if err != nil {
			return
		}
		for i := 0; i < 100000; i++ {
			c, err := r.Next()
			if err == io.EOF {
				return
			}
			if err == nil {
				// What was read must be writable and read back the same.
				var buf bytes.Buffer
				w := NewTSVWriter(&buf)
				w.Write(c)
				w.Close()
				r2, _ := NewReader(&buf, "again")
				c2, err := r2.Next()
				if err != nil {
					t.Fatalf("re-read of %+v: %v\n%s", c, err, buf.String())
				}
				if d := Diff(c, c2); d != "" {
					t.Fatalf("round trip: %s\n%s", d, buf.String())
				}
			}
		}
	})
}
