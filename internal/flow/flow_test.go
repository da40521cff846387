package flow

import (
	"context"
	"encoding/binary"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/tcpsentry/tcpsentry/internal/capture"
	"github.com/tcpsentry/tcpsentry/internal/flow/decode"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

func TestConnStateTCP(t *testing.T) {
	I, S, H, P, E, C, R := EndpointInactive, EndpointSynSent, EndpointSynAckSent, EndpointPartial, EndpointEstablished, EndpointClosed, EndpointReset
	tests := []struct {
		os, rs     EndpointState
		osz, rsz   uint64
		hist, want string
	}{
		{S, I, 0, 0, "S", "S0"},
		{E, E, 10, 10, "ShADad", "S1"},
		{C, C, 10, 10, "ShADadFf", "SF"},
		{S, R, 0, 0, "Sr", "REJ"},
		{H, R, 0, 0, "Hr", "REJ"},
		{R, R, 0, 0, "SrR", "REJ"},
		{R, R, 5, 0, "ShADR", "RSTR"},
		{E, R, 5, 0, "ShADr", "RSTR"},
		{P, R, 0, 0, "Dr", "RSTRH"},
		{I, R, 0, 0, "r", "RSTRH"},
		{R, I, 0, 0, "SR", "RSTOS0"},
		{R, I, 0, 0, "^SR", "RSTOS0"},
		{R, I, 0, 0, "R", "OTH"},
		{R, I, 0, 0, "SAR", "OTH"},
		{R, E, 0, 0, "ShAR", "RSTO"},
		{C, E, 0, 0, "ShAF", "S2"},
		{C, I, 0, 0, "SF", "SH"},
		{C, P, 0, 0, "DFd", "SH"},
		{E, C, 0, 0, "ShAf", "S3"},
		{P, C, 0, 0, "Df", "SHR"},
		{I, C, 0, 0, "f", "SHR"},
		{P, P, 1, 1, "Dd", "OTH"},
		{I, E, 0, 0, "^h", "OTH"},
		{E, I, 0, 0, "A", "OTH"},
	}
	for _, tc := range tests {
		if got := ConnStateTCP(tc.os, tc.rs, tc.osz, tc.rsz, tc.hist); string(got) != tc.want {
			t.Errorf("ConnStateTCP(%d, %d, %d, %d, %q) = %s, want %s", tc.os, tc.rs, tc.osz, tc.rsz, tc.hist, got, tc.want)
		}
	}
}

func TestConnStateUDP(t *testing.T) {
	for _, tc := range []struct {
		o, r bool
		want model.ConnState
	}{{true, true, model.ConnSF}, {true, false, model.ConnS0}, {false, true, model.ConnSHR}, {false, false, model.ConnOTH}} {
		if got := ConnStateUDP(tc.o, tc.r); got != tc.want {
			t.Errorf("ConnStateUDP(%v, %v) = %s, want %s", tc.o, tc.r, got, tc.want)
		}
	}
}

// pkt is a crafted TCP/UDP/ICMP packet for tests.
type pkt struct {
	at         time.Duration // since t0
	src, dst   string        // "10.0.0.1:1234"
	proto      uint8
	flags      model.TCPFlags
	seq, ack   uint32
	win        uint16
	payload    int
	badSum     bool
	icmpType   uint8
	fragOff    int // IPv4 fragment offset (bytes); with mf it makes a fragment
	mf         bool
	id         uint16
	rawPayload []byte // replaces the transport bytes (fragments)
}

var t0 = time.Unix(1700000000, 0).UTC()

// ipv4Frame builds an Ethernet/IPv4 frame with correct checksums.
func ipv4Frame(p pkt) []byte {
	src, dst := netip.MustParseAddrPort(p.src), netip.MustParseAddrPort(p.dst)
	var l4 []byte
	switch p.proto {
	case ipProtoTCP:
		l4 = make([]byte, 20+p.payload)
		binary.BigEndian.PutUint16(l4[0:], src.Port())
		binary.BigEndian.PutUint16(l4[2:], dst.Port())
		binary.BigEndian.PutUint32(l4[4:], p.seq)
		binary.BigEndian.PutUint32(l4[8:], p.ack)
		l4[12] = 5 << 4
		l4[13] = byte(p.flags)
		win := p.win
		if win == 0 {
			win = 65535
		}
		if p.win == 1 {
			win = 0
		}
		binary.BigEndian.PutUint16(l4[14:], win)
	case ipProtoUDP:
		l4 = make([]byte, 8+p.payload)
		binary.BigEndian.PutUint16(l4[0:], src.Port())
		binary.BigEndian.PutUint16(l4[2:], dst.Port())
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
	case ipProtoICMP:
		l4 = make([]byte, 8+p.payload)
		l4[0] = p.icmpType
	}
	var s16, d16 [16]byte
	copy(s16[12:], src.Addr().AsSlice())
	copy(d16[12:], dst.Addr().AsSlice())
	pseudo := decode.PseudoHeaderSum(s16, d16, false, p.proto, len(l4))
	switch p.proto {
	case ipProtoTCP:
		binary.BigEndian.PutUint16(l4[16:], ^decode.Checksum(l4, pseudo))
	case ipProtoUDP:
		binary.BigEndian.PutUint16(l4[6:], ^decode.Checksum(l4, pseudo))
	case ipProtoICMP:
		binary.BigEndian.PutUint16(l4[2:], ^decode.Checksum(l4, 0))
	}
	if p.badSum {
		l4[4] ^= 0x01
	}
	if p.rawPayload != nil {
		l4 = p.rawPayload
	}
	ip := make([]byte, 20, 20+len(l4))
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
	binary.BigEndian.PutUint16(ip[4:], p.id)
	fo := uint16(p.fragOff / 8)
	if p.mf {
		fo |= 0x2000
	}
	binary.BigEndian.PutUint16(ip[6:], fo)
	ip[8] = 64
	ip[9] = p.proto
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	copy(ip[12:], s4[:])
	copy(ip[16:], d4[:])
	binary.BigEndian.PutUint16(ip[10:], ^decode.Checksum(ip, 0))
	eth := make([]byte, 14, 14+len(ip)+len(l4))
	binary.BigEndian.PutUint16(eth[12:], 0x0800)
	return append(append(eth, ip...), l4...)
}

// runPkts writes the packets to a pcap via capture.Writer and tracks it.
func runPkts(t *testing.T, opts Options, ps []pkt) []*model.Conn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "x.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w, err := capture.NewWriter(f, capture.LinkEthernet)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if err := w.WritePacket(t0.Add(p.at), ipv4Frame(p), 0); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	var out []*model.Conn
	if _, err := Run(context.Background(), Input{Paths: []string{path}, Options: opts, Emit: func(c *model.Conn) { out = append(out, c) },
		Warn: func(err error) { t.Logf("warn: %v", err) }}); err != nil {
		t.Fatal(err)
	}
	return out
}

