package deliver

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"

	"outpost/internal/dane"
	"outpost/internal/tlspolicy"
)

// TestDANE carries out DANE requirements against real TLS receivers on
// loopback: authentication by TLSA records replaces PKIX (RFC 7672 §3),
// and a host that fails is never delivered to, in plaintext or otherwise
// (RFC 7672 §2.2).
func TestDANE(t *testing.T) {
	p := getPKI(t)
	ee := func(c tls.Certificate) []dane.TLSA {
		return []dane.TLSA{dane.Record(c.Leaf, dane.DANEEE, dane.SelectorSPKI, dane.MatchSHA256)}
	}
	withCA := func(c tls.Certificate) tls.Certificate {
		c.Certificate = append(append([][]byte(nil), c.Certificate...), p.ca.Cert.Raw)
		return c
	}
	ta := []dane.TLSA{dane.Record(p.ca.Cert, dane.DANETA, dane.SelectorCert, dane.MatchSHA256)}
	for _, tc := range []struct {
		name    string
		server  *tls.Config
		records []dane.TLSA
		ok      bool
		log     string // the DANE line
	}{
		{"3 1 1 match", serverTLS(p.valid, 0), ee(p.valid), true, "DCID 1 DANE SUCCESS for " + domain + ": TLSA 3 1 1 matched MX(" + mxName + ")"},
		{"3 1 1 expired certificate still matches", serverTLS(p.expired, 0), ee(p.expired), true, "DCID 1 DANE SUCCESS for " + domain + ": TLSA 3 1 1 matched MX(" + mxName + ")"},
		{"3 1 1 mismatch", serverTLS(p.valid, 0), ee(p.wrongName), false,
			"DCID 1 DANE failure for " + domain + ": MX(" + mxName + ") no TLSA record matched the server certificate chain (3 1 1)"},
		{"2 0 1 with the CA sent", serverTLS(withCA(p.hostOnly), 0), ta, true, "DCID 1 DANE SUCCESS for " + domain + ": TLSA 2 0 1 matched MX(" + mxName + ")"},
		{"2 0 1 wrong name", serverTLS(withCA(p.wrongName), 0), ta, false,
			"DCID 1 DANE failure for " + domain + ": MX(" + mxName + ") DANE-TA 2 0 1: peer cert does not match " + mxName + " or " + domain},
		{"no STARTTLS: never plaintext", nil, ee(p.valid), false, "DCID 1 DANE failure for " + domain + ": MX(" + mxName + ") STARTTLS not offered"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &backend{}
			port := startSMTP(t, b, tc.server, nil)
			h := newHarness(t, nil) // no trust store: DANE does not use it
			req := tlspolicy.Requirement{Mode: tlspolicy.RequiredVerify, Identity: tlspolicy.Identity{Names: []string{mxName, domain}},
				DANE: tc.records, Why: "DANE", Source: tlspolicy.SourceDANE}
			cn, err := h.c.Connect(context.Background(), domain, tlspolicy.Host{Name: mxName, Port: port, TLS: req})
			if tc.ok {
				if err != nil {
					t.Fatalf("connect: %v", err)
				}
				if !cn.Verified() {
					t.Error("not marked verified")
				}
				if res := cn.Send(context.Background(), msg("bob@"+domain)); res.Rcpt[0].Code != 250 {
					t.Errorf("send: %+v", res.Rcpt[0])
				}
				cn.Close()
			} else {
				if err == nil {
					cn.Close()
					t.Fatal("connected, want failure")
				}
				var e *Error
				if !errors.As(err, &e) || e.Stage != StageTLS || (e.Reply.Enhanced != "4.7.5" && e.Reply.Enhanced != "4.7.4") {
					t.Fatalf("error %v", err)
				}
				if got := b.got(); len(got) != 0 {
					t.Fatalf("mail was sent: %+v", got)
				}
			}
			found := false
			for _, l := range h.lines(t) {
				if l == tc.log {
					found = true
				}
				if strings.Contains(l, "plaintext") {
					t.Errorf("plaintext: %s", l)
				}
			}
			if !found {
				t.Errorf("no line %q in\n%v", tc.log, h.lines(t))
			}
		})
	}
}
