package mtasts

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"outpost/internal/maillog"
	"outpost/internal/testpki"
)

// dnsServer is a real DNS server (miekg/dns over UDP on 127.0.0.1) with a
// mutable zone, so tests exercise the wire protocol and the rcodes.
type dnsServer struct {
	Addr    string
	mu      sync.Mutex
	txt     map[string][]string // fqdn → records
	mx      map[string][]*net.MX
	rcode   map[string]int // fqdn → forced rcode (e.g. SERVFAIL)
	queries atomic.Int64
	srv     *dns.Server
}

func newDNSServer(t testing.TB) *dnsServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dnsServer{Addr: pc.LocalAddr().String(), txt: map[string][]string{}, mx: map[string][]*net.MX{}, rcode: map[string]int{}}
	started := make(chan struct{})
	s.srv = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(s.serve), NotifyStartedFunc: func() { close(started) }}
	go s.srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { s.srv.Shutdown() })
	return s
}

func (s *dnsServer) SetTXT(name string, recs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.txt[dns.Fqdn(name)] = recs
	delete(s.rcode, dns.Fqdn(name))
}

func (s *dnsServer) SetMX(domain string, mx ...*net.MX) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mx[dns.Fqdn(domain)] = mx
}

func (s *dnsServer) SetRcode(name string, rcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rcode[dns.Fqdn(name)] = rcode
}

func (s *dnsServer) serve(w dns.ResponseWriter, r *dns.Msg) {
	s.queries.Add(1)
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if rc, ok := s.rcode[name]; ok {
		m.Rcode = rc
		w.WriteMsg(m)
		return
	}
	txt, hasTXT := s.txt[name]
	mx, hasMX := s.mx[name]
	if !hasTXT && !hasMX {
		m.Rcode = dns.RcodeNameError
		w.WriteMsg(m)
		return
	}
	hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: 60}
	switch q.Qtype {
	case dns.TypeTXT:
		for _, t := range txt {
			hdr.Rrtype = dns.TypeTXT
			// Split long records into 255-octet character-strings, as a
			// real zone would, so the adapter's concatenation is tested.
			var parts []string
			for len(t) > 255 {
				parts, t = append(parts, t[:255]), t[255:]
			}
			m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr, Txt: append(parts, t)})
		}
	case dns.TypeMX:
		for _, x := range mx {
			hdr.Rrtype = dns.TypeMX
			m.Answer = append(m.Answer, &dns.MX{Hdr: hdr, Preference: x.Pref, Mx: dns.Fqdn(x.Host)})
		}
	}
	w.WriteMsg(m)
}

// dnsResolver adapts a miekg/dns client to TXTResolver / MXResolver, as the
// application adapts internal/resolver.
type dnsResolver struct{ addr string }

func (r dnsResolver) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	c := &dns.Client{Timeout: 2 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	in, _, err := c.ExchangeContext(ctx, m, r.addr)
	if err != nil {
		return nil, err
	}
	switch in.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return nil, fmt.Errorf("%s: NXDOMAIN: %w", name, ErrNotFound)
	default:
		return nil, fmt.Errorf("%s: %s", name, dns.RcodeToString[in.Rcode])
	}
	var out []dns.RR
	for _, rr := range in.Answer {
		if rr.Header().Rrtype == qtype {
			out = append(out, rr)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: NODATA: %w", name, ErrNotFound)
	}
	return out, nil
}

func (r dnsResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.query(ctx, name, dns.TypeTXT)
	var out []string
	for _, rr := range rrs {
		out = append(out, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return out, err
}

func (r dnsResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	rrs, err := r.query(ctx, name, dns.TypeMX)
	var out []*net.MX
	for _, rr := range rrs {
		mx := rr.(*dns.MX)
		out = append(out, &net.MX{Host: mx.Mx, Pref: mx.Preference})
	}
	return out, err
}

// policyHost is a real HTTPS server on 127.0.0.1 with a testpki
// certificate, standing in for mta-sts.<domain>.
type policyHost struct {
	srv      *httptest.Server
	hits     atomic.Int64
	mu       sync.Mutex
	handler  http.HandlerFunc
	lastHost string
	lastSNI  string
}

var (
	caOnce sync.Once
	testCA *testpki.CA
)

func ca(t testing.TB) *testpki.CA {
	caOnce.Do(func() {
		var err error
		testCA, err = testpki.NewCA("mtasts test CA")
		if err != nil {
			panic(err)
		}
	})
	return testCA
}

func newPolicyHost(t testing.TB, cert tls.Certificate, h http.HandlerFunc) *policyHost {
	t.Helper()
	p := &policyHost{handler: h}
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.hits.Add(1)
		p.mu.Lock()
		p.lastHost = r.Host
		if r.TLS != nil {
			p.lastSNI = r.TLS.ServerName
		}
		h := p.handler
		p.mu.Unlock()
		h(w, r)
	}))
	p.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	p.srv.StartTLS()
	t.Cleanup(p.srv.Close)
	return p
}

func (p *policyHost) Set(h http.HandlerFunc) {
	p.mu.Lock()
	p.handler = h
	p.mu.Unlock()
}

func (p *policyHost) Addr() string { return p.srv.Listener.Addr().String() }

// serveText answers with body as text/plain.
func serveText(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, body)
	}
}

// loopbackDial maps every host:port in routes to a loopback address and
// refuses anything else: tests never leave 127.0.0.1.
func loopbackDial(routes map[string]string) DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		to, ok := routes[addr]
		if !ok {
			host, _, _ := net.SplitHostPort(addr)
			if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
				return nil, fmt.Errorf("test dialer: %s is not routed to loopback", addr)
			}
			to = addr
		}
		var d net.Dialer
		return d.DialContext(ctx, network, to)
	}
}

// logBuf collects mail-log lines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// Lines returns the logged texts without the timestamp.
func (l *logBuf) Lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, ln := range strings.Split(strings.TrimRight(l.b.String(), "\n"), "\n") {
		if i := strings.Index(ln, " Info: "); i >= 0 {
			out = append(out, ln[i+1:])
		} else if i := strings.Index(ln, " Debug: "); i >= 0 {
			out = append(out, ln[i+1:])
		}
	}
	return out
}

func newLog() (*maillog.Logger, *logBuf) {
	b := &logBuf{}
	return maillog.NewWriter(b, maillog.Debug), b
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var errUnexpected = errors.New("unexpected")

func newOtherCA() (*testpki.CA, error) { return testpki.NewCA("untrusted CA") }
