package tlspolicy

import (
	"strings"

	"outpost/internal/dane"
)

// MX is one mail exchanger, in the order it should be tried.
type MX struct {
	Host string
	Pref int
}

// RouteHost is one SMTP route destination.
type RouteHost struct {
	Host     string
	Port     int
	Priority int
}

// STSState is what MTA-STS discovery found for a domain.
type STSState int

// MTA-STS discovery outcomes.
const (
	STSNoPolicy STSState = iota // no record, or no valid policy: MTA-STS does not apply
	STSPolicy                   // a valid (fresh or cached) policy is in STS
	STSTempFail                 // lookup failed temporarily and no cached policy exists
)

// STS is the part of an MTA-STS policy the decision needs.
type STS struct {
	Mode string // "enforce", "testing" or "none"
	// Match reports whether an MX host name matches the policy's mx patterns.
	Match func(host string) bool
	// Cached is true when the policy came from the cache rather than a
	// fetch made for this decision.
	Cached bool
}

// Input is everything Build needs, already looked up.
type Input struct {
	Domain string
	// Mode is the Destination Control profile's TLS mode.
	Mode Mode
	// MXs in order of preference (equal preferences already shuffled); for a
	// domain without MX records, the domain itself (RFC 5321 §5.1).
	MXs []MX
	// Route, when non-nil, is the SMTP route for the domain (hosts already
	// in the order to try); Discard is the /dev/null route.
	Route   []RouteHost
	Discard bool
	// RouteSTS is the MTA-STS policy of the route hosts' own domain, when
	// the route opted in (RFC 8461 §3.4); RouteSTSDomain names it.
	RouteSTSState  STSState
	RouteSTS       *STS
	RouteSTSDomain string
	// MTASTS is the profile's MTA-STS switch; STSState and STS what discovery found.
	MTASTS   bool
	STSState STSState
	STS      *STS
	// DANE is the profile's DANE setting; DANEHosts the planner's
	// decision for each MX host (dane.LookupHost), by host name. A host
	// missing from the map counts as "nothing looked up" (not secure).
	DANE      dane.Setting
	DANEHosts map[string]dane.Decision
}

