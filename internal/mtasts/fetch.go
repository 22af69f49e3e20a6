package mtasts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"outpost/internal/maillog"
)

// MaxPolicySize is the largest policy body accepted (RFC 8461 §3.3 suggests
// senders bound the response size; 64 KiB as the RFC's example).
const MaxPolicySize = 64 << 10

// DefaultFetchTimeout bounds one policy fetch (and one TXT lookup).
const DefaultFetchTimeout = 10 * time.Second

// DialFunc dials a network address; it has the shape of
// net.Dialer.DialContext.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// FetchOptions configure the HTTPS policy fetch.
type FetchOptions struct {
	// Roots verify the policy host's certificate; nil means the system
	// roots.
	Roots *x509.CertPool
	// Timeout bounds the whole fetch (connect, TLS, request, body); zero
	// means DefaultFetchTimeout.
	Timeout time.Duration
	// Proxy, when set, is an http:// proxy reached with CONNECT; the TLS
	// session still runs end to end with mta-sts.<domain>. Environment
	// proxy variables are never consulted.
	Proxy *url.URL
	// DialContext opens TCP connections (to the policy host or the proxy);
	// nil means a net.Dialer. Tests use it to map mta-sts.<domain>:443 to a
	// loopback listener while the URL, Host header and SNI stay
	// mta-sts.<domain>.
	DialContext DialFunc
	// Log receives the fetch's mail-log lines; nil discards them.
	Log *maillog.Logger
}

// FetchErrorKind classifies why a fetch gave no policy.
type FetchErrorKind uint8

// The fetch failure kinds.
const (
	FetchFailed        FetchErrorKind = iota // other network or protocol error
	FetchTimeout                             // the fetch ran out of time
	FetchConnect                             // TCP connection (or proxy CONNECT) failed
	FetchCertificate                         // policy host certificate invalid
	FetchRedirect                            // a 3xx answer (redirects are not followed)
	FetchHTTPStatus                          // a status other than 200
	FetchContentType                         // not text/plain
	FetchTooLarge                            // body over MaxPolicySize
	FetchInvalidPolicy                       // the body is not a valid policy
	FetchBadDomain                           // the domain is not a valid host name
)

var fetchKindNames = [...]string{"failed", "timeout", "connect", "certificate", "redirect", "http-status", "content-type", "too-large", "invalid-policy", "bad-domain"}

func (k FetchErrorKind) String() string {
	if int(k) < len(fetchKindNames) {
		return fetchKindNames[k]
	}
	return "failed"
}

