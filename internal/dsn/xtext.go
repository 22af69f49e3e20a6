package dsn

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// xtextDecode decodes RFC 3461 §4 xtext: printable ASCII except '+' and '=',
// with "+XX" (two upper-case hex digits) for any other octet. The decoded
// value must be printable US-ASCII or space (RFC 3461 §4.2, §4.4), as the
// DSN fields that carry it require.
func xtextDecode(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '+':
			if i+2 >= len(s) || !isUpperHex(s[i+1]) || !isUpperHex(s[i+2]) {
				return "", fmt.Errorf("xtext %q: '+' not followed by two upper-case hex digits", s)
			}
			v, _ := strconv.ParseUint(s[i+1:i+3], 16, 8)
			c = byte(v)
			if c < 0x20 || c > 0x7e {
				return "", fmt.Errorf("xtext %q encodes a non-printable octet", s)
			}
			i += 2
		case c < 0x21 || c > 0x7e || c == '=':
			return "", fmt.Errorf("xtext %q has a character outside xchar", s)
		}
		b.WriteByte(c)
	}
	return b.String(), nil
}

// xtextEncode is the inverse of xtextDecode.
func xtextEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '+' || c == '=' {
			fmt.Fprintf(&b, "+%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func isUpperHex(c byte) bool { return '0' <= c && c <= '9' || 'A' <= c && c <= 'F' }

// utf8AddrXtextEncode renders an internationalized address as RFC 6533 §3
// utf-8-addr-xtext: QCHARs (printable ASCII except '+', '=' and '\') as they
// are, every other character as \x{HEXPOINT}.
func utf8AddrXtextEncode(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= 0x21 && r <= 0x7e && r != '+' && r != '=' && r != '\\' {
			b.WriteRune(r)
			continue
		}
		fmt.Fprintf(&b, `\x{%02X}`, r)
	}
	return b.String()
}

// utf8AddrXtextDecode is the inverse of utf8AddrXtextEncode.
func utf8AddrXtextDecode(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			if c < 0x21 || c > 0x7e || c == '+' || c == '=' {
				return "", fmt.Errorf("utf-8-addr-xtext %q has a character outside QCHAR", s)
			}
			b.WriteByte(c)
			continue
		}
		rest := s[i:]
		end := strings.IndexByte(rest, '}')
		if !strings.HasPrefix(rest, `\x{`) || end < 0 || end-3 < 1 || end-3 > 6 {
			return "", fmt.Errorf("utf-8-addr-xtext %q: bad \\x{...} escape", s)
		}
		hexpoint := rest[3:end]
		for j := 0; j < len(hexpoint); j++ {
			if !isUpperHex(hexpoint[j]) {
				return "", fmt.Errorf("utf-8-addr-xtext %q: bad hex point %q", s, hexpoint)
			}
		}
		v, _ := strconv.ParseUint(hexpoint, 16, 32)
		if v == 0 || !utf8.ValidRune(rune(v)) {
			return "", errors.New("utf-8-addr-xtext: escape is not a Unicode scalar value")
		}
		b.WriteRune(rune(v))
		i += end
	}
	return b.String(), nil
}