const (
	fS  = model.FlagSYN
	fA  = model.FlagACK
	fF  = model.FlagFIN
	fR  = model.FlagRST
	fP  = model.FlagPSH
	cli = "10.0.0.1:40000"
	srv = "10.0.0.2:80"
)

func tcpPkt(at time.Duration, src, dst string, flags model.TCPFlags, seq, ack uint32, payload int) pkt {
	return pkt{at: at, src: src, dst: dst, proto: ipProtoTCP, flags: flags, seq: seq, ack: ack, payload: payload}
}

func summary(cs []*model.Conn) string {
	var b strings.Builder
	for _, c := range cs {
		fmt.Fprintf(&b, "%s %s>%s %s %s o=%d/%d/%s r=%d/%d/%s miss=%d first=%s end=%s\n", c.Proto, c.Orig, c.Resp, c.ConnState, c.History,
			c.OrigPkts, c.OrigIPBytes, fieldValue(c, "orig_bytes"), c.RespPkts, c.RespIPBytes, fieldValue(c, "resp_bytes"), c.MissedBytes, c.FirstFlags, c.End)
	}
	return b.String()
}

func TestTrackerScenarios(t *testing.T) {
	ms := time.Millisecond
	handshake := []pkt{
		tcpPkt(0, cli, srv, fS, 100, 0, 0),
		tcpPkt(1*ms, srv, cli, fS|fA, 500, 101, 0),
		tcpPkt(2*ms, cli, srv, fA, 101, 501, 0),
	}
	tests := []struct {
		name string
		opts Options
		pkts []pkt
		want string
	}{
		{"full connection", Options{}, append(append([]pkt{}, handshake...),
			tcpPkt(3*ms, cli, srv, fA|fP, 101, 501, 10),
			tcpPkt(4*ms, srv, cli, fA|fP, 501, 111, 20),
			tcpPkt(5*ms, cli, srv, fF|fA, 111, 521, 0),
			tcpPkt(6*ms, srv, cli, fF|fA, 521, 112, 0),
			tcpPkt(7*ms, cli, srv, fA, 112, 522, 0)),
			"tcp 10.0.0.1:40000>10.0.0.2:80 SF ShADdFf o=5/210/10 r=3/140/20 miss=0 first=S end=eof\n"},
		{"rejected", Options{}, []pkt{tcpPkt(0, cli, srv, fS, 100, 0, 0), tcpPkt(ms, srv, cli, fR|fA, 0, 101, 0)},
			"tcp 10.0.0.1:40000>10.0.0.2:80 REJ Sr o=1/40/0 r=1/40/0 miss=0 first=S end=eof\n"},
		{"attempt times out, then a new connection", Options{}, []pkt{tcpPkt(0, cli, srv, fS, 100, 0, 0), tcpPkt(6*time.Second, cli, srv, fS, 100, 0, 0)},
			"tcp 10.0.0.1:40000>10.0.0.2:80 S0 S o=1/40/- r=0/0/- miss=0 first=S end=timeout\n" +
				"tcp 10.0.0.1:40000>10.0.0.2:80 S0 S o=1/40/- r=0/0/- miss=0 first=S end=eof\n"},
		{"syn-ack first is flipped", Options{}, []pkt{tcpPkt(0, srv, cli, fS|fA, 500, 101, 0), tcpPkt(ms, cli, srv, fA, 101, 501, 0)},
			"tcp 10.0.0.1:40000>10.0.0.2:80 S1 ^hA o=1/40/0 r=1/40/0 miss=0 first=SA end=eof\n"},
		{"retransmission and zero window", Options{}, append(append([]pkt{}, handshake...),
			tcpPkt(3*ms, cli, srv, fA, 101, 501, 10),
			tcpPkt(4*ms, cli, srv, fA, 101, 501, 10),
			pkt{at: 5 * ms, src: srv, dst: cli, proto: ipProtoTCP, flags: fA, seq: 501, ack: 111, win: 1}),
			"tcp 10.0.0.1:40000>10.0.0.2:80 S1 ShADTaw o=4/180/10 r=2/80/0 miss=0 first=S end=eof\n"},
		{"content gap", Options{}, append(append([]pkt{}, handshake...),
			tcpPkt(3*ms, cli, srv, fA, 101, 501, 10),
			tcpPkt(4*ms, cli, srv, fA, 131, 501, 10),
			tcpPkt(5*ms, srv, cli, fA, 501, 141, 0)),
			"tcp 10.0.0.1:40000>10.0.0.2:80 S1 ShADaG o=4/180/40 r=2/80/0 miss=20 first=S end=eof\n"},
		{"bad checksum dropped with -checksums", Options{Checksums: true}, []pkt{
			tcpPkt(0, cli, srv, fS, 100, 0, 0),
			{at: ms, src: srv, dst: cli, proto: ipProtoTCP, flags: fS | fA, seq: 500, ack: 101, badSum: true}},
			"tcp 10.0.0.1:40000>10.0.0.2:80 S0 Sc o=1/40/- r=0/0/- miss=0 first=S end=eof\n"},
		{"udp and icmp", Options{}, []pkt{
			{at: 0, src: "10.0.0.1:5000", dst: "10.0.0.9:53", proto: ipProtoUDP, payload: 30},
			{at: ms, src: "10.0.0.9:53", dst: "10.0.0.1:5000", proto: ipProtoUDP, payload: 90},
			{at: 2 * ms, src: "10.0.0.1:0", dst: "10.0.0.9:0", proto: ipProtoICMP, icmpType: 8, payload: 56},
			{at: 3 * ms, src: "10.0.0.9:0", dst: "10.0.0.1:0", proto: ipProtoICMP, icmpType: 0, payload: 56}},
			"udp 10.0.0.1:5000>10.0.0.9:53 SF Dd o=1/58/30 r=1/118/90 miss=0 first= end=eof\n" +
				"icmp 10.0.0.1:8>10.0.0.9:0 OTH  o=1/84/56 r=1/84/56 miss=0 first= end=eof\n"},
		{"ipv4 fragments are reassembled and counted once", Options{}, func() []pkt {
			whole := ipv4Frame(pkt{src: "10.0.0.1:5000", dst: "10.0.0.9:53", proto: ipProtoUDP, payload: 100})[34:]
			return []pkt{
				{at: ms, src: "10.0.0.1:5000", dst: "10.0.0.9:53", proto: ipProtoUDP, id: 7, fragOff: 64, rawPayload: whole[64:]},
				{at: 0, src: "10.0.0.1:5000", dst: "10.0.0.9:53", proto: ipProtoUDP, id: 7, mf: true, rawPayload: whole[:64]},
			}
		}(),
			"udp 10.0.0.1:5000>10.0.0.9:53 S0 D o=1/128/- r=0/0/- miss=0 first= end=eof\n"},
		{"table bound evicts least recently active", Options{MaxFlows: 2}, []pkt{
			tcpPkt(0, "10.0.0.1:1", srv, fS, 1, 0, 0),
			tcpPkt(ms, "10.0.0.1:2", srv, fS, 1, 0, 0),
			tcpPkt(2*ms, "10.0.0.1:1", srv, fA, 2, 1, 0),
			tcpPkt(3*ms, "10.0.0.1:3", srv, fS, 1, 0, 0)},
			"tcp 10.0.0.1:2>10.0.0.2:80 S0 S o=1/40/- r=0/0/- miss=0 first=S end=evicted\n" +
				"tcp 10.0.0.1:1>10.0.0.2:80 S0 SA o=2/80/0 r=0/0/0 miss=0 first=S end=eof\n" +
				"tcp 10.0.0.1:3>10.0.0.2:80 S0 S o=1/40/- r=0/0/- miss=0 first=S end=eof\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := summary(runPkts(t, tc.opts, tc.pkts))
			if got != tc.want {
				t.Errorf("got\n%swant\n%s", got, tc.want)
			}
		})
	}
}

