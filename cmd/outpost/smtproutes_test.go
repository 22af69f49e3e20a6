package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"outpost/internal/config"
)

func TestParseRouteHosts(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want *config.Route
		err  string
	}{
		{"relay1.example", &config.Route{Hosts: []config.RouteHost{{Host: "relay1.example"}}}, ""},
		{"a.example/pri=10, b.example:2525/pri=0,c.example:26", &config.Route{Hosts: []config.RouteHost{
			{Host: "a.example", Priority: 10}, {Host: "b.example", Port: 2525}, {Host: "c.example", Port: 26}}}, ""},
		{"192.0.2.1:25/PRI=65535", &config.Route{Hosts: []config.RouteHost{{Host: "192.0.2.1", Port: 25, Priority: 65535}}}, ""},
		{"[2001:db8::1]:2525/pri=1,2001:db8::2", &config.Route{Hosts: []config.RouteHost{{Host: "2001:db8::1", Port: 2525, Priority: 1}, {Host: "2001:db8::2"}}}, ""},
		{"usedns", &config.Route{UseDNS: true}, ""},
		{"/dev/null", &config.Route{Discard: true}, ""},
		{"", nil, "at least one destination host"},
		{"a.example, USEDNS", nil, "USEDNS must be used by itself."},
		{"/dev/null,a.example", nil, "/dev/null must be used by itself."},
		{"a.example/pri=65536", nil, "the priority must be between 0 and 65535"},
		{"a.example/pri=-1", nil, "the priority must be between 0 and 65535"},
		{"a.example/weight=3", nil, "only /pri=N is allowed"},
		{"a.example:0", nil, "the port must be between 1 and 65535"},
		{"a.example:70000", nil, "the port must be between 1 and 65535"},
		{"a.example:x", nil, "the port must be between 1 and 65535"},
		{"a.example, a.example:2525", nil, "The host a.example is already using the standard port."},
		{"a.example:2525, A.example", nil, "The host A.example already has an alternate port (2525)."},
		{"user@a.example", nil, "is not a valid host name"},
	} {
		got, err := parseRouteHosts(tc.in, nil)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: %+v %v, want %+v", tc.in, got, err, tc.want)
			continue
		}
		// What is printed parses back to the same route.
		back, err := parseRouteHosts(formatRoute(got), nil)
		if err != nil || !reflect.DeepEqual(back, got) {
			t.Errorf("%q: reformatted %q gives %+v %v", tc.in, formatRoute(got), back, err)
		}
	}
}

