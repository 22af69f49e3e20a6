package dane

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"outpost/internal/certname"
)

// Result is the DANE verdict on one TLS peer.
type Result struct {
	// OK is true when a usable record authenticated the peer.
	OK bool
	// Record is the record that matched (OK), or the one that got
	// furthest (a DANE-TA record whose trust anchor was found).
	Record TLSA
	// Depth is the peer-chain position of the certificate the record
	// matched: 0 the leaf (DANE-EE), 1.. an issuer (DANE-TA), -1 a trust
	// anchor the peer did not send (a full-certificate "2 0 0" record).
	Depth int
	// Name is, for DANE-TA, the reference identifier the leaf matched.
	Name string
	// Reason says how the peer matched, or why it did not, in words fit
	// for the mail log and a DSN.
	Reason string
}

// Verify checks a TLS peer against TLSA records at the current time. See
// VerifyAt.
func Verify(cs tls.ConnectionState, records []TLSA, names []string) Result {
	return VerifyAt(cs, records, names, time.Now())
}

// VerifyAt checks the peer's certificate chain (cs.PeerCertificates, as
// sent, leaf first) against the usable records among records, with names
// as the reference identifiers for DANE-TA — the MX host name (the TLSA
// base domain) and, if the caller accepts it, the recipient domain
// (RFC 7672 §3.2.2). Unusable records are ignored (RFC 7672 §3.1.3). The
// first record that authenticates the peer wins.
//
// It is meant to run in tls.Config.VerifyConnection with Go's own
// verification disabled: the PKIX trust store plays no part (RFC 7672
// §3.1: only the TLSA records are trusted).
func VerifyAt(cs tls.ConnectionState, records []TLSA, names []string, now time.Time) Result {
	chain := cs.PeerCertificates
	if len(chain) == 0 {
		return Result{Depth: -1, Reason: "no peer certificate"}
	}
	usable := Usable(records)
	if len(usable) == 0 {
		return Result{Depth: -1, Reason: "no usable TLSA records"}
	}
	leaf := chain[0]

	// DANE-EE first: cheapest, and the common deployment.
	for _, r := range usable {
		if r.Usage == DANEEE && r.Matches(leaf) {
			// RFC 7672 §3.1.1: with DANE-EE the certificate is only a
			// container for the key; its names and validity dates MUST
			// be ignored (also RFC 7671 §5.1).
			return Result{OK: true, Record: r, Depth: 0, Reason: "DANE-EE " + r.String() + " matched the server certificate"}
		}
	}

	best := Result{Depth: -1}
	bestRank := 0 // 1: trust anchor found, chain invalid; 2: chain valid, name mismatch
	for _, r := range usable {
		if r.Usage != DANETA {
			continue
		}
		for _, ta := range trustAnchors(r, chain) {
			// RFC 7672 §3.1.2: the server's chain must lead from the
			// leaf to the trust anchor the record designates; the rest
			// of the chain is checked as in PKIX (signatures, CA
			// constraints, validity dates), with the TA as the only
			// root.
			roots := x509.NewCertPool()
			roots.AddCert(ta.cert)
			inter := x509.NewCertPool()
			for _, c := range chain[1:] {
				inter.AddCert(c)
			}
			_, err := leaf.Verify(x509.VerifyOptions{
				Roots:         roots,
				Intermediates: inter,
				CurrentTime:   now,
				KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
			})
			if err != nil {
				if bestRank < 1 {
					best, bestRank = Result{Record: r, Depth: ta.depth,
						Reason: "DANE-TA " + r.String() + ": no valid chain to the trust anchor: " + chainReason(err)}, 1
				}
				continue
			}
			// RFC 7672 §3.2.2: with DANE-TA the SMTP client MUST check
			// the server certificate's names against the reference
			// identifiers (the TLSA base domain; optionally the
			// next-hop domain).
			if name, ok := certname.Cert(leaf, names); ok {
				return Result{OK: true, Record: r, Depth: ta.depth, Name: name,
					Reason: fmt.Sprintf("DANE-TA %s matched the trust anchor at depth %d and the certificate name %s", r, ta.depth, name)}
			}
			if bestRank < 2 {
				best, bestRank = Result{Record: r, Depth: ta.depth,
					Reason: "DANE-TA " + r.String() + ": peer cert does not match " + strings.Join(names, " or ")}, 2
			}
		}
	}
	if bestRank > 0 {
		return best
	}
	params := make([]string, len(usable))
	for i, r := range usable {
		params[i] = r.String()
	}
	return Result{Depth: -1, Reason: "no TLSA record matched the server certificate chain (" + strings.Join(params, ", ") + ")"}
}

type anchor struct {
	cert  *x509.Certificate
	depth int
}

// trustAnchors returns the certificates a DANE-TA record designates: the
// issuers in the peer's chain that match it (RFC 7672 §3.1.2: the server
// MUST include the TA certificate in its chain unless the record holds the
// full certificate), and, for a full-certificate record ("2 0 0"), the
// certificate in the record itself.
func trustAnchors(r TLSA, chain []*x509.Certificate) []anchor {
	var out []anchor
	for i, c := range chain[1:] {
		if r.Matches(c) {
			out = append(out, anchor{c, i + 1})
		}
	}
	if len(out) == 0 && r.Selector == SelectorCert && r.MatchingType == MatchFull {
		if c, err := x509.ParseCertificate(r.Data); err == nil {
			out = append(out, anchor{c, -1})
		}
	}
	return out
}

func chainReason(err error) string {
	var inv x509.CertificateInvalidError
	if errors.As(err, &inv) && inv.Reason == x509.Expired {
		return "certificate has expired or is not yet valid"
	}
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		return "certificate not issued by the trust anchor"
	}
	return err.Error()
}
