package mtasts

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseTXT(t *testing.T) {
	tests := []struct {
		rfc, in string
		id      string // "" = invalid
	}{
		{"§3.1 example", "v=STSv1; id=20160831085700Z;", "20160831085700Z"},
		{"§3.1 trailing delimiter optional", "v=STSv1; id=abc", "abc"},
		{"§3.1 sts-field-delim = *WSP \";\" *WSP", "v=STSv1 ;\tid=abc ; ", "abc"},
		{"§3.1 no whitespace needed", "v=STSv1;id=abc;", "abc"},
		{"§3.1 id is 1*32(ALPHA / DIGIT): 32 ok", "v=STSv1; id=" + strings.Repeat("a", 32), strings.Repeat("a", 32)},
		{"§3.1 id is 1*32(ALPHA / DIGIT): 33 too long", "v=STSv1; id=" + strings.Repeat("a", 33), ""},
		{"§3.1 id is 1*32: empty", "v=STSv1; id=;", ""},
		{"§3.1 id ALPHA / DIGIT only", "v=STSv1; id=2016-08-31;", ""},
		{"§3.1 id required", "v=STSv1;", ""},
		{"§3.1 id required (bare version)", "v=STSv1", ""},
		{"§3.1 unknown extension fields ignored", "v=STSv1; foo=bar; id=x1; a.b-c_d=~!", "x1"},
		{"§3.1 sts-ext-value excludes '='", "v=STSv1; id=x1; foo=a=b", ""},
		{"§3.1 sts-ext-value is 1*(...): empty", "v=STSv1; id=x1; foo=", ""},
		{"§3.1 sts-ext-name starts ALPHA/DIGIT", "v=STSv1; id=x1; _foo=bar", ""},
		{"§3.1 field must be key=value", "v=STSv1; id=x1; junk", ""},
		{"§3.1 empty field between delimiters", "v=STSv1;; id=x1", ""},
		{"§3.1 %s\"v=STSv1\" is case-sensitive (seed's STSV1)", "v=STSV1; id=12345678598Z;", ""},
		{"§3.1 %s\"id=\" is case-sensitive", "v=STSv1; ID=abc;", ""},
		{"§3.2 (applied to TXT) duplicate field: first wins", "v=STSv1; id=first; id=second", "first"},
		{"§3.1 version must come first", "id=abc; v=STSv1", ""},
		{"§3.1 text after version", "v=STSv1x; id=abc", ""},
		{"§3.1 space inside id", "v=STSv1; id=ab c;", ""},
	}
	for _, tc := range tests {
		t.Run(tc.rfc, func(t *testing.T) {
			rec, err := ParseTXT(tc.in)
			if tc.id == "" {
				if err == nil {
					t.Fatalf("ParseTXT(%q) = %+v, want error", tc.in, rec)
				}
				var se *SyntaxError
				if !errors.As(err, &se) {
					t.Fatalf("error %v is not a *SyntaxError", err)
				}
				return
			}
			if err != nil || rec.ID != tc.id {
				t.Fatalf("ParseTXT(%q) = %+v, %v; want id %q", tc.in, rec, err, tc.id)
			}
		})
	}
}

func TestSelectTXT(t *testing.T) {
	tests := []struct {
		rfc     string
		records []string
		id      string
		err     error
	}{
		{"§3.1 records not starting with v=STSv1 are discarded", []string{"v=spf1 -all", "v=STSv1; id=a1;"}, "a1", nil},
		{"§3.1 none → no policy", []string{"v=spf1 -all"}, "", ErrNoSTSRecord},
		{"§3.1 none → no policy (empty)", nil, "", ErrNoSTSRecord},
		{"§3.1 number not one → no policy", []string{"v=STSv1; id=a1;", "v=STSv1; id=a2;"}, "", ErrMultipleSTSRecords},
		{"§3.1 a malformed second record still counts", []string{"v=STSv1; id=a1;", "v=STSv1 garbage"}, "", ErrMultipleSTSRecords},
		{"§3.1 the one record syntactically invalid → no policy", []string{"v=STSv1; id=;"}, "", nil},
		{"§3.1 v=STSv10 is not v=STSv1", []string{"v=STSv10; id=a1;", "v=STSv1; id=a2"}, "a2", nil},
	}
	for _, tc := range tests {
		t.Run(tc.rfc, func(t *testing.T) {
			rec, err := SelectTXT(tc.records)
			if tc.id != "" {
				if err != nil || rec.ID != tc.id {
					t.Fatalf("SelectTXT = %+v, %v; want %q", rec, err, tc.id)
				}
				return
			}
			if err == nil {
				t.Fatalf("SelectTXT = %+v, want error", rec)
			}
			if tc.err != nil && !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
		})
	}
}

