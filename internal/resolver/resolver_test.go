package resolver

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"outpost/internal/maillog"
)

// fakeDNS is an in-process authoritative-style server on 127.0.0.1 (UDP and
// TCP on the same port) answering from a fixed script.
type fakeDNS struct {
	addr    string
	queries atomic.Int64
	tcp     atomic.Int64
	mu      sync.Mutex
	sawDO   bool
	sawAD   bool
}

func soa() dns.RR {
	rr, _ := dns.NewRR("example.test. 3600 IN SOA ns.example.test. host.example.test. 1 3600 600 86400 60")
	return rr
}

func must(s string) dns.RR {
	rr, err := dns.NewRR(s)
	if err != nil {
		panic(err)
	}
	return rr
}

func (f *fakeDNS) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	f.queries.Add(1)
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		f.tcp.Add(1)
	}
	f.mu.Lock()
	if o := q.IsEdns0(); o != nil && o.Do() {
		f.sawDO = true
	}
	if q.AuthenticatedData {
		f.sawAD = true
	}
	f.mu.Unlock()
	m := new(dns.Msg)
	m.SetReply(q)
	qn, qt := strings.ToLower(q.Question[0].Name), q.Question[0].Qtype
	switch {
	case qn == "mx.example.test." && qt == dns.TypeMX:
		m.AuthenticatedData = true
		m.Answer = append(m.Answer, must("mx.example.test. 300 IN MX 20 b.example.test."), must("mx.example.test. 100 IN MX 10 a.example.test."))
	case qn == "null.example.test." && qt == dns.TypeMX:
		m.Answer = append(m.Answer, must("null.example.test. 300 IN MX 0 ."))
	case qn == "nx.example.test.":
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, soa())
	case qn == "nodata.example.test.":
		m.Ns = append(m.Ns, soa())
	case qn == "servfail.example.test.":
		m.Rcode = dns.RcodeServerFailure
	case qn == "refused.example.test.":
		m.Rcode = dns.RcodeRefused
	case qn == "timeout.example.test.":
		return // never answer
	case qn == "_mta-sts.cname.example.test." && qt == dns.TypeTXT:
		// Only the CNAME: the client must chase it.
		m.Answer = append(m.Answer, must("_mta-sts.cname.example.test. 300 IN CNAME sts.provider.test."))
	case qn == "sts.provider.test." && qt == dns.TypeTXT:
		m.Answer = append(m.Answer, must(`sts.provider.test. 120 IN TXT "v=STSv1; " "id=2024;"`))
	case qn == "_mta-sts.inline.example.test." && qt == dns.TypeTXT:
		m.Answer = append(m.Answer, must("_mta-sts.inline.example.test. 300 IN CNAME sts2.provider.test."),
			must(`sts2.provider.test. 60 IN TXT "v=STSv1; id=1;"`))
	case qn == "big.example.test." && qt == dns.TypeA:
		for i := 1; i <= 100; i++ {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: qn, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(10, 0, byte(i/256), byte(i))})
		}
	case qn == "big.example.test." && qt == dns.TypeAAAA:
		m.Ns = append(m.Ns, soa())
	case qn == "host.example.test." && qt == dns.TypeA:
		m.Answer = append(m.Answer, must("host.example.test. 30 IN A 127.0.0.1"))
	case qn == "host.example.test." && qt == dns.TypeAAAA:
		m.Answer = append(m.Answer, must("host.example.test. 40 IN AAAA ::1"))
	case qn == "_25._tcp.mx.example.test." && qt == dns.TypeTLSA:
		m.AuthenticatedData = true
		m.Answer = append(m.Answer, must("_25._tcp.mx.example.test. 300 IN TLSA 3 1 1 0102ABCD"))
	default:
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, soa())
	}
	if _, ok := w.RemoteAddr().(*net.UDPAddr); ok {
		size := 512
		if o := q.IsEdns0(); o != nil {
			size = int(o.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

func startDNS(t *testing.T) *fakeDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		t.Skipf("tcp on same port: %v", err)
	}
	f := &fakeDNS{addr: pc.LocalAddr().String()}
	us := &dns.Server{PacketConn: pc, Handler: f}
	ts := &dns.Server{Listener: ln, Handler: f}
	go us.ActivateAndServe()
	go ts.ActivateAndServe()
	t.Cleanup(func() { us.Shutdown(); ts.Shutdown() })
	return f
}

func newTest(t *testing.T, f *fakeDNS, opts ...Option) *Resolver {
	return New([]string{f.addr}, append([]Option{WithTimeout(300 * time.Millisecond), WithAttempts(1)}, opts...)...)
}

func TestMX(t *testing.T) {
	f := startDNS(t)
	var logbuf bytes.Buffer
	ml := maillog.NewWriter(&logbuf, maillog.Debug)
	r := newTest(t, f, WithLog(ml))
	mxs, ans, err := r.MX(context.Background(), "MX.example.test")
	if err != nil {
		t.Fatal(err)
	}
	want := []MX{{"a.example.test", 10}, {"b.example.test", 20}}
	if len(mxs) != 2 || mxs[0] != want[0] || mxs[1] != want[1] {
		t.Fatalf("MX = %v, want %v", mxs, want)
	}
	if ans.Status != OK || !ans.Secure || ans.TTL != 100*time.Second {
		t.Fatalf("answer = %+v", ans)
	}
	f.mu.Lock()
	if !f.sawDO || !f.sawAD {
		t.Errorf("query lacked DO (%v) or AD (%v)", f.sawDO, f.sawAD)
	}
	f.mu.Unlock()
	ml.Close() // flush
	if !strings.Contains(logbuf.String(), "Debug: DNS query: Q(mx.example.test, 'MX')\n") {
		t.Errorf("log = %q", logbuf.String())
	}
}

func TestOutcomes(t *testing.T) {
	f := startDNS(t)
	r := newTest(t, f)
	ctx := context.Background()

	if _, _, err := r.MX(ctx, "null.example.test"); !errors.Is(err, ErrNullMX) {
		t.Errorf("null MX: err = %v, want ErrNullMX", err)
	}
	for _, tc := range []struct {
		name   string
		status Status
		temp   bool
	}{
		{"nx.example.test", NXDomain, false},
		{"nodata.example.test", NoData, false},
		{"servfail.example.test", ServFail, true},
		{"refused.example.test", Refused, true},
		{"timeout.example.test", Timeout, true},
	} {
		mxs, ans, err := r.MX(ctx, tc.name)
		if ans.Status != tc.status || len(mxs) != 0 {
			t.Errorf("%s: status %v, want %v (mxs %v)", tc.name, ans.Status, tc.status, mxs)
		}
		var de *Error
		if tc.temp != errors.As(err, &de) {
			t.Errorf("%s: err = %v, want temporary=%v", tc.name, err, tc.temp)
		} else if tc.temp && de.Status != tc.status {
			t.Errorf("%s: error status %v", tc.name, de.Status)
		}
		if !tc.temp && ans.TTL != 60*time.Second {
			t.Errorf("%s: negative TTL %v, want SOA minimum 60s", tc.name, ans.TTL)
		}
	}
}

func TestTXTFollowsCNAME(t *testing.T) {
	f := startDNS(t)
	r := newTest(t, f)
	for name, want := range map[string]string{
		"_mta-sts.cname.example.test":  "v=STSv1; id=2024;",
		"_mta-sts.inline.example.test": "v=STSv1; id=1;",
	} {
		txt, ans, err := r.TXT(context.Background(), name)
		if err != nil || ans.Status != OK || len(txt) != 1 || txt[0] != want {
			t.Errorf("%s: %q %+v %v", name, txt, ans, err)
		}
	}
}

func TestTruncatedFallsBackToTCP(t *testing.T) {
	f := startDNS(t)
	r := newTest(t, f)
	addrs, ans, err := r.Addrs(context.Background(), "big.example.test")
	if err != nil || ans.Status != OK || len(addrs) != 100 {
		t.Fatalf("got %d addrs, %+v, %v", len(addrs), ans, err)
	}
	if f.tcp.Load() == 0 {
		t.Error("no TCP query after truncation")
	}
}

func TestAddrs(t *testing.T) {
	f := startDNS(t)
	r := newTest(t, f)
	addrs, ans, err := r.Addrs(context.Background(), "host.example.test")
	want := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}
	if err != nil || len(addrs) != 2 || addrs[0] != want[0] || addrs[1] != want[1] || ans.TTL != 30*time.Second {
		t.Fatalf("Addrs = %v %+v %v", addrs, ans, err)
	}
	if _, ans, err := r.Addrs(context.Background(), "nx.example.test"); err != nil || ans.Status != NXDomain {
		t.Errorf("nx: %+v %v", ans, err)
	}
	if a, _, err := r.Addrs(context.Background(), "::1"); err != nil || len(a) != 1 {
		t.Errorf("literal: %v %v", a, err)
	}
}

