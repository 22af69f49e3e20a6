// Package certname matches certificate names against reference
// identifiers, the one rule every verifying path shares (TLS modes,
// MTA-STS, DANE-TA): DNS subjectAltNames, or the subject CN only without a
// DNS SAN, case-insensitive, trailing dot ignored, and a wildcard only as
// the whole leftmost label matching exactly one label. It is a leaf package.
package certname

import (
	"crypto/x509"
	"strings"
)

// Cert reports whether cert is valid for one of names and which one:
// the DNS subjectAltNames are used, or the subject CN only when the
// certificate has no DNS SAN (RFC 6125 §6.4.4). Matching follows Name.
func Cert(cert *x509.Certificate, names []string) (string, bool) {
	presented := cert.DNSNames
	if len(presented) == 0 && cert.Subject.CommonName != "" {
		presented = []string{cert.Subject.CommonName}
	}
	for _, ref := range names {
		for _, p := range presented {
			if Name(p, ref) {
				return ref, true
			}
		}
	}
	return "", false
}

// Name reports whether a presented certificate name matches a
// reference name. Comparison is case-insensitive and ignores a trailing
// dot. A wildcard is accepted only as the complete leftmost label
// ("*.example.com"), matching exactly one label: it matches
// "mx.example.com" but not "example.com" nor "a.mx.example.com"
// (RFC 6125 §6.4.3; RFC 8461 §3.4 for MTA-STS). Partial-label wildcards
// ("m*.example.com") and wildcards over a single remaining label ("*.com")
// are rejected.
func Name(presented, ref string) bool {
	p := strings.ToLower(strings.TrimSuffix(presented, "."))
	r := strings.ToLower(strings.TrimSuffix(ref, "."))
	if p == "" || r == "" || strings.HasPrefix(r, "*") {
		return false
	}
	if !strings.Contains(p, "*") {
		return p == r
	}
	rest, ok := strings.CutPrefix(p, "*.")
	if !ok || strings.Contains(rest, "*") || !strings.Contains(rest, ".") {
		return false
	}
	label, suffix, ok := strings.Cut(r, ".")
	return ok && label != "" && suffix == rest
}
