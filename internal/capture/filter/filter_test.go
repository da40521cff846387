package filter

import (
	"bufio"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/net/bpf"

	"github.com/tcpsentry/tcpsentry/internal/capture"
)

var update = flag.Bool("update", false, "regenerate testdata/tcpdump.golden with tcpdump -ddd")

// frame describes a crafted packet.
type frame struct {
	name         string
	etherType    uint16 // 0: from the addresses
	proto        uint8
	src, dst     string
	sport, dport uint16
	fragOff      uint16 // IPv4 fragment offset (8-byte units)
	ihl          int    // IPv4 header words (default 5)
	v6frag       bool   // IPv6 with a fragment header before the transport
	arp          bool
	payload      int
}

func (f frame) bytes() []byte {
	b := make([]byte, 14, 128)
	for i := 0; i < 12; i++ {
		b[i] = byte(i + 1)
	}
	src, dst := netip.MustParseAddr(f.src), netip.MustParseAddr(f.dst)
	l4 := make([]byte, 20+f.payload)
	binary.BigEndian.PutUint16(l4[0:], f.sport)
	binary.BigEndian.PutUint16(l4[2:], f.dport)
	switch {
	case f.arp:
		binary.BigEndian.PutUint16(b[12:], 0x0806)
		a := make([]byte, 28)
		binary.BigEndian.PutUint16(a[0:], 1)
		binary.BigEndian.PutUint16(a[2:], 0x0800)
		a[4], a[5] = 6, 4
		binary.BigEndian.PutUint16(a[6:], 1)
		s, d := src.As4(), dst.As4()
		copy(a[14:], s[:])
		copy(a[24:], d[:])
		return append(b, a...)
	case src.Is4():
		binary.BigEndian.PutUint16(b[12:], 0x0800)
		ihl := f.ihl
		if ihl == 0 {
			ihl = 5
		}
		h := make([]byte, ihl*4)
		h[0] = 0x40 | byte(ihl)
		binary.BigEndian.PutUint16(h[2:], uint16(len(h)+len(l4)))
		binary.BigEndian.PutUint16(h[6:], f.fragOff)
		h[8], h[9] = 64, f.proto
		s, d := src.As4(), dst.As4()
		copy(h[12:], s[:])
		copy(h[16:], d[:])
		b = append(b, h...)
	default:
		binary.BigEndian.PutUint16(b[12:], 0x86dd)
		h := make([]byte, 40)
		h[0] = 0x60
		nh := f.proto
		var ext []byte
		if f.v6frag {
			ext = make([]byte, 8)
			ext[0] = f.proto
			nh = 44
		}
		binary.BigEndian.PutUint16(h[4:], uint16(len(ext)+len(l4)))
		h[6], h[7] = nh, 64
		s, d := src.As16(), dst.As16()
		copy(h[8:], s[:])
		copy(h[24:], d[:])
		b = append(append(b, h...), ext...)
	}
	if f.etherType != 0 {
		binary.BigEndian.PutUint16(b[12:], f.etherType)
	}
	return append(b, l4...)
}

