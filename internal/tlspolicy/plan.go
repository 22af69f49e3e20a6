package tlspolicy

import (
	"crypto/tls"

	"outpost/internal/dane"
)

// Source names what decided a plan, for logs and reports.
type Source string

// The plan sources, in precedence order.
const (
	SourceRoute   Source = "route"
	SourceDANE    Source = "dane"
	SourceMTASTS  Source = "mta-sts"
	SourceProfile Source = "destination-control"
)

// Identity says which certificate names a verifying connection accepts.
// The reference identifiers are listed explicitly so the log can say which
// one matched.
type Identity struct {
	// Names are DNS names the certificate may be valid for (SAN, or CN when
	// the certificate has no DNS SAN). Matching is case-insensitive; the
	// usual one-label leftmost wildcard applies.
	Names []string
}

// Requirement is how one connection must be secured.
type Requirement struct {
	// Mode is the effective TLS mode; for MTA-STS enforce it is
	// RequiredVerify with Names = the MX host.
	Mode Mode
	// MinVersion is the lowest TLS version accepted (tls.VersionTLS12 under
	// MTA-STS enforce); 0 means the library default.
	MinVersion uint16
	// Identity is checked when Mode.Verifies().
	Identity Identity
	// Why is a short label for logs: "TLS Required (Verify)", "MTA-STS enforce".
	Why string
	// Source is what set this requirement (route, mta-sts, profile).
	Source Source
	// STSTesting asks the delivery side to report, without enforcing,
	// whether the connection would have met an MTA-STS testing policy.
	STSTesting bool
	// DANE, when non-empty, are the usable TLSA records the server must
	// match (dane.Verify); they replace PKIX verification, and
	// Identity.Names are the DANE-TA reference identifiers (RFC 7672
	// §3.2.2). Mode is then RequiredVerify: never plaintext.
	DANE []dane.TLSA
}

// Host is one candidate destination host.
type Host struct {
	Name string // MX host name or route host, without trailing dot
	Port int    // 0 = the configured delivery port
	// Pref is the MX preference (or route priority); lower first.
	Pref int
	TLS  Requirement
	// IPPreference is the profile's ip_preference ("prefer-ipv4", ...;
	// "" keeps the resolver's order). It orders addresses within the host.
	IPPreference string
}

// Plan is the whole decision for one destination domain.
type Plan struct {
	Domain string
	Source Source
	// Hosts are tried in order; hosts of equal Pref have already been
	// shuffled by whoever built the list.
	Hosts []Host
	// Defer, when set, means: connect to nothing, keep the mail and retry
	// later with this enhanced code and text (e.g. "4.4.8", "no MX host
	// matches the MTA-STS policy").
	DeferCode, DeferText string
	// Discard means an SMTP route sends the domain's mail to /dev/null:
	// recipients are dropped (final, logged) without a connection.
	Discard bool
	// Notes are log lines explaining the decision (testing-mode findings,
	// "MTA-STS is not enforced for domains that have SMTP Routes configured").
	Notes []string
}

// Deferred reports whether the plan forbids delivery for now.
func (p *Plan) Deferred() bool { return p.DeferCode != "" }

// TLS12 is the minimum version MTA-STS requires (RFC 8461 §4.1 via RFC 7525).
const TLS12 = tls.VersionTLS12

// ForMode is the requirement the profile's TLS mode alone gives a host of
// domain: verify modes accept the recipient domain; the hosted variant also
// accepts the MX host name (the seed's advice for hosted domains).
func ForMode(m Mode, domain, mxHost string) Requirement {
	r := Requirement{Mode: m, Why: "TLS " + m.Label()}
	if m.Verifies() {
		r.Identity.Names = []string{domain}
		if m == RequiredVerifyHosted && mxHost != "" && mxHost != domain {
			r.Identity.Names = append(r.Identity.Names, mxHost)
		}
	}
	return r
}
