package dane

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"

	"outpost/internal/resolver"
)

// Port is the service port of the TLSA records looked up: SMTP relay
// (RFC 7672 §2.2.3: `_25._tcp.<host>`), whatever port a test delivers to.
const Port = 25

// Resolver is the DNS a DANE lookup needs; *resolver.Resolver implements
// it. Answer.Secure must be the AD bit of a validating resolver on a
// trusted path (RFC 7672 §2.1.3).
type Resolver interface {
	MX(ctx context.Context, domain string) ([]resolver.MX, resolver.Answer, error)
	Addrs(ctx context.Context, host string) ([]netip.Addr, resolver.Answer, error)
	TLSA(ctx context.Context, port int, host string) ([]resolver.TLSA, resolver.Answer, error)
}

// Host is what the lookups found for one MX host, and the decision.
type Host struct {
	Name     string
	Pref     uint16
	Addrs    []netip.Addr // when the address lookup was made and found some
	Inputs   Inputs
	Decision Decision
}

// Domain is what the lookups found for a destination domain.
type Domain struct {
	Domain string
	// MX is the state of the MX lookup; NullMX is set for a null MX
	// (RFC 7505), which accepts no mail and has no hosts.
	MX     State
	NullMX bool
	// Hosts are the MX hosts in preference order (the domain itself for
	// NODATA, RFC 5321 §5.1). Empty when the MX lookup failed or the
	// domain does not exist (MX is then Bogus/Failure or a denial with
	// NXDomain set).
	Hosts    []Host
	NXDomain bool
}

// Lookup gathers the DANE inputs of every MX host of domain and decides
// each one. It makes only the lookups the decision needs (RFC 7672 §2.2:
// address records only behind a secure MX lookup, TLSA records only for a
// host whose address records are secure), so a domain that is not
// DNSSEC-signed costs no TLSA query. `outpost dane check` prints its result;
// the planner uses LookupHost with the MX answer it already has.
func Lookup(ctx context.Context, r Resolver, domain string, setting Setting) Domain {
	mxs, ans, err := r.MX(ctx, domain)
	d := Domain{Domain: domain, MX: StateOf(ans, err)}
	switch {
	case errors.Is(err, resolver.ErrNullMX):
		d.NullMX = true
		return d
	case d.MX.Failed():
		return d
	case ans.Status == resolver.NXDomain:
		d.NXDomain = true
		return d
	case ans.Status == resolver.NoData || len(mxs) == 0:
		mxs = []resolver.MX{{Host: domain}} // RFC 5321 §5.1 implicit MX
	}
	for _, mx := range mxs {
		h := LookupHost(ctx, r, setting, d.MX, mx.Host)
		h.Pref = mx.Pref
		d.Hosts = append(d.Hosts, h)
	}
	return d
}

// LookupHost gathers the inputs for one MX host, given the state of the
// MX lookup that named it, and decides.
func LookupHost(ctx context.Context, r Resolver, setting Setting, mx State, host string) Host {
	h := Host{Name: host, Inputs: Inputs{Setting: setting, MX: mx}}
	if setting == Off || (mx != Secure && mx != SecureDenial) {
		h.Decision = Decide(h.Inputs)
		return h
	}
	addrs, ans, err := r.Addrs(ctx, host)
	h.Inputs.Addr = StateOf(ans, err)
	h.Addrs = addrs
	if h.Inputs.Addr == Secure {
		recs, ans, err := r.TLSA(ctx, Port, host)
		h.Inputs.TLSA = StateOf(ans, err)
		for _, t := range recs {
			h.Inputs.Records = append(h.Inputs.Records, TLSA{Usage: t.Usage, Selector: t.Selector, MatchingType: t.MatchingType, Data: t.Data})
		}
	}
	h.Decision = Decide(h.Inputs)
	return h
}

// CheckResolvers returns one warning per configured resolver ("host:port"
// or a bare address) that is not on loopback. The AD bit DANE relies on is
// only as trustworthy as the path to the validating resolver (RFC 7672
// §2.1.3); `config check` prints these when a profile enables DANE.
func CheckResolvers(servers []string) []string {
	var out []string
	for _, s := range servers {
		host := s
		if h, _, err := net.SplitHostPort(s); err == nil {
			host = h
		}
		a, err := netip.ParseAddr(strings.Trim(host, "[]"))
		if err != nil || !a.Unmap().IsLoopback() {
			out = append(out, "resolver "+s+" is not on loopback: its DNSSEC (AD bit) answers cannot be trusted for DANE; run a validating resolver such as unbound on 127.0.0.1")
		}
	}
	return out
}
