package sink

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
)

// receiver is an httptest handler that checks what a webhook receiver
// relies on and records the alerts.
type receiver struct {
	t      *testing.T
	secret []byte
	mu     sync.Mutex
	got    []alert.Alert
	fail   atomic.Int32 // answer 503 this many more times
}

func (rv *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		rv.t.Errorf("reading body: %v", err)
		return
	}
	if rv.fail.Add(-1) >= 0 {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
		rv.t.Errorf("%s with Content-Type %q", r.Method, r.Header.Get("Content-Type"))
	}
	if rv.secret != nil {
		sig := r.Header.Get(SignatureHeader)
		if !hmac.Equal([]byte(sig), []byte(Sign(rv.secret, b))) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
	}
	var a alert.Alert
	if err := json.Unmarshal(b, &a); err != nil {
		rv.t.Errorf("body is not alert JSON: %v", err)
		return
	}
	if r.Header.Get(AlertIDHeader) != a.ID {
		rv.t.Errorf("%s %q, body id %q", AlertIDHeader, r.Header.Get(AlertIDHeader), a.ID)
	}
	if r.Header.Get("X-Team") != "ir" {
		rv.t.Errorf("custom header X-Team = %q", r.Header.Get("X-Team"))
	}
	rv.mu.Lock()
	rv.got = append(rv.got, a)
	rv.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
}

func (rv *receiver) alerts() []alert.Alert {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	return append([]alert.Alert(nil), rv.got...)
}

func TestSignKnownVector(t *testing.T) {
	// RFC 4231 test case 2.
	got := Sign([]byte("Jefe"), []byte("what do ya want for nothing?"))
	want := "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
	if got != want {
		t.Errorf("Sign = %s, want %s", got, want)
	}
}

func TestWebhook(t *testing.T) {
	caFile, _ := testCA(t) // only to show a CA file that does not sign the server fails
	for _, tc := range []struct {
		name     string
		tls      bool
		secret   string
		rsecret  string // receiver's secret when it differs
		fail     int32
		retries  int
		wantErr  string
		wantRecv int
	}{
		{name: "http signed", secret: "s3cret", wantRecv: 1},
		{name: "http unsigned", wantRecv: 1},
		{name: "https with CA file", tls: true, secret: "k", wantRecv: 1},
		{name: "503 twice then ok", fail: 2, retries: 3, secret: "k", wantRecv: 1},
		{name: "503 beyond retries", fail: 5, retries: 1, wantErr: "503", wantRecv: 0},
		{name: "signed with another secret", secret: "k", rsecret: "other", retries: 2, wantErr: "401", wantRecv: 0},
		{name: "receiver wants a signature", rsecret: "k", wantErr: "401", wantRecv: 0},
		{name: "wrong CA", tls: true, wantErr: "certificate", wantRecv: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rv := &receiver{t: t}
			if tc.secret != "" {
				rv.secret = []byte(tc.secret)
			}
			if tc.rsecret != "" {
				rv.secret = []byte(tc.rsecret)
			}
			rv.fail.Store(tc.fail)
			var srv *httptest.Server
			opts := WebhookOptions{Headers: map[string]string{"X-Team": "ir"}, Retries: tc.retries, Backoff: time.Millisecond, Timeout: 5 * time.Second}
			if tc.secret != "" {
				opts.Secret = []byte(tc.secret)
			}
			if tc.tls {
				srv = httptest.NewTLSServer(rv)
				ca := writeServerCA(t, srv)
				if tc.wantErr == "certificate" {
					ca = caFile
				}
				opts.CAFile = ca
			} else {
				srv = httptest.NewServer(rv)
			}
			defer srv.Close()
			opts.URL = srv.URL + "/hook"
			w, err := NewWebhook(opts)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			a := testAlert("abc")
			err = w.Send(context.Background(), a)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("Send: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Send: %v, want an error containing %q", err, tc.wantErr)
			}
			got := rv.alerts()
			if len(got) != tc.wantRecv {
				t.Fatalf("receiver got %d alerts, want %d", len(got), tc.wantRecv)
			}
			if len(got) == 1 && (got[0].ID != a.ID || got[0].Title != a.Title) {
				t.Errorf("received %+v", got[0])
			}
		})
	}
}

// writeServerCA writes the httptest TLS server's certificate as a CA file.
func writeServerCA(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	p := t.TempDir() + "/server.pem"
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWebhookTimeoutOnHangingServer(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	w, err := NewWebhook(WebhookOptions{URL: srv.URL, Timeout: 50 * time.Millisecond, Retries: 1, Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	done := make(chan error, 1)
	go func() { done <- w.Send(context.Background(), testAlert("h")) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "Timeout") {
			t.Fatalf("Send to a hanging server: %v, want a timeout", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Send to a hanging server did not time out")
	}
}

func TestWebhookNotRetriedOn4xx(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		http.Error(w, "no", http.StatusBadRequest)
	}))
	defer srv.Close()
	w, err := NewWebhook(WebhookOptions{URL: srv.URL, Retries: 3, Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Send(context.Background(), testAlert("x")); err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("Send: %v, want HTTP 400", err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d requests for a 400, want 1", n)
	}
}

func BenchmarkWebhookSend(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	defer srv.Close()
	w, err := NewWebhook(WebhookOptions{URL: srv.URL, Secret: []byte("k")})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	a := testAlert("0123456789abcdef")
	b.ReportAllocs()
	for b.Loop() {
		if err := w.Send(context.Background(), a); err != nil {
			b.Fatal(err)
		}
	}
}
