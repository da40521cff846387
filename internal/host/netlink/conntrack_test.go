package netlink

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

var ap = netip.MustParseAddrPort

// fullFlow sets every field parseConntrack reads.
var fullFlow = Flow{
	Proto: model.ProtoTCP,
	Orig:  Tuple{ap("10.0.0.5:51000"), ap("93.184.216.34:443")},
	Reply: Tuple{ap("93.184.216.34:443"), ap("192.0.2.1:61000")}, // SNAT
	Start: time.Unix(1764000000, 123456789), Stop: time.Unix(1764000100, 5),
	TCPState: 3, Status: 0xe, Timeout: 431999, ID: 0xdeadbeef, Mark: 0x40, Zone: 7,
	OrigPackets: 10, OrigBytes: 1 << 33, ReplyPackets: 9, ReplyBytes: 4242,
}

func TestParseConntrack(t *testing.T) {
	tuple4 := func(typ uint16, src, dst string) []byte {
		return encodeTuple(typ, model.ProtoTCP, Tuple{ap(src), ap(dst)})
	}
	v4 := []byte{unix.AF_INET, 0, 0, 0}
	orig := tuple4(ctaTupleOrig, "10.0.0.1:1000", "10.0.0.2:22")
	reply := tuple4(ctaTupleReply, "10.0.0.2:22", "10.0.0.1:1000")
	minimal := Flow{Proto: model.ProtoTCP, Orig: Tuple{ap("10.0.0.1:1000"), ap("10.0.0.2:22")}, Reply: Tuple{ap("10.0.0.2:22"), ap("10.0.0.1:1000")}}
	cat := func(bs ...[]byte) []byte {
		var out []byte
		for _, b := range bs {
			out = append(out, b...)
		}
		return out
	}
	v6udp := Flow{Proto: model.ProtoUDP, Orig: Tuple{ap("[2001:db8::1]:5353"), ap("[ff02::fb]:5353")},
		Reply: Tuple{ap("[ff02::fb]:5353"), ap("[2001:db8::1]:5353")}, Timeout: 30, Start: time.Unix(0, 1)}
	icmpTuple := func(typ uint16, src, dst string) []byte {
		s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
		return nest(typ, nest(ctaTupleIP, nla(ctaIPv4Src, s[:]), nla(ctaIPv4Dst, d[:])),
			nest(ctaTupleProto, nla(ctaProtoNum, []byte{1}), nla(4 /* ICMP_ID */, be16b(99))))
	}

	for _, c := range []struct {
		name    string
		b       []byte
		want    Flow
		wantErr string
	}{
		{name: "every field", b: encodeConntrack(fullFlow), want: fullFlow},
		{name: "ipv6 udp", b: encodeConntrack(v6udp), want: v6udp},
		{name: "tuples only: the rest zero", b: cat(v4, orig, reply), want: minimal},
		{name: "unknown attributes skipped", b: cat(v4, nla(11 /* CTA_USE */, be32b(1)), orig,
			nest(5 /* CTA_HELP */, nla(1, []byte("ftp\x00"))), reply, nla(22 /* CTA_LABELS */, make([]byte, 16))), want: minimal},
		{name: "old 32-bit counters", b: cat(v4, orig, reply,
			nest(ctaCountersOrig, nla(ctaCounters32Packets, be32b(3)), nla(ctaCounters32Bytes, be32b(180)))),
			want: func() Flow { f := minimal; f.OrigPackets, f.OrigBytes = 3, 180; return f }()},
		{name: "icmp: no ports", b: cat(v4, icmpTuple(ctaTupleOrig, "10.0.0.1", "10.0.0.2"), icmpTuple(ctaTupleReply, "10.0.0.2", "10.0.0.1")),
			want: Flow{Proto: model.ProtoICMP, Orig: Tuple{ap("10.0.0.1:0"), ap("10.0.0.2:0")}, Reply: Tuple{ap("10.0.0.2:0"), ap("10.0.0.1:0")}}},
		{name: "zero timestamps stay zero", b: cat(v4, orig, reply, nest(ctaTimestamp, nla(ctaTimestampStart, be64b(0)))), want: minimal},
		{name: "non-TCP protoinfo ignored", b: cat(v4, orig, reply, nest(ctaProtoinfo, nest(3 /* SCTP */, nla(1, []byte{4})))), want: minimal},

		{name: "short", b: []byte{2, 0, 0}, wantErr: "length 3 shorter than nfgenmsg"},
		{name: "AF_UNSPEC", b: cat([]byte{0, 0, 0, 0}, orig, reply), wantErr: "nfgenmsg family 0"},
		{name: "no orig tuple", b: cat(v4, reply), wantErr: "no CTA_TUPLE_ORIG"},
		{name: "no reply tuple", b: cat(v4, orig), wantErr: "no CTA_TUPLE_REPLY"},
		{name: "v4 address of 3 bytes", b: cat(v4, nest(ctaTupleOrig, nest(ctaTupleIP, nla(ctaIPv4Src, []byte{1, 2, 3}))), reply),
			wantErr: "CTA_TUPLE_ORIG: CTA_IP_V4 at offset 12: value of 3 bytes, want 4"},
		{name: "address missing", b: cat(v4, nest(ctaTupleOrig, nest(ctaTupleIP, nla(ctaIPv4Src, []byte{1, 2, 3, 4}))), reply),
			wantErr: "CTA_TUPLE_ORIG: source or destination address missing"},
		{name: "mixed families", b: cat(v4, nest(ctaTupleOrig, nest(ctaTupleIP, nla(ctaIPv4Src, []byte{1, 2, 3, 4}),
			nla(ctaIPv6Dst, make([]byte, 16)))), reply), wantErr: "of different families"},
		{name: "port of 1 byte", b: cat(v4, nest(ctaTupleReply, nest(ctaTupleProto, nla(ctaProtoSrcPort, []byte{1})))),
			wantErr: "CTA_TUPLE_REPLY: CTA_PROTO_SRC_PORT at offset 12: value of 1 bytes, want 2"},
		{name: "timestamp of 4 bytes", b: cat(v4, orig, reply, nest(ctaTimestamp, nla(ctaTimestampStart, be32b(1)))),
			wantErr: "CTA_TIMESTAMP_START"},
		{name: "zone of 4 bytes", b: cat(v4, orig, reply, nla(ctaZone, be32b(1))), wantErr: "CTA_ZONE"},
		{name: "nested attribute overruns its parent", b: cat(v4, orig, reply, []byte{12, 0, ctaProtoinfo, 0x80, 20, 0, 1, 0, 0, 0, 0, 0}),
			wantErr: "length 20 outside"},
		{name: "truncated top-level attribute", b: cat(v4, orig, reply[:len(reply)-4]), wantErr: "outside"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseConntrack(c.b)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("got  %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func formatFlow(f Flow) string {
	ts := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprintf("%v %v>%v reply %v>%v tcp=%d status=%#x timeout=%d id=%d mark=%d zone=%d start=%s stop=%s pkts=%d/%d bytes=%d/%d",
		f.Proto, f.Orig.Src, f.Orig.Dst, f.Reply.Src, f.Reply.Dst, f.TCPState, f.Status, f.Timeout,
		f.ID, f.Mark, f.Zone, ts(f.Start), ts(f.Stop), f.OrigPackets, f.ReplyPackets, f.OrigBytes, f.ReplyBytes)
}

func findFlow(flows []Flow, p model.Proto, src, dst netip.AddrPort) (Flow, bool) {
	for _, f := range flows {
		if f.Proto == p && f.Orig.Src == src && f.Orig.Dst == dst {
			return f, true
		}
	}
	return Flow{}, false
}

func TestParseConntrackFixture(t *testing.T) {
	var flows []Flow
	var golden strings.Builder
	for i, p := range readFixture(t, "conntrack.nl") {
		f, err := parseConntrack(p)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		flows = append(flows, f)
		golden.WriteString(formatFlow(f) + "\n")
	}
	checkGolden(t, "conntrack.golden", golden.String())

	// The lab's connections (see setupLab), independently of the golden text.
	for _, c := range []struct {
		proto    model.Proto
		src, dst string
		tcpState uint8
	}{
		{model.ProtoTCP, "127.0.0.1:7001", "127.0.0.1:7000", 3},
		{model.ProtoTCP, "127.0.0.1:7005", "127.0.0.1:7000", 7},
		{model.ProtoTCP, "127.0.0.1:7006", "127.0.0.1:7004", 3},
		{model.ProtoTCP, "[::1]:7010", "[::1]:7003", 3},
		{model.ProtoUDP, "127.0.0.1:7009", "127.0.0.1:7002", 0},
		{model.ProtoUDP, "[::1]:7008", "[::1]:7007", 0},
	} {
		f, ok := findFlow(flows, c.proto, ap(c.src), ap(c.dst))
		switch {
		case !ok:
			t.Errorf("no %v flow %s -> %s in the fixture", c.proto, c.src, c.dst)
		case f.Reply.Src != ap(c.dst) || f.Reply.Dst != ap(c.src):
			t.Errorf("%s: reply tuple %v -> %v, want the reverse", c.src, f.Reply.Src, f.Reply.Dst)
		case f.TCPState != c.tcpState:
			t.Errorf("%s: conntrack TCP state %d, want %d", c.src, f.TCPState, c.tcpState)
		case f.Start.IsZero() || f.Start.Year() < 2025 || !f.Stop.IsZero():
			t.Errorf("%s: start %v stop %v, want a recent start and no stop", c.src, f.Start, f.Stop)
		case f.OrigPackets == 0 || f.ReplyPackets == 0 || f.OrigBytes < 28*f.OrigPackets || f.ID == 0:
			t.Errorf("%s: counters %d/%d packets %d bytes, id %d: want both ways counted", c.src, f.OrigPackets, f.ReplyPackets, f.OrigBytes, f.ID)
		}
	}
}

func FuzzParseConntrack(f *testing.F) {
	f.Add(encodeConntrack(fullFlow))
	f.Add([]byte{unix.AF_INET6, 0, 0, 0})
	for _, p := range readFixture(f, "conntrack.nl") {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fl, err := parseConntrack(b)
		if err != nil {
			return
		}
		if !fl.Orig.Src.IsValid() || !fl.Reply.Dst.IsValid() {
			t.Fatalf("parsed without both tuples: %+v", fl)
		}
		// Start can be a time before 1970 only from a garbled u64; skip
		// those for the round trip, which encodes UnixNano as unsigned.
		if fl.Start.UnixNano() < 0 || fl.Stop.UnixNano() < 0 {
			return
		}
		again, err := parseConntrack(encodeConntrack(fl))
		if err != nil {
			t.Fatalf("re-encoded flow does not parse: %v", err)
		}
		if again != fl {
			t.Fatalf("round trip changed the flow:\n%s\n%s", formatFlow(fl), formatFlow(again))
		}
	})
}

func BenchmarkParseConntrack(b *testing.B) {
	msg := encodeConntrack(fullFlow)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseConntrack(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func TestAgeIndex(t *testing.T) {
	t0 := time.Unix(1764000000, 0)
	flows := []Flow{
		// outgoing from 10.0.0.5, SNAT to 192.0.2.1
		{Proto: model.ProtoTCP, Orig: Tuple{ap("10.0.0.5:51000"), ap("93.184.216.34:443")},
			Reply: Tuple{ap("93.184.216.34:443"), ap("192.0.2.1:61000")}, Start: t0},
		// incoming to a DNAT'd service: VIP 198.51.100.7:80 -> 10.0.0.5:8080
		{Proto: model.ProtoTCP, Orig: Tuple{ap("203.0.113.9:40000"), ap("198.51.100.7:80")},
			Reply: Tuple{ap("10.0.0.5:8080"), ap("203.0.113.9:40000")}, Start: t0.Add(time.Second)},
		// incoming, no NAT
		{Proto: model.ProtoTCP, Orig: Tuple{ap("203.0.113.9:40001"), ap("10.0.0.5:22")},
			Reply: Tuple{ap("10.0.0.5:22"), ap("203.0.113.9:40001")}, Start: t0.Add(2 * time.Second)},
		// UDP, same endpoints as a TCP one
		{Proto: model.ProtoUDP, Orig: Tuple{ap("10.0.0.5:51000"), ap("93.184.216.34:443")},
			Reply: Tuple{ap("93.184.216.34:443"), ap("10.0.0.5:51000")}, Start: t0.Add(3 * time.Second)},
		// no timestamp: never indexed
		{Proto: model.ProtoTCP, Orig: Tuple{ap("10.0.0.5:51001"), ap("93.184.216.34:443")},
			Reply: Tuple{ap("93.184.216.34:443"), ap("10.0.0.5:51001")}},
		// the same tuple in two zones with different starts: ambiguous
		{Proto: model.ProtoTCP, Orig: Tuple{ap("10.0.0.5:51002"), ap("10.9.9.9:53")},
			Reply: Tuple{ap("10.9.9.9:53"), ap("10.0.0.5:51002")}, Start: t0, Zone: 1},
		{Proto: model.ProtoTCP, Orig: Tuple{ap("10.0.0.5:51002"), ap("10.9.9.9:53")},
			Reply: Tuple{ap("10.9.9.9:53"), ap("10.0.0.5:51002")}, Start: t0.Add(time.Hour), Zone: 2},
	}
	ix := NewAgeIndex(flows)
	if ix.Len() != 10 {
		t.Errorf("Len %d, want 10 keys (2 per timestamped flow; the zone pair shares 2)", ix.Len())
	}
	for _, c := range []struct {
		name          string
		proto         model.Proto
		local, remote string
		want          time.Time // zero: not found
	}{
		{"outgoing via SNAT", model.ProtoTCP, "10.0.0.5:51000", "93.184.216.34:443", t0},
		{"server behind DNAT: reply tuple", model.ProtoTCP, "10.0.0.5:8080", "203.0.113.9:40000", t0.Add(time.Second)},
		{"incoming: remote->local", model.ProtoTCP, "10.0.0.5:22", "203.0.113.9:40001", t0.Add(2 * time.Second)},
		{"v4-mapped socket matches v4 entry", model.ProtoTCP, "[::ffff:10.0.0.5]:22", "[::ffff:203.0.113.9]:40001", t0.Add(2 * time.Second)},
		{"protocol distinguishes", model.ProtoUDP, "10.0.0.5:51000", "93.184.216.34:443", t0.Add(3 * time.Second)},
		{"no timestamp: unknown", model.ProtoTCP, "10.0.0.5:51001", "93.184.216.34:443", time.Time{}},
		{"ambiguous: unknown", model.ProtoTCP, "10.0.0.5:51002", "10.9.9.9:53", time.Time{}},
		{"other port", model.ProtoTCP, "10.0.0.5:51000", "93.184.216.34:444", time.Time{}},
		{"listener", model.ProtoTCP, "10.0.0.5:22", "0.0.0.0:0", time.Time{}},
	} {
		got, ok := ix.Start(c.proto, ap(c.local), ap(c.remote))
		if ok != !c.want.IsZero() || !got.Equal(c.want) {
			t.Errorf("%s: Start = %v, %v; want %v", c.name, got, ok, c.want)
		}
	}
	var nilIx *AgeIndex
	if _, ok := nilIx.Start(model.ProtoTCP, ap("10.0.0.5:51000"), ap("93.184.216.34:443")); ok {
		t.Error("a nil index found something")
	}
}

func TestEnableSysctl(t *testing.T) {
	dir := t.TempDir()
	write := func(name, v string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	off := write("off", "0\n")
	if changed, err := enableSysctl(off); err != nil || !changed {
		t.Fatalf("off: changed %v, err %v; want true, nil", changed, err)
	}
	if b, _ := os.ReadFile(off); strings.TrimSpace(string(b)) != "1" {
		t.Fatalf("off: file holds %q after enabling", b)
	}
	if changed, err := enableSysctl(off); err != nil || changed {
		t.Fatalf("second call: changed %v, err %v; want false, nil", changed, err)
	}
	if _, err := enableSysctl(write("odd", "2\n")); err == nil || !strings.Contains(err.Error(), `holds "2"`) {
		t.Fatalf("odd value: error %v", err)
	}
	_, err := enableSysctl(filepath.Join(dir, "missing"))
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing sysctl: error %v, want ErrUnavailable wrapping ENOENT", err)
	}
}

// The end-to-end test: connections inside a fresh namespace with conntrack
// active get a start time that conntrack reports and AgeIndex attaches to
// their sockets; the host namespace sees none of it.
func TestConntrackNetns(t *testing.T) {
	ns := newConntrackNetns(t)
	hostTS, err := os.ReadFile(timestampSysctl)
	if err != nil {
		t.Fatal(err)
	}
	var changed, changedAgain bool
	if err := InNetns(ns, func() error {
		var err error
		if changed, err = EnableTimestamps(); err != nil {
			return err
		}
		changedAgain, err = EnableTimestamps()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !changed || changedAgain {
		t.Errorf("EnableTimestamps in a fresh netns: changed %v then %v, want true then false", changed, changedAgain)
	}
	if after, _ := os.ReadFile(timestampSysctl); string(after) != string(hostTS) {
		t.Errorf("host's nf_conntrack_timestamp changed from %q to %q", hostTS, after)
	}

	before := time.Now()
	setupLab(t, ns)
	time.Sleep(1100 * time.Millisecond) // an age of more than a second, as a responder would see
	var (
		flows []Flow
		socks []model.Socket
	)
	if err := InNetns(ns, func() error {
		var err error
		if flows, err = Conntrack(context.Background()); err != nil {
			return err
		}
		socks, err = Sockets(context.Background(), DumpOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, f := range flows {
		t.Log(formatFlow(f))
	}
	ix := NewAgeIndex(flows)
	for _, c := range []struct {
		proto    model.Proto
		src, dst string
	}{
		{model.ProtoTCP, "127.0.0.1:7001", "127.0.0.1:7000"},
		{model.ProtoTCP, "[::1]:7010", "[::1]:7003"},
		{model.ProtoUDP, "127.0.0.1:7009", "127.0.0.1:7002"},
		{model.ProtoUDP, "[::1]:7008", "[::1]:7007"},
	} {
		f, ok := findFlow(flows, c.proto, ap(c.src), ap(c.dst))
		if !ok {
			t.Errorf("no %v flow %s -> %s among %d", c.proto, c.src, c.dst, len(flows))
			continue
		}
		if f.Start.Before(before) || f.Start.After(now) || now.Sub(f.Start) < time.Second {
			t.Errorf("%s: start %v, want between %v and %v and over 1s ago", c.src, f.Start, before, now)
		}
		// Both ends' sockets find the flow: the client by its own
		// direction, the server by the reverse.
		for _, end := range [][2]string{{c.src, c.dst}, {c.dst, c.src}} {
			if _, ok := findSocket(socks, c.proto, ap(end[0]), ap(end[1])); !ok && c.proto == model.ProtoTCP {
				t.Errorf("socket %s -> %s not dumped", end[0], end[1])
			}
			got, ok := ix.Start(c.proto, ap(end[0]), ap(end[1]))
			if !ok || !got.Equal(f.Start) {
				t.Errorf("AgeIndex.Start(%s -> %s) = %v, %v; want %v", end[0], end[1], got, ok, f.Start)
			}
		}
	}
	// The dual-stack server socket is v4-mapped; its flow is IPv4.
	if got, ok := ix.Start(model.ProtoTCP, ap("[::ffff:127.0.0.1]:7004"), ap("[::ffff:127.0.0.1]:7006")); !ok || got.Before(before) {
		t.Errorf("v4-mapped dual-stack socket: Start = %v, %v", got, ok)
	}

	hostFlows, err := Conntrack(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := findFlow(hostFlows, model.ProtoTCP, ap("127.0.0.1:7001"), ap("127.0.0.1:7000")); ok {
		t.Error("the namespace's flow shows in the host's conntrack")
	}
}
