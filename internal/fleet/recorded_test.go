package fleet

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/flow"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// The captures in testdata/recorded are real traffic recorded by
// lab/fleet-record.sh (see testdata/recorded/NOTICE): one pcap per sentry
// host, with the fleet scenario's beacons, spread scan, lateral-movement
// chain and background. These tests check, through the flow tracker, what
// the fleet tests rely on them to contain.

var (
	recordedBeacon  = netip.MustParseAddrPort("203.0.113.7:443")
	recordedScanner = netip.MustParseAddr("198.51.100.9")
	recordedSSHHop  = recordedHop{netip.MustParseAddr("10.0.1.10"), netip.MustParseAddrPort("10.0.2.10:22")}
	recordedSMBHop  = recordedHop{netip.MustParseAddr("10.0.2.10"), netip.MustParseAddrPort("10.0.3.10:445")}
	recordedExt     = netip.MustParsePrefix("203.0.113.0/24")
)

// recordedHop is one connection of the lateral-movement chain.
type recordedHop struct {
	from netip.Addr
	to   netip.AddrPort
}

// recordedSentry says what one sentry's capture holds.
type recordedSentry struct {
	name    string
	addr    netip.Addr
	lateral []recordedHop // the chain's connections to or from this host
}

var recordedSentries = []recordedSentry{
	{"sentry-a", netip.MustParseAddr("10.0.1.10"), []recordedHop{recordedSSHHop}},
	{"sentry-b", netip.MustParseAddr("10.0.2.10"), []recordedHop{recordedSSHHop, recordedSMBHop}},
	{"sentry-c", netip.MustParseAddr("10.0.3.10"), []recordedHop{recordedSMBHop}},
}

func recordedPath(name string) string {
	return filepath.Join("testdata", "recorded", name+".pcap")
}

// readRecorded returns a capture's connections, as the flow tracker emits
// them, in start order.
func readRecorded(t *testing.T, path string) []*model.Conn {
	t.Helper()
	var conns []*model.Conn
	_, err := flow.Run(context.Background(), flow.Input{
		Paths:   []string{path},
		Options: flow.Options{Checksums: true},
		Emit:    func(c *model.Conn) { conns = append(conns, c) },
		Warn:    func(err error) { t.Errorf("%s: %v", path, err) },
	})
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	slices.SortStableFunc(conns, func(a, b *model.Conn) int { return a.TS.Compare(b.TS) })
	return conns
}

func describe(c *model.Conn) string {
	return fmt.Sprintf("%s %s -> %s %s %s", c.Proto, c.Orig, c.Resp, c.ConnState, c.History)
}

