// Package e2e runs the real outpost binary against real peers on loopback:
// swaks as the submitting client, in-process go-smtp receivers with
// certificates from a test CA, an in-process DNS server, and Postfix.
package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"outpost/internal/testpki"
)

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "outpost-e2e-bin")
	if err != nil {
		panic(err)
	}
	binPath = filepath.Join(dir, "outpost")
	out, err := exec.Command("go", "build", "-race", "-o", binPath, "../../cmd/outpost").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build outpost: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// needTool fails (under CI) or skips (elsewhere) when a Debian tool is missing.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed; the test command must install it", name)
		}
		t.Skipf("%s is not installed (run the README's test command)", name)
	}
	return p
}

// ---- DNS ----

// zone is an in-process authoritative-style DNS server on loopback.
type zone struct {
	mu       sync.Mutex
	mx       map[string][]*dns.MX
	a        map[string][]net.IP
	txt      map[string][]string
	servfail map[string]bool
	nullMX   map[string]bool
	aaaa     map[string][]net.IP // set by addAAAA
	addr     string
	srv      *dns.Server
}

func newZone(t *testing.T) *zone {
	z := &zone{mx: map[string][]*dns.MX{}, a: map[string][]net.IP{}, txt: map[string][]string{}, servfail: map[string]bool{}, nullMX: map[string]bool{}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	z.addr = pc.LocalAddr().String()
	z.srv = &dns.Server{PacketConn: pc, Handler: z}
	go z.srv.ActivateAndServe()
	t.Cleanup(func() { z.srv.Shutdown() })
	return z
}

func (z *zone) addMX(domain string, pref uint16, host string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.mx[dns.Fqdn(domain)] = append(z.mx[dns.Fqdn(domain)], &dns.MX{Hdr: dns.RR_Header{Name: dns.Fqdn(domain), Rrtype: dns.TypeMX, Class: dns.ClassINET, Ttl: 60}, Preference: pref, Mx: dns.Fqdn(host)})
}

func (z *zone) addA(host, ip string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.a[dns.Fqdn(host)] = append(z.a[dns.Fqdn(host)], net.ParseIP(ip))
}

// addAAAA gives host an IPv6 address (loopback only in these tests: ::1).
func (z *zone) addAAAA(host, ip string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.aaaa == nil {
		z.aaaa = map[string][]net.IP{}
	}
	z.aaaa[dns.Fqdn(host)] = append(z.aaaa[dns.Fqdn(host)], net.ParseIP(ip))
}

func (z *zone) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	z.mu.Lock()
	defer z.mu.Unlock()
	m := new(dns.Msg)
	m.SetReply(r)
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	soa := &dns.SOA{Hdr: dns.RR_Header{Name: "test.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60}, Ns: "ns.test.", Mbox: "h.test.", Serial: 1, Refresh: 60, Retry: 60, Expire: 60, Minttl: 5}
	if z.servfail[name] {
		m.Rcode = dns.RcodeServerFailure
		w.WriteMsg(m)
		return
	}
	exists := z.mx[name] != nil || z.a[name] != nil || z.txt[name] != nil || z.nullMX[name] || z.aaaa[name] != nil
	switch {
	case !exists:
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, soa)
	case q.Qtype == dns.TypeMX && z.nullMX[name]:
		m.Answer = append(m.Answer, &dns.MX{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeMX, Class: dns.ClassINET, Ttl: 60}, Preference: 0, Mx: "."})
	case q.Qtype == dns.TypeMX && len(z.mx[name]) > 0:
		for _, rr := range z.mx[name] {
			m.Answer = append(m.Answer, rr)
		}
	case q.Qtype == dns.TypeA && len(z.a[name]) > 0:
		for _, ip := range z.a[name] {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: ip})
		}
	case q.Qtype == dns.TypeAAAA && len(z.aaaa[name]) > 0:
		for _, ip := range z.aaaa[name] {
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: 60}, AAAA: ip})
		}
	case q.Qtype == dns.TypeTXT && len(z.txt[name]) > 0:
		for _, s := range z.txt[name] {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{s}})
		}
	default:
		m.Ns = append(m.Ns, soa) // NODATA
	}
	w.WriteMsg(m)
}

// ---- receiving MTAs ----

type received struct {
	From  string
	Rcpts []string
	Data  string
	TLS   *tls.ConnectionState
}

// sink is a real SMTP receiver (go-smtp) on 127.0.0.x:port.
type sink struct {
	srv  *smtp.Server
	mu   sync.Mutex
	msgs []received
	ch   chan received
	// RcptReply, when set, answers RCPT for matching addresses.
	RcptReply func(to string) error
}

type sinkSession struct {
	s   *sink
	c   *smtp.Conn
	cur received
}

