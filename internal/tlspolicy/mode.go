// Package tlspolicy decides how one destination's connections must be
// secured: the security plan. It is pure: Build takes the destination's
// profile, route and published policies (already looked up) and returns a
// plain value; it does no I/O. The delivery client carries the plan out.
//
// The order of precedence (design.md §3) is: an SMTP route, then DANE, then
// MTA-STS, then the profile's TLS mode. Each later source can only be
// reached when the earlier ones do not apply, and a published policy can only
// make a connection stricter than the profile's mode, never weaker.
package tlspolicy

import (
	"fmt"
	"strings"
)

// Mode is a Destination Control TLS setting. The constants follow the
// appliance's menu order, and each adds one guarantee to the one before:
//
//	none                    no STARTTLS
//	preferred               STARTTLS when offered; plaintext fallback allowed
//	required                TLS must be negotiated; certificate not checked
//	preferred-verify        as preferred, certificate checked but only logged
//	required-verify         TLS and a certificate valid for the recipient domain
//	required-verify-hosted  as required-verify, or valid for the MX host name
//
// preferred-verify checks more than required but guarantees less (it can
// still end in plaintext), which is why code asks the predicates below
// (MustTLS, MustVerify) instead of comparing modes numerically.
type Mode int

// The TLS modes, in the appliance's menu order.
const (
	None                 Mode = iota // 1. No: never STARTTLS
	Preferred                        // 2. Preferred: STARTTLS when offered, no verification, plaintext fallback
	Required                         // 3. Required: TLS must be negotiated, certificate not verified
	PreferredVerify                  // 4. Preferred (Verify): as Preferred, verification failure only logged
	RequiredVerify                   // 5. Required (Verify): TLS and a certificate valid for the recipient domain
	RequiredVerifyHosted             // 6. Required - Verify Hosted Domains: also accepts the MX host name
)

var modeNames = [...]string{"none", "preferred", "required", "preferred-verify", "required-verify", "required-verify-hosted"}

// String is the configuration spelling.
func (m Mode) String() string {
	if m < 0 || int(m) >= len(modeNames) {
		return fmt.Sprintf("mode(%d)", int(m))
	}
	return modeNames[m]
}

// Label is the appliance's display name.
func (m Mode) Label() string {
	return [...]string{"No", "Preferred", "Required", "Preferred (Verify)", "Required (Verify)", "Required - Verify Hosted Domains"}[m]
}

// ParseMode reads a configuration spelling; "no"/"off" are accepted for
// none, as the appliance's CLI keywords are.
func ParseMode(s string) (Mode, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	switch s {
	case "no", "off":
		return None, nil
	case "on":
		return Preferred, nil
	case "require":
		return Required, nil
	case "on_verify":
		return PreferredVerify, nil
	case "require_verify":
		return RequiredVerify, nil
	}
	for i, n := range modeNames {
		if s == n {
			return Mode(i), nil
		}
	}
	return None, fmt.Errorf("unknown TLS mode %q (want one of %s)", s, strings.Join(modeNames[:], ", "))
}

// MarshalText implements encoding.TextMarshaler.
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (m *Mode) UnmarshalText(b []byte) error {
	v, err := ParseMode(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// MustTLS reports whether delivery is impossible without TLS.
func (m Mode) MustTLS() bool {
	return m == Required || m == RequiredVerify || m == RequiredVerifyHosted
}

// TriesTLS reports whether STARTTLS is attempted at all.
func (m Mode) TriesTLS() bool { return m != None }

// MustVerify reports whether an unverified certificate stops delivery.
func (m Mode) MustVerify() bool { return m == RequiredVerify || m == RequiredVerifyHosted }

// Verifies reports whether the certificate is checked (and the result at
// least logged).
func (m Mode) Verifies() bool { return m == PreferredVerify || m.MustVerify() }
