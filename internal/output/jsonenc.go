package output

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// appendJSONString appends s as a JSON string. The decoded value is s
// itself (for valid UTF-8), but every rune that Sanitize would escape is
// written as a \u escape, so the JSON bytes are safe to show on a terminal
// as they are (cat, less, tail -f) while `jq -r` still yields the raw
// value. Invalid UTF-8 cannot be represented in JSON; each invalid byte
// becomes U+FFFD, as encoding/json does.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != 0x7f {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case unsafeRune(r):
			b = append(b, s[start:i]...)
			b = appendJSONRune(b, r)
		default:
			i += n
			continue
		}
		i += n
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendJSONRune writes r as \uHHHH, or as a UTF-16 surrogate pair above
// the BMP (JSON has no \U form).
func appendJSONRune(b []byte, r rune) []byte {
	if r > 0xffff {
		r -= 0x10000
		b = appendRuneEscape(b, 0xd800+(r>>10))
		return appendRuneEscape(b, 0xdc00+(r&0x3ff))
	}
	return appendRuneEscape(b, r)
}

// appendTime appends t in RFC 3339 with nanoseconds, in UTC, as a JSON string.
func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// appendSeconds appends d in seconds with millisecond precision.
func appendSeconds(b []byte, d time.Duration) []byte {
	return appendThousandths(b, int64(d.Round(time.Millisecond)/time.Millisecond))
}

// appendMillis appends d in milliseconds with microsecond precision (the
// kernel's resolution for tcp_info times).
func appendMillis(b []byte, d time.Duration) []byte {
	return appendThousandths(b, int64(d.Round(time.Microsecond)/time.Microsecond))
}

// appendThousandths writes n/1000 as a JSON number without trailing zeros
// ("1.5", "42", "0.008"): exact decimal, and cheaper than formatting a float.
func appendThousandths(b []byte, n int64) []byte {
	if n < 0 {
		b = append(b, '-')
		n = -n
	}
	b = strconv.AppendInt(b, n/1000, 10)
	frac := n % 1000
	if frac == 0 {
		return b
	}
	digits := [3]byte{byte('0' + frac/100), byte('0' + frac/10%10), byte('0' + frac%10)}
	end := 3
	for digits[end-1] == '0' {
		end--
	}
	b = append(b, '.')
	return append(b, digits[:end]...)
}

// appendKey appends ,"key": (the comma unless first).
func appendKey(b []byte, key string, first bool) []byte {
	if !first {
		b = append(b, ',')
	}
	b = append(b, '"')
	b = append(b, key...)
	return append(b, '"', ':')
}

func appendUintField(b []byte, key string, v uint64) []byte {
	return strconv.AppendUint(appendKey(b, key, false), v, 10)
}

func appendIntField(b []byte, key string, v int64) []byte {
	return strconv.AppendInt(appendKey(b, key, false), v, 10)
}

func appendStringField(b []byte, key, v string) []byte {
	return appendJSONString(appendKey(b, key, false), v)
}
