// Package resolver is Outpost's DNS client: MX, address, TXT and TLSA
// lookups against configured recursive resolvers, with typed outcomes.
//
// Responsibility: turn a question into either records or one of the
// outcomes that lead to different delivery decisions — NXDOMAIN (the name
// does not exist: permanent), NODATA (the name exists without records of the
// type), SERVFAIL/REFUSED and timeout (temporary). Callers switch on
// Answer.Status; no caller ever matches error strings.
//
// DNSSEC: queries set the DO bit (EDNS0, 1232-byte buffer) and the AD flag,
// and Answer.Secure is the AD bit of the response. Like Postfix, Outpost does
// not validate signatures itself: the AD bit is only meaningful when the
// configured servers are a trusted validating resolver reached over a
// trusted path (in practice a resolver on loopback, e.g. unbound on
// 127.0.0.1). Pointing Outpost at a remote resolver makes Secure untrustworthy
// and so DANE unsafe; operators must not do that when DANE is enabled.
//
// Invariants:
//   - A cached answer is never served beyond its TTL (the smallest TTL of the
//     records used); negative answers are cached for the SOA minimum
//     (RFC 2308 §5), capped by MaxNegativeTTL; temporary failures are never
//     cached.
//   - Every query honours its context; each network exchange also has a
//     per-query timeout.
//   - UDP responses with the TC bit are retried over TCP (RFC 7766 §5).
//
// Failure modes: a temporary outcome (ServFail, Refused, Timeout) is returned
// as a non-nil *Error carrying the Status; NXDomain and NoData are
// definitive answers, returned with a nil error and the Status in the
// Answer. A null MX (RFC 7505) is reported as ErrNullMX.
package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"outpost/internal/maillog"
)

// Status is the outcome class of a lookup.
type Status int

// The outcomes. The zero value is OK.
const (
	OK       Status = iota // records found
	NXDomain               // RCODE 3: the name does not exist (permanent)
	NoData                 // the name exists but has no records of the type
	ServFail               // RCODE 2 or any other error RCODE: temporary
	Timeout                // no answer from any server in time: temporary
	Refused                // RCODE 5: temporary (misconfigured resolver)
)

var statusNames = [...]string{"OK", "NXDOMAIN", "NODATA", "SERVFAIL", "TIMEOUT", "REFUSED"}

// String is the conventional spelling ("NXDOMAIN", "SERVFAIL", ...).
func (s Status) String() string {
	if s < 0 || int(s) >= len(statusNames) {
		return fmt.Sprintf("status(%d)", int(s))
	}
	return statusNames[s]
}

// Temporary reports whether a later retry may succeed (ServFail, Timeout,
// Refused).
func (s Status) Temporary() bool { return s == ServFail || s == Timeout || s == Refused }

// Answer describes how a lookup was answered.
type Answer struct {
	Status Status
	// Secure is the AD bit: the (trusted, loopback) resolver validated the
	// answer with DNSSEC. For answers that combine several queries (Addrs),
	// it is true only when every contributing answer was secure.
	Secure bool
	// TTL is how long the answer may still be used (remaining time when it
	// came from the cache).
	TTL time.Duration
}

// Error is a temporary lookup failure. Use errors.As to get the Status.
type Error struct {
	Name   string
	Type   string // "MX", "A", ...
	Status Status
	Err    error // the network error for Timeout, else nil
}

