package main

// Troubleshooting tools that run from the gateway's own configuration — its
// resolvers, MTA-STS proxy and trust store — without the daemon:
//
//	outpost mta-sts check DOMAIN [--json]
//	outpost dig NAME [TYPE]
//	outpost tlsverify DOMAIN

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"outpost/internal/app"
	"outpost/internal/config"
	"outpost/internal/deliver"
	"outpost/internal/mtasts"
	"outpost/internal/resolver"
	"outpost/internal/tlspolicy"
)

// toolEnv is what the tools share: the configuration, a resolver over the
// configured servers and the outbound trust store.
type toolEnv struct {
	cfg   *config.Config
	dns   *resolver.Resolver
	roots *x509.CertPool
}

func newToolEnv(cfgPath string, stderr io.Writer) (*toolEnv, bool) {
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "outpost:", err)
		return nil, false
	}
	roots, err := app.TrustStore(cfg.TLS)
	if err != nil {
		fmt.Fprintln(stderr, "outpost:", err)
		return nil, false
	}
	return &toolEnv{cfg: cfg, roots: roots,
		dns: resolver.New(cfg.DNS.Resolvers, resolver.WithTimeout(cfg.DNS.Timeout.D()))}, true
}

// ---- outpost mta-sts check ----

func mtastsCheck(cfgPath string, args []string, stdout, stderr io.Writer) int {
	var domain string
	asJSON := false
	for _, a := range args {
		switch {
		case a == "--json" || a == "-json":
			asJSON = true
		case strings.HasPrefix(a, "-"):
			fmt.Fprintf(stderr, "outpost: mta-sts check: unknown flag %s\n%s", a, mtastsUsage)
			return 2
		case domain == "":
			domain = a
		default:
			fmt.Fprint(stderr, mtastsUsage)
			return 2
		}
	}
	if domain == "" {
		fmt.Fprint(stderr, mtastsUsage)
		return 2
	}
	env, ok := newToolEnv(cfgPath, stderr)
	if !ok {
		return 1
	}
	proxy, err := app.ProxyURL(env.cfg)
	if err != nil {
		fmt.Fprintln(stderr, "outpost:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep := mtasts.Check(ctx, domain, mtasts.CheckOptions{
		Resolver: app.DNSAdapter{R: env.dns}, Roots: env.roots,
		Timeout: env.cfg.MTASTS.FetchTimeout.D(), Proxy: proxy,
		DialContext: app.ResolverDial(env.dns, proxy),
		SMTPPort:    env.cfg.Delivery.Port, HeloName: env.cfg.Hostname,
	})
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintln(stderr, "outpost:", err)
			return 1
		}
	} else if err := rep.WriteText(stdout); err != nil {
		fmt.Fprintln(stderr, "outpost:", err)
		return 1
	}
	if !rep.WouldDeliver() {
		return 1
	}
	return 0
}

// ---- outpost dig ----

const digUsage = "usage: outpost dig NAME [A|AAAA|MX|TXT|TLSA]   (TLSA names are _PORT._tcp.HOST)\n"

// statusWord spells an outcome as dig users expect.
func statusWord(s resolver.Status) string {
	switch s {
	case resolver.OK:
		return "NOERROR"
	case resolver.Timeout:
		return "timeout"
	}
	return s.String()
}

