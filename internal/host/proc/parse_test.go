package proc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// statLine formats a /proc/PID/stat line as the kernel does (fs/proc/array.c).
func statLine(pid int, comm string, ppid int, tty int, start uint64) string {
	return fmt.Sprintf("%d (%s) S %d %d %d %d -1 4194560 1234 0 0 0 12 3 0 0 20 0 1 0 %d 12345678 456 "+
		"18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
		pid, comm, ppid, pid, pid, tty, start)
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    statInfo
		wantErr string
	}{
		{"plain", statLine(42, "sshd", 1, 0, 5000), statInfo{State: 'S', Comm: "sshd", PPID: 1, StartTime: 5000}, ""},
		{"tty", statLine(42, "bash", 41, 34816, 7), statInfo{State: 'S', Comm: "bash", PPID: 41, TTY: 34816, StartTime: 7}, ""},
		{"spaces and parens in comm", statLine(42, "a) S 9 (b", 3, 0, 8),
			statInfo{State: 'S', Comm: "a) S 9 (b", PPID: 3, StartTime: 8}, ""},
		{"newline in comm", statLine(42, "x\ny", 3, 0, 8), statInfo{State: 'S', Comm: "x\ny", PPID: 3, StartTime: 8}, ""},
		{"empty comm", statLine(42, "", 3, 0, 8), statInfo{State: 'S', PPID: 3, StartTime: 8}, ""},
		{"invalid utf8 comm", statLine(42, "\xff\xfe", 3, 0, 8), statInfo{State: 'S', Comm: "\xff\xfe", PPID: 3, StartTime: 8}, ""},
		{"negative tty", statLine(1, "k", 0, -1, 8), statInfo{State: 'S', Comm: "k", TTY: 0xffffffff, StartTime: 8}, ""},
		{"huge starttime", statLine(1, "k", 0, 0, 1<<63), statInfo{State: 'S', Comm: "k", StartTime: 1 << 63}, ""},
		{"no parens", "42 sshd S 1", statInfo{}, "field comm"},
		{"only close paren", "42 sshd) S 1", statInfo{}, "field comm"},
		{"truncated", "42 (sshd) S 1 42 42 0 -1", statInfo{State: 'S', Comm: "sshd", PPID: 1}, "field 9: too few fields"},
		{"bad ppid", "42 (sshd) S x 1", statInfo{State: 'S', Comm: "sshd"}, "field ppid"},
		{"bad starttime", strings.Replace(statLine(1, "k", 0, 0, 9), " 9 ", " 9x ", 1), statInfo{State: 'S', Comm: "k"}, "field starttime"},
		{"empty", "", statInfo{}, "field comm"},
		{"zombie", "7 (defunct) Z 1 7", statInfo{State: 'Z', Comm: "defunct", PPID: 1}, "too few fields"},
		{"newline for state", "7 (x) \n", statInfo{Comm: "x"}, "field 4: too few fields"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStat([]byte(tt.in))
			checkErr(t, err, tt.wantErr)
			if err == nil || tt.want != (statInfo{}) {
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("parseStat (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// TestParseStatSelf parses the test process's own stat: the live format.
func TestParseStatSelf(t *testing.T) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Skip(err)
	}
	st, err := parseStat(b)
	if err != nil {
		t.Fatal(err)
	}
	if st.PPID != int32(os.Getppid()) || st.StartTime == 0 || st.Comm == "" {
		t.Errorf("parseStat(%q) = %+v, ppid want %d", b, st, os.Getppid())
	}
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want != "" && err == nil:
		t.Fatalf("no error, want one containing %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Fatalf("error %q does not contain %q", err, want)
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("sshd"), int32(1), uint64(5000), []byte(statLine(42, "sshd", 1, 0, 5000)))
	f.Add([]byte("a) S 9 (b"), int32(0), uint64(0), []byte("1 (a) b) c"))
	f.Add([]byte("x\ny"), int32(-1), uint64(1<<63), []byte(")("))
	f.Add([]byte(""), int32(7), uint64(7), []byte("42 (sshd) S 1 42 42 0 -1"))
	f.Fuzz(func(t *testing.T, comm []byte, ppid int32, start uint64, raw []byte) {
		parseStat(raw) //nolint:errcheck // must not panic, whatever the bytes
		// Whatever a process names itself, the fields after it parse.
		line := statLine(9, string(comm), int(ppid), 0, start)
		st, err := parseStat([]byte(line))
		if err != nil {
			t.Fatalf("parseStat(%q): %v", line, err)
		}
		if st.Comm != string(comm) || st.PPID != ppid || st.StartTime != start {
			t.Fatalf("parseStat(%q) = %+v", line, st)
		}
	})
}

func TestParseStatusUID(t *testing.T) {
	tests := []struct {
		name, in string
		want     uint32
		wantErr  string
	}{
		{"root", "Name:\tbash\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n", 0, ""},
		{"real differs from effective", "Name:\tsu\nUid:\t1000\t0\t0\t0\n", 1000, ""},
		{"max", "Uid:\t4294967295\t0\t0\t0", 4294967295, ""},
		{"no trailing newline", "Uid:\t65534\t65534\t65534\t65534", 65534, ""},
		{"Name looks like Uid", "Name:\tUid:\t5\nUid:\t7\t7\t7\t7\n", 7, ""},
		{"missing", "Name:\tbash\nGid:\t0\n", 0, "field Uid: missing"},
		{"empty", "", 0, "field Uid: missing"},
		{"no numbers", "Uid:\n", 0, "too few fields"},
		{"overflow", "Uid:\t4294967296\t0\n", 0, "out of range"},
		{"garbage", "Uid:\tx\t0\n", 0, "invalid syntax"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatusUID([]byte(tt.in))
			checkErr(t, err, tt.wantErr)
			if got != tt.want {
				t.Errorf("parseStatusUID = %d, want %d", got, tt.want)
			}
		})
	}
}

func FuzzParseStatusUID(f *testing.F) {
	f.Add([]byte("Name:\tbash\nUid:\t0\t0\t0\t0\n"), uint32(0))
	f.Add([]byte("Uid:\n"), uint32(1000))
	f.Add([]byte("Uid:\t\t\t"), uint32(4294967295))
	f.Fuzz(func(t *testing.T, raw []byte, uid uint32) {
		parseStatusUID(raw) //nolint:errcheck // must not panic
		in := fmt.Sprintf("Name:\tx\nUid:\t%d\t0\t0\t0\n", uid)
		if got, err := parseStatusUID([]byte(in)); err != nil || got != uid {
			t.Fatalf("parseStatusUID(%q) = %d, %v", in, got, err)
		}
	})
}

func TestParseCmdline(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
	}{
		{"kernel thread", "", nil},
		{"argv", "/usr/sbin/sshd\x00-D\x00", []string{"/usr/sbin/sshd", "-D"}},
		{"empty argument kept", "sh\x00-c\x00\x00", []string{"sh", "-c", ""}},
		{"rewritten, space separated", "nginx: worker process", []string{"nginx: worker process"}},
		{"rewritten with padding", "sshd: root@pts/0\x00\x00\x00", []string{"sshd: root@pts/0", "", ""}},
		{"single NUL", "\x00", []string{""}},
		{"invalid utf8 and controls", "\xff\x1b[31m\x00", []string{"\xff\x1b[31m"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, parseCmdline([]byte(tt.in))); diff != "" {
				t.Errorf("parseCmdline(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func FuzzParseCmdline(f *testing.F) {
	f.Add([]byte("/usr/sbin/sshd\x00-D\x00"))
	f.Add([]byte("nginx: worker process"))
	f.Add([]byte("\x00\x00"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		got := parseCmdline(raw)
		if len(raw) == 0 {
			if got != nil {
				t.Fatalf("parseCmdline(empty) = %q", got)
			}
			return
		}
		// Nothing is lost: joining gives back the input minus the final NUL.
		want := strings.TrimSuffix(string(raw), "\x00")
		if j := strings.Join(got, "\x00"); j != want {
			t.Fatalf("parseCmdline(%q) = %q, joins to %q", raw, got, j)
		}
	})
}

func TestParseBtime(t *testing.T) {
	tests := []struct {
		name, in string
		want     int64
		wantErr  string
	}{
		{"live format", "cpu  1 2 3\ncpu0 1 2 3\nintr 1 2\nctxt 99\nbtime 1700000000\nprocesses 5\n", 1700000000, ""},
		{"last line without newline", "cpu 1\nbtime 17", 17, ""},
		{"missing", "cpu 1\n", 0, "field btime: missing"},
		{"not a number", "btime soon\n", 0, "field btime: invalid syntax"},
		{"btimex is another field", "btimex 5\nbtime 6\n", 6, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseBtime([]byte(tt.in))
			checkErr(t, err, tt.wantErr)
			if got != tt.want {
				t.Errorf("parseBtime = %d, want %d", got, tt.want)
			}
		})
	}
}

func FuzzParseBtime(f *testing.F) {
	f.Add([]byte("cpu  1 2 3\nbtime 1700000000\n"), int64(1700000000))
	f.Add([]byte("btime \n"), int64(-1))
	f.Fuzz(func(t *testing.T, raw []byte, v int64) {
		parseBtime(raw) //nolint:errcheck // must not panic
		in := "cpu 1 2\nbtime " + strconv.FormatInt(v, 10) + "\nprocesses 1\n"
		if got, err := parseBtime([]byte(in)); err != nil || got != v {
			t.Fatalf("parseBtime(%q) = %d, %v", in, got, err)
		}
	})
}

func TestParsePasswd(t *testing.T) {
	in := "root:x:0:0:root:/root:/bin/bash\n" +
		"# a comment\n" +
		"\n" +
		"+nisuser::::::\n" +
		"daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n" +
		"broken line\n" +
		"toor:x:0:0:second root:/root:/bin/sh\n" +
		"bad:x:12a:1::/:/bin/sh\n" +
		":x:5:5::/:/bin/sh\n" +
		"huge:x:4294967296:1::/:/bin/sh\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n" +
		"short:x:77" // no gid field and no newline: still has uid
	users, errs := parsePasswd(strings.NewReader(in))
	want := map[uint32]string{0: "root", 1: "daemon", 65534: "nobody"}
	if diff := cmp.Diff(want, users); diff != "" {
		t.Errorf("users (-want +got):\n%s", diff)
	}
	var msgs []string
	for _, e := range errs {
		msgs = append(msgs, e.Error())
	}
	wantErrs := []string{
		"line 6: field uid: too few fields",
		`line 8: field uid "12a": invalid syntax`,
		"line 9: field name: empty",
		`line 10: field uid "4294967296": value out of range`,
		"line 12: field uid: too few fields",
	}
	if diff := cmp.Diff(wantErrs, msgs); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
}

func FuzzParsePasswd(f *testing.F) {
	f.Add([]byte("root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534::/:/bin/false\n"))
	f.Add([]byte("#\n+\n-\n:::\nx:y:1"))
	if b, err := os.ReadFile("/etc/passwd"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		users, errs := parsePasswd(bytes.NewReader(raw))
		lines := bytes.Count(raw, []byte("\n")) + 1
		if len(users)+len(errs) > lines {
			t.Fatalf("%d users and %d errors from %d lines", len(users), len(errs), lines)
		}
		for uid, name := range users {
			if name == "" || strings.ContainsAny(name, ":\n") {
				t.Fatalf("uid %d has name %q", uid, name)
			}
		}
	})
}

func TestParseSocketLink(t *testing.T) {
	tests := []struct {
		in     string
		want   uint64
		wantOK bool
	}{
		{"socket:[12345]", 12345, true},
		{"socket:[0]", 0, true},
		{"socket:[18446744073709551615]", 18446744073709551615, true},
		{"socket:[18446744073709551616]", 0, false},
		{"socket:[]", 0, false},
		{"socket:[12", 0, false},
		{"socket:[-1]", 0, false},
		{"socket:[1 ]", 0, false},
		{"pipe:[12345]", 0, false},
		{"anon_inode:[eventpoll]", 0, false},
		{"/dev/null", 0, false},
		{"/tmp/socket:[1]", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseSocketLink([]byte(tt.in))
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("parseSocketLink(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.wantOK)
		}
	}
	if n := testing.AllocsPerRun(100, func() { parseSocketLink([]byte("socket:[4242]")) }); n != 0 {
		t.Errorf("parseSocketLink allocates %v times", n)
	}
}

func FuzzParseSocketLink(f *testing.F) {
	f.Add([]byte("socket:[12345]"), uint64(12345))
	f.Add([]byte("socket:[007]"), uint64(0))
	f.Add([]byte("pipe:[1]"), uint64(1<<63))
	f.Fuzz(func(t *testing.T, raw []byte, n uint64) {
		if v, ok := parseSocketLink(raw); ok {
			if !bytes.HasPrefix(raw, []byte("socket:[")) || !bytes.HasSuffix(raw, []byte("]")) {
				t.Fatalf("parseSocketLink(%q) = %d, true", raw, v)
			}
			if s := strings.TrimLeft(string(raw[8:len(raw)-1]), "0"); s != "" && s != strconv.FormatUint(v, 10) {
				t.Fatalf("parseSocketLink(%q) = %d", raw, v)
			}
		}
		link := "socket:[" + strconv.FormatUint(n, 10) + "]"
		if v, ok := parseSocketLink([]byte(link)); !ok || v != n {
			t.Fatalf("parseSocketLink(%q) = %d, %v", link, v, ok)
		}
	})
}

func TestParseNumbers(t *testing.T) {
	for _, tt := range []struct {
		in   string
		bits uint
		want uint64
		err  error
	}{
		{"0", 8, 0, nil}, {"255", 8, 255, nil}, {"256", 8, 0, errRange},
		{"18446744073709551615", 64, 1<<64 - 1, nil}, {"18446744073709551616", 64, 0, errRange},
		{"", 8, 0, errSyntax}, {"+1", 8, 0, errSyntax}, {"1_0", 16, 0, errSyntax},
	} {
		got, err := parseUint([]byte(tt.in), tt.bits)
		if got != tt.want || !errors.Is(err, tt.err) {
			t.Errorf("parseUint(%q, %d) = %d, %v; want %d, %v", tt.in, tt.bits, got, err, tt.want, tt.err)
		}
	}
	for _, tt := range []struct {
		in   string
		bits uint
		want int64
		err  error
	}{
		{"-2147483648", 32, -2147483648, nil}, {"-2147483649", 32, 0, errRange},
		{"2147483647", 32, 2147483647, nil}, {"2147483648", 32, 0, errRange},
		{"-", 32, 0, errSyntax}, {"--1", 32, 0, errSyntax},
	} {
		got, err := parseInt([]byte(tt.in), tt.bits)
		if got != tt.want || !errors.Is(err, tt.err) {
			t.Errorf("parseInt(%q, %d) = %d, %v; want %d, %v", tt.in, tt.bits, got, err, tt.want, tt.err)
		}
	}
	for _, tt := range []struct {
		in   string
		bits uint
		want uint64
		err  error
	}{
		{"0A", 8, 10, nil}, {"ff", 8, 255, nil}, {"00ff", 8, 255, nil}, {"100", 8, 0, errRange},
		{"FFFFFFFF", 32, 1<<32 - 1, nil}, {"0x1", 32, 0, errSyntax}, {"", 8, 0, errSyntax}, {"g", 8, 0, errSyntax},
	} {
		got, err := parseHex([]byte(tt.in), tt.bits)
		if got != tt.want || !errors.Is(err, tt.err) {
			t.Errorf("parseHex(%q, %d) = %d, %v; want %d, %v", tt.in, tt.bits, got, err, tt.want, tt.err)
		}
	}
}

func FuzzNextDirent(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, 19))
	rec := make([]byte, 24)
	rec[16] = 24
	copy(rec[19:], "123\x00")
	f.Add(rec)
	f.Fuzz(func(t *testing.T, raw []byte) {
		for off, i := 0, 0; i < len(raw); i++ {
			d, next, ok := nextDirent(raw, off)
			if !ok {
				return
			}
			if next <= off || bytes.IndexByte(d.name, 0) >= 0 {
				t.Fatalf("nextDirent(%x, %d) = %q, %d", raw, off, d.name, next)
			}
			off = next
		}
	})
}