func (e *Error) Error() string {
	s := fmt.Sprintf("lookup %s %s: %s", e.Name, e.Type, e.Status)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Temporary is always true for an *Error; it exists for readability.
func (e *Error) Temporary() bool { return true }

// ErrNullMX is returned by MX when the domain publishes a null MX
// (RFC 7505: a single MX record with preference 0 and target "."), which
// means the domain accepts no mail. Delivery must fail permanently with
// 5.1.10 (RFC 7505 §4.1: a sending MTA MUST NOT attempt delivery).
var ErrNullMX = errors.New("domain publishes a null MX (RFC 7505): it accepts no mail")

// MX is one mail exchanger. Host has no trailing dot.
type MX struct {
	Host string
	Pref uint16
}

// TLSA is one DANE TLSA record (RFC 6698 §2.1).
type TLSA struct {
	Usage, Selector, MatchingType uint8
	Data                          []byte // the certificate association data
}

// Defaults.
const (
	DefaultTimeout     = 5 * time.Second
	DefaultAttempts    = 2
	DefaultCacheSize   = 10000
	DefaultMaxNegative = 15 * time.Minute
	// MaxCNAMEHops bounds CNAME chasing when the server did not follow a
	// chain itself.
	MaxCNAMEHops = 8
	ednsSize     = 1232 // DNS flag day 2020 recommendation
)

// Option configures a Resolver.
type Option func(*Resolver)

// WithTimeout sets the per-exchange timeout (default 5s).
func WithTimeout(d time.Duration) Option { return func(r *Resolver) { r.timeout = d } }

// WithAttempts sets how many times the server list is tried (default 2).
func WithAttempts(n int) Option { return func(r *Resolver) { r.attempts = n } }

// WithLog sends a Debug `DNS query: Q(name, 'TYPE')` line for every
// network query to the mail log.
func WithLog(l *maillog.Logger) Option { return func(r *Resolver) { r.log = l } }

// WithCacheSize bounds the number of cached answers; 0 disables caching.
func WithCacheSize(n int) Option { return func(r *Resolver) { r.cacheSize = n } }

// WithMaxNegativeTTL caps how long NXDOMAIN/NODATA answers are cached.
func WithMaxNegativeTTL(d time.Duration) Option { return func(r *Resolver) { r.maxNeg = d } }

// WithClock replaces time.Now for cache expiry (tests).
func WithClock(now func() time.Time) Option { return func(r *Resolver) { r.now = now } }

// Resolver queries a fixed list of recursive servers. It is safe for
// concurrent use.
type Resolver struct {
	servers   []string
	timeout   time.Duration
	attempts  int
	log       *maillog.Logger
	cacheSize int
	maxNeg    time.Duration
	now       func() time.Time

	mu    sync.Mutex
	cache map[cacheKey]cacheEntry
}

type cacheKey struct {
	name  string
	qtype uint16
}

type cacheEntry struct {
	rrs     []dns.RR
	ans     Answer
	expires time.Time
}

// New makes a resolver for servers ("host:port"; a bare address gets port
// 53).
func New(servers []string, opts ...Option) *Resolver {
	r := &Resolver{
		timeout:   DefaultTimeout,
		attempts:  DefaultAttempts,
		cacheSize: DefaultCacheSize,
		maxNeg:    DefaultMaxNegative,
		now:       time.Now,
		cache:     map[cacheKey]cacheEntry{},
	}
	for _, s := range servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			s = net.JoinHostPort(strings.Trim(s, "[]"), "53")
		}
		r.servers = append(r.servers, s)
	}
	for _, o := range opts {
		o(r)
	}
	if r.attempts < 1 {
		r.attempts = 1
	}
	return r
}

// FromResolvConf returns the nameservers of a resolv.conf file as
// "host:port" strings.
func FromResolvConf(path string) ([]string, error) {
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("read resolver configuration %s: %w", path, err)
	}
	if len(cc.Servers) == 0 {
		return nil, fmt.Errorf("read resolver configuration %s: no nameserver lines", path)
	}
	out := make([]string, 0, len(cc.Servers))
	for _, s := range cc.Servers {
		out = append(out, net.JoinHostPort(s, cc.Port))
	}
	return out, nil
}

// SystemServers is FromResolvConf("/etc/resolv.conf").
func SystemServers() ([]string, error) {
	if _, err := os.Stat("/etc/resolv.conf"); err != nil {
		return nil, fmt.Errorf("system resolver: %w", err)
	}
	return FromResolvConf("/etc/resolv.conf")
}

// MX looks up the mail exchangers of domain, sorted by preference (stable
// for equal preferences; shuffling is the caller's business).
//
// A null MX (RFC 7505) returns ErrNullMX with Answer.Status OK. If a "."
// target appears alongside real hosts (a violation of RFC 7505 §3), the "."
// record is ignored and the real hosts are returned. NODATA means the
// caller must fall back to the domain's address records (RFC 5321 §5.1).
func (r *Resolver) MX(ctx context.Context, domain string) ([]MX, Answer, error) {
	rrs, ans, err := r.lookup(ctx, domain, dns.TypeMX)
	if err != nil || ans.Status != OK {
		return nil, ans, err
	}
	var out []MX
	null := false
	for _, rr := range rrs {
		mx := rr.(*dns.MX)
		host := strings.TrimSuffix(mx.Mx, ".")
		if host == "" {
			null = true
			continue
		}
		out = append(out, MX{Host: strings.ToLower(host), Pref: mx.Preference})
	}
	if len(out) == 0 && null {
		return nil, ans, ErrNullMX
	}
	sortMX(out)
	return out, ans, nil
}