func digCmd(cfgPath string, args []string, stdout, stderr io.Writer) int {
	if len(args) < 1 || len(args) > 2 {
		fmt.Fprint(stderr, digUsage)
		return 2
	}
	name := strings.TrimSuffix(args[0], ".")
	qtype := "A"
	if len(args) == 2 {
		qtype = strings.ToUpper(args[1])
	}
	env, ok := newToolEnv(cfgPath, stderr)
	if !ok {
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var (
		lines []string
		ans   resolver.Answer
		err   error
	)
	fqdn := name + "."
	switch qtype {
	case "A", "AAAA":
		if _, lit := netip.ParseAddr(name); lit == nil {
			fmt.Fprintf(stderr, "outpost: dig: %s is an address, not a name\n", name)
			return 2
		}
		var addrs []netip.Addr
		addrs, ans, err = env.dns.Addrs(ctx, name)
		for _, a := range addrs {
			if a.Is4() == (qtype == "A") {
				lines = append(lines, fmt.Sprintf("%s\t%s\t%s", fqdn, qtype, a))
			}
		}
		// Addrs merges both families; say NODATA when this one had none.
		if err == nil && ans.Status == resolver.OK && len(lines) == 0 {
			ans.Status = resolver.NoData
		}
	case "MX":
		var mxs []resolver.MX
		mxs, ans, err = env.dns.MX(ctx, name)
		if errors.Is(err, resolver.ErrNullMX) {
			lines = append(lines, fmt.Sprintf("%s\tMX\t0 .\t; null MX (RFC 7505): the domain accepts no mail", fqdn))
			err = nil
		}
		for _, m := range mxs {
			lines = append(lines, fmt.Sprintf("%s\tMX\t%d %s.", fqdn, m.Pref, m.Host))
		}
	case "TXT":
		var txts []string
		txts, ans, err = env.dns.TXT(ctx, name)
		for _, t := range txts {
			lines = append(lines, fmt.Sprintf("%s\tTXT\t%s", fqdn, strconv.Quote(t)))
		}
	case "TLSA":
		port, host, ok := parseTLSAName(name)
		if !ok {
			fmt.Fprintf(stderr, "outpost: dig: a TLSA name has the form _PORT._tcp.HOST (e.g. _25._tcp.mx.example.com), not %s\n", name)
			return 2
		}
		var recs []resolver.TLSA
		recs, ans, err = env.dns.TLSA(ctx, port, host)
		for _, r := range recs {
			lines = append(lines, fmt.Sprintf("%s\tTLSA\t%d %d %d %s", fqdn, r.Usage, r.Selector, r.MatchingType, hex.EncodeToString(r.Data)))
		}
	default:
		fmt.Fprintf(stderr, "outpost: dig: unsupported type %q\n%s", qtype, digUsage)
		return 2
	}

	fmt.Fprintf(stdout, ";; %s %s via %s\n", fqdn, qtype, strings.Join(env.cfg.DNS.Resolvers, ", "))
	var rerr *resolver.Error
	if err != nil && !errors.As(err, &rerr) {
		fmt.Fprintf(stdout, ";; status: SERVFAIL (%v)\n", err)
		return 1
	}
	if err != nil {
		ans.Status = rerr.Status
	}
	for _, l := range lines {
		fmt.Fprintln(stdout, l)
	}
	dnssec := "not validated"
	if ans.Secure && err == nil {
		dnssec = "validated (AD)"
	}
	fmt.Fprintf(stdout, ";; status: %s, answers: %d, DNSSEC: %s", statusWord(ans.Status), len(lines), dnssec)
	if err == nil && ans.TTL > 0 {
		fmt.Fprintf(stdout, ", TTL %s", ans.TTL.Round(time.Second))
	}
	fmt.Fprintln(stdout)
	if err != nil {
		fmt.Fprintf(stdout, ";; %v\n", err)
		return 1
	}
	return 0
}

// parseTLSAName splits "_25._tcp.mx.example.com".
func parseTLSAName(name string) (int, string, bool) {
	p, rest, ok := strings.Cut(name, ".")
	if !ok || !strings.HasPrefix(p, "_") {
		return 0, "", false
	}
	port, err := strconv.Atoi(p[1:])
	if err != nil || port <= 0 || port > 65535 {
		return 0, "", false
	}
	host, ok := strings.CutPrefix(strings.ToLower(rest), "_tcp.")
	if !ok || host == "" {
		return 0, "", false
	}
	return port, host, true
}

// ---- outpost tlsverify ----

func tlsverifyCmd(cfgPath string, args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stderr, "usage: outpost tlsverify DOMAIN")
		return 2
	}
	domain := strings.ToLower(strings.TrimSuffix(args[0], "."))
	env, ok := newToolEnv(cfgPath, stderr)
	if !ok {
		return 1
	}
	cfg := env.cfg
	prof := cfg.Profile(domain)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	port := cfg.Delivery.Port
	if port == 0 {
		port = 25
	}
	fmt.Fprintf(stdout, "TLS verification for %s: destination profile %q, TLS mode %s (%s), port %d\n",
		domain, prof.Name, prof.TLS, prof.TLS.Label(), port)
	if prof.MTASTS {
		fmt.Fprintf(stdout, "note: MTA-STS is enabled for %s; this shows the profile's mode only (see outpost mta-sts check %s)\n", domain, domain)
	}

	mxs, ans, err := env.dns.MX(ctx, domain)
	switch {
	case errors.Is(err, resolver.ErrNullMX):
		fmt.Fprintf(stdout, "%s publishes a null MX (RFC 7505): it accepts no mail\nverdict: would not deliver\n", domain)
		return 1
	case err != nil:
		fmt.Fprintf(stdout, "MX lookup for %s failed temporarily: %v\nverdict: would defer: DNS temporary failure\n", domain, err)
		return 1
	case ans.Status == resolver.NXDomain:
		fmt.Fprintf(stdout, "%s does not exist (NXDOMAIN)\nverdict: would bounce: no such domain\n", domain)
		return 1
	case len(mxs) == 0:
		fmt.Fprintf(stdout, "%s has no MX records: the domain itself is the implicit MX (RFC 5321 §5.1)\n", domain)
		mxs = []resolver.MX{{Host: domain}}
	}

	var clientCert *tls.Certificate
	if cc := cfg.TLS.ClientCert; cc != nil {
		c, err := tls.LoadX509KeyPair(cc.CertFile, cc.KeyFile)
		if err != nil {
			fmt.Fprintln(stderr, "outpost: tls.client_cert:", err)
			return 1
		}
		clientCert = &c
	}
	timeouts := deliver.Timeouts{Connect: cfg.Delivery.ConnectTimeout.D(), Greeting: time.Minute, EHLO: time.Minute,
		StartTLS: time.Minute, Quit: 10 * time.Second}
	client := deliver.New(deliver.Options{Hostname: cfg.Hostname, Port: port, Roots: env.roots, ClientCert: clientCert,
		Resolver: env.dns, Timeouts: timeouts})

	good := 0
	for _, mx := range mxs {
		if verifyMX(ctx, stdout, client, env.roots, domain, prof.TLS, mx) {
			good++
		}
	}
	if good == 0 {
		fmt.Fprintf(stdout, "\nResult: no MX host of %s would accept delivery under %s.\n", domain, prof.TLS)
		return 1
	}
	fmt.Fprintf(stdout, "\nResult: %d of %d MX host(s) of %s would accept delivery under %s.\n", good, len(mxs), domain, prof.TLS)
	return 0
}

