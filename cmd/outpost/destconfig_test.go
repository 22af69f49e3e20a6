package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"outpost/internal/config"
	"outpost/internal/configstore"
	"outpost/internal/tlspolicy"
)

// testConfig writes a live configuration with its own data directory.
func testConfig(t *testing.T, extra string) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "outpost.yaml")
	if err := os.WriteFile(p, []byte("data_dir: "+filepath.Join(dir, "data")+"\n"+extra), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func runCmd(t *testing.T, cmd string, cfg, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	in := strings.NewReader(stdin)
	var code int
	switch cmd {
	case "destconfig":
		code = destconfigCmd(cfg, args, in, &out, &errb)
	case "smtproutes":
		code = smtproutesCmd(cfg, args, in, &out, &errb)
	case "bounceconfig":
		code = bounceconfigCmd(cfg, args, in, &out, &errb)
	default:
		t.Fatalf("unknown command %s", cmd)
	}
	return out.String(), errb.String(), code
}

// pending returns the working configuration, raw and validated.
func pending(t *testing.T, cfg string) (*config.Config, *config.Config) {
	t.Helper()
	st, _, err := openStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !st.HasPending() {
		t.Fatal("no pending configuration")
	}
	raw, eff, err := working(st)
	if err != nil {
		t.Fatal(err)
	}
	return raw, eff
}

func mustContain(t *testing.T, s string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(s, w) {
			t.Errorf("missing %q in:\n%s", w, s)
		}
	}
}

func lines(ls ...string) string { return strings.Join(ls, "\n") + "\n" }

// newExampleScript answers NEW for example.com, with wrong answers first.
var newExampleScript = []string{
	"new",
	"bad domain", "default", "example.com",
	"maybe", "y", // concurrency gate
	"abc", "5000", "200", // concurrency
	"y",        // recipient limit gate
	"61", "30", // minutes
	"1000",   // recipients
	"3", "2", // scope
	"1",       // apply
	"y",       // messages per connection gate
	"0", "10", // messages
	"y", "7", "5", // TLS
	"y", "2", // DANE
	"y", "2", // MTA-STS
	"y", "y", // bounce verification
	"y", "2", "9bad", "slow", // bounce profile: new
	"y", "2", // IP preference
}

