// Package deliver is Outpost's SMTP client: it opens a connection to one
// destination host, secures it as the security plan requires, and runs mail
// transactions over it.
//
// Responsibility: carry out a tlspolicy.Requirement exactly, and report every
// outcome as a typed *reply.Reply. It does not choose hosts, retry, queue or
// bounce; the queue manager does, from the typed results (next MX on a
// connection failure or a 4xx/5xx greeting, per-recipient state from
// Result.Rcpt). It never touches the spool: bodies are streamed from a
// Message.Body callback.
//
// Invariants:
//   - No mail command is sent over a connection weaker than the
//     Requirement: under a Required mode no MAIL is ever sent unless TLS was
//     negotiated, and under a verifying Required mode unless the peer
//     certificate chained to Options.Roots and matched one of
//     Requirement.Identity.Names. The certificate verdict is computed by
//     the tls.Config's VerifyConnection (InsecureSkipVerify only disables
//     Go's built-in check, whose rules are not ours) and enforced right after
//     the handshake, before any SMTP command other than QUIT.
//   - Plaintext fallback happens only under Preferred / PreferredVerify,
//     always on a new connection, and is always logged with the reason.
//   - Bytes received after the 220 reply to STARTTLS and before the
//     handshake are discarded (STARTTLS response injection, CVE-2011-0411
//     class), and everything learnt before TLS is forgotten: EHLO is sent
//     again (RFC 3207 §4.2).
//   - Every read and write has a stage deadline (RFC 5321 §4.5.3.2) and the
//     caller's context closes the connection when cancelled.
//
// Failure modes: Connect returns an *Error whose Reply is the server's reply
// (greeting, EHLO) or a local one with Code 0 and an enhanced code: 4.4.1 no
// answer (connect failure, timeout), 4.4.2 bad connection (I/O or protocol
// error), 4.4.3/4.4.4 address lookup, 4.7.4 TLS required but not offered,
// 4.7.5 TLS negotiation or verification failure. Send never returns an
// error: each recipient gets its own reply, and Result.Broken says the
// connection must not be reused.
//
// 8-bit content: BODY=8BITMIME is sent when the message is 8-bit and the
// server offers 8BITMIME. When it does not, the message is still sent
// unchanged (as Postfix and most MTAs do; RFC 6152 would require
// down-conversion, which would break signatures).
package deliver

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"outpost/internal/dane"
	"outpost/internal/maillog"
	"outpost/internal/reply"
	"outpost/internal/resolver"
	"outpost/internal/tlspolicy"
)

// AddrResolver finds the addresses of a host. *resolver.Resolver
// implements it.
type AddrResolver interface {
	Addrs(ctx context.Context, host string) ([]netip.Addr, resolver.Answer, error)
}

// IPPreference orders or restricts the address families tried.
type IPPreference int

// The preferences; the zero value keeps the resolver's order.
const (
	IPAsResolved IPPreference = iota
	PreferIPv4
	PreferIPv6
	RequireIPv4
	RequireIPv6
)

// Timeouts are the per-stage limits. Zero fields take the defaults of
// RFC 5321 §4.5.3.2 (DefaultTimeouts).
type Timeouts struct {
	Connect   time.Duration // TCP connect (30s)
	Greeting  time.Duration // initial 220 (5m)
	EHLO      time.Duration // EHLO/HELO reply (5m)
	StartTLS  time.Duration // STARTTLS reply and handshake (2m)
	Mail      time.Duration // MAIL reply, also RSET (5m)
	Rcpt      time.Duration // each RCPT reply (5m)
	DataInit  time.Duration // 354 reply (2m)
	DataBlock time.Duration // each write of the body (3m)
	DataEnd   time.Duration // reply to the final "." (10m)
	Quit      time.Duration // QUIT reply (10s)
}

// DefaultTimeouts are the RFC 5321 §4.5.3.2 minimums.
var DefaultTimeouts = Timeouts{
	Connect:   30 * time.Second,
	Greeting:  5 * time.Minute,
	EHLO:      5 * time.Minute,
	StartTLS:  2 * time.Minute,
	Mail:      5 * time.Minute,
	Rcpt:      5 * time.Minute,
	DataInit:  2 * time.Minute,
	DataBlock: 3 * time.Minute,
	DataEnd:   10 * time.Minute,
	Quit:      10 * time.Second,
}

