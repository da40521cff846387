// Package fleet carries tcpsentry to fleet scale over NATS JetStream:
// sentries (watch) publish their connection records and alerts to
// partitioned subjects, and analyzers (tcpsentry fleet) claim partitions
// through leases, consume them with durable consumers, and run the traffic
// detectors and the fleet-only detectors on the merged records of all
// hosts. docs/fleet.md describes the topology and the guarantees.
package fleet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Stream, bucket and subject names (docs/fleet.md).
const (
	ConnStream  = "TCPSENTRY_CONN"
	AlertStream = "TCPSENTRY_ALERT"
	LeaseBucket = "TCPSENTRY_LEASES"
	// FleetAlertSubject carries the analyzers' alerts.
	FleetAlertSubject = "tcpsentry.fleet.alert"
	connPrefix        = "tcpsentry.conn."
	alertPrefix       = "tcpsentry.alert."
	// HeaderUpdate marks a record that supersedes an earlier in-progress
	// record of the same uid (model.Conn.Update), which Zeek JSON lacks.
	HeaderUpdate = "Tcpsentry-Update"
)

// Partition maps an address to one of n partitions (FNV-1a over its
// 16-byte form, so an IPv4 address and its IPv4-mapped IPv6 form agree).
func Partition(a netip.Addr, n int) int {
	b := a.Unmap().As16()
	h := uint32(2166136261)
	for _, c := range b {
		h ^= uint32(c)
		h *= 16777619
	}
	return int(h % uint32(n))
}

// HostToken makes a host name usable as one subject token: characters
// other than letters, digits, '-' and '_' become '_' (a '.' would split the
// token, '*' and '>' are wildcards).
func HostToken(name string) string {
	if name == "" {
		return "_"
	}
	b := []byte(name)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}

// ConnSubject is tcpsentry.conn.<src partition>.<dst partition>.<host>:
// analyzers consume a source partition for the detectors keyed by source
// and a destination partition for those keyed by destination.
func ConnSubject(srcPart, dstPart int, host string) string {
	return connPrefix + strconv.Itoa(srcPart) + "." + strconv.Itoa(dstPart) + "." + host
}

// AlertSubject is tcpsentry.alert.<host>, a sentry's own alerts.
func AlertSubject(host string) string { return alertPrefix + host }

// srcFilter and dstFilter select one partition's records.
func srcFilter(p int) string { return connPrefix + strconv.Itoa(p) + ".*.*" }
func dstFilter(p int) string { return connPrefix + "*." + strconv.Itoa(p) + ".*" }

// hostOf returns the host token of a conn subject.
func hostOf(subject string) string {
	if i := strings.LastIndexByte(subject, '.'); i >= 0 {
		return subject[i+1:]
	}
	return subject
}

// ConnectOptions says how to reach the NATS servers.
type ConnectOptions struct {
	URLs      []string
	CredsFile string // NATS credentials file; "" none
	CAFile    string // CA bundle for TLS servers; "" system roots
	Name      string // client name shown by the server
	Log       *slog.Logger
}

// Connect dials the servers. It keeps reconnecting forever (a sentry
// outlives broker outages) and does not fail when no server answers yet.
func Connect(o ConnectOptions) (*nats.Conn, error) {
	if len(o.URLs) == 0 {
		return nil, errors.New("fleet: no NATS server URL (fleet.urls or --publish)")
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := []nats.Option{
		nats.Name(o.Name), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(true), nats.ReconnectBufSize(64 << 20),
		// By default the client closes the connection for good when a
		// server rejects its credentials twice in a row, and a closed
		// connection never comes back: keep trying, so that a sentry
		// recovers once its creds file is replaced (it is read at each
		// attempt) or the account is pushed to the resolver.
		nats.IgnoreAuthErrorAbort(),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("NATS reconnected", "server", nc.ConnectedUrlRedacted()) }),
		// A rejected credential or an untrusted certificate is otherwise
		// only in nc.LastError(): say so, once per distinct error and at
		// most every 30 s while it lasts.
		nats.ReconnectErrHandler(connectFailures(log)),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Warn("NATS error", "subject", subject, "err", err)
		}),
	}
	if o.CredsFile != "" {
		if _, err := os.Stat(o.CredsFile); err != nil {
			return nil, fmt.Errorf("fleet creds_file: %w", err)
		}
		opts = append(opts, nats.UserCredentials(o.CredsFile))
	}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("fleet ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("fleet ca_file %s: no PEM certificate in it", o.CAFile)
		}
		opts = append(opts, nats.Secure(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
	}
	nc, err := nats.Connect(strings.Join(o.URLs, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("fleet: connecting to %s: %w", strings.Join(o.URLs, ","), err)
	}
	return nc, nil
}

// connectFailures logs failed connection attempts without flooding: a new
// error at once, the same one again after 30 s.
func connectFailures(log *slog.Logger) nats.ConnErrHandler {
	var mu sync.Mutex
	var last string
	var at time.Time
	return func(_ *nats.Conn, err error) {
		if err == nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if msg := err.Error(); msg != last || time.Since(at) > 30*time.Second {
			last, at = msg, time.Now()
			log.Warn("NATS connection attempt failed", "err", err)
		}
	}
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
