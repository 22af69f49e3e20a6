package tlspolicy

import (
	"reflect"
	"strings"
	"testing"

	"outpost/internal/dane"
)

// TestBuildDANE covers step 2 of the plan: DANE per MX host, and how it
// combines with routes, MTA-STS and the TLS mode (docs/tls-policy.md §1).
func TestBuildDANE(t *testing.T) {
	mxs := []MX{{Host: "mx1.example.com", Pref: 10}, {Host: "mx2.other.net", Pref: 20}}
	recs := []dane.TLSA{{Usage: 3, Selector: 1, MatchingType: 1, Data: make([]byte, 32)}}
	auth := dane.Decision{Action: dane.Authenticate, Records: recs, Reason: "secure TLSA records found (3 1 1)"}
	notDANE := dane.Decision{Action: dane.NotDANE, Reason: "the MX records are not DNSSEC-signed"}
	skip := dane.Decision{Action: dane.SkipHost, Code: "4.7.5", Reason: "TLSA lookup failed: bogus (SERVFAIL)"}
	mand := dane.Decision{Action: dane.Defer, Code: "4.7.4", Reason: "DANE is mandatory but the MX records are not DNSSEC-signed"}
	encrypt := dane.Decision{Action: dane.Encrypt, Reason: "TLSA records present but none usable (1 1 1)"}
	enforce := &STS{Mode: "enforce", Match: match("*.example.com")}
	daneReq := func(host string) Requirement {
		return Requirement{Mode: RequiredVerify, Identity: Identity{Names: []string{host, "example.com"}}, DANE: recs, Why: "DANE", Source: SourceDANE}
	}
	prof := func(m Mode, host string) Requirement {
		r := ForMode(m, "example.com", host)
		r.Source = SourceProfile
		return r
	}
	stsReq := func(host string) Requirement {
		return Requirement{Mode: RequiredVerify, MinVersion: TLS12, Identity: Identity{Names: []string{host}}, Why: "MTA-STS enforce", Source: SourceMTASTS}
	}
	for _, tc := range []struct {
		name      string
		in        Input
		source    Source
		hosts     []Host
		deferCode string
		text      string // substring of DeferText or a note
	}{
		{"DANE success on every host", Input{Mode: Preferred, MXs: mxs, DANE: dane.Opportunistic,
			DANEHosts: map[string]dane.Decision{"mx1.example.com": auth, "mx2.other.net": auth}}, SourceDANE,
			[]Host{{Name: "mx1.example.com", Pref: 10, TLS: daneReq("mx1.example.com")}, {Name: "mx2.other.net", Pref: 20, TLS: daneReq("mx2.other.net")}}, "", ""},
		{"DANE success skips MTA-STS, even for a host the policy does not list", Input{Mode: Preferred, MXs: mxs[1:], DANE: dane.Opportunistic, MTASTS: true, STSState: STSPolicy, STS: enforce,
			DANEHosts: map[string]dane.Decision{"mx2.other.net": auth}}, SourceDANE,
			[]Host{{Name: "mx2.other.net", Pref: 20, TLS: daneReq("mx2.other.net")}}, "", ""},
		{"opportunistic, not DANE-capable: MTA-STS enforce applies", Input{Mode: Preferred, MXs: mxs, DANE: dane.Opportunistic, MTASTS: true, STSState: STSPolicy, STS: enforce,
			DANEHosts: map[string]dane.Decision{"mx1.example.com": notDANE, "mx2.other.net": notDANE}}, SourceMTASTS,
			[]Host{{Name: "mx1.example.com", Pref: 10, TLS: stsReq("mx1.example.com")}}, "", "MX mx2.other.net is not in the policy"},
		{"opportunistic, not DANE-capable, no MTA-STS: the TLS mode", Input{Mode: Preferred, MXs: mxs[:1], DANE: dane.Opportunistic,
			DANEHosts: map[string]dane.Decision{"mx1.example.com": notDANE}}, SourceProfile,
			[]Host{{Name: "mx1.example.com", Pref: 10, TLS: prof(Preferred, "mx1.example.com")}}, "", ""},
		{"mixed: DANE host and an MTA-STS host, in MX order", Input{Mode: Preferred, MXs: []MX{{Host: "mx0.example.com", Pref: 5}, {Host: "mx1.example.com", Pref: 10}}, DANE: dane.Opportunistic, MTASTS: true, STSState: STSPolicy, STS: enforce,
			DANEHosts: map[string]dane.Decision{"mx0.example.com": notDANE, "mx1.example.com": auth}}, SourceDANE,
			[]Host{{Name: "mx0.example.com", Pref: 5, TLS: stsReq("mx0.example.com")}, {Name: "mx1.example.com", Pref: 10, TLS: daneReq("mx1.example.com")}}, "", ""},
		{"TLSA lookup failure skips the host, the next MX is used", Input{Mode: Preferred, MXs: mxs, DANE: dane.Opportunistic,
			DANEHosts: map[string]dane.Decision{"mx1.example.com": skip, "mx2.other.net": notDANE}}, SourceProfile,
			[]Host{{Name: "mx2.other.net", Pref: 20, TLS: prof(Preferred, "mx2.other.net")}}, "", ""},
		{"TLSA lookup failure on every host defers 4.7.5", Input{Mode: Preferred, MXs: mxs, DANE: dane.Opportunistic,
			DANEHosts: map[string]dane.Decision{"mx1.example.com": skip, "mx2.other.net": skip}}, SourceDANE,
			nil, "4.7.5", "TLSA lookup failed: bogus (SERVFAIL) (MX mx1.example.com)"},
		{"mandatory and not DANE-capable defers 4.7.4", Input{Mode: RequiredVerify, MXs: mxs, DANE: dane.Mandatory,
			DANEHosts: map[string]dane.Decision{"mx1.example.com": mand, "mx2.other.net": mand}}, SourceDANE,
			nil, "4.7.4", "DANE is mandatory but the MX records are not DNSSEC-signed"},
		{"mandatory with no lookups made defers (fail closed)", Input{Mode: Preferred, MXs: mxs, DANE: dane.Mandatory}, SourceDANE,
			nil, "4.7.4", "DANE is mandatory"},
		{"mandatory, one DANE host: only it", Input{Mode: Preferred, MXs: mxs, DANE: dane.Mandatory,
			DANEHosts: map[string]dane.Decision{"mx1.example.com": mand, "mx2.other.net": auth}}, SourceDANE,
			[]Host{{Name: "mx2.other.net", Pref: 20, TLS: daneReq("mx2.other.net")}}, "", ""},
		{"unusable TLSA only: TLS made mandatory under a preferred mode", Input{Mode: Preferred, MXs: mxs[:1], DANE: dane.Opportunistic,
			DANEHosts: map[string]dane.Decision{"mx1.example.com": encrypt}}, SourceProfile,
			[]Host{{Name: "mx1.example.com", Pref: 10, TLS: Requirement{Mode: Required, Why: "TLS Preferred (TLS required: unusable TLSA records)", Source: SourceProfile}}}, "", ""},
		{"unusable TLSA only under MTA-STS enforce: enforce as is", Input{Mode: Preferred, MXs: mxs[:1], DANE: dane.Opportunistic, MTASTS: true, STSState: STSPolicy, STS: enforce,
			DANEHosts: map[string]dane.Decision{"mx1.example.com": encrypt}}, SourceMTASTS,
			[]Host{{Name: "mx1.example.com", Pref: 10, TLS: stsReq("mx1.example.com")}}, "", ""},
		{"MTA-STS temporary failure holds only the non-DANE hosts", Input{Mode: Preferred, MXs: mxs, DANE: dane.Opportunistic, MTASTS: true, STSState: STSTempFail,
			DANEHosts: map[string]dane.Decision{"mx1.example.com": auth, "mx2.other.net": notDANE}}, SourceDANE,
			[]Host{{Name: "mx1.example.com", Pref: 10, TLS: daneReq("mx1.example.com")}}, "", "the others are held"},
		{"a route switches DANE off", Input{Mode: Preferred, MXs: mxs, Route: []RouteHost{{Host: "relay.partner.example", Port: 2525}}, DANE: dane.Mandatory,
			DANEHosts: map[string]dane.Decision{"mx1.example.com": mand}}, SourceRoute,
			[]Host{{Name: "relay.partner.example", Port: 2525, TLS: Requirement{Mode: Preferred, Why: "TLS Preferred", Source: SourceRoute}}}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.Domain = "example.com"
			p := Build(tc.in)
			if p.Source != tc.source || p.DeferCode != tc.deferCode {
				t.Fatalf("source %s defer %q %q; want %s %q", p.Source, p.DeferCode, p.DeferText, tc.source, tc.deferCode)
			}
			if !reflect.DeepEqual(p.Hosts, tc.hosts) {
				t.Fatalf("hosts\n got %+v\nwant %+v", p.Hosts, tc.hosts)
			}
			if tc.text != "" && !strings.Contains(p.DeferText+"\n"+strings.Join(p.Notes, "\n"), tc.text) {
				t.Fatalf("defer text %q / notes %q lack %q", p.DeferText, p.Notes, tc.text)
			}
			for _, h := range p.Hosts {
				if len(h.TLS.DANE) > 0 && (!h.TLS.Mode.MustTLS() || !h.TLS.Mode.MustVerify()) {
					t.Fatalf("DANE host %s without mandatory verified TLS", h.Name)
				}
			}
		})
	}
}
