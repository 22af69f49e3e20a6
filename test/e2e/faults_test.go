package e2e

// Fault injection at real receivers and resolvers (issue 7, item 3). Every
// case ends in the right state — retry then delivery, bounce with a DSN, or
// delivery to the next MX — with nothing lost and a mail-log line naming the
// cause. The matrix is in docs/reliability.md. A full disk is covered by
// diskfull_test.go (TestDiskBelowMinFreeRefusesAtMailFrom,
// TestDiskFullDuringDataGets451ThenRecovers); a cached MTA-STS policy kept
// while the policy host is gone by TestMTASTSCacheRestartFetchFailureAndIDChange.

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"outpost/internal/deliver"
	"outpost/internal/maillog"
	"outpost/internal/testpki"
	"outpost/internal/tlspolicy"
)

// ---- a resolver that can stop answering ----

// flakyDNS fronts a zone: in mode "drop" it never answers (a timeout), in
// "servfail" it answers SERVFAIL, otherwise it answers from the zone.
type flakyDNS struct {
	z    *zone
	mode atomic.Value // string
	addr string
}

func newFlakyDNS(t *testing.T, z *zone, mode string) *flakyDNS {
	f := &flakyDNS{z: z}
	f.mode.Store(mode)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = pc.LocalAddr().String()
	srv := &dns.Server{PacketConn: pc, Handler: f}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return f
}

func (f *flakyDNS) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	switch f.mode.Load().(string) {
	case "drop":
		return
	case "servfail":
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeServerFailure)
		w.WriteMsg(m)
		return
	}
	f.z.ServeDNS(w, r)
}

// ---- a scripted raw receiver ----

// rawMX is a hand-written SMTP receiver. fault(conn, stage) returns what to
// do at a stage of the conn-th connection (0-based): "" behaves normally, a
// reply line ("451 4.3.0 ...") is sent instead of the normal reply, "RST"
// (stage "body") resets the connection after part of the body, "HANG"
// (stage "dot") never answers the end of data, "TLSFAIL" (stage
// "starttls") answers 220 and then sends plaintext garbage instead of a
// TLS handshake. Stages: greeting, ehlo, starttls, mail, rcpt, data, body,
// dot.
type rawMX struct {
	addr   string
	tlsCfg *tls.Config // offer STARTTLS when set
	fault  func(conn int, stage string) string

	mu    sync.Mutex
	conns int
	mails []string // MAIL commands, prefixed "tls " or "plain "
	msgs  []string // bodies accepted with 250
	hung  chan struct{}
}

func newRawMX(t *testing.T, addr string, tlsCfg *tls.Config, fault func(int, string) string) *rawMX {
	t.Helper()
	m := &rawMX{addr: addr, tlsCfg: tlsCfg, fault: fault, hung: make(chan struct{})}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("raw MX listen %s: %v", addr, err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go m.serve(c)
		}
	}()
	t.Cleanup(func() { ln.Close(); close(m.hung) })
	return m
}

func (m *rawMX) counts() (conns, msgs int, mails []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.conns, len(m.msgs), append([]string(nil), m.mails...)
}