// verifyMX connects to one MX host the way delivery would, reports what it
// found and returns whether delivery would proceed. No mail is sent: the
// connection ends with QUIT after STARTTLS and the second EHLO.
func verifyMX(ctx context.Context, w io.Writer, client *deliver.Client, roots *x509.CertPool, domain string, mode tlspolicy.Mode, mx resolver.MX) bool {
	fmt.Fprintf(w, "\nMX %s (preference %d)\n", mx.Host, mx.Pref)
	req := tlspolicy.ForMode(mode, domain, mx.Host)
	h := tlspolicy.Host{Name: mx.Host, Pref: int(mx.Pref), TLS: req}
	if mode == tlspolicy.None {
		// Delivery would not try STARTTLS; probe it anyway (without
		// consequences) so that the report shows what the host offers.
		h.TLS = tlspolicy.ForMode(tlspolicy.Preferred, domain, mx.Host)
	}
	// The names the mode accepts, or for non-verifying modes the names
	// worth knowing about (reported, not required).
	names := req.Identity.Names
	if !mode.Verifies() {
		names = []string{domain, mx.Host}
	}

	conn, err := client.Connect(ctx, domain, h)
	if err != nil {
		var de *deliver.Error
		errors.As(err, &de)
		if de != nil && de.Addr.IsValid() {
			fmt.Fprintf(w, "  address:      %s\n", de.Addr)
		}
		reason := deliver.AsReply(err).String()
		var ve *deliver.VerifyError
		if errors.As(err, &ve) {
			reason = "certificate verification failed: " + ve.Reason
			// Show the certificate that failed: connect again without
			// verifying (and without sending anything).
			h2 := h
			h2.TLS = tlspolicy.Requirement{Mode: tlspolicy.Required, MinVersion: req.MinVersion, Why: "tlsverify probe"}
			if c2, err2 := client.Connect(ctx, domain, h2); err2 == nil {
				if cs, ok := c2.TLSState(); ok {
					fmt.Fprintln(w, "  STARTTLS:     yes")
					printTLS(w, cs)
					printVerify(w, cs, roots, names, mode)
				}
				c2.Close()
			}
		} else if de != nil && de.Err != nil {
			reason += " (" + de.Err.Error() + ")"
		}
		fmt.Fprintf(w, "  verdict:      would defer: %s\n", reason)
		return false
	}
	defer conn.Close() // QUIT
	fmt.Fprintf(w, "  address:      %s\n", conn.RemoteAddr())
	cs, isTLS := conn.TLSState()
	if !isTLS {
		_, offered := conn.Extension("STARTTLS")
		switch {
		case mode == tlspolicy.None:
			fmt.Fprintf(w, "  STARTTLS:     %s; not used under mode none\n", yesNo(offered, "offered", "not offered"))
		case offered:
			fmt.Fprintln(w, "  STARTTLS:     offered, but the TLS negotiation failed; plaintext fallback")
		default:
			fmt.Fprintln(w, "  STARTTLS:     not offered; plaintext")
		}
		fmt.Fprintf(w, "  verdict:      would deliver under %s (plaintext)\n", mode)
		return true
	}
	fmt.Fprintln(w, "  STARTTLS:     yes")
	printTLS(w, cs)
	printVerify(w, cs, roots, names, mode)
	if mode == tlspolicy.None {
		fmt.Fprintf(w, "  verdict:      would deliver under %s (plaintext: STARTTLS is not used under mode none)\n", mode)
		return true
	}
	fmt.Fprintf(w, "  verdict:      would deliver under %s\n", mode)
	return true
}

