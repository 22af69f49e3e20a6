package deliver

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"outpost/internal/envelope"
	"outpost/internal/maillog"
	"outpost/internal/reply"
	"outpost/internal/resolver"
	"outpost/internal/testpki"
	"outpost/internal/tlspolicy"
)

const (
	domain = "example.test"
	mxName = "mx.example.test"
)

// --- receiving side: go-smtp on loopback ---

type received struct {
	From     string
	MailOpts smtp.MailOptions
	Rcpts    []string
	RcptOpts []smtp.RcptOptions
	Data     string
	TLS      bool
}

type backend struct {
	mu       sync.Mutex
	msgs     []received
	rcptErrs map[string]error
}

func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	_, isTLS := c.TLSConnectionState()
	return &session{b: b, cur: received{TLS: isTLS}}, nil
}

func (b *backend) got() []received {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]received(nil), b.msgs...)
}

type session struct {
	b   *backend
	cur received
}

func (s *session) Reset()        { s.cur = received{TLS: s.cur.TLS} }
func (s *session) Logout() error { return nil }
func (s *session) Mail(from string, o *smtp.MailOptions) error {
	s.cur.From = from
	if o != nil {
		s.cur.MailOpts = *o
	}
	return nil
}
func (s *session) Rcpt(to string, o *smtp.RcptOptions) error {
	if err := s.b.rcptErrs[to]; err != nil {
		return err
	}
	s.cur.Rcpts = append(s.cur.Rcpts, to)
	if o != nil {
		s.cur.RcptOpts = append(s.cur.RcptOpts, *o)
	}
	return nil
}
func (s *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.cur.Data = string(b)
	s.b.mu.Lock()
	s.b.msgs = append(s.b.msgs, s.cur)
	s.b.mu.Unlock()
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as 4XyZ"}
}

