package dane

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"outpost/internal/resolver"
)

var (
	ee311  = TLSA{Usage: DANEEE, Selector: SelectorSPKI, MatchingType: MatchSHA256, Data: make([]byte, 32)}
	ta201  = TLSA{Usage: DANETA, Selector: SelectorCert, MatchingType: MatchSHA256, Data: make([]byte, 32)}
	pkix11 = TLSA{Usage: PKIXEE, Selector: SelectorSPKI, MatchingType: MatchSHA256, Data: make([]byte, 32)}
	pkix00 = TLSA{Usage: PKIXTA, Selector: SelectorCert, MatchingType: MatchFull, Data: []byte{1}}
	ee319  = TLSA{Usage: DANEEE, Selector: SelectorSPKI, MatchingType: 9, Data: make([]byte, 32)}
	ee311s = TLSA{Usage: DANEEE, Selector: SelectorSPKI, MatchingType: MatchSHA256, Data: make([]byte, 31)} // wrong digest length
)

// decideRows is the published decision table (docs/tls-policy.md): one row
// per combination of MX / address / TLSA state, with the action under
// "opportunistic" and under "mandatory". Under "none" every row is
// not-dane. Each row quotes the clause it checks.
var decideRows = []struct {
	name      string
	in        Inputs
	opp, mand Action
	code      string // the code of the mandatory action when the host is not used
	clause    string
	quote     string
}{
	{"MX bogus", Inputs{MX: Bogus}, Defer, Defer, "4.4.3", "RFC 7672 §2.1.1",
		"a bogus or indeterminate MX answer is a temporary failure, never a downgrade"},
	{"MX lookup failure", Inputs{MX: Failure}, Defer, Defer, "4.4.3", "RFC 7672 §2.1.1",
		"SERVFAIL/timeout: treat as temporary failure"},
	{"MX insecure", Inputs{MX: Insecure}, NotDANE, Defer, "4.7.4", "RFC 7672 §2.2.1",
		"hosts from an insecure MX RRset cannot be DANE-authenticated"},
	{"no MX, insecure denial (implicit MX)", Inputs{MX: InsecureDenial}, NotDANE, Defer, "4.7.4", "RFC 7672 §2.2.1",
		"the implicit MX is only as secure as the denial that made it"},
	{"MX not looked up", Inputs{MX: NotLooked}, NotDANE, Defer, "4.7.4", "RFC 7672 §2.2.1",
		"without a secure MX lookup there is no DANE"},
	{"secure MX, address bogus", Inputs{MX: Secure, Addr: Bogus}, SkipHost, SkipHost, "4.4.3", "RFC 7672 §2.1.1",
		"lookup errors make the host unusable for now"},
	{"secure MX, address failure", Inputs{MX: Secure, Addr: Failure}, SkipHost, SkipHost, "4.4.3", "RFC 7672 §2.1.1",
		"lookup errors make the host unusable for now"},
	{"secure MX, address secure denial", Inputs{MX: Secure, Addr: SecureDenial}, SkipHost, SkipHost, "4.4.4", "RFC 5321 §5.1",
		"a host without addresses cannot be reached"},
	{"secure MX, address insecure denial", Inputs{MX: Secure, Addr: InsecureDenial}, SkipHost, SkipHost, "4.4.4", "RFC 5321 §5.1",
		"a host without addresses cannot be reached"},
	{"secure MX, address insecure", Inputs{MX: Secure, Addr: Insecure}, NotDANE, Defer, "4.7.4", "RFC 7672 §2.2.2",
		"TLSA records are looked up only for hosts with secure address records"},
	{"secure MX, secure address, TLSA 3 1 1", Inputs{MX: Secure, Addr: Secure, TLSA: Secure, Records: []TLSA{ee311}}, Authenticate, Authenticate, "", "RFC 7672 §2.2",
		"usable secure TLSA records: TLS is mandatory and authenticated by them"},
	{"secure MX, secure address, TLSA 2 0 1", Inputs{MX: Secure, Addr: Secure, TLSA: Secure, Records: []TLSA{ta201}}, Authenticate, Authenticate, "", "RFC 7672 §2.2",
		"DANE-TA records are usable"},
	{"secure no-MX (implicit MX), secure address, TLSA 3 1 1", Inputs{MX: SecureDenial, Addr: Secure, TLSA: Secure, Records: []TLSA{ee311}}, Authenticate, Authenticate, "", "RFC 7672 §2.2",
		"a secure NODATA for MX makes the domain its own secure MX (§2.2.2 non-MX destinations)"},
	{"TLSA mixed usable and PKIX", Inputs{MX: Secure, Addr: Secure, TLSA: Secure, Records: []TLSA{pkix11, ee311}}, Authenticate, Authenticate, "", "RFC 7672 §2.2",
		"PKIX usages are ignored, the usable records authenticate (§3.1.3)"},
	{"TLSA only PKIX-EE / PKIX-TA", Inputs{MX: Secure, Addr: Secure, TLSA: Secure, Records: []TLSA{pkix11, pkix00}}, Encrypt, Defer, "4.7.4", "RFC 7672 §3.1.3",
		"PKIX-TA(0)/PKIX-EE(1) are unusable; a secure non-empty RRset still makes TLS mandatory"},
	{"TLSA only unknown matching type / malformed", Inputs{MX: Secure, Addr: Secure, TLSA: Secure, Records: []TLSA{ee319, ee311s}}, Encrypt, Defer, "4.7.4", "RFC 7672 §3.1.3",
		"records with unknown parameters or malformed data are unusable"},
	{"TLSA secure but empty answer", Inputs{MX: Secure, Addr: Secure, TLSA: Secure}, NotDANE, Defer, "4.7.4", "RFC 7672 §2.2",
		"no records is a denial"},
	{"TLSA secure denial", Inputs{MX: Secure, Addr: Secure, TLSA: SecureDenial}, NotDANE, Defer, "4.7.4", "RFC 7672 §2.2",
		"authenticated denial: the host does not do DANE"},
	{"TLSA insecure", Inputs{MX: Secure, Addr: Secure, TLSA: Insecure, Records: []TLSA{ee311}}, NotDANE, Defer, "4.7.4", "RFC 7672 §2.2",
		"insecure TLSA records MUST NOT be used"},
	{"TLSA insecure denial", Inputs{MX: Secure, Addr: Secure, TLSA: InsecureDenial}, NotDANE, Defer, "4.7.4", "RFC 7672 §2.2",
		"an unsigned delegation of _tcp: no DANE"},
	{"TLSA bogus", Inputs{MX: Secure, Addr: Secure, TLSA: Bogus}, SkipHost, SkipHost, "4.7.5", "RFC 7672 §2.2",
		"a failed TLSA lookup for a secure host: do not connect to it"},
	{"TLSA lookup failure", Inputs{MX: Secure, Addr: Secure, TLSA: Failure}, SkipHost, SkipHost, "4.7.5", "RFC 7672 §2.2",
		"a failed TLSA lookup for a secure host: do not connect to it"},
}