func TestTLSA(t *testing.T) {
	f := startDNS(t)
	r := newTest(t, f)
	recs, ans, err := r.TLSA(context.Background(), 25, "mx.example.test")
	if err != nil || !ans.Secure || len(recs) != 1 || recs[0].Usage != 3 || !bytes.Equal(recs[0].Data, []byte{1, 2, 0xab, 0xcd}) {
		t.Fatalf("TLSA = %+v %+v %v", recs, ans, err)
	}
}

func TestCacheHonoursTTL(t *testing.T) {
	f := startDNS(t)
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	r := newTest(t, f, WithClock(clock))
	ctx := context.Background()

	r.MX(ctx, "mx.example.test")
	n := f.queries.Load()
	advance(99 * time.Second)
	_, ans, _ := r.MX(ctx, "mx.example.test")
	if f.queries.Load() != n {
		t.Fatal("cached answer not used within TTL")
	}
	if ans.TTL != time.Second {
		t.Errorf("remaining TTL %v, want 1s", ans.TTL)
	}
	advance(time.Second)
	r.MX(ctx, "mx.example.test")
	if f.queries.Load() != n+1 {
		t.Fatal("answer served beyond its TTL")
	}

	// Negative answers: SOA minimum (60s), then capped by MaxNegativeTTL.
	r.MX(ctx, "nx.example.test")
	n = f.queries.Load()
	advance(59 * time.Second)
	r.MX(ctx, "nx.example.test")
	if f.queries.Load() != n {
		t.Fatal("negative answer not cached")
	}
	advance(time.Second)
	r.MX(ctx, "nx.example.test")
	if f.queries.Load() != n+1 {
		t.Fatal("negative answer served beyond SOA minimum")
	}

	capped := newTest(t, f, WithClock(clock), WithMaxNegativeTTL(10*time.Second))
	if _, ans, _ := capped.MX(ctx, "nodata.example.test"); ans.TTL != 10*time.Second {
		t.Errorf("capped negative TTL = %v", ans.TTL)
	}

	// Temporary failures are not cached.
	r.MX(ctx, "servfail.example.test")
	n = f.queries.Load()
	r.MX(ctx, "servfail.example.test")
	if f.queries.Load() != n+1 {
		t.Error("SERVFAIL was cached")
	}
}

func TestContextCancel(t *testing.T) {
	f := startDNS(t)
	r := New([]string{f.addr}, WithTimeout(5*time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, ans, err := r.MX(ctx, "timeout.example.test")
	if err == nil || ans.Status != Timeout {
		t.Fatalf("err %v status %v", err, ans.Status)
	}
	if time.Since(start) > 2*time.Second {
		t.Error("context deadline not honoured")
	}
}

func TestFromResolvConf(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(p, []byte("# c\nnameserver 127.0.0.53\nnameserver ::1\noptions edns0\n"), 0o644)
	s, err := FromResolvConf(p)
	if err != nil || len(s) != 2 || s[0] != "127.0.0.53:53" || s[1] != "[::1]:53" {
		t.Fatalf("%v %v", s, err)
	}
	if _, err := FromResolvConf(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing file: no error")
	}
}
