package main

import (
	"testing"

	outpostconfig "outpost/internal/config"
)

// The generated configuration must stay loadable by the product's strict
// config parser (unknown keys are errors there).
func TestGeneratedOutpostConfigParses(t *testing.T) {
	o := &outpostSide{cfg: &config{}, env: &env{dnsAddr: "127.0.0.1:5353", caFile: "/tmp/ca.pem", sinkPort: 2525}}
	y := o.configYAML(t.TempDir(), "127.0.0.1:2526")
	c, err := outpostconfig.Parse([]byte(y), "bench.yaml")
	if err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
	if c.Delivery.Port != 2525 || c.TLS.UseSystemRoots() || len(c.DNS.Resolvers) != 1 {
		t.Fatalf("parsed %+v", c)
	}
	if p := c.Profile("bench.test"); p.TLS.String() != "required-verify" {
		t.Fatalf("profile %+v", p)
	}
}
