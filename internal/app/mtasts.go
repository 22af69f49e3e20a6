package app

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"

	"outpost/internal/config"
	"outpost/internal/deliver"
	"outpost/internal/maillog"
	"outpost/internal/mtasts"
	"outpost/internal/resolver"
	"outpost/internal/tlspolicy"
)

// DNSAdapter lets mtasts use the resolver: NXDOMAIN and NODATA become
// mtasts.ErrNotFound, every other failure stays a (temporary) error.
type DNSAdapter struct{ R *resolver.Resolver }

// LookupTXT implements mtasts.TXTResolver.
func (a DNSAdapter) LookupTXT(ctx context.Context, name string) ([]string, error) {
	txt, ans, err := a.R.TXT(ctx, name)
	if err != nil {
		return nil, err
	}
	if ans.Status == resolver.NXDomain || ans.Status == resolver.NoData {
		return nil, fmt.Errorf("%s TXT: %s: %w", name, ans.Status, mtasts.ErrNotFound)
	}
	return txt, nil
}

// LookupMX implements mtasts.MXResolver.
func (a DNSAdapter) LookupMX(ctx context.Context, domain string) ([]*net.MX, error) {
	mxs, ans, err := a.R.MX(ctx, domain)
	if err != nil {
		return nil, err
	}
	if ans.Status == resolver.NXDomain || ans.Status == resolver.NoData {
		return nil, fmt.Errorf("%s MX: %s: %w", domain, ans.Status, mtasts.ErrNotFound)
	}
	out := make([]*net.MX, len(mxs))
	for i, m := range mxs {
		out[i] = &net.MX{Host: m.Host, Pref: m.Pref}
	}
	return out, nil
}

// TrustStore builds the outbound trust store: the system roots (unless
// turned off) plus tls.ca_file.
func TrustStore(t config.TLS) (*x509.CertPool, error) { return trustStore(t) }

// ProxyURL parses mta_sts.proxy ("" → nil).
func ProxyURL(c *config.Config) (*url.URL, error) {
	if c.MTASTS.Proxy == "" {
		return nil, nil
	}
	u, err := url.Parse(c.MTASTS.Proxy)
	if err != nil {
		return nil, fmt.Errorf("mta_sts.proxy: %w", err)
	}
	return u, nil
}

// ResolverDial dials through the gateway's own resolvers: a host name is
// looked up with r (A and AAAA) and each address is tried in turn, so that
// the MTA-STS policy host (mta-sts.<domain>) and the checker's MX probes are
// resolved the way delivery resolves MX hosts, never through the system
// resolver. IP literals, and the configured proxy's host (local
// infrastructure, named as the administrator's system knows it), are dialed
// directly.
func ResolverDial(r *resolver.Resolver, proxy *url.URL) mtasts.DialFunc {
	var d net.Dialer
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if _, err := netip.ParseAddr(host); err == nil || (proxy != nil && strings.EqualFold(host, proxy.Hostname())) {
			return d.DialContext(ctx, network, addr)
		}
		addrs, ans, err := r.Addrs(ctx, host)
		if err != nil {
			return nil, &net.OpError{Op: "dial", Net: network, Err: err}
		}
		if len(addrs) == 0 {
			return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("lookup %s: %s", host, ans.Status)}
		}
		var last error
		for _, a := range addrs {
			c, err := d.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
			if err == nil {
				return c, nil
			}
			last = err
		}
		return nil, last
	}
}

// stsLookup adapts the MTA-STS manager to planner.STSLookup.
type stsLookup struct {
	m   *mtasts.Manager
	log *maillog.Logger
}

func (s stsLookup) Lookup(ctx context.Context, domain string) (tlspolicy.STSState, *tlspolicy.STS) {
	res, err := s.m.Get(ctx, domain)
	st, sts := s.convert(domain, res, err)
	if st == tlspolicy.STSPolicy {
		s.log.MTASTSApplying(domain)
	}
	return st, sts
}

// Recheck implements planner.STSRechecker (RFC 8461 §5.1).
func (s stsLookup) Recheck(ctx context.Context, domain string) (tlspolicy.STSState, *tlspolicy.STS) {
	res, err := s.m.Recheck(ctx, domain)
	return s.convert(domain, res, err)
}

func (s stsLookup) convert(domain string, res mtasts.Result, err error) (tlspolicy.STSState, *tlspolicy.STS) {
	if err != nil {
		return tlspolicy.STSTempFail, nil
	}
	return STSFromPolicy(res.Policy, res.Source == mtasts.SourceCache)
}

// stsOutcome writes the apply-time MTA-STS lines for one connection
// attempt and, for a failure, says why in words for the Delayed line and
// the DSN.
func stsOutcome(log *maillog.Logger, domain string, h tlspolicy.Host, err error) string {
	if h.TLS.Source != tlspolicy.SourceMTASTS {
		return ""
	}
	if err == nil {
		log.MTASTSSuccess(domain)
		return ""
	}
	reason := "could not connect to " + h.Name
	var de *deliver.Error
	if errors.As(err, &de) {
		var ve *deliver.VerifyError
		switch {
		case errors.As(err, &ve):
			reason = "certificate of " + h.Name + " not valid: " + ve.Reason
		case de.Reply != nil && de.Reply.Enhanced == "4.7.4":
			reason = "STARTTLS not offered by " + h.Name
		case de.Stage == deliver.StageTLS && strings.Contains(strings.ToLower(fmt.Sprint(de.Err)), "version"):
			reason = "TLS version below 1.2 at " + h.Name
		case de.Stage == deliver.StageTLS:
			reason = "TLS negotiation with " + h.Name + " failed"
		}
	}
	log.MTASTSFailed(domain, reason)
	return "MTA-STS policy for " + domain + " blocked delivery: " + reason
}

// stsAdmin exposes the policy cache to the control API.
type stsAdmin struct{ m *mtasts.Manager }

func (s stsAdmin) List() any { return s.m.List() }

func (s stsAdmin) Show(domain string) (any, error) {
	e, err := s.m.Show(domain)
	if err != nil {
		return nil, fmt.Errorf("no cached MTA-STS policy for %s", domain)
	}
	return e, nil
}

func (s stsAdmin) Refresh(ctx context.Context, domain string) (any, error) {
	if _, err := s.m.Refresh(ctx, domain); err != nil {
		return nil, fmt.Errorf("refresh MTA-STS policy for %s: %w", domain, err)
	}
	e, err := s.m.Show(domain)
	if err != nil {
		return nil, fmt.Errorf("%s publishes no valid MTA-STS policy", domain)
	}
	return e, nil
}

func (s stsAdmin) Flush(ctx context.Context, domain string) error { return s.m.Flush(ctx, domain) }
