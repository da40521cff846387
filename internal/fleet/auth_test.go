package fleet

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// secureServer is an in-process JetStream server that requires TLS and
// runs in operator mode: only users whose JWT is signed by an account the
// operator signed get in.
type secureServer struct {
	url    string
	caFile string // CA that signed the server certificate
	creds  string // a user of the JetStream-enabled account
	// foreignCreds is a user signed by an account the operator never
	// signed: valid creds format, not authorized.
	foreignCreds string
}

func startSecureServer(t testing.TB) *secureServer {
	t.Helper()
	dir := t.TempDir()
	ss := &secureServer{caFile: filepath.Join(dir, "ca.pem"), creds: filepath.Join(dir, "user.creds"),
		foreignCreds: filepath.Join(dir, "foreign.creds")}

	// TLS: a CA and a server certificate for 127.0.0.1 signed by it.
	caKey := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))(t)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tcpsentry test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER := must(x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey))(t)
	caCert := must(x509.ParseCertificate(caDER))(t)
	writeFile(t, ss.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	srvKey := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))(t)
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	srvDER := must(x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey))(t)
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}}}

	// Operator mode: operator -> system account, JetStream account -> user.
	opKP := must(nkeys.CreateOperator())(t)
	sysKP := must(nkeys.CreateAccount())(t)
	accKP := must(nkeys.CreateAccount())(t)
	opPub, sysPub, accPub := must(opKP.PublicKey())(t), must(sysKP.PublicKey())(t), must(accKP.PublicKey())(t)
	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "tcpsentry-test"
	oc.SystemAccount = sysPub
	oc = must(jwt.DecodeOperatorClaims(must(oc.Encode(opKP))(t)))(t)
	resolver := &server.MemAccResolver{}
	sc := jwt.NewAccountClaims(sysPub)
	sc.Name = "SYS"
	if err := resolver.Store(sysPub, must(sc.Encode(opKP))(t)); err != nil {
		t.Fatal(err)
	}
	ac := jwt.NewAccountClaims(accPub)
	ac.Name = "TCPSENTRY"
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	if err := resolver.Store(accPub, must(ac.Encode(opKP))(t)); err != nil {
		t.Fatal(err)
	}
	writeUserCreds(t, ss.creds, accKP)
	// The foreign account is signed by another operator and unknown to
	// the resolver.
	writeUserCreds(t, ss.foreignCreds, must(nkeys.CreateAccount())(t))

	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
		TLS: true, TLSConfig: tlsCfg, TLSTimeout: 2,
		TrustedOperators: []*jwt.OperatorClaims{oc}, SystemAccount: sysPub, AccountResolver: resolver,
		JetStream: true, StoreDir: filepath.Join(dir, "js")})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	ss.url = s.ClientURL()
	return ss
}

// writeUserCreds writes the .creds file of a new user signed by acc.
func writeUserCreds(t testing.TB, path string, acc nkeys.KeyPair) {
	t.Helper()
	userKP := must(nkeys.CreateUser())(t)
	uc := jwt.NewUserClaims(must(userKP.PublicKey())(t))
	uc.Name = "sentry"
	creds := must(jwt.FormatUserConfig(must(uc.Encode(acc))(t), must(userKP.Seed())(t)))(t)
	writeFile(t, path, creds)
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// must(v, err)(t) returns v, failing t on a non-nil err.
func must[V any](v V, err error) func(testing.TB) V {
	return func(t testing.TB) V {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// storedIDs returns how often each Nats-Msg-Id is stored in TCPSENTRY_CONN,
// read over js.
func storedIDs(t testing.TB, js jetstream.JetStream) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, ConnStream)
	if err != nil {
		t.Fatal(err)
	}
	total := s.CachedInfo().State.Msgs
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]int{}
	for n := uint64(0); n < total; {
		batch, err := cons.Fetch(int(min(total-n, 1000)), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			ids[m.Headers().Get(jetstream.MsgIDHeader)]++
			got++
		}
		if got == 0 {
			t.Fatalf("stream has %d messages, read %d", total, n)
		}
		n += uint64(got)
	}
	return ids
}