func sortMX(m []MX) {
	// insertion sort: stable and MX sets are tiny
	for i := 1; i < len(m); i++ {
		for j := i; j > 0 && m[j].Pref < m[j-1].Pref; j-- {
			m[j], m[j-1] = m[j-1], m[j]
		}
	}
}

// Addrs looks up A and AAAA records of host (in parallel) and returns IPv4
// addresses first, then IPv6. When one family fails temporarily and the
// other has addresses, the addresses are returned (as Postfix does); the
// lookup fails only when no address was found and either query failed
// temporarily. NXDOMAIN from either query is NXDomain. Secure is true only
// if both answers were secure; TTL is the smaller one.
func (r *Resolver) Addrs(ctx context.Context, host string) ([]netip.Addr, Answer, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, Answer{Status: OK, Secure: false}, nil
	}
	type res struct {
		rrs []dns.RR
		ans Answer
		err error
	}
	var r4, r6 res
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r6.rrs, r6.ans, r6.err = r.lookup(ctx, host, dns.TypeAAAA)
	}()
	r4.rrs, r4.ans, r4.err = r.lookup(ctx, host, dns.TypeA)
	wg.Wait()

	var addrs []netip.Addr
	for _, rr := range r4.rrs {
		if a, ok := netip.AddrFromSlice(rr.(*dns.A).A.To4()); ok {
			addrs = append(addrs, a)
		}
	}
	for _, rr := range r6.rrs {
		if a, ok := netip.AddrFromSlice(rr.(*dns.AAAA).AAAA.To16()); ok {
			addrs = append(addrs, a)
		}
	}
	ans := Answer{Status: OK, Secure: r4.ans.Secure && r6.ans.Secure, TTL: minTTL(r4.ans.TTL, r6.ans.TTL)}
	switch {
	case len(addrs) > 0:
		if r4.err != nil {
			ans.Secure, ans.TTL = r6.ans.Secure, r6.ans.TTL
		} else if r6.err != nil {
			ans.Secure, ans.TTL = r4.ans.Secure, r4.ans.TTL
		}
		return addrs, ans, nil
	case r4.err != nil:
		return nil, r4.ans, r4.err
	case r6.err != nil:
		return nil, r6.ans, r6.err
	case r4.ans.Status == NXDomain || r6.ans.Status == NXDomain:
		ans.Status = NXDomain
	default:
		ans.Status = NoData
	}
	return nil, ans, nil
}

func minTTL(a, b time.Duration) time.Duration {
	if a < b {
		return a
	}
	return b
}