func (t Timeouts) withDefaults() Timeouts {
	d := DefaultTimeouts
	set := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&t.Connect, d.Connect)
	set(&t.Greeting, d.Greeting)
	set(&t.EHLO, d.EHLO)
	set(&t.StartTLS, d.StartTLS)
	set(&t.Mail, d.Mail)
	set(&t.Rcpt, d.Rcpt)
	set(&t.DataInit, d.DataInit)
	set(&t.DataBlock, d.DataBlock)
	set(&t.DataEnd, d.DataEnd)
	set(&t.Quit, d.Quit)
	return t
}

// Options configure a Client.
type Options struct {
	// Hostname is the EHLO name (required).
	Hostname string
	// Port is the destination port when Host.Port is 0 (default 25).
	Port int
	// Roots is the trust store for verifying modes (system roots plus the
	// configured CA file, built by the caller). nil means the system pool.
	Roots *x509.CertPool
	// ClientCert is presented when the server asks for one.
	ClientCert *tls.Certificate
	// Resolver finds host addresses (required unless every host is an IP
	// literal).
	Resolver     AddrResolver
	IPPreference IPPreference
	// Dial opens TCP connections (default: a net.Dialer).
	Dial     func(ctx context.Context, network, addr string) (net.Conn, error)
	Timeouts Timeouts
	Log      *maillog.Logger
	// NextDCID allocates delivery connection ids (default: a counter
	// starting at 1, per Client).
	NextDCID func() uint64
	// Now is the clock for certificate validity (default time.Now).
	Now func() time.Time
}

// Client opens delivery connections. It is safe for concurrent use; each
// Conn is not.
type Client struct {
	o        Options
	t        Timeouts
	sessions tls.ClientSessionCache
	dcid     atomic.Uint64
}

// New makes a Client.
func New(o Options) *Client {
	c := &Client{o: o, t: o.Timeouts.withDefaults(), sessions: tls.NewLRUClientSessionCache(512)}
	if c.o.Port == 0 {
		c.o.Port = 25
	}
	if c.o.Dial == nil {
		d := &net.Dialer{}
		c.o.Dial = d.DialContext
	}
	if c.o.NextDCID == nil {
		c.o.NextDCID = func() uint64 { return c.dcid.Add(1) }
	}
	if c.o.Now == nil {
		c.o.Now = time.Now
	}
	if c.o.Roots == nil {
		if p, err := x509.SystemCertPool(); err == nil {
			c.o.Roots = p
		} else {
			c.o.Roots = x509.NewCertPool() // verification will fail closed
		}
	}
	return c
}

// Stage names the step of Connect that failed.
type Stage string

// The stages, in order; a later stage means the attempt got further.
const (
	StageResolve  Stage = "resolve"
	StageConnect  Stage = "connect"
	StageGreeting Stage = "greeting"
	StageEHLO     Stage = "ehlo"
	StageTLS      Stage = "starttls"
)

func (s Stage) rank() int {
	switch s {
	case StageConnect:
		return 1
	case StageGreeting:
		return 2
	case StageEHLO:
		return 3
	case StageTLS:
		return 4
	}
	return 0
}

// Error is a Connect failure. errors.As(err, new(*reply.Reply)) yields the
// Reply; Err is the underlying cause (network, x509, *VerifyError), if any.
type Error struct {
	Stage Stage
	Host  string
	Addr  netip.AddrPort // zero when no address was tried
	Reply *reply.Reply
	Err   error
}

func (e *Error) Error() string {
	s := "deliver to " + e.Host
	if e.Addr.IsValid() {
		s += " [" + e.Addr.String() + "]"
	}
	s += " at " + string(e.Stage) + ": " + e.Reply.String()
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap exposes both the Reply and the cause to errors.Is/As.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Reply}
	}
	return []error{e.Reply, e.Err}
}

// AsReply returns the typed reply inside err, or a local 4.4.0 temporary
// reply when err carries none.
func AsReply(err error) *reply.Reply {
	var r *reply.Reply
	if errors.As(err, &r) {
		return r
	}
	return reply.New(0, "4.4.0", "%v", err)
}