func TestDestconfigInteractiveNew(t *testing.T) {
	cfg := testConfig(t, "")
	out, errOut, code := runCmd(t, "destconfig", cfg, lines(newExampleScript...))
	if code != 0 {
		t.Fatalf("code %d: %s", code, errOut)
	}
	mustContain(t, out,
		"Choose the operation you want to perform:",
		"- NEW - Create a new destination.",
		"- SETUP - Change global settings.",
		"Enter the domain you wish to configure.",
		`"bad domain" is not a valid domain`,
		`"default" is reserved`,
		"Do you wish to configure a concurrency limit for example.com? [N]>",
		"Please answer Y or N.",
		`Enter the max concurrency limit for "example.com". [500]>`,
		`"abc" is not a number. The value must be between 1 and 1000.`,
		"The value must be between 1 and 1000.",
		"The value must be between 1 and 60.",
		"1. One limit applies to the entire domain",
		"2. Separate limit for each mail exchanger IP address",
		"The value must be between 1 and 2.",
		"Do you wish to apply a specific TLS setting for this domain? [N]>",
		"1. No\n2. Preferred\n3. Required\n4. Preferred (Verify)\n5. Required (Verify)\n6. Required - Verify Hosted Domains\n",
		"The value must be between 1 and 6.",
		"Do you wish to configure DANE Support? [N]>",
		"1. No\n2. Opportunistic\n3. Mandatory\n",
		"Do you wish to configure MTA STS Support? [N]>",
		"MTA-STS is not enforced for domains that have SMTP Routes configured",
		"1. Off  2. On",
		"The bounce profile name must start with a letter or underscore",
		"Use the commit command to make these changes active.",
	)
	raw, eff := pending(t, cfg)
	d := raw.Destinations["example.com"]
	if d == nil {
		t.Fatalf("no entry: %+v", raw.Destinations)
	}
	p := eff.Profile("example.com")
	want := config.Profile{Name: "example.com", IPPreference: "prefer-ipv6", MaxConcurrency: 200, MaxMessagesPerConnection: 10,
		RecipientLimit: config.RecipientLimit{Count: 1000, Minutes: 30}, LimitsScope: "mx-ip", LimitsApply: "system",
		TLS: tlspolicy.RequiredVerify, DANE: "opportunistic", MTASTS: true, BounceVerification: true, BounceProfile: "slow"}
	if p != want {
		t.Fatalf("profile\n got %+v\nwant %+v", p, want)
	}
	if raw.BounceProfiles["slow"] == nil {
		t.Fatal("new bounce profile not created")
	}

	// EDIT with every answer left at its default keeps the entry as it is.
	out, _, _ = runCmd(t, "destconfig", cfg, "edit\nnosuch.test\nexample.com\n"+strings.Repeat("\n", 40))
	mustContain(t, out, `"nosuch.test" was not found in the destination table.`, "Do you wish to configure a concurrency limit for example.com? [Y]>", `[200]>`)
	raw2, eff2 := pending(t, cfg)
	if eff2.Profile("example.com") != want {
		t.Fatalf("edit with defaults changed the entry: %+v", eff2.Profile("example.com"))
	}
	if len(raw2.Destinations) != len(raw.Destinations) {
		t.Fatal("edit changed the table")
	}

	// Duplicate domain re-prompts; a blank answer returns to the menu.
	out, _, _ = runCmd(t, "destconfig", cfg, "NEW\nexample.com\n\n")
	mustContain(t, out, `The destination "example.com" already exists.`)
	if strings.Contains(out, "Use the commit command") {
		t.Error("reminder printed without a change")
	}
}

func TestDestconfigInteractiveDefaultListDetailDelete(t *testing.T) {
	cfg := testConfig(t, "bounce_profiles: {slow: {max_retries: 5}}\n")
	script := lines(
		"DEFAULT",
		"300",    // concurrency
		"n",      // recipient limit
		"2", "2", // scope, apply
		"20",     // messages per connection
		"1",      // TLS No
		"2", "1", // DANE opportunistic refused (TLS is No), then No
		"2", "1", // MTA-STS On refused, then Off
		"y", // tagging
		"2", // bounce profile slow
		"4", // require IPv6
		"LIST",
		"DETAIL", "nope.test", "DEFAULT",
		"bogus",
	)
	out, errOut, code := runCmd(t, "destconfig", cfg, script)
	if code != 0 {
		t.Fatal(errOut)
	}
	mustContain(t, out, "Enter the default maximum concurrency limit. [500]>",
		"DANE requires TLS, but the TLS setting for default is No.",
		"MTA-STS requires TLS, but the TLS setting for default is No.",
		"Domain", "Rate Limiting", "Bounce Verification", "IP preference", "(Default)",
		`"nope.test" was not found in the destination table.`,
		"    TLS: No", "    IP Sort Preference: Require IPv6", "    Bounce Profile: slow",
		`No destination control table action for "BOGUS".`)
	_, eff := pending(t, cfg)
	p := eff.Profile("any.test")
	if p.MaxConcurrency != 300 || p.LimitsScope != "mx-ip" || p.LimitsApply != "virtual-gateway" || p.MaxMessagesPerConnection != 20 ||
		p.TLS != tlspolicy.None || p.DANE != "none" || p.MTASTS || !p.BounceVerification || p.BounceProfile != "slow" || p.IPPreference != "require-ipv6" {
		t.Fatalf("default profile %+v", p)
	}

	// Delete and clear.
	for _, d := range []string{"a.test", "b.test"} {
		if _, e, c := runCmd(t, "destconfig", cfg, "", "new", d, "--tls", "required"); c != 0 {
			t.Fatal(e)
		}
	}
	out, _, _ = runCmd(t, "destconfig", cfg, lines("DELETE", "c.test", "a.test"))
	mustContain(t, out, "Enter the domain you wish to delete.", `"c.test" was not found`)
	raw, _ := pending(t, cfg)
	if raw.Destinations["a.test"] != nil || raw.Destinations["b.test"] == nil {
		t.Fatalf("delete: %v", raw.Destinations)
	}
	runCmd(t, "destconfig", cfg, lines("CLEAR", "y"))
	raw, _ = pending(t, cfg)
	if len(raw.Destinations) != 1 || raw.Destinations["default"] == nil {
		t.Fatalf("clear: %v", raw.Destinations)
	}
}

