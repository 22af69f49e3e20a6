package mtasts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/smtp"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// MXResolver looks up a domain's MX records (host names may end in a
// dot). NXDOMAIN and NODATA wrap ErrNotFound.
type MXResolver interface {
	LookupMX(ctx context.Context, domain string) ([]*net.MX, error)
}

// CheckResolver is the DNS the checker needs.
type CheckResolver interface {
	TXTResolver
	MXResolver
}

// CheckOptions configure Check. The checker runs from the gateway itself,
// with its resolvers, proxy and trust store.
type CheckOptions struct {
	Resolver CheckResolver
	// Roots verify the policy host and the MX certificates; nil means
	// system roots.
	Roots *x509.CertPool
	// Timeout bounds each network step; zero means DefaultFetchTimeout.
	Timeout time.Duration
	// Proxy is used for the policy fetch only (SMTP goes direct).
	Proxy *url.URL
	// DialContext opens TCP connections for the fetch and the SMTP
	// probes; nil means a net.Dialer.
	DialContext DialFunc
	// SMTPPort is the port probed on each MX; zero means 25.
	SMTPPort int
	// HeloName is sent in EHLO; empty means "localhost".
	HeloName string
	// Now is the clock for certificate expiry; nil means time.Now.
	Now func() time.Time
}

// Verdict grades one finding.
type Verdict string

// The verdicts.
const (
	OK   Verdict = "ok"
	Warn Verdict = "warn"
	Fail Verdict = "fail"
)

// Finding is one graded observation with what to do about it.
type Finding struct {
	Check   string  `json:"check"` // txt, certificate, http, policy, mx
	Verdict Verdict `json:"verdict"`
	Message string  `json:"message"`
	Fix     string  `json:"fix,omitempty"`
}

// TXTCheck is what the _mta-sts TXT lookup found.
type TXTCheck struct {
	Name       string   `json:"name"`
	Records    []string `json:"records,omitempty"`
	STSRecords int      `json:"sts_records"`
	ID         string   `json:"id,omitempty"`
	Error      string   `json:"error,omitempty"`
}

// CertCheck describes the policy host's certificate.
type CertCheck struct {
	Subject    string    `json:"subject"`
	Issuer     string    `json:"issuer"`
	Names      []string  `json:"names"`
	NotAfter   time.Time `json:"not_after"`
	DaysLeft   int       `json:"days_left"`
	ChainValid bool      `json:"chain_valid"`
	NameValid  bool      `json:"name_valid"`
	Error      string    `json:"error,omitempty"`
}

// MXCheck is one MX host: policy match and live STARTTLS probe.
type MXCheck struct {
	Host       string  `json:"host"`
	Pref       uint16  `json:"pref"`
	Pattern    string  `json:"pattern,omitempty"` // the policy pattern it matched
	Matches    bool    `json:"matches"`
	Port       int     `json:"port"`
	Connected  bool    `json:"connected"`
	STARTTLS   bool    `json:"starttls"`
	TLSVersion string  `json:"tls_version,omitempty"`
	Cipher     string  `json:"cipher,omitempty"`
	CertValid  bool    `json:"cert_valid"`
	Error      string  `json:"error,omitempty"`
	Verdict    Verdict `json:"verdict"`
}

// Report is the checker's answer for one domain.
type Report struct {
	Domain      string     `json:"domain"`
	CheckedAt   time.Time  `json:"checked_at"`
	TXT         TXTCheck   `json:"txt"`
	Fetch       *Fetched   `json:"fetch,omitempty"`
	FetchError  string     `json:"fetch_error,omitempty"`
	Certificate *CertCheck `json:"certificate,omitempty"`
	Policy      *Policy    `json:"policy,omitempty"`
	MX          []MXCheck  `json:"mx"`
	Findings    []Finding  `json:"findings"`
	Deliver     bool       `json:"would_deliver"`
}

