package sockfilter

import (
	"errors"
	"net/netip"
	"path"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// testUsers stands in for /etc/passwd.
func testUsers(name string) (uint32, bool) {
	uid, ok := map[string]uint32{"root": 0, "www-data": 33, "alice": 1000, "_chrony": 998}[name]
	return uid, ok
}

func fixture() *model.Snapshot {
	ap := netip.MustParseAddrPort
	owner := func(pid int32) []model.Owner { return []model.Owner{{PID: pid, FDs: []int32{3}}} }
	return &model.Snapshot{
		Processes: map[int32]*model.Process{
			812:  {PID: 812, Name: "sshd", Exe: "/usr/sbin/sshd", UID: 0},
			2001: {PID: 2001, Name: "nginx", Exe: "/usr/sbin/nginx", UID: 0},
			2002: {PID: 2002, Name: "nginx", Exe: "/usr/sbin/nginx", UID: 33},
			4242: {PID: 4242, Name: "python3", Exe: "/usr/bin/python3.11", UID: 1000},
			5000: {PID: 5000, Name: "systemd-resolve", UID: 991}, // exe unreadable
			6000: {PID: 6000, Name: "chronyd", Exe: "/usr/sbin/chronyd", UID: 998},
			8000: {PID: 8000, Name: "kworker/0:1", Exe: "/tmp/.x/implant (deleted)", UID: 1000},
		},
		Sockets: []model.Socket{
			0: {Proto: model.ProtoTCP, State: model.StateListen, Local: ap("0.0.0.0:22"), Remote: ap("0.0.0.0:0"), Owners: owner(812)},
			1: {Proto: model.ProtoTCP, State: model.StateListen, Local: ap("[::]:80"), Remote: ap("[::]:0"),
				Owners: []model.Owner{{PID: 2001}, {PID: 2002}}},
			2: {Proto: model.ProtoTCP, State: model.StateEstablished, Local: ap("10.0.0.5:22"), Remote: ap("203.0.113.9:51514"), Owners: owner(812)},
			3: {Proto: model.ProtoTCP, State: model.StateEstablished, Local: ap("10.0.0.5:40222"), Remote: ap("198.51.100.7:4444"),
				UID: 1000, Owners: owner(4242)},
			4: {Proto: model.ProtoTCP, State: model.StateCloseWait, Local: ap("[::ffff:10.0.0.5]:80"), Remote: ap("[::ffff:192.0.2.44]:33000"),
				UID: 33, Owners: owner(2002)},
			5: {Proto: model.ProtoTCP, State: model.StateSynSent, Local: ap("10.0.0.5:41000"), Remote: ap("192.0.2.1:443"),
				UID: 991, Owners: owner(5000)},
			6: {Proto: model.ProtoTCP, State: model.StateNewSynRecv, Local: ap("10.0.0.5:22"), Remote: ap("192.0.2.200:60001")},
			7: {Proto: model.ProtoTCP, State: model.StateTimeWait, Local: ap("10.0.0.5:80"), Remote: ap("192.0.2.45:33001")},
			8: {Proto: model.ProtoUDP, State: model.StateClose, Local: ap("127.0.0.1:323"), Remote: ap("0.0.0.0:0"),
				UID: 998, Owners: owner(6000)},
			9: {Proto: model.ProtoUDP, State: model.StateEstablished, Local: ap("[fe80::1%eth0]:546"), Remote: ap("[fe80::2]:547"),
				Owners: owner(7777)}, // the process exited before /proc was read
			10: {Proto: model.ProtoTCP, State: model.StateEstablished, Local: ap("[2001:db8::5]:443"), Remote: ap("[2001:db8::99]:50000"),
				UID: 1000, Owners: owner(8000)},
			11: {Proto: model.ProtoTCP, State: model.StateSynRecv, Local: ap("10.0.0.5:22"), Remote: ap("192.0.2.201:60002")},
		},
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		want []int // indices of the fixture's sockets that match
	}{
		{"no criteria", Spec{}, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}},

		// States.
		{"kernel name", Spec{States: []string{"ESTABLISHED"}}, []int{2, 3, 9, 10}},
		{"ss short name, any case", Spec{States: []string{"Estab"}}, []int{2, 3, 9, 10}},
		{"ss dashed names", Spec{States: []string{"close-wait", "syn-sent"}}, []int{4, 5}},
		{"underscored", Spec{States: []string{"time_wait"}}, []int{7}},
		{"syn-recv includes request sockets", Spec{States: []string{"syn-recv"}}, []int{6, 11}},
		{"unconn", Spec{States: []string{"unconn"}}, []int{8}},
		{"closed", Spec{States: []string{"closed"}}, []int{8}},
		{"listen", Spec{States: []string{"listen"}}, []int{0, 1}},
		{"group all", Spec{States: []string{"all"}}, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}},
		{"group connected", Spec{States: []string{"connected"}}, []int{2, 3, 4, 5, 6, 7, 9, 10, 11}},
		{"group synchronized", Spec{States: []string{"synchronized"}}, []int{2, 3, 4, 6, 7, 9, 10, 11}},
		{"group listening", Spec{States: []string{"listening"}}, []int{0, 1, 8}},
		{"group bucket", Spec{States: []string{"bucket"}}, []int{6, 7, 11}},
		{"group big", Spec{States: []string{"big"}}, []int{0, 1, 2, 3, 4, 5, 8, 9, 10}},
		{"states OR", Spec{States: []string{"listen", "time-wait"}}, []int{0, 1, 7}},

		// Protocols and families.
		{"tcp", Spec{Protos: []string{"tcp"}}, []int{0, 1, 2, 3, 4, 5, 6, 7, 10, 11}},
		{"udp", Spec{Protos: []string{"UDP"}}, []int{8, 9}},
		{"tcp or udp", Spec{Protos: []string{"tcp", "udp"}}, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}},
		{"family 4", Spec{Family: "4"}, []int{0, 2, 3, 5, 6, 7, 8, 11}},
		{"family inet6 has dual-stack sockets", Spec{Family: "inet6"}, []int{1, 4, 9, 10}},
		{"family IPv4", Spec{Family: "IPv4"}, []int{0, 2, 3, 5, 6, 7, 8, 11}},

		// Ports.
		{"sport", Spec{SPorts: []string{"22"}}, []int{0, 2, 6, 11}},
		{"sport ss style", Spec{SPorts: []string{":80"}}, []int{1, 4, 7}},
		{"sport range", Spec{SPorts: []string{"40000-42000"}}, []int{3, 5}},
		{"sport OR", Spec{SPorts: []string{"22", "443"}}, []int{0, 2, 6, 10, 11}},
		{"dport", Spec{DPorts: []string{"4444"}}, []int{3}},
		{"dport 0 is listeners and unconnected", Spec{DPorts: []string{"0"}}, []int{0, 1, 8}},
		{"dport range", Spec{DPorts: []string{"443-547"}}, []int{5, 9}},
		{"full range", Spec{DPorts: []string{"0-65535"}}, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}},

		// Addresses.
		{"addr either end", Spec{Addrs: []string{"198.51.100.7"}}, []int{3}},
		{"addr cidr", Spec{Addrs: []string{"192.0.2.0/24"}}, []int{4, 5, 6, 7, 11}},
		{"v4 cidr matches v4-mapped", Spec{Addrs: []string{"10.0.0.0/8"}}, []int{2, 3, 4, 5, 6, 7, 11}},
		{"v4-mapped cidr matches v4", Spec{Addrs: []string{"::ffff:203.0.113.0/120"}}, []int{2}},
		{"v4-mapped addr", Spec{DstAddrs: []string{"::ffff:192.0.2.44"}}, []int{4}},
		{"ipv6 prefix", Spec{Addrs: []string{"2001:db8::/32"}}, []int{10}},
		{"bracketed ipv6", Spec{SrcAddrs: []string{"[2001:db8::5]"}}, []int{10}},
		{"zoned socket address", Spec{SrcAddrs: []string{"fe80::/10"}}, []int{9}},
		{"unspecified peer", Spec{DstAddrs: []string{"0.0.0.0"}}, []int{0, 8}},
		{"src only", Spec{SrcAddrs: []string{"10.0.0.5"}}, []int{2, 3, 4, 5, 6, 7, 11}},
		{"dst only", Spec{DstAddrs: []string{"10.0.0.5"}}, nil},
		{"unmasked cidr", Spec{DstAddrs: []string{"198.51.100.99/24"}}, []int{3}},
		{"addr OR", Spec{Addrs: []string{"127.0.0.1", "203.0.113.9"}}, []int{2, 8}},

		// Processes.
		{"pid", Spec{PIDs: []int{812}}, []int{0, 2}},
		{"pid of one of several owners", Spec{PIDs: []int{2002}}, []int{1, 4}},
		{"pid without process details", Spec{PIDs: []int{7777}}, []int{9}},
		{"pid OR", Spec{PIDs: []int{4242, 6000}}, []int{3, 8}},
		{"name exact", Spec{ProcessNames: []string{"nginx"}}, []int{1, 4}},
		{"name glob", Spec{ProcessNames: []string{"py*"}}, []int{3}},
		{"exe base name", Spec{ProcessNames: []string{"python3.11"}}, []int{3}},
		{"exe base glob", Spec{ProcessNames: []string{"chrony?"}}, []int{8}},
		{"deleted exe", Spec{ProcessNames: []string{"implant"}}, []int{10}},
		{"spoofed comm still matches as named", Spec{ProcessNames: []string{"kworker*"}}, []int{10}},
		{"name cut by the kernel", Spec{ProcessNames: []string{"systemd-resolved"}}, []int{5}},
		{"name is not a prefix match", Spec{ProcessNames: []string{"ngin"}}, nil},
		{"name is case-sensitive", Spec{ProcessNames: []string{"SSHD"}}, nil},
		{"name OR", Spec{ProcessNames: []string{"sshd", "chronyd"}}, []int{0, 2, 8}},

		// Users.
		{"user name, socket uid", Spec{Users: []string{"alice"}}, []int{3, 10}},
		{"user of an owner", Spec{Users: []string{"www-data"}}, []int{1, 4}},
		{"numeric uid", Spec{Users: []string{"991"}}, []int{5}},
		{"root: socket uid 0 or owner root", Spec{Users: []string{"root"}}, []int{0, 1, 2, 6, 7, 9, 11}},
		{"user OR", Spec{Users: []string{"_chrony", "33"}}, []int{1, 4, 8}},

		// Listening and combinations.
		{"listening", Spec{Listening: true}, []int{0, 1, 8}},
		{"listening tcp", Spec{Listening: true, Protos: []string{"tcp"}}, []int{0, 1}},
		{"listening AND established is empty", Spec{Listening: true, States: []string{"established"}}, nil},
		{"AND across criteria", Spec{States: []string{"established"}, SPorts: []string{"22"}, Family: "4"}, []int{2}},
		{"reverse shell question", Spec{States: []string{"estab"}, Users: []string{"alice"}, DPorts: []string{"4444", "1-1023"}}, []int{3}},
	}
	snap := fixture()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.spec.LookupUser = testUsers
			f, err := Parse(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			var got []int
			for i := range snap.Sockets {
				if f.Match(snap, &snap.Sockets[i]) {
					got = append(got, i)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("matching sockets (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMatchWithoutSnapshot(t *testing.T) {
	snap := fixture()
	f, err := Parse(Spec{ProcessNames: []string{"sshd"}})
	if err != nil {
		t.Fatal(err)
	}
	if f.Match(nil, &snap.Sockets[0]) {
		t.Error("name matched without process details")
	}
	f, _ = Parse(Spec{PIDs: []int{812}})
	if !f.Match(nil, &snap.Sockets[0]) {
		t.Error("pid did not match without process details")
	}
	var none *Filter
	if !none.Match(snap, &snap.Sockets[0]) {
		t.Error("nil filter does not match")
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		want string
	}{
		{"unknown state", Spec{States: []string{"estab", "half-open"}}, `--state "half-open": unknown state`},
		{"empty state", Spec{States: []string{""}}, `--state "": unknown state`},
		{"bad proto", Spec{Protos: []string{"sctp"}}, `--proto "sctp": want tcp or udp`},
		{"icmp is not a socket protocol here", Spec{Protos: []string{"icmp"}}, `--proto "icmp": want tcp or udp`},
		{"bad family", Spec{Family: "5"}, `--family "5": want 4 (inet, ipv4) or 6 (inet6, ipv6)`},
		{"port too big", Spec{SPorts: []string{"70000"}}, `--sport "70000": port out of range 0-65535`},
		{"negative port", Spec{DPorts: []string{"-1"}}, `--dport "-1": want a port or a range like 1000-2000`},
		{"service name", Spec{DPorts: []string{"https"}}, `--dport "https": not a port number (service names are not supported)`},
		{"empty port", Spec{SPorts: []string{""}}, `--sport "": want a port or a range like 1000-2000`},
		{"range end too big", Spec{SPorts: []string{"1000-70000"}}, `--sport "1000-70000": port out of range 0-65535`},
		{"backwards range", Spec{DPorts: []string{"2000-1000"}}, `--dport "2000-1000": range runs backwards`},
		{"open range", Spec{DPorts: []string{"1000-"}}, `--dport "1000-": want a port or a range like 1000-2000`},
		{"three parts", Spec{DPorts: []string{"1-2-3"}}, `--dport "1-2-3": not a port number (service names are not supported)`},
		{"bad address", Spec{Addrs: []string{"10.0.0.256"}}, `--addr "10.0.0.256": not an address or CIDR prefix`},
		{"host name", Spec{SrcAddrs: []string{"example.com"}}, `--src "example.com": not an address or CIDR prefix`},
		{"bad prefix length", Spec{DstAddrs: []string{"10.0.0.0/33"}}, `--dst "10.0.0.0/33": not an address or CIDR prefix`},
		{"zone", Spec{Addrs: []string{"fe80::1%eth0"}}, `--addr "fe80::1%eth0": IPv6 zones are not supported`},
		{"zero pid", Spec{PIDs: []int{0}}, `--pid "0": want a process id, 1-2147483647`},
		{"negative pid", Spec{PIDs: []int{-5}}, `--pid "-5": want a process id, 1-2147483647`},
		{"huge pid", Spec{PIDs: []int{1 << 40}}, `--pid "1099511627776": want a process id, 1-2147483647`},
		{"bad glob", Spec{ProcessNames: []string{"py[thon"}}, `--process "py[thon": bad glob pattern`},
		{"empty name", Spec{ProcessNames: []string{" "}}, `--process " ": empty name`},
		{"unknown user", Spec{Users: []string{"mallory"}}, `--user "mallory": no such user`},
		{"uid out of range", Spec{Users: []string{"4294967296"}}, `--user "4294967296": no such user`},
		{"empty user", Spec{Users: []string{""}}, `--user "": empty user`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.spec.LookupUser = testUsers
			f, err := Parse(tt.spec)
			if err == nil {
				t.Fatalf("Parse accepted %+v: %+v", tt.spec, f)
			}
			var fe *Error
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is a %T, want *Error", err, err)
			}
			if got := err.Error(); len(got) < len(tt.want) || got[:len(tt.want)] != tt.want {
				t.Errorf("error = %q, want it to start with %q", got, tt.want)
			}
		})
	}
}

func TestParseSystemUser(t *testing.T) {
	// root is uid 0 on every system this runs on; the default lookup
	// reads the real user database.
	f, err := Parse(Spec{Users: []string{"root"}})
	if err != nil {
		t.Fatal(err)
	}
	if !f.Match(nil, &model.Socket{UID: 0}) || f.Match(nil, &model.Socket{UID: 1}) {
		t.Error("root did not resolve to uid 0")
	}
}

// everythingSpec sets every criterion, so Match runs every check.
func everythingSpec() Spec {
	return Spec{
		States: []string{"connected"}, Protos: []string{"tcp"}, Family: "4",
		SPorts: []string{"1-65535"}, DPorts: []string{"0-65535"},
		Addrs: []string{"10.0.0.0/8"}, SrcAddrs: []string{"0.0.0.0/0"}, DstAddrs: []string{"0.0.0.0/0"},
		PIDs: []int{1, 4242}, ProcessNames: []string{"nginx", "py*"}, Users: []string{"alice"},
		LookupUser: testUsers,
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	snap := fixture()
	f, err := Parse(everythingSpec())
	if err != nil {
		t.Fatal(err)
	}
	if !f.Match(snap, &snap.Sockets[3]) {
		t.Fatal("the benchmark socket does not match: the benchmark would not run every check")
	}
	allocs := testing.AllocsPerRun(100, func() {
		for i := range snap.Sockets {
			f.Match(snap, &snap.Sockets[i])
		}
	})
	if allocs != 0 {
		t.Errorf("Match allocates %v times per pass", allocs)
	}
}

func BenchmarkMatch(b *testing.B) {
	snap := fixture()
	f, err := Parse(everythingSpec())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		for i := range snap.Sockets {
			f.Match(snap, &snap.Sockets[i])
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(snap.Sockets)), "ns/socket")
}

func TestGlobMatch(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"*", "", true},
		{"*", "kworker/0:1", true},
		{"kworker/*", "kworker/0:1", true},
		{"kworker*", "kworker/0:1", true},
		{"k?orker?0:1", "kworker/0:1", true},
		{"py*", "python3", true},
		{"py*", "ipython", false},
		{"*thon*", "python3", true},
		{"*.*.*", "a.b.c", true},
		{"*.*.*", "a.b", false},
		{"p?thon", "python", true},
		{"p?thon", "pthon", false},
		{"[a-c]at", "bat", true},
		{"[a-c]at", "rat", false},
		{"[^a-c]at", "rat", true},
		{"[^a-c]at", "bat", false},
		{"[\\]]x", "]x", true},
		{"a\\*", "a*", true},
		{"a\\*", "ab", false},
		{"写*", "写真同期", true},
		{"写?同期", "写真同期", true},
		{"[写真]真同期", "写真同期", true},
		{"a*b*c", "aXbYbZc", true},
		{"a*b*c", "aXbYbZ", false},
	}
	for _, tt := range tests {
		if got := globMatch(tt.pattern, tt.name); got != tt.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

// FuzzGlobMatch checks that globMatch agrees with path.Match wherever
// path.Match's '/' rule does not apply, and never panics.
func FuzzGlobMatch(f *testing.F) {
	for _, s := range [][2]string{{"py*", "python3"}, {"[^a-c]at", "rat"}, {"a\\*", "a*"}, {"*.*.*", "a.b.c"}, {"写?同期", "写真同期"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		got := globMatch(pattern, name)
		if strings.Contains(name, "/") || !utf8.ValidString(name) || !utf8.ValidString(pattern) {
			return
		}
		want, err := path.Match(pattern, name)
		if err != nil {
			return
		}
		if got != want {
			t.Fatalf("globMatch(%q, %q) = %v, path.Match = %v", pattern, name, got, want)
		}
	})
}
