package config

import (
	"strings"
	"testing"
	"time"

	"outpost/internal/tlspolicy"
)

func TestDefaults(t *testing.T) {
	c := Default()
	if len(c.Listeners) != 1 || c.Listeners[0].Address != "127.0.0.1:2525" {
		t.Fatalf("listener %+v", c.Listeners)
	}
	if got := c.Listeners[0].Networks; len(got) != 2 || got[0].String() != "127.0.0.0/8" || got[1].String() != "::1/128" {
		t.Fatalf("relay networks %v", got)
	}
	if c.DataDir != "./outpost-data" || c.Delivery.Port != 25 || len(c.DNS.Resolvers) == 0 {
		t.Fatalf("defaults %+v", c)
	}
	b := c.Bounce
	if b.MaxRetries != 100 || b.MaxQueueLifetime.D() != 72*time.Hour || b.InitialRetry.D() != time.Minute || b.MaxRetryInterval.D() != time.Hour {
		t.Fatalf("bounce defaults %+v", b)
	}
	p := c.Profile("anything.example")
	if p.TLS != tlspolicy.Preferred || p.MaxConcurrency != 500 || p.MaxMessagesPerConnection != 50 || p.MTASTS {
		t.Fatalf("default profile %+v", p)
	}
}

func TestIssueExampleParses(t *testing.T) {
	c, err := Parse([]byte(`hostname: outpost.example.net
data_dir: ./outpost-data
listeners:
  - address: 127.0.0.1:2525
    relay_from: [127.0.0.0/8, "::1/128"]
    max_message_size: 35MB
    max_recipients: 1000
dns:
  resolvers: ["127.0.0.53:53"]
tls:
  ca_file: extra-ca.pem
  system_roots: true
delivery:
  port: 25
destinations:
  default: {tls: preferred}
  example.com: {tls: required-verify}
  .sub.example: {tls: required, max_concurrency: 10}
`), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Listeners[0].MaxMessageSize != 35<<20 {
		t.Fatalf("size %d", c.Listeners[0].MaxMessageSize)
	}
	for _, tc := range []struct {
		domain string
		mode   tlspolicy.Mode
		entry  string
		conc   int
	}{
		{"example.com", tlspolicy.RequiredVerify, "example.com", 500},
		{"EXAMPLE.com.", tlspolicy.RequiredVerify, "example.com", 500},
		{"a.example.com", tlspolicy.Preferred, "default", 500},
		{"x.sub.example", tlspolicy.Required, ".sub.example", 10},
		{"y.x.sub.example", tlspolicy.Required, ".sub.example", 10},
		{"sub.example", tlspolicy.Preferred, "default", 500},
	} {
		p := c.Profile(tc.domain)
		if p.TLS != tc.mode || p.Name != tc.entry || p.MaxConcurrency != tc.conc {
			t.Errorf("%s: got %+v", tc.domain, p)
		}
	}
}

func TestErrorsNameFileAndLine(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"hostname: a\nhostname: b\n", `t.yaml: line 2: mapping key "hostname" already defined at line 1`},
		{"listeners:\n  - address: 127.0.0.1:1\n    relay_fromm: []\n", `t.yaml: line 3: unknown key "relay_fromm"`},
		{"destinations:\n  default: {tls: bogus}\n", `t.yaml: line 2: unknown TLS mode "bogus"`},
		{"delivery:\n  connect_timeout: soon\n", `t.yaml: line 2: "soon" is not a duration`},
		{"listeners:\n  - address: 127.0.0.1:1\n    max_message_size: big\n", `t.yaml: line 3: "big" is not a size`},
		{"destinations:\n  a.example: {max_concurrency: 0}\n", `destinations.a.example.max_concurrency 0: want 1-1000`},
		{"destinations:\n  a.example: {tls: none, mta_sts: true}\n", `mta_sts: true needs TLS`},
		{"listeners:\n  - address: nohostport\n", `listeners[0].address "nohostport": want host:port`},
		{"listeners:\n  - address: 127.0.0.1:1\n    relay_from: [notanet]\n", `relay_from "notanet"`},
		{"listeners:\n  - address: 127.0.0.1:1\n    max_recipients: 50\n", `requires at least 100`},
		{"a: 1\n---\nb: 2\n", `line 1: unknown key "a"`},
	} {
		_, err := Parse([]byte(tc.yaml), "t.yaml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

func TestWarnings(t *testing.T) {
	c, err := Parse([]byte("destinations:\n  default: {mta_sts: true}\n"), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) == 0 || !strings.Contains(strings.Join(c.Warnings, "\n"), "mta_sts") {
		t.Fatalf("no warning for MTA-STS on the default profile: %v", c.Warnings)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"35MB": 35 << 20, "10KB": 10 << 10, "1GiB": 1 << 30, "1048576": 1 << 20, "64k": 64 << 10} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("%s: %d %v", in, got, err)
		}
	}
	if _, err := ParseSize("-1"); err == nil {
		t.Error("negative size accepted")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("hostname: a\nlisteners:\n  - address: 127.0.0.1:25\n"))
	f.Add([]byte("destinations:\n  default: {tls: required-verify, mta_sts: true}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.yaml")
		if err == nil && (c.Destinations["default"] == nil || len(c.Listeners) == 0) {
			t.Fatal("valid config without default profile or listener")
		}
	})
}

func TestDANEResolverWarning(t *testing.T) {
	for _, tc := range []struct {
		resolver string
		warn     bool
	}{{"127.0.0.1:53", false}, {"192.0.2.53:53", true}} {
		c, err := Parse([]byte("dns:\n  resolvers: [\""+tc.resolver+"\"]\ndestinations:\n  example.com:\n    tls: required\n    dane: opportunistic\n"), "t.yaml")
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Contains(strings.Join(c.Warnings, "\n"), "not on loopback")
		if got != tc.warn {
			t.Errorf("%s: warnings %q", tc.resolver, c.Warnings)
		}
	}
}