// WouldDeliver reports whether a sender enforcing this domain's policy
// would deliver mail now: one valid TXT record, a valid policy (mode
// enforce or testing) fetched under the RFC 8461 §3.3 rules, and at least
// one MX host that matches the policy and passes STARTTLS with TLS 1.2 or
// higher and a certificate valid for its name (§4).
func (r *Report) WouldDeliver() bool { return r.Deliver }

func (r *Report) add(check string, v Verdict, msg, fix string) {
	r.Findings = append(r.Findings, Finding{Check: check, Verdict: v, Message: msg, Fix: fix})
}

// Check examines domain's MTA-STS deployment the way a sending MTA sees it
// and says, finding by finding, what works and what to fix. It only reads:
// the SMTP probe stops after STARTTLS.
func Check(ctx context.Context, domain string, o CheckOptions) *Report {
	if o.Timeout <= 0 {
		o.Timeout = DefaultFetchTimeout
	}
	if o.SMTPPort == 0 {
		o.SMTPPort = 25
	}
	if o.HeloName == "" {
		o.HeloName = "localhost"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.DialContext == nil {
		o.DialContext = (&net.Dialer{}).DialContext
	}
	d, ok := normalizeDomain(domain)
	r := &Report{Domain: d, CheckedAt: o.Now(), MX: []MXCheck{}}
	if !ok {
		r.add("txt", Fail, fmt.Sprintf("%q is not a domain name", domain), "Give the recipient domain, e.g. example.com.")
		return r
	}
	txtOK := r.checkTXT(ctx, o)
	policyOK := r.checkPolicy(ctx, o)
	matched := r.checkMX(ctx, o)
	r.Deliver = txtOK && policyOK && matched
	return r
}

func (r *Report) checkTXT(ctx context.Context, o CheckOptions) bool {
	r.TXT.Name = "_mta-sts." + r.Domain
	tctx, cancel := context.WithTimeout(ctx, o.Timeout)
	recs, err := o.Resolver.LookupTXT(tctx, r.TXT.Name)
	cancel()
	r.TXT.Records = recs
	if err != nil {
		r.TXT.Error = err.Error()
		if errors.Is(err, ErrNotFound) {
			r.add("txt", Fail, "No TXT record at "+r.TXT.Name+": the domain does not publish MTA-STS.",
				"Publish "+r.TXT.Name+". TXT \"v=STSv1; id=20250101T000000;\" (change the id whenever the policy changes).")
		} else {
			r.add("txt", Fail, "TXT lookup for "+r.TXT.Name+" failed temporarily: "+err.Error()+". A sender would defer mail.",
				"Check the gateway's resolvers and the domain's name servers, then run the check again.")
		}
		return false
	}
	for _, t := range recs {
		if isSTSCandidate(t) {
			r.TXT.STSRecords++
		}
	}
	rec, err := SelectTXT(recs)
	switch {
	case errors.Is(err, ErrNoSTSRecord):
		fix := "Publish exactly one record beginning with v=STSv1."
		for _, t := range recs {
			if strings.HasPrefix(strings.ToLower(t), "v=stsv1") {
				fix = "The version tag is case-sensitive (RFC 8461 §3.1): write v=STSv1, not " + t[:min(len(t), 7)] + "."
			}
		}
		r.add("txt", Fail, "No TXT record at "+r.TXT.Name+" begins with v=STSv1.", fix)
		return false
	case errors.Is(err, ErrMultipleSTSRecords):
		r.add("txt", Fail, fmt.Sprintf("%d TXT records begin with v=STSv1; senders ignore them all (RFC 8461 §3.1).", r.TXT.STSRecords),
			"Delete all but one v=STSv1 record.")
		return false
	case err != nil:
		r.TXT.Error = err.Error()
		r.add("txt", Fail, "The TXT record is malformed: "+err.Error()+".",
			"Use the form \"v=STSv1; id=<1 to 32 letters and digits>;\".")
		return false
	}
	r.TXT.ID = rec.ID
	r.add("txt", OK, "One valid TXT record, id "+rec.ID+".", "")
	return true
}

func (r *Report) checkPolicy(ctx context.Context, o CheckOptions) bool {
	f, err := Fetch(ctx, r.Domain, FetchOptions{Roots: o.Roots, Timeout: o.Timeout, Proxy: o.Proxy, DialContext: o.DialContext})
	r.Fetch = f
	host := "mta-sts." + r.Domain
	if len(f.PeerCerts) > 0 {
		leaf := f.PeerCerts[0]
		now := o.Now()
		c := &CertCheck{Subject: leaf.Subject.String(), Issuer: leaf.Issuer.String(), Names: leaf.DNSNames,
			NotAfter: leaf.NotAfter, DaysLeft: int(leaf.NotAfter.Sub(now).Hours() / 24)}
		chainErr := verifyPeer(f.PeerCerts, o.Roots, "", now)
		nameErr := leaf.VerifyHostname(host)
		c.ChainValid, c.NameValid = chainErr == nil, nameErr == nil
		r.Certificate = c
		switch {
		case chainErr != nil:
			c.Error = chainErr.Error()
			r.add("certificate", Fail, "The certificate of "+host+" does not verify: "+chainErr.Error()+".",
				"Serve a certificate from a public CA (with its intermediates) that is currently valid.")
		case nameErr != nil:
			c.Error = nameErr.Error()
			r.add("certificate", Fail, "The certificate of "+host+" is not valid for that name (it names "+strings.Join(leaf.DNSNames, ", ")+").",
				"Add "+host+" to the certificate's subject alternative names.")
		case c.DaysLeft < 14:
			r.add("certificate", Warn, fmt.Sprintf("The certificate of %s expires in %d days (%s).", host, c.DaysLeft, leaf.NotAfter.Format(time.DateOnly)),
				"Renew it now: an expired policy host certificate stops policy refreshes.")
		default:
			r.add("certificate", OK, fmt.Sprintf("Certificate valid for %s, issued by %s, %d days left.", host, leaf.Issuer.CommonName, c.DaysLeft), "")
		}
	}
	if err != nil {
		r.FetchError = err.Error()
		var fe *FetchError
		errors.As(err, &fe)
		switch fe.Kind {
		case FetchCertificate:
			// Reported above.
		case FetchInvalidPolicy:
			r.add("policy", Fail, "The policy is invalid: "+fe.Err.Error()+".", policyFix(fe.Err))
		default:
			r.add("http", Fail, "Fetching "+f.URL+" failed: "+fe.Err.Error()+".", fetchFix(fe.Kind, host))
		}
		return false
	}
	r.add("http", OK, fmt.Sprintf("GET %s: %d, %s, %d bytes.", f.URL, f.Status, f.ContentType, f.Size), "")
	p := f.Policy
	r.Policy = p
	switch p.Mode {
	case ModeEnforce:
		r.add("policy", OK, fmt.Sprintf("Policy valid: mode enforce, %d mx pattern(s).", len(p.MX)), "")
	case ModeTesting:
		r.add("policy", Warn, fmt.Sprintf("Policy valid: mode testing, %d mx pattern(s); senders report failures but still deliver.", len(p.MX)),
			"Switch to mode: enforce once reports show no failures.")
	case ModeNone:
		r.add("policy", Warn, "Policy mode is none: the domain is withdrawing MTA-STS and there is nothing to enforce.",
			"Publish mode: testing or enforce with the MX patterns to use MTA-STS.")
	}
	switch {
	case p.MaxAge < 86400:
		r.add("policy", Warn, fmt.Sprintf("max_age is %d seconds; short lifetimes leave the policy open to being blocked at refresh (RFC 8461 §10).", p.MaxAge),
			"Use a max_age of weeks, e.g. 1209600 (two weeks) or more.")
	default:
		r.add("policy", OK, fmt.Sprintf("max_age %d seconds (%.1f days).", p.MaxAge, float64(p.MaxAge)/86400), "")
	}
	return p.Mode != ModeNone
}

func policyFix(err error) string {
	s := err.Error()
	switch {
	case strings.Contains(s, "STSv1"):
		return "Write the first line exactly as \"version: STSv1\" (case-sensitive)."
	case strings.Contains(s, "mx"):
		return "List each MX host as \"mx: mail.example.com\" or \"mx: *.example.com\", one per line."
	case strings.Contains(s, "max_age"):
		return "Add \"max_age: 1209600\" (seconds, at most 31557600)."
	case strings.Contains(s, "mode"):
		return "Use \"mode: enforce\", \"mode: testing\" or \"mode: none\"."
	}
	return "Serve \"key: value\" lines only: version, mode, mx, max_age."
}

func fetchFix(k FetchErrorKind, host string) string {
	switch k {
	case FetchTimeout:
		return "Make https://" + host + " answer within the timeout from the gateway (check firewalls and the proxy setting)."
	case FetchConnect:
		return "Make " + host + ":443 reachable from the gateway (DNS A/AAAA record, firewall, proxy)."
	case FetchRedirect:
		return "Serve the policy directly at /.well-known/mta-sts.txt: senders do not follow redirects (RFC 8461 §3.3)."
	case FetchHTTPStatus:
		return "Serve the policy with status 200 at /.well-known/mta-sts.txt."
	case FetchContentType:
		return "Serve the policy with Content-Type: text/plain."
	case FetchTooLarge:
		return "Keep the policy under 64 KiB."
	}
	return "Check that https://" + host + "/.well-known/mta-sts.txt serves the policy."
}

func (r *Report) checkMX(ctx context.Context, o CheckOptions) bool {
	tctx, cancel := context.WithTimeout(ctx, o.Timeout)
	mxs, err := o.Resolver.LookupMX(tctx, r.Domain)
	cancel()
	switch {
	case errors.Is(err, ErrNotFound) || err == nil && len(mxs) == 0:
		// RFC 5321 §5.1: no MX means the domain itself is the implicit MX.
		mxs = []*net.MX{{Host: r.Domain}}
		r.add("mx", Warn, "No MX records; mail goes to the domain itself (implicit MX).", "Publish MX records for the mail hosts.")
	case err != nil:
		r.add("mx", Fail, "MX lookup failed: "+err.Error()+".", "Check the gateway's resolvers and the domain's name servers.")
		return false
	}
	deliverable := false
	for _, mx := range mxs {
		host := strings.ToLower(strings.TrimSuffix(mx.Host, "."))
		if host == "" {
			r.add("mx", Fail, "Null MX: the domain accepts no mail (RFC 7505).", "")
			continue
		}
		c := MXCheck{Host: host, Pref: mx.Pref, Port: o.SMTPPort}
		if r.Policy != nil {
			c.Pattern = r.Policy.MatchingPattern(host)
			c.Matches = c.Pattern != ""
		}
		probeMX(ctx, &c, o)
		switch {
		case r.Policy != nil && r.Policy.Mode != ModeNone && !c.Matches:
			c.Verdict = Fail
			r.add("mx", Fail, "MX "+host+" is not listed in the policy; an enforcing sender will not deliver to it.",
				"Add \"mx: "+host+"\" (or a matching *. pattern) to the policy, or remove the MX record.")
		case !c.Connected:
			c.Verdict = Fail
			r.add("mx", Fail, "MX "+host+": cannot connect: "+c.Error+".", "Check that port "+strconv.Itoa(c.Port)+" is open to the gateway.")
		case !c.STARTTLS:
			c.Verdict = Fail
			r.add("mx", Fail, "MX "+host+" does not offer STARTTLS"+errSuffix(c.Error)+".", "Enable STARTTLS on "+host+".")
		case c.TLSVersion != "" && tlsVersionBelow12(c.TLSVersion):
			c.Verdict = Fail
			r.add("mx", Fail, "MX "+host+" negotiated "+c.TLSVersion+"; MTA-STS requires TLS 1.2 or higher.", "Enable TLS 1.2 and 1.3 on "+host+".")
		case !c.CertValid:
			c.Verdict = Fail
			r.add("mx", Fail, "MX "+host+": certificate not valid for that name: "+c.Error+".",
				"Serve a CA-signed, unexpired certificate whose names include "+host+".")
		default:
			c.Verdict = OK
			if r.Policy != nil && r.Policy.Mode != ModeNone {
				r.add("mx", OK, "MX "+host+" matches "+c.Pattern+"; STARTTLS "+c.TLSVersion+", certificate valid.", "")
				deliverable = true
			} else {
				r.add("mx", OK, "MX "+host+": STARTTLS "+c.TLSVersion+", certificate valid.", "")
			}
		}
		r.MX = append(r.MX, c)
	}
	if !deliverable && r.Policy != nil && r.Policy.Mode != ModeNone {
		r.add("mx", Fail, "No MX host passes the policy: an enforcing sender would defer all mail.", "Fix the MX findings above.")
	}
	return deliverable
}

func errSuffix(s string) string {
	if s == "" {
		return ""
	}
	return " (" + s + ")"
}

func tlsVersionBelow12(v string) bool { return v == "TLS 1.0" || v == "TLS 1.1" || v == "SSL 3.0" }

// probeMX connects, reads the greeting, sends EHLO and STARTTLS, and
// records the TLS version and whether the certificate is valid for the MX
// name (RFC 8461 §4.2). The verdict is enforced: a bad certificate aborts
// the handshake. Then it quits; no mail is sent.
func probeMX(ctx context.Context, c *MXCheck, o CheckOptions) {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	conn, err := o.DialContext(ctx, "tcp", net.JoinHostPort(c.Host, strconv.Itoa(c.Port)))
	if err != nil {
		c.Error = err.Error()
		return
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	c.Connected = true
	cl, err := smtp.NewClient(conn, c.Host)
	if err != nil {
		c.Error = "greeting: " + err.Error()
		return
	}
	if err := cl.Hello(o.HeloName); err != nil {
		c.Error = "EHLO: " + err.Error()
		return
	}
	if ok, _ := cl.Extension("STARTTLS"); !ok {
		cl.Quit()
		return
	}
	c.STARTTLS = true
	var certErr error
	err = cl.StartTLS(&tls.Config{
		ServerName: c.Host,
		// Accept old versions in the handshake so that the report can name
		// them; the verdict below fails anything under TLS 1.2.
		MinVersion:         tls.VersionTLS10,
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			c.TLSVersion = tls.VersionName(cs.Version)
			c.Cipher = tls.CipherSuiteName(cs.CipherSuite)
			certErr = verifyPeer(cs.PeerCertificates, o.Roots, c.Host, o.Now())
			return certErr
		},
	})
	switch {
	case certErr != nil:
		c.Error = certErr.Error()
	case err != nil:
		c.Error = "STARTTLS: " + err.Error()
	default:
		c.CertValid = true
		cl.Quit()
	}
}

// WriteText renders the report for a terminal.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "MTA-STS check for %s (%s)\n\n", r.Domain, r.CheckedAt.Format(time.RFC3339))
	for _, f := range r.Findings {
		fmt.Fprintf(&b, "  %-6s %-11s %s\n", "["+string(f.Verdict)+"]", f.Check, f.Message)
		if f.Fix != "" {
			fmt.Fprintf(&b, "  %-6s %-11s fix: %s\n", "", "", f.Fix)
		}
	}
	if len(r.MX) > 0 {
		b.WriteString("\n  MX host                          pref  policy  STARTTLS  TLS      certificate\n")
		for _, m := range r.MX {
			fmt.Fprintf(&b, "  %-32s %4d  %-6s  %-8s  %-7s  %s\n", m.Host, m.Pref, yes(m.Matches), yes(m.STARTTLS), dash(m.TLSVersion), certWord(m))
		}
	}
	if r.WouldDeliver() {
		b.WriteString("\nVerdict: enforcing this policy WOULD deliver mail to " + r.Domain + ".\n")
	} else {
		b.WriteString("\nVerdict: enforcing MTA-STS would NOT deliver mail to " + r.Domain + "; fix the failures above before relying on it.\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func certWord(m MXCheck) string {
	switch {
	case m.TLSVersion == "":
		return "-"
	case m.CertValid:
		return "valid"
	}
	return "invalid"
}