// Build makes the plan. It is the one place that answers "why did this
// message go over TLS 1.3 to mx2?": read it top to bottom.
func Build(in Input) Plan {
	p := Plan{Domain: in.Domain}
	// 0. A /dev/null route: the mail is dropped (and logged) by the queue.
	if in.Discard {
		p.Source, p.Discard = SourceRoute, true
		return p
	}
	// 1. An SMTP route: the route's hosts, the profile's TLS mode, and no
	// DANE or MTA-STS for the recipient domain (the route host was chosen
	// by the administrator; a verify mode accepts its name). A route that
	// opted in applies its own hosts' domain policy instead (RFC 8461 §3.4).
	if in.Route != nil && in.RouteSTSDomain != "" {
		p.Source = SourceRoute
		p.Notes = append(p.Notes, routeNotes(in)...)
		switch {
		case in.RouteSTSState == STSTempFail:
			p.DeferCode, p.DeferText = "4.7.5", "MTA-STS policy for route host domain "+in.RouteSTSDomain+" could not be retrieved (temporary DNS or fetch failure)"
			return p
		case in.RouteSTSState == STSPolicy && in.RouteSTS.Mode == "enforce":
			for _, r := range in.Route {
				if !in.RouteSTS.Match(r.Host) {
					p.Notes = append(p.Notes, "MTA-STS policy for the domain ("+in.RouteSTSDomain+") Failed: route host "+r.Host+" is not in the policy")
					continue
				}
				p.Hosts = append(p.Hosts, Host{Name: r.Host, Port: r.Port, Pref: r.Priority, TLS: enforceReq(in.Mode, r.Host)})
			}
			if len(p.Hosts) == 0 {
				p.DeferCode, p.DeferText = "4.4.8", "MTA-STS policy for "+in.RouteSTSDomain+" blocked delivery: no route host matches the policy"
			}
			return p
		}
		// No policy, testing or none: the route as configured.
	}
	if in.Route != nil {
		p.Source = SourceRoute
		for _, r := range in.Route {
			req := ForMode(in.Mode, in.Domain, r.Host)
			req.Source = SourceRoute
			p.Hosts = append(p.Hosts, Host{Name: r.Host, Port: r.Port, Pref: r.Priority, TLS: req})
			if in.Mode.Verifies() {
				h := &p.Hosts[len(p.Hosts)-1]
				h.TLS.Identity.Names = appendUnique(h.TLS.Identity.Names, r.Host)
			}
		}
		p.Notes = append(p.Notes, routeNotes(in)...)
		return p
	}
	// 2. DANE (RFC 7672), host by host; the hosts it leaves over come
	// back through steps 3 and 4 (docs/tls-policy.md §1).
	if in.DANE != dane.Off {
		return buildDANE(in)
	}
	// 3. MTA-STS.
	if in.MTASTS {
		switch in.STSState {
		case STSTempFail:
			// RFC 8461 §5: never treat a failed lookup as "no policy"
			// (that is the downgrade an attacker would cause).
			p.Source = SourceMTASTS
			p.DeferCode, p.DeferText = "4.7.5", "MTA-STS policy for "+in.Domain+" could not be retrieved (temporary DNS or fetch failure)"
			return p
		case STSPolicy:
			switch in.STS.Mode {
			case "enforce":
				p.Source = SourceMTASTS
				for _, mx := range in.MXs {
					if !in.STS.Match(mx.Host) {
						p.Notes = append(p.Notes, "MTA-STS policy for the domain ("+in.Domain+") Failed: MX "+mx.Host+" is not in the policy")
						continue
					}
					p.Hosts = append(p.Hosts, Host{Name: mx.Host, Pref: mx.Pref, TLS: enforceReq(in.Mode, mx.Host)})
				}
				if len(p.Hosts) == 0 {
					p.DeferCode, p.DeferText = "4.4.8", "MTA-STS policy for "+in.Domain+" blocked delivery: no MX host matches the policy"
				}
				return p
			case "testing":
				for _, mx := range in.MXs {
					if !in.STS.Match(mx.Host) {
						p.Notes = append(p.Notes, "MTA-STS policy for the domain ("+in.Domain+") in testing mode would have failed: MX "+mx.Host+" is not in the policy")
					}
				}
				p.Source = SourceProfile
				for _, mx := range in.MXs {
					req := ForMode(in.Mode, in.Domain, mx.Host)
					req.Source, req.STSTesting = SourceProfile, in.STS.Match(mx.Host)
					p.Hosts = append(p.Hosts, Host{Name: mx.Host, Pref: mx.Pref, TLS: req})
				}
				return p
			}
		}
	}
	// 4. The profile's TLS mode.
	p.Source = SourceProfile
	for _, mx := range in.MXs {
		req := ForMode(in.Mode, in.Domain, mx.Host)
		req.Source = SourceProfile
		p.Hosts = append(p.Hosts, Host{Name: mx.Host, Pref: mx.Pref, TLS: req})
	}
	return p
}

// enforceReq is MTA-STS enforce (RFC 8461 §4.2): TLS 1.2 or later, a chain
// to a trusted root and a certificate valid for the MX host name. The
// profile's mode cannot weaken it; the policy's identity (the MX name, which
// the HTTPS-authenticated policy vouches for) replaces the profile's.
func enforceReq(profile Mode, mxHost string) Requirement {
	return Requirement{Mode: RequiredVerify, MinVersion: TLS12, Identity: Identity{Names: []string{mxHost}}, Why: "MTA-STS enforce", Source: SourceMTASTS}
}

func appendUnique(list []string, s string) []string {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return list
		}
	}
	return append(list, s)
}

// routeNotes say what an SMTP route switched off for the domain.
func routeNotes(in Input) []string {
	var n []string
	if in.DANE != dane.Off {
		n = append(n, "DANE is not enforced for domains that have SMTP Routes configured")
	}
	if in.MTASTS {
		n = append(n, "MTA-STS is not enforced for domains that have SMTP Routes configured")
	}
	return n
}
