package testdnssec

import (
	"testing"

	"github.com/miekg/dns"
)

const tlsaData = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// TestRig checks the rig's promises against raw answers from unbound:
// the AD bit for a signed zone and its authenticated denials, no AD bit
// for an unsigned zone, SERVFAIL for bogus and expired signatures and for
// a broken authority.
func TestRig(t *testing.T) {
	rig := Start(t,
		Zone{Name: "secure.test", Signed: true, Records: []string{
			"@ IN MX 10 mx",
			"mx IN A 127.0.0.1",
			"_25._tcp.mx IN TLSA 3 1 1 " + tlsaData,
			"bad IN A 127.0.0.2",
			"_25._tcp.bad IN TLSA 3 1 1 " + tlsaData,
			"mx2 IN A 127.0.0.1",
		}, Bogus: []string{"_25._tcp.bad TLSA"}, ServFail: []string{"_25._tcp.down", "_25._tcp.mx2"}},
		Zone{Name: "insecure.test", Records: []string{
			"@ IN MX 10 mx",
			"mx IN A 127.0.0.1",
			"_25._tcp.mx IN TLSA 3 1 1 " + tlsaData,
		}},
		Zone{Name: "expired.test", Expired: true, Records: []string{"mx IN A 127.0.0.1"}},
	)
	for _, tc := range []struct {
		name  string
		qtype uint16
		rcode int
		ad    bool
		n     int // answer records of qtype
	}{
		{"secure.test", dns.TypeMX, dns.RcodeSuccess, true, 1},
		{"mx.secure.test", dns.TypeA, dns.RcodeSuccess, true, 1},
		{"_25._tcp.mx.secure.test", dns.TypeTLSA, dns.RcodeSuccess, true, 1},
		{"mx.secure.test", dns.TypeAAAA, dns.RcodeSuccess, true, 0},              // secure NODATA
		{"_25._tcp.nomx.secure.test", dns.TypeTLSA, dns.RcodeNameError, true, 0}, // secure NXDOMAIN
		{"bad.secure.test", dns.TypeA, dns.RcodeSuccess, true, 1},                // its TLSA is bogus, not its A
		{"_25._tcp.bad.secure.test", dns.TypeTLSA, dns.RcodeServerFailure, false, 0},
		{"_25._tcp.down.secure.test", dns.TypeTLSA, dns.RcodeServerFailure, false, 0},
		{"mx2.secure.test", dns.TypeA, dns.RcodeSuccess, true, 1},
		{"_25._tcp.mx2.secure.test", dns.TypeTLSA, dns.RcodeServerFailure, false, 0}, // not denied by cached NSEC
		{"insecure.test", dns.TypeMX, dns.RcodeSuccess, false, 1},
		{"_25._tcp.mx.insecure.test", dns.TypeTLSA, dns.RcodeSuccess, false, 1},
		{"_25._tcp.nomx.insecure.test", dns.TypeTLSA, dns.RcodeNameError, false, 0},
		{"mx.expired.test", dns.TypeA, dns.RcodeServerFailure, false, 0},
	} {
		t.Run(tc.name+"/"+dns.TypeToString[tc.qtype], func(t *testing.T) {
			resp, err := rig.Query(tc.name, tc.qtype)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, rr := range resp.Answer {
				if rr.Header().Rrtype == tc.qtype {
					n++
				}
			}
			if resp.Rcode != tc.rcode || resp.AuthenticatedData != tc.ad || n != tc.n {
				t.Fatalf("rcode %s ad %v records %d; want %s %v %d\n%v", dns.RcodeToString[resp.Rcode], resp.AuthenticatedData, n,
					dns.RcodeToString[tc.rcode], tc.ad, tc.n, resp)
			}
		})
	}
	if rig.Anchors["secure.test"] == "" || rig.Anchors["insecure.test"] != "" {
		t.Errorf("anchors %v", rig.Anchors)
	}
}
