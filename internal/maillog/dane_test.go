package maillog

import (
	"bytes"
	"testing"
)

// TestDANELines pins the DANE line shapes (docs/tls-policy.md).
func TestDANELines(t *testing.T) {
	for _, tc := range []struct {
		log  func(l *Logger)
		want string
	}{
		{func(l *Logger) { l.DANETLSAFound("example.com", "mx1.example.com", "3 1 1, 2 0 1") },
			"Info: SECURE TLSA record found for MX(mx1.example.com) in example.com (3 1 1, 2 0 1)"},
		{func(l *Logger) {
			l.DANENotApplicable("example.com", "mx1.example.com", "the MX records are not DNSSEC-signed")
		}, "Info: DANE not applicable for MX(mx1.example.com) in example.com: the MX records are not DNSSEC-signed"},
		{func(l *Logger) {
			l.DANEEncryptOnly("example.com", "mx1.example.com", "TLSA records present but none usable (1 1 1)")
		}, "Info: DANE: TLS required without authentication for MX(mx1.example.com) in example.com: TLSA records present but none usable (1 1 1)"},
		{func(l *Logger) {
			l.DANESkipMX("example.com", "mx1.example.com", "TLSA lookup failed: bogus (SERVFAIL)")
		},
			"Info: DANE: skipping MX(mx1.example.com) in example.com: TLSA lookup failed: bogus (SERVFAIL)"},
		{func(l *Logger) {
			l.DANEDeferred("example.com", "4.7.4", "DANE is mandatory but the MX records are not DNSSEC-signed")
		}, "Info: DANE deferred delivery for example.com: 4.7.4 DANE is mandatory but the MX records are not DNSSEC-signed"},
		{func(l *Logger) { l.DCIDDANESuccess(7, "example.com", "mx1.example.com", "3 1 1") },
			"Info: DCID 7 DANE SUCCESS for example.com: TLSA 3 1 1 matched MX(mx1.example.com)"},
		{func(l *Logger) {
			l.DCIDDANEFailure(7, "example.com", "mx1.example.com", "no TLSA record matched the server certificate chain (3 1 1)")
		}, "Info: DCID 7 DANE failure for example.com: MX(mx1.example.com) no TLSA record matched the server certificate chain (3 1 1)"},
		{func(l *Logger) { l.DCIDDANEFailure(8, "example.com", "mx1.example.com", "peer cert doesn't match\r\n") },
			`Info: DCID 8 DANE failure for example.com: MX(mx1.example.com) peer cert doesn\'t match  `},
	} {
		var buf bytes.Buffer
		l := NewWriter(&buf, Info)
		tc.log(l)
		l.Close()
		got := strip(t, buf.String())
		if len(got) != 1 || got[0] != tc.want {
			t.Errorf("got %q\nwant %q", got, tc.want)
		}
	}
	var buf bytes.Buffer
	l := NewWriter(&buf, Warning)
	l.DCIDDANESuccess(1, "a", "b", "3 1 1")
	l.Close()
	if buf.Len() != 0 {
		t.Errorf("Info line written at Warning: %q", buf.String())
	}
	var nl *Logger
	nl.DCIDDANEFailure(1, "a", "b", "c") // a nil logger discards
}
