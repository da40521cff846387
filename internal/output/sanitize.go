// Package output renders what `tcpsentry conns` found: an aligned table for
// people, JSON lines for programs, a summary, and warnings. Names and
// command lines come from untrusted processes, so everything that reaches a
// terminal goes through Sanitize, and JSON strings are escaped so that a
// JSON line viewed raw is terminal-safe too (see docs/conns-json.md).
package output

import (
	"unicode"
	"unicode/utf8"
)

// Sanitize returns s with everything that could change how a terminal
// shows the text escaped as visible ASCII, so that a hostile process name
// can neither run terminal escape sequences nor hide or reorder what is
// printed around it:
//
//   - C0 controls and DEL as \xHH (\n, \r and \t by name), e.g. \x1b;
//   - C1 controls (U+0080–U+009F), format characters (Unicode category Cf:
//     bidi overrides and isolates, zero-width spaces and joiners, U+FEFF,
//     tag characters) and the line and paragraph separators U+2028/U+2029
//     as \uHHHH or \UHHHHHHHH, e.g. \u202e;
//   - each byte that is not part of valid UTF-8 as \xHH, e.g. \xff;
//   - the backslash itself as \\, so the mapping is reversible: \xHH is
//     always one raw byte and \u, \U always one code point.
//
// Everything else, including printable non-ASCII text, is kept. When
// nothing needs escaping s is returned as is, without allocating.
func Sanitize(s string) string {
	i := firstUnsafe(s)
	if i < 0 {
		return s
	}
	b := make([]byte, 0, len(s)+16)
	b = append(b, s[:i]...)
	return string(appendSanitized(b, s[i:]))
}

// firstUnsafe returns the byte offset of the first byte or rune that
// Sanitize would escape, or -1 when there is none.
func firstUnsafe(s string) int {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f || c == '\\' {
				return i
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 || unsafeRune(r) {
			return i
		}
		i += n
	}
	return -1
}

// unsafeRune reports whether a valid non-ASCII rune must be escaped.
func unsafeRune(r rune) bool {
	switch {
	case r <= 0x9f: // C1 controls; ASCII never reaches here
		return true
	case r == 0x2028 || r == 0x2029: // line and paragraph separators (Zl, Zp)
		return true
	}
	return unicode.Is(unicode.Cf, r)
}

const hexDigits = "0123456789abcdef"

// appendSanitized appends the escaped form of s to b (see Sanitize).
func appendSanitized(b []byte, s string) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '\\':
				b = append(b, '\\', '\\')
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b = append(b, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf])
		case unsafeRune(r):
			b = appendRuneEscape(b, r)
		default:
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return b
}

// appendRuneEscape appends \uHHHH, or \UHHHHHHHH above the BMP, as Go
// quotes runes.
func appendRuneEscape(b []byte, r rune) []byte {
	if r <= 0xffff {
		return append(b, '\\', 'u',
			hexDigits[r>>12&0xf], hexDigits[r>>8&0xf], hexDigits[r>>4&0xf], hexDigits[r&0xf])
	}
	b = append(b, '\\', 'U')
	for shift := 28; shift >= 0; shift -= 4 {
		b = append(b, hexDigits[r>>uint(shift)&0xf])
	}
	return b
}

// displayWidth is the number of terminal cells s takes, for text that has
// been through Sanitize (no controls left): East Asian wide and fullwidth
// runes take two cells, combining marks none, everything else one.
func displayWidth(s string) int {
	w := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			w++
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		w += runeWidth(r)
		i += n
	}
	return w
}

// runeWidth is the cell width of one printable rune.
func runeWidth(r rune) int {
	switch {
	case r < 0x300:
		return 1
	case unicode.In(r, unicode.Mn, unicode.Me):
		return 0
	case isWide(r):
		return 2
	}
	return 1
}

// wideRanges are the East Asian Wide and Fullwidth blocks (UAX #11),
// coarsely: enough to keep columns aligned for CJK names and emoji.
var wideRanges = [...]struct{ lo, hi rune }{
	{0x1100, 0x115f},   // Hangul Jamo initials
	{0x231a, 0x231b},   // watch, hourglass
	{0x2e80, 0x303e},   // CJK radicals … CJK symbols and punctuation
	{0x3041, 0x33ff},   // Hiragana … CJK compatibility
	{0x3400, 0x4dbf},   // CJK extension A
	{0x4e00, 0x9fff},   // CJK unified ideographs
	{0xa000, 0xa4cf},   // Yi
	{0xa960, 0xa97f},   // Hangul Jamo extended A
	{0xac00, 0xd7a3},   // Hangul syllables
	{0xf900, 0xfaff},   // CJK compatibility ideographs
	{0xfe10, 0xfe19},   // vertical forms
	{0xfe30, 0xfe6f},   // CJK compatibility forms, small forms
	{0xff00, 0xff60},   // fullwidth forms
	{0xffe0, 0xffe6},   // fullwidth signs
	{0x1f300, 0x1f64f}, // pictographs, emoticons
	{0x1f900, 0x1f9ff}, // supplemental symbols and pictographs
	{0x20000, 0x3fffd}, // CJK extensions B…
}

func isWide(r rune) bool {
	for _, wr := range wideRanges {
		if r < wr.lo {
			return false
		}
		if r <= wr.hi {
			return true
		}
	}
	return false
}

// truncateWidth shortens s to at most w cells, ending in "…" when it cut
// something. s must be sanitised text.
func truncateWidth(s string, w int) string {
	if displayWidth(s) <= w {
		return s
	}
	if w <= 0 {
		return ""
	}
	used := 0
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		rw := runeWidth(r)
		if used+rw > w-1 { // keep one cell for the ellipsis
			return s[:i] + "…"
		}
		used += rw
		i += n
	}
	return s
}
