package output

import (
	"fmt"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// bigSnapshot is a busy server: n sockets, most of them established TCP
// connections with TCP info, spread over 500 processes, a third with a
// conntrack age.
func bigSnapshot(n int) *model.Snapshot {
	procs := make(map[int32]*model.Process)
	for pid := int32(1000); pid < 1500; pid++ {
		procs[pid] = &model.Process{
			PID: pid, PPID: 1, Name: "java", Exe: "/usr/lib/jvm/java-21/bin/java",
			Cmdline: []string{"/usr/lib/jvm/java-21/bin/java", "-Xmx8g", "-Dconfig=/etc/app/app.conf", "-jar", "/opt/app/app.jar", fmt.Sprintf("--worker=%d", pid)},
			UID:     1000, User: "app", Start: t0.Add(-time.Duration(pid) * time.Minute),
		}
	}
	socks := make([]model.Socket, n)
	for i := range socks {
		s := &socks[i]
		pid := int32(1000 + i%500)
		s.Proto = model.ProtoTCP
		s.State = model.StateEstablished
		if i%10 == 0 {
			s.Proto = model.ProtoUDP
		}
		if i%2 == 0 {
			s.Local = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), uint16(1024+i%60000))
			s.Remote = netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 168, byte(i >> 16), byte(i >> 8)}), 443)
		} else {
			s.Local = netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)}), uint16(1024+i%60000))
			s.Remote = netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: 1}), 8443)
		}
		s.UID = 1000
		s.Inode = uint64(100000 + i)
		s.RecvQ, s.SendQ = uint32(i%7), uint32(i%13)
		if s.Proto == model.ProtoTCP {
			s.TCP = &model.TCPInfo{RTT: time.Duration(i%5000) * time.Microsecond, RTTVar: time.Millisecond,
				BytesAcked: uint64(i) * 1000, BytesReceived: uint64(i) * 700, BytesSent: uint64(i) * 1001,
				SegsOut: uint32(i), SegsIn: uint32(i), LastSend: 5 * time.Millisecond, LastRecv: 7 * time.Millisecond}
		}
		s.Owners = []model.Owner{{PID: pid, FDs: []int32{int32(10 + i%1000)}}}
		if i%3 == 0 {
			s.ConnStart = t0.Add(-time.Duration(i) * time.Second)
		}
	}
	return &model.Snapshot{Time: t0, Host: "big", Sockets: socks, Processes: procs}
}

func BenchmarkWriteJSON50k(b *testing.B) {
	snap := bigSnapshot(50000)
	opts := JSONOptions{UserName: testUsers}
	var size countingWriter
	if err := WriteJSON(&size, snap, snap.Sockets, opts); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		if err := WriteJSON(io.Discard, snap, snap.Sockets, opts); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWriteTable50k(b *testing.B) {
	snap := bigSnapshot(50000)
	opts := TableOptions{Width: 160, UserName: testUsers}
	b.ReportAllocs()
	for b.Loop() {
		if err := WriteTable(io.Discard, snap, snap.Sockets, opts); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWriteSummary50k(b *testing.B) {
	snap := bigSnapshot(50000)
	b.ReportAllocs()
	for b.Loop() {
		if err := WriteSummary(io.Discard, snap, snap.Sockets, false); err != nil {
			b.Fatal(err)
		}
	}
}

// countingWriter counts what is written to it.
type countingWriter int

func (c *countingWriter) Write(p []byte) (int, error) {
	*c += countingWriter(len(p))
	return len(p), nil
}
