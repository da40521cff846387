package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/capture"
)

// rawTCP builds an IPv4+TCP packet (link type raw); checksums are left
// zero, which tcpsentry accepts unless --checksums is given.
func rawTCP(src, dst string, flags byte, seq, ack uint32, payload int) []byte {
	s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	b := make([]byte, 40+payload)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8], b[9] = 64, 6
	copy(b[12:16], s.Addr().AsSlice())
	copy(b[16:20], d.Addr().AsSlice())
	t := b[20:]
	binary.BigEndian.PutUint16(t[0:], s.Port())
	binary.BigEndian.PutUint16(t[2:], d.Port())
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], ack)
	t[12], t[13] = 5<<4, flags
	binary.BigEndian.PutUint16(t[14:], 65535)
	return b
}

const (
	fFIN = 0x01
	fSYN = 0x02
	fPSH = 0x08
	fACK = 0x10
)

// session appends a complete TCP session with 100 bytes from the originator.
func session(pkts [][]byte, orig, resp string) [][]byte {
	return append(pkts,
		rawTCP(orig, resp, fSYN, 1000, 0, 0),
		rawTCP(resp, orig, fSYN|fACK, 5000, 1001, 0),
		rawTCP(orig, resp, fACK, 1001, 5001, 0),
		rawTCP(orig, resp, fPSH|fACK, 1001, 5001, 100),
		rawTCP(resp, orig, fACK, 5001, 1101, 0),
		rawTCP(orig, resp, fFIN|fACK, 1101, 5001, 0),
		rawTCP(resp, orig, fFIN|fACK, 5001, 1102, 0),
		rawTCP(orig, resp, fACK, 1102, 5002, 0),
	)
}

