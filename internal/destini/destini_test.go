package destini

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"outpost/internal/config"
	"outpost/internal/tlspolicy"
)

func tlsMode(m tlspolicy.Mode) *config.TLSMode { v := config.TLSMode(m); return &v }

func TestRoundTrip(t *testing.T) {
	in := Table{
		"default": {
			IPPreference: ptr("prefer-ipv6"), MaxConcurrency: ptr(300), MaxMessagesPerConnection: ptr(20),
			RecipientLimit: &config.RecipientLimit{}, LimitsScope: ptr("domain"), LimitsApply: ptr("system"),
			TLS: tlsMode(tlspolicy.Preferred), DANE: ptr("none"), MTASTS: ptr(false),
			BounceVerification: ptr(false), BounceProfile: ptr("Default"),
		},
		"example.com": {TLS: tlsMode(tlspolicy.RequiredVerify), MTASTS: ptr(true)},
		".example.org": {
			IPPreference: ptr("require-ipv4"), MaxConcurrency: ptr(1000), MaxMessagesPerConnection: ptr(1),
			RecipientLimit: &config.RecipientLimit{Count: 1000000000, Minutes: 60}, LimitsScope: ptr("mx-ip"),
			LimitsApply: ptr("virtual-gateway"), TLS: tlsMode(tlspolicy.RequiredVerifyHosted), DANE: ptr("mandatory"),
			MTASTS: ptr(false), BounceVerification: ptr(true), BounceProfile: ptr("slow"),
		},
		"nolimit.test":  {RecipientLimit: &config.RecipientLimit{}},
		"empty.test":    {},
		"ipv6.test":     {IPPreference: ptr("require-ipv6"), DANE: ptr("opportunistic"), TLS: tlsMode(tlspolicy.None)},
		"pv.test":       {TLS: tlsMode(tlspolicy.PreferredVerify)},
		"required.test": {TLS: tlsMode(tlspolicy.Required), IPPreference: ptr("prefer-ipv4")},
	}
	var buf bytes.Buffer
	if err := Write(&buf, in, nil); err != nil {
		t.Fatal(err)
	}
	out, err := Read(bytes.NewReader(buf.Bytes()), "table")
	if err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	if !reflect.DeepEqual(in, out) {
		var b2 bytes.Buffer
		Write(&b2, out, nil)
		t.Fatalf("round trip differs:\n%s\n---\n%s", buf.String(), b2.String())
	}
	var again bytes.Buffer
	Write(&again, out, nil)
	if again.String() != buf.String() {
		t.Fatalf("second export differs")
	}
}

func TestWriteCompletesDefault(t *testing.T) {
	c := config.Default()
	var buf bytes.Buffer
	if err := Write(&buf, Table{"a.test": {MTASTS: ptr(true)}}, c.Destinations["default"]); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"ip_sort_pref = PREFER_V4", "max_host_concurrency = 500", "max_messages_per_connection = 50", "use_tls = 1", "dane_support = 0", "mta_sts = 0", "limit_type = 0", "limit_apply = 0", "bounce_validation = 0", "bounce_profile = Default", "[a.test]\nmta_sts = 1\n"} {
		if !strings.Contains(buf.String(), k) {
			t.Errorf("missing %q in\n%s", k, buf.String())
		}
	}
}

func TestReadSpellings(t *testing.T) {
	tab, err := Read(strings.NewReader("[DEFAULT]\nip_sort_pref = REQUIRE_v4\nlimit_type = MXIP\nlimit_apply = VG\nuse_tls = require_verify\n[Example.COM]\nuse_tls = required-verify-hosted\nmta_sts = on\n"), "f")
	if err != nil {
		t.Fatal(err)
	}
	d := tab["default"]
	if *d.IPPreference != "require-ipv4" || *d.LimitsScope != "mx-ip" || *d.LimitsApply != "virtual-gateway" || tlspolicy.Mode(*d.TLS) != tlspolicy.RequiredVerify {
		t.Fatalf("default: %+v", d)
	}
	e := tab["example.com"]
	if e == nil || tlspolicy.Mode(*e.TLS) != tlspolicy.RequiredVerifyHosted || !*e.MTASTS {
		t.Fatalf("example.com: %+v", e)
	}
}

func TestReadErrorsNameTheLine(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"[DEFAULT]\nmax_host_concurrency = 1001\n", "f:2: max_host_concurrency 1001: want 1-1000"},
		{"[DEFAULT]\nmax_host_concurrency = 0\n", "f:2: max_host_concurrency 0: want 1-1000"},
		{"[DEFAULT]\n\nmax_messages_per_connection = x\n", `f:3: max_messages_per_connection "x": not a number (want 1-1000)`},
		{"[DEFAULT]\nrecipient_minutes = 61\n", "f:2: recipient_minutes 61: want 1-60"},
		{"[DEFAULT]\nrecipient_limit = -1\n", "f:2: recipient_limit -1: want 0-1000000000"},
		{"[DEFAULT]\nuse_tls = 6\n", `f:2: use_tls "6": want one of 0/off`},
		{"[DEFAULT]\ndane_support = 3\n", `f:2: dane_support "3"`},
		{"[DEFAULT]\nmta_sts = maybe\n", `f:2: mta_sts "maybe": want 0 (off) or 1 (on)`},
		{"[DEFAULT]\nip_sort_pref = IPV4\n", `f:2: ip_sort_pref "IPV4": want one of 0/PREFER_V4`},
		{"[DEFAULT]\nfoo = 1\n", `f:2: unknown keyword "foo"`},
		{"[DEFAULT]\nmta_sts = 1\nmta_sts = 0\n", "f:3: mta_sts is already set in this section (line 2)"},
		{"[DEFAULT]\n[a.test]\n[A.test]\n", "f:3: section [A.test] appears twice"},
		{"[DEFAULT]\n[bad domain]\n", "f:2: section [bad domain]: not a domain name"},
		{"mta_sts = 1\n", "f:1: mta_sts before the first section"},
		{"[DEFAULT]\njunk\n", `f:2: "junk": want keyword = value`},
		{"[DEFAULT\n", `f:1: section header "[DEFAULT": want`},
		{"[a.test]\n", "f: no [DEFAULT] section"},
		{"[DEFAULT]\nrecipient_limit = 5\n", "f: [DEFAULT]: recipient_limit needs recipient_minutes (1-60)"},
	} {
		_, err := Read(strings.NewReader(tc.in), "f")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.in, err, tc.want)
		}
	}
}

func FuzzRead(f *testing.F) {
	f.Add("[DEFAULT]\nuse_tls = 1\n[a.test]\nrecipient_limit = 5\nrecipient_minutes = 7\n")
	f.Fuzz(func(t *testing.T, s string) {
		tab, err := Read(strings.NewReader(s), "f")
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if err := Write(&buf, tab, nil); err != nil {
			t.Fatal(err)
		}
		back, err := Read(&buf, "f")
		if err != nil || !reflect.DeepEqual(back, tab) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