// MarshalText implements encoding.TextMarshaler.
func (k FetchErrorKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// FetchError is why a policy fetch failed. Any fetch failure means "no new
// policy" (RFC 8461 §3.3).
type FetchError struct {
	Domain string
	Kind   FetchErrorKind
	Err    error
}

func (e *FetchError) Error() string {
	return fmt.Sprintf("fetch MTA-STS policy for %s: %s: %v", e.Domain, e.Kind, e.Err)
}

func (e *FetchError) Unwrap() error { return e.Err }

// Timeout reports whether the fetch failed by running out of time.
func (e *FetchError) Timeout() bool { return e.Kind == FetchTimeout }

// Fetched is the outcome of one fetch, filled as far as the fetch got (the
// checker reports the details even when the fetch failed).
type Fetched struct {
	URL         string              `json:"url"`
	ViaProxy    bool                `json:"via_proxy,omitempty"`
	Status      int                 `json:"status,omitempty"`
	ContentType string              `json:"content_type,omitempty"`
	Size        int                 `json:"size"`
	Raw         string              `json:"-"`
	Policy      *Policy             `json:"policy,omitempty"`
	PeerCerts   []*x509.Certificate `json:"-"`
	// CertErr is the policy host certificate's verification failure, if any.
	CertErr error `json:"-"`
}

// PolicyURL is where a domain's policy is published (RFC 8461 §3.3).
func PolicyURL(domain string) string {
	return "https://mta-sts." + domain + "/.well-known/mta-sts.txt"
}

// Fetch fetches and parses domain's policy (RFC 8461 §3.3). The returned
// *Fetched is never nil; the error, when set, is a *FetchError.
func Fetch(ctx context.Context, domain string, o FetchOptions) (*Fetched, error) {
	domain, ok := normalizeDomain(domain)
	if !ok {
		return &Fetched{}, &FetchError{Domain: domain, Kind: FetchBadDomain, Err: errors.New("not a valid host name")}
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultFetchTimeout
	}
	host := "mta-sts." + domain
	out := &Fetched{URL: PolicyURL(domain), ViaProxy: o.Proxy != nil}
	fail := func(k FetchErrorKind, err error) (*Fetched, error) {
		if k == FetchTimeout {
			o.Log.MTASTSFetchTimeout(domain)
		}
		o.Log.MTASTSFetchFailed(domain)
		return out, &FetchError{Domain: domain, Kind: k, Err: err}
	}
	o.Log.MTASTSFetchPolicy(domain)
	if o.Proxy != nil {
		o.Log.MTASTSFetchViaProxy()
	}

	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	dial := o.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	tr := &http.Transport{
		DialContext:       dial,
		DisableKeepAlives: true,
		ForceAttemptHTTP2: false,
		// RFC 8461 §3.3: "the HTTPS endpoint MUST present a valid X.509
		// certificate for the mta-sts DNS-ID"; SNI is the same name. The
		// standard verification is replaced by verifyPeer, which enforces
		// the same rules and also records the chain for the checker.
		TLSClientConfig: &tls.Config{
			ServerName:         host,
			MinVersion:         tls.VersionTLS12,
			InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				out.PeerCerts = cs.PeerCertificates
				out.CertErr = verifyPeer(cs.PeerCertificates, o.Roots, host, time.Now())
				return out.CertErr
			},
		},
		TLSHandshakeTimeout:    o.Timeout,
		ResponseHeaderTimeout:  o.Timeout,
		MaxResponseHeaderBytes: 16 << 10,
	}
	if o.Proxy != nil {
		tr.Proxy = http.ProxyURL(o.Proxy)
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport: tr,
		// RFC 8461 §3.3: "HTTP 3xx redirects MUST NOT be followed".
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, out.URL, nil)
	if err != nil {
		return fail(FetchFailed, err)
	}
	req.Header.Set("User-Agent", "outpost-mta-sts/1")
	// RFC 8461 §3.3: "HTTP caching MUST NOT be used" (we have no cache; ask
	// intermediaries not to use theirs either).
	req.Header.Set("Cache-Control", "no-cache")
	resp, err := client.Do(req)
	if err != nil {
		return fail(classify(ctx, err, out.CertErr), err)
	}
	defer resp.Body.Close()
	if ctx.Err() != nil {
		// The deadline passed while the response was arriving (the server
		// gave up on its side); a late answer is still a timeout.
		return fail(FetchTimeout, ctx.Err())
	}
	out.Status = resp.StatusCode
	out.ContentType = resp.Header.Get("Content-Type")
	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return fail(FetchRedirect, fmt.Errorf("HTTP %d redirect to %q (redirects are not followed)", resp.StatusCode, resp.Header.Get("Location")))
	case resp.StatusCode != http.StatusOK:
		// RFC 8461 §3.3: policies are only valid with a 200 (OK) response.
		return fail(FetchHTTPStatus, fmt.Errorf("HTTP status %d, want 200", resp.StatusCode))
	}
	// RFC 8461 §3.2: the media type MUST be text/plain; senders SHOULD
	// validate it. Parameters (charset) are ignored.
	mt, _, err := mime.ParseMediaType(out.ContentType)
	if err != nil || mt != "text/plain" {
		return fail(FetchContentType, fmt.Errorf("content type %q, want text/plain", out.ContentType))
	}
	if resp.ContentLength > MaxPolicySize {
		out.Size = int(min(resp.ContentLength, 1<<30))
		return fail(FetchTooLarge, fmt.Errorf("body of %d bytes exceeds %d", resp.ContentLength, MaxPolicySize))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxPolicySize+1))
	out.Size = len(body)
	if err != nil {
		return fail(classify(ctx, err, nil), fmt.Errorf("read body: %w", err))
	}
	if len(body) > MaxPolicySize {
		return fail(FetchTooLarge, fmt.Errorf("body exceeds %d bytes", MaxPolicySize))
	}
	out.Raw = string(body)
	p, err := ParsePolicy(out.Raw)
	if err != nil {
		return fail(FetchInvalidPolicy, err)
	}
	out.Policy = p
	return out, nil
}

// classify maps a client error to a kind; a timeout is told apart for the
// mail-log line.
func classify(ctx context.Context, err, certErr error) FetchErrorKind {
	var ne net.Error
	var oe *net.OpError
	switch {
	case certErr != nil:
		return FetchCertificate
	case errors.Is(err, context.DeadlineExceeded) || ctx.Err() == context.DeadlineExceeded,
		errors.As(err, &ne) && ne.Timeout():
		return FetchTimeout
	case errors.As(err, new(*tls.CertificateVerificationError)), errors.As(err, new(x509.UnknownAuthorityError)),
		errors.As(err, new(x509.HostnameError)), errors.As(err, new(x509.CertificateInvalidError)):
		return FetchCertificate
	case errors.As(err, &oe) && (oe.Op == "dial" || oe.Op == "proxyconnect"):
		return FetchConnect
	}
	return FetchFailed
}

// verifyPeer checks a server chain against roots for name at now, as
// crypto/tls would (RFC 8461 §3.3 for the policy host, §4.2 for MX hosts).
func verifyPeer(certs []*x509.Certificate, roots *x509.CertPool, name string, now time.Time) error {
	if len(certs) == 0 {
		return errors.New("no certificate presented")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		DNSName:       name,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	return err
}

// normalizeDomain lower-cases d, drops one trailing dot and checks it is a
// host name.
func normalizeDomain(d string) (string, bool) {
	d = strings.ToLower(strings.TrimSuffix(d, "."))
	return d, validHostname(d)
}
