package e2e

// outpost explain (issue 4, item 10) run by the real binary: the in-process
// DNS zone, a real HTTPS MTA-STS policy host, the configuration file, and —
// for the cached policy — the running daemon. explain never sends mail and
// never writes the MTA-STS cache.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// explainReport is the part of `outpost explain --json` the tests read;
// the field names are the documented, stable ones.
type explainJSON struct {
	Query   string `json:"query"`
	Domain  string `json:"domain"`
	Verdict string `json:"verdict"`
	Exit    int    `json:"exit_code"`
	Profile struct {
		Entry                    string `json:"entry"`
		Match                    string `json:"match"`
		TLS                      string `json:"tls"`
		TLSLabel                 string `json:"tls_label"`
		DANE                     string `json:"dane"`
		MTASTS                   bool   `json:"mta_sts"`
		IPPreference             string `json:"ip_preference"`
		MaxConcurrency           int    `json:"max_concurrency"`
		MaxMessagesPerConnection int    `json:"max_messages_per_connection"`
		RecipientLimit           *struct {
			Count   int `json:"count"`
			Minutes int `json:"minutes"`
		} `json:"recipient_limit"`
		LimitsScope        string `json:"limits_scope"`
		LimitsApply        string `json:"limits_apply"`
		BounceVerification bool   `json:"bounce_verification"`
		BounceProfile      struct {
			Name          string   `json:"name"`
			MaxRetries    int      `json:"max_retries"`
			InitialRetry  string   `json:"initial_retry"`
			RetrySchedule []string `json:"retry_schedule"`
		} `json:"bounce_profile"`
	} `json:"profile"`
	Route *struct {
		Entry string `json:"entry"`
		Match string `json:"match"`
		Kind  string `json:"kind"`
		Hosts []struct {
			Host     string `json:"host"`
			Port     int    `json:"port"`
			Priority int    `json:"priority"`
		} `json:"hosts"`
		SwitchesOff []string `json:"switches_off"`
	} `json:"route"`
	DNS struct {
		Resolvers []string `json:"resolvers"`
		MX        *struct {
			Status  string `json:"status"`
			DNSSEC  bool   `json:"dnssec"`
			NullMX  bool   `json:"null_mx"`
			Records []struct {
				Host string `json:"host"`
				Pref int    `json:"pref"`
			} `json:"records"`
		} `json:"mx"`
		Hosts []struct {
			Host string `json:"host"`
			A    struct {
				Status    string   `json:"status"`
				Addresses []string `json:"addresses"`
			} `json:"a"`
			AAAA struct {
				Status string `json:"status"`
			} `json:"aaaa"`
		} `json:"hosts"`
	} `json:"dns"`
	MTASTS struct {
		Enabled       bool   `json:"enabled"`
		Source        string `json:"source"`
		DaemonRunning *bool  `json:"daemon_running"`
		Status        string `json:"status"`
		Lookups       []struct {
			Domain string   `json:"domain"`
			State  string   `json:"state"`
			Mode   string   `json:"mode"`
			MX     []string `json:"mx"`
			ID     string   `json:"id"`
		} `json:"lookups"`
	} `json:"mta_sts"`
	DANE struct {
		Setting   string `json:"setting"`
		Evaluated bool   `json:"evaluated"`
		Status    string `json:"status"`
	} `json:"dane"`
	Plan struct {
		Source   string `json:"source"`
		Verdict  string `json:"verdict"`
		SMTPCode int    `json:"smtp_code"`
		Code     string `json:"code"`
		Reason   string `json:"reason"`
		Hosts    []struct {
			Host         string   `json:"host"`
			Port         int      `json:"port"`
			Preference   int      `json:"preference"`
			IPPreference string   `json:"ip_preference"`
			Addresses    []string `json:"addresses"`
			TLS          struct {
				Mode        string   `json:"mode"`
				TLSRequired bool     `json:"tls_required"`
				Verify      string   `json:"verify"`
				MinVersion  string   `json:"min_version"`
				Names       []string `json:"names"`
				Source      string   `json:"source"`
			} `json:"tls"`
		} `json:"hosts"`
		Limits struct {
			MaxConcurrency int `json:"max_concurrency"`
		} `json:"limits"`
		Notes    []string `json:"notes"`
		Warnings []string `json:"warnings"`
	} `json:"plan"`
}

