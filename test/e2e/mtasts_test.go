package e2e

// MTA-STS (RFC 8461, issue 3) end to end: the real binary, a real HTTPS
// policy host on 127.0.3.x:443 (certificates from the test CA, one server
// for every mta-sts.<domain> of a test, chosen by SNI and Host), the
// in-process DNS zone with the _mta-sts TXT records, go-smtp receivers with
// good and bad TLS, and a real CONNECT proxy.

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"outpost/internal/testpki"
)

// ---- DNS zone additions ----

// stsTXT sets the TXT records of _mta-sts.<domain> (none: removes them).
func (z *zone) stsTXT(domain string, recs ...string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	name := dns.Fqdn("_mta-sts." + domain)
	if len(recs) == 0 {
		delete(z.txt, name)
		return
	}
	z.txt[name] = recs
}

// stsReplaceMX replaces domain's MX records.
func (z *zone) stsReplaceMX(domain string, pref uint16, host string) {
	z.mu.Lock()
	delete(z.mx, dns.Fqdn(domain))
	z.mu.Unlock()
	z.addMX(domain, pref, host)
}

// ---- the HTTPS policy host ----

// policyServer serves https://mta-sts.<domain>/.well-known/mta-sts.txt for
// every domain of a test from ip:443, picking the certificate by SNI and
// the page by Host.
type policyServer struct {
	t    *testing.T
	ca   *testpki.CA
	addr string

	mu    sync.Mutex
	pages map[string]http.HandlerFunc // by host name mta-sts.<domain>
	certs map[string]*tls.Certificate // by SNI; generated from the CA when absent
	hits  map[string]int              // requests per host name
	srv   *http.Server
	done  chan struct{}
}

// newPolicyServer listens on ip:443, or, when that is taken (another run
// of the suite at the same time), on another 127.x address.
func newPolicyServer(t *testing.T, ca *testpki.CA, ip string) *policyServer {
	p := &policyServer{t: t, ca: ca,
		pages: map[string]http.HandlerFunc{}, certs: map[string]*tls.Certificate{}, hits: map[string]int{}}
	var err error
	for i := 0; i < 50; i++ {
		if i > 0 {
			ip = fmt.Sprintf("127.%d.%d.%d", 100+mrand.IntN(150), mrand.IntN(256), 1+mrand.IntN(250))
		}
		var ln net.Listener
		if ln, err = net.Listen("tcp", net.JoinHostPort(ip, "443")); err == nil {
			ln.Close()
			p.addr = net.JoinHostPort(ip, "443")
			break
		}
	}
	if p.addr == "" {
		t.Fatalf("policy host: cannot listen on port 443: %v (binding port 443 needs root or CAP_NET_BIND_SERVICE)", err)
	}
	p.start()
	t.Cleanup(p.stop)
	return p
}

func (p *policyServer) start() {
	p.t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("policy host: listen %s: %v (binding port 443 needs root or CAP_NET_BIND_SERVICE)", p.addr, err)
	}
	cfg := &tls.Config{GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if c := p.certs[h.ServerName]; c != nil {
			return c, nil
		}
		c, err := p.ca.Leaf([]string{h.ServerName}, testpki.LeafOptions{})
		if err != nil {
			return nil, err
		}
		p.certs[h.ServerName] = &c
		return &c, nil
	}}
	srv := &http.Server{Handler: http.HandlerFunc(p.serve), ErrorLog: nil, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	p.mu.Lock()
	p.srv, p.done = srv, done
	p.mu.Unlock()
	go func() { srv.Serve(tls.NewListener(ln, cfg)); close(done) }()
}

func (p *policyServer) stop() {
	p.mu.Lock()
	srv, done := p.srv, p.done
	p.srv = nil
	p.mu.Unlock()
	if srv != nil {
		srv.Close()
		<-done
	}
}

func (p *policyServer) serve(w http.ResponseWriter, r *http.Request) {
	host := strings.ToLower(r.Host)
	p.mu.Lock()
	p.hits[host]++
	h := p.pages[host]
	p.mu.Unlock()
	if h == nil || r.URL.Path != "/.well-known/mta-sts.txt" {
		http.NotFound(w, r)
		return
	}
	h(w, r)
}