func (m *rawMX) serve(c net.Conn) {
	defer c.Close()
	m.mu.Lock()
	n := m.conns
	m.conns++
	m.mu.Unlock()
	f := func(stage string) string {
		if m.fault == nil {
			return ""
		}
		return m.fault(n, stage)
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	br := bufio.NewReader(c)
	out := func(s string) { io.WriteString(c, s+"\r\n") }
	secured := false
	if r := f("greeting"); r != "" {
		out(r)
	} else {
		out("220 raw.test ESMTP fault injector")
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		verb := strings.ToUpper(strings.SplitN(line, " ", 2)[0])
		switch verb {
		case "EHLO", "HELO":
			if r := f("ehlo"); r != "" {
				out(r)
				continue
			}
			ext := "250-raw.test\r\n250-8BITMIME\r\n"
			if m.tlsCfg != nil && !secured {
				ext += "250-STARTTLS\r\n"
			}
			out(ext + "250 SIZE 10000000")
		case "STARTTLS":
			if r := f("starttls"); r == "TLSFAIL" {
				out("220 2.0.0 go ahead")
				out("this is not a TLS server hello")
				return
			} else if r != "" {
				out(r)
				continue
			}
			out("220 2.0.0 go ahead")
			tc := tls.Server(c, m.tlsCfg)
			if tc.Handshake() != nil {
				return
			}
			c, br, secured = tc, bufio.NewReader(tc), true
		case "MAIL":
			m.mu.Lock()
			if secured {
				m.mails = append(m.mails, "tls "+line)
			} else {
				m.mails = append(m.mails, "plain "+line)
			}
			m.mu.Unlock()
			if r := f("mail"); r != "" {
				out(r)
			} else {
				out("250 2.1.0 ok")
			}
		case "RCPT":
			if r := f("rcpt"); r != "" {
				out(r)
			} else {
				out("250 2.1.5 ok")
			}
		case "DATA":
			if r := f("data"); r != "" {
				out(r)
				continue
			}
			out("354 go ahead")
			var body strings.Builder
			rst := f("body") == "RST"
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				body.WriteString(l)
				if rst && body.Len() > 100 {
					// Reset mid-DATA: linger 0 makes Close send RST.
					if tc, ok := c.(*net.TCPConn); ok {
						tc.SetLinger(0)
					}
					return
				}
			}
			r := f("dot")
			if r == "HANG" {
				<-m.hung
				return
			}
			if r != "" {
				out(r)
				continue
			}
			m.mu.Lock()
			m.msgs = append(m.msgs, body.String())
			m.mu.Unlock()
			out("250 2.0.0 queued")
		case "RSET", "NOOP":
			out("250 2.0.0 ok")
		case "QUIT":
			out("221 2.0.0 bye")
			return
		default:
			out("502 5.5.2 not implemented")
		}
	}
}

// onFirst applies a fault to the first connection only.
func onFirst(stage, reply string) func(int, string) string {
	return func(n int, s string) string {
		if n == 0 && s == stage {
			return reply
		}
		return ""
	}
}

// always applies a fault to every connection.
func always(stage, reply string) func(int, string) string {
	return func(_ int, s string) string {
		if s == stage {
			return reply
		}
		return ""
	}
}

