package sink

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
)

// SignatureHeader carries "sha256=" and the hex HMAC-SHA256 of the body
// under the configured secret; a receiver recomputes it over the raw body.
const SignatureHeader = "X-Tcpsentry-Signature"

// AlertIDHeader repeats the alert's stable id, for receivers that dedupe
// before parsing the body (delivery is at least once).
const AlertIDHeader = "X-Tcpsentry-Alert-Id"

// WebhookOptions configures a Webhook sink.
type WebhookOptions struct {
	URL     string
	Secret  []byte            // HMAC key; nil sends no signature
	Headers map[string]string // added to every request
	CAFile  string            // PEM bundle for https; empty means the system roots
	Timeout time.Duration     // one request
	Retries int               // further attempts within one Send
	// Backoff is the first wait between attempts; it doubles up to
	// MaxBackoff, each wait drawn at random from its upper half (jitter).
	Backoff, MaxBackoff time.Duration
}

// Webhook POSTs the alert JSON. A 2xx answer is an acknowledgement; 429,
// 5xx and network errors are retried within Send, other answers are not
// (the outbox keeps the alert and the dispatcher tries again later).
type Webhook struct {
	opts   WebhookOptions
	client *http.Client
}

// NewWebhook builds the HTTP client; it does not connect.
func NewWebhook(opts WebhookOptions) (*Webhook, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Backoff <= 0 {
		opts.Backoff = 500 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 10 * time.Second
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // alerts go where configured, not through an environment proxy
	if opts.CAFile != "" {
		pool, err := loadCA(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("webhook: %w", err)
		}
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	}
	return &Webhook{opts: opts, client: &http.Client{
		Transport: tr,
		Timeout:   opts.Timeout,
		// A redirect could carry the signed body somewhere unexpected.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}, nil
}

// Name implements Sink.
func (w *Webhook) Name() string { return "webhook" }

// Sign returns the signature header value for body under secret.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Send implements Sink.
func (w *Webhook) Send(ctx context.Context, a alert.Alert) error {
	b, err := body(a)
	if err != nil {
		return err
	}
	wait := w.opts.Backoff
	var last error
	for attempt := 0; attempt <= w.opts.Retries; attempt++ {
		if attempt > 0 {
			// Full doubling, jittered within [wait/2, wait) so that many
			// daemons restarting together do not hit the receiver in step.
			d := wait/2 + rand.N(wait/2+1)
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("webhook %s: alert %s: %w (last error: %v)", w.opts.URL, a.ID, ctx.Err(), last)
			case <-t.C:
			}
			wait = min(wait*2, w.opts.MaxBackoff)
		}
		retry, err := w.post(ctx, a.ID, b)
		if err == nil {
			return nil
		}
		last = err
		if !retry {
			break
		}
	}
	return fmt.Errorf("webhook %s: alert %s: %w", w.opts.URL, a.ID, last)
}

// post makes one request; retry says whether another attempt may succeed.
func (w *Webhook) post(ctx context.Context, id string, b []byte) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.opts.URL, bytes.NewReader(b))
	if err != nil {
		return false, err
	}
	for k, v := range w.opts.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "tcpsentry")
	req.Header.Set(AlertIDHeader, id)
	if w.opts.Secret != nil {
		req.Header.Set(SignatureHeader, Sign(w.opts.Secret, b))
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return ctx.Err() == nil, err
	}
	// Drain a little so the connection can be reused, never much.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return true, fmt.Errorf("HTTP %s", resp.Status)
	default:
		return false, fmt.Errorf("HTTP %s (not retried)", resp.Status)
	}
}

// Close implements Sink.
func (w *Webhook) Close() error {
	w.client.CloseIdleConnections()
	return nil
}