func TestDestconfigInteractiveSetup(t *testing.T) {
	cfg := testConfig(t, "")
	dir := filepath.Dir(cfg)
	cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	os.WriteFile(cert, []byte("x"), 0o600)
	os.WriteFile(key, []byte("x"), 0o600)
	out, _, _ := runCmd(t, "destconfig", cfg, lines("SETUP", "y", filepath.Join(dir, "missing.pem"), cert, key, "y", "nobody", "ops@example.net"))
	mustContain(t, out, "The file "+filepath.Join(dir, "missing.pem")+" cannot be read", `"nobody" is not an email address.`)
	raw, _ := pending(t, cfg)
	if raw.TLS.ClientCert == nil || raw.TLS.ClientCert.CertFile != cert || raw.TLS.ClientCert.KeyFile != key || !raw.TLS.Alert.Enabled || raw.TLS.Alert.To != "ops@example.net" {
		t.Fatalf("tls: %+v %+v", raw.TLS, raw.TLS.ClientCert)
	}
	if _, e, c := runCmd(t, "destconfig", cfg, "", "setup", "--client-cert", "none", "--tls-alert", "off"); c != 0 {
		t.Fatal(e)
	}
	raw, _ = pending(t, cfg)
	if raw.TLS.ClientCert != nil || raw.TLS.Alert.Enabled {
		t.Fatalf("setup batch: %+v", raw.TLS)
	}
}