func TestDecideTable(t *testing.T) {
	for _, row := range decideRows {
		t.Run(row.name, func(t *testing.T) {
			in := row.in
			in.Setting = Off
			if d := Decide(in); d.Action != NotDANE {
				t.Errorf("none: %s, want not-dane", d.Action)
			}
			in.Setting = Opportunistic
			d := Decide(in)
			if d.Action != row.opp || !strings.Contains(d.Clause, row.clause) {
				t.Errorf("opportunistic: %s (%s), want %s (%s) — %s: %s", d.Action, d.Clause, row.opp, row.clause, row.clause, row.quote)
			}
			if d.Reason == "" {
				t.Error("opportunistic: empty reason")
			}
			in.Setting = Mandatory
			d = Decide(in)
			if d.Action != row.mand || d.Code != row.code || !strings.Contains(d.Clause, row.clause) {
				t.Errorf("mandatory: %s %q (%s), want %s %q (%s) — %s: %s", d.Action, d.Code, d.Clause, row.mand, row.code, row.clause, row.clause, row.quote)
			}
			if d.Action == Authenticate {
				for _, r := range d.Records {
					if !r.Usable() {
						t.Errorf("authenticates with unusable record %s", r)
					}
				}
				if len(d.Records) == 0 {
					t.Error("authenticate without records")
				}
			}
		})
	}
}

