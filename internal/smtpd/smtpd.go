// Package smtpd is the receiving SMTP listener: it accepts mail from the
// organisation's internal MTAs over SMTP (RFC 5321) with the ESMTP extensions
// SIZE, 8BITMIME, SMTPUTF8, PIPELINING, ENHANCEDSTATUSCODES, DSN and STARTTLS,
// and hands each message, streamed, to a Receiver that stores it durably.
//
// go-smtp also always advertises CHUNKING (RFC 3030); BDAT content passes
// through the same content guard and the same 250-after-Accept rule.
//
// The protocol engine is github.com/emersion/go-smtp's server; this package
// owns the policy around it: who may relay, which addresses are acceptable,
// what the content may contain, the limits and timeouts, and the mail log.
//
// # Invariants
//
//   - A 250 reply to DATA (or BDAT LAST) is sent only after Receiver.Accept
//     returned nil, and Accept returns only once the message is fsynced. With
//     PIPELINING this still holds: go-smtp answers DATA synchronously, so no
//     later command is read before the reply is decided.
//   - Only clients whose address is in Config.RelayFrom may start a
//     transaction. Others are logged "ICID n REJECT SG BLOCKED match ALL" and
//     every MAIL FROM gets 554 5.7.1 (RCPT without MAIL is a sequence error,
//     502 5.5.1 from go-smtp). We refuse at MAIL rather than at connect
//     because go-smtp cannot hold a 554 greeting until QUIT (RFC 5321 §3.1),
//     and a reply at MAIL is one every client handles; the REJECT line
//     above records the refusal.
//   - Recipients that could smuggle routing are refused whatever the client:
//     %-hack, bang paths, a second '@' (which is also what a quoted local part
//     holding '@' becomes), local parts that are not a dot-atom (so a quoted
//     local part is never stored unquoted), address literals, and domains that
//     are not fully-qualified LDH (or UTF-8 under SMTPUTF8) names. See
//     checkAddress for the list and the replies.
//   - Message content must use CRLF line ends: a bare CR or bare LF anywhere
//     in the DATA stream (after go-smtp's dot-unstuffing) fails the read the
//     Receiver is doing, so the partial message is discarded, and the client
//     gets 550 5.6.11 once the rest of the DATA is drained. This closes SMTP
//     smuggling (a "\n.\n" or "\r.\r" that a later hop would take for the end
//     of data), for every client, internal ones included. Only
//     "<CRLF>.<CRLF>" ends the data (RFC 5321 §4.1.1.4).
//
// # Limits
//
// RFC 5321 §4.5.3.1 gives sizes every implementation MUST be able to receive
// (512-octet command lines, 1000-octet text lines, 100 recipients); they are
// floors, not ceilings. go-smtp applies one line limit to commands and
// message text alike, and ESMTP parameters lengthen commands (RFC 1870 §3:
// +26, RFC 3461 §4: +500), so MaxLineLength defaults to 2000 octets for
// both. A longer line in DATA is answered 500 5.5.2 and, because the stream
// cannot be resynchronised, the connection is then closed (go-smtp sends
// "500 5.4.0 Too long line"). A message larger than MaxMessageSize gets
// 552 5.3.4 (RFC 1870 §6.3), at MAIL when SIZE= announces it, otherwise at
// the end of DATA. More than MaxRecipients recipients get 452 4.5.3
// (RFC 5321 §4.5.3.1.10).
//
// ReadTimeout bounds every read (a command, or one block of DATA; RFC 5321
// §4.5.3.2 recommends 5 minutes for both) and TotalTimeout bounds the whole
// session; when either fires the client gets 421 4.4.2 and is disconnected.
//
// # Failure modes
//
// A Receiver error is answered with its *reply.Reply (only 4xx and 5xx are
// honoured) or 451 4.3.0 when untyped; CheckSpace failing at MAIL gives
// 452 4.3.1. A client that disconnects mid-DATA makes the Receiver's read
// fail, so nothing is stored. Source routes ("<@a,@b:u@c>") are stripped by
// go-smtp's parser before this package sees the path, as RFC 5321 Appendix C
// says servers SHOULD do; the remaining mailbox goes through every check
// above, so a route can neither open the relay nor choose the next hop.
// go-smtp also discards a CR that directly follows a leading dot (".\rX"
// becomes "X"); such a CR never reaches the stored content, so it cannot be
// smuggled onward, but it is not reported either.
//
// # Bounce verification
//
// When Config.BounceCheck is set, each recipient of a bounce (null reverse
// path, MAIL FROM:<>) that passed the checks above is handed to it after
// the address checks: an error refuses the recipient with
// "553 5.7.1 invalid bounce, rcpt address <x> rejected by bounce
// verification" (logged "MID m ICID n invalid bounce, rcpt address <x>
// rejected by bounce verification."); otherwise the address it returns
// (for prvs tags, the recipient without its tag) is what is stored. Mail
// with a sender is never checked.
//
// This package does not add a Received header (RFC 5321 §4.4): the body
// reaches the Receiver exactly as received, and the envelope carries the
// ICID, client address, HELO name and time from which the spool or the
// delivery side writes the trace line.
package smtpd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"outpost/internal/envelope"
	"outpost/internal/maillog"
)