// TXT looks up the TXT records of name, following CNAMEs (MTA-STS
// discovery, RFC 8461 §3.1, queries `_mta-sts.<domain>`, which is often a
// CNAME). Each record's character-strings are concatenated into one string
// (RFC 7208 §3.3 style), one string per record.
func (r *Resolver) TXT(ctx context.Context, name string) ([]string, Answer, error) {
	rrs, ans, err := r.lookup(ctx, name, dns.TypeTXT)
	if err != nil || ans.Status != OK {
		return nil, ans, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return out, ans, nil
}

// TLSA looks up the TLSA records for a service (RFC 6698 §3:
// `_<port>._tcp.<host>`). Callers must check Answer.Secure before using
// them (RFC 7672 §2.2).
func (r *Resolver) TLSA(ctx context.Context, port int, host string) ([]TLSA, Answer, error) {
	name := fmt.Sprintf("_%d._tcp.%s", port, host)
	rrs, ans, err := r.lookup(ctx, name, dns.TypeTLSA)
	if err != nil || ans.Status != OK {
		return nil, ans, err
	}
	out := make([]TLSA, 0, len(rrs))
	for _, rr := range rrs {
		t := rr.(*dns.TLSA)
		data, derr := decodeHex(t.Certificate)
		if derr != nil {
			continue // malformed record: unusable (RFC 7672 §2.2)
		}
		out = append(out, TLSA{Usage: t.Usage, Selector: t.Selector, MatchingType: t.MatchingType, Data: data})
	}
	return out, ans, nil
}

func decodeHex(s string) ([]byte, error) {
	if len(s)%2 != 0 {
		return nil, errors.New("odd hex length")
	}
	b := make([]byte, len(s)/2)
	for i := range b {
		hi, lo := unhex(s[2*i]), unhex(s[2*i+1])
		if hi < 0 || lo < 0 {
			return nil, errors.New("bad hex digit")
		}
		b[i] = byte(hi<<4 | lo)
	}
	return b, nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// lookup answers (name, qtype) from the cache or the network, following
// CNAME chains the server did not complete. It returns only records of
// qtype.
func (r *Resolver) lookup(ctx context.Context, name string, qtype uint16) ([]dns.RR, Answer, error) {
	name = dns.Fqdn(strings.ToLower(name))
	secure := true
	var ttl time.Duration = -1
	for hop := 0; hop <= MaxCNAMEHops; hop++ {
		rrs, target, ans, err := r.lookupOne(ctx, name, qtype)
		secure = secure && ans.Secure
		if ttl < 0 || ans.TTL < ttl {
			ttl = ans.TTL
		}
		ans.Secure, ans.TTL = secure, ttl
		if err != nil || ans.Status != OK || len(rrs) > 0 || target == "" {
			return rrs, ans, err
		}
		name = target // the server returned only a CNAME chain: chase it
	}
	return nil, Answer{Status: ServFail}, &Error{Name: name, Type: dns.TypeToString[qtype], Status: ServFail,
		Err: fmt.Errorf("CNAME chain longer than %d", MaxCNAMEHops)}
}

// lookupOne answers one question. When the answer holds only a CNAME chain
// with no records of qtype, target is the end of the chain.
func (r *Resolver) lookupOne(ctx context.Context, name string, qtype uint16) (rrs []dns.RR, target string, ans Answer, err error) {
	key := cacheKey{name, qtype}
	now := r.now()
	if r.cacheSize > 0 {
		r.mu.Lock()
		e, ok := r.cache[key]
		if ok && now.Before(e.expires) {
			r.mu.Unlock()
			a := e.ans
			a.TTL = e.expires.Sub(now)
			return e.rrs, "", a, nil
		}
		if ok {
			delete(r.cache, key)
		}
		r.mu.Unlock()
	}
	resp, xerr := r.exchange(ctx, name, qtype)
	if xerr != nil {
		return nil, "", Answer{Status: xerr.Status}, xerr
	}
	rrs, target, ans = r.interpret(resp, name, qtype)
	if ans.Status.Temporary() {
		return nil, "", ans, &Error{Name: strings.TrimSuffix(name, "."), Type: dns.TypeToString[qtype], Status: ans.Status}
	}
	// A bare CNAME answer (the server did not chase the chain) is not
	// cached: it is rare, and the target's own answer is cached normally.
	if r.cacheSize > 0 && ans.TTL > 0 && target == "" {
		r.store(key, cacheEntry{rrs: rrs, ans: ans, expires: now.Add(ans.TTL)})
	}
	return rrs, target, ans, nil
}

func (r *Resolver) store(key cacheKey, e cacheEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evictLocked()
	r.cache[key] = e
}

func (r *Resolver) evictLocked() {
	if len(r.cache) < r.cacheSize {
		return
	}
	now := r.now()
	for k, v := range r.cache {
		if !now.Before(v.expires) {
			delete(r.cache, k)
		}
	}
	for k := range r.cache { // still full: drop arbitrary entries
		if len(r.cache) < r.cacheSize {
			break
		}
		delete(r.cache, k)
	}
}

// interpret classifies a response and extracts the records of qtype,
// following the CNAME chain inside the answer section.
func (r *Resolver) interpret(resp *dns.Msg, name string, qtype uint16) ([]dns.RR, string, Answer) {
	ans := Answer{Secure: resp.AuthenticatedData}
	switch resp.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		ans.Status = NXDomain
		ans.TTL = r.negativeTTL(resp)
		return nil, "", ans
	case dns.RcodeRefused:
		ans.Status = Refused
		return nil, "", ans
	default:
		ans.Status = ServFail
		return nil, "", ans
	}
	// Walk the chain: name → CNAME → ... within the answer section.
	cur := name
	var minT uint32 = 0
	first := true
	seen := map[string]bool{}
	for !seen[cur] {
		seen[cur] = true
		next := ""
		for _, rr := range resp.Answer {
			h := rr.Header()
			if h.Rrtype == dns.TypeCNAME && qtype != dns.TypeCNAME && strings.EqualFold(h.Name, cur) {
				next = strings.ToLower(rr.(*dns.CNAME).Target)
				if first || h.Ttl < minT {
					minT, first = h.Ttl, false
				}
			}
		}
		if next == "" {
			break
		}
		cur = next
	}
	var out []dns.RR
	for _, rr := range resp.Answer {
		h := rr.Header()
		if h.Rrtype == qtype && strings.EqualFold(h.Name, cur) {
			out = append(out, rr)
			if first || h.Ttl < minT {
				minT, first = h.Ttl, false
			}
		}
	}
	if len(out) > 0 {
		ans.Status = OK
		ans.TTL = time.Duration(minT) * time.Second
		return out, "", ans
	}
	if cur != name {
		// Only a CNAME chain: the caller chases cur. A negative answer
		// about the target (RFC 2308 §2.1/§2.2) comes with an SOA.
		if hasSOA(resp) {
			ans.Status = NoData
			ans.TTL = r.negativeTTL(resp)
			return nil, "", ans
		}
		ans.Status = OK
		ans.TTL = time.Duration(minT) * time.Second
		return nil, cur, ans
	}
	ans.Status = NoData
	ans.TTL = r.negativeTTL(resp)
	return nil, "", ans
}

func hasSOA(m *dns.Msg) bool {
	for _, rr := range m.Ns {
		if _, ok := rr.(*dns.SOA); ok {
			return true
		}
	}
	return false
}

// negativeTTL is min(SOA TTL, SOA MINIMUM) (RFC 2308 §5), capped; 0 (do
// not cache) without an SOA.
func (r *Resolver) negativeTTL(m *dns.Msg) time.Duration {
	for _, rr := range m.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			t := min(soa.Hdr.Ttl, soa.Minttl)
			d := time.Duration(t) * time.Second
			if d > r.maxNeg {
				d = r.maxNeg
			}
			return d
		}
	}
	return 0
}

