package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// IP address preference with receivers on 127.0.0.x and ::1, and virtual
// gateways (outbound source addresses) seen by the receiver. Receivers
// live on 127.0.0.70-127.0.0.79 and ::1; gateway sources are 127.0.0.22-24.

// TestIPPreferenceV4AndV6: one MX host with an A record (127.0.0.70) and an
// AAAA record (::1), a receiver on each on the same port.
func TestIPPreferenceV4AndV6(t *testing.T) {
	w := newWorld(t, "127.0.0.70", "::1", "127.0.0.71")
	w.z.addA("mx.dual.test", "127.0.0.70")
	w.z.addAAAA("mx.dual.test", "::1")
	v4 := newProbe(t, fmt.Sprintf("127.0.0.70:%d", w.port), 0)
	v6 := newProbe(t, fmt.Sprintf("[::1]:%d", w.port), 0)
	for _, d := range []string{"v6.test", "v4.test", "rv4.test", "rv6.test", "plain.test"} {
		w.z.addMX(d, 10, "mx.dual.test")
	}
	// A host with only an A record, for require-ipv6.
	w.z.addMX("only4.test", 10, "mx.only4.test")
	w.z.addA("mx.only4.test", "127.0.0.71")
	only4 := newProbe(t, fmt.Sprintf("127.0.0.71:%d", w.port), 0)
	w.d = startOutpost(t, t.TempDir(), baseConfig(w, `destinations:
  v6.test: {ip_preference: prefer-ipv6}
  v4.test: {ip_preference: prefer-ipv4}
  rv4.test: {ip_preference: require-ipv4}
  rv6.test: {ip_preference: require-ipv6}
  only4.test: {ip_preference: require-ipv6}
`))
	logOnFailure(t, w.d)
	for _, d := range []string{"v6.test", "v4.test", "rv4.test", "rv6.test", "plain.test", "only4.test"} {
		submitTo(t, w.d, "a@sender.test", "u@"+d)
	}
	v4.waitCount(t, 3, 20*time.Second)
	v6.waitCount(t, 2, 20*time.Second)
	for rcpt, want := range map[string]*probe{
		"u@v6.test": v6, "u@rv6.test": v6,
		"u@v4.test": v4, "u@rv4.test": v4,
		"u@plain.test": v4, // the default profile prefers IPv4
	} {
		other := v4
		if want == v4 {
			other = v6
		}
		if want.peerOf(rcpt) == "" || other.peerOf(rcpt) != "" {
			t.Errorf("%s went to the wrong address family (v4 peer %q, v6 peer %q)", rcpt, v4.peerOf(rcpt), v6.peerOf(rcpt))
		}
	}
	if p := v6.peerOf("u@v6.test"); p != "::1" {
		t.Errorf("IPv6 delivery came from %q, want ::1", p)
	}
	w.d.waitLog(fmt.Sprintf(`^Info: New SMTP DCID \d+ interface ::1 address ::1 port %d$`, w.port), 5*time.Second)
	// require-ipv6 with only an A record: deferred, never sent over IPv4.
	w.d.waitLog(`^Info: Delayed: DCID \d+ MID \d+ From: <a@sender\.test> To: <u@only4\.test> RID 0 - 4\.4\.4 - .*host has no address of the required family`, 10*time.Second)
	time.Sleep(1500 * time.Millisecond)
	if _, conns, _ := only4.stats(); len(conns) != 0 {
		t.Fatalf("require-ipv6 connected over IPv4 (%d connection(s))", len(conns))
	}
	if ok, out := queueHas(t, w.d, "u@only4.test"); !ok {
		t.Fatalf("require-ipv6 message not waiting in the queue:\n%s", out)
	}
}

// TestIPPreferenceFallsBackWithinPreference: prefer-ipv6 still delivers over
// IPv4 when nothing answers on the IPv6 address.
func TestIPPreferenceFallsBackWithinPreference(t *testing.T) {
	w := newWorld(t, "127.0.0.72", "::1")
	w.z.addMX("fb.test", 10, "mx.fb.test")
	w.z.addA("mx.fb.test", "127.0.0.72")
	w.z.addAAAA("mx.fb.test", "::1") // nothing listens there
	v4 := newProbe(t, fmt.Sprintf("127.0.0.72:%d", w.port), 0)
	w.d = startOutpost(t, t.TempDir(), baseConfig(w, `destinations:
  fb.test: {ip_preference: prefer-ipv6}
`))
	logOnFailure(t, w.d)
	submitTo(t, w.d, "a@sender.test", "u@fb.test")
	v4.waitCount(t, 1, 20*time.Second)
	w.d.waitLog(fmt.Sprintf(`^Info: Connection Error: DCID: \d+ IP: ::1 details: port %d `, w.port), 5*time.Second)
}