// Receiver takes responsibility for messages. The application implements it
// over the spool.
type Receiver interface {
	// NewMID allocates a message id at MAIL FROM (logged as "Start MID m ICID n").
	NewMID() uint64
	// CheckSpace is called before accepting a transaction (MAIL FROM); a
	// non-nil error is answered as 452 4.3.1.
	CheckSpace() error
	// Accept stores the message durably (fsynced) and returns only then.
	// body is the raw DATA content exactly as received (CRLF line ends,
	// dot-unstuffed); Accept must read it to io.EOF and must return an error,
	// discarding what it wrote, when a Read fails (bare CR/LF, size limit,
	// lost client). An error (a *reply.Reply when typed) is answered as that
	// reply, or 451 4.3.0 when untyped — never 250.
	Accept(ctx context.Context, mid uint64, env *envelope.Envelope, body io.Reader) (size int64, err error)
}

// ReverseResolver is what the listener needs from DNS to name a client: a
// PTR lookup and the forward confirmation. *net.Resolver implements it.
type ReverseResolver interface {
	LookupAddr(ctx context.Context, addr string) ([]string, error)
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Defaults applied by New to zero Config fields.
const (
	DefaultAddress           = "127.0.0.1:2525"
	DefaultName              = "Main"
	DefaultMaxMessageSize    = 35 << 20 // 35 MB
	DefaultMaxRecipients     = 1000
	MinMaxRecipients         = 100 // RFC 5321 §4.5.3.1.8
	DefaultReadTimeout       = 5 * time.Minute
	DefaultTotalTimeout      = 30 * time.Minute
	DefaultMaxLineLength     = 2000
	DefaultReverseDNSTimeout = 2 * time.Second
)

// Config configures one listener.
type Config struct {
	// Hostname is announced in the greeting and EHLO reply; "" uses
	// os.Hostname.
	Hostname string
	// Address is where ListenAndServe listens; "" is DefaultAddress.
	Address string
	// Name is the interface name written in "New SMTP ICID" lines; "" is
	// DefaultName.
	Name string
	// RelayFrom lists the client networks that may relay through this
	// listener. Empty means nobody may.
	RelayFrom []netip.Prefix
	// TLS enables STARTTLS (RFC 3207); nil means it is not offered.
	TLS *tls.Config
	// MaxMessageSize is the SIZE limit in octets; 0 is DefaultMaxMessageSize.
	MaxMessageSize int64
	// MaxRecipients per transaction; 0 is DefaultMaxRecipients. Values
	// below MinMaxRecipients are refused by New (RFC 5321 §4.5.3.1.8).
	MaxRecipients int
	// ReadTimeout bounds each read from the client (a command or a block of
	// DATA) and each write to it; 0 is DefaultReadTimeout.
	ReadTimeout time.Duration
	// TotalTimeout bounds a whole session; 0 is DefaultTotalTimeout.
	TotalTimeout time.Duration
	// MaxLineLength bounds command and text lines alike, in octets
	// including CRLF; 0 is DefaultMaxLineLength. Below 1000 is refused
	// (RFC 5321 §4.5.3.1.6).
	MaxLineLength int
	// Log receives the mail-log lines; nil discards them.
	Log *maillog.Logger
	// NextICID allocates connection ids; nil uses a counter from 1.
	NextICID func() uint64
	// Receiver stores accepted messages. Required.
	Receiver Receiver
	// OnQueued, when set, is called after a message was accepted and
	// logged "queued for delivery", before the 250 is written.
	OnQueued func(mid uint64)
	// BounceCheck, when set, is called for every recipient of a bounce
	// (MAIL FROM:<>) that passed the address checks. It returns the address
	// to store instead ("" keeps rcpt; prvs.Checker returns the recipient
	// without its bounce-verification tag), or an error to refuse it with
	// 553 5.7.1, logged "MID m ICID n invalid bounce, rcpt address <x>
	// rejected by bounce verification.". It must be safe for concurrent
	// use. Mail with a non-null sender never reaches it.
	BounceCheck func(rcpt string) (deliverTo string, err error)
	// Resolver names clients by PTR with forward confirmation; nil uses
	// net.DefaultResolver. Loopback clients are named "localhost" without
	// a lookup.
	Resolver ReverseResolver
	// ReverseDNSTimeout bounds the client lookup; 0 is
	// DefaultReverseDNSTimeout, negative disables the lookup.
	ReverseDNSTimeout time.Duration
}

// Server is one SMTP listener. Its methods are safe for concurrent use.
type Server struct {
	cfg  Config
	smtp *smtp.Server
	icid atomic.Uint64

	mu     sync.Mutex
	ln     net.Listener
	conns  map[*clientConn]struct{}
	closed bool
}

// New validates cfg, applies the defaults and returns a Server that is not
// yet listening.
func New(cfg Config) (*Server, error) {
	if cfg.Receiver == nil {
		return nil, errors.New("smtpd: config has no Receiver")
	}
	if cfg.Hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("smtpd: hostname: %w", err)
		}
		cfg.Hostname = h
	}
	if cfg.Address == "" {
		cfg.Address = DefaultAddress
	}
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if cfg.MaxMessageSize == 0 {
		cfg.MaxMessageSize = DefaultMaxMessageSize
	}
	if cfg.MaxMessageSize < 0 {
		return nil, fmt.Errorf("smtpd: MaxMessageSize %d is negative", cfg.MaxMessageSize)
	}
	if cfg.MaxRecipients == 0 {
		cfg.MaxRecipients = DefaultMaxRecipients
	}
	if cfg.MaxRecipients < MinMaxRecipients {
		return nil, fmt.Errorf("smtpd: MaxRecipients %d is below the RFC 5321 minimum of %d", cfg.MaxRecipients, MinMaxRecipients)
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.TotalTimeout == 0 {
		cfg.TotalTimeout = DefaultTotalTimeout
	}
	if cfg.ReadTimeout < 0 || cfg.TotalTimeout < 0 {
		return nil, errors.New("smtpd: timeouts must not be negative")
	}
	if cfg.MaxLineLength == 0 {
		cfg.MaxLineLength = DefaultMaxLineLength
	}
	if cfg.MaxLineLength < 1000 {
		return nil, fmt.Errorf("smtpd: MaxLineLength %d is below the RFC 5321 minimum of 1000", cfg.MaxLineLength)
	}
	if cfg.ReverseDNSTimeout == 0 {
		cfg.ReverseDNSTimeout = DefaultReverseDNSTimeout
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	for _, p := range cfg.RelayFrom {
		if !p.IsValid() {
			return nil, errors.New("smtpd: invalid RelayFrom prefix")
		}
	}
	s := &Server{cfg: cfg, conns: map[*clientConn]struct{}{}}
	if cfg.NextICID == nil {
		s.cfg.NextICID = func() uint64 { return s.icid.Add(1) }
	}

	ss := smtp.NewServer(backend{s})
	ss.Domain = cfg.Hostname
	ss.TLSConfig = cfg.TLS
	ss.MaxMessageBytes = cfg.MaxMessageSize
	ss.MaxLineLength = cfg.MaxLineLength
	// Recipients are counted by the session so the reply is ours
	// ("452 4.5.3 Too many recipients").
	ss.MaxRecipients = 0
	// Deadlines are set by clientConn on every read and write, so that a
	// long DATA transfer is bounded per block rather than as one read, and
	// the session total is enforced too.
	ss.ReadTimeout, ss.WriteTimeout = 0, 0
	ss.EnableSMTPUTF8 = true
	ss.EnableDSN = true
	ss.ErrorLog = slogAdapter{}
	s.smtp = ss
	return s, nil
}

// Serve accepts connections on l until Close or Shutdown. It returns nil
// after Close or Shutdown, otherwise the listener's error.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return smtp.ErrServerClosed
	}
	if s.ln == nil {
		s.ln = l
	}
	s.mu.Unlock()
	return s.smtp.Serve(&listener{Listener: l, s: s})
}

