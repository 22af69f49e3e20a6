package deliver

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"time"

	"outpost/internal/certname"
)

// VerifyError is a certificate verification failure. Reason uses the
// OpenSSL wording that mail-log parsers expect ("peer cert does not match
// domain", "certificate has expired", "unable to get local issuer
// certificate", "self signed certificate").
type VerifyError struct {
	Reason string
	Err    error // the x509 error, when there is one
}

func (e *VerifyError) Error() string { return "verify error: " + e.Reason }
func (e *VerifyError) Unwrap() error { return e.Err }

// Verify checks a TLS peer the way a verifying mode requires: the chain
// must lead to roots (intermediates taken from the peer, validity checked
// at now), then the leaf must be valid for one of names (MatchCert). The
// chain is checked first, so an expired certificate reports "certificate
// has expired" even when its name also mismatches (OpenSSL's order).
// It returns nil or a *VerifyError; the matched name on success.
func Verify(cs tls.ConnectionState, roots *x509.CertPool, names []string, now time.Time) (string, error) {
	if len(cs.PeerCertificates) == 0 {
		return "", &VerifyError{Reason: "no peer certificate"}
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return "", &VerifyError{Reason: chainReason(err, cs.PeerCertificates, now), Err: err}
	}
	if m, ok := MatchCert(leaf, names); ok {
		return m, nil
	}
	return "", &VerifyError{Reason: "peer cert does not match domain"}
}

func chainReason(err error, chain []*x509.Certificate, now time.Time) string {
	var inv x509.CertificateInvalidError
	if errors.As(err, &inv) && inv.Reason == x509.Expired {
		if now.Before(inv.Cert.NotBefore) {
			return "certificate is not yet valid"
		}
		return "certificate has expired"
	}
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		leaf := chain[0]
		// Signed by its own key (not CheckSignatureFrom: a self-signed
		// leaf is usually not marked as a CA).
		if len(chain) == 1 && bytes.Equal(leaf.RawIssuer, leaf.RawSubject) &&
			leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature) == nil {
			return "self signed certificate"
		}
		return "unable to get local issuer certificate"
	}
	return err.Error()
}

// MatchCert reports whether cert is valid for one of names and which one
// (certname.Cert).
func MatchCert(cert *x509.Certificate, names []string) (string, bool) {
	return certname.Cert(cert, names)
}

// MatchName reports whether a presented certificate name matches a
// reference name (certname.Name).
func MatchName(presented, ref string) bool { return certname.Name(presented, ref) }