// Connect opens a connection to host h of domain, trying each address of
// the host in order, and returns it ready for Send: greeted, EHLO done and
// secured as h.TLS requires. When every address fails, the error of the
// attempt that got furthest is returned (a TLS failure says more than a
// refused connection).
func (c *Client) Connect(ctx context.Context, domain string, h tlspolicy.Host) (*Conn, error) {
	port := h.Port
	if port == 0 {
		port = c.o.Port
	}
	pref := c.o.IPPreference
	if h.IPPreference != "" {
		pref = ParseIPPreference(h.IPPreference)
	}
	addrs, err := c.addrs(ctx, h.Name, pref)
	if err != nil {
		return nil, err
	}
	var best *Error
	for _, a := range addrs {
		if ctx.Err() != nil {
			break
		}
		cn, err := c.connectAddr(ctx, domain, h, netip.AddrPortFrom(a, uint16(port)), true)
		if err == nil {
			return cn, nil
		}
		var e *Error
		if !errors.As(err, &e) {
			e = &Error{Stage: StageConnect, Host: h.Name, Reply: AsReply(err), Err: err}
		}
		if best == nil || e.Stage.rank() > best.Stage.rank() {
			best = e
		}
	}
	if best == nil { // cancelled before the first attempt
		return nil, &Error{Stage: StageConnect, Host: h.Name, Reply: reply.New(0, "4.4.1", "no connection attempted"), Err: ctx.Err()}
	}
	return nil, best
}

// ParseIPPreference reads a Destination Control ip_preference
// ("prefer-ipv4", "prefer-ipv6", "require-ipv4", "require-ipv6");
// anything else keeps the resolver's order.
func ParseIPPreference(s string) IPPreference {
	switch s {
	case "prefer-ipv4":
		return PreferIPv4
	case "prefer-ipv6":
		return PreferIPv6
	case "require-ipv4":
		return RequireIPv4
	case "require-ipv6":
		return RequireIPv6
	}
	return IPAsResolved
}

func (c *Client) addrs(ctx context.Context, host string, pref IPPreference) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		as := filterAddrs([]netip.Addr{a.Unmap()}, pref)
		if len(as) == 0 {
			return nil, &Error{Stage: StageResolve, Host: host, Reply: reply.New(0, "4.4.4", "host address is not of the required family"), Err: nil}
		}
		return as, nil
	}
	fail := func(code, text string, err error) error {
		return &Error{Stage: StageResolve, Host: host, Reply: reply.New(0, code, "%s", text), Err: err}
	}
	if c.o.Resolver == nil {
		return nil, fail("4.4.3", "no resolver configured", nil)
	}
	as, ans, err := c.o.Resolver.Addrs(ctx, host)
	if err != nil {
		return nil, fail("4.4.3", "address lookup failed", fmt.Errorf("resolve %s: %w", host, err))
	}
	if ans.Status != resolver.OK || len(as) == 0 {
		return nil, fail("4.4.4", "host has no address ("+ans.Status.String()+")", nil)
	}
	as = filterAddrs(as, pref)
	if len(as) == 0 {
		return nil, fail("4.4.4", "host has no address of the required family", nil)
	}
	return as, nil
}