func TestSmtproutesBatchAndRoundTrip(t *testing.T) {
	cfg := testConfig(t, "destinations: {sts.example: {tls: required, mta_sts: true}}\n")
	for _, args := range [][]string{
		{"new", "partner.example", "relay1.partner.example/pri=0,relay2.partner.example:2525/pri=10"},
		{"new", ".lists.example", "USEDNS"},
		{"new", "junk.example", "/dev/null"},
		{"new", "smart.example", "relay.provider.example", "--mta-sts"},
		{"new", "all", "fallback.example/pri=5"},
	} {
		if _, e, c := runCmd(t, "smtproutes", cfg, "", args...); c != 0 {
			t.Fatalf("%v: %s", args, e)
		}
	}
	out, _, _ := runCmd(t, "smtproutes", cfg, "", "new", "sts.example", "relay.example")
	mustContain(t, out, "Note: sts.example has MTA-STS on; MTA-STS is not enforced for domains that have SMTP Routes configured.")
	raw, eff := pending(t, cfg)
	want := &config.Route{Hosts: []config.RouteHost{{Host: "relay1.partner.example"}, {Host: "relay2.partner.example", Port: 2525, Priority: 10}}}
	if !reflect.DeepEqual(raw.SMTPRoutes["partner.example"], want) || !raw.SMTPRoutes[".lists.example"].UseDNS ||
		!raw.SMTPRoutes["junk.example"].Discard || !raw.SMTPRoutes["smart.example"].MTASTS || raw.SMTPRoutes["ALL"] == nil {
		t.Fatalf("routes: %+v", raw.SMTPRoutes)
	}
	if n, _ := eff.RouteFor("x.lists.example"); n != ".lists.example" {
		t.Fatalf("RouteFor: %s", n)
	}

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"new", "partner.example", "x.example"}, 1, "The value partner.example is already in the routing table."},
		{[]string{"new", "ALL", "x.example"}, 1, "There is already a default route set."},
		{[]string{"new", "a.example", "USEDNS", "--mta-sts"}, 1, "--mta-sts is only for routes with hosts"},
		{[]string{"new", "a.example", "x.example/pri=70000"}, 1, "the priority must be between 0 and 65535"},
		{[]string{"new", "a b", "x.example"}, 1, "is not a valid domain"},
		{[]string{"delete", "nosuch.example"}, 1, `"nosuch.example" was not found in the routing table.`},
		{[]string{"edit", "junk.example", "add", "x.example"}, 1, "/dev/null must be used by itself; use REPLACE."},
		{[]string{"edit", "partner.example", "add", "relay1.partner.example:26"}, 1, "already using the standard port"},
		{[]string{"new"}, 2, "new needs DOMAIN and DESTINATIONS"},
	} {
		_, e, c := runCmd(t, "smtproutes", cfg, "", tc.args...)
		if c != tc.code || !strings.Contains(e, tc.want) {
			t.Errorf("%v: %d %q; want %d %q", tc.args, c, e, tc.code, tc.want)
		}
	}
	if _, e, c := runCmd(t, "smtproutes", cfg, "", "edit", "partner.example", "add", "relay3.partner.example/pri=20"); c != 0 {
		t.Fatal(e)
	}
	if _, e, c := runCmd(t, "smtproutes", cfg, "", "edit", "partner.example", "remove", "relay1.partner.example"); c != 0 {
		t.Fatal(e)
	}
	raw, _ = pending(t, cfg)
	if got := formatRoute(raw.SMTPRoutes["partner.example"]); got != "relay2.partner.example:2525/pri=10, relay3.partner.example/pri=20" {
		t.Fatalf("after edit: %s", got)
	}
	out, _, _ = runCmd(t, "smtproutes", cfg, "", "print")
	mustContain(t, out, "partner.example", "USEDNS", "/dev/null", "route hosts' policy", "ALL")

	// Export → import elsewhere → export: identical, and the same routes.
	dir := filepath.Dir(cfg)
	f1, f2 := filepath.Join(dir, "r1.txt"), filepath.Join(dir, "r2.txt")
	if _, e, c := runCmd(t, "smtproutes", cfg, "", "export", f1); c != 0 {
		t.Fatal(e)
	}
	cfg2 := testConfig(t, "")
	if _, e, c := runCmd(t, "smtproutes", cfg2, "", "import", f1); c != 0 {
		t.Fatal(e)
	}
	runCmd(t, "smtproutes", cfg2, "", "export", f2)
	b1, _ := os.ReadFile(f1)
	b2, _ := os.ReadFile(f2)
	raw2, _ := pending(t, cfg2)
	if !bytes.Equal(b1, b2) || !reflect.DeepEqual(raw.SMTPRoutes, raw2.SMTPRoutes) {
		t.Fatalf("round trip:\n%s\n---\n%s", b1, b2)
	}
	mustContain(t, string(b1), "smart.example relay.provider.example/pri=0 mta_sts\n", "ALL fallback.example/pri=5\n")
	bad := filepath.Join(dir, "bad.txt")
	os.WriteFile(bad, []byte("# routes\na.example x.example\n\nb.example x.example/pri=x\n"), 0o600)
	_, e, c := runCmd(t, "smtproutes", cfg2, "", "import", bad)
	if c != 1 || !strings.Contains(e, "Import failed. "+bad+":4:") {
		t.Fatalf("%d %s", c, e)
	}
	os.WriteFile(bad, []byte("a.example x.example\nA.example y.example\n"), 0o600)
	_, e, _ = runCmd(t, "smtproutes", cfg2, "", "import", bad)
	mustContain(t, e, bad+":2: The value a.example is already in the routing table.")

	if _, e, c := runCmd(t, "smtproutes", cfg, "", "clear"); c != 0 {
		t.Fatal(e)
	}
	raw, _ = pending(t, cfg)
	if len(raw.SMTPRoutes) != 0 {
		t.Fatal("clear")
	}
}

func TestSmtproutesInteractive(t *testing.T) {
	cfg := testConfig(t, "")
	script := lines(
		"NEW", "a b", "partner.example", "x.example, USEDNS", "relay1.example/pri=0, relay2.example:2525/pri=10", "maybe", "n",
		"NEW", "partner.example", "ALL", "USEDNS",
		"NEW", "all",
		"",
		"EDIT", "nosuch.example", "partner.example", "ADD", "relay3.example/pri=99999", "relay3.example/pri=5",
		"EDIT", "partner.example", "REMOVE", "9", "1",
		"DELETE", "ALL", "y",
		"PRINT",
	)
	out, e, c := runCmd(t, "smtproutes", cfg, script)
	if c != 0 {
		t.Fatal(e)
	}
	mustContain(t, out,
		"Enter the domain for which you want to set up a permanent route.",
		"Enter the destination hosts, separated by commas, which you want mail for partner.example to be delivered.",
		`"a b" is not a valid domain`,
		"USEDNS must be used by itself.",
		"Please answer Y or N.",
		"The value partner.example is already in the routing table.",
		"There is already a default route set.",
		`"nosuch.example" was not found in the routing table.`,
		"- ADD - Add a new destination host.",
		"the priority must be between 0 and 65535",
		"The host 9 is not a destination of this route.",
		"Are you sure you want to delete the default route? [N]>",
		"Use the commit command to make these changes active.",
	)
	raw, _ := pending(t, cfg)
	if got := formatRoute(raw.SMTPRoutes["partner.example"]); got != "relay2.example:2525/pri=10, relay3.example/pri=5" || raw.SMTPRoutes["ALL"] != nil {
		t.Fatalf("routes: %q %+v", got, raw.SMTPRoutes)
	}
	runCmd(t, "smtproutes", cfg, lines("CLEAR", "y"))
	raw, _ = pending(t, cfg)
	if len(raw.SMTPRoutes) != 0 {
		t.Fatal("clear")
	}
}