func TestDestconfigBatch(t *testing.T) {
	cfg := testConfig(t, "bounce_profiles: {slow: {}}\nsmtp_routes: {example.com: {usedns: true}}\n")
	out, errOut, code := runCmd(t, "destconfig", cfg, "", "new", "Example.COM.", "--tls", "required-verify", "--mta-sts", "on",
		"--dane", "mandatory", "--max-concurrency", "7", "--max-messages-per-connection", "9", "--recipient-limit", "100/15",
		"--limits-scope", "mx-ip", "--limits-apply", "virtual-gateway", "--ip-preference", "prefer-ipv6",
		"--bounce-verification", "on", "--bounce-profile", "slow")
	if code != 0 {
		t.Fatalf("%d %s", code, errOut)
	}
	mustContain(t, out, "Use the commit command to make these changes active.")
	_, eff := pending(t, cfg)
	want := config.Profile{Name: "example.com", IPPreference: "prefer-ipv6", MaxConcurrency: 7, MaxMessagesPerConnection: 9,
		RecipientLimit: config.RecipientLimit{Count: 100, Minutes: 15}, LimitsScope: "mx-ip", LimitsApply: "virtual-gateway",
		TLS: tlspolicy.RequiredVerify, DANE: "mandatory", MTASTS: true, BounceVerification: true, BounceProfile: "slow"}
	if p := eff.Profile("example.com"); p != want {
		t.Fatalf("got %+v", p)
	}
	// edit: flags before the domain too; inherit unsets.
	if _, e, c := runCmd(t, "destconfig", cfg, "", "edit", "--tls", "inherit", "example.com", "--dane", "inherit", "--mta-sts", "inherit"); c != 0 {
		t.Fatal(e)
	}
	raw, _ := pending(t, cfg)
	if d := raw.Destinations["example.com"]; d.TLS != nil || d.DANE != nil || d.MTASTS != nil || *d.MaxConcurrency != 7 {
		t.Fatalf("edit: %+v", d)
	}
	out, _, _ = runCmd(t, "destconfig", cfg, "", "list", "--json")
	var recs []destRecord
	if err := json.Unmarshal([]byte(out), &recs); err != nil || len(recs) != 2 || recs[0].Domain != "default" || recs[1].SMTPRoute != "example.com" {
		t.Fatalf("list --json: %v %s", err, out)
	}
	out, _, _ = runCmd(t, "destconfig", cfg, "", "detail", "example.com")
	mustContain(t, out, "MTA-STS: Off (Default)", "Recipient limit: 100 recipients per 15 minutes")

	// Errors name the field and the range, and nothing is saved.
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"new", "a.test", "--max-concurrency", "0"}, 1, "destinations.a.test.max_concurrency 0: want 1-1000"},
		{[]string{"new", "a.test", "--max-concurrency", "1001"}, 1, "max_concurrency 1001: want 1-1000"},
		{[]string{"new", "a.test", "--max-messages-per-connection", "1001"}, 1, "max_messages_per_connection 1001: want 1-1000"},
		{[]string{"new", "a.test", "--recipient-limit", "5/61"}, 1, "recipient_limit.minutes 61: want 1-60"},
		{[]string{"new", "a.test", "--recipient-limit", "1000000001/5"}, 1, "recipient_limit.count 1000000001: want 0-1000000000"},
		{[]string{"new", "a.test", "--recipient-limit", "5"}, 2, "want COUNT/MINUTES"},
		{[]string{"new", "a.test", "--tls", "sometimes"}, 2, `unknown TLS mode "sometimes"`},
		{[]string{"new", "a.test", "--ip-preference", "ipv4"}, 2, "--ip-preference \"ipv4\": want one of prefer-ipv4, prefer-ipv6, require-ipv4, require-ipv6"},
		{[]string{"new", "a.test", "--limits-scope", "x"}, 2, "want one of domain, mx-ip"},
		{[]string{"new", "a.test", "--limits-apply", "x"}, 2, "want one of system, virtual-gateway"},
		{[]string{"new", "a.test", "--bounce-profile", "nosuch"}, 1, `bounce_profile "nosuch": no such bounce profile`},
		{[]string{"new", "a.test", "--tls", "none", "--dane", "mandatory"}, 1, "dane: mandatory needs TLS"},
		{[]string{"new", "a.test", "--nope", "1"}, 2, "flag provided but not defined"},
		{[]string{"new", "example.com"}, 1, `The destination "example.com" already exists.`},
		{[]string{"new", "bad/name"}, 1, "is not a valid domain"},
		{[]string{"edit", "nosuch.test", "--tls", "none"}, 1, `"nosuch.test" was not found in the destination table.`},
		{[]string{"delete", "nosuch.test"}, 1, "was not found"},
		{[]string{"delete", "default"}, 1, "the default entry cannot be deleted"},
		{[]string{"detail", "nosuch.test"}, 1, "was not found"},
		{[]string{"default", "--max-concurrency", "2000"}, 1, "destinations.default.max_concurrency 2000: want 1-1000"},
		{[]string{"frobnicate"}, 2, `No destination control table action for "frobnicate".`},
	} {
		_, e, c := runCmd(t, "destconfig", cfg, "", tc.args...)
		if c != tc.code || !strings.Contains(e, tc.want) {
			t.Errorf("%v: code %d, stderr %q; want %d and %q", tc.args, c, e, tc.code, tc.want)
		}
	}
	raw2, _ := pending(t, cfg)
	if raw2.Destinations["a.test"] != nil {
		t.Error("a refused change was saved")
	}
	if _, e, c := runCmd(t, "destconfig", cfg, "", "delete", "example.com"); c != 0 {
		t.Fatal(e)
	}
	raw2, _ = pending(t, cfg)
	if raw2.Destinations["example.com"] != nil {
		t.Error("delete")
	}
}

