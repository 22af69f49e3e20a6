package mtasts

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testDomain = "example.test"
	goodPolicy = "version: STSv1\nmode: enforce\nmx: mx1.example.test\nmx: *.mx.example.test\nmax_age: 86400\n"
)

// TestFetchFailures covers RFC 8461 §3.3: each failure is "no policy"
// (Manager: NoPolicy, no error) with a typed reason.
func TestFetchFailures(t *testing.T) {
	good := ca(t).MustLeaf("mta-sts." + testDomain)
	wrongName := ca(t).MustLeaf("mta-sts.other.test")
	otherCA, err := newOtherCA()
	if err != nil {
		t.Fatal(err)
	}
	untrusted := otherCA.MustLeaf("mta-sts." + testDomain)

	tests := []struct {
		name    string
		cert    tls.Certificate
		handler http.HandlerFunc
		kind    FetchErrorKind
	}{
		{"§3.3 3xx redirects MUST NOT be followed", good, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://mta-sts.example.test/elsewhere.txt", http.StatusFound)
		}, FetchRedirect},
		{"§3.3 only 200 is valid: 404", good, http.NotFound, FetchHTTPStatus},
		{"§3.3 only 200 is valid: 204", good, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }, FetchHTTPStatus},
		{"§3.2 media type must be text/plain", good, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			io.WriteString(w, goodPolicy)
		}, FetchContentType},
		{"§3.3 bounded size: Content-Length over 64 KiB", good, serveText(goodPolicy + "x: " + strings.Repeat("a", MaxPolicySize) + "\n"), FetchTooLarge},
		{"§3.3 bounded size: chunked over 64 KiB", good, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			for i := 0; i < 70; i++ {
				io.WriteString(w, strings.Repeat("b", 1024))
				w.(http.Flusher).Flush()
			}
		}, FetchTooLarge},
		{"§3.3 bounded time", good, func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-time.After(3 * time.Second):
			case <-r.Context().Done():
			}
		}, FetchTimeout},
		{"§3.3 certificate valid for mta-sts.<domain>: wrong name", wrongName, serveText(goodPolicy), FetchCertificate},
		{"§3.3 certificate chains to a trusted root: untrusted CA", untrusted, serveText(goodPolicy), FetchCertificate},
		{"§3.2 invalid policy is no policy", good, serveText("version: STSv1\nmode: enforce\nmax_age: 5\n"), FetchInvalidPolicy},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			host := newPolicyHost(t, tc.cert, tc.handler)
			dns := newDNSServer(t)
			dns.SetTXT("_mta-sts."+testDomain, "v=STSv1; id=1;")
			log, lines := newLog()
			timeout := 5 * time.Second
			if tc.kind == FetchTimeout {
				timeout = 500 * time.Millisecond
			}
			m, err := New(context.Background(), Options{
				Resolver:     dnsResolver{dns.Addr},
				Roots:        ca(t).Pool(),
				FetchTimeout: timeout,
				DialContext:  loopbackDial(map[string]string{"mta-sts." + testDomain + ":443": host.Addr()}),
				Log:          log,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			res, err := m.Get(context.Background(), testDomain)
			if err != nil {
				t.Fatalf("Get: %v (a fetch failure must not be temporary)", err)
			}
			if res.Mode != NoPolicy || res.Policy != nil {
				t.Fatalf("mode %v, want no policy", res.Mode)
			}
			var fe *FetchError
			if !errors.As(res.Err, &fe) || fe.Kind != tc.kind {
				t.Fatalf("Err = %v, want a *FetchError of kind %v", res.Err, tc.kind)
			}
			want := []string{
				"Debug: DNS query: Q(_mta-sts.example.test, 'TXT')",
				"Info: Successfully fetched MTA-STS TXT record for domain(example.test)",
				"Debug: Fetch MTA-STS policy for the domain(example.test)",
			}
			if tc.kind == FetchTimeout {
				want = append(want, "Debug: Request to fetch STS policy failed due to a connection timeout., for the domain example.test")
			}
			want = append(want, "Info: Failure encountered while fetching MTA-STS policy for the domain(example.test)")
			if got := lines.Lines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Fatalf("log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

func TestFetchValid(t *testing.T) {
	host := newPolicyHost(t, ca(t).MustLeaf("mta-sts."+testDomain), serveText(goodPolicy))
	f, err := Fetch(context.Background(), "Example.TEST.", FetchOptions{
		Roots:       ca(t).Pool(),
		DialContext: loopbackDial(map[string]string{"mta-sts.example.test:443": host.Addr()}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if f.Policy.Mode != ModeEnforce || len(f.Policy.MX) != 2 || f.Raw != goodPolicy || f.Status != 200 {
		t.Fatalf("fetched %+v", f)
	}
	host.mu.Lock()
	defer host.mu.Unlock()
	// RFC 8461 §3.3: the request goes to mta-sts.<domain> with SNI.
	if host.lastHost != "mta-sts.example.test" || host.lastSNI != "mta-sts.example.test" {
		t.Fatalf("Host %q SNI %q", host.lastHost, host.lastSNI)
	}
	if len(f.PeerCerts) == 0 || f.CertErr != nil {
		t.Fatalf("certs %d err %v", len(f.PeerCerts), f.CertErr)
	}
}

func TestFetchBadDomain(t *testing.T) {
	_, err := Fetch(context.Background(), "exa mple/../x", FetchOptions{})
	var fe *FetchError
	if !errors.As(err, &fe) || fe.Kind != FetchBadDomain {
		t.Fatalf("err = %v", err)
	}
}

// connectProxy is a real HTTP CONNECT proxy on loopback. It records the
// targets it was asked for and routes them through dial.
type connectProxy struct {
	srv     *httptest.Server
	mu      sync.Mutex
	targets []string
}

func newConnectProxy(t *testing.T, dial DialFunc) *connectProxy {
	p := &connectProxy{}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		p.mu.Lock()
		p.targets = append(p.targets, r.Host)
		p.mu.Unlock()
		up, err := dial(r.Context(), "tcp", r.Host)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		hj, ok := w.(http.Hijacker)
		if !ok {
			up.Close()
			http.Error(w, "no hijack", 500)
			return
		}
		w.WriteHeader(http.StatusOK)
		down, buf, err := hj.Hijack()
		if err != nil {
			up.Close()
			return
		}
		go func() {
			defer up.Close()
			defer down.Close()
			go func() {
				if n := buf.Reader.Buffered(); n > 0 {
					b, _ := buf.Reader.Peek(n)
					up.Write(b)
				}
				io.Copy(up, down)
				up.(*net.TCPConn).CloseWrite()
			}()
			io.Copy(down, up)
		}()
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *connectProxy) Targets() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.targets...)
}

func TestFetchViaProxy(t *testing.T) {
	host := newPolicyHost(t, ca(t).MustLeaf("mta-sts."+testDomain), serveText(goodPolicy))
	// Only the proxy knows the route to the policy host: a direct dial
	// would fail, so success proves the proxy carried the fetch.
	proxy := newConnectProxy(t, loopbackDial(map[string]string{"mta-sts.example.test:443": host.Addr()}))
	pu, _ := url.Parse(proxy.srv.URL)
	dns := newDNSServer(t)
	dns.SetTXT("_mta-sts."+testDomain, "v=STSv1; id=p1;")
	log, lines := newLog()
	m, err := New(context.Background(), Options{
		Resolver:    dnsResolver{dns.Addr},
		Roots:       ca(t).Pool(),
		Proxy:       pu,
		DialContext: loopbackDial(nil),
		Log:         log,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	res, err := m.Get(context.Background(), testDomain)
	if err != nil || res.Mode != ModeEnforce || res.Source != SourceFetch {
		t.Fatalf("Get = %+v, %v", res, err)
	}
	if got := proxy.Targets(); len(got) != 1 || got[0] != "mta-sts.example.test:443" {
		t.Fatalf("proxy CONNECT targets %v", got)
	}
	host.mu.Lock()
	sni := host.lastSNI
	host.mu.Unlock()
	if sni != "mta-sts.example.test" {
		t.Fatalf("SNI through proxy %q", sni)
	}
	want := []string{
		"Debug: DNS query: Q(_mta-sts.example.test, 'TXT')",
		"Info: Successfully fetched MTA-STS TXT record for domain(example.test)",
		"Debug: Fetch MTA-STS policy for the domain(example.test)",
		"Debug: Requesting MTA-STS policy fetch via proxy",
	}
	if got := lines.Lines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestNewRejectsNonHTTPProxy(t *testing.T) {
	u, _ := url.Parse("socks5://127.0.0.1:1080")
	if _, err := New(context.Background(), Options{Resolver: dnsResolver{}, Proxy: u}); err == nil {
		t.Fatal("socks5 proxy accepted")
	}
}