// TestDecideInvariants checks every combination of states, records and
// settings against the rules no row may break.
func TestDecideInvariants(t *testing.T) {
	states := []State{NotLooked, Secure, Insecure, SecureDenial, InsecureDenial, Bogus, Failure}
	recordSets := [][]TLSA{nil, {ee311}, {pkix11}, {pkix11, ta201}}
	n := 0
	for _, set := range []Setting{Off, Opportunistic, Mandatory} {
		for _, mx := range states {
			for _, addr := range states {
				for _, tl := range states {
					for _, recs := range recordSets {
						in := Inputs{Setting: set, MX: mx, Addr: addr, TLSA: tl, Records: recs}
						d := Decide(in)
						n++
						secureHost := (mx == Secure || mx == SecureDenial) && addr == Secure
						switch {
						case set == Off && d.Action != NotDANE:
							t.Fatalf("%+v: DANE off but %s", in, d.Action)
						case set == Mandatory && (d.Action == NotDANE || d.Action == Encrypt):
							// RFC 7672 §2.2 + the profile: mandatory never delivers without DANE.
							t.Fatalf("%+v: mandatory but %s", in, d.Action)
						case d.Action == Authenticate && !(secureHost && tl == Secure && len(Usable(recs)) > 0):
							// RFC 7672 §2.2: only secure, usable records authenticate.
							t.Fatalf("%+v: authenticate without secure usable records", in)
						case set != Off && secureHost && tl.Failed() && d.Action != SkipHost:
							// RFC 7672 §2.2: a failed TLSA lookup never falls back.
							t.Fatalf("%+v: TLSA lookup failed but %s", in, d.Action)
						case set != Off && secureHost && tl == Secure && len(Usable(recs)) > 0 && d.Action != Authenticate:
							t.Fatalf("%+v: usable secure TLSA but %s", in, d.Action)
						case !d.Action.Connects() && d.Code == "":
							t.Fatalf("%+v: %s without a code", in, d.Action)
						case d.Reason == "":
							t.Fatalf("%+v: no reason", in)
						}
					}
				}
			}
		}
	}
	if n != 3*7*7*7*4 {
		t.Fatalf("checked %d combinations", n)
	}
}

func TestStateOf(t *testing.T) {
	for _, tc := range []struct {
		ans  resolver.Answer
		err  error
		want State
	}{
		{resolver.Answer{Status: resolver.OK, Secure: true}, nil, Secure},
		{resolver.Answer{Status: resolver.OK}, nil, Insecure},
		{resolver.Answer{Status: resolver.NXDomain, Secure: true}, nil, SecureDenial},
		{resolver.Answer{Status: resolver.NoData, Secure: true}, nil, SecureDenial},
		{resolver.Answer{Status: resolver.NoData}, nil, InsecureDenial},
		{resolver.Answer{Status: resolver.ServFail}, &resolver.Error{Status: resolver.ServFail}, Bogus},
		{resolver.Answer{Status: resolver.Timeout}, &resolver.Error{Status: resolver.Timeout}, Failure},
		{resolver.Answer{Status: resolver.Refused}, &resolver.Error{Status: resolver.Refused}, Failure},
		{resolver.Answer{}, errors.New("no servers"), Failure},
		{resolver.Answer{Status: resolver.OK, Secure: true}, resolver.ErrNullMX, Secure},
	} {
		if got := StateOf(tc.ans, tc.err); got != tc.want {
			t.Errorf("StateOf(%+v, %v) = %s, want %s", tc.ans, tc.err, got, tc.want)
		}
	}
}

func TestParseSetting(t *testing.T) {
	for s, want := range map[string]Setting{"none": Off, "off": Off, "No": Off, "opportunistic": Opportunistic, " Mandatory ": Mandatory} {
		if got, err := ParseSetting(s); err != nil || got != want {
			t.Errorf("%q → %v %v", s, got, err)
		}
	}
	if _, err := ParseSetting("yes"); err == nil {
		t.Error("yes accepted")
	}
	var s Setting
	if err := s.UnmarshalText([]byte("mandatory")); err != nil || s.String() != "mandatory" {
		t.Error(s, err)
	}
}

// fakeDNS answers from maps; it lets the lookup order be checked without
// the rig.
type fakeDNS struct {
	mx    map[string]fakeAns
	addr  map[string]fakeAns
	tlsa  map[string]fakeAns
	calls []string
}