func explainJSONOf(t *testing.T, cfg string, args ...string) (explainJSON, int) {
	t.Helper()
	out, code := tool(t, cfg, append([]string{"explain", "--json"}, args...)...)
	var r explainJSON
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("explain --json %v: not one JSON object: %v\n%s", args, err, out)
	}
	if r.Exit != code {
		t.Errorf("explain --json %v: exit_code %d but exit status %d", args, r.Exit, code)
	}
	return r, code
}

// explainWorld is the DNS, CA and policy host shared by the explain tests,
// with the zone data they read; explainDests are the destinations and
// routes of their configuration.
func explainWorld(t *testing.T) (*stsWorld, string) {
	w := newSTSWorld(t, "127.0.7.1", "127.0.7.2")
	z := w.z
	// A plain domain: two MX hosts with addresses.
	z.addMX("plain.test", 20, "mx2.plain.test")
	z.addMX("plain.test", 10, "mx1.plain.test")
	z.addA("mx1.plain.test", "127.0.7.11")
	z.addA("mx2.plain.test", "127.0.7.12")
	// Required-verify by exact entry; .corp.test entry for subdomains.
	z.addMX("secure.test", 10, "mx.secure.test")
	z.addA("mx.secure.test", "127.0.7.13")
	z.addMX("eu.corp.test", 10, "mx.eu.corp.test")
	z.addA("mx.eu.corp.test", "127.0.7.14")
	// Routed and discarded domains (their MX must not matter).
	z.addMX("partner.test", 10, "mx.partner.test")
	z.addA("relay1.partner.test", "127.0.7.21")
	z.addA("relay2.partner.test", "127.0.7.22")
	// DNS outcomes.
	z.setNullMX("null.test")
	z.setServfail("broken.test")
	// MTA-STS enforce: mx1.sts.test matches the policy, mx0.other.test
	// (better preference) does not.
	z.addMX("sts.test", 5, "mx0.other.test")
	z.addMX("sts.test", 10, "mx1.sts.test")
	z.addA("mx0.other.test", "127.0.7.30")
	z.addA("mx1.sts.test", "127.0.7.31")
	w.publish("sts.test", "p1", enforcePolicy("mx1.sts.test"))
	// MTA-STS enforce where no MX matches.
	z.addMX("nomatch.test", 10, "mx.nomatch.test")
	z.addA("mx.nomatch.test", "127.0.7.32")
	w.publish("nomatch.test", "n1", enforcePolicy("mx.elsewhere.test"))

	return w, toolConfig(t, w, "", explainDests)
}

const explainDests = `  secure.test: {tls: required-verify}
  .corp.test: {tls: required, max_concurrency: 10, recipient_limit: {count: 100, minutes: 5}}
  partner.test: {mta_sts: true}
  sts.test: {mta_sts: true}
  nomatch.test: {mta_sts: true}
smtp_routes:
  partner.test:
    hosts:
      - {host: relay2.partner.test, priority: 10}
      - {host: relay1.partner.test, port: 2525, priority: 0}
  junk.test: {discard: true}
  optin.test:
    hosts:
      - {host: mx1.sts.test}
    mta_sts: true
`