func writePcap(t *testing.T, pkts [][]byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "crafted.pcap")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := capture.NewWriter(f, capture.LinkRaw)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 23, 2, 0, 0, 0, time.UTC)
	for i, b := range pkts {
		if err := w.WritePacket(t0.Add(time.Duration(i)*time.Millisecond), b, 0); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func TestAnalyzeCaptureAndConnLog(t *testing.T) {
	var pkts [][]byte
	pkts = session(pkts, "10.0.0.66:40000", "10.0.0.5:4444")                       // answered: alert
	pkts = append(pkts, rawTCP("10.0.0.67:40001", "10.0.0.5:4444", fSYN, 1, 0, 0)) // unanswered probe: none
	pkts = session(pkts, "10.0.0.66:40002", "10.0.0.5:443")                        // ordinary: none
	pcap := writePcap(t, pkts)

	out, stderr, code := run(t, "analyze", "--json", pcap)
	if code != 1 {
		t.Fatalf("analyze exit %d, want 1: %s", code, stderr)
	}
	as := parseAlerts(t, out)
	if len(as) != 1 || as[0].Detector != "suspicious-port" || as[0].Src != "10.0.0.66" || as[0].Dst != "10.0.0.5" ||
		as[0].DstPort == nil || *as[0].DstPort != 4444 || as[0].Severity != "high" || as[0].Evidence["conn_state"] != "SF" {
		t.Fatalf("alerts from the capture:\n%s%+v", dumpAlerts(as), as)
	}

	// The same records as a Zeek conn.log give the same finding.
	zeek, stderr, code := run(t, "flows", "--format", "zeek", pcap)
	if code != 0 {
		t.Fatalf("flows: %s", stderr)
	}
	connLog := filepath.Join(t.TempDir(), "conn.log")
	if err := os.WriteFile(connLog, []byte(zeek), 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, code = run(t, "analyze", "--json", connLog)
	as2 := parseAlerts(t, out)
	if code != 1 || len(as2) != 1 || as2[0].ID != as[0].ID {
		t.Fatalf("conn.log: exit %d, alerts:\n%s%s", code, dumpAlerts(as2), stderr)
	}

	quiet := writePcap(t, session(nil, "10.0.0.66:40002", "10.0.0.5:443"))
	if _, stderr, code := run(t, "analyze", quiet); code != 0 {
		t.Errorf("ordinary traffic: exit %d, want 0: %s", code, stderr)
	}
	if _, _, code := run(t, "analyze", "--min-severity", "critical", pcap); code != 0 {
		t.Errorf("--min-severity critical: exit %d, want 0", code)
	}
	garbage := filepath.Join(t.TempDir(), "garbage")
	os.WriteFile(garbage, []byte("hello\x00world\n"), 0o644)
	if _, stderr, code := run(t, "analyze", garbage); code != 2 || !strings.Contains(stderr, "garbage") {
		t.Errorf("garbage input: exit %d, stderr %q; want 2 naming the file", code, stderr)
	}
}

func TestAnalyzeSynScan(t *testing.T) {
	var pkts [][]byte
	for p := 1; p <= 50; p++ {
		dst := "10.0.0.5:" + strconv.Itoa(p)
		pkts = append(pkts, rawTCP("10.0.0.66:55555", dst, fSYN, 7, 0, 0))
		if p == 22 || p == 25 { // open: SYN-ACK, then the scanner's kernel resets
			pkts = append(pkts, rawTCP(dst, "10.0.0.66:55555", fSYN|fACK, 9, 8, 0), rawTCP("10.0.0.66:55555", dst, 0x04, 8, 0, 0))
		} else if p%2 == 1 { // closed
			pkts = append(pkts, rawTCP(dst, "10.0.0.66:55555", 0x14, 0, 8, 0))
		}
	}
	out, stderr, code := run(t, "analyze", "--json", writePcap(t, pkts))
	as := parseAlerts(t, out)
	a, ok := findAlert(as, "scan", nil)
	if code != 1 || !ok || a.Evidence["probe"] != "syn" || a.Evidence["kind"] != "vertical" || a.Evidence["ports"] != float64(50) ||
		a.Evidence["answered"] != float64(2) || a.Src != "10.0.0.66" || a.Dst != "10.0.0.5" {
		t.Fatalf("exit %d, alerts:\n%s%+v\n%s", code, dumpAlerts(as), as, stderr)
	}
}

// TestAnalyzeRecordedNmap runs analyze over real nmap scans recorded in a
// namespace lab (testdata/README.md), from the capture and from the
// conn.log flows writes for it: every scan type is found and named.
func TestAnalyzeRecordedNmap(t *testing.T) {
	zeek, stderr, code := run(t, "flows", "--format", "zeek", "testdata/nmap-lab.pcap.gz")
	if code != 0 {
		t.Fatal(stderr)
	}
	connLog := filepath.Join(t.TempDir(), "conn.log")
	if err := os.WriteFile(connLog, []byte(zeek), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, input := range []string{"testdata/nmap-lab.pcap.gz", connLog} {
		out, stderr, code := run(t, "analyze", "--json", input)
		if code != 1 {
			t.Fatalf("%s: exit %d: %s", input, code, stderr)
		}
		got := map[string]float64{}
		for _, a := range parseAlerts(t, out) {
			if a.Detector == "rapid-attempts" && a.Src == "10.252.3.1" && a.Evidence["pattern"] == "fan-out" {
				continue // nmap's probes are rapid attempts too
			}
			if a.Detector != "scan" || a.Src != "10.252.3.1" || a.Dst != "10.252.3.2" || a.Evidence["kind"] != "vertical" {
				t.Errorf("%s: unexpected alert %s %s", input, a.Detector, a.Title)
				continue
			}
			got[a.Evidence["probe"].(string)] = a.Evidence["ports"].(float64)
		}
		want := map[string]float64{"syn": 100, "connect": 100, "fin": 100, "null": 100, "xmas": 100, "ack": 100, "maimon": 100, "udp": 30}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: scans found %v, want %v", input, got, want)
		}
	}
}

// TestAnalyzeRecordedFlood: a real hping3 random-source SYN flood is one
// flood alert on the right target, and not a scan.
func TestAnalyzeRecordedFlood(t *testing.T) {
	out, stderr, code := run(t, "analyze", "--json", "testdata/hping3-flood.pcap.gz")
	as := parseAlerts(t, out)
	if code != 1 || len(as) != 1 {
		t.Fatalf("exit %d, alerts:\n%s%s", code, dumpAlerts(as), stderr)
	}
	a := as[0]
	if a.Detector != "flood" || a.Dst != "10.252.4.2" || a.DstPort == nil || *a.DstPort != 80 ||
		a.Evidence["attempts"] != float64(5000) || a.Evidence["spoofed_likely"] != true {
		t.Errorf("flood alert = %+v", a)
	}
}

// TestEvalRecordedLab scores the recorded lab captures against their truth.
func TestEvalRecordedLab(t *testing.T) {
	out, stderr, code := run(t, "eval", "--json", "--truth", "testdata/lab-truth.csv", "testdata/nmap-lab.pcap.gz", "testdata/hping3-flood.pcap.gz")
	if code != 0 {
		t.Fatalf("eval exit %d: %s", code, stderr)
	}
	var r struct {
		Classes []struct {
			Class       string  `json:"class"`
			Recall      float64 `json:"recall"`
			Precision   float64 `json:"precision"`
			LatencyMaxS float64 `json:"latency_max_s"`
		} `json:"classes"`
		AlertsOnUncovered int `json:"alerts_on_uncovered"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(r.Classes) != 2 || r.AlertsOnUncovered != 0 {
		t.Fatalf("report: %s", out)
	}
	for _, c := range r.Classes {
		// Detection within a second of the attack's first packet, in event time.
		if c.Recall != 1 || c.Precision != 1 || c.LatencyMaxS > 1 {
			t.Errorf("%s: recall %v precision %v latency %v s", c.Class, c.Recall, c.Precision, c.LatencyMaxS)
		}
	}
	if _, stderr, code := run(t, "eval", "--truth", "testdata/README.md", "testdata/nmap-lab.pcap.gz"); code != 2 || !strings.Contains(stderr, "README.md:1: header") {
		t.Errorf("bad truth file: exit %d, %q", code, stderr)
	}
}

// rawTCPWith is rawTCP with TCP options (a multiple of 4 bytes) and payload bytes.
func rawTCPWith(src, dst string, flags byte, seq, ack uint32, opts, data []byte) []byte {
	b := rawTCP(src, dst, flags, seq, ack, len(opts)+len(data))
	b[32] = byte((20+len(opts))/4) << 4
	copy(b[40:], opts)
	copy(b[40+len(opts):], data)
	return b
}

// linuxSYNOptions are the options of a Linux connect(): MSS, SACK
// permitted, timestamps, NOP, window scale.
var linuxSYNOptions = []byte{2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7}

// TestAnalyzeProtocolAndConnectScan crafts SSH on port 443 and a connect()
// scan of closed ports (kernel SYNs answered by RSTs, which on the wire
// look like a SYN scan but for the SYN's options), and finds both from the
// capture and from its conn.log.
func TestAnalyzeProtocolAndConnectScan(t *testing.T) {
	var pkts [][]byte
	c, s := "10.0.0.7:40000", "203.0.113.9:443"
	banner := []byte("SSH-2.0-OpenSSH_9.2p1\r\n")
	pkts = append(pkts,
		rawTCPWith(c, s, fSYN, 1000, 0, linuxSYNOptions, nil),
		rawTCP(s, c, fSYN|fACK, 5000, 1001, 0),
		rawTCP(c, s, fACK, 1001, 5001, 0),
		rawTCPWith(s, c, fPSH|fACK, 5001, 1001, nil, banner),
		rawTCPWith(c, s, fPSH|fACK, 1001, 5001+uint32(len(banner)), nil, banner),
		rawTCP(c, s, fFIN|fACK, 1001+uint32(len(banner)), 5001+uint32(len(banner)), 0),
		rawTCP(s, c, fFIN|fACK, 5001+uint32(len(banner)), 1002+uint32(len(banner)), 0),
		rawTCP(c, s, fACK, 1002+uint32(len(banner)), 5002+uint32(len(banner)), 0),
	)
	for p := 1000; p < 1015; p++ {
		dst := "10.0.0.5:" + strconv.Itoa(p)
		src := "10.0.0.66:" + strconv.Itoa(50000+p)
		pkts = append(pkts, rawTCPWith(src, dst, fSYN, 7, 0, linuxSYNOptions, nil), rawTCP(dst, src, 0x14, 0, 8, 0))
	}
	pcap := writePcap(t, pkts)
	zeek, stderr, code := run(t, "flows", "--format", "zeek", pcap)
	if code != 0 {
		t.Fatalf("flows: %s", stderr)
	}
	if !strings.Contains(zeek, "\tssh\t") || !strings.Contains(zeek, "mss,ws,sackok,ts") {
		t.Errorf("conn.log lacks the service or the SYN options:\n%s", zeek)
	}
	connLog := filepath.Join(t.TempDir(), "conn.log")
	if err := os.WriteFile(connLog, []byte(zeek), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, input := range []string{pcap, connLog} {
		out, stderr, code := run(t, "analyze", "--json", input)
		as := parseAlerts(t, out)
		proto, ok1 := findAlert(as, "suspicious-port", func(a jsonAlert) bool { return a.Evidence["service"] == "ssh" })
		scan, ok2 := findAlert(as, "scan", nil)
		if code != 1 || !ok1 || !ok2 || proto.Severity != "high" || proto.Attack[0] != "T1571" ||
			!strings.Contains(proto.Title, "SSH spoken on port 443") || scan.Evidence["probe"] != "connect" {
			t.Errorf("%s: exit %d, alerts:\n%s%s", filepath.Base(input), code, dumpAlerts(as), stderr)
		}
	}
}