var frames = []frame{
	{name: "tcp4 80", proto: 6, src: "10.0.0.1", dst: "10.0.0.2", sport: 40000, dport: 80},
	{name: "tcp4 80 reverse", proto: 6, src: "10.0.0.2", dst: "10.0.0.1", sport: 80, dport: 40000},
	{name: "tcp4 22 options", proto: 6, src: "10.0.0.1", dst: "192.168.1.9", sport: 22, dport: 5555, ihl: 7},
	{name: "tcp4 fragment", proto: 6, src: "10.0.0.1", dst: "10.0.0.2", sport: 80, dport: 80, fragOff: 100},
	{name: "tcp4 first fragment", proto: 6, src: "10.0.0.1", dst: "10.0.0.2", sport: 80, dport: 80, fragOff: 0x2000},
	{name: "udp4 53", proto: 17, src: "10.1.2.3", dst: "8.8.8.8", sport: 33333, dport: 53},
	{name: "udp4 1500", proto: 17, src: "172.16.0.1", dst: "10.0.0.2", sport: 1500, dport: 2500, payload: 200},
	{name: "sctp4 80", proto: 132, src: "10.0.0.1", dst: "10.0.0.3", sport: 80, dport: 9},
	{name: "icmp4", proto: 1, src: "10.0.0.1", dst: "10.0.0.2"},
	{name: "gre4", proto: 47, src: "10.0.0.1", dst: "10.0.0.2"},
	{name: "tcp6 443", proto: 6, src: "2001:db8::1", dst: "2001:db8::2", sport: 50000, dport: 443},
	{name: "udp6 53", proto: 17, src: "2001:db8:1::5", dst: "2001:db8::53", sport: 53, dport: 1000},
	{name: "tcp6 fragment", proto: 6, src: "2001:db8::1", dst: "2001:db8::2", sport: 80, dport: 80, v6frag: true},
	{name: "icmp6", proto: 58, src: "fe80::1", dst: "ff02::1"},
	{name: "arp", arp: true, src: "10.0.0.1", dst: "10.0.0.9"},
	{name: "other ethertype", etherType: 0x88cc, proto: 6, src: "10.0.0.1", dst: "10.0.0.2", sport: 80, dport: 80},
	{name: "tcp4 1000", proto: 6, src: "10.9.0.1", dst: "10.0.0.2", sport: 1000, dport: 2000},
	{name: "tcp4 2001", proto: 6, src: "10.9.0.1", dst: "10.0.0.2", sport: 2001, dport: 3000, payload: 1000},
}

// exprs are compared with tcpdump's programs for the same expression.
var exprs = []string{
	"",
	"ip", "ip6", "arp", "tcp", "udp", "icmp", "icmp6", "sctp",
	"tcp port 80", "port 80", "src port 80", "dst port 80", "udp port 53",
	"portrange 1000-2000", "tcp dst portrange 1000-2000",
	"host 10.0.0.1", "src host 10.0.0.1", "dst host 10.0.0.2", "ip host 10.0.0.1", "arp host 10.0.0.9",
	"host 2001:db8::1", "dst host ff02::1",
	"net 10.0.0.0/8", "src net 10.0.0.0/24", "net 2001:db8::/32", "dst net 2001:db8::/48",
	"ip proto 47", "ip6 proto 58", "proto 17",
	"tcp and not port 22", "not tcp", "host 10.0.0.1 and (port 22 or port 80)",
	"udp or icmp", "!(tcp || udp)", "ip and tcp[13] = 2 or udp", // last one unsupported (indexing)
	"less 100", "greater 300",
	"ip6 and tcp port 443", "ip and port 80",
	"port 80 or 22", "tcp dst port 80 or 2000 or 53", "host 10.0.0.1 or 10.0.0.9", "src net 10.0.0.0/24 or 172.16.0.0/12",
	"not port 80 and 22", "udp and (port 53 or 1500)",
}

func TestCompileAgainstTcpdump(t *testing.T) {
	t.Run("ethernet", func(t *testing.T) { compareTcpdump(t, capture.LinkEthernet, "tcpdump.golden", exprs) })
	// Raw IP: the frames without their Ethernet header; no ARP.
	var raw []string
	for _, e := range exprs {
		if !strings.Contains(e, "arp") {
			raw = append(raw, e)
		}
	}
	t.Run("raw", func(t *testing.T) { compareTcpdump(t, capture.LinkRaw, "tcpdump-raw.golden", raw) })
}

