package output

import (
	"bytes"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// t0 is the fixture snapshot's time.
var t0 = time.Date(2026, 11, 23, 2, 0, 0, 123456789, time.UTC)

// hostileName carries a terminal escape, a newline, a bidi override,
// DEL, a C1 control and an invalid byte: everything Sanitize must defuse.
const hostileName = "\x1b[31mev\nil\u202e\x7f\u0085\xff"

// testUsers is the uid→name lookup the tests use, so that golden files do
// not depend on the machine's /etc/passwd.
func testUsers(uid uint32) string {
	switch uid {
	case 0:
		return "root"
	case 33:
		return "www-data"
	case 1000:
		return "alice"
	case 1001:
		return "\x1b]0;pwned\x07" // a hostile user name still reaches the table escaped
	}
	return ""
}

// fixture is a snapshot with one socket of each kind the output has to
// handle: listeners of both families, a conntrack age, an age known only
// as a bound, unowned sockets, shared sockets, hostile names, TCP info.
func fixture() *model.Snapshot {
	ap := netip.MustParseAddrPort
	procs := map[int32]*model.Process{
		1: {PID: 1, PPID: 0, Name: "systemd", Exe: "/usr/lib/systemd/systemd", Cmdline: []string{"/sbin/init"},
			UID: 0, User: "root", Start: t0.Add(-50 * time.Hour)},
		812: {PID: 812, PPID: 1, Name: "sshd", Exe: "/usr/sbin/sshd", Cmdline: []string{"sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"},
			UID: 0, User: "root", Start: t0.Add(-49*time.Hour - 30*time.Minute)},
		2001: {PID: 2001, PPID: 1, Name: "nginx", Exe: "/usr/sbin/nginx", Cmdline: []string{"nginx: master process /usr/sbin/nginx"},
			UID: 0, User: "root", Start: t0.Add(-3 * time.Hour)},
		2002: {PID: 2002, PPID: 2001, Name: "nginx", Exe: "/usr/sbin/nginx", Cmdline: []string{"nginx: worker process"},
			UID: 33, User: "www-data", Start: t0.Add(-3*time.Hour + time.Second)},
		4242: {PID: 4242, PPID: 4000, Name: hostileName[:15], Exe: "/tmp/" + hostileName,
			Cmdline: []string{"\x1b]0;pwned\x07 \xff\xfe", "-e", "/bin/sh", "\u202egnp.exe"},
			UID:     1000, User: "alice", Start: t0.Add(-95 * time.Second), TTY: 34816},
		5000: {PID: 5000, PPID: 1, Name: "chronyd", UID: 1001, Start: t0.Add(-26 * time.Hour)},
		6000: {PID: 6000, PPID: 1, Name: "写真同期", Exe: "/opt/sync/写真同期", Cmdline: []string{"写真同期", "--daemon"},
			UID: 1000, User: "alice"}, // start unknown
	}
	socks := []model.Socket{
		{Proto: model.ProtoTCP, State: model.StateListen, Local: ap("0.0.0.0:22"), Remote: ap("0.0.0.0:0"),
			SendQ: 128, Inode: 20001, Owners: []model.Owner{{PID: 812, FDs: []int32{3}}, {PID: 1, FDs: []int32{45}}}},
		{Proto: model.ProtoTCP, State: model.StateListen, Local: ap("[::]:80"), Remote: ap("[::]:0"),
			SendQ: 511, Inode: 20002, Owners: []model.Owner{{PID: 2001, FDs: []int32{6}}, {PID: 2002, FDs: []int32{6}}}},
		{Proto: model.ProtoTCP, State: model.StateEstablished, Local: ap("10.0.0.5:22"), Remote: ap("203.0.113.9:51514"),
			RecvQ: 0, SendQ: 36, Inode: 20010, Owners: []model.Owner{{PID: 812, FDs: []int32{4}}},
			TCP: &model.TCPInfo{RTT: 12345 * time.Microsecond, RTTVar: 2500 * time.Microsecond, TotalRetrans: 2,
				BytesAcked: 40960, BytesReceived: 8192, BytesSent: 41000, SegsOut: 120, SegsIn: 95,
				LastSend: 40 * time.Millisecond, LastRecv: 1500 * time.Millisecond},
			ConnStart: t0.Add(-3*time.Hour - 12*time.Minute - 5*time.Second - 250*time.Millisecond)},
		{Proto: model.ProtoTCP, State: model.StateEstablished, Local: ap("10.0.0.5:40222"), Remote: ap("198.51.100.7:4444"),
			UID: 1000, Inode: 20011, Owners: []model.Owner{{PID: 4242, FDs: []int32{0, 1, 2}}},
			TCP: &model.TCPInfo{RTT: 800 * time.Microsecond, Retransmits: 1}},
		{Proto: model.ProtoTCP, State: model.StateCloseWait, Local: ap("[::ffff:10.0.0.5]:80"), Remote: ap("[::ffff:192.0.2.44]:33000"),
			RecvQ: 1, UID: 33, Inode: 20012, Owners: []model.Owner{{PID: 2002, FDs: []int32{17}}}},
		{Proto: model.ProtoTCP, State: model.StateSynRecv, Local: ap("10.0.0.5:22"), Remote: ap("192.0.2.200:60001")},
		{Proto: model.ProtoTCP, State: model.StateTimeWait, Local: ap("10.0.0.5:80"), Remote: ap("192.0.2.45:33001"),
			ConnStart: t0.Add(-42 * time.Second)},
		{Proto: model.ProtoUDP, State: model.StateClose, Local: ap("127.0.0.1:323"), Remote: ap("0.0.0.0:0"),
			UID: 1001, Inode: 20020, Owners: []model.Owner{{PID: 5000, FDs: []int32{5}}}},
		{Proto: model.ProtoUDP, State: model.StateEstablished, Local: ap("[fe80::1%eth0]:546"), Remote: ap("[fe80::2]:547"),
			UID: 4000, Inode: 20021, Iface: 2, Owners: []model.Owner{{PID: 7777, FDs: []int32{9}}}}, // process vanished
		{Proto: model.ProtoTCP, State: model.StateEstablished, Local: ap("10.0.0.5:55000"), Remote: ap("10.0.0.9:8443"),
			UID: 1000, Inode: 20030, Owners: []model.Owner{{PID: 6000, FDs: []int32{11}}}},
	}
	return &model.Snapshot{Time: t0, Host: "web-1", Sockets: socks, Processes: procs}
}

// nsFixture is the fixture with sockets spread over namespaces.
func nsFixture() *model.Snapshot {
	snap := fixture()
	for i := range snap.Sockets {
		if i%3 == 1 {
			snap.Sockets[i].Netns = "/proc/4242/ns/net"
		} else if i%3 == 2 {
			snap.Sockets[i].Netns = "blue"
		}
	}
	return snap
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (-want +got):\n%s", path, cmp.Diff(string(want), string(got)))
	}
}
