package dane

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	"outpost/internal/testpki"
)

func mustCA(t *testing.T, name string) *testpki.CA {
	t.Helper()
	ca, err := testpki.NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func mustLeaf(t *testing.T, ca *testpki.CA, o testpki.LeafOptions, names ...string) *x509.Certificate {
	t.Helper()
	c, err := ca.Leaf(names, o)
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf
}

func peer(certs ...*x509.Certificate) tls.ConnectionState {
	return tls.ConnectionState{HandshakeComplete: true, PeerCertificates: certs}
}

// TestVerify checks the verifier against RFC 7672 §3 with real
// certificates; each case quotes the clause it checks.
func TestVerify(t *testing.T) {
	ca := mustCA(t, "Outpost DANE test CA")
	other := mustCA(t, "Some other CA")
	leaf := mustLeaf(t, ca, testpki.LeafOptions{}, "mx.example.com")
	wild := mustLeaf(t, ca, testpki.LeafOptions{}, "*.example.com")
	wrongName := mustLeaf(t, ca, testpki.LeafOptions{}, "mail.elsewhere.net")
	expired := mustLeaf(t, ca, testpki.LeafOptions{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}, "mx.example.com")
	selfSigned := mustLeaf(t, ca, testpki.LeafOptions{SelfSigned: true}, "mx.example.com")
	byOther := mustLeaf(t, other, testpki.LeafOptions{}, "mx.example.com")
	names := []string{"mx.example.com", "example.com"}

	for _, tc := range []struct {
		name    string
		clause  string // the rule checked
		cs      tls.ConnectionState
		records []TLSA
		names   []string
		ok      bool
		depth   int
		matched string // Result.Name
		reason  string // substring of Result.Reason
	}{
		{"DANE-EE 3 1 1 matches the leaf key", "RFC 7672 §3.1.1: DANE-EE matches the server's key",
			peer(leaf), []TLSA{Record(leaf, DANEEE, SelectorSPKI, MatchSHA256)}, names, true, 0, "", "DANE-EE 3 1 1"},
		{"DANE-EE 3 0 1 matches the leaf certificate", "RFC 7672 §3.1.1 with selector Cert(0)",
			peer(leaf), []TLSA{Record(leaf, DANEEE, SelectorCert, MatchSHA256)}, names, true, 0, "", ""},
		{"DANE-EE 3 1 2 (SHA-512)", "RFC 6698 §2.1.3 matching type 2",
			peer(leaf), []TLSA{Record(leaf, DANEEE, SelectorSPKI, MatchSHA512)}, names, true, 0, "", ""},
		{"DANE-EE 3 0 0 (full certificate)", "RFC 6698 §2.1.3 matching type 0",
			peer(leaf), []TLSA{Record(leaf, DANEEE, SelectorCert, MatchFull)}, names, true, 0, "", ""},
		{"DANE-EE mismatch", "RFC 7672 §3.1.1: another key does not match",
			peer(leaf), []TLSA{Record(wrongName, DANEEE, SelectorSPKI, MatchSHA256)}, names, false, -1, "", "no TLSA record matched the server certificate chain (3 1 1)"},
		{"DANE-EE ignores an expired certificate", "RFC 7672 §3.1.1: validity dates are ignored with DANE-EE",
			peer(expired), []TLSA{Record(expired, DANEEE, SelectorSPKI, MatchSHA256)}, names, true, 0, "", ""},
		{"DANE-EE ignores names", "RFC 7672 §3.1.1 (§3.2.1): no name checks with DANE-EE",
			peer(wrongName), []TLSA{Record(wrongName, DANEEE, SelectorSPKI, MatchSHA256)}, names, true, 0, "", ""},
		{"DANE-EE accepts a self-signed certificate", "RFC 7672 §3.1.1: the certificate is only a key container",
			peer(selfSigned), []TLSA{Record(selfSigned, DANEEE, SelectorSPKI, MatchSHA256)}, names, true, 0, "", ""},
		{"DANE-EE matches only the leaf, not an issuer", "RFC 7672 §3.1.1: DANE-EE designates the end entity",
			peer(leaf, ca.Cert), []TLSA{Record(ca.Cert, DANEEE, SelectorSPKI, MatchSHA256)}, names, false, -1, "", "no TLSA record matched"},
		{"DANE-TA 2 0 1 with the CA in the chain", "RFC 7672 §3.1.2: chain from the leaf to the TA the record designates",
			peer(leaf, ca.Cert), []TLSA{Record(ca.Cert, DANETA, SelectorCert, MatchSHA256)}, names, true, 1, "mx.example.com", "DANE-TA 2 0 1"},
		{"DANE-TA 2 1 1 with the CA in the chain", "RFC 7672 §3.1.2 with selector SPKI(1)",
			peer(leaf, ca.Cert), []TLSA{Record(ca.Cert, DANETA, SelectorSPKI, MatchSHA256)}, names, true, 1, "mx.example.com", ""},
		{"DANE-TA 2 0 0 full CA certificate not sent by the server", "RFC 7672 §3.1.2: a full-certificate record need not be in the chain",
			peer(leaf), []TLSA{Record(ca.Cert, DANETA, SelectorCert, MatchFull)}, names, true, -1, "mx.example.com", ""},
		{"DANE-TA 2 0 1 digest without the CA in the chain", "RFC 7672 §3.1.2: the server MUST include the TA certificate",
			peer(leaf), []TLSA{Record(ca.Cert, DANETA, SelectorCert, MatchSHA256)}, names, false, -1, "", "no TLSA record matched"},
		{"DANE-TA name mismatch fails", "RFC 7672 §3.2.2: DANE-TA requires a name check",
			peer(wrongName, ca.Cert), []TLSA{Record(ca.Cert, DANETA, SelectorCert, MatchSHA256)}, names, false, 1, "", "peer cert does not match mx.example.com or example.com"},
		{"DANE-TA accepts the recipient domain as a reference identifier", "RFC 7672 §3.2.2: the next-hop domain",
			peer(mustLeaf(t, ca, testpki.LeafOptions{}, "example.com"), ca.Cert), []TLSA{Record(ca.Cert, DANETA, SelectorCert, MatchSHA256)}, names, true, 1, "example.com", ""},
		{"DANE-TA wildcard in the leftmost label", "RFC 7672 §3.2.3: a wildcard matches one leftmost label",
			peer(wild, ca.Cert), []TLSA{Record(ca.Cert, DANETA, SelectorCert, MatchSHA256)}, []string{"mx.example.com"}, true, 1, "mx.example.com", ""},
		{"DANE-TA wildcard does not match two labels", "RFC 7672 §3.2.3",
			peer(wild, ca.Cert), []TLSA{Record(ca.Cert, DANETA, SelectorCert, MatchSHA256)}, []string{"a.mx.example.com"}, false, 1, "", "peer cert does not match"},
		{"DANE-TA checks the leaf's dates", "RFC 7672 §3.1.2: below the TA the chain is checked as in PKIX",
			peer(expired, ca.Cert), []TLSA{Record(ca.Cert, DANETA, SelectorCert, MatchSHA256)}, names, false, 1, "", "expired"},
		{"DANE-TA leaf not issued by the TA", "RFC 7672 §3.1.2: the chain must lead to the TA",
			peer(byOther, ca.Cert), []TLSA{Record(ca.Cert, DANETA, SelectorCert, MatchSHA256)}, names, false, 1, "", "not issued by the trust anchor"},
		{"DANE-TA record matching the leaf itself is not a trust anchor", "RFC 7672 §3.1.2: the TA is an issuer",
			peer(leaf), []TLSA{Record(leaf, DANETA, SelectorCert, MatchSHA256)}, names, false, -1, "", "no TLSA record matched"},
		{"PKIX-EE 1 1 1 is ignored", "RFC 7672 §3.1.3: PKIX-EE(1) is unusable for SMTP",
			peer(leaf), []TLSA{Record(leaf, PKIXEE, SelectorSPKI, MatchSHA256)}, names, false, -1, "", "no usable TLSA records"},
		{"PKIX-TA 0 0 1 is ignored", "RFC 7672 §3.1.3: PKIX-TA(0) is unusable for SMTP",
			peer(leaf, ca.Cert), []TLSA{Record(ca.Cert, PKIXTA, SelectorCert, MatchSHA256)}, names, false, -1, "", "no usable TLSA records"},
		{"PKIX record beside a usable one", "RFC 7672 §3.1.3: unusable records are skipped, usable ones still count",
			peer(leaf), []TLSA{Record(wrongName, PKIXEE, SelectorSPKI, MatchSHA256), Record(leaf, DANEEE, SelectorSPKI, MatchSHA256)}, names, true, 0, "", ""},
		{"any matching record suffices", "RFC 6698 §2.1: an RRset with several records (key rollover)",
			peer(leaf, ca.Cert), []TLSA{Record(wrongName, DANEEE, SelectorSPKI, MatchSHA256), Record(ca.Cert, DANETA, SelectorSPKI, MatchSHA256)}, names, true, 1, "mx.example.com", ""},
		{"unknown matching type is unusable", "RFC 7672 §3.1.3 / RFC 6698 §4.1: unknown parameters are unusable",
			peer(leaf), []TLSA{{Usage: DANEEE, Selector: SelectorSPKI, MatchingType: 7, Data: Record(leaf, DANEEE, SelectorSPKI, MatchSHA256).Data}}, names, false, -1, "", "no usable TLSA records"},
		{"truncated digest is unusable", "RFC 6698 §2.1.3: SHA-256 data is 32 bytes",
			peer(leaf), []TLSA{{Usage: DANEEE, Selector: SelectorSPKI, MatchingType: MatchSHA256, Data: Record(leaf, DANEEE, SelectorSPKI, MatchSHA256).Data[:31]}}, names, false, -1, "", "no usable TLSA records"},
		{"no peer certificate", "RFC 7672 §2.2: authentication is mandatory",
			peer(), []TLSA{Record(leaf, DANEEE, SelectorSPKI, MatchSHA256)}, names, false, -1, "", "no peer certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Verify(tc.cs, tc.records, tc.names)
			if r.OK != tc.ok || r.Depth != tc.depth || r.Name != tc.matched || !strings.Contains(r.Reason, tc.reason) {
				t.Fatalf("%s\n got ok=%v depth=%d name=%q reason=%q\nwant ok=%v depth=%d name=%q reason~%q", tc.clause, r.OK, r.Depth, r.Name, r.Reason, tc.ok, tc.depth, tc.matched, tc.reason)
			}
			if r.OK && !r.Record.Usable() {
				t.Fatalf("matched an unusable record %s", r.Record)
			}
		})
	}
}

