package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestIndependentRegistriesAndExposition(t *testing.T) {
	a, b := New(), New()
	a.Alerts.WithLabelValues("scan", "critical").Add(3)
	a.SinkFailures.WithLabelValues("webhook").Inc()
	a.OutboxDepth.WithLabelValues("webhook").Set(7)
	a.Sockets.WithLabelValues("tcp", "LISTEN").Set(4)

	get := func(m *Metrics) string {
		srv := httptest.NewServer(m.Handler())
		defer srv.Close()
		resp, err := srv.Client().Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(body)
	}
	out := get(a)
	for _, want := range []string{
		`tcpsentry_alerts_total{detector="scan",severity="critical"} 3`,
		`tcpsentry_sink_failures_total{sink="webhook"} 1`,
		`tcpsentry_outbox_depth{sink="webhook"} 7`,
		`tcpsentry_sockets{proto="tcp",state="LISTEN"} 4`,
		`tcpsentry_kernel_drops_total 0`,
		`go_goroutines`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	if other := get(b); strings.Contains(other, `detector="scan"`) {
		t.Errorf("second registry sees the first one's samples:\n%s", other)
	}
}
