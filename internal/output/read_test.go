package output

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// TestReadJSONRoundTrip writes the fixture snapshot and reads it back: the
// sockets, owners and process details come back as they were.
func TestReadJSONRoundTrip(t *testing.T) {
	snap := fixture()
	var buf bytes.Buffer
	if err := WriteJSON(&buf, snap, snap.Sockets, JSONOptions{}); err != nil {
		t.Fatal(err)
	}
	got, errs := ReadJSON(&buf, "fixture.jsonl")
	if len(errs) != 0 {
		t.Fatalf("errors: %v", errs)
	}
	if !got.Time.Equal(snap.Time) || got.Host != snap.Host {
		t.Errorf("time, host = %v %q; want %v %q", got.Time, got.Host, snap.Time, snap.Host)
	}
	opts := []cmp.Option{
		cmpopts.EquateApproxTime(0),
		cmpopts.EquateEmpty(),
		cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b }),
		cmpopts.IgnoreFields(model.TCPInfo{}, "RTT", "RTTVar", "LastSend", "LastRecv"),
	}
	if diff := cmp.Diff(snap.Sockets, got.Sockets, opts...); diff != "" {
		t.Errorf("sockets (-wrote +read):\n%s", diff)
	}
	for pid, want := range snap.Processes {
		p := got.Processes[pid]
		if p == nil {
			t.Errorf("process %d lost", pid)
			continue
		}
		// Invalid UTF-8 in names comes back as U+FFFD: JSON cannot carry it.
		if p.PID != want.PID || p.PPID != want.PPID || p.UID != want.UID || !p.Start.Equal(want.Start) || p.TTY != want.TTY {
			t.Errorf("process %d = %+v, want %+v", pid, p, want)
		}
	}
}

func TestReadJSONBadLines(t *testing.T) {
	in := strings.Join([]string{
		`{"proto":"tcp","state":"LISTEN","local_addr":"0.0.0.0","local_port":22,"remote_addr":"0.0.0.0","remote_port":0,"processes":[]}`,
		`{"proto":"sctp","state":"LISTEN","processes":[]}`,
		`{"proto":"tcp","state":"LISTEN","local_addr":"300.1.1.1","local_port":1,"processes":[]}`,
		`not json`,
		`{"proto":"tcp","state":"ESTABLISHED","local_port":"x"}`,
		`{"proto":"tcp","state":"BOGUS"}`,
		``,
		`{"proto":"udp","state":"UNCONN","local_addr":"::","local_port":53,"remote_addr":"::","remote_port":0,"conn_start":"yesterday","processes":[]}`,
		`{"proto":"udp","state":"UNCONN","local_addr":"::","local_port":53,"remote_addr":"::","remote_port":0,"processes":[{"pid":7,"name":"dnsd","fds":[3]}]}`,
	}, "\n")
	snap, errs := ReadJSON(strings.NewReader(in), "rec.jsonl")
	if len(snap.Sockets) != 2 || snap.Processes[7] == nil || snap.Sockets[1].Owners[0].PID != 7 {
		t.Errorf("good lines not all used: %+v", snap.Sockets)
	}
	want := []string{
		`rec.jsonl:2: field "proto"`,
		`rec.jsonl:3: field "local_addr"`,
		`rec.jsonl:4:`,
		`rec.jsonl:5: field "local_port"`,
		`rec.jsonl:6: field "state"`,
		`rec.jsonl:8: field "conn_start"`,
	}
	if len(errs) != len(want) {
		t.Fatalf("errors = %v", errs)
	}
	for i, w := range want {
		if !strings.HasPrefix(errs[i].Error(), w) {
			t.Errorf("error %d = %q, want prefix %q", i, errs[i], w)
		}
	}
}

func FuzzReadJSON(f *testing.F) {
	snap := fixture()
	var buf bytes.Buffer
	_ = WriteJSON(&buf, snap, snap.Sockets, JSONOptions{})
	for _, line := range strings.Split(buf.String(), "\n") {
		f.Add([]byte(line))
	}
	f.Add([]byte(`{"proto":"tcp","state":"LISTEN","tcp":{"rtt_ms":1e308},"processes":[{"pid":-1,"fds":null}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		snap, _ := ReadJSON(bytes.NewReader(b), "fuzz")
		var out bytes.Buffer
		if err := WriteJSON(&out, snap, snap.Sockets, JSONOptions{UserName: func(uint32) string { return "" }}); err != nil {
			t.Fatal(err)
		}
	})
}
