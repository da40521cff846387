package store

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/baseline"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

func open(t *testing.T) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "sub", "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mk(det, entity string, sev alert.Severity) alert.Alert {
	return alert.Alert{ID: alert.MakeID(det, entity), Detector: det, Entity: entity, Title: entity, Severity: sev, FirstSeen: time.Unix(1, 0)}
}

func ids(as []alert.Alert) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.Entity)
	}
	return out
}

func TestReconcile(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	t0 := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	ran := []string{"a", "b"}
	x, y := mk("a", "x", alert.Medium), mk("b", "y", alert.Low)
	steps := []struct {
		at                          time.Duration
		alerts                      []alert.Alert
		renotify                    time.Duration
		new, re, unchanged, cleared int
	}{
		{0, []alert.Alert{x, y}, time.Hour, 2, 0, 0, 0},
		{5 * time.Minute, []alert.Alert{x, y}, time.Hour, 0, 0, 2, 0},                 // cron: nothing re-sent
		{61 * time.Minute, []alert.Alert{x}, time.Hour, 0, 1, 0, 1},                   // x renotified, y cleared
		{66 * time.Minute, []alert.Alert{x, y}, time.Hour, 1, 0, 1, 0},                // y back: new again
		{70 * time.Minute, []alert.Alert{mk("a", "x", alert.High), y}, 0, 0, 1, 1, 0}, // severity rose
		{75 * time.Minute, []alert.Alert{mk("a", "x", alert.High), y}, 0, 0, 0, 2, 0}, // renotify 0: never again
	}
	for i, st := range steps {
		out, err := s.Reconcile(ctx, "host:h", t0.Add(st.at), ran, st.alerts, st.renotify)
		if err != nil {
			t.Fatal(err)
		}
		if len(out.New) != st.new || len(out.Renotify) != st.re || len(out.Unchanged) != st.unchanged || len(out.Cleared) != st.cleared {
			t.Errorf("step %d: new %v renotify %v unchanged %v cleared %d; want %d %d %d %d", i,
				ids(out.New), ids(out.Renotify), ids(out.Unchanged), len(out.Cleared), st.new, st.re, st.unchanged, st.cleared)
		}
	}
	// A detector that did not run clears nothing.
	out, err := s.Reconcile(ctx, "host:h", t0.Add(2*time.Hour), []string{"a"}, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Cleared) != 1 || out.Cleared[0].Detector != "a" {
		t.Errorf("cleared = %+v, want only detector a's finding", out.Cleared)
	}
}

func TestBaselineRoundTrip(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	if set, _, err := s.LoadBaseline(ctx, "host:h"); err != nil || set != nil {
		t.Fatalf("empty store: %v %v", set, err)
	}
	set := baseline.NewSet()
	snap := &model.Snapshot{Time: time.Unix(100, 0), Processes: map[int32]*model.Process{1: {PID: 1, Name: "curl", Exe: "/usr/bin/curl"}}}
	snap.Sockets = []model.Socket{{Proto: model.ProtoTCP, State: model.StateEstablished,
		Local: netip.MustParseAddrPort("10.0.0.1:4000"), Remote: netip.MustParseAddrPort("192.0.2.7:443"), Owners: []model.Owner{{PID: 1, FDs: []int32{3}}}}}
	set.Observe(snap)
	if err := s.SaveBaseline(ctx, "host:h", set, time.Unix(200, 0)); err != nil {
		t.Fatal(err)
	}
	got, at, err := s.LoadBaseline(ctx, "host:h")
	if err != nil {
		t.Fatal(err)
	}
	p, ok := got.Profile("/usr/bin/curl")
	if !ok || !p.RemotePorts["tcp/443"] || !p.RemoteNets[netip.MustParsePrefix("192.0.2.0/24")] || !at.Equal(time.Unix(200, 0)) {
		t.Errorf("loaded %+v at %v", p, at)
	}
}
