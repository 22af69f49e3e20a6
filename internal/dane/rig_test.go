package dane_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"outpost/internal/dane"
	"outpost/internal/resolver"
	"outpost/internal/testdnssec"
	"outpost/internal/testpki"
)

// TestLookupThroughValidatingResolver runs Lookup through internal/resolver
// against a real DNSSEC rig (knotd serving signed zones, unbound
// validating with the test trust anchors, all on loopback): the AD bit is
// what makes a host DANE-capable.
func TestLookupThroughValidatingResolver(t *testing.T) {
	ca, err := testpki.NewCA("DANE rig CA")
	if err != nil {
		t.Fatal(err)
	}
	cert := ca.MustLeaf("mx.secure.test")
	other := ca.MustLeaf("other.example")
	ee := dane.Record(cert.Leaf, dane.DANEEE, dane.SelectorSPKI, dane.MatchSHA256).Text()
	ta := dane.Record(ca.Cert, dane.DANETA, dane.SelectorCert, dane.MatchSHA256).Text()

	rig := testdnssec.Start(t,
		testdnssec.Zone{Name: "secure.test", Signed: true, Records: []string{
			"@ IN MX 10 mx",
			"mx IN A 127.0.0.1",
			"_25._tcp.mx IN TLSA " + ee,
			// a DANE-TA host
			"ta IN MX 10 mx.ta",
			"mx.ta IN A 127.0.0.1",
			"_25._tcp.mx.ta IN TLSA " + ta,
			// a host without TLSA records (secure denial)
			"plain IN MX 10 mx.plain",
			"mx.plain IN A 127.0.0.1",
			// a host whose TLSA signature is broken
			"bogus IN MX 10 mx.bogus",
			"mx.bogus IN A 127.0.0.1",
			"_25._tcp.mx.bogus IN TLSA " + ee,
			// a host whose TLSA authority fails
			"down IN MX 10 mx.down",
			"mx.down IN A 127.0.0.1",
			// only PKIX records: TLS without DANE authentication
			"pkix IN MX 10 mx.pkix",
			"mx.pkix IN A 127.0.0.1",
			"_25._tcp.mx.pkix IN TLSA 1 1 1 " + ee[6:],
			// a secure MX naming a host in an unsigned zone
			"away IN MX 10 mx.insecure.test.",
			// two MX hosts: the preferred one's TLSA lookup fails
			"mixed IN MX 10 mx.bogus",
			"mixed IN MX 20 mx",
		}, Bogus: []string{"_25._tcp.mx.bogus TLSA"}, ServFail: []string{"_25._tcp.mx.down"}},
		testdnssec.Zone{Name: "insecure.test", Records: []string{
			"@ IN MX 10 mx",
			"mx IN A 127.0.0.1",
			"_25._tcp.mx IN TLSA " + ee,
		}},
		testdnssec.Zone{Name: "expired.test", Expired: true, Records: []string{"@ IN MX 10 mx", "mx IN A 127.0.0.1"}},
	)
	res := resolver.New([]string{rig.Resolver}, resolver.WithTimeout(3*time.Second))
	ctx := context.Background()

	type host struct {
		name             string
		addr, tlsa       dane.State
		opp, mand        dane.Action
		verifyWith       tls.Certificate // when set, Verify the found records against this certificate
		verifyOK         bool
		verifyCertChain  bool // send the CA too
		verifyReasonPart string
	}
	for _, tc := range []struct {
		domain string
		clause string
		mx     dane.State
		hosts  []host
	}{
		{"secure.test", "RFC 7672 §2.2, §3.1.1: secure MX, address and TLSA 3 1 1 → authenticate", dane.Secure,
			[]host{{name: "mx.secure.test", addr: dane.Secure, tlsa: dane.Secure, opp: dane.Authenticate, mand: dane.Authenticate, verifyWith: cert, verifyOK: true}}},
		{"secure.test", "RFC 7672 §3.1.1: a certificate with another key does not match", dane.Secure,
			[]host{{name: "mx.secure.test", addr: dane.Secure, tlsa: dane.Secure, opp: dane.Authenticate, mand: dane.Authenticate, verifyWith: other, verifyOK: false, verifyReasonPart: "no TLSA record matched"}}},
		{"ta.secure.test", "RFC 7672 §3.1.2: DANE-TA 2 0 1 with the CA in the chain, name checked", dane.Secure,
			[]host{{name: "mx.ta.secure.test", addr: dane.Secure, tlsa: dane.Secure, opp: dane.Authenticate, mand: dane.Authenticate, verifyWith: ca.MustLeaf("mx.ta.secure.test"), verifyCertChain: true, verifyOK: true}}},
		{"ta.secure.test", "RFC 7672 §3.2.2: DANE-TA with the wrong name fails", dane.Secure,
			[]host{{name: "mx.ta.secure.test", addr: dane.Secure, tlsa: dane.Secure, opp: dane.Authenticate, mand: dane.Authenticate, verifyWith: other, verifyCertChain: true, verifyOK: false, verifyReasonPart: "does not match"}}},
		{"plain.secure.test", "RFC 7672 §2.2: authenticated denial of TLSA → not DANE", dane.Secure,
			[]host{{name: "mx.plain.secure.test", addr: dane.Secure, tlsa: dane.SecureDenial, opp: dane.NotDANE, mand: dane.Defer}}},
		{"bogus.secure.test", "RFC 7672 §2.2: bogus TLSA signature → SERVFAIL → skip the host", dane.Secure,
			[]host{{name: "mx.bogus.secure.test", addr: dane.Secure, tlsa: dane.Bogus, opp: dane.SkipHost, mand: dane.SkipHost}}},
		{"down.secure.test", "RFC 7672 §2.1.1: TLSA SERVFAIL → skip the host", dane.Secure,
			[]host{{name: "mx.down.secure.test", addr: dane.Secure, tlsa: dane.Bogus, opp: dane.SkipHost, mand: dane.SkipHost}}},
		{"pkix.secure.test", "RFC 7672 §3.1.3: only PKIX usages → TLS without DANE authentication", dane.Secure,
			[]host{{name: "mx.pkix.secure.test", addr: dane.Secure, tlsa: dane.Secure, opp: dane.Encrypt, mand: dane.Defer}}},
		{"away.secure.test", "RFC 7672 §2.2.2: insecure address records → no TLSA lookup", dane.Secure,
			[]host{{name: "mx.insecure.test", addr: dane.Insecure, tlsa: dane.NotLooked, opp: dane.NotDANE, mand: dane.Defer}}},
		{"mixed.secure.test", "RFC 7672 §2.2: each MX host on its own: skip the failed one, authenticate the other", dane.Secure,
			[]host{{name: "mx.bogus.secure.test", addr: dane.Secure, tlsa: dane.Bogus, opp: dane.SkipHost, mand: dane.SkipHost},
				{name: "mx.secure.test", addr: dane.Secure, tlsa: dane.Secure, opp: dane.Authenticate, mand: dane.Authenticate}}},
		{"insecure.test", "RFC 7672 §2.2.1: unsigned zone → insecure MX → not DANE (TLSA never asked)", dane.Insecure,
			[]host{{name: "mx.insecure.test", addr: dane.NotLooked, tlsa: dane.NotLooked, opp: dane.NotDANE, mand: dane.Defer}}},
		{"expired.test", "RFC 7672 §2.1.1: expired signatures → bogus MX → no hosts", dane.Bogus, nil},
	} {
		t.Run(tc.domain+"/"+tc.clause, func(t *testing.T) {
			for _, set := range []dane.Setting{dane.Opportunistic, dane.Mandatory} {
				d := dane.Lookup(ctx, res, tc.domain, set)
				if d.MX != tc.mx || len(d.Hosts) != len(tc.hosts) {
					t.Fatalf("%s: MX %s with %d hosts, want %s with %d (%+v)", set, d.MX, len(d.Hosts), tc.mx, len(tc.hosts), d)
				}
				for i, want := range tc.hosts {
					h := d.Hosts[i]
					act := want.opp
					if set == dane.Mandatory {
						act = want.mand
					}
					if h.Name != want.name || h.Inputs.Addr != want.addr || h.Inputs.TLSA != want.tlsa || h.Decision.Action != act {
						t.Fatalf("%s: host %s addr %s tlsa %s → %s (%s); want %s %s %s → %s", set, h.Name, h.Inputs.Addr, h.Inputs.TLSA,
							h.Decision.Action, h.Decision.Reason, want.name, want.addr, want.tlsa, act)
					}
					if want.verifyWith.Leaf == nil {
						continue
					}
					cs := tls.ConnectionState{PeerCertificates: certs(want.verifyWith, want.verifyCertChain, ca)}
					r := dane.Verify(cs, h.Decision.Records, []string{h.Name, tc.domain})
					if r.OK != want.verifyOK || !strings.Contains(r.Reason, want.verifyReasonPart) {
						t.Fatalf("%s: Verify %+v, want ok=%v reason~%q", set, r, want.verifyOK, want.verifyReasonPart)
					}
				}
			}
		})
	}

	// The AD bit itself, as internal/resolver reports it.
	recs, ans, err := res.TLSA(ctx, 25, "mx.secure.test")
	if err != nil || !ans.Secure || len(recs) != 1 || recs[0].Usage != 3 {
		t.Fatalf("TLSA secure: %v %+v %v", recs, ans, err)
	}
	recs, ans, err = res.TLSA(ctx, 25, "mx.insecure.test")
	if err != nil || ans.Secure || len(recs) != 1 {
		t.Fatalf("TLSA insecure: %v %+v %v", recs, ans, err)
	}
	if _, ans, err = res.TLSA(ctx, 25, "mx.bogus.secure.test"); err == nil || ans.Status != resolver.ServFail {
		t.Fatalf("TLSA bogus: %+v %v", ans, err)
	}
}

func certs(c tls.Certificate, withCA bool, ca *testpki.CA) []*x509.Certificate {
	out := []*x509.Certificate{c.Leaf}
	if withCA {
		out = append(out, ca.Cert)
	}
	return out
}