func (ss *sinkSession) Reset()        { ss.cur = received{} }
func (ss *sinkSession) Logout() error { return nil }
func (ss *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	ss.cur.From = from
	return nil
}
func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if ss.s.RcptReply != nil {
		if err := ss.s.RcptReply(to); err != nil {
			return err
		}
	}
	ss.cur.Rcpts = append(ss.cur.Rcpts, to)
	return nil
}
func (ss *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.cur.Data = string(b)
	if st, ok := ss.c.TLSConnectionState(); ok {
		ss.cur.TLS = &st
	}
	ss.s.mu.Lock()
	ss.s.msgs = append(ss.s.msgs, ss.cur)
	ss.s.mu.Unlock()
	select {
	case ss.s.ch <- ss.cur:
	default:
	}
	return nil
}

func newSink(t *testing.T, addr string, tlsCfg *tls.Config) *sink {
	s := &sink{ch: make(chan received, 10000)}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) { return &sinkSession{s: s, c: c}, nil }))
	srv.Domain = "sink.test"
	srv.TLSConfig = tlsCfg
	srv.EnableDSN = true
	srv.EnableSMTPUTF8 = true
	srv.AllowInsecureAuth = true
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("sink listen %s: %v", addr, err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	s.srv = srv
	return s
}

func (s *sink) wait(t *testing.T, d time.Duration) received {
	t.Helper()
	select {
	case m := <-s.ch:
		return m
	case <-time.After(d):
		t.Fatalf("no message arrived within %v", d)
	}
	return received{}
}

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

