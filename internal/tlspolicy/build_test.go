package tlspolicy

import (
	"reflect"
	"strings"
	"testing"
)

func match(patterns ...string) func(string) bool {
	return func(h string) bool {
		for _, p := range patterns {
			if p == h || (strings.HasPrefix(p, "*.") && strings.Count(h, ".") == strings.Count(p, ".") && strings.HasSuffix(h, p[1:])) {
				return true
			}
		}
		return false
	}
}

// TestBuild covers every combination of route × MTA-STS switch × discovery
// outcome × policy mode that changes the plan, for a two-MX domain.
func TestBuild(t *testing.T) {
	mxs := []MX{{Host: "mx1.example.com", Pref: 10}, {Host: "mx2.other.net", Pref: 20}}
	enforce := &STS{Mode: "enforce", Match: match("*.example.com")}
	enforceNone := &STS{Mode: "enforce", Match: match("mx.elsewhere.org")}
	testing_ := &STS{Mode: "testing", Match: match("*.example.com")}
	none := &STS{Mode: "none", Match: match()}
	prof := func(m Mode, host string) Requirement {
		r := ForMode(m, "example.com", host)
		r.Source = SourceProfile
		return r
	}
	testReq := func(m Mode, host string, wouldPass bool) Requirement {
		r := prof(m, host)
		r.STSTesting = wouldPass
		return r
	}
	sts := func(host string) Requirement {
		return Requirement{Mode: RequiredVerify, MinVersion: TLS12, Identity: Identity{Names: []string{host}}, Why: "MTA-STS enforce", Source: SourceMTASTS}
	}
	for _, tc := range []struct {
		name      string
		in        Input
		source    Source
		hosts     []Host
		deferCode string
		note      string
	}{
		{"profile only, preferred", Input{Mode: Preferred, MXs: mxs}, SourceProfile,
			[]Host{{Name: "mx1.example.com", Pref: 10, TLS: prof(Preferred, "mx1.example.com")}, {Name: "mx2.other.net", Pref: 20, TLS: prof(Preferred, "mx2.other.net")}}, "", ""},
		{"profile required-verify names the recipient domain", Input{Mode: RequiredVerify, MXs: mxs[:1]}, SourceProfile,
			[]Host{{Name: "mx1.example.com", Pref: 10, TLS: Requirement{Mode: RequiredVerify, Identity: Identity{Names: []string{"example.com"}}, Why: "TLS Required (Verify)", Source: SourceProfile}}}, "", ""},
		{"profile hosted also accepts the MX name", Input{Mode: RequiredVerifyHosted, MXs: mxs[:1]}, SourceProfile,
			[]Host{{Name: "mx1.example.com", Pref: 10, TLS: Requirement{Mode: RequiredVerifyHosted, Identity: Identity{Names: []string{"example.com", "mx1.example.com"}}, Why: "TLS Required - Verify Hosted Domains", Source: SourceProfile}}}, "", ""},
		{"mta-sts off ignores a policy", Input{Mode: Preferred, MXs: mxs, MTASTS: false, STSState: STSPolicy, STS: enforce}, SourceProfile,
			[]Host{{Name: "mx1.example.com", Pref: 10, TLS: prof(Preferred, "mx1.example.com")}, {Name: "mx2.other.net", Pref: 20, TLS: prof(Preferred, "mx2.other.net")}}, "", ""},
		{"mta-sts on, no policy: profile", Input{Mode: Preferred, MXs: mxs[:1], MTASTS: true, STSState: STSNoPolicy}, SourceProfile,
			[]Host{{Name: "mx1.example.com", Pref: 10, TLS: prof(Preferred, "mx1.example.com")}}, "", ""},
		{"mta-sts temporary failure defers (RFC 8461 §5)", Input{Mode: Preferred, MXs: mxs, MTASTS: true, STSState: STSTempFail}, SourceMTASTS,
			nil, "4.7.5", ""},
		{"enforce keeps only matching MX, TLS 1.2, MX identity", Input{Mode: Preferred, MXs: mxs, MTASTS: true, STSState: STSPolicy, STS: enforce}, SourceMTASTS,
			[]Host{{Name: "mx1.example.com", Pref: 10, TLS: sts("mx1.example.com")}}, "", "MX mx2.other.net is not in the policy"},
		{"enforce is not weakened by a weaker profile mode", Input{Mode: Required, MXs: mxs[:1], MTASTS: true, STSState: STSPolicy, STS: enforce}, SourceMTASTS,
			[]Host{{Name: "mx1.example.com", Pref: 10, TLS: sts("mx1.example.com")}}, "", ""},
		{"enforce with no matching MX defers 4.4.8", Input{Mode: Preferred, MXs: mxs, MTASTS: true, STSState: STSPolicy, STS: enforceNone}, SourceMTASTS,
			nil, "4.4.8", "is not in the policy"},
		{"testing delivers under the profile and notes mismatches", Input{Mode: Preferred, MXs: mxs, MTASTS: true, STSState: STSPolicy, STS: testing_}, SourceProfile,
			[]Host{{Name: "mx1.example.com", Pref: 10, TLS: testReq(Preferred, "mx1.example.com", true)}, {Name: "mx2.other.net", Pref: 20, TLS: testReq(Preferred, "mx2.other.net", false)}}, "", "testing mode would have failed: MX mx2.other.net"},
		{"mode none: profile", Input{Mode: Preferred, MXs: mxs[:1], MTASTS: true, STSState: STSPolicy, STS: none}, SourceProfile,
			[]Host{{Name: "mx1.example.com", Pref: 10, TLS: prof(Preferred, "mx1.example.com")}}, "", ""},
		{"route switches MTA-STS off and is logged", Input{Mode: RequiredVerify, MXs: mxs, Route: []RouteHost{{Host: "relay.partner.example", Port: 2525}}, MTASTS: true, STSState: STSPolicy, STS: enforce}, SourceRoute,
			[]Host{{Name: "relay.partner.example", Port: 2525, TLS: Requirement{Mode: RequiredVerify, Identity: Identity{Names: []string{"example.com", "relay.partner.example"}}, Why: "TLS Required (Verify)", Source: SourceRoute}}}, "", "MTA-STS is not enforced for domains that have SMTP Routes configured"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.Domain = "example.com"
			p := Build(tc.in)
			if p.Source != tc.source || p.DeferCode != tc.deferCode {
				t.Fatalf("source %s defer %q; want %s %q", p.Source, p.DeferCode, tc.source, tc.deferCode)
			}
			if !reflect.DeepEqual(p.Hosts, tc.hosts) {
				t.Fatalf("hosts\n got %+v\nwant %+v", p.Hosts, tc.hosts)
			}
			if tc.note != "" && !strings.Contains(strings.Join(p.Notes, "\n"), tc.note) {
				t.Fatalf("notes %q lack %q", p.Notes, tc.note)
			}
		})
	}
}

func TestModeOrderAndParse(t *testing.T) {
	for i, n := range []string{"none", "preferred", "required", "preferred-verify", "required-verify", "required-verify-hosted"} {
		m, err := ParseMode(n)
		if err != nil || int(m) != i || m.String() != n {
			t.Errorf("%s: %v %v", n, m, err)
		}
	}
	for alias, want := range map[string]Mode{"off": None, "on": Preferred, "require": Required, "on_verify": PreferredVerify, "require_verify": RequiredVerify} {
		if m, _ := ParseMode(alias); m != want {
			t.Errorf("%s → %v", alias, m)
		}
	}
	if Preferred.MustTLS() || !Required.MustTLS() || PreferredVerify.MustVerify() || !RequiredVerifyHosted.MustVerify() || !PreferredVerify.Verifies() {
		t.Error("mode predicates")
	}
}