// TestConnectTLSAndCredentials: against a server that requires TLS and
// decentralized JWT auth, Connect with the CA and the .creds file reaches
// JetStream and a publisher stores every record; without the creds, with
// creds the operator does not trust, or without the CA the client never
// gets connected and says why; a missing creds file is refused at once.
func TestConnectTLSAndCredentials(t *testing.T) {
	ss := startSecureServer(t)
	cfg := testConfig(t, 4)

	t.Run("ca and creds", func(t *testing.T) {
		nc, err := Connect(ConnectOptions{URLs: []string{ss.url}, CredsFile: ss.creds, CAFile: ss.caFile, Name: "sentry-tls", Log: testLog(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if err := Init(ctx, js, cfg.Fleet); err != nil {
			t.Fatal(err)
		}
		if !nc.TLSRequired() {
			t.Error("connected without TLS")
		}
		spool, err := OpenSpool(t.TempDir(), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		p, err := NewConnPublisher(nc, PublisherOptions{Host: "sentry-tls", Partitions: 4, Window: 16, Spool: spool, Log: testLog(t)})
		if err != nil {
			t.Fatal(err)
		}
		recs := outageRecords(0, 100)
		in := make(chan *model.Conn, len(recs))
		for _, c := range recs {
			in <- c
		}
		close(in)
		if err := p.Run(ctx, in, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if p.Stats.Acked.Load() != 100 || p.Backlog() != 0 {
			t.Fatalf("acked %d backlog %d, want 100 and 0", p.Stats.Acked.Load(), p.Backlog())
		}
		// Read back over a second connection made the same way.
		rc, err := Connect(ConnectOptions{URLs: []string{ss.url}, CredsFile: ss.creds, CAFile: ss.caFile, Name: "reader"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(rc.Close)
		ids := storedIDs(t, must(jetstream.New(rc))(t))
		for _, c := range recs {
			if id := Encode(c, "sentry-tls", 4).Header.Get(jetstream.MsgIDHeader); ids[id] != 1 {
				t.Errorf("record %s stored %d times", c.UID, ids[id])
			}
		}
		if len(ids) != len(recs) {
			t.Errorf("stream holds %d distinct records, want %d", len(ids), len(recs))
		}
	})

	// Connect does not fail when the server turns the client away
	// (RetryOnFailedConnect): the client must never be CONNECTED, a
	// JetStream call must fail within its deadline, the client's last
	// error must name the cause, and after repeated rejections the client
	// must still be trying (not CLOSED: a sentry outlives a rejection too).
	// Each waits for two reconnect attempts (ReconnectWait + up to 1 s TLS
	// jitter each), so they run in parallel.
	t.Run("rejected", func(t *testing.T) {
		for _, tc := range []struct {
			name, creds, ca string
			want            string // in nc.LastError()
		}{
			{"no creds", "", ss.caFile, "authorization violation"},
			{"untrusted creds", ss.foreignCreds, ss.caFile, "authorization violation"},
			{"no ca", ss.creds, "", "certificate signed by unknown authority"},
			{"neither", "", "", "certificate signed by unknown authority"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				nc, err := Connect(ConnectOptions{URLs: []string{ss.url}, CredsFile: tc.creds, CAFile: tc.ca, Name: "sentry-" + tc.name})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(nc.Close)
				w := watchConn(nc, tc.want)
				js, err := jetstream.New(nc)
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(t.Context(), time.Second)
				defer cancel()
				initErr := Init(ctx, js, cfg.Fleet)
				if initErr == nil {
					t.Error("Init succeeded")
				}
				seen := w.wait(5 * time.Second)
				if seen.connected {
					t.Error("client reached CONNECTED")
				}
				if !seen.matched {
					t.Errorf("last errors %q, want one naming %q", seen.errs, tc.want)
				}
				if seen.closed {
					t.Errorf("client gave up (CLOSED) after %d reconnect attempts instead of retrying", seen.reconnects)
				} else if seen.reconnects < 2 {
					t.Errorf("%d reconnect attempts, want 2", seen.reconnects)
				}
				t.Logf("Init: %v; status %v after %d reconnect attempts; last errors %q", initErr, nc.Status(), seen.reconnects, seen.errs)
			})
		}
	})

	// Rotated credentials: the sentry starts with creds the server rejects;
	// once the file holds valid creds, the same connection gets in (the
	// client reads the file at each attempt).
	t.Run("creds replaced", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "rotating.creds")
		writeFile(t, path, must(os.ReadFile(ss.foreignCreds))(t))
		nc, err := Connect(ConnectOptions{URLs: []string{ss.url}, CredsFile: path, CAFile: ss.caFile, Name: "sentry-rotating"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		// Rejected at the first connect and at two reconnects (the client
		// used to give up at the first reconnect).
		if seen := watchConn(nc, "authorization violation").wait(5 * time.Second); !seen.matched || seen.reconnects < 2 {
			t.Fatalf("last errors %q after %d reconnect attempts (closed %v), want an authorization violation and 2 attempts",
				seen.errs, seen.reconnects, seen.closed)
		}
		writeFile(t, path, must(os.ReadFile(ss.creds))(t))
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if err := Init(ctx, js, cfg.Fleet); err != nil {
			t.Fatalf("Init after the creds were replaced: %v (status %v, last error %v)", err, nc.Status(), nc.LastError())
		}
	})

	t.Run("missing files", func(t *testing.T) {
		for _, tc := range []struct {
			creds, ca, want string
		}{
			{filepath.Join(t.TempDir(), "nope.creds"), ss.caFile, "creds_file"},
			{ss.creds, filepath.Join(t.TempDir(), "nope.pem"), "ca_file"},
		} {
			nc, err := Connect(ConnectOptions{URLs: []string{ss.url}, CredsFile: tc.creds, CAFile: tc.ca})
			if err == nil {
				nc.Close()
				t.Errorf("Connect(creds %s, ca %s) succeeded", tc.creds, tc.ca)
				continue
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Connect(creds %s, ca %s): %v, want an error naming %s", tc.creds, tc.ca, err, tc.want)
			}
		}
	})
}

// connWatch samples a connection's status, last error and reconnect
// attempts.
type connWatch struct {
	stop chan struct{}
	done chan connSeen
}

type connSeen struct {
	matched    bool // a last error contained the wanted text
	connected  bool // the status was CONNECTED at some sample
	closed     bool // the status was CLOSED (the client gave up)
	reconnects uint64
	errs       []string // distinct consecutive last errors
}

// watchConn samples nc every 5 ms until a last error containing want
// (lower case) was seen and the client made two reconnect attempts, until
// the connection is closed, or until wait's timeout ends.
func watchConn(nc *nats.Conn, want string) *connWatch {
	w := &connWatch{stop: make(chan struct{}), done: make(chan connSeen, 1)}
	go func() {
		var s connSeen
		defer func() { w.done <- s }()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			switch nc.Status() {
			case nats.CONNECTED:
				s.connected = true
			case nats.CLOSED:
				s.closed = true
			}
			s.reconnects = nc.Stats().Reconnects
			if err := nc.LastError(); err != nil {
				if e := err.Error(); len(s.errs) == 0 || s.errs[len(s.errs)-1] != e {
					s.errs = append(s.errs, e)
				}
				if strings.Contains(strings.ToLower(err.Error()), want) {
					s.matched = true
				}
			}
			if s.closed || s.matched && s.reconnects >= 2 {
				return
			}
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

// wait returns what was seen, waiting up to d.
func (w *connWatch) wait(d time.Duration) connSeen {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case s := <-w.done:
		return s
	case <-t.C:
		close(w.stop)
		return <-w.done
	}
}