func compareTcpdump(t *testing.T, lt capture.LinkType, name string, exprs []string) {
	golden := filepath.Join("testdata", name)
	if *update {
		writeTcpdumpGolden(t, golden, lt, exprs)
	}
	progs := readTcpdumpGolden(t, golden)
	for _, e := range exprs {
		want, ok := progs[e]
		if !ok {
			t.Errorf("%q: not in %s (run with -update where tcpdump is installed)", e, golden)
			continue
		}
		got, err := Compile(e, lt)
		if strings.Contains(e, "[") {
			var fe *Error
			if !errors.As(err, &fe) {
				t.Errorf("%q: error %v, want a *filter.Error for unsupported syntax", e, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", e, err)
			continue
		}
		wvm, err := bpf.NewVM(want)
		if err != nil {
			t.Fatalf("%q: tcpdump's program: %v", e, err)
		}
		for _, f := range frames {
			b := f.bytes()
			if lt == capture.LinkRaw {
				if f.arp || f.etherType != 0 {
					continue
				}
				b = b[14:]
			}
			n, err := wvm.Run(b)
			if err != nil {
				t.Fatalf("%q on %s: tcpdump's program: %v", e, f.name, err)
			}
			match, err := got.Match(b)
			if err != nil {
				t.Fatalf("%q on %s: %v", e, f.name, err)
			}
			if match != (n > 0) {
				t.Errorf("%q on %s: we say %v, tcpdump says %v", e, f.name, match, n > 0)
			}
		}
	}
}

// writeTcpdumpGolden records tcpdump's programs for exprs, compiled for
// link type lt via an empty capture file of that link type.
func writeTcpdumpGolden(t *testing.T, path string, lt capture.LinkType, exprs []string) {
	td, err := exec.LookPath("tcpdump")
	if err != nil {
		t.Fatal("-update needs tcpdump")
	}
	pcap := filepath.Join(t.TempDir(), "e.pcap")
	hdr := []byte{0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, byte(lt), 0, 0, 0}
	if err := os.WriteFile(pcap, hdr, 0o644); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for _, e := range exprs {
		args := []string{"-r", pcap, "-ddd"}
		if e != "" {
			args = append(args, e)
		}
		b, err := exec.Command(td, args...).Output()
		if err != nil {
			t.Fatalf("tcpdump %q: %v", e, err)
		}
		fmt.Fprintf(&out, "# %s\n%s", e, b)
	}
	if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readTcpdumpGolden(t *testing.T, path string) map[string][]bpf.Instruction {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]bpf.Instruction{}
	sc := bufio.NewScanner(f)
	var cur string
	var raw []bpf.RawInstruction
	flush := func() {
		if raw == nil {
			return
		}
		ins, ok := bpf.Disassemble(raw)
		if !ok {
			// Some (e.g. ancillary loads) do not disassemble; keep raw ones.
			t.Logf("%q: partially disassembled", cur)
		}
		out[cur] = ins
		raw = nil
	}
	for sc.Scan() {
		line := sc.Text()
		if e, ok := strings.CutPrefix(line, "# "); ok || line == "#" {
			flush()
			cur = e
			raw = []bpf.RawInstruction{}
			sc.Scan() // the instruction count
			continue
		}
		fs := strings.Fields(line)
		if len(fs) != 4 {
			t.Fatalf("%s: line %q", path, line)
		}
		var v [4]uint64
		for i, s := range fs {
			if v[i], err = strconv.ParseUint(s, 10, 32); err != nil {
				t.Fatalf("%s: line %q: %v", path, line, err)
			}
		}
		raw = append(raw, bpf.RawInstruction{Op: uint16(v[0]), Jt: uint8(v[1]), Jf: uint8(v[2]), K: uint32(v[3])})
	}
	flush()
	return out
}

func TestCompileErrors(t *testing.T) {
	for _, c := range []struct {
		expr, want string
		off        int
	}{
		{"tcp port http", `"http": want a port number`, 9},
		{"host example.com", "host names are not resolved", 5},
		{"net 10.0.0.1/8", "host bits set", 4},
		{"tcp and", "expression ends where a primitive was expected", 7},
		{"(tcp or udp", "missing )", 11},
		{"tcp)", `unexpected ")"`, 3},
		{"ether host 00:11:22:33:44:55", `"ether" is not supported`, 0},
		{"portrange 10", "want a port range", 10},
		{"tcp host 10.0.0.1", `"tcp" cannot qualify an address`, 9},
		{"ip6 host 10.0.0.1", "", 0}, // ip6 with an IPv4 address: accepted, matches nothing IPv4 (no error)
		{"udp port 70000", "want a port number", 9},
		{"vlan 5000", "want a number up to 4095", 5},
		{"src or dst host 1.2.3.4", `"or" after "src"`, 4},
		{"foo", `"foo" is not a primitive`, 0},
		{"tcp[13] & 2 != 0", `packet indexing`, 0},
		{"tcp & 1", `unexpected "&"`, 4},
	} {
		_, err := Compile(c.expr, capture.LinkEthernet)
		if c.want == "" {
			if c.expr == "ip6 host 10.0.0.1" {
				var fe *Error
				if !errors.As(err, &fe) {
					t.Errorf("%q: %v, want a *filter.Error", c.expr, err)
				}
			}
			continue
		}
		var fe *Error
		if !errors.As(err, &fe) || !strings.Contains(fe.Msg, c.want) || fe.Offset != c.off {
			t.Errorf("%q: error %v, want %q at offset %d", c.expr, err, c.want, c.off)
		}
	}
	if _, err := Compile("tcp", capture.LinkLinuxSLL); err == nil {
		t.Error("linux-sll: no error")
	}
	if _, err := Compile("vlan", capture.LinkRaw); err == nil {
		t.Error("vlan on raw IP: no error")
	}
}

// Raw IP links have no Ethernet header: the version nibble decides.
func TestCompileRaw(t *testing.T) {
	p, err := Compile("tcp port 80 or icmp6", capture.LinkRaw)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		if f.arp || f.etherType != 0 {
			continue
		}
		b := f.bytes()[14:]
		got, err := p.Match(b)
		if err != nil {
			t.Fatal(err)
		}
		want := f.proto == 58 || (f.proto == 6 && (f.sport == 80 || f.dport == 80) && f.fragOff&0x1fff == 0 && !f.v6frag)
		if got != want {
			t.Errorf("%s: match %v, want %v", f.name, got, want)
		}
	}
}

// vlan uses the kernel's ancillary loads, which the VM cannot run: check
// the program itself.
func TestCompileVLAN(t *testing.T) {
	p, err := Compile("vlan 10 and tcp", capture.LinkEthernet)
	if err != nil {
		t.Fatal(err)
	}
	// Raw form: x/net/bpf's String drops the false branch of jneq. The
	// offsets are the kernel's SKF_AD_VLAN_TAG_PRESENT (48) and
	// SKF_AD_VLAN_TAG (44) from SKF_AD_OFF (-4096).
	var got strings.Builder
	for _, r := range p.Raw {
		fmt.Fprintf(&got, "%d %d %d %d\n", r.Op, r.Jt, r.Jf, r.K)
	}
	want := `32 0 0 4294963248
21 16 0 0
32 0 0 4294963244
84 0 0 4095
21 0 13 10
40 0 0 12
21 0 2 2048
48 0 0 23
21 8 0 6
40 0 0 12
21 0 7 34525
48 0 0 20
21 4 0 6
48 0 0 20
21 0 3 44
48 0 0 54
21 0 1 6
6 0 0 262144
6 0 0 0
`
	if got.String() != want {
		t.Errorf("program:\n%s\nwant:\n%s", got.String(), want)
	}
}

func FuzzCompile(f *testing.F) {
	for _, e := range exprs {
		f.Add(e)
	}
	f.Fuzz(func(t *testing.T, e string) {
		p, err := Compile(e, capture.LinkEthernet)
		if err != nil {
			var fe *Error
			if !errors.As(err, &fe) {
				t.Fatalf("%q: error of type %T", e, err)
			}
			return
		}
		for _, fr := range frames {
			if _, err := p.Match(fr.bytes()); err != nil && !strings.Contains(e, "vlan") {
				t.Fatalf("%q: %v", e, err)
			}
		}
	})
}

func BenchmarkCompile(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile("host 10.0.0.1 and (tcp port 22 or udp portrange 1000-2000)", capture.LinkEthernet); err != nil {
			b.Fatal(err)
		}
	}
}