// page sets the handler for mta-sts.<domain>.
func (p *policyServer) page(domain string, h http.HandlerFunc) {
	p.mu.Lock()
	p.pages["mta-sts."+domain] = h
	p.mu.Unlock()
}

// policy serves body as a proper policy (200, text/plain).
func (p *policyServer) policy(domain, body string) {
	p.page(domain, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, body)
	})
}

func (p *policyServer) setCert(domain string, c tls.Certificate) {
	p.mu.Lock()
	p.certs["mta-sts."+domain] = &c
	p.mu.Unlock()
}

func (p *policyServer) hitCount(domain string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hits["mta-sts."+domain]
}

func enforcePolicy(mx ...string) string {
	return policyText("enforce", mx...)
}

func policyText(mode string, mx ...string) string {
	s := "version: STSv1\nmode: " + mode + "\n"
	for _, m := range mx {
		s += "mx: " + m + "\n"
	}
	return s + "max_age: 604800\n"
}

// ---- a test world with MTA-STS ----

type stsWorld struct {
	*world
	ps       *policyServer
	policyIP string
}

// newSTSWorld makes DNS, the CA and the policy host on policyIP:443; the
// receivers share one port free on every ip.
func newSTSWorld(t *testing.T, policyIP string, ips ...string) *stsWorld {
	w := &stsWorld{world: newWorld(t, ips...)}
	w.ps = newPolicyServer(t, w.ca, policyIP)
	w.policyIP, _, _ = net.SplitHostPort(w.ps.addr)
	return w
}

// publish gives domain a TXT record with id, an A record for its policy
// host and the policy body.
func (w *stsWorld) publish(domain, id, body string) {
	w.z.stsTXT(domain, "v=STSv1; id="+id+";")
	w.z.mu.Lock()
	_, ok := w.z.a[dns.Fqdn("mta-sts."+domain)]
	w.z.mu.Unlock()
	if !ok {
		w.z.addA("mta-sts."+domain, w.policyIP)
	}
	if body != "" {
		w.ps.policy(domain, body)
	}
}

// mx adds an MX host for domain at ip with a receiver using tlsCfg (nil:
// no STARTTLS).
func (w *stsWorld) mx(t *testing.T, domain string, pref uint16, host, ip string, tlsCfg *tls.Config) *sink {
	w.z.addMX(domain, pref, host)
	w.z.addA(host, ip)
	return newSink(t, fmt.Sprintf("%s:%d", ip, w.port), tlsCfg)
}

func (w *stsWorld) leafTLS(t *testing.T, names []string, o testpki.LeafOptions) *tls.Config {
	return serverTLS(w.mustLeaf(t, names, &o))
}

func stsConfig(w *stsWorld, lifetime, destinations, extra string) string {
	return fmt.Sprintf(`hostname: outpost.test
data_dir: %%DATA%%
listeners:
  - address: %%SMTP%%
    relay_from: [127.0.0.0/8]
dns:
  resolvers: [%q]
  timeout: 2s
tls:
  ca_file: %s
  system_roots: false
delivery:
  port: %d
bounce:
  initial_retry: 1s
  max_retry_interval: 2s
  max_queue_lifetime: %s
logs:
  level: debug
destinations:
  default: {tls: preferred}
%s%s`, w.z.addr, w.caFile, w.port, lifetime, destinations, extra)
}

func submit(t *testing.T, d *daemon, from, to string, extra ...string) {
	t.Helper()
	out, err := swaks(t, d.smtp, append([]string{"--from", from, "--to", to, "--header", "Subject: sts " + to}, extra...)...)
	if err != nil {
		t.Fatalf("swaks to %s: %v\n%s", to, err, out)
	}
}

// countLines counts mail-log lines equal to line, once the log has been
// flushed (every 100 ms).
func (d *daemon) countLines(line string) int {
	time.Sleep(300 * time.Millisecond)
	n := 0
	for _, l := range d.logLines() {
		if l == line {
			n++
		}
	}
	return n
}

