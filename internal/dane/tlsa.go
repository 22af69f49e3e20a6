// Package dane implements DANE for SMTP (RFC 7672) as a sending MTA: which
// TLSA records are usable, whether a TLS peer matches them, and — from the
// DNSSEC status of each lookup and the destination's DANE setting — what a
// delivery to one MX host must do.
//
// Responsibility: the verdicts. Verify is computed from (TLS peer chain,
// TLSA records, reference names) alone and Decide from (lookup states,
// setting) alone; both are pure, and each rule carries the RFC clause it
// implements. Lookup gathers Decide's inputs through a consumer-owned
// Resolver (in production internal/resolver, whose Answer.Secure is the AD
// bit of a trusted validating resolver on loopback).
//
// Invariants:
//   - A host with usable TLSA records is never delivered to without TLS
//     authenticated by those records; no plaintext fallback exists for it
//     (RFC 7672 §2.2).
//   - A failed TLSA lookup for a host reached through secure DNS never turns
//     into "no DANE": the host is skipped (RFC 7672 §2.2), because an
//     attacker who can make the lookup fail would otherwise get a downgrade.
//   - Records from insecure answers are never used (RFC 7672 §2.2).
//
// Failure modes: Verify returns a Result whose Reason says which check
// failed; Decide returns a Decision whose Reason is written to the mail log
// and, for a deferral, to the DSN. Nothing here returns an error that a
// caller would have to interpret.
package dane

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"fmt"
)

// Certificate usages (RFC 6698 §2.1.1, RFC 7218 acronyms).
const (
	PKIXTA = 0 // unusable for SMTP (RFC 7672 §3.1.3)
	PKIXEE = 1 // unusable for SMTP (RFC 7672 §3.1.3)
	DANETA = 2 // trust anchor (RFC 7672 §3.1.2)
	DANEEE = 3 // end entity (RFC 7672 §3.1.1)
)

// Selectors (RFC 6698 §2.1.2).
const (
	SelectorCert = 0 // the whole certificate (DER)
	SelectorSPKI = 1 // the SubjectPublicKeyInfo (DER)
)

// Matching types (RFC 6698 §2.1.3).
const (
	MatchFull   = 0 // the selected content itself
	MatchSHA256 = 1
	MatchSHA512 = 2
)

// TLSA is one TLSA record (RFC 6698 §2.1).
type TLSA struct {
	Usage, Selector, MatchingType uint8
	Data                          []byte // certificate association data
}

// String is the presentation form's parameters, as log lines use them:
// "3 1 1" (the data is left out; it is long and says nothing to a reader).
func (t TLSA) String() string {
	return fmt.Sprintf("%d %d %d", t.Usage, t.Selector, t.MatchingType)
}

// Text is the full presentation form ("3 1 1 <hex>").
func (t TLSA) Text() string { return t.String() + " " + hex.EncodeToString(t.Data) }

// Usable reports whether an SMTP client may use the record: usage
// DANE-TA(2) or DANE-EE(3), a known selector and matching type, and data
// of the digest's length (RFC 7672 §3.1.3; RFC 7671 §4 on unknown
// parameters). An unusable record is ignored as if absent.
func (t TLSA) Usable() bool {
	switch t.Usage {
	case DANETA, DANEEE:
	default:
		// RFC 7672 §3.1.3: PKIX-TA(0) and PKIX-EE(1) rely on a public
		// CA list SMTP has no agreement on; SMTP clients treat them as
		// unusable.
		return false
	}
	if t.Selector != SelectorCert && t.Selector != SelectorSPKI {
		return false
	}
	switch t.MatchingType {
	case MatchFull:
		return len(t.Data) > 0
	case MatchSHA256:
		return len(t.Data) == sha256.Size
	case MatchSHA512:
		return len(t.Data) == sha512.Size
	}
	return false
}

// Usable returns the usable records of rs, in order (RFC 7672 §3.1.3).
func Usable(rs []TLSA) []TLSA {
	var out []TLSA
	for _, r := range rs {
		if r.Usable() {
			out = append(out, r)
		}
	}
	return out
}

// Matches reports whether cert matches the record's selector and matching
// type (RFC 6698 §2.1.2, §2.1.3). The usage is not considered.
func (t TLSA) Matches(cert *x509.Certificate) bool {
	sel := selected(cert, t.Selector)
	if sel == nil {
		return false
	}
	switch t.MatchingType {
	case MatchFull:
		return bytes.Equal(sel, t.Data)
	case MatchSHA256:
		h := sha256.Sum256(sel)
		return bytes.Equal(h[:], t.Data)
	case MatchSHA512:
		h := sha512.Sum512(sel)
		return bytes.Equal(h[:], t.Data)
	}
	return false
}

func selected(cert *x509.Certificate, selector uint8) []byte {
	switch selector {
	case SelectorCert:
		return cert.Raw
	case SelectorSPKI:
		return cert.RawSubjectPublicKeyInfo
	}
	return nil
}

// Record makes the TLSA record that cert would be published as, e.g.
// Record(leaf, DANEEE, SelectorSPKI, MatchSHA256) is the common "3 1 1".
// It is what `outpost dane check` suggests and what tests publish.
func Record(cert *x509.Certificate, usage, selector, matching uint8) TLSA {
	t := TLSA{Usage: usage, Selector: selector, MatchingType: matching}
	sel := selected(cert, selector)
	switch matching {
	case MatchFull:
		t.Data = append([]byte(nil), sel...)
	case MatchSHA256:
		h := sha256.Sum256(sel)
		t.Data = h[:]
	case MatchSHA512:
		h := sha512.Sum512(sel)
		t.Data = h[:]
	}
	return t
}