func TestGatewayListenerSelectsSource(t *testing.T) {
	w := newWorld(t, "127.0.0.73")
	w.z.addMX("gw.test", 10, "mx.gw.test")
	w.z.addA("mx.gw.test", "127.0.0.73")
	p := newProbe(t, fmt.Sprintf("127.0.0.73:%d", w.port), 0)
	cfg := baseConfig(w, `virtual_gateways:
  gw2: {source: 127.0.0.22}
`)
	cfg = strings.Replace(cfg, "    relay_from: [127.0.0.0/8]\n", "    relay_from: [127.0.0.0/8]\n    virtual_gateway: gw2\n", 1)
	w.d = startOutpost(t, t.TempDir(), cfg)
	logOnFailure(t, w.d)
	submitTo(t, w.d, "a@sender.test", "u@gw.test")
	p.waitCount(t, 1, 20*time.Second)
	if peer := p.peerOf("u@gw.test"); peer != "127.0.0.22" {
		t.Fatalf("receiver saw the connection from %q, want the gateway's 127.0.0.22", peer)
	}
	w.d.waitLog(fmt.Sprintf(`^Info: New SMTP DCID \d+ interface 127\.0\.0\.22 address 127\.0\.0\.73 port %d$`, w.port), 5*time.Second)
}

func TestGatewaySenderDomainsSelectSource(t *testing.T) {
	w := newWorld(t, "127.0.0.74")
	w.z.addMX("gw.test", 10, "mx.gw.test")
	w.z.addA("mx.gw.test", "127.0.0.74")
	p := newProbe(t, fmt.Sprintf("127.0.0.74:%d", w.port), 0)
	w.d = startOutpost(t, t.TempDir(), baseConfig(w, `virtual_gateways:
  gw3: {source: 127.0.0.23, sender_domains: [brand.test]}
  gw4: {source: 127.0.0.24, sender_domains: [Other.TEST]}
`))
	logOnFailure(t, w.d)
	submitTo(t, w.d, "x@brand.test", "brand@gw.test")
	submitTo(t, w.d, "y@other.test", "other@gw.test")
	submitTo(t, w.d, "z@plain.test", "plain@gw.test")
	p.waitCount(t, 3, 20*time.Second)
	for rcpt, want := range map[string]string{
		"brand@gw.test": "127.0.0.23",
		"other@gw.test": "127.0.0.24", // sender domains match case-insensitively
	} {
		if got := p.peerOf(rcpt); got != want {
			t.Errorf("%s arrived from %q, want %s", rcpt, got, want)
		}
	}
	// No gateway: the system's own source address, not a gateway's.
	if got := p.peerOf("plain@gw.test"); got == "" || got == "127.0.0.23" || got == "127.0.0.24" {
		t.Errorf("mail from a domain without a gateway arrived from %q", got)
	}
}

// TestGatewayLimitsApplyPerGateway: with limits_apply: virtual-gateway a
// destination's max_concurrency counts per gateway; with the default
// (system) it counts across all gateways.
func TestGatewayLimitsApplyPerGateway(t *testing.T) {
	w := newWorld(t, "127.0.0.75", "127.0.0.76")
	w.z.addMX("pergw.test", 10, "mx.pergw.test")
	w.z.addA("mx.pergw.test", "127.0.0.75")
	w.z.addMX("system.test", 10, "mx.system.test")
	w.z.addA("mx.system.test", "127.0.0.76")
	perGW := newProbe(t, fmt.Sprintf("127.0.0.75:%d", w.port), 300*time.Millisecond)
	system := newProbe(t, fmt.Sprintf("127.0.0.76:%d", w.port), 300*time.Millisecond)
	w.d = startOutpost(t, t.TempDir(), baseConfig(w, `virtual_gateways:
  gw3: {source: 127.0.0.23, sender_domains: [brand.test]}
  gw4: {source: 127.0.0.24, sender_domains: [other.test]}
destinations:
  pergw.test: {max_concurrency: 1, limits_apply: virtual-gateway}
  system.test: {max_concurrency: 1}
`))
	logOnFailure(t, w.d)
	for i := 0; i < 4; i++ {
		for _, from := range []string{"x@brand.test", "y@other.test"} {
			submitTo(t, w.d, from, fmt.Sprintf("u%d@pergw.test", i))
			submitTo(t, w.d, from, fmt.Sprintf("u%d@system.test", i))
		}
	}
	perGW.waitCount(t, 8, 30*time.Second)
	system.waitCount(t, 8, 30*time.Second)
	_, pconns, pmax := perGW.stats()
	_, sconns, smax := system.stats()
	if smax != 1 {
		t.Errorf("limits_apply system: %d simultaneous connections across gateways, want 1", smax)
	}
	if pmax > 2 {
		t.Errorf("limits_apply virtual-gateway: %d simultaneous connections with 2 gateways at 1 each", pmax)
	}
	if pmax < 2 {
		t.Errorf("limits_apply virtual-gateway: never 2 connections at once (one per gateway)")
	}
	peers := map[string]bool{}
	for _, c := range append(pconns, sconns...) {
		peers[c.Peer] = true
	}
	if !peers["127.0.0.23"] || !peers["127.0.0.24"] {
		t.Errorf("connections came from %v, want both gateway sources", peers)
	}
}
