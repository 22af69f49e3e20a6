package e2e

import (
	"crypto/tls"
	"fmt"
	"net/smtp"
	"regexp"
	"strings"
	"testing"
	"time"

	"outpost/internal/testpki"
)

// world is one test setup: DNS, a receiving MTA per domain, the daemon.
type world struct {
	z      *zone
	ca     *testpki.CA
	caFile string
	port   int
	d      *daemon
}

func baseConfig(w *world, extra string) string {
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
logs:
  level: debug
%s`, w.z.addr, w.caFile, w.port, extra)
}

func newWorld(t *testing.T, ips ...string) *world {
	w := &world{z: newZone(t)}
	w.ca, w.caFile = pki(t)
	w.port = freePortOn(t, ips...)
	return w
}

// addDomain gives domain an MX host at ip with a receiver presenting cert.
func (w *world) addDomain(t *testing.T, domain, mxHost, ip string, cert *testpki.LeafOptions, names ...string) *sink {
	w.z.addMX(domain, 10, mxHost)
	w.z.addA(mxHost, ip)
	if len(names) == 0 {
		names = []string{mxHost}
	}
	var cfg = serverTLS(w.mustLeaf(t, names, cert))
	return newSink(t, fmt.Sprintf("%s:%d", ip, w.port), cfg)
}

func (w *world) mustLeaf(t *testing.T, names []string, o *testpki.LeafOptions) (c tls.Certificate) {
	opts := testpki.LeafOptions{}
	if o != nil {
		opts = *o
	}
	c, err := w.ca.Leaf(names, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func midOf(t *testing.T, transcript string) string {
	m := regexp.MustCompile(`queued as (\d+)|Ok: MID (\d+)|MID (\d+)`).FindStringSubmatch(transcript)
	if m == nil {
		return ""
	}
	for _, g := range m[1:] {
		if g != "" {
			return g
		}
	}
	return ""
}

func TestRelayDeliversOverTLSWithExactLogLines(t *testing.T) {
	w := newWorld(t, "127.0.0.2")
	rcv := w.addDomain(t, "example.com", "mx.example.com", "127.0.0.2", nil)
	w.d = startOutpost(t, t.TempDir(), baseConfig(w, `destinations:
  default: {tls: preferred}
`))
	out, err := swaks(t, w.d.smtp, "--from", "alice@sender.test", "--to", "bob@example.com",
		"--header", "Subject: hello there", "--header", "Message-Id: <e2e-1@sender.test>", "--body", "hi\n.leading dot line\n")
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	got := rcv.wait(t, 20*time.Second)
	if got.From != "alice@sender.test" || len(got.Rcpts) != 1 || got.Rcpts[0] != "bob@example.com" {
		t.Fatalf("envelope %+v", got)
	}
	if got.TLS == nil {
		t.Fatal("preferred TLS was offered but the message arrived in plaintext")
	}
	if !strings.Contains(got.Data, "\r\n.leading dot line\r\n") || !strings.Contains(got.Data, "Received: from client.test") {
		t.Fatalf("content not transparent or no Received header:\n%s", got.Data)
	}
	d := w.d
	start := d.waitLog(`^Info: Delivery start DCID \d+ MID \d+ to RID \[0\]$`, 10*time.Second)
	var dcid, mid int
	fmt.Sscanf(start, "Info: Delivery start DCID %d MID %d", &dcid, &mid)
	d.waitLog(fmt.Sprintf(`^Info: Message finished MID %d done$`, mid), 10*time.Second)
	var icid int
	fmt.Sscanf(d.waitLog(fmt.Sprintf(`^Info: Start MID %d ICID \d+$`, mid), time.Second), "Info: Start MID %d ICID %d", new(int), &icid)
	for _, want := range []string{
		fmt.Sprintf("Info: Start MID %d ICID %d", mid, icid),
		fmt.Sprintf("Info: MID %d ICID %d From: <alice@sender.test>", mid, icid),
		fmt.Sprintf("Info: MID %d ICID %d RID 0 To: <bob@example.com>", mid, icid),
		fmt.Sprintf("Info: MID %d Message-ID '<e2e-1@sender.test>'", mid),
		fmt.Sprintf("Info: MID %d Subject 'hello there'", mid),
		fmt.Sprintf("Info: MID %d queued for delivery", mid),
		fmt.Sprintf("Info: Message done DCID %d MID %d to RID [0]", dcid, mid),
		"Info: ICID 1 RELAY SG RELAYLIST match 127.0.0.0/8",
		"Debug: DNS query: Q(example.com, 'MX')",
	} {
		if !d.hasLine(want) {
			t.Errorf("missing mail-log line %q\n%s", want, d.mailLog())
		}
	}
	for _, re := range []string{
		`^Info: New SMTP ICID \d+ interface Listener1 \(127\.0\.0\.1\) address 127\.0\.0\.1 reverse dns host \S+ verified (yes|no)$`,
		fmt.Sprintf(`^Info: MID %d ready \d+ bytes from <alice@sender\.test>$`, mid),
		fmt.Sprintf(`^Info: New SMTP DCID %d interface 127\.0\.0\.1 address 127\.0\.0\.2 port %d$`, dcid, w.port),
		fmt.Sprintf(`^Info: DCID %d TLS success protocol TLSv1\.3 cipher TLS_\w+$`, dcid),
		fmt.Sprintf(`^Info: MID %d RID \[0\] Response '.+'$`, mid),
		fmt.Sprintf(`^Info: DCID %d close$`, dcid), // after the idle reuse window
	} {
		d.waitLog(re, 10*time.Second)
	}
	if out, _ := d.cli("queue", "list"); !strings.Contains(out, "0 message(s)") {
		t.Errorf("queue not empty after delivery:\n%s", out)
	}
}

func TestRequiredVerifyDefersOnNameMismatchAndHostedAccepts(t *testing.T) {
	w := newWorld(t, "127.0.0.3", "127.0.0.4")
	// Both MX hosts present certificates for their own names only.
	w.addDomain(t, "strict.test", "mx.provider.test", "127.0.0.3", nil)
	hosted := w.addDomain(t, "hosted.test", "mx2.provider.test", "127.0.0.4", nil)
	w.d = startOutpost(t, t.TempDir(), baseConfig(w, `destinations:
  default: {tls: preferred}
  strict.test: {tls: required-verify}
  hosted.test: {tls: required-verify-hosted}
`))
	if out, err := swaks(t, w.d.smtp, "--from", "a@sender.test", "--to", "u@strict.test"); err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	if out, err := swaks(t, w.d.smtp, "--from", "a@sender.test", "--to", "u@hosted.test"); err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	hosted.wait(t, 20*time.Second)
	w.d.waitLog(`^Info: DCID \d+ TLS deferring: verify error: peer cert does not match domain$`, 10*time.Second)
	w.d.waitLog(`^Info: DCID \d+ TLS was required but could not be successfully negotiated$`, 10*time.Second)
	w.d.waitLog(`^Info: Delayed: DCID \d+ MID \d+ From: <a@sender\.test> To: <u@strict\.test> RID 0 - 4\.7\.\d+ - .+ \('\d{3}', \['.+'\]\)$`, 10*time.Second)
	out, err := w.d.cli("queue", "list")
	if err != nil || !strings.Contains(out, "u@strict.test") || !strings.Contains(out, "deferred") {
		t.Fatalf("queue list: %v\n%s", err, out)
	}
}

func TestNXDomainBouncesWithDSN(t *testing.T) {
	w := newWorld(t, "127.0.0.5")
	senderBox := w.addDomain(t, "sender.test", "mx.sender.test", "127.0.0.5", nil)
	w.d = startOutpost(t, t.TempDir(), baseConfig(w, ""))
	if out, err := swaks(t, w.d.smtp, "--from", "alice@sender.test", "--to", "nobody@nx.test", "--header", "Subject: lost"); err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	dsn := senderBox.wait(t, 20*time.Second)
	if dsn.From != "" || dsn.Rcpts[0] != "alice@sender.test" {
		t.Fatalf("DSN envelope %+v", dsn)
	}
	for _, want := range []string{"multipart/report", "report-type=delivery-status", "Action: failed", "Status: 5.1.2", "Final-Recipient: rfc822; nobody@nx.test", "Subject: lost"} {
		if !strings.Contains(dsn.Data, want) {
			t.Errorf("DSN lacks %q:\n%s", want, dsn.Data)
		}
	}
	w.d.waitLog(`^Info: Bounced: DCID 0 MID \d+ From: <alice@sender\.test> To: <nobody@nx\.test> RID 0 - 5\.1\.2 - Bad destination host \('550', \['DNS Hard Error looking up nx\.test \(MX\): NXDomain'\]\)$`, 5*time.Second)
	w.d.waitLog(`^Info: MID \d+ was generated for bounce of MID \d+$`, 5*time.Second)
}

func TestNullMXBouncesAndServfailDefers(t *testing.T) {
	w := newWorld(t, "127.0.0.6")
	w.addDomain(t, "sender.test", "mx.sender.test", "127.0.0.6", nil)
	w.z.setNullMX("nomail.test")
	w.z.setServfail("broken.test")
	w.d = startOutpost(t, t.TempDir(), baseConfig(w, ""))
	swaks(t, w.d.smtp, "--from", "a@sender.test", "--to", "x@nomail.test")
	swaks(t, w.d.smtp, "--from", "a@sender.test", "--to", "x@broken.test")
	w.d.waitLog(`^Info: Bounced: DCID 0 MID \d+ From: <a@sender\.test> To: <x@nomail\.test> RID 0 - 5\.1\.10 - `, 10*time.Second)
	w.d.waitLog(`^Info: Delayed: DCID 0 MID \d+ From: <a@sender\.test> To: <x@broken\.test> RID 0 - 4\.4\.3 - .*\('451', \['DNS Temporary Failure broken\.test MX - ServFail'\]\)$`, 10*time.Second)
	// SERVFAIL must never bounce: after several retries the message is still queued.
	time.Sleep(3 * time.Second)
	if w.d.hasLine("Bounced") || strings.Contains(w.d.mailLog(), "To: <x@broken.test> RID 0 - 5.") {
		t.Fatal("SERVFAIL led to a bounce")
	}
	out, _ := w.d.cli("queue", "list")
	if !strings.Contains(out, "x@broken.test") {
		t.Fatalf("deferred message not in queue:\n%s", out)
	}
}

func TestRelayDeniedForOtherNetworks(t *testing.T) {
	w := newWorld(t, "127.0.0.7")
	w.d = startOutpost(t, t.TempDir(), strings.Replace(baseConfig(w, ""), "relay_from: [127.0.0.0/8]", "relay_from: [10.9.9.0/24]", 1))
	out, err := swaks(t, w.d.smtp, "--from", "a@sender.test", "--to", "x@example.com")
	if err == nil || !strings.Contains(out, "554 5.7.1") {
		t.Fatalf("relay not refused with 554 5.7.1:\n%s", out)
	}
	w.d.waitLog(`^Info: ICID \d+ REJECT SG BLOCKED match ALL$`, 5*time.Second)
}

// sendOne submits one message with net/smtp and reports whether it got 250.
func sendOne(addr, from, to, body string) error {
	return smtp.SendMail(addr, nil, from, []string{to}, []byte(body))
}