// startSMTP runs a go-smtp server on 127.0.0.1; tlsCfg nil means no
// STARTTLS. It returns the port.
func startSMTP(t *testing.T, b *backend, tlsCfg *tls.Config, tune func(*smtp.Server)) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := smtp.NewServer(b)
	s.Domain = mxName
	s.TLSConfig = tlsCfg
	s.AllowInsecureAuth = true
	s.ReadTimeout = 10 * time.Second
	s.WriteTimeout = 10 * time.Second
	if tune != nil {
		tune(s)
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// --- sending side ---

type stubResolver map[string][]netip.Addr

func (s stubResolver) Addrs(_ context.Context, host string) ([]netip.Addr, resolver.Answer, error) {
	a, ok := s[host]
	if !ok {
		return nil, resolver.Answer{Status: resolver.NXDomain}, nil
	}
	return a, resolver.Answer{Status: resolver.OK}, nil
}

var loopback = stubResolver{mxName: {netip.MustParseAddr("127.0.0.1")}}

type harness struct {
	c   *Client
	log *maillog.Logger
	buf *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func newHarness(t *testing.T, ca *testpki.CA) *harness {
	buf := &syncBuffer{}
	l := maillog.NewWriter(buf, maillog.Info)
	o := Options{
		Hostname: "outpost.example",
		Resolver: loopback,
		Log:      l,
		Timeouts: Timeouts{Greeting: 5 * time.Second, EHLO: 5 * time.Second, Mail: 5 * time.Second, Rcpt: 5 * time.Second,
			DataInit: 5 * time.Second, DataBlock: 5 * time.Second, DataEnd: 5 * time.Second, StartTLS: 5 * time.Second, Quit: 2 * time.Second},
	}
	if ca != nil {
		o.Roots = ca.Pool()
	}
	return &harness{c: New(o), log: l, buf: buf}
}

var lineRE = regexp.MustCompile(`^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} (\w+): (.*)$`)

// lines returns the mail-log lines written so far, without timestamps
// ("Warning: " kept for non-Info lines).
func (h *harness) lines(t *testing.T) []string {
	t.Helper()
	h.log.Close() // flush
	h.buf.mu.Lock()
	defer h.buf.mu.Unlock()
	var out []string
	for _, l := range strings.Split(strings.TrimRight(h.buf.b.String(), "\n"), "\n") {
		if l == "" {
			continue
		}
		m := lineRE.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("bad log line %q", l)
		}
		if m[1] == "Info" {
			out = append(out, m[2])
		} else {
			out = append(out, m[1]+": "+m[2])
		}
	}
	return out
}

func eqLines(t *testing.T, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("mail log:\n got:\n  %s\n want:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func msg(rcpts ...string) *Message {
	m := &Message{MID: 7, From: "alice@sender.test", Size: 40,
		Body: func() (io.ReadCloser, error) {
			return io.NopCloser(strings.NewReader("Subject: hi\r\n\r\nhello\r\n")), nil
		}}
	for i, r := range rcpts {
		m.Rcpts = append(m.Rcpts, Rcpt{RID: i, Addr: r})
	}
	return m
}

// --- PKI fixtures ---

type pki struct {
	ca                                              *testpki.CA
	valid, hostOnly, expired, wrongName, selfSigned tls.Certificate
}

var (
	pkiOnce sync.Once
	thePKI  pki
)

func getPKI(t *testing.T) pki {
	pkiOnce.Do(func() {
		ca, err := testpki.NewCA("Outpost deliver test CA")
		if err != nil {
			panic(err)
		}
		p := pki{ca: ca}
		p.valid = ca.MustLeaf(domain, mxName)
		p.hostOnly = ca.MustLeaf(mxName)
		p.wrongName = ca.MustLeaf("other.test")
		p.expired, err = ca.Leaf([]string{domain, mxName}, testpki.LeafOptions{
			NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
		if err != nil {
			panic(err)
		}
		p.selfSigned, err = ca.Leaf([]string{domain, mxName}, testpki.LeafOptions{SelfSigned: true})
		if err != nil {
			panic(err)
		}
		thePKI = p
	})
	return thePKI
}

func serverTLS(c tls.Certificate, maxVersion uint16) *tls.Config {
	cfg := &tls.Config{Certificates: []tls.Certificate{c}}
	if maxVersion != 0 {
		cfg.MinVersion = tls.VersionTLS10
		cfg.MaxVersion = maxVersion
	}
	return cfg
}

// --- the TLS mode matrix ---

func TestTLSModes(t *testing.T) {
	p := getPKI(t)
	receivers := map[string]*tls.Config{
		"valid":       serverTLS(p.valid, 0),
		"host-only":   serverTLS(p.hostOnly, 0),
		"expired":     serverTLS(p.expired, 0),
		"wrong-name":  serverTLS(p.wrongName, 0),
		"self-signed": serverTLS(p.selfSigned, 0),
		"no-starttls": nil,
		"tls1.1-max":  serverTLS(p.valid, tls.VersionTLS11),
	}
	const (
		plain     = "plain"
		tlsOK     = "tls"
		tlsUnver  = "tls-unverified" // delivered over TLS, verification failure logged
		notOffer  = "fail-not-offered"
		verifyErr = "fail-verify"
		hsFail    = "fail-handshake"
	)
	cases := []struct {
		mode     tlspolicy.Mode
		minTLS12 bool
		recv     string
		want     string
		reason   string // verify error reason for fail-verify / tls-unverified
	}{
		{tlspolicy.None, false, "valid", plain, ""},
		{tlspolicy.None, false, "self-signed", plain, ""},
		{tlspolicy.Preferred, false, "valid", tlsOK, ""},
		{tlspolicy.Preferred, false, "expired", tlsOK, ""},
		{tlspolicy.Preferred, false, "self-signed", tlsOK, ""},
		{tlspolicy.Preferred, false, "no-starttls", plain, ""},
		{tlspolicy.Preferred, false, "tls1.1-max", tlsOK, ""},
		{tlspolicy.Required, false, "wrong-name", tlsOK, ""},
		{tlspolicy.Required, false, "self-signed", tlsOK, ""},
		{tlspolicy.Required, false, "no-starttls", notOffer, ""},
		{tlspolicy.Required, false, "tls1.1-max", tlsOK, ""},
		{tlspolicy.PreferredVerify, false, "valid", tlsOK, ""},
		{tlspolicy.PreferredVerify, false, "wrong-name", tlsUnver, "peer cert does not match domain"},
		{tlspolicy.PreferredVerify, false, "expired", tlsUnver, "certificate has expired"},
		{tlspolicy.PreferredVerify, false, "no-starttls", plain, ""},
		{tlspolicy.RequiredVerify, false, "valid", tlsOK, ""},
		{tlspolicy.RequiredVerify, false, "host-only", verifyErr, "peer cert does not match domain"},
		{tlspolicy.RequiredVerify, false, "wrong-name", verifyErr, "peer cert does not match domain"},
		{tlspolicy.RequiredVerify, false, "expired", verifyErr, "certificate has expired"},
		{tlspolicy.RequiredVerify, false, "self-signed", verifyErr, "self signed certificate"},
		{tlspolicy.RequiredVerify, false, "no-starttls", notOffer, ""},
		{tlspolicy.RequiredVerify, false, "tls1.1-max", tlsOK, ""},
		{tlspolicy.RequiredVerify, true, "tls1.1-max", hsFail, ""}, // MTA-STS: TLS 1.2 minimum
		{tlspolicy.RequiredVerify, true, "valid", tlsOK, ""},
		{tlspolicy.RequiredVerifyHosted, false, "host-only", tlsOK, ""},
		{tlspolicy.RequiredVerifyHosted, false, "wrong-name", verifyErr, "peer cert does not match domain"},
	}
	for _, tc := range cases {
		name := fmt.Sprintf("%s/min12=%v/%s", tc.mode, tc.minTLS12, tc.recv)
		t.Run(name, func(t *testing.T) {
			b := &backend{}
			port := startSMTP(t, b, receivers[tc.recv], nil)
			h := newHarness(t, p.ca)
			req := tlspolicy.ForMode(tc.mode, domain, mxName)
			if tc.minTLS12 {
				req.MinVersion = tlspolicy.TLS12
			}
			host := tlspolicy.Host{Name: mxName, Port: port, TLS: req}
			cn, err := h.c.Connect(context.Background(), domain, host)
			newDCID := fmt.Sprintf("New SMTP DCID 1 interface 127.0.0.1 address 127.0.0.1 port %d", port)

			switch tc.want {
			case notOffer, verifyErr, hsFail:
				if err == nil {
					cn.Close()
					t.Fatal("connected, want failure")
				}
				var rep *reply.Reply
				if !errors.As(err, &rep) || !rep.Temporary() || !strings.HasPrefix(rep.Enhanced, "4.7.") {
					t.Fatalf("error %v: want a temporary 4.7.x reply", err)
				}
				var de *Error
				if !errors.As(err, &de) || de.Stage != StageTLS {
					t.Fatalf("error %v: want stage starttls", err)
				}
				want := []string{newDCID}
				switch tc.want {
				case verifyErr:
					want = append(want, "DCID 1 TLS deferring: verify error: "+tc.reason)
				case hsFail:
					got := h.lines(t)
					if len(got) < 2 || !strings.HasPrefix(got[1], "DCID 1 TLS failed: handshake failed: ") {
						t.Fatalf("log %q", got)
					}
					want = append(want, got[1])
				}
				want = append(want, "DCID 1 TLS was required but could not be successfully negotiated", "DCID 1 close")
				eqLines(t, h.lines(t), want)
				if len(b.got()) != 0 {
					t.Error("message reached the server")
				}
				return
			}
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			res := cn.Send(context.Background(), msg("bob@example.test", "carol@example.test"))
			state, isTLS := cn.TLSState()
			cn.Close()
			for i, r := range res.Rcpt {
				if !r.Success() {
					t.Fatalf("rcpt %d: %v", i, r)
				}
			}
			if isTLS != (tc.want != plain) {
				t.Fatalf("TLS = %v, want %v", isTLS, tc.want != plain)
			}
			got := b.got()
			if len(got) != 1 || got[0].TLS != isTLS || len(got[0].Rcpts) != 2 {
				t.Fatalf("server got %+v", got)
			}
			want := []string{newDCID}
			if tc.want == plain && tc.recv == "no-starttls" && tc.mode != tlspolicy.None {
				want = append(want, "DCID 1 TLS not offered by host, delivering in plaintext")
			}
			if isTLS {
				want = append(want, fmt.Sprintf("DCID 1 TLS success protocol %s cipher %s", VersionName(state.Version), tls.CipherSuiteName(state.CipherSuite)))
				if tc.recv == "tls1.1-max" && state.Version != tls.VersionTLS11 {
					t.Errorf("version %s, want TLSv1.1", VersionName(state.Version))
				}
			}
			if tc.want == tlsUnver {
				want = append(want, "DCID 1 TLS verification failed, continuing with encrypted connection: verify error: "+tc.reason)
			}
			want = append(want,
				"Delivery start DCID 1 MID 7 to RID [0, 1]",
				"Message done DCID 1 MID 7 to RID [0, 1]",
				"MID 7 RID [0, 1] Response '2.0.0 Ok: queued as 4XyZ'",
				"DCID 1 close")
			eqLines(t, h.lines(t), want)
			if cn.Verified() != (tc.want == tlsOK && tc.mode.Verifies()) {
				t.Errorf("Verified() = %v", cn.Verified())
			}
		})
	}
}

func TestTLS13LogLine(t *testing.T) {
	p := getPKI(t)
	b := &backend{}
	port := startSMTP(t, b, serverTLS(p.valid, 0), nil)
	h := newHarness(t, p.ca)
	cn, err := h.c.Connect(context.Background(), domain, tlspolicy.Host{Name: mxName, Port: port, TLS: tlspolicy.ForMode(tlspolicy.RequiredVerify, domain, mxName)})
	if err != nil {
		t.Fatal(err)
	}
	cn.Close()
	got := h.lines(t)
	if len(got) < 2 || !regexp.MustCompile(`^DCID 1 TLS success protocol TLSv1\.3 cipher TLS_(AES_128_GCM_SHA256|AES_256_GCM_SHA384|CHACHA20_POLY1305_SHA256)$`).MatchString(got[1]) {
		t.Errorf("log %q", got)
	}
}

// Preferred TLS whose handshake fails goes on in plaintext, on a new
// connection, with the reason logged.
func TestPreferredFallsBackToPlaintext(t *testing.T) {
	p := getPKI(t)
	b := &backend{}
	port := startSMTP(t, b, serverTLS(p.valid, tls.VersionTLS11), nil)
	h := newHarness(t, p.ca)
	req := tlspolicy.ForMode(tlspolicy.Preferred, domain, mxName)
	req.MinVersion = tls.VersionTLS12
	cn, err := h.c.Connect(context.Background(), domain, tlspolicy.Host{Name: mxName, Port: port, TLS: req})
	if err != nil {
		t.Fatal(err)
	}
	if _, isTLS := cn.TLSState(); isTLS || cn.DCID() != 2 {
		t.Fatalf("TLS %v DCID %d, want plaintext on DCID 2", isTLS, cn.DCID())
	}
	res := cn.Send(context.Background(), msg("bob@example.test"))
	cn.Close()
	if !res.Rcpt[0].Success() {
		t.Fatal(res.Rcpt[0])
	}
	got := h.lines(t)
	if len(got) != 9 || !strings.HasPrefix(got[1], "DCID 1 TLS failed: handshake failed: ") {
		t.Fatalf("log %q", got)
	}
	reason := strings.TrimPrefix(got[1], "DCID 1 TLS failed: ")
	eqLines(t, got, []string{
		fmt.Sprintf("New SMTP DCID 1 interface 127.0.0.1 address 127.0.0.1 port %d", port),
		"DCID 1 TLS failed: " + reason,
		"DCID 1 close",
		"DCID 1 TLS not negotiated, delivering in plaintext on a new connection: " + reason,
		fmt.Sprintf("New SMTP DCID 2 interface 127.0.0.1 address 127.0.0.1 port %d", port),
		"Delivery start DCID 2 MID 7 to RID [0]",
		"Message done DCID 2 MID 7 to RID [0]",
		"MID 7 RID [0] Response '2.0.0 Ok: queued as 4XyZ'",
		"DCID 2 close",
	})
}

// --- ESMTP features against go-smtp ---

func TestDSNParamsSizeAndDotStuffing(t *testing.T) {
	b := &backend{}
	port := startSMTP(t, b, nil, func(s *smtp.Server) { s.EnableDSN = true; s.MaxMessageBytes = 1 << 20 })
	h := newHarness(t, nil)
	cn, err := h.c.Connect(context.Background(), domain, tlspolicy.Host{Name: mxName, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	if _, ok := cn.Extension("pipelining"); !ok {
		t.Error("PIPELINING not seen")
	}
	body := "Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nlast line without CRLF"
	m := &Message{MID: 9, From: "a@sender.test", RET: "HDRS", EnvID: "env+2B1", EightBit: true, Size: int64(len(body)),
		Rcpts: []Rcpt{{RID: 0, Addr: "bob@example.test", ORCPT: "rfc822;bob@example.test",
			Notify: envNotify(true, true, false)}},
		Body: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil }}
	res := cn.Send(context.Background(), m)
	if !res.Rcpt[0].Success() || res.Data == nil || res.Data.Enhanced != "2.0.0" || res.Data.Text != "Ok: queued as 4XyZ" {
		t.Fatalf("result %+v data %v", res.Rcpt, res.Data)
	}
	got := b.got()[0]
	if got.MailOpts.Return != smtp.DSNReturnHeaders || got.MailOpts.EnvelopeID != "env+1" || got.MailOpts.Size != int64(len(body)) || got.MailOpts.Body != smtp.Body8BitMIME {
		t.Errorf("MAIL options %+v", got.MailOpts)
	}
	ro := got.RcptOpts[0]
	if len(ro.Notify) != 2 || ro.Notify[0] != smtp.DSNNotifySuccess || ro.Notify[1] != smtp.DSNNotifyFailure ||
		ro.OriginalRecipientType != smtp.DSNAddressTypeRFC822 || ro.OriginalRecipient != "bob@example.test" {
		t.Errorf("RCPT options %+v", ro)
	}
	if want := body + "\r\n"; got.Data != want {
		t.Errorf("data %q, want %q", got.Data, want)
	}
}

func envNotify(success, failure, delay bool) (n envelope.Notify) {
	n.Set, n.Success, n.Failure, n.Delay = true, success, failure, delay
	return n
}

func TestPerRecipientReplies(t *testing.T) {
	b := &backend{rcptErrs: map[string]error{
		"busy@example.test": &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "try later"},
		"gone@example.test": &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"},
	}}
	port := startSMTP(t, b, nil, nil)
	h := newHarness(t, nil)
	cn, err := h.c.Connect(context.Background(), domain, tlspolicy.Host{Name: mxName, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	res := cn.Send(context.Background(), msg("busy@example.test", "ok@example.test", "gone@example.test"))
	if r := res.Rcpt[0]; r.Code != 450 || r.Enhanced != "4.2.1" || !r.Temporary() || !r.Remote {
		t.Errorf("busy: %+v", r)
	}
	if r := res.Rcpt[1]; !r.Success() || r != res.Data {
		t.Errorf("ok: %+v", r)
	}
	if r := res.Rcpt[2]; r.Code != 550 || r.Enhanced != "5.1.1" || r.Text != "no such user" {
		t.Errorf("gone: %+v", r)
	}
	// All refused: no DATA, connection still usable.
	res = cn.Send(context.Background(), msg("gone@example.test"))
	if res.Data != nil || res.Rcpt[0].Code != 550 || !cn.Usable() {
		t.Errorf("all refused: %+v data %v usable %v", res.Rcpt[0], res.Data, cn.Usable())
	}
	if err := cn.Reset(context.Background()); err != nil {
		t.Error(err)
	}
	cn.Close()
	if len(b.got()) != 1 {
		t.Errorf("server got %d messages", len(b.got()))
	}
	eqLines(t, h.lines(t)[1:4], []string{
		"Delivery start DCID 1 MID 7 to RID [0, 1, 2]",
		"Message done DCID 1 MID 7 to RID [1]",
		"MID 7 RID [1] Response '2.0.0 Ok: queued as 4XyZ'",
	})
}

func TestSizeLimitAndSMTPUTF8(t *testing.T) {
	b := &backend{}
	port := startSMTP(t, b, nil, func(s *smtp.Server) { s.MaxMessageBytes = 100 })
	h := newHarness(t, nil)
	cn, err := h.c.Connect(context.Background(), domain, tlspolicy.Host{Name: mxName, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	m := msg("bob@example.test")
	m.Size = 5000
	res := cn.Send(context.Background(), m)
	if r := res.Rcpt[0]; r.Code != 552 || r.Enhanced != "5.3.4" || !r.Permanent() || r.Remote {
		t.Errorf("size: %+v", r)
	}
	m = msg("bob@example.test")
	m.SMTPUTF8 = true
	m.Body = func() (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader("Subject: Grüße\r\n\r\nhello\r\n")), nil
	}
	res = cn.Send(context.Background(), m)
	if r := res.Rcpt[0]; r.Enhanced != "5.6.7" || !r.Permanent() {
		t.Errorf("smtputf8 with a UTF-8 header: %+v", r)
	}
	m = msg("jörg@example.test")
	m.SMTPUTF8 = true
	if r := cn.Send(context.Background(), m).Rcpt[0]; r.Enhanced != "5.6.7" {
		t.Errorf("smtputf8 with a UTF-8 address: %+v", r)
	}
	if !cn.Usable() || len(b.got()) != 0 {
		t.Error("local refusals touched the connection")
	}
	// Flagged SMTPUTF8 by the client but all ASCII (a UTF-8 body is not a
	// header): it needs nothing and is delivered without the parameter.
	m = msg("bob@example.test")
	m.SMTPUTF8 = true
	m.Body = func() (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader("Subject: hi\r\n\r\nGrüße\r\n")), nil
	}
	if r := cn.Send(context.Background(), m).Rcpt[0]; !r.Success() {
		t.Errorf("ASCII message flagged SMTPUTF8: %+v", r)
	}
	// Within the limit: delivered.
	if res := cn.Send(context.Background(), msg("bob@example.test")); !res.Rcpt[0].Success() {
		t.Error(res.Rcpt[0])
	}
}

// --- raw scripted peers ---

// rawServer accepts one connection on 127.0.0.1 and runs fn on it.
func rawServer(t *testing.T, fn func(c net.Conn, r *bufio.Reader)) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fn(c, bufio.NewReader(c))
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().(*net.TCPAddr).Port
}

func readCmd(r *bufio.Reader) string {
	l, _ := r.ReadString('\n')
	return strings.TrimRight(l, "\r\n")
}

// serveTransaction answers a plain SMTP session after the greeting/EHLO
// step, recording commands.
func serveTransaction(c net.Conn, r *bufio.Reader, cmds *[]string) {
	for {
		l := readCmd(r)
		if l == "" {
			return
		}
		*cmds = append(*cmds, l)
		switch u := strings.ToUpper(l); {
		case strings.HasPrefix(u, "EHLO"):
			io.WriteString(c, "250-mx.example.test\r\n250 PIPELINING\r\n")
		case strings.HasPrefix(u, "MAIL"), strings.HasPrefix(u, "RCPT"), u == "RSET":
			io.WriteString(c, "250 2.0.0 Ok\r\n")
		case u == "DATA":
			io.WriteString(c, "354 go\r\n")
			for l := readCmd(r); l != "."; l = readCmd(r) {
				*cmds = append(*cmds, "data:"+l)
			}
			io.WriteString(c, "250 2.0.0 Ok: queued as RAW1\r\n")
		case u == "QUIT":
			io.WriteString(c, "221 2.0.0 Bye\r\n")
			return
		default:
			io.WriteString(c, "502 5.5.2 what\r\n")
		}
	}
}

// The server answers STARTTLS with "220 go ahead\r\n250 injected\r\n" in
// one write; the injected line must be discarded, not taken as the reply to
// the EHLO sent after the handshake.
func TestSTARTTLSInjectionDiscarded(t *testing.T) {
	p := getPKI(t)
	var cmds []string
	port := rawServer(t, func(c net.Conn, r *bufio.Reader) {
		io.WriteString(c, "220 mx.example.test ESMTP\r\n")
		readCmd(r) // EHLO
		io.WriteString(c, "250-mx.example.test\r\n250 STARTTLS\r\n")
		if readCmd(r) != "STARTTLS" {
			return
		}
		io.WriteString(c, "220 go ahead\r\n250 injected\r\n")
		tc := tls.Server(c, serverTLS(p.valid, 0))
		if tc.Handshake() != nil {
			return
		}
		serveTransaction(tc, bufio.NewReader(tc), &cmds)
	})
	h := newHarness(t, p.ca)
	cn, err := h.c.Connect(context.Background(), domain, tlspolicy.Host{Name: mxName, Port: port, TLS: tlspolicy.ForMode(tlspolicy.RequiredVerify, domain, mxName)})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cn.Extension("PIPELINING"); !ok {
		t.Error("EHLO after TLS did not read the real reply")
	}
	res := cn.Send(context.Background(), msg("bob@example.test"))
	cn.Close()
	if !res.Rcpt[0].Success() || res.Data.Text != "Ok: queued as RAW1" {
		t.Fatalf("%+v", res.Rcpt[0])
	}
	if len(cmds) == 0 || !strings.HasPrefix(cmds[0], "EHLO outpost.example") {
		t.Errorf("commands after TLS %q", cmds)
	}
	got := h.lines(t)
	if len(got) < 2 || got[1] != "Warning: DCID 1 discarded 14 bytes sent by the server before the TLS handshake" {
		t.Errorf("log %q", got)
	}
}

func TestGreeting5xx(t *testing.T) {
	quit := make(chan string, 1)
	port := rawServer(t, func(c net.Conn, r *bufio.Reader) {
		io.WriteString(c, "554 5.7.1 no service for you\r\n")
		quit <- readCmd(r)
		io.WriteString(c, "221 bye\r\n")
	})
	h := newHarness(t, nil)
	_, err := h.c.Connect(context.Background(), domain, tlspolicy.Host{Name: mxName, Port: port})
	var de *Error
	if !errors.As(err, &de) || de.Stage != StageGreeting || de.Reply.Code != 554 || de.Reply.Enhanced != "5.7.1" || !de.Reply.Remote {
		t.Fatalf("err %v", err)
	}
	if q := <-quit; q != "QUIT" {
		t.Errorf("client sent %q after 554, want QUIT", q)
	}
}

func TestConnectFailureTypes(t *testing.T) {
	// A closed port: connection refused → 4.4.1, stage connect.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	h := newHarness(t, nil)
	_, err := h.c.Connect(context.Background(), domain, tlspolicy.Host{Name: mxName, Port: port})
	var de *Error
	if !errors.As(err, &de) || de.Stage != StageConnect || de.Reply.Enhanced != "4.4.1" || de.Reply.Code != 0 {
		t.Fatalf("refused: %v", err)
	}
	// Unknown host.
	_, err = h.c.Connect(context.Background(), domain, tlspolicy.Host{Name: "nx.example.test", Port: port})
	if !errors.As(err, &de) || de.Stage != StageResolve {
		t.Fatalf("nx: %v", err)
	}
	// Silent server: greeting timeout → 4.4.1.
	port = rawServer(t, func(c net.Conn, r *bufio.Reader) { readCmd(r) })
	h.c.t.Greeting = 200 * time.Millisecond
	_, err = h.c.Connect(context.Background(), domain, tlspolicy.Host{Name: mxName, Port: port})
	if !errors.As(err, &de) || de.Stage != StageGreeting || de.Reply.Enhanced != "4.4.1" {
		t.Fatalf("silent: %v", err)
	}
}

// With PIPELINING, MAIL and every RCPT arrive before the first reply is
// written: the server reads three commands before answering any.
func TestPipeliningBatches(t *testing.T) {
	var cmds []string
	batched := make(chan bool, 1)
	port := rawServer(t, func(c net.Conn, r *bufio.Reader) {
		io.WriteString(c, "220 mx ESMTP\r\n")
		readCmd(r)
		io.WriteString(c, "250-mx\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n")
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		m, r1, r2 := readCmd(r), readCmd(r), readCmd(r)
		batched <- strings.HasPrefix(m, "MAIL") && strings.HasPrefix(r1, "RCPT") && strings.HasPrefix(r2, "RCPT")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550-5.1.1 no\r\n550 5.1.1 such user\r\n")
		serveTransaction(c, r, &cmds)
	})
	h := newHarness(t, nil)
	cn, err := h.c.Connect(context.Background(), domain, tlspolicy.Host{Name: mxName, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	res := cn.Send(context.Background(), msg("a@example.test", "b@example.test"))
	cn.Close()
	if !<-batched {
		t.Error("MAIL and RCPTs were not pipelined")
	}
	if !res.Rcpt[0].Success() {
		t.Errorf("rcpt 0: %v", res.Rcpt[0])
	}
	if r := res.Rcpt[1]; r.Code != 550 || r.Enhanced != "5.1.1" || r.Text != "no; such user" {
		t.Errorf("multi-line reply parsed as %+v", r)
	}
}

func TestContextCancelClosesConn(t *testing.T) {
	port := rawServer(t, func(c net.Conn, r *bufio.Reader) {
		io.WriteString(c, "220 mx ESMTP\r\n")
		readCmd(r)
		io.WriteString(c, "250 mx\r\n")
		readCmd(r) // MAIL, never answered
		readCmd(r)
	})
	h := newHarness(t, nil)
	cn, err := h.c.Connect(context.Background(), domain, tlspolicy.Host{Name: mxName, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	res := cn.Send(ctx, msg("a@example.test"))
	if time.Since(start) > 3*time.Second || !res.Broken || cn.Usable() || !res.Rcpt[0].Temporary() {
		t.Errorf("cancel: %v broken %v after %v", res.Rcpt[0], res.Broken, time.Since(start))
	}
	cn.Close()
}

func TestParseReply(t *testing.T) {
	for _, tc := range []struct {
		code      int
		lines     []string
		enh, text string
	}{
		{250, []string{"2.0.0 Ok: queued as X"}, "2.0.0", "Ok: queued as X"},
		{250, []string{"Ok"}, "", "Ok"},
		{550, []string{"5.1.1 no", "5.1.1 such user"}, "5.1.1", "no; such user"},
		{550, []string{"2.0.0 wrong class"}, "", "2.0.0 wrong class"},
		{421, []string{""}, "", ""},
	} {
		r := makeReply(tc.code, tc.lines)
		if r.Enhanced != tc.enh || r.Text != tc.text || !r.Remote {
			t.Errorf("%d %q: got %+v", tc.code, tc.lines, r)
		}
	}
	for _, bad := range []string{"", "25", "abc ok", "250xok", "650 x"} {
		if _, _, _, ok := parseLine(bad); ok {
			t.Errorf("parseLine(%q) accepted", bad)
		}
	}
}

func TestDotWriter(t *testing.T) {
	for in, want := range map[string]string{
		"":                 ".\r\n",
		"a\r\n":            "a\r\n.\r\n",
		".\r\n":            "..\r\n.\r\n",
		"a\r\n.b\r\n..c":   "a\r\n..b\r\n...c\r\n.\r\n",
		"no final newline": "no final newline\r\n.\r\n",
	} {
		var b bytes.Buffer
		w := bufio.NewWriter(&b)
		d := &dotWriter{w: w}
		// Write byte by byte to exercise line-start tracking across writes.
		for i := 0; i < len(in); i++ {
			d.Write([]byte{in[i]})
		}
		d.finish()
		if b.String() != want {
			t.Errorf("%q → %q, want %q", in, b.String(), want)
		}
	}
}

func TestMatchName(t *testing.T) {
	for _, tc := range []struct {
		presented, ref string
		want           bool
	}{
		{"mx.example.com", "mx.example.com", true},
		{"MX.Example.COM", "mx.example.com", true},
		{"mx.example.com.", "mx.example.com", true},
		{"mx.example.com", "mx.example.com.", true},
		{"*.example.com", "mx.example.com", true},    // RFC 6125 §6.4.3
		{"*.example.com", "example.com", false},      // wildcard needs a label
		{"*.example.com", "a.mx.example.com", false}, // only one label
		{"*.example.com", ".example.com", false},
		{"m*.example.com", "mx.example.com", false}, // no partial wildcards
		{"*x.example.com", "mx.example.com", false},
		{"mx.*.com", "mx.example.com", false}, // only leftmost
		{"*.*.example.com", "a.b.example.com", false},
		{"*.com", "example.com", false}, // not over a single remaining label
		{"*", "example", false},
		{"", "", false},
		{"mx.example.com", "*.example.com", false}, // reference is never a pattern
		{"mx.example.org", "mx.example.com", false},
	} {
		if got := MatchName(tc.presented, tc.ref); got != tc.want {
			t.Errorf("MatchName(%q, %q) = %v, want %v", tc.presented, tc.ref, got, tc.want)
		}
	}
}

func TestMatchCertCNFallback(t *testing.T) {
	p := getPKI(t)
	leaf := *p.valid.Leaf
	if m, ok := MatchCert(&leaf, []string{"nope.test", mxName}); !ok || m != mxName {
		t.Errorf("SAN match = %q %v", m, ok)
	}
	// CN is used only when there is no DNS SAN (RFC 6125 §6.4.4).
	leaf.Subject.CommonName = "cn.example.test"
	if _, ok := MatchCert(&leaf, []string{"cn.example.test"}); ok {
		t.Error("CN used despite DNS SANs")
	}
	leaf.DNSNames = nil
	if _, ok := MatchCert(&leaf, []string{"cn.example.test"}); !ok {
		t.Error("CN not used without DNS SANs")
	}
}

// STARTTLS refused: Required fails with 4.7.5; Preferred goes on in
// plaintext on a new connection.
func TestSTARTTLSRefused(t *testing.T) {
	for _, mode := range []tlspolicy.Mode{tlspolicy.Required, tlspolicy.Preferred} {
		t.Run(mode.String(), func(t *testing.T) {
			var cmds []string
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					r := bufio.NewReader(c)
					io.WriteString(c, "220 mx ESMTP\r\n")
					readCmd(r)
					io.WriteString(c, "250-mx\r\n250 STARTTLS\r\n")
					if l := readCmd(r); l == "STARTTLS" {
						io.WriteString(c, "454 4.7.0 TLS not available\r\n")
						readCmd(r) // QUIT
						c.Close()
						continue
					} else {
						cmds = append(cmds, l)
					}
					c.Close()
				}
			}()
			port := ln.Addr().(*net.TCPAddr).Port
			h := newHarness(t, nil)
			cn, err := h.c.Connect(context.Background(), domain, tlspolicy.Host{Name: mxName, Port: port, TLS: tlspolicy.ForMode(mode, domain, mxName)})
			reason := "STARTTLS refused: 454 4.7.0 TLS not available"
			newDCID := func(n int) string {
				return fmt.Sprintf("New SMTP DCID %d interface 127.0.0.1 address 127.0.0.1 port %d", n, port)
			}
			if mode == tlspolicy.Required {
				if AsReply(err).Enhanced != "4.7.5" {
					t.Fatalf("err %v", err)
				}
				eqLines(t, h.lines(t), []string{newDCID(1), "DCID 1 TLS failed: " + reason,
					"DCID 1 TLS was required but could not be successfully negotiated", "DCID 1 close"})
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cn.Close()
			eqLines(t, h.lines(t), []string{newDCID(1), "DCID 1 TLS failed: " + reason, "DCID 1 close",
				"DCID 1 TLS not negotiated, delivering in plaintext on a new connection: " + reason,
				newDCID(2), "DCID 2 close"})
		})
	}
}

// Connect tries each address in order: ::1 refuses, 127.0.0.1 answers.
func TestConnectTriesEachAddress(t *testing.T) {
	b := &backend{}
	port := startSMTP(t, b, nil, nil)
	h := newHarness(t, nil)
	h.c.o.Resolver = stubResolver{mxName: {netip.MustParseAddr("::1"), netip.MustParseAddr("127.0.0.1")}}
	cn, err := h.c.Connect(context.Background(), domain, tlspolicy.Host{Name: mxName, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	cn.Close()
	if cn.RemoteAddr().Addr() != netip.MustParseAddr("127.0.0.1") || cn.DCID() != 2 {
		t.Errorf("connected to %v as DCID %d", cn.RemoteAddr(), cn.DCID())
	}
	h.c.o.IPPreference = RequireIPv6
	if _, err := h.c.Connect(context.Background(), domain, tlspolicy.Host{Name: mxName, Port: port}); err == nil {
		t.Error("require-ipv6 reached the IPv4 address")
	}
}

func FuzzReadReply(f *testing.F) {
	for _, s := range []string{"250 ok\r\n", "250-a\r\n250 b\r\n", "550-5.1.1 x\r\n550 5.1.1 y\r\n", "25", "250-\r\n251 x\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, b := net.Pipe()
		defer a.Close()
		go func() { b.Write(data); b.Close() }()
		cn := newConn(&Client{}, a, 1, "fuzz", netip.AddrPort{})
		rep, lines, err := cn.readReply(time.Second)
		if err == nil && (rep == nil || len(lines) == 0 || rep.Code < 200 || rep.Code > 599) {
			t.Fatalf("accepted %q as %+v", data, rep)
		}
	})
}

// Alive tells a pooled connection that can carry another message from one
// the server has given up on: idle over TLS and in plaintext it is alive
// (and still works afterwards); after the server sent 421 and closed, or
// just closed, it is not.
func TestAlive(t *testing.T) {
	p := getPKI(t)
	t.Run("tls-idle", func(t *testing.T) {
		b := &backend{}
		port := startSMTP(t, b, serverTLS(p.valid, 0), nil)
		h := newHarness(t, p.ca)
		cn, err := h.c.Connect(context.Background(), domain, tlspolicy.Host{Name: mxName, Port: port, TLS: tlspolicy.ForMode(tlspolicy.RequiredVerify, domain, mxName)})
		if err != nil {
			t.Fatal(err)
		}
		defer cn.Close()
		for i := 0; i < 3; i++ {
			if !cn.Alive() {
				t.Fatalf("check %d: an idle TLS connection reported dead", i)
			}
			if res := cn.Send(context.Background(), msg("bob@example.test")); !res.Rcpt[0].Success() {
				t.Fatalf("send %d after Alive: %v", i, res.Rcpt[0])
			}
		}
		if n := len(b.got()); n != 3 {
			t.Fatalf("receiver got %d messages, want 3", n)
		}
	})
	for _, tc := range []struct {
		name string
		bye  string
	}{{"421-then-close", "421 4.4.2 idle timeout\r\n"}, {"close", ""}} {
		t.Run(tc.name, func(t *testing.T) {
			closed := make(chan struct{})
			port := rawServer(t, func(c net.Conn, r *bufio.Reader) {
				io.WriteString(c, "220 mx.example.test ESMTP\r\n")
				readCmd(r) // EHLO
				io.WriteString(c, "250-mx.example.test\r\n250 PIPELINING\r\n")
				io.WriteString(c, tc.bye)
				c.Close()
				close(closed)
			})
			h := newHarness(t, nil)
			cn, err := h.c.Connect(context.Background(), domain, tlspolicy.Host{Name: mxName, Port: port, TLS: tlspolicy.ForMode(tlspolicy.None, domain, mxName)})
			if err != nil {
				t.Fatal(err)
			}
			defer cn.Close()
			<-closed
			// The FIN (and the 421) may take a moment to arrive on loopback.
			dead := false
			for i := 0; i < 200 && !dead; i++ {
				dead = !cn.Alive()
				if !dead {
					time.Sleep(5 * time.Millisecond)
				}
			}
			if !dead {
				t.Fatal("a connection the server closed is reported alive")
			}
			if cn.Usable() {
				t.Fatal("a dead connection is still usable")
			}
		})
	}
}