// ListenAndServe listens on Config.Address and serves until ctx is done,
// then closes the server (dropping open sessions, whose transactions are
// not acknowledged and so stay the client's responsibility).
func (s *Server) ListenAndServe(ctx context.Context) error {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", s.cfg.Address)
	if err != nil {
		return fmt.Errorf("smtpd: listen on %s: %w", s.cfg.Address, err)
	}
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	return s.Serve(l)
}

// Addr returns the address of the first listener being served, or nil.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Close stops listening and closes every connection at once. A message
// whose DATA was not yet acknowledged is not accepted.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	err := s.smtp.Close()
	if errors.Is(err, smtp.ErrServerClosed) {
		err = nil
	}
	s.closeConns()
	return err
}

// Shutdown stops listening and waits for open sessions to end; when ctx is
// done first it closes them and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	err := s.smtp.Shutdown(ctx)
	if errors.Is(err, smtp.ErrServerClosed) {
		err = nil
	}
	if ctx.Err() != nil {
		s.closeConns()
	}
	return err
}

func (s *Server) closeConns() {
	s.mu.Lock()
	cs := make([]*clientConn, 0, len(s.conns))
	for c := range s.conns {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
}

func (s *Server) track(c *clientConn, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
}

// relayMatch returns the RelayFrom prefix containing ip.
func (s *Server) relayMatch(ip netip.Addr) (netip.Prefix, bool) {
	for _, p := range s.cfg.RelayFrom {
		if p.Contains(ip) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

type backend struct{ s *Server }

func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	nc := c.Conn()
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	cc, ok := nc.(*clientConn)
	if !ok {
		return nil, errors.New("internal error: unknown connection")
	}
	<-cc.ready // the New ICID line comes before any transaction line
	sess := &session{s: b.s, cc: cc, helo: c.Hostname()}
	if st, ok := c.TLSConnectionState(); ok {
		sess.tls = true
		if cc.tlsLogged.CompareAndSwap(false, true) {
			b.s.cfg.Log.ICIDTLS(cc.icid, true, tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), "")
		}
	}
	return sess, nil
}

// slogAdapter sends go-smtp's internal error log to slog.
type slogAdapter struct{}

func (slogAdapter) Printf(format string, v ...any) {
	slog.Debug("smtpd: "+fmt.Sprintf(format, v...), "component", "smtpd")
}

func (slogAdapter) Println(v ...any) {
	slog.Debug("smtpd: "+fmt.Sprintln(v...), "component", "smtpd")
}