// filterAddrs applies an IP preference, keeping the relative order within
// each family.
func filterAddrs(in []netip.Addr, p IPPreference) []netip.Addr {
	var v4, v6 []netip.Addr
	for _, a := range in {
		a = a.Unmap()
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	switch p {
	case PreferIPv4:
		return append(v4, v6...)
	case PreferIPv6:
		return append(v6, v4...)
	case RequireIPv4:
		return v4
	case RequireIPv6:
		return v6
	}
	return in
}

// connectAddr makes one connection attempt to ap. tryTLS is false on the
// plaintext fallback connection.
func (c *Client) connectAddr(ctx context.Context, domain string, h tlspolicy.Host, ap netip.AddrPort, tryTLS bool) (*Conn, error) {
	t := c.t
	dcid := c.o.NextDCID()
	ip := ap.Addr().String()
	fail := func(st Stage, r *reply.Reply, err error) *Error {
		if ctx.Err() != nil {
			err = errors.Join(err, ctx.Err())
		}
		return &Error{Stage: st, Host: h.Name, Addr: ap, Reply: r, Err: err}
	}

	dctx, cancel := context.WithTimeout(ctx, t.Connect)
	nc, err := c.o.Dial(dctx, "tcp", ap.String())
	cancel()
	if err != nil {
		c.o.Log.ConnectionError(dcid, ip, "port "+strconv.Itoa(int(ap.Port())), err.Error())
		return nil, fail(StageConnect, reply.New(0, "4.4.1", "no answer from host"), fmt.Errorf("connect: %w", err))
	}
	local := ""
	if la, ok := nc.LocalAddr().(*net.TCPAddr); ok {
		local = la.IP.String()
	}
	c.o.Log.NewDCID(dcid, local, ip, int(ap.Port()))
	cn := newConn(c, nc, dcid, h.Name, ap)
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()

	// RFC 5321 §3.1: wait for the 220 greeting.
	// A refusal here sends the attempt on to the next host, and when that
	// one delivers nothing else names this host's reply: log it.
	refused := func(stage string, r *reply.Reply) {
		c.o.Log.ConnectionError(dcid, ip, stage, r.String())
	}
	rep, _, err := cn.readReply(t.Greeting)
	if err != nil {
		cn.broken = true
		cn.Close()
		r := ioReply(err, "reading the greeting")
		refused("greeting", r)
		return nil, fail(StageGreeting, r, err)
	}
	if rep.Code != 220 {
		refused("greeting", rep)
		cn.Close() // RFC 5321 §3.1: a client receiving 554 SHOULD send QUIT
		return nil, fail(StageGreeting, rep, nil)
	}
	if rep, err := cn.hello(); err != nil {
		refused("EHLO", rep)
		cn.Close()
		return nil, fail(StageEHLO, rep, err)
	}
	if !tryTLS || !h.TLS.Mode.TriesTLS() {
		return cn, nil
	}
	return c.secure(ctx, cn, domain, h, ap, fail)
}

// secure runs STARTTLS on a greeted connection and applies the
// Requirement's verdict. On a negotiation failure under a Preferred mode it
// returns a new plaintext connection instead.
func (c *Client) secure(ctx context.Context, cn *Conn, domain string, h tlspolicy.Host, ap netip.AddrPort,
	fail func(Stage, *reply.Reply, error) *Error) (*Conn, error) {
	req := h.TLS
	mode := req.Mode
	log := c.o.Log
	dcid := cn.dcid

	// RFC 7672 §2.2: a host with usable TLSA records is authenticated by
	// them (dane.Verify) instead of PKIX; its Mode is RequiredVerify, so
	// every failure below ends the attempt: never plaintext.
	useDANE := len(req.DANE) > 0
	daneFailed := func(reason string) {
		if useDANE {
			log.DCIDDANEFailure(dcid, domain, h.Name, reason)
		}
	}

	if _, ok := cn.ext["STARTTLS"]; !ok {
		if mode.MustTLS() {
			daneFailed("STARTTLS not offered")
			log.DCIDTLSRequired(dcid)
			cn.Close()
			return nil, fail(StageTLS, reply.New(0, "4.7.4", "TLS is required, but was not offered by host"), nil)
		}
		// Preferred: nothing was attempted, the session is clean; go on
		// in plaintext on this connection.
		log.Infof("DCID %d TLS not offered by host, delivering in plaintext", dcid)
		return cn, nil
	}

	// negotiationFailed handles STARTTLS refusal or a failed handshake.
	negotiationFailed := func(reason string, cause error) (*Conn, error) {
		log.DCIDTLSFailed(dcid, reason)
		if mode.MustTLS() {
			daneFailed("TLS negotiation failed: " + reason)
			log.DCIDTLSRequired(dcid)
			cn.Close()
			return nil, fail(StageTLS, reply.New(0, "4.7.5", "TLS negotiation failed: %s", reason), cause)
		}
		cn.Close()
		log.DCIDPlaintextFallback(dcid, reason)
		return c.connectAddr(ctx, domain, h, ap, false)
	}

	rep, _, err := cn.cmd(c.t.StartTLS, "STARTTLS")
	if err != nil {
		cn.broken = true
		return negotiationFailed("STARTTLS: "+err.Error(), err)
	}
	if rep.Code != 220 {
		return negotiationFailed("STARTTLS refused: "+rep.String(), rep)
	}
	// Discard anything pipelined after the 220 (response injection): the
	// buffered reader is dropped and the TLS layer reads the socket itself.
	if n := cn.r.Buffered(); n > 0 {
		log.Warnf("DCID %d discarded %d bytes sent by the server before the TLS handshake", dcid, n)
	}
	cn.r = nil

	// The verdict starts as a failure so that it fails closed if
	// VerifyConnection is somehow not called.
	var verdict error = &VerifyError{Reason: "certificate not checked"}
	var daneRes dane.Result
	cfg := &tls.Config{
		ServerName: h.Name, // SNI is always the host name
		// Go's own check is replaced by ours (VerifyConnection below):
		// different identity rules (several reference names, CN
		// fallback), and non-verifying modes must still connect.
		InsecureSkipVerify: true,
		MinVersion:         req.MinVersion,
		ClientSessionCache: c.sessions,
		VerifyConnection: func(cs tls.ConnectionState) error {
			switch {
			case useDANE:
				// RFC 7672 §3: only the TLSA records are trusted.
				daneRes = dane.VerifyAt(cs, req.DANE, req.Identity.Names, c.o.Now())
				verdict = nil
				if !daneRes.OK {
					verdict = &VerifyError{Reason: "DANE: " + daneRes.Reason}
				}
			case mode.Verifies():
				_, verdict = Verify(cs, c.o.Roots, req.Identity.Names, c.o.Now())
			default:
				verdict = nil
			}
			return nil // enforced below, so that QUIT can still be sent
		},
	}
	if cfg.MinVersion == 0 {
		// Opportunistic TLS: any TLS beats plaintext (RFC 7435).
		cfg.MinVersion = tls.VersionTLS10
	}
	if c.o.ClientCert != nil {
		cert := c.o.ClientCert
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	tc := tls.Client(cn.nc, cfg)
	cn.nc.SetDeadline(time.Now().Add(c.t.StartTLS))
	if err := tc.HandshakeContext(ctx); err != nil {
		cn.broken = true
		return negotiationFailed("handshake failed: "+err.Error(), err)
	}
	cn.nc.SetDeadline(time.Time{})
	cn.setConn(tc)
	cs := tc.ConnectionState()

	if useDANE && verdict != nil {
		daneFailed(daneRes.Reason)
		log.DCIDTLSRequired(dcid)
		cn.Close() // QUIT over the unauthenticated session; nothing else is sent
		return nil, fail(StageTLS, reply.New(0, "4.7.5", "DANE authentication of %s failed: %s", h.Name, daneRes.Reason), verdict)
	}
	if verdict != nil && mode.MustVerify() {
		log.DCIDTLSDeferring(dcid, verdict.Error())
		log.DCIDTLSRequired(dcid)
		cn.Close() // QUIT over the (unverified) TLS session; nothing else is sent
		var ve *VerifyError
		reason := verdict.Error()
		if errors.As(verdict, &ve) {
			reason = ve.Reason
		}
		return nil, fail(StageTLS, reply.New(0, "4.7.5", "TLS certificate verification failed: %s", reason), verdict)
	}
	log.DCIDTLSSuccess(dcid, VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite))
	if useDANE {
		log.DCIDDANESuccess(dcid, domain, h.Name, daneRes.Record.String())
	}
	if verdict != nil {
		log.DCIDTLSVerifyFailedContinuing(dcid, verdict.Error())
	}
	cn.tls = &cs
	cn.verified = mode.Verifies() && verdict == nil
	// RFC 3207 §4.2: the client MUST discard any knowledge obtained from
	// the server before TLS, and SHOULD send EHLO again.
	cn.ext = nil
	if rep, err := cn.hello(); err != nil {
		cn.Close()
		return nil, fail(StageEHLO, rep, err)
	}
	return cn, nil
}

// VersionName spells a TLS version the way the mail log does ("TLSv1.2").
func VersionName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLSv1"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return fmt.Sprintf("TLS(0x%04x)", v)
}

// ioReply turns a local I/O or protocol error into a typed reply: 4.4.1
// for a timeout (no answer), 4.4.2 otherwise (bad connection).
func ioReply(err error, doing string) *reply.Reply {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return reply.New(0, "4.4.1", "timeout while %s", doing)
	}
	return reply.New(0, "4.4.2", "lost connection while %s", doing)
}

func newConn(c *Client, nc net.Conn, dcid uint64, host string, ap netip.AddrPort) *Conn {
	cn := &Conn{c: c, dcid: dcid, host: host, addr: ap}
	cn.setConn(nc)
	return cn
}

func (cn *Conn) setConn(nc net.Conn) {
	cn.nc = nc
	cn.r = bufio.NewReaderSize(nc, maxLine)
	cn.w = bufio.NewWriterSize(&timedWriter{cn: cn}, 32<<10)
}

// timedWriter sets a write deadline before each write on the socket, so
// each flushed block gets the current stage's timeout.
type timedWriter struct{ cn *Conn }

func (t *timedWriter) Write(p []byte) (int, error) {
	if t.cn.wt > 0 {
		t.cn.nc.SetWriteDeadline(time.Now().Add(t.cn.wt))
	}
	return t.cn.nc.Write(p)
}
