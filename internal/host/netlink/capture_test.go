package netlink

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

var capture = flag.Bool("capture", false, "capture testdata/*.nl from the kernel (root)")

// TestCaptureFixtures records testdata/*.nl from the kernel: run as root
// with -capture -update after changing setupLab, and review the .golden
// diff. It is in the first test file so that it runs before the tests
// that rewrite the golden files from the fixtures.
func TestCaptureFixtures(t *testing.T) {
	if !*capture {
		t.Skip("captures kernel replies into testdata only with -capture")
	}
	ns := newConntrackNetns(t)
	if err := InNetns(ns, func() error { _, err := EnableTimestamps(); return err }); err != nil {
		t.Fatal(err)
	}
	setupLab(t, ns)
	var d *Dumper
	if err := InNetns(ns, func() (err error) { d, err = NewDumper(); return err }); err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	// The payloads are the kernel's bytes; the headers are rebuilt (seq 1,
	// port 0) since dump hands payloads on, not headers.
	record := func(c *conn, reqType, respType uint16, body []byte) []byte {
		var out []byte
		res, err := c.dump(context.Background(), d.buffer(), reqType, body, func(_ int, p []byte) error {
			out = append(out, nlMsg(respType, unix.NLM_F_MULTI, 1, 0, p)...)
			return nil
		})
		if err != nil || res.malformed != nil || res.interrupted {
			t.Fatalf("capture: %v %+v", err, res)
		}
		return out
	}
	diag := func(p model.Proto, f Family) []byte {
		var req [inetDiagReqLen]byte
		req[0], req[1] = byte(f), byte(p)
		if p == model.ProtoTCP {
			req[2] = 1 << (inetDiagInfo - 1)
		}
		ne.PutUint32(req[4:], ^uint32(0))
		return record(d.diag, unix.SOCK_DIAG_BY_FAMILY, unix.SOCK_DIAG_BY_FAMILY, req[:])
	}
	ct := func(f Family) []byte {
		return record(d.nf, unix.NFNL_SUBSYS_CTNETLINK<<8|ipctnlMsgCtGet, unix.NFNL_SUBSYS_CTNETLINK<<8, []byte{byte(f), 0, 0, 0})
	}
	for name, b := range map[string][]byte{
		"sockdiag_tcp4.nl": diag(model.ProtoTCP, IPv4),
		"sockdiag_tcp6.nl": diag(model.ProtoTCP, IPv6),
		"sockdiag_udp.nl":  append(diag(model.ProtoUDP, IPv4), diag(model.ProtoUDP, IPv6)...),
		"conntrack.nl":     append(ct(IPv4), ct(IPv6)...),
	} {
		if err := os.WriteFile(filepath.Join("testdata", name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