// TestRobustnessFlows runs every robustness capture through the whole
// pipeline: no panic, and every warning names the file and packet.
func TestRobustnessFlows(t *testing.T) {
	root := filepath.Join("..", "capture", "testdata", "robustness")
	var files []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	sort.Strings(files)
	if len(files) == 0 {
		t.Fatal("no robustness files")
	}
	for _, f := range files {
		var n int
		st, err := Run(context.Background(), Input{Paths: []string{f}, Options: Options{Checksums: true},
			Emit: func(*model.Conn) { n++ },
			Warn: func(err error) {
				if !strings.Contains(err.Error(), f) {
					t.Errorf("warning does not name the file: %v", err)
				}
			}})
		if err != nil {
			t.Logf("%s: %v", f, err)
		}
		if st.Emitted != uint64(n) {
			t.Errorf("%s: emitted %d, counted %d", f, st.Emitted, n)
		}
	}
}

// synFrame writes a SYN from a given source into buf (raw IPv4, no checksums).
func synFrame(buf []byte, src uint32, sport uint16) []byte {
	b := buf[:40]
	clear(b)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], 40)
	b[8] = 64
	b[9] = ipProtoTCP
	binary.BigEndian.PutUint32(b[12:], src)
	binary.BigEndian.PutUint32(b[16:], 0x0a000002)
	binary.BigEndian.PutUint16(b[20:], sport)
	binary.BigEndian.PutUint16(b[22:], 80)
	binary.BigEndian.PutUint32(b[24:], 1)
	b[32] = 5 << 4
	b[33] = byte(model.FlagSYN)
	return b
}

