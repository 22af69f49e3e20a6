package mtasts

import (
	"fmt"
	"strings"
)

// Mode is what a domain's policy asks of senders, plus NoPolicy for a
// domain that has none. The zero value is NoPolicy.
type Mode uint8

// The policy modes (RFC 8461 §3.2, §5).
const (
	// NoPolicy: the domain has no usable MTA-STS policy; deliver under the
	// profile's TLS mode.
	NoPolicy Mode = iota
	// ModeNone: the domain published "mode: none" (it is withdrawing
	// MTA-STS); no restriction.
	ModeNone
	// ModeTesting: deliver as usual, report what would have failed.
	ModeTesting
	// ModeEnforce: only matching MX hosts, TLS 1.2+, valid certificate.
	ModeEnforce
)

var modeNames = [...]string{"no-policy", "none", "testing", "enforce"}

// String returns the policy spelling ("enforce", "testing", "none") or
// "no-policy".
func (m Mode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// MarshalText implements encoding.TextMarshaler.
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (m *Mode) UnmarshalText(b []byte) error {
	for i, n := range modeNames {
		if string(b) == n {
			*m = Mode(i)
			return nil
		}
	}
	return fmt.Errorf("unknown MTA-STS mode %q", b)
}

// MaxMaxAge is the largest max_age a policy may have, in seconds (one year,
// RFC 8461 §3.2); larger values are clamped to it.
const MaxMaxAge = 31557600

// Policy is a parsed MTA-STS policy (RFC 8461 §3.2).
type Policy struct {
	Mode Mode `json:"mode"`
	// MX are the allowed MX patterns, lower-case, without a trailing dot;
	// "*.example.com" matches exactly one extra leftmost label.
	MX []string `json:"mx,omitempty"`
	// MaxAge is the policy lifetime in seconds, clamped to MaxMaxAge.
	MaxAge int64 `json:"max_age"`
}

// SyntaxError says why a TXT record or a policy was rejected.
type SyntaxError struct {
	What string // "TXT record" or "policy"
	Line int    // policy line (1-based); 0 when not applicable
	Msg  string
}

func (e *SyntaxError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("invalid MTA-STS %s: line %d: %s", e.What, e.Line, e.Msg)
	}
	return fmt.Sprintf("invalid MTA-STS %s: %s", e.What, e.Msg)
}

func policyErr(line int, format string, args ...any) error {
	return &SyntaxError{What: "policy", Line: line, Msg: fmt.Sprintf(format, args...)}
}

// ParsePolicy parses a policy body as served at
// https://mta-sts.<domain>/.well-known/mta-sts.txt (RFC 8461 §3.2).
//
// Lines end in LF or CRLF (RFC 8461 §3.2, erratum 6253). Each line is
// "key: value"; whitespace around key and value and blank lines are
// tolerated (see docs/mta-sts.md). version, mode and max_age are required,
// mx is required at least once unless mode is none. A repeated field other
// than mx keeps its first value; unknown fields are ignored but must still
// be well-formed. Any violation rejects the whole policy: an invalid policy
// is no policy.
func ParsePolicy(body string) (*Policy, error) {
	var (
		p                              Policy
		haveVersion, haveMode, haveAge bool
	)
	lineNo := 0
	for len(body) > 0 {
		lineNo++
		var line string
		if i := strings.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			line, body = body, ""
		}
		// RFC 8461 §3.2: sts-policy-term = LF / CRLF.
		line = strings.TrimSuffix(line, "\r")
		line = strings.Trim(line, " \t")
		if line == "" {
			continue
		}
		colon := strings.IndexByte(line, ':')
		if colon < 0 {
			return nil, policyErr(lineNo, "%q is not a \"key: value\" line", clip(line))
		}
		key := strings.TrimRight(line[:colon], " \t")
		val := strings.TrimLeft(line[colon+1:], " \t")
		if !validExtName(key) {
			return nil, policyErr(lineNo, "invalid field name %q", clip(key))
		}
		if !validPolicyValue(val) {
			return nil, policyErr(lineNo, "invalid value for %s: %q", key, clip(val))
		}
		// RFC 8461 §3.2: "If any non-repeated field -- i.e., all fields
		// excluding "mx" -- is duplicated, all entries except for the first
		// SHOULD be ignored." Field names are case-sensitive (%s).
		switch key {
		case "version":
			if haveVersion {
				continue
			}
			haveVersion = true
			if val != "STSv1" {
				return nil, policyErr(lineNo, "version %q is not STSv1 (case-sensitive)", clip(val))
			}
		case "mode":
			if haveMode {
				continue
			}
			haveMode = true
			switch val {
			case "enforce":
				p.Mode = ModeEnforce
			case "testing":
				p.Mode = ModeTesting
			case "none":
				p.Mode = ModeNone
			default:
				return nil, policyErr(lineNo, "mode %q is not enforce, testing or none", clip(val))
			}
		case "max_age":
			if haveAge {
				continue
			}
			haveAge = true
			// RFC 8461 §3.2: sts-policy-max-age-value = 1*10(DIGIT), and
			// the value MUST be representable in 0..31557600.
			if len(val) == 0 || len(val) > 10 || strings.Trim(val, "0123456789") != "" {
				return nil, policyErr(lineNo, "max_age %q is not 1 to 10 digits", clip(val))
			}
			var n int64
			for i := 0; i < len(val); i++ {
				n = n*10 + int64(val[i]-'0')
			}
			p.MaxAge = min(n, MaxMaxAge)
		case "mx":
			pat, ok := normalizePattern(val)
			if !ok {
				return nil, policyErr(lineNo, "mx %q is not a host name or *.host name pattern", clip(val))
			}
			p.MX = append(p.MX, pat)
		default:
			// RFC 8461 §3.2: unknown fields SHOULD be ignored.
		}
	}
	switch {
	case !haveVersion:
		return nil, policyErr(0, "missing version field")
	case !haveMode:
		return nil, policyErr(0, "missing mode field")
	case !haveAge:
		return nil, policyErr(0, "missing max_age field")
	case len(p.MX) == 0 && p.Mode != ModeNone:
		// RFC 8461 §3.2: mx is required at least once unless mode is none.
		return nil, policyErr(0, "mode %s needs at least one mx field", p.Mode)
	}
	return &p, nil
}