// waitCount waits until at least n mail-log lines match re.
func (d *daemon) waitCount(re string, n int, timeout time.Duration) {
	d.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(timeout)
	got := 0
	for time.Now().Before(deadline) {
		got = 0
		for _, l := range d.logLines() {
			if rx.MatchString(l) {
				got++
			}
		}
		if got >= n {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.t.Fatalf("%d mail-log line(s) match %q within %v, want %d; log:\n%s", got, re, timeout, n, d.mailLog())
}

// requireLines waits (the mail log is flushed every 100 ms) until every
// line is in the mail log.
func (d *daemon) requireLines(t *testing.T, lines ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, l := range lines {
		for !d.hasLine(l) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if !d.hasLine(l) {
			t.Errorf("missing mail-log line %q", l)
		}
	}
	if t.Failed() {
		t.Logf("mail log:\n%s", d.mailLog())
	}
}

// noMail fails if s received anything.
func noMail(t *testing.T, name string, s *sink) {
	t.Helper()
	if n := s.count(); n != 0 {
		s.mu.Lock()
		defer s.mu.Unlock()
		t.Errorf("%s received %d message(s) it must never get: %+v", name, n, s.msgs[0].Rcpts)
	}
}

func squash(s string) string { return strings.Join(strings.Fields(s), " ") }

// ---- tests ----

// Enforce: only the MX host matching the policy receives mail, over TLS
// 1.2 or higher with a verified certificate; a better-preference MX outside
// the policy never receives anything. The exact appliance lines are logged,
// and the cache administration commands see the policy.
func TestMTASTSEnforceDeliversOnlyToMatchingMX(t *testing.T) {
	w := newSTSWorld(t, "127.0.3.1", "127.0.3.2", "127.0.3.3")
	const D = "enforce.test"
	w.publish(D, "20250101T000000", enforcePolicy("mx.enforce.test"))
	// Preference 5 wins without MTA-STS; its certificate is valid for its
	// own name, so only the policy keeps mail away from it.
	rogue := w.mx(t, D, 5, "mx.rogue.test", "127.0.3.2", w.leafTLS(t, []string{"mx.rogue.test"}, testpki.LeafOptions{}))
	good := w.mx(t, D, 10, "mx.enforce.test", "127.0.3.3", w.leafTLS(t, []string{"mx.enforce.test"}, testpki.LeafOptions{}))
	w.d = startOutpost(t, t.TempDir(), stsConfig(w, "1h", "  "+D+": {mta_sts: true}\n", ""))

	for i := 0; i < 3; i++ {
		submit(t, w.d, "a@sender.test", fmt.Sprintf("u%d@%s", i, D))
	}
	for i := 0; i < 3; i++ {
		m := good.wait(t, 20*time.Second)
		if m.TLS == nil || m.TLS.Version < tls.VersionTLS12 {
			t.Fatalf("delivered without TLS 1.2+: %+v", m.TLS)
		}
	}
	w.d.waitCount(`^Info: MTA-STS policy for the domain \(enforce\.test\) Successful\.$`, 1, 10*time.Second)
	w.d.requireLines(t,
		"Info: Successfully fetched MTA-STS TXT record for domain(enforce.test)",
		"Info: Applying MTA-STS policy for the domain (enforce.test)",
		"Info: MTA-STS policy for the domain (enforce.test) Successful.",
		"Debug: Fetch MTA-STS policy for the domain(enforce.test)",
		"Debug: DNS query: Q(_mta-sts.enforce.test, 'TXT')",
		"Info: MTA-STS policy for the domain (enforce.test) Failed: MX mx.rogue.test is not in the policy",
	)
	if n := w.d.countLines("Debug: Fetch MTA-STS policy for the domain(enforce.test)"); n != 1 {
		t.Errorf("policy fetched %d times for 3 messages, want 1 (the cache)", n)
	}
	if w.ps.hitCount(D) != 1 {
		t.Errorf("policy host got %d requests, want 1", w.ps.hitCount(D))
	}
	if strings.Contains(w.d.mailLog(), "address 127.0.3.2 ") {
		t.Error("outpost connected to the MX outside the policy")
	}
	noMail(t, "mx.rogue.test", rogue)

	// Cache administration against the running daemon.
	out, err := w.d.cli("mta-sts", "cache", "list")
	if err != nil || !regexp.MustCompile(`(?m)^enforce\.test\s+enforce\s+20250101T000000\s+mx\.enforce\.test\s`).MatchString(out) || !strings.Contains(out, "1 cached policy(ies)") {
		t.Fatalf("cache list: %v\n%s", err, out)
	}
	out, err = w.d.cli("mta-sts", "cache", "show", D)
	var e struct {
		Domain string
		ID     string
	}
	if err != nil || json.Unmarshal([]byte(out), &e) != nil || !strings.Contains(out, "mx.enforce.test") || !strings.Contains(out, "20250101T000000") {
		t.Fatalf("cache show: %v\n%s", err, out)
	}
	out, err = w.d.cli("mta-sts", "cache", "flush", D)
	if err != nil || !strings.Contains(out, "flushed") {
		t.Fatalf("cache flush: %v\n%s", err, out)
	}
	if out, _ := w.d.cli("mta-sts", "cache", "list"); !strings.Contains(out, "0 cached policy(ies)") {
		t.Fatalf("cache not empty after flush:\n%s", out)
	}
	if out, err := w.d.cli("mta-sts", "cache", "show", D); err == nil {
		t.Fatalf("cache show after flush succeeded:\n%s", out)
	}
	// After the flush the next message fetches the policy again.
	submit(t, w.d, "a@sender.test", "again@"+D)
	good.wait(t, 20*time.Second)
	if n := w.ps.hitCount(D); n != 2 {
		t.Errorf("policy host got %d requests after the flush, want 2", n)
	}
	// refresh looks up and fetches now.
	out, err = w.d.cli("mta-sts", "cache", "refresh", D)
	if err != nil || !strings.Contains(out, "20250101T000000") || w.ps.hitCount(D) != 3 {
		t.Errorf("cache refresh: %v, %d policy requests, want 3\n%s", err, w.ps.hitCount(D), out)
	}
	noMail(t, "mx.rogue.test", rogue)
}

// Enforce with an MX outside the policy, or an MX with bad TLS: the
// message is deferred (4.4.8 / 4.7.x), never sent, and bounced at queue
// expiry with a DSN that says MTA-STS blocked it.
func TestMTASTSEnforceFailuresDeferThenBounce(t *testing.T) {
	w := newSTSWorld(t, "127.0.3.10", "127.0.3.11", "127.0.3.12", "127.0.3.13", "127.0.3.14", "127.0.3.15", "127.0.3.16", "127.0.3.17")
	senderBox := w.mx(t, "sender.test", 10, "mx.sender.test", "127.0.3.11", w.leafTLS(t, []string{"mx.sender.test"}, testpki.LeafOptions{}))
	now := time.Now()
	type tc struct {
		domain, mxHost, ip string
		tls                *tls.Config
		code               string // enhanced code in the Delayed line
		reason             string // in the failure line
	}
	cases := []tc{
		{"mismatch.test", "mx.elsewhere.test", "127.0.3.12", w.leafTLS(t, []string{"mx.elsewhere.test"}, testpki.LeafOptions{}), `4\.4\.8`, ""},
		{"expired.test", "mx.expired.test", "127.0.3.13", w.leafTLS(t, []string{"mx.expired.test"}, testpki.LeafOptions{NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour)}), `4\.7\.5`, "certificate of mx.expired.test not valid: certificate has expired"},
		{"wrongname.test", "mx.wrongname.test", "127.0.3.14", w.leafTLS(t, []string{"other.wrongname.test"}, testpki.LeafOptions{}), `4\.7\.5`, "certificate of mx.wrongname.test not valid: peer cert does not match domain"},
		{"selfsigned.test", "mx.selfsigned.test", "127.0.3.15", w.leafTLS(t, []string{"mx.selfsigned.test"}, testpki.LeafOptions{SelfSigned: true}), `4\.7\.5`, "certificate of mx.selfsigned.test not valid: self signed certificate"},
		{"nostarttls.test", "mx.nostarttls.test", "127.0.3.16", nil, `4\.7\.4`, "STARTTLS not offered by mx.nostarttls.test"},
		{"tls11.test", "mx.tls11.test", "127.0.3.17", nil, `4\.7\.5`, "TLS version below 1.2 at mx.tls11.test"},
	}
	tls11 := w.leafTLS(t, []string{"mx.tls11.test"}, testpki.LeafOptions{})
	tls11.MinVersion, tls11.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	cases[5].tls = tls11

	var dests strings.Builder
	sinks := map[string]*sink{}
	for _, c := range cases {
		pattern := c.mxHost
		if c.domain == "mismatch.test" {
			pattern = "*.mismatch.test"
		}
		w.publish(c.domain, "1", enforcePolicy(pattern))
		sinks[c.domain] = w.mx(t, c.domain, 10, c.mxHost, c.ip, c.tls)
		fmt.Fprintf(&dests, "  %s: {mta_sts: true}\n", c.domain)
	}
	w.d = startOutpost(t, t.TempDir(), stsConfig(w, "6s", dests.String(), ""))
	for _, c := range cases {
		submit(t, w.d, "alice@sender.test", "bob@"+c.domain)
	}
	for _, c := range cases {
		w.d.waitLog(fmt.Sprintf(`^Info: Delayed: DCID \d+ MID \d+ From: <alice@sender\.test> To: <bob@%s> RID 0 - %s - .*MTA-STS policy for %s blocked delivery`,
			regexp.QuoteMeta(c.domain), c.code, regexp.QuoteMeta(c.domain)), 20*time.Second)
		if c.reason != "" {
			w.d.waitLog(fmt.Sprintf(`^Info: MTA-STS policy for the domain \(%s\) Failed: %s$`, regexp.QuoteMeta(c.domain), regexp.QuoteMeta(c.reason)), 5*time.Second)
		} else {
			w.d.waitLog(`^Info: MTA-STS policy for the domain \(mismatch\.test\) Failed: MX mx\.elsewhere\.test is not in the policy$`, 5*time.Second)
		}
	}
	// Every one bounces at expiry with a DSN naming MTA-STS.
	dsns := map[string]string{}
	deadline := time.After(40 * time.Second)
	for len(dsns) < len(cases) {
		select {
		case m := <-senderBox.ch:
			if m.From != "" || len(m.Rcpts) != 1 || m.Rcpts[0] != "alice@sender.test" {
				t.Fatalf("unexpected message at the sender's MX: %+v", m)
			}
			fr := regexp.MustCompile(`Final-Recipient: rfc822; ?bob@(\S+)`).FindStringSubmatch(m.Data)
			if fr == nil {
				t.Fatalf("DSN without Final-Recipient:\n%s", m.Data)
			}
			dsns[fr[1]] = m.Data
		case <-deadline:
			t.Fatalf("got %d of %d DSNs; log:\n%s", len(dsns), len(cases), w.d.mailLog())
		}
	}
	for _, c := range cases {
		dsn := squash(dsns[c.domain])
		for _, want := range []string{"Action: failed", "Status: 5.", "MTA-STS policy for " + c.domain + " blocked delivery"} {
			if !strings.Contains(dsn, want) {
				t.Errorf("%s: DSN lacks %q:\n%s", c.domain, want, dsns[c.domain])
			}
		}
		w.d.waitLog(fmt.Sprintf(`^Info: Bounced: DCID \d+ MID \d+ From: <alice@sender\.test> To: <bob@%s> RID 0 - 5\.`, regexp.QuoteMeta(c.domain)), 5*time.Second)
		noMail(t, c.mxHost, sinks[c.domain])
	}
	if strings.Contains(w.d.mailLog(), "Successful.") {
		t.Error("an MTA-STS connection was logged as successful")
	}
}

// Testing mode delivers under the profile's mode, even to a certificate
// that would fail, and logs what would have failed. Policy-host problems
// (redirect, 404, wrong content type, oversize body, timeout, certificate
// for another name, invalid policy) mean "no policy": delivery proceeds
// under the profile's mode — here preferred, to an MX whose certificate
// would fail an enforce policy.
func TestMTASTSTestingModeAndNoPolicyCasesDeliver(t *testing.T) {
	w := newSTSWorld(t, "127.0.3.20", "127.0.3.21")
	const ip = "127.0.3.21"
	// One receiver for every domain: its certificate names none of the MX
	// hosts, so any enforce policy would block it.
	wrong := w.leafTLS(t, []string{"wrong.name.test"}, testpki.LeafOptions{})
	rcv := newSink(t, fmt.Sprintf("%s:%d", ip, w.port), wrong)

	domains := []string{"testing.test", "redirect.test", "notfound.test", "ctype.test", "oversize.test", "slow.test", "badcert.test", "invalid.test"}
	for _, d := range domains {
		w.publish(d, "1", enforcePolicy("mx."+d))
		w.z.addMX(d, 10, "mx."+d)
		w.z.addA("mx."+d, ip)
	}
	w.ps.policy("testing.test", policyText("testing", "mx.testing.test"))
	w.ps.page("redirect.test", func(rw http.ResponseWriter, r *http.Request) {
		http.Redirect(rw, r, "https://mta-sts.enforce.test/.well-known/mta-sts.txt", http.StatusMovedPermanently)
	})
	w.ps.page("notfound.test", http.NotFound)
	w.ps.page("ctype.test", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/html")
		io.WriteString(rw, enforcePolicy("mx.ctype.test"))
	})
	w.ps.page("oversize.test", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/plain")
		io.WriteString(rw, enforcePolicy("mx.oversize.test")+strings.Repeat("# padding\n", 7000)) // > 64 KiB
	})
	w.ps.page("slow.test", func(rw http.ResponseWriter, r *http.Request) {
		select { // longer than mta_sts.fetch_timeout (2s)
		case <-time.After(6 * time.Second):
		case <-r.Context().Done():
			return
		}
		rw.Header().Set("Content-Type", "text/plain")
		io.WriteString(rw, enforcePolicy("mx.slow.test"))
	})
	w.ps.setCert("badcert.test", w.mustLeaf(t, []string{"mta-sts.other.test"}, nil))
	w.ps.policy("invalid.test", "version: STSv1\nmode: enforce\nmax_age: 604800\n") // no mx
	var dests strings.Builder
	for _, d := range domains {
		fmt.Fprintf(&dests, "  %s: {mta_sts: true}\n", d)
	}
	w.d = startOutpost(t, t.TempDir(), stsConfig(w, "1h", dests.String(), "mta_sts:\n  fetch_timeout: 2s\n"))
	for _, d := range domains {
		submit(t, w.d, "a@sender.test", "u@"+d)
	}
	got := map[string]bool{}
	for range domains {
		m := rcv.wait(t, 30*time.Second)
		if m.TLS == nil {
			t.Errorf("%v delivered in plaintext although TLS was offered", m.Rcpts)
		}
		got[strings.SplitN(m.Rcpts[0], "@", 2)[1]] = true
	}
	for _, d := range domains {
		if !got[d] {
			t.Errorf("nothing delivered for %s", d)
		}
	}
	w.d.requireLines(t,
		"Info: Applying MTA-STS policy for the domain (testing.test)",
		"Info: MTA-STS policy for the domain (testing.test) in testing mode would have failed: certificate of mx.testing.test not valid: verify error: peer cert does not match domain",
		"Debug: Request to fetch STS policy failed due to a connection timeout., for the domain slow.test",
	)
	for _, d := range domains[1:] {
		w.d.requireLines(t,
			"Info: Successfully fetched MTA-STS TXT record for domain("+d+")",
			"Info: Failure encountered while fetching MTA-STS policy for the domain("+d+")")
		if w.d.hasLine("Info: Applying MTA-STS policy for the domain (" + d + ")") {
			t.Errorf("%s: a policy was applied although the fetch failed", d)
		}
	}
	if w.ps.hitCount("enforce.test") != 0 {
		t.Error("the redirect was followed")
	}
	if w.ps.hitCount("badcert.test") != 0 {
		t.Error("the policy was requested from a host whose certificate does not name mta-sts.badcert.test")
	}
	if out, _ := w.d.cli("mta-sts", "cache", "list"); !strings.Contains(out, "testing.test") || !strings.Contains(out, "1 cached policy(ies)") {
		t.Errorf("only testing.test should be cached:\n%s", out)
	}
}

