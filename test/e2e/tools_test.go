package e2e

// The troubleshooting commands (issue 3, item 10, and the checker of item
// 8) run by the real binary from a configuration file, without the daemon:
// outpost mta-sts check, outpost dig, outpost tlsverify.

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"outpost/internal/testpki"
)

// toolConfig writes a configuration for the tools (no daemon runs) and
// returns its path.
func toolConfig(t *testing.T, w *stsWorld, resolver, destinations string) string {
	t.Helper()
	cfg := stsConfig(w, "1h", destinations, "mta_sts:\n  fetch_timeout: 3s\n")
	cfg = strings.ReplaceAll(cfg, "%SMTP%", "127.0.0.1:0")
	dir := t.TempDir()
	cfg = strings.ReplaceAll(cfg, "%DATA%", filepath.Join(dir, "data"))
	if resolver != "" {
		cfg = strings.Replace(cfg, fmt.Sprintf("resolvers: [%q]", w.z.addr), fmt.Sprintf("resolvers: [%q]", resolver), 1)
	}
	p := filepath.Join(dir, "outpost.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// tool runs the binary and returns its output and exit code.
func tool(t *testing.T, cfgPath string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binPath, append(args, "--config", cfgPath)...)
	// The race-enabled binary otherwise sleeps a second at a clean exit.
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("run %v: %v\n%s", args, err, out)
	return "", -1
}

func wantContains(t *testing.T, what, out string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(out, s) {
			t.Errorf("%s: output lacks %q:\n%s", what, s, out)
		}
	}
}

