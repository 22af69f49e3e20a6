package main

// outpost dane check DOMAIN — the appliance's `daneverify`: the DNSSEC state
// of each MX, address and TLSA record of DOMAIN through the gateway's own
// (validating, loopback) resolvers, then a connection to each DANE-capable
// MX host the way delivery makes it (internal/deliver with the DANE
// requirement tlspolicy.Build gives the host), ending with QUIT: no mail is
// sent. The last line is `DANE SUCCESS for DOMAIN` or
// `DANE FAILED for DOMAIN: REASON`; the exit status is 0 only on success.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"outpost/internal/dane"
	"outpost/internal/deliver"
	"outpost/internal/resolver"
	"outpost/internal/tlspolicy"
)

const daneUsage = "usage: outpost dane check DOMAIN\n"

func daneCmd(cfgPath string, args []string, stdout, stderr io.Writer) int {
	if len(args) != 2 || args[0] != "check" || strings.HasPrefix(args[1], "-") || args[1] == "" {
		fmt.Fprint(stderr, daneUsage)
		return 2
	}
	domain := strings.ToLower(strings.TrimSuffix(args[1], "."))
	env, ok := newToolEnv(cfgPath, stderr)
	if !ok {
		return 1
	}
	cfg := env.cfg
	// RFC 7672 §2.1.3: the AD bit is only as trustworthy as the path to
	// the validating resolver.
	if len(cfg.DNS.Resolvers) == 0 {
		fmt.Fprintln(stderr, "outpost: warning: no DNS resolvers configured; DANE needs a validating resolver on loopback (e.g. unbound on 127.0.0.1)")
	}
	for _, w := range dane.CheckResolvers(cfg.DNS.Resolvers) {
		fmt.Fprintln(stderr, "outpost: warning:", w)
	}

	prof := cfg.Profile(domain)
	if prof.DANE == "" || prof.DANE == "none" {
		fmt.Fprintf(stdout, "Note: DANE is not enabled for %s (destination profile %q, dane: none); delivery does not use it.\n", domain, prof.Name)
	}
	if name, rt := cfg.RouteFor(domain); rt != nil && !rt.UseDNS {
		fmt.Fprintf(stdout, "Note: SMTP route %s applies to %s: delivery goes to the route's hosts and DANE is not applied.\n", name, domain)
	}

	port := cfg.Delivery.Port
	if port == 0 {
		port = 25
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	ck := &daneChecker{w: stdout, domain: domain, port: port, connect: func(addr netip.Addr, dial func(context.Context, string, string) (net.Conn, error)) *deliver.Client {
		return deliver.New(deliver.Options{Hostname: cfg.Hostname, Port: port, Roots: env.roots, ClientCert: clientCert,
			Resolver: fixedAddr{addr}, Dial: dial,
			Timeouts: deliver.Timeouts{Connect: cfg.Delivery.ConnectTimeout.D(), Greeting: time.Minute, EHLO: time.Minute,
				StartTLS: time.Minute, Quit: 10 * time.Second}})
	}}
	d := dane.Lookup(ctx, env.dns, domain, dane.Opportunistic)
	if reason, ok := ck.run(ctx, d); !ok {
		fmt.Fprintf(stdout, "DANE FAILED for %s: %s\n", domain, reason)
		return 1
	}
	fmt.Fprintf(stdout, "DANE SUCCESS for %s\n", domain)
	return 0
}

// daneChecker prints what it finds, in the appliance's words.
type daneChecker struct {
	w       io.Writer
	domain  string
	port    int
	connect func(netip.Addr, func(context.Context, string, string) (net.Conn, error)) *deliver.Client
}

// stateWord spells a lookup state the way daneverify does.
func stateWord(s dane.State) string {
	switch s {
	case dane.Secure, dane.SecureDenial:
		return "SECURE"
	case dane.Insecure, dane.InsecureDenial:
		return "INSECURE"
	case dane.Bogus:
		return "BOGUS"
	case dane.Failure:
		return "FAILED"
	}
	return "UNCHECKED"
}

// run reports on every MX host and returns whether at least one was
// authenticated by DANE; otherwise the reason of the first host (in MX
// preference order) that was not.
func (ck *daneChecker) run(ctx context.Context, d dane.Domain) (string, bool) {
	w, domain := ck.w, ck.domain
	switch {
	case d.NullMX:
		fmt.Fprintf(w, "%s null MX record found for %s\n", stateWord(d.MX), domain)
		return "the domain publishes a null MX (RFC 7505): it accepts no mail", false
	case d.MX.Failed():
		fmt.Fprintf(w, "%s MX record lookup for %s: %s\n", stateWord(d.MX), domain, d.MX)
		return "MX lookup failed: " + d.MX.String(), false
	case d.NXDomain:
		fmt.Fprintf(w, "%s: %s does not exist (NXDOMAIN)\n", stateWord(d.MX), domain)
		return "the domain does not exist (NXDOMAIN)", false
	}
	if d.MX == dane.SecureDenial || d.MX == dane.InsecureDenial {
		fmt.Fprintf(w, "%s: no MX records for %s; the domain is its own MX (RFC 5321 §5.1)\n", stateWord(d.MX), domain)
	} else {
		for _, h := range d.Hosts {
			fmt.Fprintf(w, "%s MX record(%s) found for %s\n", stateWord(d.MX), h.Name, domain)
		}
	}

	var firstReason string
	good := 0
	for _, h := range d.Hosts {
		reason, ok := ck.host(ctx, h)
		if ok {
			good++
			continue
		}
		if len(d.Hosts) > 1 {
			fmt.Fprintf(w, "DANE failed for MX(%s) in %s: %s\n", h.Name, domain, reason)
		}
		if firstReason == "" {
			firstReason = reason
		}
	}
	if good == 0 {
		if firstReason == "" {
			firstReason = "no MX host"
		}
		return firstReason, false
	}
	if good < len(d.Hosts) {
		fmt.Fprintf(w, "Warning: %d of %d MX hosts of %s passed DANE.\n", good, len(d.Hosts), domain)
	}
	return "", true
}

// host reports one MX host: its addresses, its TLSA records and, when it
// must be authenticated by them, a connection to each address until one
// succeeds.
func (ck *daneChecker) host(ctx context.Context, h dane.Host) (string, bool) {
	w, domain := ck.w, ck.domain
	in, dec := h.Inputs, h.Decision
	switch in.Addr {
	case dane.NotLooked:
		// Behind an insecure MX answer: no DANE, no further lookups.
	case dane.Secure, dane.Insecure:
		for _, a := range h.Addrs {
			fmt.Fprintf(w, "%s %s record (%s) found for MX(%s) in %s\n", stateWord(in.Addr), addrType(a), a, h.Name, domain)
		}
	case dane.SecureDenial, dane.InsecureDenial:
		fmt.Fprintf(w, "%s: no A/AAAA records for MX(%s) in %s\n", stateWord(in.Addr), h.Name, domain)
	default:
		fmt.Fprintf(w, "%s A/AAAA record lookup for MX(%s) in %s: %s\n", stateWord(in.Addr), h.Name, domain, in.Addr)
	}
	tlsaLine := func() {
		switch in.TLSA {
		case dane.NotLooked:
		case dane.Secure, dane.Insecure:
			if len(in.Records) == 0 {
				fmt.Fprintf(w, "%s: no TLSA records for MX(%s) in %s\n", stateWord(in.TLSA), h.Name, domain)
				return
			}
			fmt.Fprintf(w, "%s TLSA record found for MX(%s) in %s\n", stateWord(in.TLSA), h.Name, domain)
			for _, r := range in.Records {
				note := ""
				if !r.Usable() {
					note = " (unusable for SMTP)"
				}
				fmt.Fprintf(w, "  _%d._tcp.%s. TLSA %s%s\n", dane.Port, h.Name, r.Text(), note)
			}
		case dane.SecureDenial, dane.InsecureDenial:
			fmt.Fprintf(w, "%s: no TLSA records for MX(%s) in %s\n", stateWord(in.TLSA), h.Name, domain)
		default:
			fmt.Fprintf(w, "%s TLSA record lookup for MX(%s) in %s: %s\n", stateWord(in.TLSA), h.Name, domain, in.TLSA)
		}
	}
	if dec.Action != dane.Authenticate {
		tlsaLine()
		return dec.Reason, false
	}

	// The requirement delivery would use for this host: the plan's, built
	// from the same decision.
	plan := tlspolicy.Build(tlspolicy.Input{Domain: domain, Mode: tlspolicy.Preferred,
		MXs: []tlspolicy.MX{{Host: h.Name, Pref: int(h.Pref)}}, DANE: dane.Opportunistic,
		DANEHosts: map[string]dane.Decision{h.Name: dec}})
	if len(plan.Hosts) != 1 || len(plan.Hosts[0].TLS.DANE) == 0 {
		tlsaLine()
		return "internal error: no DANE requirement for MX(" + h.Name + ")", false
	}
	host := plan.Hosts[0]

	reason := "no address to connect to"
	for _, a := range h.Addrs {
		fmt.Fprintf(w, "Connecting to %s on port %d.\n", a, ck.port)
		dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			local := ""
			if la, ok := c.LocalAddr().(*net.TCPAddr); ok {
				local = la.IP.String()
			}
			fmt.Fprintf(w, "Connected to %s from interface %s.\n", a, local)
			tlsaLine()
			fmt.Fprintln(w, "Checking TLS connection.")
			return c, nil
		}
		cn, err := ck.connect(a, dial).Connect(ctx, domain, host)
		if err == nil {
			cs, _ := cn.TLSState()
			fmt.Fprintf(w, "TLS connection established: protocol %s, cipher %s.\n", deliver.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite))
			res := dane.Verify(cs, host.TLS.DANE, host.TLS.Identity.Names)
			fmt.Fprintln(w, "Certificate verification successful")
			if res.OK {
				fmt.Fprintf(w, "TLSA %s matched MX(%s).\n", res.Record, h.Name)
			}
			cn.Close() // QUIT
			fmt.Fprintf(w, "TLS connection succeeded %s.\n", domain)
			return "", true
		}
		var de *deliver.Error
		var ve *deliver.VerifyError
		rep := deliver.AsReply(err)
		switch {
		case errors.As(err, &ve):
			reason = strings.TrimPrefix(ve.Reason, "DANE: ")
			fmt.Fprintf(w, "Certificate verification failed: %s\n", reason)
		case errors.As(err, &de) && de.Stage == deliver.StageTLS:
			reason = rep.Text
			fmt.Fprintf(w, "TLS connection failed: %s\n", reason)
		default:
			reason = "connection to " + a.String() + " failed: " + rep.Text
			if de != nil && de.Err != nil {
				reason += " (" + de.Err.Error() + ")"
			}
			fmt.Fprintf(w, "Connection to %s failed: %s\n", a, rep.Text)
		}
	}
	return reason, false
}

func addrType(a netip.Addr) string {
	if a.Unmap().Is4() {
		return "A"
	}
	return "AAAA"
}

// fixedAddr is the address resolver of one connection attempt: the
// DNSSEC-validated address the check is about.
type fixedAddr struct{ a netip.Addr }

func (f fixedAddr) Addrs(context.Context, string) ([]netip.Addr, resolver.Answer, error) {
	return []netip.Addr{f.a}, resolver.Answer{Status: resolver.OK, Secure: true}, nil
}