func (m *rawMX) waitMsgs(t *testing.T, n int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if _, got, _ := m.counts(); got >= n {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	conns, got, _ := m.counts()
	t.Fatalf("raw MX %s: %d of %d messages within %v (%d connections)", m.addr, got, n, d, conns)
}

// ---- DNS timeout and SERVFAIL ----

func TestFaultDNSTimeoutAndServfailRetryThenDeliver(t *testing.T) {
	for _, mode := range []string{"drop", "servfail"} {
		t.Run(mode, func(t *testing.T) {
			ip := map[string]string{"drop": "127.0.0.91", "servfail": "127.0.0.92"}[mode]
			w := newWorld(t, ip)
			rcv := w.addDomain(t, "dnsfault.test", "mx.dnsfault.test", ip, nil)
			f := newFlakyDNS(t, w.z, mode)
			w.z.addr = f.addr // the daemon asks the flaky front only
			w.d = startOutpost(t, t.TempDir(), strings.Replace(baseConfig(w, `destinations:
  default: {tls: preferred}
`), "timeout: 2s", "timeout: 1s", 1))
			d := w.d
			submit(t, d, "alice@sender.test", "bob@dnsfault.test")
			l := d.waitLog(`^Info: Delayed: DCID \d+ MID \d+ From: <alice@sender\.test> To: <bob@dnsfault\.test> RID 0 - 4\.4\.3 - `, 30*time.Second)
			t.Logf("%s: %s", mode, l)
			cause := d.waitLog(`^Info: DNS Temporary Failure dnsfault\.test MX - `, 5*time.Second)
			t.Logf("%s: %s", mode, cause)
			if n := rcv.count(); n != 0 {
				t.Fatalf("delivered while DNS was failing: %d", n)
			}
			f.mode.Store("ok")
			m := rcv.wait(t, 30*time.Second)
			if len(m.Rcpts) != 1 || m.Rcpts[0] != "bob@dnsfault.test" {
				t.Fatalf("unexpected delivery %+v", m)
			}
			d.waitLog(`^Info: Message finished MID \d+ done$`, 10*time.Second)
		})
	}
}

// ---- TCP reset in the middle of DATA ----

func TestFaultTCPResetMidDATARetriesThenDelivers(t *testing.T) {
	const ip = "127.0.0.93"
	w := newWorld(t, ip)
	w.z.addMX("rst.test", 10, "mx.rst.test")
	w.z.addA("mx.rst.test", ip)
	mx := newRawMX(t, fmt.Sprintf("%s:%d", ip, w.port), nil, onFirst("body", "RST"))
	w.d = startOutpost(t, t.TempDir(), baseConfig(w, `destinations:
  default: {tls: preferred}
`))
	d := w.d
	submit(t, d, "alice@sender.test", "bob@rst.test", "--body", strings.Repeat("a line of body text to be cut by a reset\n", 50))
	l := d.waitLog(`^Info: Delayed: DCID \d+ MID \d+ From: <alice@sender\.test> To: <bob@rst\.test> RID 0 - 4\.4\.2 - `, 30*time.Second)
	t.Log(l)
	mx.waitMsgs(t, 1, 30*time.Second)
	d.waitLog(`^Info: Message finished MID \d+ done$`, 10*time.Second)
	if conns, _, _ := mx.counts(); conns < 2 {
		t.Fatalf("%d connections: the reset was not followed by a retry", conns)
	}
}

// ---- 4xx and 5xx at every SMTP stage ----

// TestFaultRepliesAtEveryStage runs one daemon against a raw receiver per
// case. Greeting and EHLO failures (4xx and 5xx) move on to the domain's
// next MX within the same attempt; 4xx later in the transaction defers and
// the retry delivers; 5xx from MAIL on bounces with a DSN to the sender.
func TestFaultRepliesAtEveryStage(t *testing.T) {
	type tc struct {
		stage, class string
		nextMX       bool
	}
	var cases []tc
	for _, st := range []string{"greeting", "ehlo", "mail", "rcpt", "data", "dot"} {
		for _, class := range []string{"4", "5"} {
			cases = append(cases, tc{st, class, st == "greeting" || st == "ehlo"})
		}
	}
	ips := []string{"127.0.0.94", "127.0.0.95"} // backup MX, sender's MX
	for i := range cases {
		ips = append(ips, fmt.Sprintf("127.0.0.%d", 100+i))
	}
	w := newWorld(t, ips...)
	backup := w.addDomain(t, "backup.test", "mx2.fault.test", ips[0], nil)
	senderMX := w.addDomain(t, "sender.test", "mx.sender.test", ips[1], nil)
	type run struct {
		tc
		domain, text string
		mx           *rawMX
	}
	var runs []run
	for i, c := range cases {
		domain := fmt.Sprintf("%s-%sxx.fault.test", c.stage, c.class)
		text := fmt.Sprintf("fault injected at %s (%sxx)", c.stage, c.class)
		code := map[string]string{"4": "451 4.3.0 ", "5": "554 5.7.1 "}[c.class]
		if c.stage == "greeting" && c.class == "4" {
			code = "421 4.3.2 "
		}
		fault := onFirst(c.stage, code+text)
		if c.nextMX {
			fault = always(c.stage, code+text)
		}
		host := "mx." + domain
		w.z.addMX(domain, 10, host)
		w.z.addA(host, ips[2+i])
		if c.nextMX {
			w.z.addMX(domain, 20, "mx2.fault.test")
		}
		runs = append(runs, run{tc: c, domain: domain, text: text, mx: newRawMX(t, fmt.Sprintf("%s:%d", ips[2+i], w.port), nil, fault)})
	}
	w.d = startOutpost(t, t.TempDir(), baseConfig(w, `destinations:
  default: {tls: preferred}
`))
	d := w.d
	for _, r := range runs {
		submit(t, d, "alice@sender.test", "bob@"+r.domain, "--header", "Message-Id: <fault-"+r.domain+"@sender.test>")
	}
	for _, r := range runs {
		rcpt := regexp.QuoteMeta("bob@" + r.domain)
		switch {
		case r.nextMX:
			// Delivered by the next MX; the log names the first one's reply.
			deadline := time.Now().Add(30 * time.Second)
			for !backupHas(backup, "bob@"+r.domain) {
				if time.Now().After(deadline) {
					t.Fatalf("%s %sxx: not delivered to the next MX\nlog:\n%s", r.stage, r.class, d.mailLog())
				}
				time.Sleep(50 * time.Millisecond)
			}
			l := d.waitLog(`^Info: Connection Error: DCID: \d+ IP: 127\.0\.0\.\d+ details: (greeting|EHLO) reason: .*`+regexp.QuoteMeta(r.text), 10*time.Second)
			t.Logf("%s %sxx → next MX; %s", r.stage, r.class, l)
		case r.class == "4":
			l := d.waitLog(`^Info: Delayed: DCID \d+ MID \d+ From: <alice@sender\.test> To: <`+rcpt+`> RID 0 - 4\.\d\.\d - .*`+regexp.QuoteMeta(r.text), 30*time.Second)
			r.mx.waitMsgs(t, 1, 30*time.Second)
			t.Logf("%s 4xx → retry, delivered; %s", r.stage, l)
		default:
			l := d.waitLog(`^Info: Bounced: DCID \d+ MID \d+ From: <alice@sender\.test> To: <`+rcpt+`> RID 0 - 5\.\d\.\d - .*`+regexp.QuoteMeta(r.text), 30*time.Second)
			t.Logf("%s 5xx → bounce; %s", r.stage, l)
		}
	}
	// One DSN per 5xx case, to the sender, naming the recipient and reply.
	want := 0
	for _, r := range runs {
		if !r.nextMX && r.class == "5" {
			want++
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for senderMX.count() < want && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	senderMX.mu.Lock()
	dsns := append([]received(nil), senderMX.msgs...)
	senderMX.mu.Unlock()
	if len(dsns) != want {
		t.Fatalf("%d DSNs to the sender, want %d", len(dsns), want)
	}
	for _, r := range runs {
		if r.nextMX || r.class != "5" {
			continue
		}
		found := false
		for _, m := range dsns {
			if m.From == "" && strings.Contains(m.Data, "bob@"+r.domain) && strings.Contains(squash(m.Data), r.text) {
				found = true
			}
		}
		if !found {
			t.Errorf("no DSN with a null sender naming bob@%s and %q", r.domain, r.text)
		}
		if _, n, _ := r.mx.counts(); n != 0 {
			t.Errorf("%s: %d messages accepted after a 5xx", r.domain, n)
		}
	}
	d.waitCount(`^Info: Message finished MID \d+ done$`, len(runs)+want, 30*time.Second)
	if out, _ := d.cli("queue", "list"); !strings.Contains(out, "0 message(s)") {
		t.Errorf("queue not empty:\n%s", out)
	}
}

func backupHas(s *sink, rcpt string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.msgs {
		for _, r := range m.Rcpts {
			if r == rcpt {
				return true
			}
		}
	}
	return false
}

// ---- a server that hangs after 354 ----

// TestFaultHangAfter354TimesOutAsTemporary goes through internal/deliver
// directly: the delivery timeouts are not configurable (RFC 5321 §4.5.3.2
// minimums: 10 minutes for the reply to the end of data), so the stage
// timeout is shortened in the client. A temporary (4.4.1) result is what
// the queue manager defers and retries (qmgr.outcome: not Permanent).
func TestFaultHangAfter354TimesOutAsTemporary(t *testing.T) {
	const ip = "127.0.0.96"
	port := freePortOn(t, ip)
	mx := newRawMX(t, fmt.Sprintf("%s:%d", ip, port), nil, onFirst("dot", "HANG"))
	var logBuf lockedBuffer
	c := deliver.New(deliver.Options{Hostname: "outpost.test", Port: port,
		Timeouts: deliver.Timeouts{DataBlock: time.Second, DataEnd: time.Second},
		Log:      maillog.NewWriter(&logBuf, maillog.Debug)})
	msg := &deliver.Message{MID: 1, From: "alice@sender.test", Rcpts: []deliver.Rcpt{{Addr: "bob@hang.test"}},
		Body: func() (io.ReadCloser, error) {
			return io.NopCloser(strings.NewReader("Subject: hang\r\n\r\nbody\r\n")), nil
		}}
	send := func() *deliver.Result {
		cn, err := c.Connect(context.Background(), "hang.test", tlspolicy.Host{Name: ip, TLS: tlspolicy.ForMode(tlspolicy.Preferred, "hang.test", ip)})
		if err != nil {
			t.Fatal(err)
		}
		defer cn.Close()
		return cn.Send(context.Background(), msg)
	}
	start := time.Now()
	res := send()
	r := res.Rcpt[0]
	if r.Permanent() || r.Success() || !strings.Contains(r.String(), "timeout") || !res.Broken {
		t.Fatalf("after a hang at the end of data: %v (broken %v), want a temporary timeout on a broken connection", r, res.Broken)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("took %v: the end-of-data timeout did not apply", el)
	}
	t.Logf("hang after 354 → %s; then retry:", r)
	if res := send(); !res.Rcpt[0].Success() {
		t.Fatalf("retry: %v", res.Rcpt[0])
	}
	if _, n, _ := mx.counts(); n != 1 {
		t.Fatalf("%d messages at the receiver after the retry, want 1", n)
	}
	t.Logf("log:\n%s", logBuf.String())
}

// ---- TLS handshake failure under required TLS ----

func TestFaultTLSHandshakeFailureRequiredNeverPlaintext(t *testing.T) {
	const ip = "127.0.0.97"
	w := newWorld(t, ip)
	w.z.addMX("tlsfail.test", 10, "mx.tlsfail.test")
	w.z.addA("mx.tlsfail.test", ip)
	var broken atomic.Bool
	broken.Store(true)
	cfg := serverTLS(w.mustLeaf(t, []string{"mx.tlsfail.test"}, nil))
	mx := newRawMX(t, fmt.Sprintf("%s:%d", ip, w.port), cfg, func(_ int, s string) string {
		if s == "starttls" && broken.Load() {
			return "TLSFAIL"
		}
		return ""
	})
	w.d = startOutpost(t, t.TempDir(), baseConfig(w, `destinations:
  default: {tls: preferred}
  tlsfail.test: {tls: required}
`))
	d := w.d
	submit(t, d, "alice@sender.test", "bob@tlsfail.test")
	l := d.waitLog(`^Info: Delayed: DCID \d+ MID \d+ From: <alice@sender\.test> To: <bob@tlsfail\.test> RID 0 - 4\.\d\.\d - `, 30*time.Second)
	t.Log(l)
	time.Sleep(3 * time.Second) // a few retries, all failing
	conns, n, mails := mx.counts()
	if n != 0 || len(mails) != 0 || conns < 2 {
		t.Fatalf("under required TLS with a broken handshake: %d connections, %d messages, MAIL commands %v (want retries and no MAIL)", conns, n, mails)
	}
	for _, l := range d.logLines() {
		if strings.Contains(l, "TLS failed") || strings.Contains(l, "TLS") && strings.Contains(l, "DCID") && strings.Contains(strings.ToLower(l), "fail") {
			t.Logf("cause: %s", l)
			break
		}
	}
	broken.Store(false)
	mx.waitMsgs(t, 1, 30*time.Second)
	if _, _, mails := mx.counts(); len(mails) != 1 || !strings.HasPrefix(mails[0], "tls ") {
		t.Fatalf("MAIL commands %v: want one, over TLS", mails)
	}
}

// ---- MTA-STS policy host slow or gone, no cached policy ----

// RFC 8461 §3.3/§5: a TXT record but no policy fetched (for any reason) and
// no cached policy → deliver as though the domain had no MTA-STS. With a
// cached policy the policy is kept: TestMTASTSCacheRestartFetchFailureAndIDChange.
func TestFaultMTASTSPolicyHostSlowOrGoneWithoutCache(t *testing.T) {
	w := newSTSWorld(t, "127.0.3.90", "127.0.0.98", "127.0.0.99")
	const slow, gone = "slowsts.test", "gonests.test"
	w.publish(slow, "s1", "")
	w.ps.page(slow, func(rw http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(10 * time.Second):
		case <-r.Context().Done():
		}
		rw.Header().Set("Content-Type", "text/plain")
		io.WriteString(rw, enforcePolicy("mx.nowhere.test"))
	})
	w.z.stsTXT(gone, "v=STSv1; id=g1;")
	w.z.addA("mta-sts."+gone, "127.0.3.91") // nothing listens there
	a := w.mx(t, slow, 10, "mx."+slow, "127.0.0.98", w.leafTLS(t, []string{"mx." + slow}, testpki.LeafOptions{}))
	b := w.mx(t, gone, 10, "mx."+gone, "127.0.0.99", w.leafTLS(t, []string{"mx." + gone}, testpki.LeafOptions{}))
	w.d = startOutpost(t, t.TempDir(), stsConfig(w, "1h", "  "+slow+": {mta_sts: true}\n  "+gone+": {mta_sts: true}\n", "mta_sts:\n  fetch_timeout: 1s\n"))
	d := w.d
	submit(t, d, "a@sender.test", "x@"+slow)
	submit(t, d, "a@sender.test", "y@"+gone)
	a.wait(t, 30*time.Second)
	b.wait(t, 30*time.Second)
	for _, dom := range []string{slow, gone} {
		l := d.waitLog(`^Info: Failure encountered while fetching MTA-STS policy for the domain\(`+regexp.QuoteMeta(dom)+`\)`, 10*time.Second)
		t.Logf("%s: %s", dom, l)
	}
}
