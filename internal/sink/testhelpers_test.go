package sink

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/leodido/go-syslog/v4/rfc5424"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// testAlert is a realistic alert with every field the sinks render.
func testAlert(id string) alert.Alert {
	t0 := time.Date(2026, 11, 23, 2, 0, 0, 123456000, time.UTC)
	return alert.Alert{
		ID: id, Detector: "scan", Entity: "scan 10.0.0.66 " + id, Title: `vertical SYN scan of 10.0.0.5 "x"]`,
		Severity: alert.Critical, Confidence: 0.98, Attack: []string{"T1046"},
		Src: netip.MustParseAddr("10.0.0.66"), Dst: netip.MustParseAddr("10.0.0.5"), Proto: model.ProtoTCP,
		Evidence:  map[string]any{"probe": "syn", "ports": float64(1000)},
		FirstSeen: t0, LastSeen: t0.Add(time.Second), Count: 1000, Source: "pcap:lab.pcap",
	}
}

// parseStrict parses one RFC 5424 message with go-syslog's strict
// (not best-effort) machine and fails the test on any deviation.
func parseStrict(t testing.TB, msg []byte) *rfc5424.SyslogMessage {
	t.Helper()
	m, err := rfc5424.NewParser().Parse(msg)
	if err != nil {
		t.Fatalf("not RFC 5424: %v\n%q", err, msg)
	}
	sm := m.(*rfc5424.SyslogMessage)
	if !sm.Valid() {
		t.Fatalf("invalid RFC 5424 message %q", msg)
	}
	return sm
}

// readOctetCounted reads one RFC 6587 octet-counted frame: MSG-LEN is a
// non-zero digit followed by digits, then one space, then exactly that many
// octets.
func readOctetCounted(r *bufio.Reader) ([]byte, error) {
	var n int
	for i := 0; ; i++ {
		c, err := r.ReadByte()
		if err != nil {
			return nil, err
		}
		if c == ' ' && i > 0 {
			break
		}
		if c < '0' || c > '9' || (i == 0 && c == '0') || i > 9 {
			return nil, framingError{fmt.Errorf("octet counting: bad MSG-LEN byte %q at %d", c, i)}
		}
		n = n*10 + int(c-'0')
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, framingError{fmt.Errorf("octet counting: frame of %d: %w", n, err)}
	}
	return buf, nil
}

// framingError is a violation of RFC 6587 octet counting.
type framingError struct{ error }

// streamServer accepts connections on ln and sends every octet-counted
// frame it reads to got; a framing error fails the test. stop closes the
// listener and every accepted connection, like a server that goes down.
func streamServer(t *testing.T, ln net.Listener, got chan<- []byte) (stop func()) {
	t.Helper()
	errs := make(chan error, 1)
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					msg, err := readOctetCounted(r)
					if err != nil {
						var fe framingError
						if errors.As(err, &fe) {
							select {
							case errs <- err:
							default:
							}
						}
						return
					}
					got <- msg
				}
			}()
		}
	}()
	stop = func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}
	t.Cleanup(func() {
		stop()
		select {
		case err := <-errs:
			t.Errorf("syslog server: %v", err)
		default:
		}
	})
	return stop
}

// testCA makes a CA and a server certificate for 127.0.0.1 and localhost,
// writes the CA to a PEM file and returns it with the server's TLS config.
func testCA(t *testing.T) (caFile string, server *tls.Config) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tcpsentry test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return caFile, &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// recv waits for one message; the bound only guards against a hang.
func recv(t *testing.T, ch <-chan []byte) []byte {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no syslog message arrived")
		return nil
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