func TestExplainWithoutDaemon(t *testing.T) {
	w, cfg := explainWorld(t)

	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{{"explain"}, {"explain", "--bogus", "a.test"}, {"explain", "a.test", "b.test"}, {"explain", "user@"}} {
			if out, code := tool(t, cfg, args...); code != 2 || !strings.Contains(out, "usage: outpost explain") && !strings.Contains(out, "has no domain") {
				t.Errorf("%v: exit %d, want 2\n%s", args, code, out)
			}
		}
	})

	t.Run("plain domain", func(t *testing.T) {
		out, code := tool(t, cfg, "explain", "someone@Plain.Test")
		if code != 0 {
			t.Fatalf("exit %d, want 0\n%s", code, out)
		}
		wantContains(t, "plain", out,
			"Explain someone@Plain.Test (domain plain.test)",
			"\nProfile\n", "entry:                default (no entry for plain.test)",
			"TLS:                  preferred (Preferred)",
			"IP preference:        prefer-ipv4",
			"concurrency:          500 connections",
			"bounce profile:       Default: 100 retries",
			"\nRoute\n  none: delivery by the MX records of plain.test",
			"\nDNS (via "+w.z.addr+")\n",
			"MX plain.test: NOERROR, DNSSEC not validated",
			"10    mx1.plain.test", "20    mx2.plain.test",
			"mx1.plain.test: A NOERROR 127.0.7.11; AAAA NODATA",
			"\nMTA-STS (from the running daemon's cache)\n", "off for this destination",
			"\nDANE\n  setting none: off for this destination",
			"\nPlan (source: destination-control)\n",
			"1. mx1.plain.test port "+itoa(w.port)+" (preference 10)",
			"2. mx2.plain.test port "+itoa(w.port)+" (preference 20)",
			"TLS: preferred (TLS Preferred); certificate not verified",
			"addresses (prefer-ipv4): 127.0.7.11",
			"limits: 500 connection(s), 50 message(s) per connection, recipients no limit, counted per domain, system-wide",
			"Result: would deliver to plain.test (2 candidate host(s))")

		r, _ := explainJSONOf(t, cfg, "someone@plain.test")
		if r.Verdict != "deliver" || r.Domain != "plain.test" || r.Profile.Match != "default" || r.Profile.TLS != "preferred" ||
			r.Profile.MaxConcurrency != 500 || r.Profile.MaxMessagesPerConnection != 50 || r.Profile.RecipientLimit != nil ||
			r.Profile.LimitsScope != "domain" || r.Profile.LimitsApply != "system" || r.Profile.DANE != "none" ||
			r.Profile.BounceProfile.Name != "Default" || r.Profile.BounceProfile.MaxRetries != 100 || r.Profile.BounceProfile.InitialRetry != "1s" ||
			strings.Join(r.Profile.BounceProfile.RetrySchedule, ",") != "1s,2s" {
			t.Errorf("profile: %+v", r.Profile)
		}
		if r.Route != nil || r.DNS.MX == nil || r.DNS.MX.Status != "NOERROR" || len(r.DNS.MX.Records) != 2 || r.DNS.MX.Records[0].Host != "mx1.plain.test" || r.DNS.MX.Records[0].Pref != 10 {
			t.Errorf("route/dns: %+v %+v", r.Route, r.DNS.MX)
		}
		if len(r.DNS.Hosts) != 2 || r.DNS.Hosts[0].A.Status != "NOERROR" || r.DNS.Hosts[0].A.Addresses[0] != "127.0.7.11" || r.DNS.Hosts[0].AAAA.Status != "NODATA" {
			t.Errorf("dns hosts: %+v", r.DNS.Hosts)
		}
		if r.Plan.Source != "destination-control" || len(r.Plan.Hosts) != 2 || r.Plan.Hosts[0].Host != "mx1.plain.test" || r.Plan.Hosts[0].Port != w.port ||
			r.Plan.Hosts[0].TLS.Mode != "preferred" || r.Plan.Hosts[0].TLS.Verify != "none" || r.Plan.Hosts[0].TLS.TLSRequired ||
			r.Plan.Hosts[0].IPPreference != "prefer-ipv4" || strings.Join(r.Plan.Hosts[0].Addresses, ",") != "127.0.7.11" || r.Plan.Limits.MaxConcurrency != 500 {
			t.Errorf("plan: %+v", r.Plan)
		}
		if r.DANE.Setting != "none" || r.DANE.Evaluated || r.MTASTS.Enabled || len(r.MTASTS.Lookups) != 0 {
			t.Errorf("dane/mta-sts: %+v %+v", r.DANE, r.MTASTS)
		}
	})

	t.Run("required-verify entry", func(t *testing.T) {
		out, code := tool(t, cfg, "explain", "secure.test")
		if code != 0 {
			t.Fatalf("exit %d\n%s", code, out)
		}
		wantContains(t, "secure", out, "entry:                secure.test (exact match)",
			"TLS:                  required-verify (Required (Verify))",
			"1. mx.secure.test port", "TLS: required-verify (TLS Required (Verify)); certificate must verify",
			"names accepted: secure.test\n")
		r, _ := explainJSONOf(t, cfg, "secure.test")
		h := r.Plan.Hosts
		if r.Profile.Match != "exact" || len(h) != 1 || !h[0].TLS.TLSRequired || h[0].TLS.Verify != "required" || strings.Join(h[0].TLS.Names, ",") != "secure.test" {
			t.Errorf("%+v %+v", r.Profile, r.Plan)
		}
	})

	t.Run("suffix entry", func(t *testing.T) {
		out, code := tool(t, cfg, "explain", "ops@eu.corp.test")
		if code != 0 {
			t.Fatalf("exit %d\n%s", code, out)
		}
		wantContains(t, "suffix", out, "entry:                .corp.test (matches subdomains)",
			"TLS:                  required (Required)", "concurrency:          10 connections",
			"recipient limit:      100 per 5 minute(s)",
			"TLS: required (TLS Required); certificate not verified",
			"limits: 10 connection(s), 50 message(s) per connection, recipients 100 per 5 minute(s)")
		r, _ := explainJSONOf(t, cfg, "ops@eu.corp.test")
		if r.Profile.Entry != ".corp.test" || r.Profile.Match != "suffix" || r.Profile.RecipientLimit == nil || r.Profile.RecipientLimit.Count != 100 {
			t.Errorf("%+v", r.Profile)
		}
	})

	t.Run("routed domain", func(t *testing.T) {
		out, code := tool(t, cfg, "explain", "x@partner.test")
		if code != 0 {
			t.Fatalf("exit %d\n%s", code, out)
		}
		wantContains(t, "route", out,
			"partner.test (exact match): 2 host(s), by priority (0 first)",
			"relay2.partner.test                      priority 10",
			"relay1.partner.test:2525                 priority 0",
			"switches off: MX lookup of partner.test; DANE for partner.test; MTA-STS of partner.test",
			"MX partner.test: not looked up (the route decides)",
			"not applied: MTA-STS is not enforced for domains that have SMTP Routes configured",
			"\nPlan (source: route)\n",
			"1. relay1.partner.test port 2525 (preference 0)",
			"2. relay2.partner.test port "+itoa(w.port)+" (preference 10)",
			"addresses (prefer-ipv4): 127.0.7.21",
			"note: MTA-STS is not enforced for domains that have SMTP Routes configured")
		if strings.Index(out, "1. relay1") > strings.Index(out, "2. relay2") {
			t.Errorf("route hosts not in priority order:\n%s", out)
		}
		r, _ := explainJSONOf(t, cfg, "partner.test")
		if r.Route == nil || r.Route.Kind != "hosts" || r.Route.Match != "exact" || len(r.Route.Hosts) != 2 || r.DNS.MX != nil ||
			r.Plan.Source != "route" || len(r.Plan.Hosts) != 2 || r.Plan.Hosts[0].Host != "relay1.partner.test" || r.Plan.Hosts[0].Port != 2525 ||
			r.Plan.Hosts[1].Host != "relay2.partner.test" || len(r.MTASTS.Lookups) != 0 {
			t.Errorf("%+v %+v", r.Route, r.Plan)
		}
	})

	t.Run("route with MTA-STS opt-in --fetch", func(t *testing.T) {
		out, code := tool(t, cfg, "explain", "optin.test", "--fetch")
		if code != 0 {
			t.Fatalf("exit %d\n%s", code, out)
		}
		wantContains(t, "opt-in", out, "the route opted in: the MTA-STS policy of the route hosts' own domain applies",
			"sts.test (route hosts' domain (RFC 8461 §3.4)): policy, mode enforce",
			"\nPlan (source: route)\n", "1. mx1.sts.test port", "TLS: required-verify (MTA-STS enforce), TLS 1.2 or later")
	})

	t.Run("/dev/null route", func(t *testing.T) {
		out, code := tool(t, cfg, "explain", "junk.test")
		if code != 0 {
			t.Fatalf("exit %d, want 0 (dropped, not deferred)\n%s", code, out)
		}
		wantContains(t, "discard", out, "junk.test (exact match): /dev/null", "Result: would discard:")
		r, _ := explainJSONOf(t, cfg, "junk.test")
		if r.Verdict != "discard" || r.Route == nil || r.Route.Kind != "discard" || len(r.Plan.Hosts) != 0 {
			t.Errorf("%+v", r)
		}
	})

	t.Run("NXDOMAIN", func(t *testing.T) {
		out, code := tool(t, cfg, "explain", "a@missing.test")
		if code != 1 {
			t.Fatalf("exit %d, want 1\n%s", code, out)
		}
		wantContains(t, "nxdomain", out, "MX missing.test: NXDOMAIN", "Result: would bounce now: 550 5.1.2 ")
		r, _ := explainJSONOf(t, cfg, "a@missing.test")
		if r.Verdict != "bounce" || r.Plan.Code != "5.1.2" || r.Plan.SMTPCode != 550 || r.DNS.MX.Status != "NXDOMAIN" {
			t.Errorf("%+v %+v", r.Plan, r.DNS.MX)
		}
	})

	t.Run("null MX", func(t *testing.T) {
		out, code := tool(t, cfg, "explain", "null.test")
		if code != 1 {
			t.Fatalf("exit %d, want 1\n%s", code, out)
		}
		wantContains(t, "null", out, "null MX (RFC 7505)", "Result: would bounce now: 556 5.1.10 ")
		r, _ := explainJSONOf(t, cfg, "null.test")
		if r.Verdict != "bounce" || r.Plan.Code != "5.1.10" || !r.DNS.MX.NullMX {
			t.Errorf("%+v", r.Plan)
		}
	})

	t.Run("SERVFAIL", func(t *testing.T) {
		out, code := tool(t, cfg, "explain", "broken.test")
		if code != 1 {
			t.Fatalf("exit %d, want 1\n%s", code, out)
		}
		wantContains(t, "servfail", out, "MX broken.test: SERVFAIL", "Result: would defer: 451 4.4.3 ",
			"note: temporary: the mail stays queued, retried after 1s")
		r, _ := explainJSONOf(t, cfg, "broken.test")
		if r.Verdict != "defer" || r.Plan.Code != "4.4.3" || r.DNS.MX.Status != "SERVFAIL" {
			t.Errorf("%+v", r.Plan)
		}
	})

	t.Run("MTA-STS enforce --fetch", func(t *testing.T) {
		out, code := tool(t, cfg, "explain", "u@sts.test", "--fetch")
		if code != 0 {
			t.Fatalf("exit %d\n%s", code, out)
		}
		wantContains(t, "sts fetch", out,
			"\nMTA-STS (live lookup, not cached)\n",
			"policy in enforce mode, fetched now (not cached): only MX hosts matching mx1.sts.test",
			"sts.test (recipient domain): policy, mode enforce, mx mx1.sts.test, max_age 604800, id p1",
			"policy: https://mta-sts.sts.test/.well-known/mta-sts.txt",
			"\nPlan (source: mta-sts)\n",
			"1. mx1.sts.test port", "TLS: required-verify (MTA-STS enforce), TLS 1.2 or later; certificate must verify",
			"names accepted: mx1.sts.test\n",
			"note: MTA-STS policy for the domain (sts.test) Failed: MX mx0.other.test is not in the policy",
			"Result: would deliver to sts.test (1 candidate host(s))")
		if strings.Contains(out, ". mx0.other.test port") {
			t.Errorf("the plan lists the MX outside the policy:\n%s", out)
		}
		r, _ := explainJSONOf(t, cfg, "u@sts.test", "--fetch")
		if r.Plan.Source != "mta-sts" || len(r.Plan.Hosts) != 1 || r.Plan.Hosts[0].Host != "mx1.sts.test" ||
			r.Plan.Hosts[0].TLS.MinVersion != "TLS 1.2" || strings.Join(r.Plan.Hosts[0].TLS.Names, ",") != "mx1.sts.test" ||
			r.Plan.Hosts[0].TLS.Source != "mta-sts" || r.MTASTS.Source != "fetch" || len(r.MTASTS.Lookups) != 1 ||
			r.MTASTS.Lookups[0].State != "policy" || r.MTASTS.Lookups[0].Mode != "enforce" || r.MTASTS.Lookups[0].ID != "p1" ||
			r.MTASTS.DaemonRunning != nil {
			t.Errorf("%+v\n%+v", r.Plan, r.MTASTS)
		}
		if len(r.DNS.MX.Records) != 2 || r.DNS.MX.Records[0].Host != "mx0.other.test" {
			t.Errorf("the DNS section must still show every MX: %+v", r.DNS.MX)
		}
		// Fetched, never cached: explain opens no policy store.
		if _, err := os.Stat(filepath.Join(filepath.Dir(cfg), "data", "mta-sts.db")); err == nil {
			t.Error("explain --fetch wrote an MTA-STS cache file")
		}
		if w.ps.hitCount("sts.test") < 2 {
			t.Errorf("policy host saw %d fetches, want one per explain --fetch", w.ps.hitCount("sts.test"))
		}
	})

	t.Run("MTA-STS without daemon", func(t *testing.T) {
		out, code := tool(t, cfg, "explain", "sts.test")
		if code != 0 {
			t.Fatalf("exit %d\n%s", code, out)
		}
		wantContains(t, "sts cache", out, "Outpost is not running: nothing cached to show (use --fetch for a live lookup)",
			"sts.test (recipient domain): daemon-not-running", "\nPlan (source: destination-control)\n")
		r, _ := explainJSONOf(t, cfg, "sts.test")
		if r.MTASTS.DaemonRunning == nil || *r.MTASTS.DaemonRunning || r.MTASTS.Source != "cache" || len(r.Plan.Hosts) != 2 {
			t.Errorf("%+v %+v", r.MTASTS, r.Plan)
		}
	})

	t.Run("MTA-STS no matching MX --fetch", func(t *testing.T) {
		out, code := tool(t, cfg, "explain", "nomatch.test", "--fetch")
		if code != 1 {
			t.Fatalf("exit %d, want 1\n%s", code, out)
		}
		wantContains(t, "nomatch", out, "MX mx.nomatch.test is not in the policy", "Result: would defer: 4.4.8 MTA-STS policy for nomatch.test blocked delivery")
		r, _ := explainJSONOf(t, cfg, "nomatch.test", "--fetch")
		if r.Verdict != "defer" || r.Plan.Code != "4.4.8" || r.Plan.Source != "mta-sts" || len(r.Plan.Hosts) != 0 {
			t.Errorf("%+v", r.Plan)
		}
	})

	t.Run("DANE not evaluated", func(t *testing.T) {
		c := strings.Replace(readFile(t, cfg), "  secure.test: {tls: required-verify}", "  secure.test: {tls: required-verify, dane: opportunistic}", 1)
		p := filepath.Join(t.TempDir(), "dane.yaml")
		writeFile(t, p, c)
		r, code := explainJSONOf(t, p, "secure.test")
		if code != 0 || r.DANE.Setting != "opportunistic" || (!r.DANE.Evaluated && !strings.Contains(r.DANE.Status, "not evaluated")) {
			t.Errorf("exit %d, dane %+v", code, r.DANE)
		}
	})

	t.Run("AD bit", func(t *testing.T) {
		cfgAD := toolConfig(t, w, adResolver(t, w.z), "")
		out, code := tool(t, cfgAD, "explain", "plain.test")
		if code != 0 {
			t.Fatalf("exit %d\n%s", code, out)
		}
		wantContains(t, "AD", out, "MX plain.test: NOERROR, DNSSEC validated (AD)", "mx1.plain.test: A NOERROR 127.0.7.11 (AD)")
	})
}

