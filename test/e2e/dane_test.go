package e2e

// DANE (RFC 7672, issue 5) end to end: the real binary against a real
// DNSSEC test bed (internal/testdnssec: knotd serving zones signed with
// ldns-signzone, unbound validating with the test trust anchors, both on
// 127.0.0.1), go-smtp receivers on 127.0.9.x presenting certificates from
// the test CA, TLSA records computed from those certificates with
// dane.Record. Outpost's only resolver is the rig's unbound.

import (
	"crypto/tls"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"outpost/internal/dane"
	"outpost/internal/testdnssec"
	"outpost/internal/testpki"
)

// daneWorld is one DANE test setup: the CA, the receivers' port and the
// DNSSEC rig (started by start, once the records are known).
type daneWorld struct {
	ca     *testpki.CA
	caFile string
	port   int
	rig    *testdnssec.Rig
	d      *daemon
}

func newDANEWorld(t *testing.T, ips ...string) *daneWorld {
	w := &daneWorld{}
	w.ca, w.caFile = pki(t)
	w.port = freePortOn(t, ips...)
	return w
}

// leaf issues a certificate for names from the test CA.
func (w *daneWorld) leaf(t *testing.T, names ...string) tls.Certificate {
	t.Helper()
	c, err := w.ca.Leaf(names, testpki.LeafOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// withCA appends the CA certificate to the chain the server sends (DANE-TA
// needs the trust anchor in the chain, RFC 7672 §3.1.2).
func (w *daneWorld) withCA(c tls.Certificate) tls.Certificate {
	c.Certificate = append(append([][]byte(nil), c.Certificate...), w.ca.Cert.Raw)
	return c
}

// tlsaEE is the DANE-EE 3 1 1 record of c; tlsaTA the DANE-TA 2 0 1 record
// of the test CA.
func tlsaEE(c tls.Certificate) string {
	return dane.Record(c.Leaf, dane.DANEEE, dane.SelectorSPKI, dane.MatchSHA256).Text()
}

func (w *daneWorld) tlsaTA() string {
	return dane.Record(w.ca.Cert, dane.DANETA, dane.SelectorCert, dane.MatchSHA256).Text()
}

// sink starts a receiver on ip presenting cert.
func (w *daneWorld) sink(t *testing.T, ip string, cert tls.Certificate) *sink {
	return newSink(t, fmt.Sprintf("%s:%d", ip, w.port), serverTLS(cert))
}

func daneConfig(w *daneWorld, lifetime, extra string) string {
	life := ""
	if lifetime != "" {
		life = "\n  max_queue_lifetime: " + lifetime
	}
	return fmt.Sprintf(`hostname: outpost.test
data_dir: %%DATA%%
listeners:
  - address: %%SMTP%%
    relay_from: [127.0.0.0/8]
dns:
  resolvers: [%q]
  timeout: 3s
tls:
  ca_file: %s
  system_roots: false
delivery:
  port: %d
bounce:
  initial_retry: 1s
  max_retry_interval: 2s%s
logs:
  level: debug
%s`, w.rig.Resolver, w.caFile, w.port, life, extra)
}

// noLine fails if a mail-log line matches re.
func (d *daemon) noLine(t *testing.T, re string) {
	t.Helper()
	rx := regexp.MustCompile(re)
	for _, l := range d.logLines() {
		if rx.MatchString(l) {
			t.Errorf("unexpected mail-log line %q (matches %q)", l, re)
		}
	}
}

// TestDANEDeliveryOutcomes: one daemon, one DNSSEC rig, a destination per
// case of the DANE decision table that delivery reaches.
func TestDANEDeliveryOutcomes(t *testing.T) {
	const (
		ipEE, ipBad, ipTA, ipBogus, ipDown = "127.0.9.1", "127.0.9.2", "127.0.9.3", "127.0.9.4", "127.0.9.5"
		ipOpp, ipBoth, ipRouted, ipRelay   = "127.0.9.6", "127.0.9.7", "127.0.9.8", "127.0.9.9"
	)
	w := newDANEWorld(t, ipEE, ipBad, ipTA, ipBogus, ipDown, ipOpp, ipBoth, ipRouted, ipRelay)
	ps := newPolicyServer(t, w.ca, "127.0.9.20")
	policyIP := strings.Split(ps.addr, ":")[0]

	eeCert := w.leaf(t, "mx.ee.dane.test")
	badCert := w.leaf(t, "mx.bad.dane.test")
	other := w.leaf(t, "mx.bad.dane.test") // its key is the one published
	taCert := w.withCA(w.leaf(t, "mx.ta.dane.test"))
	bogusCert := w.leaf(t, "mx.bogus.dane.test")
	downCert := w.leaf(t, "mx.down.dane.test")
	bothCert := w.leaf(t, "mx.both.dane.test")

	w.rig = testdnssec.Start(t,
		testdnssec.Zone{Name: "dane.test", Signed: true, Records: []string{
			"ee IN MX 10 mx.ee", "mx.ee IN A " + ipEE, "_25._tcp.mx.ee IN TLSA " + tlsaEE(eeCert),
			"bad IN MX 10 mx.bad", "mx.bad IN A " + ipBad, "_25._tcp.mx.bad IN TLSA " + tlsaEE(other),
			"ta IN MX 10 mx.ta", "mx.ta IN A " + ipTA, "_25._tcp.mx.ta IN TLSA " + w.tlsaTA(),
			"bogus IN MX 10 mx.bogus", "mx.bogus IN A " + ipBogus, "_25._tcp.mx.bogus IN TLSA " + tlsaEE(bogusCert),
			"down IN MX 10 mx.down", "mx.down IN A " + ipDown,
			"both IN MX 10 mx.both", "mx.both IN A " + ipBoth, "_25._tcp.mx.both IN TLSA " + tlsaEE(bothCert),
			"mta-sts.both IN A " + policyIP, `_mta-sts.both IN TXT "v=STSv1; id=20250101;"`,
			"routed IN MX 10 mx.routed", "mx.routed IN A " + ipRouted,
		},
			Bogus:    []string{"_25._tcp.mx.bogus TLSA"},
			ServFail: []string{"_25._tcp.mx.down"},
		},
		testdnssec.Zone{Name: "insecure.test", Records: []string{
			"opp IN MX 10 mx.opp", "mx.opp IN A " + ipOpp,
			"relay IN A " + ipRelay,
			"sender IN MX 10 mx.sender", "mx.sender IN A " + ipRelay,
		}},
	)
	// The enforce policy does not list mx.both.dane.test: only DANE's
	// precedence (RFC 8461 §2) lets the mail through.
	ps.policy("both.dane.test", enforcePolicy("elsewhere.dane.test"))

	ee := w.sink(t, ipEE, eeCert)
	bad := w.sink(t, ipBad, badCert)
	ta := w.sink(t, ipTA, taCert)
	bogus := w.sink(t, ipBogus, bogusCert)
	down := w.sink(t, ipDown, downCert)
	opp := w.sink(t, ipOpp, w.leaf(t, "mx.opp.insecure.test"))
	both := w.sink(t, ipBoth, bothCert)
	routedMX := w.sink(t, ipRouted, w.leaf(t, "mx.routed.dane.test"))
	relay := w.sink(t, ipRelay, w.leaf(t, "relay.insecure.test"))

	w.d = startOutpost(t, t.TempDir(), daneConfig(w, "", `smtp_routes:
  routed.dane.test:
    hosts: [{host: relay.insecure.test}]
destinations:
  default: {tls: preferred}
  ee.dane.test: {dane: opportunistic, tls: preferred}
  bad.dane.test: {dane: opportunistic, tls: preferred}
  ta.dane.test: {dane: mandatory, tls: preferred}
  bogus.dane.test: {dane: opportunistic, tls: preferred}
  down.dane.test: {dane: mandatory, tls: preferred}
  opp.insecure.test: {dane: opportunistic, tls: preferred}
  both.dane.test: {dane: opportunistic, mta_sts: true, tls: preferred}
  routed.dane.test: {dane: mandatory, tls: preferred}
`))
	d := w.d
	for _, to := range []string{"u@ee.dane.test", "u@bad.dane.test", "u@ta.dane.test", "u@bogus.dane.test",
		"u@down.dane.test", "u@opp.insecure.test", "u@both.dane.test", "u@routed.dane.test"} {
		submit(t, d, "alice@sender.insecure.test", to)
	}

	t.Run("DANE-EE 3 1 1 match delivers", func(t *testing.T) {
		m := ee.wait(t, 20*time.Second)
		if m.TLS == nil || m.Rcpts[0] != "u@ee.dane.test" {
			t.Fatalf("received %+v (TLS %v)", m.Rcpts, m.TLS != nil)
		}
		d.waitLog(`^Info: DCID \d+ DANE SUCCESS for ee\.dane\.test: TLSA 3 1 1 matched MX\(mx\.ee\.dane\.test\)$`, 10*time.Second)
		d.requireLines(t, "Info: SECURE TLSA record found for MX(mx.ee.dane.test) in ee.dane.test (3 1 1)")
	})
	t.Run("DANE-TA 2 0 1 delivers under mandatory", func(t *testing.T) {
		m := ta.wait(t, 20*time.Second)
		if m.TLS == nil {
			t.Fatal("delivered without TLS")
		}
		d.waitLog(`^Info: DCID \d+ DANE SUCCESS for ta\.dane\.test: TLSA 2 0 1 matched MX\(mx\.ta\.dane\.test\)$`, 10*time.Second)
	})
	t.Run("DANE precedes an MTA-STS enforce policy that does not list the MX", func(t *testing.T) {
		both.wait(t, 20*time.Second)
		d.waitLog(`^Info: DCID \d+ DANE SUCCESS for both\.dane\.test: TLSA 3 1 1 matched MX\(mx\.both\.dane\.test\)$`, 10*time.Second)
		// The enforce policy does not list the MX: had it been applied,
		// nothing would have been delivered. DANE authenticated every MX,
		// so the policy is not even looked up (nor logged as applied).
		if d.hasLine("Info: Applying MTA-STS policy for the domain (both.dane.test)") {
			t.Error("MTA-STS applied although DANE authenticated every MX")
		}
	})
	t.Run("insecure zone, opportunistic: the TLS mode", func(t *testing.T) {
		m := opp.wait(t, 20*time.Second)
		if m.TLS == nil {
			t.Fatal("tls: preferred, STARTTLS offered, but delivered in plaintext")
		}
		d.requireLines(t, "Info: DANE not applicable for MX(mx.opp.insecure.test) in opp.insecure.test: the MX records are not DNSSEC-signed")
		d.noLine(t, `DANE (SUCCESS|failure) for opp\.insecure\.test`)
	})
	t.Run("an SMTP route switches DANE off", func(t *testing.T) {
		m := relay.wait(t, 20*time.Second)
		if m.Rcpts[0] != "u@routed.dane.test" {
			t.Fatalf("relay received %+v", m.Rcpts)
		}
		d.waitLog(fmt.Sprintf(`^Info: New SMTP DCID \d+ interface \S+ address %s port %d$`, regexp.QuoteMeta(ipRelay), w.port), 5*time.Second)
		d.noLine(t, `DANE.*routed\.dane\.test`)
		d.noLine(t, `^Debug: DNS query: Q\(routed\.dane\.test, 'MX'\)$`)
		noMail(t, "the MX of the routed domain", routedMX)
	})
	t.Run("TLSA mismatch defers 4.7.5, never plaintext", func(t *testing.T) {
		d.waitLog(`^Info: DCID \d+ DANE failure for bad\.dane\.test: MX\(mx\.bad\.dane\.test\) no TLSA record matched the server certificate chain \(3 1 1\)$`, 20*time.Second)
		// Two attempts (retry 1 s), both refused the same way.
		d.waitCount(`^Info: Delayed: DCID \d+ MID \d+ From: <alice@sender\.insecure\.test> To: <u@bad\.dane\.test> RID 0 - 4\.7\.5 - `, 2, 20*time.Second)
		d.waitLog(`^Info: DCID \d+ TLS was required but could not be successfully negotiated$`, 5*time.Second)
		noMail(t, "the mismatching MX", bad)
	})
	t.Run("bogus TLSA signature: the MX is skipped, deferred", func(t *testing.T) {
		d.waitLog(`^Info: DANE: skipping MX\(mx\.bogus\.dane\.test\) in bogus\.dane\.test: TLSA lookup failed: bogus \(SERVFAIL\)$`, 20*time.Second)
		d.waitLog(`^Info: DANE deferred delivery for bogus\.dane\.test: 4\.7\.5 TLSA lookup failed: bogus \(SERVFAIL\)`, 10*time.Second)
		d.waitLog(`^Info: Delayed: DCID \d+ MID \d+ From: <alice@sender\.insecure\.test> To: <u@bogus\.dane\.test> RID 0 - 4\.7\.5 - `, 10*time.Second)
		d.noLine(t, `address `+regexp.QuoteMeta(ipBogus)+` port`)
		noMail(t, "the MX with a bogus TLSA", bogus)
	})
	t.Run("TLSA SERVFAIL for a secure MX: not connected", func(t *testing.T) {
		d.waitLog(`^Info: DANE: skipping MX\(mx\.down\.dane\.test\) in down\.dane\.test: TLSA lookup failed: bogus \(SERVFAIL\)$`, 20*time.Second)
		d.waitLog(`^Info: Delayed: DCID \d+ MID \d+ From: <alice@sender\.insecure\.test> To: <u@down\.dane\.test> RID 0 - 4\.7\.5 - `, 10*time.Second)
		d.noLine(t, `address `+regexp.QuoteMeta(ipDown)+` port`)
		noMail(t, "the MX whose TLSA lookup fails", down)
	})
	// Nothing anywhere went out in plaintext.
	d.noLine(t, `(?i)plaintext`)
	if out, _ := d.cli("queue", "list"); !strings.Contains(out, "u@bad.dane.test") || !strings.Contains(out, "u@bogus.dane.test") || !strings.Contains(out, "u@down.dane.test") {
		t.Errorf("the DANE-deferred messages are not queued:\n%s", out)
	}
}

// TestDANEMandatoryInsecureZoneBouncesWithDSN: dane: mandatory for a
// domain whose zone is not signed defers (4.7.4) and, at the end of its
// short queue life, bounces with a DSN that says DANE was the reason. The
// sender's domain is in the same insecure zone, delivered under its own
// profile (no DANE).
func TestDANEMandatoryInsecureZoneBouncesWithDSN(t *testing.T) {
	const ipMand, ipSender = "127.0.9.30", "127.0.9.31"
	w := newDANEWorld(t, ipMand, ipSender)
	w.rig = testdnssec.Start(t,
		testdnssec.Zone{Name: "insecure.test", Records: []string{
			"mand IN MX 10 mx.mand", "mx.mand IN A " + ipMand,
			"sender IN MX 10 mx.sender", "mx.sender IN A " + ipSender,
		}},
	)
	mand := w.sink(t, ipMand, w.leaf(t, "mx.mand.insecure.test"))
	senderBox := w.sink(t, ipSender, w.leaf(t, "mx.sender.insecure.test"))
	w.d = startOutpost(t, t.TempDir(), daneConfig(w, "6s", `destinations:
  default: {tls: preferred}
  mand.insecure.test: {dane: mandatory, tls: preferred}
`))
	d := w.d
	start := time.Now()
	submit(t, d, "alice@sender.insecure.test", "u@mand.insecure.test", "--header", "Subject: needs DANE")
	d.waitLog(`^Info: DANE deferred delivery for mand\.insecure\.test: 4\.7\.4 DANE is mandatory but the MX records are not DNSSEC-signed`, 10*time.Second)
	d.waitLog(`^Info: Delayed: DCID \d+ MID \d+ From: <alice@sender\.insecure\.test> To: <u@mand\.insecure\.test> RID 0 - 4\.7\.4 - `, 10*time.Second)
	dsn := senderBox.wait(t, 30*time.Second)
	if el := time.Since(start); el < 5*time.Second {
		t.Errorf("bounced after %v, before the 6 s queue lifetime", el)
	}
	if dsn.From != "" || len(dsn.Rcpts) != 1 || dsn.Rcpts[0] != "alice@sender.insecure.test" {
		t.Fatalf("DSN envelope %+v", dsn)
	}
	for _, want := range []string{"Action: failed", "Final-Recipient: rfc822; u@mand.insecure.test", "DANE is mandatory but the MX records are not DNSSEC-signed", "Subject: needs DANE"} {
		if !strings.Contains(squash(dsn.Data), want) {
			t.Errorf("DSN lacks %q:\n%s", want, dsn.Data)
		}
	}
	d.waitLog(`^Info: Bounced: DCID \d+ MID \d+ From: <alice@sender\.insecure\.test> To: <u@mand\.insecure\.test> RID 0 - 5\.`, 10*time.Second)
	noMail(t, "the MX of the mandatory-DANE domain without DNSSEC", mand)
	d.noLine(t, `address `+regexp.QuoteMeta(ipMand)+` port`)
}

// TestDANECheckCommand: `outpost dane check` through the configured
// (validating, loopback) resolver: SUCCESS and exit 0 for a domain whose
// MX matches its TLSA record, FAILED and exit 1 for a mismatch, an
// unsigned zone and a bogus TLSA signature; a warning for a resolver
// that is not on loopback. No mail reaches any receiver.
func TestDANECheckCommand(t *testing.T) {
	const ipGood, ipBad, ipBogus, ipPlain = "127.0.9.40", "127.0.9.41", "127.0.9.42", "127.0.9.43"
	w := newDANEWorld(t, ipGood, ipBad, ipBogus, ipPlain)
	good := w.leaf(t, "mx.good.dane.test")
	badCert := w.leaf(t, "mx.bad.dane.test")
	bogusCert := w.leaf(t, "mx.bogus.dane.test")
	w.rig = testdnssec.Start(t,
		testdnssec.Zone{Name: "dane.test", Signed: true, Records: []string{
			"good IN MX 10 mx.good", "mx.good IN A " + ipGood, "_25._tcp.mx.good IN TLSA " + tlsaEE(good),
			"bad IN MX 10 mx.bad", "mx.bad IN A " + ipBad, "_25._tcp.mx.bad IN TLSA " + tlsaEE(w.leaf(t, "x")),
			"bogus IN MX 10 mx.bogus", "mx.bogus IN A " + ipBogus, "_25._tcp.mx.bogus IN TLSA " + tlsaEE(bogusCert),
		}, Bogus: []string{"_25._tcp.mx.bogus TLSA"}},
		testdnssec.Zone{Name: "insecure.test", Records: []string{"plain IN MX 10 mx.plain", "mx.plain IN A " + ipPlain}},
	)
	sinks := []*sink{w.sink(t, ipGood, good), w.sink(t, ipBad, badCert), w.sink(t, ipBogus, bogusCert),
		w.sink(t, ipPlain, w.leaf(t, "mx.plain.insecure.test"))}
	dir := t.TempDir()
	cfgPath := dir + "/outpost.yaml"
	cfg := strings.ReplaceAll(daneConfig(w, "", "destinations:\n  default: {tls: preferred, dane: opportunistic}\n"), "%DATA%", dir+"/data")
	cfg = strings.ReplaceAll(cfg, "%SMTP%", "127.0.0.1:0")
	writeFile(t, cfgPath, cfg)

	check := func(domain string) (string, int) {
		t.Helper()
		start := time.Now()
		out, err := exec.Command(binPath, "dane", "check", domain, "--config", cfgPath).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		t.Logf("outpost dane check %s (exit %d, %v):\n%s", domain, code, time.Since(start).Round(time.Millisecond), out)
		return string(out), code
	}
	want := func(out string, lines ...string) {
		t.Helper()
		for _, l := range lines {
			if !strings.Contains(out, l+"\n") {
				t.Errorf("output lacks the line %q", l)
			}
		}
	}

	out, code := check("good.dane.test")
	if code != 0 {
		t.Errorf("exit %d for a DANE-valid domain", code)
	}
	want(out,
		"SECURE MX record(mx.good.dane.test) found for good.dane.test",
		"SECURE A record ("+ipGood+") found for MX(mx.good.dane.test) in good.dane.test",
		fmt.Sprintf("Connecting to %s on port %d.", ipGood, w.port),
		fmt.Sprintf("Connected to %s from interface 127.0.0.1.", ipGood),
		"SECURE TLSA record found for MX(mx.good.dane.test) in good.dane.test",
		"Checking TLS connection.",
		"Certificate verification successful",
		"TLS connection succeeded good.dane.test.",
		"DANE SUCCESS for good.dane.test")
	if !regexp.MustCompile(`(?m)^TLS connection established: protocol TLSv1\.[23], cipher TLS_\w+\.$`).MatchString(out) {
		t.Error("no TLS connection established line")
	}
	if strings.Contains(out, "warning") {
		t.Error("a loopback resolver was warned about")
	}

	out, code = check("bad.dane.test")
	if code != 1 {
		t.Errorf("exit %d for a TLSA mismatch, want 1", code)
	}
	want(out, "SECURE TLSA record found for MX(mx.bad.dane.test) in bad.dane.test",
		"Certificate verification failed: no TLSA record matched the server certificate chain (3 1 1)",
		"DANE FAILED for bad.dane.test: no TLSA record matched the server certificate chain (3 1 1)")

	out, code = check("plain.insecure.test")
	if code != 1 {
		t.Errorf("exit %d for an unsigned zone, want 1", code)
	}
	want(out, "INSECURE MX record(mx.plain.insecure.test) found for plain.insecure.test",
		"DANE FAILED for plain.insecure.test: the MX records are not DNSSEC-signed")
	if strings.Contains(out, "Connecting to") {
		t.Error("connected to an MX that cannot be DANE-authenticated")
	}

	out, code = check("bogus.dane.test")
	if code != 1 {
		t.Errorf("exit %d for a bogus TLSA, want 1", code)
	}
	want(out, "SECURE A record ("+ipBogus+") found for MX(mx.bogus.dane.test) in bogus.dane.test",
		"BOGUS TLSA record lookup for MX(mx.bogus.dane.test) in bogus.dane.test: bogus (SERVFAIL)",
		"DANE FAILED for bogus.dane.test: TLSA lookup failed: bogus (SERVFAIL)")
	if strings.Contains(out, "Connecting to") {
		t.Error("connected to an MX whose TLSA lookup failed")
	}

	// A resolver that is not on loopback is warned about (the check then
	// fails: nothing answers there). 0.0.0.0 is not a loopback address,
	// but Linux delivers to it locally: nothing leaves the host.
	remote := strings.ReplaceAll(cfg, w.rig.Resolver, "0.0.0.0:1")
	remote = strings.Replace(remote, "timeout: 3s", "timeout: 1s", 1)
	writeFile(t, cfgPath, remote)
	out, code = check("good.dane.test")
	if code == 0 || !strings.Contains(out, "outpost: warning: resolver 0.0.0.0:1 is not on loopback") {
		t.Errorf("exit %d; want a failure with the loopback warning", code)
	}

	if out, _ := exec.Command(binPath, "dane", "--config", cfgPath).CombinedOutput(); !strings.Contains(string(out), "usage: outpost dane check DOMAIN") {
		t.Errorf("no usage:\n%s", out)
	}
	for i, s := range sinks {
		noMail(t, fmt.Sprintf("receiver %d", i), s)
	}
}