// The policy cache survives a restart; a fetch failure keeps the cached
// policy; a new TXT id makes Outpost fetch the new policy.
func TestMTASTSCacheRestartFetchFailureAndIDChange(t *testing.T) {
	w := newSTSWorld(t, "127.0.3.30", "127.0.3.31", "127.0.3.32")
	const D = "cache.test"
	w.publish(D, "v1", enforcePolicy("mx.cache.test"))
	one := w.mx(t, D, 10, "mx.cache.test", "127.0.3.31", w.leafTLS(t, []string{"mx.cache.test"}, testpki.LeafOptions{}))
	w.z.addA("mx2.cache.test", "127.0.3.32")
	two := newSink(t, fmt.Sprintf("127.0.3.32:%d", w.port), w.leafTLS(t, []string{"mx2.cache.test"}, testpki.LeafOptions{}))
	w.d = startOutpost(t, t.TempDir(), stsConfig(w, "1h", "  "+D+": {mta_sts: true}\n", ""))
	d := w.d

	// 1. Fetch and cache the policy.
	submit(t, d, "a@sender.test", "first@"+D)
	one.wait(t, 20*time.Second)
	d.waitLog(`^Info: MTA-STS policy for the domain \(cache\.test\) Successful\.$`, 10*time.Second)
	const fetchLine = "Debug: Fetch MTA-STS policy for the domain(cache.test)"
	if n := d.countLines(fetchLine); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}

	// 2. The policy host goes away, the domain's MX moves to a host the
	// cached policy does not list, Outpost restarts: the cached enforce
	// policy still applies (checked against the unchanged TXT id), the
	// forced recheck (RFC 8461 §5.1) fails to fetch and keeps it, and the
	// message is held.
	d.stop()
	w.ps.stop()
	w.z.stsReplaceMX(D, 10, "mx2.cache.test")
	d.start()
	submit(t, d, "a@sender.test", "second@"+D)
	d.waitLog(`^Info: Delayed: DCID 0 MID \d+ From: <a@sender\.test> To: <second@cache\.test> RID 0 - 4\.4\.8 - .*MTA-STS policy for cache\.test blocked delivery: no MX host matches the policy`, 20*time.Second)
	d.waitLog(`^Debug: Valid cache entry found for the domain \(cache\.test\)\.$`, 5*time.Second)
	d.waitCount(`^Info: Failure encountered while fetching MTA-STS policy for the domain\(cache\.test\)$`, 1, 10*time.Second)
	time.Sleep(3 * time.Second) // a few retries
	noMail(t, "mx2.cache.test", two)
	if out, err := d.cli("mta-sts", "cache", "show", D); err != nil || !strings.Contains(out, `"v1"`) || !strings.Contains(out, "mx.cache.test") {
		t.Fatalf("cached policy not kept after the failed fetch: %v\n%s", err, out)
	}
	fetches := d.countLines(fetchLine)

	// 3. The domain publishes a new policy under a new id. After a restart
	// the first lookup sees the new id, fetches, and the held message goes
	// to the newly listed MX.
	w.ps.start()
	w.publish(D, "v2", enforcePolicy("mx2.cache.test"))
	d.stop()
	d.start()
	m := two.wait(t, 30*time.Second)
	if m.Rcpts[0] != "second@cache.test" || m.TLS == nil {
		t.Fatalf("unexpected delivery %+v", m)
	}
	if n := d.countLines(fetchLine); n != fetches+1 {
		t.Errorf("fetches after the id change: %d, want %d", n, fetches+1)
	}
	if out, err := d.cli("mta-sts", "cache", "show", D); err != nil || !strings.Contains(out, `"v2"`) || !strings.Contains(out, "mx2.cache.test") {
		t.Fatalf("cache not updated to v2: %v\n%s", err, out)
	}
	if n := one.count(); n != 1 {
		t.Errorf("mx.cache.test received %d messages, want only the first", n)
	}
}