// recordedProblems checks one sentry's connections against what the
// recording script did; it returns what does not match, nil when all does.
func recordedProblems(s recordedSentry, conns []*model.Conn) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	var beacons, probes, background []*model.Conn
	lateral := map[recordedHop][]*model.Conn{}
	for _, c := range conns {
		if c.MissedBytes != 0 {
			bad("%s: %d bytes missing from the capture", describe(c), c.MissedBytes)
		}
		switch {
		case c.Proto == model.ProtoTCP && c.Resp == recordedBeacon:
			beacons = append(beacons, c)
		case c.Orig.Addr() == recordedScanner:
			probes = append(probes, c)
		case recordedExt.Contains(c.Resp.Addr()):
			background = append(background, c)
		default:
			h := recordedHop{c.Orig.Addr(), c.Resp}
			if !slices.Contains(s.lateral, h) {
				bad("unexpected connection %s", describe(c))
				continue
			}
			lateral[h] = append(lateral[h], c)
		}
	}

	// 1. Six beacons from the sentry, answered and closed, 2 s apart.
	if len(beacons) != 6 {
		bad("%d connections to %s, want 6", len(beacons), recordedBeacon)
	}
	for i, c := range beacons {
		if c.Orig.Addr() != s.addr || c.ConnState != model.ConnSF || c.OrigBytes != 300 || c.RespBytes != 400 {
			bad("beacon %s: %d/%d bytes, want from %s, SF, 300/400 bytes", describe(c), c.OrigBytes, c.RespBytes, s.addr)
		}
		if i > 0 {
			// fleet-destination calls a host periodic when its intervals'
			// coefficient of variation is under 0.25.
			if iv := c.TS.Sub(beacons[i-1].TS); iv < 1500*time.Millisecond || iv > 2500*time.Millisecond {
				bad("beacon %d starts %v after the one before, want 2 s ±0.5 s", i+1, iv)
			}
		}
	}

	// 2. Ten probes from the scanner to closed ports 1001-1010, refused.
	var ports []int
	for _, c := range probes {
		if c.Proto != model.ProtoTCP || c.Resp.Addr() != s.addr || c.ConnState != model.ConnREJ {
			bad("probe %s: want tcp to %s, REJ", describe(c), s.addr)
		}
		ports = append(ports, int(c.Resp.Port()))
	}
	slices.Sort(ports)
	if want := []int{1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010}; !slices.Equal(ports, want) {
		bad("probed ports %v, want %v", ports, want)
	}

	// 3. The lateral chain's connections involving this host, answered.
	for _, h := range s.lateral {
		cs := lateral[h]
		if len(cs) != 1 {
			bad("%d connections %s -> %s, want 1", len(cs), h.from, h.to)
			continue
		}
		if c := cs[0]; c.Proto != model.ProtoTCP || c.ConnState != model.ConnSF || c.OrigBytes == 0 || c.RespBytes == 0 {
			bad("lateral %s: want tcp, SF, data both ways", describe(c))
		}
	}
	if len(s.lateral) == 2 && len(lateral[s.lateral[0]]) == 1 && len(lateral[s.lateral[1]]) == 1 {
		if d := lateral[s.lateral[1]][0].TS.Sub(lateral[s.lateral[0]][0].TS); d < 2*time.Second || d > 10*time.Second {
			bad("the chain's second hop starts %v after the first, want 2-10 s", d)
		}
	}

	// 4. Background: 3 HTTP-like connections to distinct addresses, one
	// UDP exchange.
	var http []netip.Addr
	udp := 0
	for _, c := range background {
		switch {
		case c.Orig.Addr() != s.addr || c.ConnState != model.ConnSF:
			bad("background %s: want from %s, SF", describe(c), s.addr)
		case c.Proto == model.ProtoTCP && c.Resp.Port() == 80:
			http = append(http, c.Resp.Addr())
		case c.Proto == model.ProtoUDP && c.Resp.Port() == 53:
			udp++
		default:
			bad("unexpected background connection %s", describe(c))
		}
	}
	slices.SortFunc(http, netip.Addr.Compare)
	if len(slices.Compact(http)) != 3 || len(http) != 3 || udp != 1 {
		bad("background: HTTP-like to %v and %d UDP exchanges, want 3 distinct addresses and 1", http, udp)
	}
	return problems
}

func TestRecordedCaptures(t *testing.T) {
	for _, s := range recordedSentries {
		t.Run(s.name, func(t *testing.T) {
			conns := readRecorded(t, recordedPath(s.name))
			for _, p := range recordedProblems(s, conns) {
				t.Error(p)
			}
			if t.Failed() {
				for _, c := range conns {
					t.Log(describe(c))
				}
			}
		})
	}
}

// TestRecordedCapturesDiffer makes sure the checks can fail: each sentry's
// expectations do not hold for another sentry's capture.
func TestRecordedCapturesDiffer(t *testing.T) {
	for i, s := range recordedSentries {
		other := recordedSentries[(i+1)%len(recordedSentries)]
		t.Run(s.name+"-as-"+other.name, func(t *testing.T) {
			if p := recordedProblems(s, readRecorded(t, recordedPath(other.name))); len(p) == 0 {
				t.Errorf("%s's capture passes as %s's", other.name, s.name)
			}
		})
	}
}
