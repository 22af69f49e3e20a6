package tlspolicy

import "outpost/internal/dane"

// buildDANE is step 2 of Build: each MX host as dane.Decide judged it.
//   - authenticate: TLS authenticated by the host's TLSA records; MTA-STS
//     is not applied to the host (RFC 8461 §2) and the profile cannot
//     weaken it;
//   - skip-host / defer: the host is dropped (no connection);
//   - encrypt / not-dane: the host goes on to MTA-STS and the TLS mode
//     (Build again, with DANE off and only these hosts); an encrypt host
//     gets TLS made mandatory (RFC 7672 §3.1.3).
//
// Hosts keep their MX order. When no host is left, the plan defers with
// the code and reason of the first dropped host.
func buildDANE(in Input) Plan {
	p := Plan{Domain: in.Domain, Source: SourceDANE}
	authenticated := map[string]Host{}
	encrypt := map[string]bool{}
	var rest []MX
	var dropCode, dropText string
	for _, mx := range in.MXs {
		d, ok := in.DANEHosts[mx.Host]
		if !ok {
			d = dane.Decide(dane.Inputs{Setting: in.DANE})
		}
		switch d.Action {
		case dane.Authenticate:
			authenticated[mx.Host] = Host{Name: mx.Host, Pref: mx.Pref, TLS: daneReq(in.Domain, mx.Host, d.Records)}
		case dane.Encrypt:
			encrypt[mx.Host] = true
			rest = append(rest, mx)
		case dane.NotDANE:
			rest = append(rest, mx)
		default: // SkipHost, Defer
			if dropCode == "" {
				dropCode, dropText = d.Code, d.Reason+" (MX "+mx.Host+")"
			}
		}
	}
	var q Plan
	if len(rest) > 0 {
		sub := in
		sub.DANE, sub.DANEHosts, sub.MXs = dane.Off, nil, rest
		q = Build(sub)
		for i := range q.Hosts {
			if encrypt[q.Hosts[i].Name] {
				q.Hosts[i].TLS = requireTLS(q.Hosts[i].TLS)
			}
		}
	}
	if len(authenticated) == 0 {
		if len(rest) == 0 {
			p.DeferCode, p.DeferText = dropCode, dropText
			return p
		}
		return q
	}
	p.Notes = q.Notes
	others := map[string]Host{}
	for _, h := range q.Hosts {
		others[h.Name] = h
	}
	for _, mx := range in.MXs {
		if h, ok := authenticated[mx.Host]; ok {
			p.Hosts = append(p.Hosts, h)
		} else if h, ok := others[mx.Host]; ok {
			p.Hosts = append(p.Hosts, h)
		}
	}
	if q.Deferred() {
		// e.g. an MTA-STS lookup failure holds the non-DANE hosts only.
		p.Notes = append(p.Notes, "DANE-authenticated MX hosts are used; the others are held: "+q.DeferText)
	}
	return p
}

// daneReq is DANE authentication (RFC 7672 §3): TLS mandatory, the server
// matched against the usable TLSA records; for DANE-TA the certificate
// names are checked against the MX host (the TLSA base domain) and the
// recipient domain (RFC 7672 §3.2.2).
func daneReq(domain, mxHost string, records []dane.TLSA) Requirement {
	return Requirement{Mode: RequiredVerify, Identity: Identity{Names: appendUnique([]string{mxHost}, domain)},
		DANE: records, Why: "DANE", Source: SourceDANE}
}

// requireTLS makes TLS mandatory without adding verification: a host with
// only unusable TLSA records still does TLS (RFC 7672 §3.1.3). Verifying
// and required modes are kept as they are.
func requireTLS(r Requirement) Requirement {
	switch r.Mode {
	case None, Preferred, PreferredVerify:
		r.Mode = Required
		r.Why += " (TLS required: unusable TLSA records)"
	}
	return r
}
