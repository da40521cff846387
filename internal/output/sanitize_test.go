package output

import (
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestSanitize(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"plain", "nginx: worker process", "nginx: worker process"},
		{"printable unicode kept", "café 写真 ☃", "café 写真 ☃"},
		{"escape sequence", "\x1b[31mred", `\x1b[31mred`},
		{"osc title with bel", "\x1b]0;pwned\x07", `\x1b]0;pwned\x07`},
		{"newline", "ev\nil", `ev\nil`},
		{"carriage return", "a\rb", `a\rb`},
		{"tab", "a\tb", `a\tb`},
		{"nul", "a\x00b", `a\x00b`},
		{"del", "a\x7fb", `a\x7fb`},
		{"backslash", `C:\tmp`, `C:\\tmp`},
		{"escaped-looking text stays distinct", `\x1b`, `\\x1b`},
		{"c1 csi", "a\u009bb", `a\u009bb`},
		{"c1 nel", "a\u0085b", `a\u0085b`},
		{"bidi override", "\u202egnp.exe", `\u202egnp.exe`},
		{"bidi embedding", "\u202a\u202b\u202c\u202d", `\u202a\u202b\u202c\u202d`},
		{"bidi isolates", "\u2066\u2067\u2068\u2069", `\u2066\u2067\u2068\u2069`},
		{"arabic letter mark", "a\u061cb", `a\u061cb`},
		{"zero width", "a\u200bb\u200cc\u200dd\u200ee\u200ff", `a\u200bb\u200cc\u200dd\u200ee\u200ff`},
		{"line and paragraph separators", "a\u2028b\u2029c", `a\u2028b\u2029c`},
		{"bom", "\ufeffname", `\ufeffname`},
		{"soft hyphen", "a\u00adb", `a\u00adb`},
		{"tag characters above the BMP", "a\U000E0041b", `a\U000e0041b`},
		{"invalid byte", "a\xffb", `a\xffb`},
		{"truncated rune", "a\xe2\x80", `a\xe2\x80`},
		{"encoded surrogate is invalid", "\xed\xa0\x80", `\xed\xa0\x80`},
		{"overlong encoding is invalid", "\xc0\xaf", `\xc0\xaf`},
		{"U+FFFD itself is text", "a\ufffdb", "a\ufffdb"},
		{"hostile comm", hostileName, `\x1b[31mev\nil\u202e\x7f\u0085\xff`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Sanitize(tt.in); got != tt.want {
				t.Errorf("Sanitize(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestSanitizeCleanDoesNotAllocate(t *testing.T) {
	for _, s := range []string{"", "sshd", "nginx: worker process", "写真同期 --daemon"} {
		if n := testing.AllocsPerRun(100, func() { _ = Sanitize(s) }); n != 0 {
			t.Errorf("Sanitize(%q) allocates %v times, want 0", s, n)
		}
	}
}

// unsanitize inverts Sanitize; the fuzz test uses it to show that the
// escaping is unambiguous (two different names never print the same).
func unsanitize(s string) (string, bool) {
	var b []byte
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b = append(b, s[i])
			continue
		}
		if i+1 >= len(s) {
			return "", false
		}
		i++
		switch s[i] {
		case '\\':
			b = append(b, '\\')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'x', 'u', 'U':
			n := 2
			if s[i] == 'u' {
				n = 4
			} else if s[i] == 'U' {
				n = 8
			}
			if i+1+n > len(s) {
				return "", false
			}
			v, err := strconv.ParseUint(s[i+1:i+1+n], 16, 32)
			if err != nil {
				return "", false
			}
			if s[i] == 'x' {
				b = append(b, byte(v))
			} else {
				b = utf8.AppendRune(b, rune(v))
			}
			i += n
		default:
			return "", false
		}
	}
	return string(b), true
}

// checkTerminalSafe fails when s holds anything a terminal would act on
// or that hides text: controls, format characters, separators, invalid UTF-8.
func checkTerminalSafe(t *testing.T, what, s string) {
	t.Helper()
	if !utf8.ValidString(s) {
		t.Fatalf("%s is not valid UTF-8: %q", what, s)
	}
	for _, r := range s {
		if r == '\n' && strings.HasSuffix(what, "lines") {
			continue
		}
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == 0x2028 || r == 0x2029 {
			t.Fatalf("%s contains %U: %q", what, r, s)
		}
	}
}

func FuzzSanitize(f *testing.F) {
	for _, s := range []string{"", "sshd", hostileName, `\x1b`, "a\U000E0041b", "写真", "\xed\xa0\x80", "\\\\u202e"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := Sanitize(s)
		checkTerminalSafe(t, "Sanitize output", got)
		back, ok := unsanitize(got)
		if !ok || back != s {
			t.Fatalf("Sanitize(%q) = %q does not map back (got %q, ok %v)", s, got, back, ok)
		}
		if firstUnsafe(s) < 0 && got != s {
			t.Fatalf("clean %q changed to %q", s, got)
		}
	})
}

func TestDisplayWidth(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{"", 0},
		{"sshd/812", 8},
		{"café", 4},
		{"e\u0301", 1}, // combining acute accent
		{"写真同期", 8},
		{"ｆｕｌｌ", 8},
		{"🙂", 2},
		{`\x1b[31m`, 8},
	}
	for _, tt := range tests {
		if got := displayWidth(tt.in); got != tt.want {
			t.Errorf("displayWidth(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestTruncateWidth(t *testing.T) {
	tests := []struct {
		in   string
		w    int
		want string
	}{
		{"sshd/812", 8, "sshd/812"},
		{"sshd/812", 20, "sshd/812"},
		{"sshd/812,systemd/1", 10, "sshd/812,…"},
		{"写真同期/6000", 6, "写真…"},
		{"写真同期/6000", 5, "写真…"},
		{"abc", 1, "…"},
		{"abc", 0, ""},
	}
	for _, tt := range tests {
		got := truncateWidth(tt.in, tt.w)
		if got != tt.want {
			t.Errorf("truncateWidth(%q, %d) = %q, want %q", tt.in, tt.w, got, tt.want)
		}
		if displayWidth(got) > max(tt.w, 0) {
			t.Errorf("truncateWidth(%q, %d) = %q is %d cells wide", tt.in, tt.w, got, displayWidth(got))
		}
	}
}

func BenchmarkSanitize(b *testing.B) {
	for _, bc := range []struct{ name, s string }{
		{"clean", "nginx: worker process /usr/sbin/nginx -g daemon off;"},
		{"hostile", strings.Repeat(hostileName, 4)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.s)))
			for b.Loop() {
				_ = Sanitize(bc.s)
			}
		})
	}
}