// freePortOn finds a TCP port free on every given loopback address.
func freePortOn(t *testing.T, ips ...string) int {
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		ok := true
		for _, ip := range ips {
			l2, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
			if err != nil {
				ok = false
				break
			}
			l2.Close()
		}
		if ok {
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// ---- the daemon ----

type daemon struct {
	t       *testing.T
	dir     string
	cfgPath string
	cmd     *exec.Cmd
	smtp    string
	stderr  *lockedBuffer
}

// startOutpost writes cfg (YAML with %SMTP% and %DATA% placeholders) and runs
// the binary until the test ends.
func startOutpost(t *testing.T, dir, cfg string) *daemon {
	t.Helper()
	port := freePortOn(t, "127.0.0.1")
	d := &daemon{t: t, dir: dir, smtp: fmt.Sprintf("127.0.0.1:%d", port), cfgPath: filepath.Join(dir, "outpost.yaml")}
	cfg = strings.ReplaceAll(cfg, "%SMTP%", d.smtp)
	cfg = strings.ReplaceAll(cfg, "%DATA%", filepath.Join(dir, "data"))
	if err := os.WriteFile(d.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	d.start()
	t.Cleanup(d.stop)
	return d
}

func (d *daemon) start() {
	d.t.Helper()
	d.stderr = &lockedBuffer{}
	d.cmd = exec.Command(binPath, "serve", "--config", d.cfgPath)
	d.cmd.Stderr = d.stderr
	d.cmd.Stdout = d.stderr
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", d.smtp); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.t.Fatalf("outpost did not start listening: %s", d.stderr)
}

func (d *daemon) stop() {
	if d.cmd != nil && d.cmd.Process != nil && d.cmd.ProcessState == nil {
		d.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { d.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			d.cmd.Process.Kill()
			<-done
		}
	}
}

func (d *daemon) kill9() {
	d.cmd.Process.Signal(syscall.SIGKILL)
	d.cmd.Wait()
}

func (d *daemon) mailLog() string {
	b, _ := os.ReadFile(filepath.Join(d.dir, "data", "logs", "mail_logs", "mail.current"))
	return string(b)
}

var stampRE = regexp.MustCompile(`(?m)^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} `)

// logLines returns the mail-log lines without their timestamps.
func (d *daemon) logLines() []string {
	return strings.Split(stampRE.ReplaceAllString(d.mailLog(), ""), "\n")
}

// waitLog waits until a mail-log line matches re, and returns it.
func (d *daemon) waitLog(re string, timeout time.Duration) string {
	d.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, l := range d.logLines() {
			if rx.MatchString(l) {
				return l
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.t.Fatalf("no mail-log line matches %q within %v; log:\n%s\nstderr:\n%s", re, timeout, d.mailLog(), d.stderr)
	return ""
}

func (d *daemon) hasLine(line string) bool {
	for _, l := range d.logLines() {
		if l == line {
			return true
		}
	}
	return false
}

func (d *daemon) cli(args ...string) (string, error) {
	out, err := exec.Command(binPath, append(args, "--config", d.cfgPath)...).CombinedOutput()
	return string(out), err
}

// swaks submits a message with Debian's swaks and returns its transcript.
func swaks(t *testing.T, server string, args ...string) (string, error) {
	t.Helper()
	p := needTool(t, "swaks")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, p, append([]string{"--server", server, "--helo", "client.test", "--timeout", "30"}, args...)...).CombinedOutput()
	return string(out), err
}

// pki is a test CA with certificates.
func pki(t *testing.T) (*testpki.CA, string) {
	ca, err := testpki.NewCA("Outpost E2E CA")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ca.WriteCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return ca, p
}

func serverTLS(c tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{c}}
}

var errTemp = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}

func readLines(r io.Reader) []string {
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

var _ = errors.New

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (z *zone) setServfail(name string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.servfail[dns.Fqdn(name)] = true
}

func (z *zone) setNullMX(name string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.nullMX[dns.Fqdn(name)] = true
}

// ---- a receiver that observes connections ----

// probe is a plaintext receiving MTA (go-smtp) that records, per TCP
// connection, the peer address and the messages carried, and the most
// connections open at once. Hold delays every reply to the end of DATA.
type probe struct {
	addr      string
	hold      time.Duration
	srv       *smtp.Server
	mu        sync.Mutex
	active    int
	maxActive int
	conns     []*probeConn
	msgs      []received
	rcptPeer  map[string]string // recipient → IP of the client that delivered it
	ch        chan received
}

// probeConn is what a probe saw of one connection.
type probeConn struct {
	Peer string // remote IP
	Msgs int    // messages accepted over it
}

type countedConn struct {
	net.Conn
	p    *probe
	pc   *probeConn
	once sync.Once
}

// ended counts the connection as no longer open (once).
func (c *countedConn) ended() {
	c.once.Do(func() {
		c.p.mu.Lock()
		c.p.active--
		c.p.mu.Unlock()
	})
}

// Write sees the reply to QUIT: the client closes its side on it, before
// go-smtp closes ours, so the session is over for counting purposes (else
// a client that opens its next connection at once looks like an overlap).
func (c *countedConn) Write(b []byte) (int, error) {
	if strings.HasPrefix(string(b), "221 ") {
		c.ended()
	}
	return c.Conn.Write(b)
}

func (c *countedConn) Close() error {
	c.ended()
	return c.Conn.Close()
}

type countingListener struct {
	net.Listener
	p *probe
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	ip, _, _ := net.SplitHostPort(c.RemoteAddr().String())
	pc := &probeConn{Peer: ip}
	l.p.mu.Lock()
	l.p.active++
	l.p.maxActive = max(l.p.maxActive, l.p.active)
	l.p.conns = append(l.p.conns, pc)
	l.p.mu.Unlock()
	return &countedConn{Conn: c, p: l.p, pc: pc}, nil
}

type probeSession struct {
	p   *probe
	pc  *probeConn
	cur received
}

func (s *probeSession) Reset()        { s.cur = received{} }
func (s *probeSession) Logout() error { return nil }
func (s *probeSession) Mail(from string, _ *smtp.MailOptions) error {
	s.cur.From = from
	return nil
}
func (s *probeSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.cur.Rcpts = append(s.cur.Rcpts, to)
	return nil
}
func (s *probeSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	time.Sleep(s.p.hold)
	s.cur.Data = string(b)
	s.p.mu.Lock()
	if s.pc != nil {
		s.pc.Msgs++
		if s.p.rcptPeer == nil {
			s.p.rcptPeer = map[string]string{}
		}
		for _, r := range s.cur.Rcpts {
			s.p.rcptPeer[r] = s.pc.Peer
		}
	}
	s.p.msgs = append(s.p.msgs, s.cur)
	s.p.mu.Unlock()
	select {
	case s.p.ch <- s.cur:
	default:
	}
	return nil
}

// newProbe starts a probe on addr (ip:port, loopback only).
func newProbe(t *testing.T, addr string, hold time.Duration) *probe {
	t.Helper()
	p := &probe{addr: addr, hold: hold, ch: make(chan received, 10000)}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		s := &probeSession{p: p}
		if cc, ok := c.Conn().(*countedConn); ok {
			s.pc = cc.pc
		}
		return s, nil
	}))
	srv.Domain = "probe.test"
	srv.EnableDSN = true
	// net/smtp asks for SMTPUTF8 whenever it is offered (Outpost offers it).
	srv.EnableSMTPUTF8 = true
	srv.AllowInsecureAuth = true
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("probe listen %s: %v", addr, err)
	}
	go srv.Serve(countingListener{Listener: ln, p: p})
	p.srv = srv
	t.Cleanup(func() { srv.Close() })
	return p
}

// close stops the probe: nothing listens on its address any more.
func (p *probe) close() { p.srv.Close() }

// stats returns the messages received, the connections seen and the most
// connections open at once.
func (p *probe) stats() (msgs []received, conns []probeConn, maxActive int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	msgs = append(msgs, p.msgs...)
	for _, c := range p.conns {
		conns = append(conns, *c)
	}
	return msgs, conns, p.maxActive
}

// peerOf returns the client IP that delivered a message for rcpt ("" if none).
func (p *probe) peerOf(rcpt string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rcptPeer[rcpt]
}

func (p *probe) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.msgs)
}

// waitCount waits until the probe has received n messages.
func (p *probe) waitCount(t *testing.T, n int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if p.count() >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("probe %s: %d of %d messages within %v", p.addr, p.count(), n, d)
}

// lockedBuffer collects a process's output safely while tests read it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