// With the daemon running, explain reads its MTA-STS cache through the
// control socket (and still sends nothing).
func TestExplainDaemonCache(t *testing.T) {
	w, _ := explainWorld(t)
	d := startOutpost(t, t.TempDir(), stsConfig(w, "1h", explainDests, "mta_sts:\n  fetch_timeout: 3s\n"))

	out, code := tool(t, d.cfgPath, "explain", "sts.test")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	wantContains(t, "not cached", out, "sts.test (recipient domain): not-cached", "\nPlan (source: destination-control)\n")

	if out, err := d.cli("mta-sts", "cache", "refresh", "sts.test"); err != nil {
		t.Fatalf("cache refresh: %v\n%s", err, out)
	}
	hits := w.ps.hitCount("sts.test")
	out, code = tool(t, d.cfgPath, "explain", "sts.test")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	wantContains(t, "cached", out,
		"\nMTA-STS (from the running daemon's cache)\n",
		"policy in enforce mode, cached by the daemon: only MX hosts matching mx1.sts.test",
		"sts.test (recipient domain): policy, mode enforce, mx mx1.sts.test, max_age 604800, id p1",
		"\nPlan (source: mta-sts)\n", "names accepted: mx1.sts.test\n")
	r, _ := explainJSONOf(t, d.cfgPath, "sts.test")
	if r.MTASTS.DaemonRunning == nil || !*r.MTASTS.DaemonRunning || len(r.MTASTS.Lookups) != 1 || r.MTASTS.Lookups[0].State != "policy" ||
		r.Plan.Source != "mta-sts" || len(r.Plan.Hosts) != 1 || r.Plan.Hosts[0].Host != "mx1.sts.test" {
		t.Errorf("%+v %+v", r.MTASTS, r.Plan)
	}
	if n := w.ps.hitCount("sts.test"); n != hits {
		t.Errorf("explain without --fetch fetched the policy (%d requests, want %d)", n, hits)
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
