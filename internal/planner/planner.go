// Package planner gathers what the security plan for a destination needs —
// the profile, the MX hosts, the MTA-STS policy — and hands it to the pure
// tlspolicy.Build. It does the lookups; tlspolicy does the deciding.
//
// DNS outcomes map to delivery decisions (RFC 5321 §5.1, RFC 7505):
// NXDOMAIN → permanent 5.1.2; null MX → permanent 5.1.10; NODATA → the
// domain itself is the implicit MX; SERVFAIL or timeout → temporary 4.4.3,
// never a bounce.
package planner

import (
	"context"
	"errors"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"outpost/internal/dane"
	"outpost/internal/maillog"
	"outpost/internal/reply"
	"outpost/internal/resolver"
	"outpost/internal/tlspolicy"
)

// MXResolver looks up mail exchangers.
type MXResolver interface {
	MX(ctx context.Context, domain string) ([]resolver.MX, resolver.Answer, error)
}

// STSLookup finds a domain's MTA-STS policy (implemented over mtasts).
type STSLookup interface {
	Lookup(ctx context.Context, domain string) (tlspolicy.STSState, *tlspolicy.STS)
}

// STSRechecker is optionally implemented by an STSLookup: before a message
// is held because no MX matches a cached enforce policy, the policy is looked
// up again (RFC 8461 §5.1).
type STSRechecker interface {
	Recheck(ctx context.Context, domain string) (tlspolicy.STSState, *tlspolicy.STS)
}

// Profile is the part of a Destination Control profile the plan needs.
type Profile struct {
	TLS          tlspolicy.Mode
	MTASTS       bool
	DANE         dane.Setting
	IPPreference string
}

// Route is the part of an SMTP route the plan needs.
type Route struct {
	Name    string // the matching entry: domain, .domain or ALL
	Hosts   []tlspolicy.RouteHost
	UseDNS  bool // "USEDNS": deliver by the domain's MX records as usual
	Discard bool // "/dev/null"
	// MTASTS applies the route hosts' own domain's policy (RFC 8461 §3.4).
	MTASTS bool
}

// Planner builds plans.
type Planner struct {
	DNS     MXResolver
	STS     STSLookup // nil: MTA-STS unavailable (treated as no policy)
	Profile func(domain string) Profile
	Route   func(domain string) *Route // nil or returning nil: no route
	// DANEDNS makes the address and TLSA lookups of DANE (the same
	// validating resolver as DNS). nil: no lookups, so DANE is never
	// available (mandatory profiles defer).
	DANEDNS dane.Resolver
	Log     *maillog.Logger

	rr sync.Map // route name → *atomic.Uint64, round-robin position
}

// Plan implements qmgr.Planner.
func (p *Planner) Plan(ctx context.Context, domain string) (*tlspolicy.Plan, *reply.Reply) {
	prof := p.Profile(domain)
	in := tlspolicy.Input{Domain: domain, Mode: prof.TLS, MTASTS: prof.MTASTS, DANE: prof.DANE}
	var rt *Route
	if p.Route != nil {
		rt = p.Route(domain)
	}
	switch {
	case rt == nil || rt.UseDNS:
	case rt.Discard:
		in.Discard = true
	default:
		in.Route = p.order(rt)
		if rt.MTASTS && p.STS != nil {
			in.RouteSTSDomain = parentDomain(in.Route[0].Host)
			in.RouteSTSState, in.RouteSTS = p.STS.Lookup(ctx, in.RouteSTSDomain)
		}
	}
	if in.Route == nil && !in.Discard {
		mxs, mxState, rerr := p.mx(ctx, domain)
		if rerr != nil {
			return nil, rerr
		}
		in.MXs = mxs
		if prof.DANE != dane.Off {
			in.DANEHosts = p.dane(ctx, domain, prof.DANE, mxState, mxs)
		}
		// DANE takes precedence: when it authenticates every MX, the
		// MTA-STS policy would not be applied to any of them, so it is not
		// looked up.
		if prof.MTASTS && p.STS != nil && !allAuthenticated(in.DANEHosts, mxs) {
			in.STSState, in.STS = p.STS.Lookup(ctx, domain)
		}
	}
	plan := tlspolicy.Build(in)
	for i := range plan.Hosts {
		plan.Hosts[i].IPPreference = prof.IPPreference
	}
	if plan.DeferCode == "4.4.8" && in.STS != nil && in.STS.Cached {
		if rc, ok := p.STS.(STSRechecker); ok {
			in.STSState, in.STS = rc.Recheck(ctx, domain)
			plan = tlspolicy.Build(in)
		}
	}
	if plan.Deferred() && plan.Source == tlspolicy.SourceDANE {
		p.Log.DANEDeferred(domain, plan.DeferCode, plan.DeferText)
	}
	if plan.Deferred() {
		// The queue manager logs the notes of a plan it carries out; a
		// deferred plan is never carried out, and its notes say why (e.g.
		// which MX hosts an MTA-STS policy rejected).
		for _, n := range plan.Notes {
			p.Log.Infof("%s", n)
		}
	}
	return &plan, nil
}