func printTLS(w io.Writer, cs tls.ConnectionState) {
	fmt.Fprintf(w, "  protocol:     %s\n", deliver.VersionName(cs.Version))
	fmt.Fprintf(w, "  cipher:       %s\n", tls.CipherSuiteName(cs.CipherSuite))
	if len(cs.PeerCertificates) == 0 {
		fmt.Fprintln(w, "  certificate:  none presented")
		return
	}
	leaf := cs.PeerCertificates[0]
	fmt.Fprintf(w, "  subject:      %s\n", leaf.Subject)
	sans := leaf.DNSNames
	if len(sans) == 0 {
		sans = []string{"(none)"}
	}
	fmt.Fprintf(w, "  SANs:         %s\n", strings.Join(sans, ", "))
	fmt.Fprintf(w, "  issuer:       %s\n", leaf.Issuer)
	left := time.Until(leaf.NotAfter)
	state := fmt.Sprintf("%d days left", int(left.Hours()/24))
	if left < 0 {
		state = "EXPIRED"
	}
	fmt.Fprintf(w, "  expires:      %s (%s)\n", leaf.NotAfter.UTC().Format(time.RFC3339), state)
}

func printVerify(w io.Writer, cs tls.ConnectionState, roots *x509.CertPool, names []string, mode tlspolicy.Mode) {
	suffix := ""
	if !mode.Verifies() {
		suffix = fmt.Sprintf(" (informational: %s does not verify certificates)", mode)
	}
	matched, err := deliver.Verify(cs, roots, names, time.Now())
	if err != nil {
		var ve *deliver.VerifyError
		reason := err.Error()
		if errors.As(err, &ve) {
			reason = ve.Reason
		}
		fmt.Fprintf(w, "  verification: FAILED for %s: %s%s\n", strings.Join(names, " or "), reason, suffix)
		return
	}
	fmt.Fprintf(w, "  verification: ok, chain trusted and valid for %s%s\n", matched, suffix)
}

func yesNo(b bool, y, n string) string {
	if b {
		return y
	}
	return n
}