func heapInuse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestMillionConcurrentFlows: a million concurrent flows against a
// 500k-flow table stay within the bound and are evicted oldest first.
// Takes a few seconds; skipped with -short.
func TestMillionConcurrentFlows(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	const n, bound = 1_000_000, 500_000
	var emitted int
	tr := NewTracker(Options{MaxFlows: bound}, func(*model.Conn) { emitted++ })
	buf := make([]byte, 64)
	ts := t0.UnixNano()
	for i := 0; i < n; i++ {
		b := synFrame(buf, 0x0b000000+uint32(i), 1024+uint16(i%50000))
		if err := tr.IP(ts+int64(i)*1000, false, b, len(b)); err != nil {
			t.Fatal(err)
		}
		if i%100000 == 0 && tr.Stats().Active > bound {
			t.Fatalf("table grew to %d", tr.Stats().Active)
		}
	}
	st := tr.Stats()
	if st.Active != bound || st.Evicted != n-bound || emitted != n-bound {
		t.Errorf("active %d evicted %d emitted %d", st.Active, st.Evicted, emitted)
	}
	inuse := heapInuse()
	runtime.KeepAlive(tr)
	t.Logf("%d flows in table, heap in use %d MiB (%d bytes/flow)", st.Active, inuse>>20, inuse/uint64(st.Active))
	if inuse > 1<<30 {
		t.Errorf("heap %d MiB for %d flows", inuse>>20, bound)
	}
}