func allAuthenticated(dec map[string]dane.Decision, mxs []tlspolicy.MX) bool {
	if len(dec) == 0 || len(mxs) == 0 {
		return false
	}
	for _, mx := range mxs {
		if d, ok := dec[mx.Host]; !ok || d.Action != dane.Authenticate {
			return false
		}
	}
	return true
}

// order sorts route hosts by priority (0 first) and rotates each group of
// equal priority by one position per plan, so that equal hosts share the
// connections round robin (a plan is made per connection).
func (p *Planner) order(rt *Route) []tlspolicy.RouteHost {
	hosts := append([]tlspolicy.RouteHost(nil), rt.Hosts...)
	sort.SliceStable(hosts, func(i, j int) bool { return hosts[i].Priority < hosts[j].Priority })
	v, _ := p.rr.LoadOrStore(rt.Name, new(atomic.Uint64))
	n := int(v.(*atomic.Uint64).Add(1) - 1)
	for i := 0; i < len(hosts); {
		j := i
		for j < len(hosts) && hosts[j].Priority == hosts[i].Priority {
			j++
		}
		grp := hosts[i:j]
		k := n % len(grp)
		rotated := append(append([]tlspolicy.RouteHost(nil), grp[k:]...), grp[:k]...)
		copy(grp, rotated)
		i = j
	}
	return hosts
}

// parentDomain is the domain a route host belongs to (its name without
// the first label), whose MTA-STS policy applies to it.
func parentDomain(host string) string {
	if i := strings.IndexByte(host, '.'); i >= 0 && strings.Contains(host[i+1:], ".") {
		return host[i+1:]
	}
	return host
}

// dane decides DANE for each MX host (RFC 7672 §2.2) and logs the
// decision.
func (p *Planner) dane(ctx context.Context, domain string, set dane.Setting, mxState dane.State, mxs []tlspolicy.MX) map[string]dane.Decision {
	out := make(map[string]dane.Decision, len(mxs))
	for _, mx := range mxs {
		var d dane.Decision
		if p.DANEDNS == nil {
			d = dane.Decide(dane.Inputs{Setting: set, MX: mxState})
		} else {
			d = dane.LookupHost(ctx, p.DANEDNS, set, mxState, mx.Host).Decision
		}
		out[mx.Host] = d
		switch d.Action {
		case dane.Authenticate:
			p.Log.DANETLSAFound(domain, mx.Host, dane.Params(d.Records))
		case dane.Encrypt:
			p.Log.DANEEncryptOnly(domain, mx.Host, d.Reason)
		case dane.NotDANE:
			p.Log.DANENotApplicable(domain, mx.Host, d.Reason)
		default:
			p.Log.DANESkipMX(domain, mx.Host, d.Reason)
		}
	}
	return out
}

// mx looks up the MX hosts and the DNSSEC state of the answer (for DANE).
func (p *Planner) mx(ctx context.Context, domain string) ([]tlspolicy.MX, dane.State, *reply.Reply) {
	recs, ans, err := p.DNS.MX(ctx, domain)
	st := dane.StateOf(ans, err)
	switch {
	case errors.Is(err, resolver.ErrNullMX):
		p.Log.DNSHardError(domain, "MX", "null MX")
		return nil, st, reply.New(556, "5.1.10", "Recipient address has null MX: %s accepts no mail (RFC 7505)", domain)
	case err != nil:
		p.Log.DNSTemporaryFailure(domain, "MX", statusName(err))
		return nil, st, reply.New(451, "4.4.3", "DNS Temporary Failure %s MX - %s", domain, statusName(err))
	case ans.Status == resolver.NXDomain:
		p.Log.DNSHardError(domain, "MX", "NXDomain")
		return nil, st, reply.New(550, "5.1.2", "DNS Hard Error looking up %s (MX): NXDomain", domain)
	case ans.Status == resolver.NoData || len(recs) == 0:
		// RFC 5321 §5.1: no MX records → the domain is its own implicit MX.
		return []tlspolicy.MX{{Host: domain}}, st, nil
	}
	out := make([]tlspolicy.MX, len(recs))
	for i, r := range recs {
		out[i] = tlspolicy.MX{Host: r.Host, Pref: int(r.Pref)}
	}
	// RFC 5321 §5.1: hosts of equal preference are tried in random order.
	for i := 0; i < len(out); {
		j := i
		for j < len(out) && out[j].Pref == out[i].Pref {
			j++
		}
		grp := out[i:j]
		rand.Shuffle(len(grp), func(a, b int) { grp[a], grp[b] = grp[b], grp[a] })
		i = j
	}
	return out, st, nil
}

func statusName(err error) string {
	var e *resolver.Error
	if errors.As(err, &e) {
		switch e.Status {
		case resolver.Timeout:
			return "Timeout"
		case resolver.ServFail:
			return "ServFail"
		}
		return "Refused"
	}
	return err.Error()
}