func TestParsePolicy(t *testing.T) {
	tests := []struct {
		rfc, in string
		want    *Policy // nil = invalid
		errHas  string
	}{
		{"§3.2 example", "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmx: backupmx.example.com\nmax_age: 604800\n",
			&Policy{Mode: ModeEnforce, MX: []string{"mail.example.com", "*.example.net", "backupmx.example.com"}, MaxAge: 604800}, ""},
		{"§3.2 sts-policy-term = LF / CRLF (erratum 6253)", "version: STSv1\r\nmode: testing\r\nmx: mx.example.com\r\nmax_age: 86400\r\n",
			&Policy{Mode: ModeTesting, MX: []string{"mx.example.com"}, MaxAge: 86400}, ""},
		{"§3.2 final term optional", "version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 86400",
			&Policy{Mode: ModeTesting, MX: []string{"mx.example.com"}, MaxAge: 86400}, ""},
		{"§3.2 fields in any order; version need not be first", "mode: enforce\nmax_age: 1\nmx: a.example\nversion: STSv1",
			&Policy{Mode: ModeEnforce, MX: []string{"a.example"}, MaxAge: 1}, ""},
		{"§3.2 field-delim \":\" *WSP and trailing *WSP", "version:STSv1\t\nmode:\t enforce  \nmx: a.example\nmax_age: 60",
			&Policy{Mode: ModeEnforce, MX: []string{"a.example"}, MaxAge: 60}, ""},
		{"§3.2 mx not required for mode none", "version: STSv1\nmode: none\nmax_age: 86400\n",
			&Policy{Mode: ModeNone, MaxAge: 86400}, ""},
		{"§3.2 mx required for enforce", "version: STSv1\nmode: enforce\nmax_age: 86400\n", nil, "needs at least one mx"},
		{"§3.2 mx required for testing", "version: STSv1\nmode: testing\nmax_age: 86400\n", nil, "needs at least one mx"},
		{"§3.2 version required", "mode: enforce\nmx: a.example\nmax_age: 1\n", nil, "missing version"},
		{"§3.2 mode required", "version: STSv1\nmx: a.example\nmax_age: 1\n", nil, "missing mode"},
		{"§3.2 max_age required", "version: STSv1\nmode: enforce\nmx: a.example\n", nil, "missing max_age"},
		{"§3.2 %s\"STSv1\" is case-sensitive (seed's STSV1)", "version: STSV1\nmode: enforce\nmx: a.example\nmax_age: 1\n", nil, "version"},
		{"§3.2 mode values are enforce/testing/none", "version: STSv1\nmode: Enforce\nmx: a.example\nmax_age: 1\n", nil, "mode"},
		{"§3.2 max_age 1*10(DIGIT): 11 digits", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 12345678901\n", nil, "max_age"},
		{"§3.2 max_age digits only", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n", nil, "max_age"},
		{"§3.2 max_age 0 is valid", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 0\n",
			&Policy{Mode: ModeEnforce, MX: []string{"a.example"}, MaxAge: 0}, ""},
		{"§3.2 max_age is at most 31557600: clamped", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 9999999999\n",
			&Policy{Mode: ModeEnforce, MX: []string{"a.example"}, MaxAge: MaxMaxAge}, ""},
		{"§3.2 duplicated non-mx field: first wins", "version: STSv1\nmode: testing\nmode: enforce\nmode: bogus\nmx: a.example\nmax_age: 5\nmax_age: 7\n",
			&Policy{Mode: ModeTesting, MX: []string{"a.example"}, MaxAge: 5}, ""},
		{"§3.2 unknown fields ignored", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 5\nfoo_bar: anything goes here\n",
			&Policy{Mode: ModeEnforce, MX: []string{"a.example"}, MaxAge: 5}, ""},
		{"§3.2 mx value = [\"*.\"] Domain: bad host", "version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 5\n", nil, "mx"},
		{"§3.2 mx wildcard only leftmost", "version: STSv1\nmode: enforce\nmx: mail.*.example\nmax_age: 5\n", nil, "mx"},
		{"§3.2 mx lower-cased, trailing dot dropped", "version: STSv1\nmode: enforce\nmx: MX.Example.COM.\nmax_age: 5\n",
			&Policy{Mode: ModeEnforce, MX: []string{"mx.example.com"}, MaxAge: 5}, ""},
		{"§3.2 line without ':'", "version: STSv1\nmode enforce\nmx: a.example\nmax_age: 5\n", nil, "line 2"},
		{"§3.2 field names are case-sensitive", "Version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 5\n", nil, "missing version"},
		{"§3.2 sts-policy-vchar excludes control chars", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 5\nx: a\x01b\n", nil, "line 5"},
		{"§3.2 blank lines tolerated (docs/mta-sts.md)", "version: STSv1\n\nmode: enforce\n\nmx: a.example\nmax_age: 5\n\n",
			&Policy{Mode: ModeEnforce, MX: []string{"a.example"}, MaxAge: 5}, ""},
		{"§3.2 empty body", "", nil, "missing version"},
		{"§3.2 empty value", "version: STSv1\nmode:\nmx: a.example\nmax_age: 5\n", nil, "line 2"},
	}
	for _, tc := range tests {
		t.Run(tc.rfc, func(t *testing.T) {
			p, err := ParsePolicy(tc.in)
			if tc.want == nil {
				if err == nil {
					t.Fatalf("ParsePolicy = %+v, want error", p)
				}
				if !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("error %q does not name %q", err, tc.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(p, tc.want) {
				t.Fatalf("ParsePolicy = %+v, want %+v", p, tc.want)
			}
		})
	}
}

func TestMatchPattern(t *testing.T) {
	tests := []struct {
		rfc, pattern, host string
		want               bool
	}{
		{"§4.1 exact match", "mail.example.com", "mail.example.com", true},
		{"§4.1 case-insensitive", "mail.example.com", "MAIL.Example.Com", true},
		{"§4.1 trailing dot of the MX name ignored", "mail.example.com", "mail.example.com.", true},
		{"§4.1 different host", "mail.example.com", "mx.example.com", false},
		{"§4.1 wildcard matches one leftmost label", "*.example.com", "mx1.example.com", true},
		{"§4.1 wildcard case-insensitive", "*.example.com", "MX1.EXAMPLE.COM.", true},
		{"§4.1 wildcard does not match the bare domain", "*.example.com", "example.com", false},
		{"§4.1 wildcard matches exactly one label", "*.example.com", "a.b.example.com", false},
		{"§4.1 wildcard needs a non-empty label", "*.example.com", ".example.com", false},
		{"§4.1 suffix must be on a label boundary", "*.example.com", "mxexample.com", false},
		{"§4.1 no substring match", "example.com", "mail.example.com", false},
		{"empty host", "example.com", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.rfc+"/"+tc.pattern+"/"+tc.host, func(t *testing.T) {
			if got := MatchPattern(tc.pattern, tc.host); got != tc.want {
				t.Fatalf("MatchPattern(%q, %q) = %v, want %v", tc.pattern, tc.host, got, tc.want)
			}
		})
	}
	p := &Policy{Mode: ModeEnforce, MX: []string{"mail.example.com", "*.example.net"}}
	if got := p.MatchingPattern("mx7.example.net"); got != "*.example.net" {
		t.Fatalf("MatchingPattern = %q", got)
	}
	if p.Matches("evil.example.org") {
		t.Fatal("unexpected match")
	}
	var nilp *Policy
	if nilp.Matches("mail.example.com") {
		t.Fatal("nil policy matches")
	}
}

func FuzzParseTXT(f *testing.F) {
	for _, s := range []string{"v=STSv1; id=20160831085700Z;", "v=STSv1;id=a", "v=STSv1 ; id=a ; x=y", "v=STSV1; id=1", "v=STSv1; id=;", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rec, err := ParseTXT(s)
		if err != nil {
			return
		}
		// Invariants of an accepted record (RFC 8461 §3.1).
		if !strings.HasPrefix(s, "v=STSv1") || len(rec.ID) < 1 || len(rec.ID) > 32 || !allAlnum(rec.ID) {
			t.Fatalf("accepted %q with id %q", s, rec.ID)
		}
		if !strings.Contains(s, "id="+rec.ID) {
			t.Fatalf("id %q not in %q", rec.ID, s)
		}
	})
}

func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{
		"version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmax_age: 604800\n",
		"version: STSv1\r\nmode: none\r\nmax_age: 1\r\n",
		"version: STSv1\nmode: testing\nmx: a\nmax_age: 9999999999",
		"mode: enforce\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePolicy(s)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("error %T is not a *SyntaxError", err)
			}
			return
		}
		if p.MaxAge < 0 || p.MaxAge > MaxMaxAge {
			t.Fatalf("max_age %d out of range", p.MaxAge)
		}
		if p.Mode == NoPolicy || (p.Mode != ModeNone && len(p.MX) == 0) {
			t.Fatalf("accepted policy %+v", p)
		}
		for _, m := range p.MX {
			if m != strings.ToLower(m) || !validHostname(strings.TrimPrefix(m, "*.")) {
				t.Fatalf("bad pattern %q", m)
			}
			// A pattern always matches itself (or one label under it).
			h := strings.Replace(m, "*", "x", 1)
			if !p.Matches(h) {
				t.Fatalf("pattern %q does not match %q", m, h)
			}
		}
	})
}