// TestSpoofedFlood: a million packets from random spoofed sources keep
// memory flat once the table is full, and the evictions are counted.
func TestSpoofedFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	const bound = 65536
	tr := NewTracker(Options{MaxFlows: bound}, nil)
	buf := make([]byte, 64)
	ts := t0.UnixNano()
	x := uint32(2463534242)
	var mid uint64
	for i := 0; i < 1_000_000; i++ {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b := synFrame(buf, x, uint16(x>>7))
		tr.IP(ts+int64(i)*100, false, b, len(b))
		if i == 300_000 {
			mid = heapInuse()
		}
	}
	end := heapInuse()
	runtime.KeepAlive(tr)
	st := tr.Stats()
	t.Logf("heap after 300k packets %d KiB, after 1M %d KiB; evicted %d", mid>>10, end>>10, st.Evicted)
	if st.Active > bound || st.Evicted < 900_000 {
		t.Errorf("active %d evicted %d", st.Active, st.Evicted)
	}
	if end > mid+mid/4 {
		t.Errorf("heap grew from %d to %d KiB", mid>>10, end>>10)
	}
}

// BenchmarkTrackPacket measures decode+track of a data packet on an
// established connection (the hot path): no allocation per packet.
func BenchmarkTrackPacket(b *testing.B) {
	tr := NewTracker(Options{}, nil)
	ps := []pkt{
		tcpPkt(0, cli, srv, fS, 100, 0, 0),
		tcpPkt(1, srv, cli, fS|fA, 500, 101, 0),
		tcpPkt(2, cli, srv, fA, 101, 501, 0),
	}
	for _, p := range ps {
		f := ipv4Frame(p)
		tr.Packet(&capture.Packet{Time: t0.Add(p.at), Data: f, WireLen: len(f), Link: capture.LinkEthernet})
	}
	data := ipv4Frame(tcpPkt(0, cli, srv, fA, 101, 501, 1000))
	ack := ipv4Frame(tcpPkt(0, srv, cli, fA, 501, 101, 0))
	pd := &capture.Packet{Data: data, WireLen: len(data), Link: capture.LinkEthernet, Time: t0}
	pa := &capture.Packet{Data: ack, WireLen: len(ack), Link: capture.LinkEthernet, Time: t0}
	seq, ts := uint32(101), t0
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ts = ts.Add(time.Microsecond)
		if i&1 == 0 {
			binary.BigEndian.PutUint32(data[14+20+4:], seq)
			seq += 1000
			pd.Time = ts
			tr.Packet(pd)
		} else {
			binary.BigEndian.PutUint32(ack[14+20+8:], seq)
			pa.Time = ts
			tr.Packet(pa)
		}
	}
}