func TestUsable(t *testing.T) {
	d32, d64 := make([]byte, 32), make([]byte, 64)
	for _, tc := range []struct {
		r    TLSA
		want bool
	}{
		{TLSA{3, 1, 1, d32}, true},
		{TLSA{3, 0, 2, d64}, true},
		{TLSA{2, 0, 0, []byte{0x30}}, true},
		{TLSA{2, 1, 1, d32}, true},
		{TLSA{0, 0, 1, d32}, false}, // RFC 7672 §3.1.3
		{TLSA{1, 1, 1, d32}, false}, // RFC 7672 §3.1.3
		{TLSA{4, 1, 1, d32}, false}, // unknown usage
		{TLSA{3, 2, 1, d32}, false}, // unknown selector
		{TLSA{3, 1, 3, d32}, false}, // unknown matching type
		{TLSA{3, 1, 1, d64}, false}, // wrong digest length
		{TLSA{3, 1, 2, d32}, false},
		{TLSA{3, 1, 0, nil}, false},
	} {
		if got := tc.r.Usable(); got != tc.want {
			t.Errorf("%s usable=%v, want %v", tc.r, got, tc.want)
		}
	}
	if u := Usable([]TLSA{{1, 1, 1, d32}, {3, 1, 1, d32}}); len(u) != 1 || u[0].Usage != 3 {
		t.Errorf("Usable: %v", u)
	}
	if s := (TLSA{3, 1, 1, []byte{0xab, 0x01}}).Text(); s != "3 1 1 ab01" {
		t.Errorf("Text: %s", s)
	}
}

