package output

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

func writeTable(t *testing.T, snap *model.Snapshot, socks []model.Socket, opts TableOptions) []byte {
	t.Helper()
	if opts.UserName == nil {
		opts.UserName = testUsers
	}
	var buf bytes.Buffer
	if err := WriteTable(&buf, snap, socks, opts); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestWriteTableGolden(t *testing.T) {
	snap := fixture()
	ns := nsFixture()
	tests := []struct {
		file string
		snap *model.Snapshot
		opts TableOptions
	}{
		{"table.txt", snap, TableOptions{}},
		{"table-width100.txt", snap, TableOptions{Width: 100}},
		{"table-width60.txt", snap, TableOptions{Width: 60}}, // narrower than the addresses need
		{"table-color.txt", snap, TableOptions{Color: true}},
		{"table-netns.txt", ns, TableOptions{}},
		{"table-netns-width90.txt", ns, TableOptions{Width: 90}},
		{"table-empty.txt", &model.Snapshot{Time: t0}, TableOptions{}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			golden(t, tt.file, writeTable(t, tt.snap, tt.snap.Sockets, tt.opts))
		})
	}
}

func TestWriteTableTerminalSafe(t *testing.T) {
	snap := fixture()
	out := string(writeTable(t, snap, snap.Sockets, TableOptions{}))
	checkTerminalSafe(t, "table lines", out)
	if got, want := strings.Count(out, "\n"), len(snap.Sockets)+2; got != want { // header, rows, legend
		t.Errorf("%d lines, want %d: a name broke a line", got, want)
	}
	for _, want := range []string{`\x1b[31mev\nil\u202e\x7f\xc2/4242`, `\x1b]0;pwned\x07`, "写真同期/6000", "?/7777"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

// TestWriteTableWidth checks, for every width, that lines fit when they
// can and that addresses are never cut.
func TestWriteTableWidth(t *testing.T) {
	snap := nsFixture()
	full := writeTable(t, snap, snap.Sockets, TableOptions{})
	natural := 0
	for _, l := range strings.Split(strings.TrimSuffix(string(full), "\n"), "\n") {
		if !strings.HasPrefix(l, "Age <=") {
			natural = max(natural, displayWidth(l))
		}
	}
	// The narrowest table: Process, User and Netns at their minimum.
	narrowest := natural - (displayWidth("\\x1b[31mev\\nil\\u202e\\x7f\\xc2/4242") - 10) - (displayWidth(`\x1b]0;pwned\x07`) - 8) - (displayWidth("/proc/4242/ns/net") - 8)
	for width := 20; width <= natural+5; width++ {
		out := string(writeTable(t, snap, snap.Sockets, TableOptions{Width: width}))
		for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
			if strings.HasPrefix(l, "Age <=") {
				continue
			}
			if w := displayWidth(l); width >= narrowest && w > width {
				t.Errorf("width %d: line is %d cells: %q", width, w, l)
			}
		}
		for _, s := range snap.Sockets {
			for _, a := range []string{formatAddrPort(s.Local), formatAddrPort(s.Remote)} {
				if !strings.Contains(out, a+" ") {
					t.Errorf("width %d: address %s cut", width, a)
				}
			}
		}
	}
}

func TestWriteTableColor(t *testing.T) {
	snap := fixture()
	plain := writeTable(t, snap, snap.Sockets, TableOptions{})
	if bytes.Contains(plain, []byte("\x1b")) {
		t.Errorf("escape sequences without Color:\n%q", plain)
	}
	colored := string(writeTable(t, snap, snap.Sockets, TableOptions{Color: true}))
	for _, want := range []string{sgrGreen + "LISTEN" + sgrReset, sgrGreen + "UNCONN" + sgrReset,
		sgrYellow + "CLOSE_WAIT" + sgrReset, sgrYellow + "SYN_RECV" + sgrReset, sgrBold + "State" + sgrReset} {
		if !strings.Contains(colored, want) {
			t.Errorf("coloured table lacks %q", want)
		}
	}
	// Colour must not change the layout.
	stripped := colored
	for _, sgr := range []string{sgrReset, sgrBold, sgrGreen, sgrYellow} {
		stripped = strings.ReplaceAll(stripped, sgr, "")
	}
	if stripped != string(plain) {
		t.Errorf("coloured table without colours differs from the plain one:\n%s\n%s", stripped, plain)
	}
}

func TestColorEnabled(t *testing.T) {
	tests := []struct {
		tty   bool
		env   map[string]string
		color bool
	}{
		{true, map[string]string{"TERM": "xterm-256color"}, true},
		{true, nil, true},
		{false, map[string]string{"TERM": "xterm"}, false},
		{true, map[string]string{"NO_COLOR": "1", "TERM": "xterm"}, false},
		{true, map[string]string{"NO_COLOR": "", "TERM": "xterm"}, true}, // empty NO_COLOR does not count
		{true, map[string]string{"TERM": "dumb"}, false},
	}
	for _, tt := range tests {
		if got := colorEnabled(tt.tty, func(k string) string { return tt.env[k] }); got != tt.color {
			t.Errorf("colorEnabled(tty %v, %v) = %v, want %v", tt.tty, tt.env, got, tt.color)
		}
	}
	if ColorEnabled(nil) {
		t.Error("ColorEnabled(nil) = true")
	}
}

func TestFormatAge(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{999 * time.Millisecond, "0s"},
		{42 * time.Second, "42s"},
		{time.Minute, "1m"},
		{5*time.Minute + 3*time.Second, "5m3s"},
		{3*time.Hour + 12*time.Minute + 59*time.Second, "3h12m"},
		{24 * time.Hour, "1d"},
		{51*time.Hour + 30*time.Minute, "2d3h"},
		{400 * 24 * time.Hour, "400d"},
	}
	for _, tt := range tests {
		if got := formatAge(tt.d); got != tt.want {
			t.Errorf("formatAge(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestWriteWarnings(t *testing.T) {
	var buf bytes.Buffer
	WriteWarnings(&buf, []string{"cannot read /proc/42/fd: permission denied", "netns \"evil\nname\": gone"})
	want := "tcpsentry: warning: cannot read /proc/42/fd: permission denied\n" +
		`tcpsentry: warning: netns "evil\nname": gone` + "\n"
	if buf.String() != want {
		t.Errorf("got %q, want %q", buf.String(), want)
	}
	buf.Reset()
	WriteWarnings(&buf, nil)
	if buf.Len() != 0 {
		t.Errorf("no warnings wrote %q", buf.String())
	}
}