// exchange sends one question to the servers in turn, attempts times,
// until one gives a definitive answer (NOERROR or NXDOMAIN). The last
// temporary outcome is returned when none does.
func (r *Resolver) exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, *Error) {
	tname := dns.TypeToString[qtype]
	qname := strings.TrimSuffix(name, ".")
	if len(r.servers) == 0 {
		return nil, &Error{Name: qname, Type: tname, Status: ServFail, Err: errors.New("no DNS servers configured")}
	}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = true
	m.AuthenticatedData = true // RFC 6840 §5.7: ask for the AD bit
	m.SetEdns0(ednsSize, true) // DO bit (RFC 3225)

	r.log.DNSQuery(qname, tname)
	last := &Error{Name: qname, Type: tname, Status: Timeout}
	var lastResp *dns.Msg
	for a := 0; a < r.attempts; a++ {
		for _, srv := range r.servers {
			if err := ctx.Err(); err != nil {
				return nil, &Error{Name: qname, Type: tname, Status: Timeout, Err: err}
			}
			resp, err := r.exchangeOne(ctx, m, srv)
			if err != nil {
				st := Timeout
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					if ctx.Err() == nil {
						st = ServFail // connection refused, malformed reply...
					}
				}
				last = &Error{Name: qname, Type: tname, Status: st, Err: fmt.Errorf("server %s: %w", srv, err)}
				continue
			}
			switch resp.Rcode {
			case dns.RcodeSuccess, dns.RcodeNameError:
				return resp, nil
			}
			lastResp = resp
		}
	}
	if lastResp != nil {
		// A server did answer, with SERVFAIL/REFUSED/...: report that
		// rather than the timeout of another server.
		return lastResp, nil
	}
	return nil, last
}

// exchangeOne does one UDP exchange with a per-query timeout, retrying
// over TCP when the response is truncated (RFC 7766 §5).
func (r *Resolver) exchangeOne(ctx context.Context, m *dns.Msg, srv string) (*dns.Msg, error) {
	qctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	c := &dns.Client{Net: "udp", UDPSize: ednsSize, Timeout: r.timeout}
	resp, _, err := c.ExchangeContext(qctx, m, srv)
	if err == nil && resp.Truncated {
		c = &dns.Client{Net: "tcp", Timeout: r.timeout}
		resp, _, err = c.ExchangeContext(qctx, m, srv)
	}
	if err != nil {
		return nil, err
	}
	if len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, m.Question[0].Name) || resp.Question[0].Qtype != m.Question[0].Qtype {
		return nil, fmt.Errorf("response does not match the question")
	}
	return resp, nil
}
