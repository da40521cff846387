package output

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

func writeJSON(t *testing.T, snap *model.Snapshot, socks []model.Socket, opts JSONOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteJSON(&buf, snap, socks, opts); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// parseLines decodes JSON lines with encoding/json, failing on any line
// that is not one valid object.
func parseLines(t *testing.T, out []byte) []map[string]any {
	t.Helper()
	var objs []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<24)
	for n := 1; sc.Scan(); n++ {
		var m map[string]any
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("line %d is not valid JSON: %v\n%s", n, err, sc.Text())
		}
		if dec.More() {
			t.Fatalf("line %d holds more than one value:\n%s", n, sc.Text())
		}
		objs = append(objs, m)
	}
	return objs
}

func TestWriteJSONGolden(t *testing.T) {
	snap := fixture()
	golden(t, "conns.jsonl", writeJSON(t, snap, snap.Sockets, JSONOptions{UserName: testUsers}))
	ns := nsFixture()
	golden(t, "conns-netns.jsonl", writeJSON(t, ns, ns.Sockets, JSONOptions{UserName: testUsers}))
}

// TestWriteJSONContract checks the documented field rules (docs/conns-json.md)
// through encoding/json, as a consumer sees them.
func TestWriteJSONContract(t *testing.T) {
	snap := fixture()
	objs := parseLines(t, writeJSON(t, snap, snap.Sockets, JSONOptions{UserName: testUsers}))
	if len(objs) != len(snap.Sockets) {
		t.Fatalf("%d lines for %d sockets", len(objs), len(snap.Sockets))
	}
	// Round-trip the interesting parts through a plain any tree.
	get := func(i int, path ...any) any {
		var v any = objs[i]
		for _, p := range path {
			switch k := p.(type) {
			case string:
				m, _ := v.(map[string]any)
				v = m[k]
			case int:
				a, _ := v.([]any)
				if k >= len(a) {
					return nil
				}
				v = a[k]
			}
		}
		if n, ok := v.(json.Number); ok {
			return n.String()
		}
		return v
	}
	has := func(i int, key string) bool { _, ok := objs[i][key]; return ok }

	tests := []struct {
		sock int
		path []any
		want any
	}{
		// IPv4 listener: the unspecified peer as the kernel gives it.
		{0, []any{"proto"}, "tcp"},
		{0, []any{"family"}, "ipv4"},
		{0, []any{"state"}, "LISTEN"},
		{0, []any{"local_addr"}, "0.0.0.0"},
		{0, []any{"local_port"}, "22"},
		{0, []any{"remote_addr"}, "0.0.0.0"},
		{0, []any{"remote_port"}, "0"},
		{0, []any{"send_q"}, "128"},
		{0, []any{"uid"}, "0"},
		{0, []any{"user"}, "root"},
		{0, []any{"age_max_s"}, "180000"}, // systemd (pid 1) holds it too and started 50 h ago
		{0, []any{"age_max_pid"}, "1"},
		{0, []any{"processes", 0, "pid"}, "812"},
		{0, []any{"processes", 0, "cmdline", 0}, "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"},
		{0, []any{"processes", 0, "start"}, "2026-11-21T00:30:00.123456789Z"},
		{0, []any{"processes", 1, "fds", 0}, "45"},
		{1, []any{"family"}, "ipv6"},
		{1, []any{"remote_addr"}, "::"},
		{1, []any{"processes", 1, "user"}, "www-data"},
		// Conntrack age at the snapshot's time, and TCP info.
		{2, []any{"conn_start"}, "2026-11-22T22:47:54.873456789Z"},
		{2, []any{"age_s"}, "11525.25"},
		{2, []any{"tcp", "rtt_ms"}, "12.345"},
		{2, []any{"tcp", "rttvar_ms"}, "2.5"},
		{2, []any{"tcp", "total_retrans"}, "2"},
		{2, []any{"tcp", "bytes_acked"}, "40960"},
		{2, []any{"tcp", "last_recv_ms"}, "1500"},
		// Hostile names: raw in JSON (invalid bytes as U+FFFD), still one valid line.
		{3, []any{"processes", 0, "name"}, "\x1b[31mev\nil\u202e\x7f\ufffd"},
		{3, []any{"processes", 0, "exe"}, "/tmp/\x1b[31mev\nil\u202e\x7f\u0085\ufffd"},
		{3, []any{"processes", 0, "cmdline", 0}, "\x1b]0;pwned\x07 \ufffd\ufffd"},
		{3, []any{"processes", 0, "cmdline", 3}, "\u202egnp.exe"},
		{3, []any{"processes", 0, "tty"}, "34816"},
		{3, []any{"processes", 0, "fds", 2}, "2"},
		{3, []any{"age_max_s"}, "95"},
		{3, []any{"age_max_pid"}, "4242"},
		{3, []any{"tcp", "retransmits"}, "1"},
		// IPv4-mapped addresses stay as the kernel reports them.
		{4, []any{"family"}, "ipv6"},
		{4, []any{"local_addr"}, "::ffff:10.0.0.5"},
		{4, []any{"state"}, "CLOSE_WAIT"},
		{6, []any{"state"}, "TIME_WAIT"},
		{6, []any{"age_s"}, "42"},
		{7, []any{"state"}, "UNCONN"},
		{7, []any{"processes", 0, "user"}, "\x1b]0;pwned\x07"}, // looked up: the process record had none
		{8, []any{"local_addr"}, "fe80::1%eth0"},
		{8, []any{"iface"}, "2"},
		{8, []any{"processes", 0}, map[string]any{"pid": json.Number("7777"), "fds": []any{json.Number("9")}}},
		{9, []any{"processes", 0, "name"}, "写真同期"},
	}
	for _, tt := range tests {
		if got := get(tt.sock, tt.path...); !cmp.Equal(got, tt.want) {
			t.Errorf("socket %d %v = %#v, want %#v", tt.sock, tt.path, got, tt.want)
		}
	}

	absent := []struct {
		sock int
		key  string
		why  string
	}{
		{0, "netns", "own namespace"},
		{0, "tcp", "no TCP info"},
		{0, "conn_start", "conntrack had no start"},
		{0, "age_s", "conntrack had no start"},
		{0, "iface", "not bound to an interface"},
		{2, "age_max_s", "the conntrack age is known"},
		{5, "inode", "request socket"},
		{5, "age_max_s", "no owner, so no bound"},
		{8, "user", "uid 4000 has no name in the lookup"},
		{9, "age_max_s", "the owner's start is unknown"},
	}
	for _, a := range absent {
		if has(a.sock, a.key) {
			t.Errorf("socket %d has %q, want it absent (%s)", a.sock, a.key, a.why)
		}
	}
	if got := get(5, "processes"); !cmp.Equal(got, []any{}) {
		t.Errorf("unowned socket processes = %#v, want []", got)
	}
	if get(9, "processes", 0, "start") != nil {
		t.Errorf("unknown process start written")
	}
}

