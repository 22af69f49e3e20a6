package qmgr

import (
	"crypto/tls"
	"testing"

	"outpost/internal/dane"
	"outpost/internal/tlspolicy"
)

// Connections are shared only between destinations that would have made
// the same connection: everything that decides how a connection is
// secured is in the key, the labels are not.
func TestPoolKey(t *testing.T) {
	sts := func(domain string) tlspolicy.Host {
		return tlspolicy.Host{Name: "mx.example.net", Port: 25, TLS: tlspolicy.Requirement{Mode: tlspolicy.RequiredVerify,
			MinVersion: tls.VersionTLS12, Identity: tlspolicy.Identity{Names: []string{"mx.example.net"}},
			Why: "MTA-STS enforce (" + domain + ")", Source: tlspolicy.SourceMTASTS}}
	}
	base := poolKey("", sts("a.example"))
	if got := poolKey("", sts("b.example")); got != base {
		t.Errorf("two MTA-STS domains behind one MX do not share: %q vs %q", got, base)
	}
	upper := sts("a.example")
	upper.Name = "MX.Example.NET"
	upper.TLS.Identity.Names = []string{"MX.EXAMPLE.NET"}
	if poolKey("", upper) != base {
		t.Error("host name case makes a different key")
	}
	differ := map[string]func(h *tlspolicy.Host) string{
		"port":        func(h *tlspolicy.Host) string { h.Port = 587; return "" },
		"host":        func(h *tlspolicy.Host) string { h.Name = "mx2.example.net"; return "" },
		"gateway":     func(h *tlspolicy.Host) string { return "gw1" },
		"mode":        func(h *tlspolicy.Host) string { h.TLS.Mode = tlspolicy.Required; return "" },
		"min version": func(h *tlspolicy.Host) string { h.TLS.MinVersion = 0; return "" },
		"names": func(h *tlspolicy.Host) string {
			h.TLS.Identity.Names = append(h.TLS.Identity.Names, "a.example")
			return ""
		},
		"testing":       func(h *tlspolicy.Host) string { h.TLS.STSTesting = true; return "" },
		"ip preference": func(h *tlspolicy.Host) string { h.IPPreference = "ipv6-only"; return "" },
		"dane": func(h *tlspolicy.Host) string {
			h.TLS.DANE = []dane.TLSA{{Usage: 3, Selector: 1, MatchingType: 1, Data: []byte{1, 2}}}
			return ""
		},
	}
	for what, f := range differ {
		h := sts("a.example")
		gw := f(&h)
		if poolKey(gw, h) == base {
			t.Errorf("a different %s gives the same pool key", what)
		}
	}
	d1, d2 := sts("a.example"), sts("a.example")
	d1.TLS.DANE = []dane.TLSA{{Usage: 3, Selector: 1, MatchingType: 1, Data: []byte{1, 2}}}
	d2.TLS.DANE = []dane.TLSA{{Usage: 3, Selector: 1, MatchingType: 1, Data: []byte{1, 3}}}
	if poolKey("", d1) == poolKey("", d2) {
		t.Error("different TLSA data gives the same pool key")
	}
}