func TestToolsMTASTSCheck(t *testing.T) {
	w := newSTSWorld(t, "127.0.4.1", "127.0.4.2", "127.0.4.3")
	w.publish("good.test", "g1", enforcePolicy("mx.good.test"))
	good := w.mx(t, "good.test", 10, "mx.good.test", "127.0.4.2", w.leafTLS(t, []string{"mx.good.test"}, testpki.LeafOptions{}))
	w.publish("bad.test", "b1", enforcePolicy("mx.bad.test"))
	bad := w.mx(t, "bad.test", 10, "mx.bad.test", "127.0.4.3", w.leafTLS(t, []string{"other.bad.test"}, testpki.LeafOptions{}))
	cfg := toolConfig(t, w, "", "")

	out, code := tool(t, cfg, "mta-sts", "check", "good.test")
	if code != 0 {
		t.Fatalf("check good.test: exit %d, want 0\n%s", code, out)
	}
	wantContains(t, "check good.test", out,
		"One valid TXT record, id g1.",
		"Certificate valid for mta-sts.good.test",
		"Policy valid: mode enforce, 1 mx pattern(s).",
		"MX mx.good.test matches mx.good.test; STARTTLS TLS 1.3, certificate valid.",
		"Verdict: enforcing this policy WOULD deliver mail to good.test.")

	out, code = tool(t, cfg, "mta-sts", "check", "good.test", "--json")
	if code != 0 {
		t.Fatalf("check --json good.test: exit %d\n%s", code, out)
	}
	var rep struct {
		Domain string `json:"domain"`
		TXT    struct {
			ID string `json:"id"`
		} `json:"txt"`
		MX []struct {
			Host       string `json:"host"`
			Matches    bool   `json:"matches"`
			TLSVersion string `json:"tls_version"`
			CertValid  bool   `json:"cert_valid"`
		} `json:"mx"`
		Deliver bool `json:"would_deliver"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, out)
	}
	if !rep.Deliver || rep.Domain != "good.test" || rep.TXT.ID != "g1" || len(rep.MX) != 1 || !rep.MX[0].Matches || !rep.MX[0].CertValid || rep.MX[0].TLSVersion != "TLS 1.3" {
		t.Errorf("JSON report %+v", rep)
	}

	out, code = tool(t, cfg, "mta-sts", "check", "bad.test")
	if code != 1 {
		t.Fatalf("check bad.test: exit %d, want 1\n%s", code, out)
	}
	wantContains(t, "check bad.test", out,
		"MX mx.bad.test: certificate not valid for that name",
		"Verdict: enforcing MTA-STS would NOT deliver mail to bad.test")
	out, code = tool(t, cfg, "mta-sts", "check", "bad.test", "--json")
	if code != 1 || json.Unmarshal([]byte(out), &rep) != nil || rep.Deliver {
		t.Errorf("check --json bad.test: exit %d, would_deliver %v\n%s", code, rep.Deliver, out)
	}

	out, code = tool(t, cfg, "mta-sts", "check", "nothing.test")
	if code != 1 {
		t.Fatalf("check nothing.test: exit %d, want 1\n%s", code, out)
	}
	wantContains(t, "check nothing.test", out, "No TXT record at _mta-sts.nothing.test")

	// The probes stop after STARTTLS: no mail reaches the receivers.
	noMail(t, "mx.good.test", good)
	noMail(t, "mx.bad.test", bad)
}

// adResolver serves z's answers with the AD bit set, as a validating
// resolver does for DNSSEC-secure data.
func adResolver(t *testing.T, z *zone) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		z.ServeDNS(adWriter{w}, r)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

type adWriter struct{ dns.ResponseWriter }

func (a adWriter) WriteMsg(m *dns.Msg) error {
	m.AuthenticatedData = true
	return a.ResponseWriter.WriteMsg(m)
}

func TestToolsDig(t *testing.T) {
	w := newSTSWorld(t, "127.0.4.10", "127.0.4.11")
	w.z.addMX("dig.test", 10, "mx1.dig.test")
	w.z.addMX("dig.test", 20, "mx2.dig.test")
	w.z.addA("mx1.dig.test", "192.0.2.1")
	w.z.stsTXT("dig.test", "v=STSv1; id=d1;")
	w.z.mu.Lock()
	w.z.nullMX["null.test."] = true
	w.z.servfail["broken.test."] = true
	w.z.mu.Unlock()
	cfg := toolConfig(t, w, "", "")

	out, code := tool(t, cfg, "dig", "dig.test", "MX")
	if code != 0 {
		t.Fatalf("dig MX: exit %d\n%s", code, out)
	}
	wantContains(t, "dig MX", out, "dig.test.\tMX\t10 mx1.dig.test.\n", "dig.test.\tMX\t20 mx2.dig.test.\n",
		";; status: NOERROR, answers: 2, DNSSEC: not validated")

	out, code = tool(t, cfg, "dig", "_mta-sts.dig.test", "txt")
	if code != 0 {
		t.Fatalf("dig TXT: exit %d\n%s", code, out)
	}
	wantContains(t, "dig TXT", out, "_mta-sts.dig.test.\tTXT\t\"v=STSv1; id=d1;\"\n", ";; status: NOERROR, answers: 1")

	out, code = tool(t, cfg, "dig", "mx1.dig.test")
	if code != 0 {
		t.Fatalf("dig A: exit %d\n%s", code, out)
	}
	wantContains(t, "dig A", out, "mx1.dig.test.\tA\t192.0.2.1\n", ";; status: NOERROR, answers: 1")

	out, code = tool(t, cfg, "dig", "mx1.dig.test", "AAAA")
	if code != 0 {
		t.Fatalf("dig AAAA: exit %d\n%s", code, out)
	}
	wantContains(t, "dig AAAA", out, ";; status: NODATA, answers: 0")

	out, code = tool(t, cfg, "dig", "missing.dig.test", "MX")
	if code != 0 {
		t.Fatalf("dig NXDOMAIN: exit %d, want 0 (a definitive answer)\n%s", code, out)
	}
	wantContains(t, "dig NXDOMAIN", out, ";; status: NXDOMAIN, answers: 0")

	out, code = tool(t, cfg, "dig", "null.test", "MX")
	if code != 0 {
		t.Fatalf("dig null MX: exit %d\n%s", code, out)
	}
	wantContains(t, "dig null MX", out, "null.test.\tMX\t0 .", "null MX (RFC 7505)")

	out, code = tool(t, cfg, "dig", "broken.test", "MX")
	if code != 1 {
		t.Fatalf("dig SERVFAIL: exit %d, want 1\n%s", code, out)
	}
	wantContains(t, "dig SERVFAIL", out, ";; status: SERVFAIL")

	out, code = tool(t, cfg, "dig", "_25._tcp.mx1.dig.test", "TLSA")
	if code != 0 {
		t.Fatalf("dig TLSA: exit %d\n%s", code, out)
	}
	wantContains(t, "dig TLSA", out, ";; _25._tcp.mx1.dig.test. TLSA via", ";; status: NXDOMAIN")
	if out, code := tool(t, cfg, "dig", "mx1.dig.test", "TLSA"); code != 2 || !strings.Contains(out, "_PORT._tcp.HOST") {
		t.Errorf("dig TLSA without _25._tcp: exit %d\n%s", code, out)
	}

	// Through a validating resolver the AD bit is reported.
	cfgAD := toolConfig(t, w, adResolver(t, w.z), "")
	out, code = tool(t, cfgAD, "dig", "dig.test", "MX")
	if code != 0 {
		t.Fatalf("dig MX via AD resolver: exit %d\n%s", code, out)
	}
	wantContains(t, "dig MX (AD)", out, "DNSSEC: validated (AD)")

	// A resolver that does not answer: timeout, exit 1.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	cfgDead := strings.Replace(readFile(t, cfg), "timeout: 2s", "timeout: 300ms", 1)
	cfgDead = strings.Replace(cfgDead, fmt.Sprintf("resolvers: [%q]", w.z.addr), fmt.Sprintf("resolvers: [%q]", pc.LocalAddr().String()), 1)
	dead := filepath.Join(t.TempDir(), "dead.yaml")
	os.WriteFile(dead, []byte(cfgDead), 0o600)
	out, code = tool(t, dead, "dig", "dig.test", "MX")
	if code != 1 {
		t.Fatalf("dig with a dead resolver: exit %d, want 1\n%s", code, out)
	}
	wantContains(t, "dig timeout", out, ";; status: timeout")
}

func readFile(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestToolsTLSVerify(t *testing.T) {
	w := newSTSWorld(t, "127.0.4.20", "127.0.4.21", "127.0.4.22")
	// tv-good.test: the certificate names the domain, as required-verify wants.
	good := w.mx(t, "tv-good.test", 10, "mx.tv-good.test", "127.0.4.21", w.leafTLS(t, []string{"mx.tv-good.test", "tv-good.test"}, testpki.LeafOptions{}))
	// tv-bad.test: the certificate names only the MX host.
	bad := w.mx(t, "tv-bad.test", 10, "mx.tv-bad.test", "127.0.4.22", w.leafTLS(t, []string{"mx.tv-bad.test"}, testpki.LeafOptions{}))
	cfg := toolConfig(t, w, "", "  tv-good.test: {tls: required-verify}\n  tv-bad.test: {tls: required-verify}\n")

	out, code := tool(t, cfg, "tlsverify", "tv-good.test")
	if code != 0 {
		t.Fatalf("tlsverify tv-good.test: exit %d, want 0\n%s", code, out)
	}
	wantContains(t, "tlsverify tv-good.test", out,
		"TLS mode required-verify",
		"MX mx.tv-good.test (preference 10)",
		"address:      127.0.4.21:",
		"STARTTLS:     yes",
		"protocol:     TLSv1.3",
		"cipher:       TLS_",
		"SANs:         mx.tv-good.test, tv-good.test",
		"issuer:       CN=Outpost E2E CA",
		"verification: ok, chain trusted and valid for tv-good.test",
		"verdict:      would deliver under required-verify",
		"Result: 1 of 1 MX host(s) of tv-good.test would accept delivery under required-verify.")

	out, code = tool(t, cfg, "tlsverify", "tv-bad.test")
	if code != 1 {
		t.Fatalf("tlsverify tv-bad.test: exit %d, want 1\n%s", code, out)
	}
	wantContains(t, "tlsverify tv-bad.test", out,
		"SANs:         mx.tv-bad.test\n",
		"verification: FAILED for tv-bad.test: peer cert does not match domain",
		"verdict:      would defer: certificate verification failed: peer cert does not match domain",
		"Result: no MX host of tv-bad.test would accept delivery under required-verify.")

	// Under the default profile (preferred) the same host is fine; the
	// verification result is shown for information.
	out, code = tool(t, toolConfig(t, w, "", ""), "tlsverify", "tv-bad.test")
	if code != 0 {
		t.Fatalf("tlsverify tv-bad.test under preferred: exit %d, want 0\n%s", code, out)
	}
	wantContains(t, "tlsverify tv-bad.test (preferred)", out,
		"verification: ok, chain trusted and valid for mx.tv-bad.test (informational: preferred does not verify certificates)",
		"verdict:      would deliver under preferred")

	out, code = tool(t, cfg, "tlsverify", "nx.tv.test")
	if code != 1 {
		t.Fatalf("tlsverify NXDOMAIN: exit %d, want 1\n%s", code, out)
	}
	wantContains(t, "tlsverify nx", out, "does not exist (NXDOMAIN)")

	noMail(t, "mx.tv-good.test", good)
	noMail(t, "mx.tv-bad.test", bad)
}