func TestWriteJSONTerminalSafe(t *testing.T) {
	snap := fixture()
	out := writeJSON(t, snap, snap.Sockets, JSONOptions{UserName: testUsers})
	checkTerminalSafe(t, "JSON lines", string(out))
	if n := bytes.Count(out, []byte("\n")); n != len(snap.Sockets) {
		t.Errorf("%d newlines for %d sockets: a raw newline escaped the quoting", n, len(snap.Sockets))
	}
}

func TestWriteJSONNetns(t *testing.T) {
	snap := nsFixture()
	objs := parseLines(t, writeJSON(t, snap, snap.Sockets, JSONOptions{UserName: testUsers}))
	for i, o := range objs {
		want, _ := any(snap.Sockets[i].Netns).(string)
		got, ok := o["netns"]
		if want == "" && ok || want != "" && got != want {
			t.Errorf("socket %d netns = %v (present %v), want %q", i, got, ok, want)
		}
	}
}

func TestWriteJSONDefaultUserNames(t *testing.T) {
	snap := fixture()
	// uid 33 has no name of its own here but a process of the snapshot
	// (nginx worker) carries it; the default lookup takes it from there.
	objs := parseLines(t, writeJSON(t, snap, snap.Sockets[4:5], JSONOptions{}))
	if got := objs[0]["user"]; got != "www-data" {
		t.Errorf("user = %v, want www-data from the snapshot's processes", got)
	}
}