// TestVerifyConnection runs a real TLS handshake on loopback with Go's
// verification disabled and dane.Verify as the verdict, the way the
// delivery client uses it; SNI is the MX host name (RFC 7672 §8.1).
func TestVerifyConnection(t *testing.T) {
	ca := mustCA(t, "Outpost DANE test CA")
	cert := ca.MustLeaf("mx.example.com")
	cert.Certificate = append(cert.Certificate, ca.Cert.Raw) // send the TA (RFC 7672 §3.1.2)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	sni := make(chan string, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
				sni <- h.ServerName
				return nil, nil
			}})
			s.Handshake()
			s.Close()
		}
	}()
	dial := func(records []TLSA) Result {
		var res Result
		c, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{
			ServerName:         "mx.example.com",
			InsecureSkipVerify: true, // replaced by VerifyConnection
			VerifyConnection: func(cs tls.ConnectionState) error {
				res = Verify(cs, records, []string{"mx.example.com", "example.com"})
				return nil
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		if got := <-sni; got != "mx.example.com" {
			t.Errorf("SNI %q", got)
		}
		return res
	}
	if r := dial([]TLSA{Record(cert.Leaf, DANEEE, SelectorSPKI, MatchSHA256)}); !r.OK || r.Depth != 0 {
		t.Errorf("3 1 1: %+v", r)
	}
	if r := dial([]TLSA{Record(ca.Cert, DANETA, SelectorCert, MatchSHA256)}); !r.OK || r.Depth != 1 {
		t.Errorf("2 0 1: %+v", r)
	}
	if r := dial([]TLSA{Record(ca.Cert, DANEEE, SelectorSPKI, MatchSHA256)}); r.OK {
		t.Errorf("mismatch accepted: %+v", r)
	}
}