func TestDestconfigImportExportRoundTrip(t *testing.T) {
	cfg := testConfig(t, `bounce_profiles: {slow: {}}
destinations:
  default: {tls: required, max_concurrency: 100, recipient_limit: {count: 50, minutes: 10}}
  example.com: {tls: required-verify-hosted, mta_sts: true, dane: opportunistic, bounce_profile: slow}
  .example.org: {max_messages_per_connection: 3, limits_scope: mx-ip, limits_apply: virtual-gateway, ip_preference: require-ipv4}
  free.test: {recipient_limit: {count: 0}, bounce_verification: true, tls: preferred-verify}
`)
	dir := filepath.Dir(cfg)
	f1, f2 := filepath.Join(dir, "t1.ini"), filepath.Join(dir, "t2.ini")
	if _, e, c := runCmd(t, "destconfig", cfg, "", "export", f1); c != 0 {
		t.Fatal(e)
	}
	st, _, _ := openStore(cfg)
	_, before, err := working(st)
	if err != nil {
		t.Fatal(err)
	}
	// Import into an empty table elsewhere, then export again.
	cfg2 := testConfig(t, "bounce_profiles: {slow: {}}\n")
	out, e, c := runCmd(t, "destconfig", cfg2, "", "import", f1)
	if c != 0 {
		t.Fatal(e)
	}
	mustContain(t, out, commitReminder)
	if _, e, c := runCmd(t, "destconfig", cfg2, "", "export", f2); c != 0 {
		t.Fatal(e)
	}
	b1, _ := os.ReadFile(f1)
	b2, _ := os.ReadFile(f2)
	if !bytes.Equal(b1, b2) {
		t.Fatalf("export differs after import:\n%s\n---\n%s", b1, b2)
	}
	_, after := pending(t, cfg2)
	for _, d := range []string{"example.com", "x.example.org", "free.test", "other.test", "default"} {
		if before.Profile(d) != after.Profile(d) {
			t.Errorf("%s: %+v != %+v", d, before.Profile(d), after.Profile(d))
		}
	}

	// Import errors name the line; nothing is saved.
	bad := filepath.Join(dir, "bad.ini")
	os.WriteFile(bad, []byte("[DEFAULT]\nuse_tls = 1\n\n[a.test]\nmax_host_concurrency = 1001\n"), 0o600)
	_, e, c = runCmd(t, "destconfig", cfg2, "", "import", bad)
	if c != 1 || !strings.Contains(e, bad+":5: max_host_concurrency 1001: want 1-1000") {
		t.Fatalf("%d %s", c, e)
	}
	os.WriteFile(bad, []byte("[DEFAULT]\n[a.test]\nbounce_profile = nosuch\n"), 0o600)
	_, e, _ = runCmd(t, "destconfig", cfg2, "", "import", bad)
	mustContain(t, e, "import failed", `bounce_profile "nosuch": no such bounce profile`)
	// Interactive import.
	out, _, _ = runCmd(t, "destconfig", cfg2, lines("IMPORT", f1))
	mustContain(t, out, "Enter the name of the file to import.", "The destination table was imported from "+f1)
}

// Keep the shared store helper honest: edits stay pending until commit.
func TestDestconfigLeavesLiveAlone(t *testing.T) {
	cfg := testConfig(t, "")
	before, _ := os.ReadFile(cfg)
	runCmd(t, "destconfig", cfg, "", "new", "a.test", "--tls", "required")
	after, _ := os.ReadFile(cfg)
	if !bytes.Equal(before, after) {
		t.Fatal("live file changed")
	}
	st, _ := configstore.Open(cfg, filepath.Join(filepath.Dir(cfg), "data"))
	d, err := st.Diff()
	if err != nil || !strings.Contains(d, "+   a.test:") {
		t.Fatalf("diff %v %q", err, d)
	}
}