type fakeAns struct {
	n   int // records
	ans resolver.Answer
	err error
}

func (f *fakeDNS) MX(_ context.Context, d string) ([]resolver.MX, resolver.Answer, error) {
	f.calls = append(f.calls, "MX "+d)
	a := f.mx[d]
	var out []resolver.MX
	for i := 0; i < a.n; i++ {
		out = append(out, resolver.MX{Host: "mx" + string(rune('1'+i)) + "." + d, Pref: uint16(10 * (i + 1))})
	}
	return out, a.ans, a.err
}

func (f *fakeDNS) Addrs(_ context.Context, h string) ([]netip.Addr, resolver.Answer, error) {
	f.calls = append(f.calls, "A "+h)
	a := f.addr[h]
	if a.n > 0 {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, a.ans, a.err
	}
	return nil, a.ans, a.err
}

func (f *fakeDNS) TLSA(_ context.Context, port int, h string) ([]resolver.TLSA, resolver.Answer, error) {
	f.calls = append(f.calls, "TLSA "+h)
	a := f.tlsa[h]
	var out []resolver.TLSA
	for i := 0; i < a.n; i++ {
		out = append(out, resolver.TLSA{Usage: 3, Selector: 1, MatchingType: 1, Data: make([]byte, 32)})
	}
	return out, a.ans, a.err
}

// TestLookupAsksOnlyWhatIsNeeded: no address or TLSA lookups behind an
// insecure MX, no TLSA lookup for a host with insecure addresses
// (RFC 7672 §2.2.1, §2.2.2).
func TestLookupAsksOnlyWhatIsNeeded(t *testing.T) {
	sec := resolver.Answer{Status: resolver.OK, Secure: true}
	ins := resolver.Answer{Status: resolver.OK}
	f := &fakeDNS{
		mx:   map[string]fakeAns{"signed.example": {2, sec, nil}, "plain.example": {1, ins, nil}, "nomx.example": {0, resolver.Answer{Status: resolver.NoData, Secure: true}, nil}},
		addr: map[string]fakeAns{"mx1.signed.example": {1, sec, nil}, "mx2.signed.example": {1, ins, nil}, "nomx.example": {1, sec, nil}},
		tlsa: map[string]fakeAns{"mx1.signed.example": {1, sec, nil}, "nomx.example": {0, resolver.Answer{Status: resolver.ServFail}, &resolver.Error{Status: resolver.ServFail}}},
	}
	d := Lookup(context.Background(), f, "signed.example", Opportunistic)
	if len(d.Hosts) != 2 || d.Hosts[0].Decision.Action != Authenticate || d.Hosts[1].Decision.Action != NotDANE || d.Hosts[1].Pref != 20 {
		t.Fatalf("signed: %+v", d)
	}
	if got := strings.Join(f.calls, ", "); got != "MX signed.example, A mx1.signed.example, TLSA mx1.signed.example, A mx2.signed.example" {
		t.Fatalf("calls: %s", got)
	}
	f.calls = nil
	d = Lookup(context.Background(), f, "plain.example", Mandatory)
	if len(d.Hosts) != 1 || d.Hosts[0].Decision.Action != Defer || strings.Join(f.calls, ", ") != "MX plain.example" {
		t.Fatalf("plain: %+v %v", d, f.calls)
	}
	d = Lookup(context.Background(), f, "nomx.example", Opportunistic)
	if len(d.Hosts) != 1 || d.Hosts[0].Name != "nomx.example" || d.Hosts[0].Decision.Action != SkipHost || d.Hosts[0].Decision.Code != "4.7.5" {
		t.Fatalf("nomx: %+v", d)
	}
	f.calls = nil
	if d := Lookup(context.Background(), f, "signed.example", Off); len(d.Hosts) != 2 || strings.Join(f.calls, ", ") != "MX signed.example" {
		t.Fatalf("off: %+v %v", d, f.calls)
	}
}

func TestCheckResolvers(t *testing.T) {
	w := CheckResolvers([]string{"127.0.0.1:53", "[::1]:53", "127.0.0.53", "192.0.2.1:53", "resolver.example:53"})
	if len(w) != 2 || !strings.Contains(w[0], "192.0.2.1:53") || !strings.Contains(w[1], "resolver.example") {
		t.Fatalf("%q", w)
	}
}