// BenchmarkNewFlows measures SYN-flood style traffic: every packet a new flow.
func BenchmarkNewFlows(b *testing.B) {
	tr := NewTracker(Options{MaxFlows: 1 << 16}, nil)
	buf := make([]byte, 64)
	ts := t0.UnixNano()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		p := synFrame(buf, 0x0b000000+uint32(i), uint16(i))
		tr.IP(ts+int64(i), false, p, len(p))
	}
}

// TestTruncatedWhileReading: a capture truncated while Run reads it (a
// fault in the memory-mapped file) ends that file with an error instead
// of crashing.
func TestTruncatedWhileReading(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("files are memory-mapped on Linux only")
	}
	path := filepath.Join(t.TempDir(), "x.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w, err := capture.NewWriter(f, capture.LinkRaw)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	for i := 0; i < 200_000; i++ {
		if err := w.WritePacket(t0.Add(time.Duration(i)*time.Microsecond), synFrame(buf, 0x0b000000+uint32(i), 1024), 0); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	var warned []error
	_, err = Run(context.Background(), Input{Paths: []string{path},
		Warn: func(err error) { warned = append(warned, err) },
		Progress: func(_ string, read, _ int64) {
			if read > 1<<20 {
				os.Truncate(path, 1<<20)
			}
		}})
	if err == nil || !strings.Contains(err.Error(), "truncated while being read") {
		t.Errorf("Run: %v, want the fault as an error; warnings %v", err, warned)
	}
}

// BenchmarkFlowMemory reports the heap per concurrent established TCP
// flow (handshake and data both ways, nothing closed): the flow table's
// memory budget. Each iteration fills a fresh tracker with 200,000 flows.
func BenchmarkFlowMemory(b *testing.B) {
	const n = 200_000
	buf := make([]byte, 64+100)
	seg := func(src, dst uint32, sport, dport uint16, flags model.TCPFlags, seq, ack uint32, payload int) []byte {
		p := synFrame(buf[:40+payload], src, sport)
		binary.BigEndian.PutUint16(p[2:], uint16(40+payload))
		binary.BigEndian.PutUint32(p[16:], dst)
		binary.BigEndian.PutUint16(p[22:], dport)
		binary.BigEndian.PutUint32(p[24:], seq)
		binary.BigEndian.PutUint32(p[28:], ack)
		p[33] = byte(flags)
		binary.BigEndian.PutUint16(p[34:], 64240)
		return p[:40+payload]
	}
	b.ReportAllocs()
	var perFlow float64
	for i := 0; i < b.N; i++ {
		before := heapInuse()
		tr := NewTracker(Options{}, nil)
		ts := t0.UnixNano()
		for j := 0; j < n; j++ {
			cl, sv, cp := 0x0a000000+uint32(j), uint32(0xc6120001), uint16(1024+j%60000)
			// One buffer for all: each segment is built right before use.
			for _, p := range []func() []byte{
				func() []byte { return seg(cl, sv, cp, 443, fS, 100, 0, 0) },
				func() []byte { return seg(sv, cl, 443, cp, fS|fA, 500, 101, 0) },
				func() []byte { return seg(cl, sv, cp, 443, fA, 101, 501, 0) },
				func() []byte { return seg(cl, sv, cp, 443, fA|fP, 101, 501, 100) },
				func() []byte { return seg(sv, cl, 443, cp, fA|fP, 501, 201, 100) },
			} {
				ts += 1000
				pkt := p()
				if err := tr.IP(ts, false, pkt, len(pkt)); err != nil {
					b.Fatal(err)
				}
			}
		}
		if tr.Stats().Active != n {
			b.Fatalf("%d flows active", tr.Stats().Active)
		}
		perFlow = float64(heapInuse()-before) / n
		runtime.KeepAlive(tr)
	}
	b.ReportMetric(perFlow, "B/flow")
}

// TestFlowSize pins the per-flow state that the memory budget (about 370
// bytes per flow with the table's key, links, index and timer) is built on.
func TestFlowSize(t *testing.T) {
	if n := unsafe.Sizeof(flow{}); n > 280 {
		t.Errorf("flow is %d bytes, want ≤ 280", n)
	}
}
