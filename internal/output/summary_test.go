package output

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

func writeSummary(t *testing.T, snap *model.Snapshot, socks []model.Socket, jsonMode bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteSummary(&buf, snap, socks, jsonMode); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestWriteSummaryGolden(t *testing.T) {
	snap := fixture()
	golden(t, "summary.txt", writeSummary(t, snap, snap.Sockets, false))
	golden(t, "summary.json", writeSummary(t, snap, snap.Sockets, true))
	golden(t, "summary-empty.txt", writeSummary(t, snap, nil, false))
	golden(t, "summary-empty.json", writeSummary(t, snap, nil, true))
}

func TestWriteSummaryJSON(t *testing.T) {
	snap := fixture()
	out := writeSummary(t, snap, snap.Sockets, true)
	checkTerminalSafe(t, "summary JSON lines", string(out))
	if bytes.Count(out, []byte("\n")) != 1 {
		t.Fatalf("summary is not one line:\n%s", out)
	}
	type count struct {
		Proto, State string
		Count        int
	}
	var got struct {
		Host      string
		Time      string
		Sockets   int
		ByProto   map[string]int `json:"by_proto"`
		ByState   []count        `json:"by_state"`
		ByProcess []struct {
			PID    int
			Name   string
			Count  int
			States []count
		} `json:"by_process"`
		Unowned struct {
			Count  int
			States []count
		}
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if got.Host != "web-1" || got.Time != "2026-11-23T02:00:00.123456789Z" || got.Sockets != 10 {
		t.Errorf("header = %q %q %d", got.Host, got.Time, got.Sockets)
	}
	if !cmp.Equal(got.ByProto, map[string]int{"tcp": 8, "udp": 2}) {
		t.Errorf("by_proto = %v", got.ByProto)
	}
	if got.ByState[0] != (count{"tcp", "ESTABLISHED", 3}) || got.ByState[1] != (count{"tcp", "LISTEN", 2}) {
		t.Errorf("by_state = %v, want ESTABLISHED 3 then LISTEN 2 first", got.ByState)
	}
	total := 0
	for _, c := range got.ByState {
		total += c.Count
	}
	if total != got.Sockets {
		t.Errorf("by_state sums to %d, want %d", total, got.Sockets)
	}
	// sshd holds the listener and one connection; nginx's worker the
	// shared listener and a CLOSE_WAIT.
	top := got.ByProcess[0]
	if top.Count != 2 || top.PID != 2002 || top.Name != "nginx" {
		t.Errorf("first process = %+v, want nginx/2002 with 2 (ties by name, then pid)", top)
	}
	if got.Unowned.Count != 2 || len(got.Unowned.States) != 2 {
		t.Errorf("unowned = %+v, want SYN_RECV and TIME_WAIT", got.Unowned)
	}
	for _, p := range got.ByProcess {
		if p.PID == 4242 && p.Name != "\x1b[31mev\nil\u202e\x7f\ufffd" {
			t.Errorf("hostile name = %q, want the raw comm", p.Name)
		}
	}
}

func TestWriteSummaryTextSafe(t *testing.T) {
	snap := fixture()
	out := string(writeSummary(t, snap, snap.Sockets, false))
	checkTerminalSafe(t, "summary lines", out)
	if !strings.Contains(out, `\x1b[31mev\nil\u202e\x7f\xc2/4242`) {
		t.Errorf("summary lacks the escaped hostile name:\n%s", out)
	}
}