// validExtName: (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
// (RFC 8461 §3.1 sts-ext-name, §3.2 sts-policy-ext-name).
func validExtName(s string) bool {
	if len(s) == 0 || len(s) > 32 || !isAlnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && c != '_' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// validPolicyValue: sts-policy-vchar [*(%x20 / sts-policy-vchar)
// sts-policy-vchar], vchar = %x21-7E (RFC 8461 §3.2). Tabs inside a value
// are not allowed; the caller has trimmed the ends.
func validPolicyValue(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != ' ' && (c < 0x21 || c > 0x7e) {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// normalizePattern validates sts-policy-mx-value = ["*."] Domain (RFC 8461
// §3.2, Domain from RFC 5321 §4.1.2) and returns it lower-case without a
// trailing dot.
func normalizePattern(v string) (string, bool) {
	v = strings.TrimSuffix(v, ".")
	host := strings.TrimPrefix(v, "*.")
	if !validHostname(host) {
		return "", false
	}
	return strings.ToLower(v), true
}

// validHostname: sub-domain *("." sub-domain), sub-domain = Let-dig
// [Ldh-str] (RFC 5321 §4.1.2), labels of at most 63 octets, at most 253 in
// all.
func validHostname(h string) bool {
	if len(h) == 0 || len(h) > 253 {
		return false
	}
	start := 0
	for i := 0; i <= len(h); i++ {
		if i < len(h) && h[i] != '.' {
			if c := h[i]; !isAlnum(c) && c != '-' {
				return false
			}
			continue
		}
		label := h[start:i]
		if len(label) == 0 || len(label) > 63 || !isAlnum(label[0]) || !isAlnum(label[len(label)-1]) {
			return false
		}
		start = i + 1
	}
	return true
}

// Matches reports whether host (an MX host name) is allowed by the policy
// (RFC 8461 §4.1). Comparison is case-insensitive and a trailing dot on
// host is ignored.
func (p *Policy) Matches(host string) bool { return p.MatchingPattern(host) != "" }

// MatchingPattern returns the first mx pattern that allows host, or "" when
// none does (RFC 8461 §4.1).
func (p *Policy) MatchingPattern(host string) string {
	if p == nil {
		return ""
	}
	for _, pat := range p.MX {
		if MatchPattern(pat, host) {
			return pat
		}
	}
	return ""
}

// MatchPattern reports whether host matches one policy mx pattern (RFC 8461
// §4.1): an exact, case-insensitive match, or for "*.suffix" a host that is
// exactly one label followed by ".suffix". "*.example.com" matches
// "mail.example.com" but neither "example.com" nor "a.b.example.com".
// Trailing dots on either side are ignored.
func MatchPattern(pattern, host string) bool {
	host = strings.TrimSuffix(host, ".")
	pattern = strings.TrimSuffix(pattern, ".")
	if host == "" || pattern == "" {
		return false
	}
	if len(pattern) >= 2 && pattern[0] == '*' && pattern[1] == '.' {
		suffix := pattern[1:] // ".example.com"
		if len(host) <= len(suffix) || !strings.EqualFold(host[len(host)-len(suffix):], suffix) {
			return false
		}
		first := host[:len(host)-len(suffix)]
		return strings.IndexByte(first, '.') < 0
	}
	return strings.EqualFold(pattern, host)
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