func TestWriteJSONNilSnapshot(t *testing.T) {
	snap := fixture()
	objs := parseLines(t, writeJSON(t, nil, snap.Sockets, JSONOptions{UserName: testUsers}))
	for i, o := range objs {
		for _, k := range []string{"age_s", "age_max_s"} {
			if _, ok := o[k]; ok {
				t.Errorf("socket %d: %s without a snapshot time", i, k)
			}
		}
	}
	if got := objs[3]["processes"]; !cmp.Equal(got, []any{map[string]any{"pid": json.Number("4242"), "fds": []any{json.Number("0"), json.Number("1"), json.Number("2")}}}) {
		t.Errorf("owner without snapshot = %#v", got)
	}
}

func TestWriteJSONClampsNegativeAge(t *testing.T) {
	snap := fixture()
	s := snap.Sockets[2]
	s.ConnStart = t0.Add(time.Second) // conntrack clock ahead of the snapshot's
	objs := parseLines(t, writeJSON(t, snap, []model.Socket{s}, JSONOptions{UserName: testUsers}))
	if got := objs[0]["age_s"]; got != json.Number("0") {
		t.Errorf("age_s = %v, want 0", got)
	}
}

func TestWriteJSONInvalidAddress(t *testing.T) {
	s := model.Socket{Proto: model.ProtoTCP, State: model.StateEstablished, Remote: netip.MustParseAddrPort("10.0.0.1:80")}
	objs := parseLines(t, writeJSON(t, nil, []model.Socket{s}, JSONOptions{UserName: testUsers}))
	for k, want := range map[string]any{"local_addr": nil, "local_port": nil, "family": "ipv4", "remote_addr": "10.0.0.1"} {
		if got, ok := objs[0][k]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, want)
		}
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }

func TestWriteJSONWriteError(t *testing.T) {
	snap := fixture()
	boom := errors.New("boom")
	if err := WriteJSON(failWriter{boom}, snap, snap.Sockets, JSONOptions{UserName: testUsers}); !errors.Is(err, boom) {
		t.Errorf("err = %v, want %v", err, boom)
	}
}

// jsonSamples are strings whose JSON encoding the tests compare with
// encoding/json's.
var jsonSamples = []string{
	"", "plain", `quote " and \ backslash`, "\x00\x01\x1f\x7f", "\n\r\t\b\f",
	hostileName, "\u2028\u2029", "\U000E0041", "\U0001F642", "写真", "\xff\xfe", "a\xe2\x80", "\xed\xa0\x80",
	"<html>&amp;",
}

func TestJSONStringDecodesLikeEncodingJSON(t *testing.T) {
	for _, s := range jsonSamples {
		checkJSONString(t, s)
	}
}

func FuzzJSONString(f *testing.F) {
	for _, s := range jsonSamples {
		f.Add(s)
	}
	f.Fuzz(checkJSONString)
}

// checkJSONString asserts that our encoding of s is valid JSON, decodes to
// what encoding/json's encoding decodes to, and is terminal-safe as bytes.
func checkJSONString(t *testing.T, s string) {
	ours := appendJSONString(nil, s)
	var got string
	if err := json.Unmarshal(ours, &got); err != nil {
		t.Fatalf("our encoding of %q is not valid JSON: %v: %s", s, err, ours)
	}
	theirs, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var want string
	if err := json.Unmarshal(theirs, &want); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("%q decodes to %q, encoding/json's to %q", s, got, want)
	}
	checkTerminalSafe(t, fmt.Sprintf("JSON of %q", s), string(ours))
	if strings.ContainsRune(string(ours), '\n') {
		t.Fatalf("raw newline in %s", ours)
	}
}