// connectProxy is a minimal HTTP CONNECT proxy with its own host table.
type connectProxy struct {
	ln    net.Listener
	hosts map[string]string // host name → IP
	mu    sync.Mutex
	seen  []string // CONNECT targets
}

func newConnectProxy(t *testing.T, hosts map[string]string) *connectProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &connectProxy{ln: ln, hosts: hosts}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.handle(c)
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return p
}

func (p *connectProxy) handle(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	p.mu.Lock()
	p.seen = append(p.seen, req.Method+" "+req.Host)
	p.mu.Unlock()
	if req.Method != http.MethodConnect {
		io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
		return
	}
	host, port, err := net.SplitHostPort(req.Host)
	ip, ok := p.hosts[strings.ToLower(host)]
	if err != nil || !ok {
		io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	up, err := net.DialTimeout("tcp", net.JoinHostPort(ip, port), 5*time.Second)
	if err != nil {
		io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	defer up.Close()
	io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, br); up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { io.Copy(c, up); done <- struct{}{} }()
	<-done
	<-done
}

func (p *connectProxy) targets() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.seen...)
}

// With mta_sts.proxy the policy is fetched through a CONNECT proxy. The
// policy host's name is only known to the proxy (not in Outpost's DNS), so
// the fetch can only succeed through it; TLS still runs end to end.
func TestMTASTSFetchThroughConnectProxy(t *testing.T) {
	w := newSTSWorld(t, "127.0.3.40", "127.0.3.41", "127.0.3.42")
	const D = "proxied.test"
	w.z.stsTXT(D, "v=STSv1; id=p1")
	w.ps.policy(D, enforcePolicy("mx.proxied.test"))
	proxy := newConnectProxy(t, map[string]string{"mta-sts." + D: w.policyIP})
	rogue := w.mx(t, D, 5, "mx.rogue.test", "127.0.3.41", w.leafTLS(t, []string{"mx.rogue.test"}, testpki.LeafOptions{}))
	good := w.mx(t, D, 10, "mx.proxied.test", "127.0.3.42", w.leafTLS(t, []string{"mx.proxied.test"}, testpki.LeafOptions{}))
	w.d = startOutpost(t, t.TempDir(), stsConfig(w, "1h", "  "+D+": {mta_sts: true}\n",
		fmt.Sprintf("mta_sts:\n  proxy: http://%s\n  fetch_timeout: 5s\n", proxy.ln.Addr())))
	submit(t, w.d, "a@sender.test", "u@"+D)
	m := good.wait(t, 20*time.Second)
	if m.TLS == nil || m.TLS.Version < tls.VersionTLS12 {
		t.Fatalf("delivered without TLS 1.2+: %+v", m.TLS)
	}
	w.d.requireLines(t,
		"Debug: Requesting MTA-STS policy fetch via proxy",
		"Debug: Fetch MTA-STS policy for the domain(proxied.test)",
		"Info: Successfully fetched MTA-STS TXT record for domain(proxied.test)",
		"Info: Applying MTA-STS policy for the domain (proxied.test)",
		"Info: MTA-STS policy for the domain (proxied.test) Successful.",
	)
	if got := proxy.targets(); len(got) != 1 || got[0] != "CONNECT mta-sts.proxied.test:443" {
		t.Errorf("proxy saw %q, want one CONNECT mta-sts.proxied.test:443", got)
	}
	if w.ps.hitCount(D) != 1 {
		t.Errorf("policy host got %d requests, want 1", w.ps.hitCount(D))
	}
	noMail(t, "mx.rogue.test", rogue)
}
