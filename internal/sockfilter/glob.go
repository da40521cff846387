package sockfilter

import "unicode/utf8"

// globMatch reports whether name matches the shell pattern, with the
// syntax of path.Match ('*', '?', '[a-z]', '[^0-9]', '\' escapes) but
// with '*' and '?' matching '/' too: a process name is not a path, and
// kernel threads and many workers are named "kworker/0:1", "nginx: worker".
// The pattern must have been checked with path.Match first; a malformed
// one does not match, and never panics.
func globMatch(pattern, name string) bool {
	px, nx := 0, 0
	starPx, starNx := -1, 0 // where to resume after the last '*' when a later part fails
	for px < len(pattern) || nx < len(name) {
		if px < len(pattern) {
			switch c := pattern[px]; c {
			case '*':
				starPx, starNx = px, nx
				px++
				continue
			case '?':
				if nx < len(name) {
					_, n := utf8.DecodeRuneInString(name[nx:])
					px++
					nx += n
					continue
				}
			case '[':
				if nx < len(name) {
					r, n := utf8.DecodeRuneInString(name[nx:])
					if ok, width := matchClass(pattern[px:], r); ok {
						px += width
						nx += n
						continue
					}
				}
			default:
				// Literals compare byte by byte: both sides advance from
				// rune boundaries, so they stay aligned.
				p := px
				if c == '\\' && p+1 < len(pattern) {
					p++
					c = pattern[p]
				}
				if nx < len(name) && name[nx] == c {
					px = p + 1
					nx++
					continue
				}
			}
		}
		// Mismatch: let the last '*' swallow one more rune, if any is left.
		if starPx < 0 || starNx >= len(name) {
			return false
		}
		_, n := utf8.DecodeRuneInString(name[starNx:])
		starNx += n
		px, nx = starPx+1, starNx
	}
	return true
}

// classChar decodes one possibly escaped pattern character at the start
// of p and returns it with the length of what follows it.
func classChar(p string) (rune, int) {
	if len(p) > 0 && p[0] == '\\' {
		p = p[1:]
	}
	if len(p) == 0 {
		return utf8.RuneError, 0
	}
	r, n := utf8.DecodeRuneInString(p)
	return r, len(p) - n
}

// matchClass matches r against the character class at the start of p
// ("[...]") and returns the class's width in bytes.
func matchClass(p string, r rune) (ok bool, width int) {
	rest := p[1:]
	negate := false
	if len(rest) > 0 && rest[0] == '^' {
		negate = true
		rest = rest[1:]
	}
	matched := false
	for n := 0; ; n++ {
		if len(rest) == 0 {
			return false, 0 // unterminated: path.Match rejects it
		}
		if rest[0] == ']' && n > 0 {
			rest = rest[1:]
			break
		}
		lo, left := classChar(rest)
		rest = rest[len(rest)-left:]
		hi := lo
		if len(rest) > 1 && rest[0] == '-' {
			var left2 int
			hi, left2 = classChar(rest[1:])
			rest = rest[len(rest)-left2:]
		}
		if lo <= r && r <= hi {
			matched = true
		}
	}
	return matched != negate, len(p) - len(rest)
}
