package smtpd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"outpost/internal/envelope"
	"outpost/internal/reply"
)

const testMessage = "Message-ID: <abc.123@client.example>\r\n" +
	"Subject: =?utf-8?q?Quarterly_r=C3=A9sults?=\r\n" +
	" continued\r\n" +
	"From: a@client.example\r\n" +
	"\r\n" +
	"Hello.\r\n" +
	".leading dot\r\n"

// TestSendAndLog sends one message with go-smtp's client and checks the
// EHLO keywords, the stored bytes, the envelope with its DSN and ESMTP
// parameters, and the exact mail-log lines in order.
func TestSendAndLog(t *testing.T) {
	queued := make(chan uint64, 1)
	ts := startServer(t, func(c *Config) { c.OnQueued = func(mid uint64) { queued <- mid } })
	c, err := smtp.Dial(ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.example"); err != nil {
		t.Fatal(err)
	}
	for _, ext := range []string{"SIZE", "8BITMIME", "SMTPUTF8", "PIPELINING", "ENHANCEDSTATUSCODES", "DSN"} {
		if ok, _ := c.Extension(ext); !ok {
			t.Errorf("EHLO does not advertise %s", ext)
		}
	}
	if _, p := c.Extension("SIZE"); p != fmt.Sprint(DefaultMaxMessageSize) {
		t.Errorf("SIZE %q, want %d", p, DefaultMaxMessageSize)
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Error("STARTTLS advertised without a TLS config")
	}
	err = c.Mail("sender@client.example", &smtp.MailOptions{Body: smtp.Body8BitMIME, Return: smtp.DSNReturnHeaders, EnvelopeID: "env 1+x", UTF8: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("Rcpt@Dest.EXAMPLE", &smtp.RcptOptions{
		Notify:                []smtp.DSNNotify{smtp.DSNNotifyFailure, smtp.DSNNotifyDelayed},
		OriginalRecipientType: smtp.DSNAddressTypeRFC822,
		OriginalRecipient:     "orig=1@dest.example",
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("two@dest.example", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(testMessage)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if mid := <-queued; mid != 1 {
		t.Errorf("OnQueued(%d), want 1", mid)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}

	msgs := ts.recv.messages(t)
	if got := msgs[1]; got != testMessage {
		t.Errorf("stored %q\nwant %q", got, testMessage)
	}
	env := ts.recv.env(1)
	want := &envelope.Envelope{
		From: "sender@client.example",
		Recipients: []envelope.Recipient{
			{Addr: "Rcpt@dest.example", Notify: envelope.Notify{Set: true, Failure: true, Delay: true}, ORCPT: "rfc822;orig+3D1@dest.example"},
			{Addr: "two@dest.example"},
		},
		RET: "HDRS", EnvID: "env+201+2Bx", SMTPUTF8: true, Body8Bit: true,
		ICID: 1, ClientIP: "127.0.0.1", Helo: "client.example", Time: env.Time,
	}
	if fmt.Sprintf("%+v", env) != fmt.Sprintf("%+v", want) {
		t.Errorf("envelope\n%+v\nwant\n%+v", env, want)
	}
	if time.Since(env.Time) > time.Minute {
		t.Errorf("envelope time %v", env.Time)
	}

	lines := ts.log.waitFor(t, "ICID 1 close")
	wantLines := []string{
		"New SMTP ICID 1 interface Main (127.0.0.1) address 127.0.0.1 reverse dns host localhost verified yes",
		"ICID 1 RELAY SG RELAYLIST match 127.0.0.0/8",
		"Start MID 1 ICID 1",
		"MID 1 ICID 1 From: <sender@client.example>",
		"MID 1 ICID 1 RID 0 To: <Rcpt@dest.example>",
		"MID 1 ICID 1 RID 1 To: <two@dest.example>",
		"MID 1 Message-ID '<abc.123@client.example>'",
		"MID 1 Subject 'Quarterly résults continued'",
		fmt.Sprintf("MID 1 ready %d bytes from <sender@client.example>", len(testMessage)),
		"MID 1 queued for delivery",
		"ICID 1 close",
	}
	if strings.Join(lines, "\n") != strings.Join(wantLines, "\n") {
		t.Errorf("mail log:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(wantLines, "\n"))
	}
}

// TestSTARTTLS upgrades with the test CA and sends a message; STARTTLS is
// advertised before and not after, and the TLS line is logged.
func TestSTARTTLS(t *testing.T) {
	srvTLS, cliTLS, _ := tlsConfigs(t)
	ts := startServer(t, func(c *Config) { c.TLS = srvTLS })
	// DialStartTLS fails unless STARTTLS is advertised.
	c, err := smtp.DialStartTLS(ts.addr, cliTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.example"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Error("STARTTLS advertised again under TLS")
	}
	if err := c.SendMail("a@client.example", []string{"b@dest.example"}, strings.NewReader("Subject: tls\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	if got := ts.recv.messages(t)[1]; got != "Subject: tls\r\n\r\nbody\r\n" {
		t.Errorf("stored %q", got)
	}
	lines := ts.log.waitFor(t, "ICID 1 close")
	if !strings.HasPrefix(lines[2], "ICID 1 TLS success protocol TLS") {
		t.Errorf("line 3 %q, want the TLS success line", lines[2])
	}
}

// TestSTARTTLSInjection sends "STARTTLS\r\nRSET\r\n" in one write: the
// pipelined RSET must be discarded with the plaintext buffer (RFC 3207 §4.2,
// CVE-2011-0411), not answered after the handshake.
func TestSTARTTLSInjection(t *testing.T) {
	srvTLS, cliTLS, _ := tlsConfigs(t)
	ts := startServer(t, func(c *Config) { c.TLS = srvTLS })
	rc := dialRaw(t, ts.addr)
	rc.cmd("EHLO client.example")
	rc.send("STARTTLS\r\nRSET\r\n")
	rc.expect("220")
	if rc.r.Buffered() != 0 {
		t.Fatalf("server sent more after 220: %d bytes", rc.r.Buffered())
	}
	tc := tls.Client(rc.conn, cliTLS)
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	rc.conn = tc
	rc.r.Reset(tc)
	rc.send("NOOP\r\n")
	if r := rc.expect("250"); !strings.Contains(r, "nothing") {
		t.Fatalf("first reply after TLS is %q: the injected RSET was executed", r)
	}
	// And the session was reset by STARTTLS: MAIL needs EHLO again.
	if r := rc.cmd("MAIL FROM:<a@client.example>"); !strings.HasPrefix(r, "502") {
		t.Errorf("MAIL before EHLO after STARTTLS: %q", r)
	}
}

// TestRelayDenied: a client outside RelayFrom is logged as blocked and
// every MAIL gets 554 5.7.1.
func TestRelayDenied(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.RelayFrom = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")} })
	rc := dialRaw(t, ts.addr)
	rc.cmd("EHLO client.example")
	for range 2 {
		if r := rc.cmd("MAIL FROM:<a@client.example>"); !strings.HasPrefix(r, "554 5.7.1") {
			t.Errorf("MAIL: %q, want 554 5.7.1", r)
		}
	}
	if r := rc.cmd("RCPT TO:<b@dest.example>"); !strings.HasPrefix(r, "5") {
		t.Errorf("RCPT: %q, want 5xx", r)
	}
	rc.cmd("QUIT")
	lines := ts.log.waitFor(t, "ICID 1 close")
	want := []string{
		"New SMTP ICID 1 interface Main (127.0.0.1) address 127.0.0.1 reverse dns host localhost verified yes",
		"ICID 1 REJECT SG BLOCKED match ALL",
		"ICID 1 close",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("log:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if len(ts.recv.messages(t)) != 0 {
		t.Error("a message was stored")
	}
}

// TestRelayAbuseMatrix: recipient forms that would let a client choose the
// next hop or hide a second address are refused with 501/553 5.1.x and
// logged; plain forms are accepted.
func TestRelayAbuseMatrix(t *testing.T) {
	ts := startServer(t, nil)
	rc := dialRaw(t, ts.addr)
	rc.cmd("EHLO client.example")
	rc.startTx("a@client.example", "first@dest.example")
	cases := []struct {
		rcpt   string // as sent between RCPT TO: and CRLF
		want   string // reply prefix
		logged string // the mailbox in the log line ("" when go-smtp refuses before us)
	}{
		{"<user%other.example@dest.example>", "553 5.1.3", "user%other.example@dest.example"},
		{"<user@dest.example@other.example>", "553 5.1.3", "user@dest.example@other.example"},
		{`<"user@other.example"@dest.example>`, "553 5.1.3", "user@other.example@dest.example"},
		{`<"user%other.example"@dest.example>`, "553 5.1.3", "user%other.example@dest.example"},
		{`<"john smith"@dest.example>`, "553 5.1.3", "john smith@dest.example"},
		{"<other.example!user@dest.example>", "553 5.1.3", "other.example!user@dest.example"},
		{"<user@[192.0.2.1]>", "553 5.1.2", "user@[192.0.2.1]"},
		{"<user@192.0.2.1>", "553 5.1.2", "user@192.0.2.1"},
		{"<user@localhost>", "553 5.1.2", "user@localhost"},
		{"<user@dest.example.>", "553 5.1.2", "user@dest.example."},
		{"<user@dest..example>", "553 5.1.2", "user@dest..example"},
		{"<user@-dest.example>", "553 5.1.2", "user@-dest.example"},
		{"<user@dest_x.example>", "553 5.1.2", "user@dest_x.example"},
		{"<user@dest.example,other.example>", "553 5.1.2", "user@dest.example,other.example"},
		{"<.user@dest.example>", "553 5.1.3", ".user@dest.example"},
		{"<üser@dest.example>", "553 5.6.7", "üser@dest.example"},
		{"<" + strings.Repeat("x", 65) + "@dest.example>", "553 5.1.3", strings.Repeat("x", 65) + "@dest.example"},
		{"<user@>", "501", ""},
		{"<@dest.example>", "501", ""},
		{"<user>", "501", ""},
		// A source route is stripped by go-smtp (RFC 5321 Appendix C); what
		// remains is judged like any other mailbox, so the route cannot pick
		// the next hop.
		{"<@relay.example,@other.example:user%x@dest.example>", "553 5.1.3", "user%x@dest.example"},
		{"<@relay.example:ok2@dest.example>", "250", ""},
		{"<ok.user+tag@Dest.Example>", "250", ""},
		{`<"quoted.ok"@dest.example>`, "250", ""},
	}
	for _, tc := range cases {
		r := rc.cmd("RCPT TO:" + tc.rcpt)
		if !strings.HasPrefix(r, tc.want) {
			t.Errorf("RCPT TO:%s → %q, want %s", tc.rcpt, r, tc.want)
		}
		if tc.logged != "" && strings.HasPrefix(tc.want, "5") {
			ts.log.waitFor(t, "MID 1 ICID 1 To: <"+tc.logged+"> Rejected by "+rejectionReason(t, tc.logged))
		}
	}
	lines := ts.log.lines()
	var accepted []string
	for _, l := range lines {
		if strings.Contains(l, " RID ") {
			accepted = append(accepted, l)
		}
	}
	want := []string{
		"MID 1 ICID 1 RID 0 To: <first@dest.example>",
		"MID 1 ICID 1 RID 1 To: <ok2@dest.example>",
		"MID 1 ICID 1 RID 2 To: <ok.user+tag@dest.example>",
		"MID 1 ICID 1 RID 3 To: <quoted.ok@dest.example>",
	}
	if strings.Join(accepted, "\n") != strings.Join(want, "\n") {
		t.Errorf("accepted:\n%s\nwant:\n%s", strings.Join(accepted, "\n"), strings.Join(want, "\n"))
	}
}

func rejectionReason(t *testing.T, addr string) string {
	t.Helper()
	rj := checkAddress(addr, false, false)
	if rj == nil {
		t.Fatalf("checkAddress(%q) accepted", addr)
	}
	return rj.reason
}

// TestSenderChecks: MAIL FROM addresses are checked for syntax; the null
// sender is accepted; a second MAIL in a transaction is a sequence error.
func TestSenderChecks(t *testing.T) {
	ts := startServer(t, nil)
	rc := dialRaw(t, ts.addr)
	rc.cmd("EHLO client.example")
	for _, tc := range []struct{ from, want string }{
		{"<a@b@client.example>", "553 5.1.7"},
		{"<a@[127.0.0.1]>", "553 5.1.8"},
		{"<a@nodots>", "553 5.1.8"},
		{"<a%b@client.example>", "250"}, // a reverse path does not route
	} {
		r := rc.cmd("MAIL FROM:" + tc.from)
		if !strings.HasPrefix(r, tc.want) {
			t.Errorf("MAIL FROM:%s → %q, want %s", tc.from, r, tc.want)
		}
	}
	if r := rc.cmd("MAIL FROM:<>"); !strings.HasPrefix(r, "503 5.5.1") {
		t.Errorf("nested MAIL → %q", r)
	}
	rc.cmd("RSET")
	if r := rc.cmd("MAIL FROM:<>"); !strings.HasPrefix(r, "250") {
		t.Errorf("null sender → %q", r)
	}
	ts.log.waitFor(t, "Message aborted MID 1 receiving aborted by sender")
}

// TestSmugglingMatrix: a bare CR or bare LF anywhere in DATA fails the
// transaction with 550 5.6.11 and nothing is stored; only CRLF.CRLF ends
// the data, so the commands hidden after a fake end are never executed.
func TestSmugglingMatrix(t *testing.T) {
	ts := startServer(t, nil)
	rc := dialRaw(t, ts.addr)
	rc.cmd("EHLO client.example")
	smuggled := "MAIL FROM:<evil@client.example>\r\nRCPT TO:<victim@dest.example>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n"
	cases := []struct{ name, data string }{
		{"LF.LF", "Subject: a\r\n\r\nbody\n.\n" + smuggled},
		{"CR.CR", "Subject: a\r\n\r\nbody\r.\r" + smuggled},
		{"CRLF.LF", "Subject: a\r\n\r\nbody\r\n.\n" + smuggled},
		{"LF.CRLF", "Subject: a\r\n\r\nbody\n.\r\n" + smuggled},
		{"CR.CRLF", "Subject: a\r\n\r\nbody\r.\r\n" + smuggled},
		{"bare LF in header", "Subject: a\nX: b\r\n\r\nbody\r\n"},
		{"bare CR in body", "Subject: a\r\n\r\nbo\rdy\r\n"},
		{"bare LF first", "\nSubject: a\r\n\r\nbody\r\n"},
		{"CR CR LF", "Subject: a\r\n\r\nbody\r\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rc.t = t
			rc.startTx("a@client.example", "b@dest.example")
			rc.cmd("DATA")
			rc.send(tc.data + "\r\n.\r\n")
			if r := rc.expect("5"); !strings.HasPrefix(r, "550 5.6.11") {
				t.Errorf("reply %q, want 550 5.6.11", r)
			}
			// Exactly one reply: the next is the NOOP's.
			if r := rc.cmd("NOOP"); !strings.HasPrefix(r, "250 2.0.0") || !strings.Contains(r, "nothing") {
				t.Errorf("after DATA: %q (smuggled commands answered?)", r)
			}
		})
	}
	rc.t = t
	if msgs := ts.recv.messages(t); len(msgs) != 0 {
		t.Errorf("%d messages stored", len(msgs))
	}
	for _, l := range ts.log.lines() {
		if strings.Contains(l, "evil@") || strings.Contains(l, "queued") {
			t.Errorf("log line %q", l)
		}
	}
	ts.log.waitFor(t, "ICID 1 Receiving Failed: 550 Bare CR or LF in message data: lines must end with CRLF")
	ts.log.waitFor(t, "Message aborted MID 1 receiving failed")

	// The connection is still usable for a clean message.
	rc.startTx("a@client.example", "b@dest.example")
	rc.cmd("DATA")
	rc.send("Subject: ok\r\n\r\n..dot\r\nline\r\n.\r\n")
	rc.expect("250")
	msgs := ts.recv.messages(t)
	if len(msgs) != 1 {
		t.Fatalf("%d messages stored, want 1", len(msgs))
	}
	for _, m := range msgs {
		if m != "Subject: ok\r\n\r\n.dot\r\nline\r\n" {
			t.Errorf("stored %q", m)
		}
	}
}

// TestSmugglingDotCR documents the one bare CR this package cannot see:
// go-smtp's reader drops a CR that directly follows a leading dot, so
// "<CRLF>.<CR>" reaches us as "<CRLF>". It still does not end the data, the
// text after it is content (never commands), and the stored message holds
// no bare CR, so nothing can be smuggled onward.
func TestSmugglingDotCR(t *testing.T) {
	ts := startServer(t, nil)
	rc := dialRaw(t, ts.addr)
	rc.cmd("EHLO client.example")
	rc.startTx("a@client.example", "b@dest.example")
	rc.cmd("DATA")
	// A line ".<CR>X": the bare CR must be seen and refused, not dropped
	// with the dot (the vendored go-smtp keeps it; third_party/go-smtp).
	rc.send("Subject: a\r\n\r\nbody\r\n.\rMAIL FROM:<evil@client.example>\r\n.\r\n")
	rc.expect("550 5.6.11")
	if r := rc.cmd("NOOP"); !strings.HasPrefix(r, "250") {
		t.Errorf("after DATA: %q", r)
	}
	if n := len(ts.recv.messages(t)); n != 0 {
		t.Errorf("%d message(s) stored", n)
	}
	for _, l := range ts.log.lines() {
		if strings.Contains(l, "evil@") {
			t.Errorf("log line %q: smuggled command executed", l)
		}
	}
}

// TestPipelining sends a whole transaction in one write and holds the
// Receiver after its fsync: no 250 for DATA may arrive before Accept
// returns, and the message is on disk when it does.
func TestPipelining(t *testing.T) {
	gate := make(chan struct{})
	stored := make(chan uint64, 1)
	ts := startServer(t, nil)
	ts.recv.gate, ts.recv.stored = gate, stored
	rc := dialRaw(t, ts.addr)
	if r := rc.cmd("EHLO client.example"); !strings.Contains(r, "PIPELINING") {
		t.Fatalf("EHLO: %q", r)
	}
	rc.send("MAIL FROM:<a@client.example>\r\nRCPT TO:<b@dest.example>\r\nRCPT TO:<c@dest.example>\r\nDATA\r\n")
	for _, want := range []string{"250", "250", "250", "354"} {
		rc.expect(want)
	}
	rc.send("Subject: p\r\n\r\nbody\r\n.\r\nNOOP\r\n")
	<-stored
	rc.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if b, err := rc.r.Peek(1); err == nil {
		t.Fatalf("server replied %q before Accept returned", b)
	}
	close(gate)
	rc.expect("250 2.0.0")
	rc.expect("250 2.0.0") // NOOP
	if len(ts.recv.messages(t)) != 1 {
		t.Error("message not stored")
	}
}

// TestReceiverErrors: CheckSpace → 452 4.3.1; a typed Accept error is
// answered as is; an untyped one, or a "success" reply used as an error,
// as 451 4.3.0.
func TestReceiverErrors(t *testing.T) {
	ts := startServer(t, nil)
	rc := dialRaw(t, ts.addr)
	rc.cmd("EHLO client.example")

	ts.recv.spaceErr = errTest
	if r := rc.cmd("MAIL FROM:<a@client.example>"); !strings.HasPrefix(r, "452 4.3.1") {
		t.Errorf("MAIL with no space: %q", r)
	}
	ts.recv.spaceErr = nil

	for _, tc := range []struct {
		err  error
		want string
	}{
		{reply.New(554, "5.7.0", "Content refused"), "554 5.7.0 Content refused"},
		{fmt.Errorf("wrapped: %w", reply.New(452, "4.3.1", "Disk full")), "452 4.3.1 Disk full"},
		{errors.New("disk on fire"), "451 4.3.0"},
		{reply.New(250, "2.0.0", "fine"), "451 4.3.0"},
	} {
		ts.recv.acceptErr = tc.err
		rc.startTx("a@client.example", "b@dest.example")
		rc.cmd("DATA")
		rc.send("Subject: x\r\n\r\nbody\r\n.\r\n")
		if r := rc.expect(tc.want[:3]); !strings.HasPrefix(r, tc.want) {
			t.Errorf("Accept error %v → %q, want %q", tc.err, r, tc.want)
		}
	}
	if len(ts.recv.messages(t)) != 0 {
		t.Error("a refused message was stored")
	}
}

// TestLimits: recipients, size (at MAIL and at end of DATA), line length.
func TestLimits(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxRecipients = 100; c.MaxMessageSize = 2000 })
	rc := dialRaw(t, ts.addr)
	rc.cmd("EHLO client.example")

	rc.startTx("a@client.example", "r0@dest.example")
	var b strings.Builder
	for i := 1; i <= 100; i++ {
		fmt.Fprintf(&b, "RCPT TO:<r%d@dest.example>\r\n", i)
	}
	rc.send(b.String())
	for i := 1; i < 100; i++ {
		rc.expect("250")
	}
	if r := rc.expect("452"); !strings.HasPrefix(r, "452 4.5.3 Too many recipients") {
		t.Errorf("101st recipient: %q", r)
	}
	rc.cmd("RSET")

	if r := rc.cmd("MAIL FROM:<a@client.example> SIZE=2001"); !strings.HasPrefix(r, "552 5.3.4") {
		t.Errorf("SIZE=2001: %q", r)
	}
	rc.startTx("a@client.example", "b@dest.example")
	rc.cmd("DATA")
	rc.send("Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 98)+"\r\n", 25) + ".\r\n")
	if r := rc.expect("552"); !strings.HasPrefix(r, "552 5.3.4") {
		t.Errorf("oversized DATA: %q", r)
	}

	// A command longer than 512 octets, as DSN parameters allow
	// (RFC 3461 §4), is accepted.
	rc.cmd("MAIL FROM:<a@client.example>")
	long := "RCPT TO:<b@dest.example> NOTIFY=FAILURE ORCPT=rfc822;" + strings.Repeat("o", 600) + "@dest.example"
	if r := rc.cmd(long); !strings.HasPrefix(r, "250") {
		t.Errorf("%d-octet RCPT: %q", len(long), r)
	}
	// A 1000-octet text line is accepted (RFC 5321 §4.5.3.1.6)...
	rc.cmd("DATA")
	rc.send("Subject: l\r\n\r\n" + strings.Repeat("y", 998) + "\r\n.\r\n")
	rc.expect("250")
	// ...and one beyond MaxLineLength fails the message and ends the session.
	rc.startTx("a@client.example", "b@dest.example")
	rc.cmd("DATA")
	rc.send("Subject: l\r\n\r\n" + strings.Repeat("z", DefaultMaxLineLength+10) + "\r\n.\r\n")
	if r := rc.expect("500"); !strings.HasPrefix(r, "500 5.5.2") {
		t.Errorf("over-long line: %q", r)
	}
	rc.expect("500 5.4.0")
	if _, err := rc.reply(); err == nil {
		t.Error("connection still open after an over-long line")
	}
	if n := len(ts.recv.messages(t)); n != 1 {
		t.Errorf("%d messages stored, want 1", n)
	}
}

// TestTimeouts: an idle client and a client that keeps talking past the
// session limit are both disconnected with 421.
func TestTimeouts(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.ReadTimeout = 300 * time.Millisecond; c.TotalTimeout = 900 * time.Millisecond })
	rc := dialRaw(t, ts.addr)
	rc.cmd("EHLO client.example")
	start := time.Now()
	if r := rc.expect("421"); !strings.HasPrefix(r, "421 4.4.2") {
		t.Errorf("idle: %q", r)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("idle timeout took %v", d)
	}

	start = time.Now()
	rc = dialRaw(t, ts.addr)
	for {
		rc.send("NOOP\r\n")
		r, err := rc.reply()
		if err != nil {
			t.Fatalf("no 421 before the connection ended: %v", err)
		}
		if strings.HasPrefix(r, "421") {
			break
		}
		if time.Since(start) > 3*time.Second {
			t.Fatal("total timeout not enforced")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d := time.Since(start); d < 850*time.Millisecond {
		t.Errorf("session ended after %v, before TotalTimeout", d)
	}
}

// TestDataNeedsWholeRead: a Receiver that returns success without reading
// the body cannot produce a 250.
func TestDataNeedsWholeRead(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Receiver = shortReceiver{c.Receiver.(*diskReceiver)} })
	rc := dialRaw(t, ts.addr)
	rc.cmd("EHLO client.example")
	rc.startTx("a@client.example", "b@dest.example")
	rc.cmd("DATA")
	rc.send("Subject: x\r\n\r\nbody\r\n.\r\n")
	rc.expect("451 4.3.0")
}

type shortReceiver struct{ *diskReceiver }

func (shortReceiver) Accept(_ context.Context, _ uint64, _ *envelope.Envelope, body io.Reader) (int64, error) {
	var b [4]byte
	n, err := body.Read(b[:])
	return int64(n), err
}

// TestCloseAndShutdown: Close ends open sessions (logging close), and
// ListenAndServe returns when its context ends.
func TestCloseAndShutdown(t *testing.T) {
	ts := startServer(t, nil)
	rc := dialRaw(t, ts.addr)
	rc.cmd("EHLO client.example")
	rc.startTx("a@client.example", "b@dest.example")
	if err := ts.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := rc.reply(); err == nil {
		t.Error("session survived Close")
	}
	ts.log.waitFor(t, "Message aborted MID 1 receiving aborted: connection closed")
	ts.log.waitFor(t, "ICID 1 close")

	srv, err := New(Config{Hostname: "outpost.test", Address: "127.0.0.1:0", Receiver: newDiskReceiver(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ListenAndServe(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for srv.Addr() == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	c, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("ListenAndServe: %v", err)
	}

	// Shutdown with an idle session waits, then closes it when ctx ends.
	ts2 := startServer(t, nil)
	rc2 := dialRaw(t, ts2.addr)
	sctx, scancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer scancel()
	if err := ts2.srv.Shutdown(sctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v", err)
	}
	if _, err := rc2.reply(); err == nil {
		t.Error("session survived Shutdown's deadline")
	}
}

// TestNewValidates: configuration errors are reported by New.
func TestNewValidates(t *testing.T) {
	r := newDiskReceiver(t)
	for _, cfg := range []Config{
		{},
		{Receiver: r, MaxRecipients: 99},
		{Receiver: r, MaxLineLength: 512},
		{Receiver: r, ReadTimeout: -1},
		{Receiver: r, RelayFrom: []netip.Prefix{{}}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	s, err := New(Config{Receiver: r, Hostname: "h"})
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.MaxRecipients != 1000 || s.cfg.MaxMessageSize != 35<<20 || s.cfg.ReadTimeout != 5*time.Minute || s.cfg.Address != "127.0.0.1:2525" {
		t.Errorf("defaults: %+v", s.cfg)
	}
}

type fakeResolver struct {
	ptr map[string][]string
	a   map[string][]netip.Addr
}

func (f fakeResolver) LookupAddr(_ context.Context, addr string) ([]string, error) {
	if n, ok := f.ptr[addr]; ok {
		return n, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: addr, IsNotFound: true}
}

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := f.a[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func TestReverseDNS(t *testing.T) {
	r := fakeResolver{
		ptr: map[string][]string{
			"192.0.2.1":   {"mta.client.example."},
			"192.0.2.2":   {"liar.example."},
			"2001:db8::1": {"v6.client.example."},
		},
		a: map[string][]netip.Addr{
			"mta.client.example.": {netip.MustParseAddr("192.0.2.1")},
			"liar.example.":       {netip.MustParseAddr("198.51.100.7")},
			"v6.client.example.":  {netip.MustParseAddr("2001:db8::1")},
		},
	}
	for _, tc := range []struct {
		ip       string
		host     string
		verified bool
	}{
		{"192.0.2.1", "mta.client.example", true},
		{"192.0.2.2", "liar.example", false},
		{"192.0.2.3", "", false},
		{"2001:db8::1", "v6.client.example", true},
		{"127.0.0.1", "localhost", true},
		{"::1", "localhost", true},
	} {
		h, v := reverseDNS(context.Background(), r, netip.MustParseAddr(tc.ip))
		if h != tc.host || v != tc.verified {
			t.Errorf("%s: %q %v, want %q %v", tc.ip, h, v, tc.host, tc.verified)
		}
	}
}

// TestBDAT: go-smtp always offers CHUNKING (RFC 3030); BDAT content goes
// through the same guard and the same 250-after-Accept rule as DATA.
func TestBDAT(t *testing.T) {
	ts := startServer(t, nil)
	rc := dialRaw(t, ts.addr)
	if r := rc.cmd("EHLO client.example"); !strings.Contains(r, "CHUNKING") {
		t.Fatalf("EHLO: %q", r)
	}
	rc.startTx("a@client.example", "b@dest.example")
	bad := "Subject: b\r\n\r\nx\n.\nMAIL FROM:<evil@client.example>\r\n"
	rc.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(bad), bad))
	if r := rc.expect("5"); !strings.HasPrefix(r, "550 5.6.11") {
		t.Errorf("BDAT with bare LF: %q", r)
	}
	rc.startTx("a@client.example", "b@dest.example")
	p1, p2 := "Subject: b\r\n\r\n", "chunked\r\n"
	rc.send(fmt.Sprintf("BDAT %d\r\n%s", len(p1), p1))
	rc.expect("250")
	rc.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(p2), p2))
	rc.expect("250 2.0.0")
	msgs := ts.recv.messages(t)
	if len(msgs) != 1 || msgs[2] != p1+p2 {
		t.Errorf("stored %v", msgs)
	}
}
