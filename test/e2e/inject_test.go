package e2e

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"strings"
	"testing"
	"time"

	"outpost/internal/testpki"
)

// rawClient is an SMTP client that writes exactly the bytes it is given.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	r    *textproto.Reader
	br   *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	rc := &rawClient{t: t, conn: c}
	rc.setConn(c)
	if code, msg := rc.reply(); code != 220 {
		t.Fatalf("greeting %d %s", code, msg)
	}
	return rc
}

func (rc *rawClient) setConn(c net.Conn) {
	rc.conn = c
	rc.br = bufio.NewReader(c)
	rc.r = textproto.NewReader(rc.br)
}

func (rc *rawClient) send(s string) {
	rc.t.Helper()
	if _, err := rc.conn.Write([]byte(s)); err != nil {
		rc.t.Fatalf("write %q: %v", s, err)
	}
}

func (rc *rawClient) reply() (int, string) {
	rc.t.Helper()
	code, msg, err := rc.r.ReadResponse(0)
	if err != nil {
		rc.t.Fatalf("reading a reply: %v (code %d %q)", err, code, msg)
	}
	return code, msg
}

// TestInboundSTARTTLSInjectionIsNotAnswered: a command pipelined after
// STARTTLS in the same packet (CVE-2011-0411 style) must not be executed
// inside the TLS session.
func TestInboundSTARTTLSInjectionIsNotAnswered(t *testing.T) {
	w := newWorld(t, "127.0.0.13")
	dir := t.TempDir()
	cert, key, err := testpki.WriteFiles(dir, "in", w.mustLeaf(t, []string{"outpost.test"}, nil))
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(baseConfig(w, ""), "    relay_from: [127.0.0.0/8]\n",
		fmt.Sprintf("    relay_from: [127.0.0.0/8]\n    tls: {cert_file: %s, key_file: %s}\n", cert, key), 1)
	w.d = startOutpost(t, dir, cfg)

	rc := dialRaw(t, w.d.smtp)
	rc.send("EHLO client.test\r\n")
	if code, msg := rc.reply(); code != 250 || !strings.Contains(msg, "STARTTLS") {
		t.Fatalf("EHLO: %d %q: STARTTLS not offered", code, msg)
	}
	rc.send("STARTTLS\r\nRSET\r\n")
	if code, msg := rc.reply(); code != 220 {
		t.Fatalf("STARTTLS answered %d %s", code, msg)
	}
	// Nothing may follow the 220 in plaintext (an answer to the RSET).
	rc.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n := rc.br.Buffered(); n > 0 {
		b, _ := rc.br.Peek(n)
		t.Fatalf("plaintext after the 220 to STARTTLS: %q", b)
	}
	if b, err := rc.br.Peek(1); err == nil {
		t.Fatalf("plaintext after the 220 to STARTTLS: %q", b)
	}
	rc.conn.SetDeadline(time.Now().Add(30 * time.Second))

	pool := w.ca.Pool()
	tc := tls.Client(rc.conn, &tls.Config{ServerName: "outpost.test", RootCAs: pool})
	if err := tc.Handshake(); err != nil {
		// Dropping the connection would be a safe answer too, but Outpost
		// discards the injected bytes and goes on.
		t.Fatalf("TLS handshake after STARTTLS: %v", err)
	}
	rc.setConn(tc)
	// The injected RSET must not be answered inside the TLS session.
	tc.SetReadDeadline(time.Now().Add(time.Second))
	if b, err := rc.br.Peek(1); err == nil || !isTimeout(err) {
		line, _ := rc.br.ReadString('\n')
		t.Fatalf("the server answered the injected RSET after the handshake: %q%q (err %v)", b, line, err)
	}
	tc.SetDeadline(time.Now().Add(30 * time.Second))
	rc.send("EHLO client.test\r\n")
	code, msg := rc.reply()
	if code != 250 || strings.Contains(msg, "STARTTLS") || !strings.Contains(msg, "PIPELINING") {
		t.Fatalf("first reply under TLS is not the EHLO's: %d %q", code, msg)
	}
	rc.send("QUIT\r\n")
	if code, _ := rc.reply(); code != 221 {
		t.Fatalf("QUIT answered %d", code)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}

// smuggleAttempt runs one transaction whose content holds end, a fake end
// of data, followed by a smuggled transaction, all in one write, then the
// real end of data and QUIT. It returns the reply to the real end of data
// and fails the test if any smuggled command was answered.
func smuggleAttempt(t *testing.T, addr, end string) (int, string) {
	t.Helper()
	rc := dialRaw(t, addr)
	rc.send("EHLO client.test\r\n")
	if code, _ := rc.reply(); code != 250 {
		t.Fatalf("EHLO answered %d", code)
	}
	rc.send("MAIL FROM:<alice@sender.test>\r\nRCPT TO:<bob@smuggle.test>\r\nDATA\r\n")
	for _, want := range []int{250, 250, 354} {
		if code, msg := rc.reply(); code != want {
			t.Fatalf("got %d %s, want %d", code, msg, want)
		}
	}
	rc.send("From: <alice@sender.test>\r\nSubject: cover\r\n\r\nhello" + end +
		"MAIL FROM:<evil@sender.test>\r\nRCPT TO:<victim@smuggle.test>\r\nDATA\r\n" +
		"From: <ceo@sender.test>\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\nQUIT\r\n")
	code, msg := rc.reply()
	// The next reply must be QUIT's: none of the smuggled commands ran.
	// (A server that closes the connection after a 5xx is safe too.)
	if c2, m2, err := rc.r.ReadResponse(0); err != nil && !errors.Is(err, io.EOF) || err == nil && c2 != 221 {
		t.Fatalf("after the %d reply to the end of data the server answered %d %q, err %v: smuggled commands executed", code, c2, m2, err)
	}
	return code, msg
}

// TestBareLFSmugglingIsRejected: a lone <LF>.<LF> (and its CR/LF variants)
// inside DATA never ends the message; the message with bare line endings
// gets a 5xx, the smuggled commands are never run, and nothing reaches the
// destination.
func TestBareLFSmugglingIsRejected(t *testing.T) {
	w := newWorld(t, "127.0.0.12")
	rcv := w.addDomain(t, "smuggle.test", "mx.smuggle.test", "127.0.0.12", nil)
	w.d = startOutpost(t, t.TempDir(), baseConfig(w, ""))

	for _, end := range []string{"\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r", "\n.\r", "\r.\n"} {
		t.Run(fmt.Sprintf("%q", end), func(t *testing.T) {
			if code, msg := smuggleAttempt(t, w.d.smtp, end); code < 500 || code > 599 {
				t.Fatalf("message with a bare line ending got %d %q, want 5xx", code, msg)
			}
		})
	}
	time.Sleep(2 * time.Second)
	if n := rcv.count(); n != 0 {
		rcv.mu.Lock()
		t.Fatalf("%d message(s) reached the destination: %+v", n, rcv.msgs)
	}
	if out, _ := w.d.cli("queue", "list"); !strings.Contains(out, "0 message(s)") {
		t.Fatalf("something was queued:\n%s", out)
	}
	if strings.Contains(w.d.mailLog(), "evil@sender.test") {
		t.Errorf("the smuggled MAIL FROM reached the mail log:\n%s", w.d.mailLog())
	}
}

// TestBareCRAfterLeadingDotIsRejected: "<CRLF>.<CR>" followed by anything
// but LF. go-smtp's DATA reader (v0.25.1, dataReader stateDotCR, taken from
// net/textproto) drops the dot and the CR, so the content guard never sees
// the bare CR and the message is accepted with that line silently altered.
// The safety property is checked strictly (no smuggled transaction, no
// bare CR forwarded); the RFC 5321 §2.3.8 rejection the issue asks for is
// a known gap, reported as a skip until the reader is fixed.
func TestBareCRAfterLeadingDotIsRejected(t *testing.T) {
	w := newWorld(t, "127.0.0.14")
	rcv := w.addDomain(t, "smuggle.test", "mx.smuggle.test", "127.0.0.14", nil)
	w.d = startOutpost(t, t.TempDir(), baseConfig(w, ""))
	code, msg := smuggleAttempt(t, w.d.smtp, "\r\n.\r")
	if code >= 500 && code <= 599 {
		time.Sleep(time.Second)
		if n := rcv.count(); n != 0 {
			t.Fatalf("%d message(s) reached the destination after a 5xx", n)
		}
		return
	}
	if code != 250 {
		t.Fatalf("end of data answered %d %q", code, msg)
	}
	got := rcv.wait(t, 20*time.Second)
	time.Sleep(time.Second)
	if n := rcv.count(); n != 1 {
		t.Fatalf("%d messages reached the destination, want the one cover message", n)
	}
	if len(got.Rcpts) != 1 || got.Rcpts[0] != "bob@smuggle.test" || got.From != "alice@sender.test" {
		t.Fatalf("delivered envelope %+v: the smuggled transaction took effect", got)
	}
	body := strings.ReplaceAll(got.Data, "\r\n", "")
	if strings.ContainsAny(body, "\r\n") {
		t.Fatalf("a bare CR or LF was forwarded to the destination:\n%q", got.Data)
	}
	t.Fatalf("<CRLF>.<CR>X in DATA got %d %q instead of a 5xx", code, msg)
}
