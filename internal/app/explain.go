package app

import (
	"outpost/internal/config"
	"outpost/internal/dane"
	"outpost/internal/mtasts"
	"outpost/internal/planner"
	"outpost/internal/tlspolicy"
)

// PlannerProfile is the part of cfg's Destination Control profile for
// domain that the planner needs, as the daemon's planner reads it.
func PlannerProfile(cfg *config.Config, domain string) planner.Profile {
	p := cfg.Profile(domain)
	ds, _ := dane.ParseSetting(p.DANE) // validated at load
	return planner.Profile{TLS: p.TLS, MTASTS: p.MTASTS, DANE: ds, IPPreference: p.IPPreference}
}

// PlannerRoute is cfg's SMTP route for domain as the planner sees it; nil
// when no route applies.
func PlannerRoute(cfg *config.Config, domain string) *planner.Route {
	name, r := cfg.RouteFor(domain)
	if r == nil {
		return nil
	}
	pr := &planner.Route{Name: name, UseDNS: r.UseDNS, Discard: r.Discard, MTASTS: r.MTASTS}
	for _, h := range r.Hosts {
		pr.Hosts = append(pr.Hosts, tlspolicy.RouteHost{Host: h.Host, Port: h.Port, Priority: h.Priority})
	}
	return pr
}

// NewPlanner builds a planner over cfg the way the daemon does, with the
// given DNS and MTA-STS lookups and no mail log: outpost explain computes
// its plans with it, so that what it shows is what delivery would do.
func NewPlanner(cfg *config.Config, dns planner.MXResolver, sts planner.STSLookup) *planner.Planner {
	return &planner.Planner{DNS: dns, STS: sts,
		Profile: func(domain string) planner.Profile { return PlannerProfile(cfg, domain) },
		Route:   func(domain string) *planner.Route { return PlannerRoute(cfg, domain) },
	}
}

// STSFromPolicy converts a policy (nil: none) into the planner's view, as
// the daemon's MTA-STS lookup does; cached says it came from the cache.
func STSFromPolicy(p *mtasts.Policy, cached bool) (tlspolicy.STSState, *tlspolicy.STS) {
	if p == nil {
		return tlspolicy.STSNoPolicy, nil
	}
	var mode string
	switch p.Mode {
	case mtasts.ModeEnforce:
		mode = "enforce"
	case mtasts.ModeTesting:
		mode = "testing"
	case mtasts.ModeNone:
		mode = "none"
	default:
		return tlspolicy.STSNoPolicy, nil
	}
	return tlspolicy.STSPolicy, &tlspolicy.STS{Mode: mode, Match: p.Matches, Cached: cached}
}
