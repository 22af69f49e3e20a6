package main

// outpost explain ADDRESS|DOMAIN [--json] [--fetch]: what the gateway would
// do with mail for a destination, and why — read-only, from the
// configuration, the gateway's own resolvers and the running daemon's
// MTA-STS cache (or a live MTA-STS lookup with --fetch). No mail is sent
// and nothing is written: not the policy cache, not the configuration.
//
// The plan is computed by the daemon's own code: a planner.Planner built
// from the configuration by app.NewPlanner, which calls tlspolicy.Build.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"outpost/internal/app"
	"outpost/internal/config"
	"outpost/internal/ctl"
	"outpost/internal/mtasts"
	"outpost/internal/reply"
	"outpost/internal/resolver"
	"outpost/internal/tlspolicy"
)

const explainUsage = `usage: outpost explain ADDRESS|DOMAIN [--json] [--fetch]

Shows what Outpost would do with mail for ADDRESS (user@domain) or DOMAIN,
without sending anything: the Destination Control profile and SMTP route
that match, the DNS answers through the configured resolvers, the MTA-STS
and DANE status, and the resulting security plan per host, computed by the
same code the daemon uses.

  --fetch   look the MTA-STS policy up live (TXT record and HTTPS fetch,
            through the gateway's resolvers, trust store and proxy) instead
            of reading the running daemon's cache; the result is never
            written to the cache
  --json    print one JSON object instead of the report

Exit status: 0 when the mail would be delivered (or attempted, or dropped by
a /dev/null route), 1 when it would be deferred or bounced right now, 2 on
usage errors.

JSON fields:
  query, domain, config              what was asked; the configuration file
  verdict                            deliver | discard | defer | bounce
  exit_code                          0 or 1, as the exit status
  profile.entry, profile.match       matching Destination Control entry;
                                     match: exact | suffix | default
  profile.tls, profile.tls_label     TLS mode (config spelling, menu label)
  profile.dane, profile.mta_sts, profile.ip_preference,
  profile.max_concurrency, profile.max_messages_per_connection,
  profile.recipient_limit {count, minutes} (null: none),
  profile.limits_scope, profile.limits_apply, profile.bounce_verification
  profile.bounce_profile             name, max_retries, initial_retry,
                                     max_retry_interval, max_queue_lifetime
                                     (Go durations), send_bounces,
                                     bounce_address, max_bounce_copy (bytes),
                                     delay_warnings {enabled, interval, count},
                                     retry_schedule (delays between attempts)
  route                              null, or {entry, match (exact | suffix |
                                     all), kind (hosts | usedns | discard),
                                     hosts [{host, port, priority}], mta_sts,
                                     switches_off [..]}
  dns.resolvers                      the servers asked
  dns.mx                             null when not looked up, or {name,
                                     status, dnssec, records [{host, pref}],
                                     null_mx, implicit, error}
  dns.hosts[]                        {host, a, aaaa}; a and aaaa are {status,
                                     dnssec, addresses, error}
  status values                      NOERROR | NXDOMAIN | NODATA | SERVFAIL |
                                     timeout | REFUSED | literal
  mta_sts                            {enabled, source (cache | fetch),
                                     daemon_running (cache only), status,
                                     lookups [{domain, for, state, mode, mx,
                                     max_age, id, fetched_at, expires, txt,
                                     url, error, note}]}; state: policy |
                                     no-policy | not-cached | expired |
                                     temporary-failure | daemon-not-running
  dane                               {setting, evaluated, status}
  plan.source                        route | dane | mta-sts |
                                     destination-control ("" when DNS decided)
  plan.verdict, plan.smtp_code, plan.code, plan.reason
  plan.hosts[]                       in the order tried: {host, port,
                                     preference, ip_preference, addresses,
                                     tls {mode, label, tls_required, verify
                                     (none | logged | required), min_version,
                                     names, why, source, mta_sts_testing}}
  plan.limits                        {max_concurrency,
                                     max_messages_per_connection,
                                     recipient_limit, limits_scope,
                                     limits_apply}
  plan.notes, plan.warnings          the plan's log notes; what explain saw
                                     that delivery would trip over
`

// ---- the report (its JSON field names are documented in explainUsage) ----

type explainReport struct {
	Query   string         `json:"query"`
	Domain  string         `json:"domain"`
	Config  string         `json:"config"`
	Verdict string         `json:"verdict"`
	Exit    int            `json:"exit_code"`
	Profile explainProfile `json:"profile"`
	Route   *explainRoute  `json:"route"`
	DNS     explainDNS     `json:"dns"`
	MTASTS  explainSTS     `json:"mta_sts"`
	DANE    explainDANE    `json:"dane"`
	Plan    explainPlan    `json:"plan"`
}

type explainRate struct {
	Count   int `json:"count"`
	Minutes int `json:"minutes"`
}

type explainProfile struct {
	Entry                    string        `json:"entry"`
	Match                    string        `json:"match"`
	TLS                      string        `json:"tls"`
	TLSLabel                 string        `json:"tls_label"`
	DANE                     string        `json:"dane"`
	MTASTS                   bool          `json:"mta_sts"`
	IPPreference             string        `json:"ip_preference"`
	MaxConcurrency           int           `json:"max_concurrency"`
	MaxMessagesPerConnection int           `json:"max_messages_per_connection"`
	RecipientLimit           *explainRate  `json:"recipient_limit"`
	LimitsScope              string        `json:"limits_scope"`
	LimitsApply              string        `json:"limits_apply"`
	BounceVerification       bool          `json:"bounce_verification"`
	BounceProfile            explainBounce `json:"bounce_profile"`
}

type explainBounce struct {
	Name             string       `json:"name"`
	MaxRetries       int          `json:"max_retries"`
	InitialRetry     string       `json:"initial_retry"`
	MaxRetryInterval string       `json:"max_retry_interval"`
	MaxQueueLifetime string       `json:"max_queue_lifetime"`
	SendBounces      bool         `json:"send_bounces"`
	BounceAddress    string       `json:"bounce_address,omitempty"`
	MaxBounceCopy    int64        `json:"max_bounce_copy"`
	DelayWarnings    explainDelay `json:"delay_warnings"`
	RetrySchedule    []string     `json:"retry_schedule"`
}

type explainDelay struct {
	Enabled  bool   `json:"enabled"`
	Interval string `json:"interval"`
	Count    int    `json:"count"`
}

type explainRouteHost struct {
	Host     string `json:"host"`
	Port     int    `json:"port,omitempty"`
	Priority int    `json:"priority"`
}

type explainRoute struct {
	Entry       string             `json:"entry"`
	Match       string             `json:"match"`
	Kind        string             `json:"kind"`
	Hosts       []explainRouteHost `json:"hosts,omitempty"`
	MTASTS      bool               `json:"mta_sts"`
	SwitchesOff []string           `json:"switches_off"`
}

type explainDNS struct {
	Resolvers []string         `json:"resolvers"`
	MX        *explainMX       `json:"mx"`
	Hosts     []explainHostDNS `json:"hosts"`
}

type explainMXRecord struct {
	Host string `json:"host"`
	Pref int    `json:"pref"`
}

type explainMX struct {
	Name     string            `json:"name"`
	Status   string            `json:"status"`
	DNSSEC   bool              `json:"dnssec"`
	Records  []explainMXRecord `json:"records"`
	NullMX   bool              `json:"null_mx"`
	Implicit bool              `json:"implicit"`
	Error    string            `json:"error,omitempty"`
}

type explainLookup struct {
	Status    string   `json:"status"`
	DNSSEC    bool     `json:"dnssec"`
	Addresses []string `json:"addresses"`
	Error     string   `json:"error,omitempty"`
}

type explainHostDNS struct {
	Host string        `json:"host"`
	A    explainLookup `json:"a"`
	AAAA explainLookup `json:"aaaa"`
}

type explainSTSLookup struct {
	Domain    string     `json:"domain"`
	For       string     `json:"for"`
	State     string     `json:"state"`
	Mode      string     `json:"mode,omitempty"`
	MX        []string   `json:"mx,omitempty"`
	MaxAge    int64      `json:"max_age,omitempty"`
	ID        string     `json:"id,omitempty"`
	FetchedAt *time.Time `json:"fetched_at,omitempty"`
	Expires   *time.Time `json:"expires,omitempty"`
	TXT       []string   `json:"txt,omitempty"`
	URL       string     `json:"url,omitempty"`
	Error     string     `json:"error,omitempty"`
	Note      string     `json:"note,omitempty"`
}

type explainSTS struct {
	Enabled       bool               `json:"enabled"`
	Source        string             `json:"source"`
	DaemonRunning *bool              `json:"daemon_running,omitempty"`
	Status        string             `json:"status"`
	Lookups       []explainSTSLookup `json:"lookups"`
}

type explainDANE struct {
	Setting   string `json:"setting"`
	Evaluated bool   `json:"evaluated"`
	Status    string `json:"status"`
}

type explainTLS struct {
	Mode        string   `json:"mode"`
	Label       string   `json:"label"`
	TLSRequired bool     `json:"tls_required"`
	Verify      string   `json:"verify"`
	MinVersion  string   `json:"min_version"`
	Names       []string `json:"names"`
	Why         string   `json:"why"`
	Source      string   `json:"source"`
	STSTesting  bool     `json:"mta_sts_testing,omitempty"`
}

type explainPlanHost struct {
	Host         string     `json:"host"`
	Port         int        `json:"port"`
	Preference   int        `json:"preference"`
	IPPreference string     `json:"ip_preference"`
	Addresses    []string   `json:"addresses"`
	TLS          explainTLS `json:"tls"`
}

type explainLimits struct {
	MaxConcurrency           int          `json:"max_concurrency"`
	MaxMessagesPerConnection int          `json:"max_messages_per_connection"`
	RecipientLimit           *explainRate `json:"recipient_limit"`
	LimitsScope              string       `json:"limits_scope"`
	LimitsApply              string       `json:"limits_apply"`
}

type explainPlan struct {
	Source   string            `json:"source"`
	Verdict  string            `json:"verdict"`
	SMTPCode int               `json:"smtp_code,omitempty"`
	Code     string            `json:"code,omitempty"`
	Reason   string            `json:"reason,omitempty"`
	Hosts    []explainPlanHost `json:"hosts"`
	Limits   explainLimits     `json:"limits"`
	Notes    []string          `json:"notes"`
	Warnings []string          `json:"warnings"`
}

// ---- the command ----

func explainCmd(cfgPath string, args []string, stdout, stderr io.Writer) int {
	var query string
	asJSON, fetch := false, false
	for _, a := range args {
		switch {
		case a == "--json" || a == "-json":
			asJSON = true
		case a == "--fetch" || a == "-fetch":
			fetch = true
		case a == "-h" || a == "--help" || a == "help":
			fmt.Fprint(stdout, explainUsage)
			return 0
		case strings.HasPrefix(a, "-"):
			fmt.Fprintf(stderr, "outpost: explain: unknown flag %s\n%s", a, explainUsage)
			return 2
		case query == "":
			query = a
		default:
			fmt.Fprintf(stderr, "outpost: explain: one ADDRESS or DOMAIN only\n%s", explainUsage)
			return 2
		}
	}
	if query == "" {
		fmt.Fprint(stderr, explainUsage)
		return 2
	}
	domain, err := explainDomain(query)
	if err != nil {
		fmt.Fprintf(stderr, "outpost: explain: %v\n", err)
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
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	x := &explainer{env: env, fetch: fetch, domain: domain,
		fetchOpts: mtasts.FetchOptions{Roots: env.roots, Timeout: env.cfg.MTASTS.FetchTimeout.D(), Proxy: proxy,
			DialContext: app.ResolverDial(env.dns, proxy)},
		hostDNS: map[string]*explainHostDNS{}}
	if !fetch {
		x.ctl = ctl.Dial(socketPath(env.cfg))
	}
	rep := x.run(ctx, query)
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintln(stderr, "outpost:", err)
			return 1
		}
	} else {
		writeExplain(stdout, rep)
	}
	return rep.Exit
}

// explainDomain takes the domain out of an address or a domain.
func explainDomain(q string) (string, error) {
	d := q
	if i := strings.LastIndexByte(q, '@'); i >= 0 {
		d = q[i+1:]
	}
	d = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
	switch {
	case d == "":
		return "", fmt.Errorf("%q has no domain", q)
	case strings.HasPrefix(d, "["):
		return "", fmt.Errorf("%q: address literals are not routed by domain; give a domain", q)
	case strings.ContainsAny(d, " \t/\\:;,<>\"()") || strings.Contains(d, "..") || strings.HasPrefix(d, "."):
		return "", fmt.Errorf("%q is not a domain name", d)
	}
	return d, nil
}

type explainer struct {
	env       *toolEnv
	fetch     bool
	domain    string
	ctl       *ctl.Client
	fetchOpts mtasts.FetchOptions
	hostDNS   map[string]*explainHostDNS
	hostOrder []string

	sts          explainSTS
	daemonDown   bool
	daemonProbed bool
}

func (x *explainer) run(ctx context.Context, query string) *explainReport {
	cfg := x.env.cfg
	rep := &explainReport{Query: query, Domain: x.domain, Config: cfg.Source}
	if rep.Config == "" {
		rep.Config = "embedded defaults"
	}
	prof := cfg.Profile(x.domain)
	rep.Profile = explainProfileOf(cfg, prof, x.domain)
	rep.Route = explainRouteOf(cfg, x.domain, prof)
	rep.DNS.Resolvers = cfg.DNS.Resolvers

	// DNS: the MX answer (unless a route's hosts or /dev/null replace it).
	if rep.Route == nil || rep.Route.Kind == "usedns" {
		rep.DNS.MX = x.lookupMX(ctx)
		for _, r := range rep.DNS.MX.Records {
			x.lookupHost(ctx, r.Host)
		}
		if rep.DNS.MX.Implicit {
			x.lookupHost(ctx, x.domain)
		}
	}

	// MTA-STS: the planner asks through x (cache or live fetch).
	x.sts = explainSTS{Enabled: prof.MTASTS, Source: "cache", Lookups: []explainSTSLookup{}}
	if x.fetch {
		x.sts.Source = "fetch"
	}

	// The plan, by the daemon's code.
	pl := app.NewPlanner(cfg, x.env.dns, x)
	plan, rerr := pl.Plan(ctx, x.domain)
	rep.Plan = x.explainPlan(ctx, prof, plan, rerr)
	rep.MTASTS = x.sts
	rep.MTASTS.Status = x.stsStatus(prof, rep.Route, plan, rerr)
	if !x.fetch && x.daemonProbed {
		running := !x.daemonDown
		rep.MTASTS.DaemonRunning = &running
	}
	rep.DANE = explainDANEOf(prof, plan)
	for _, h := range x.hostOrder {
		rep.DNS.Hosts = append(rep.DNS.Hosts, *x.hostDNS[h])
	}
	if rep.DNS.Hosts == nil {
		rep.DNS.Hosts = []explainHostDNS{}
	}
	rep.Verdict = rep.Plan.Verdict
	if rep.Verdict == "defer" || rep.Verdict == "bounce" {
		rep.Exit = 1
	}
	return rep
}

// ---- profile and route ----

func explainProfileOf(cfg *config.Config, p config.Profile, domain string) explainProfile {
	out := explainProfile{Entry: p.Name, Match: "default", TLS: p.TLS.String(), TLSLabel: p.TLS.Label(), DANE: p.DANE,
		MTASTS: p.MTASTS, IPPreference: p.IPPreference, MaxConcurrency: p.MaxConcurrency,
		MaxMessagesPerConnection: p.MaxMessagesPerConnection, RecipientLimit: rateOf(p.RecipientLimit),
		LimitsScope: p.LimitsScope, LimitsApply: p.LimitsApply, BounceVerification: p.BounceVerification}
	switch {
	case p.Name == domain:
		out.Match = "exact"
	case strings.HasPrefix(p.Name, "."):
		out.Match = "suffix"
	}
	name := p.BounceProfile
	if name == "" {
		name = "Default"
	}
	b := cfg.BounceProfile(name)
	out.BounceProfile = explainBounce{Name: name, MaxRetries: b.MaxRetries, InitialRetry: b.InitialRetry.String(),
		MaxRetryInterval: b.MaxRetryInterval.String(), MaxQueueLifetime: b.MaxQueueLifetime.String(),
		SendBounces: b.SendBounces == nil || *b.SendBounces, BounceAddress: b.BounceAddress, MaxBounceCopy: int64(b.MaxBounceCopy),
		RetrySchedule: retrySchedule(b.InitialRetry.D(), b.MaxRetryInterval.D())}
	if dw := b.DelayWarnings; dw != nil {
		out.BounceProfile.DelayWarnings = explainDelay{Enabled: dw.Enabled, Interval: dw.Interval.String(), Count: dw.Count}
	}
	return out
}

func rateOf(r config.RecipientLimit) *explainRate {
	if r.Count == 0 {
		return nil
	}
	return &explainRate{Count: r.Count, Minutes: r.Minutes}
}

// retrySchedule lists the waits between attempts as the queue manager
// makes them: InitialRetry, doubling per attempt, up to MaxRetryInterval.
func retrySchedule(initial, max time.Duration) []string {
	var out []string
	for d, i := initial, 0; i < 30; i++ {
		if d >= max || d <= 0 {
			out = append(out, max.String())
			break
		}
		out = append(out, d.String())
		d *= 2
	}
	return out
}

func explainRouteOf(cfg *config.Config, domain string, p config.Profile) *explainRoute {
	name, r := cfg.RouteFor(domain)
	if r == nil {
		return nil
	}
	out := &explainRoute{Entry: name, Match: "suffix", MTASTS: r.MTASTS, SwitchesOff: []string{}}
	switch name {
	case domain:
		out.Match = "exact"
	case "ALL":
		out.Match = "all"
	}
	switch {
	case r.Discard:
		out.Kind = "discard"
		out.SwitchesOff = append(out.SwitchesOff, "delivery", "MX lookup", "DANE", "MTA-STS")
	case r.UseDNS:
		out.Kind = "usedns"
	default:
		out.Kind = "hosts"
		for _, h := range r.Hosts {
			out.Hosts = append(out.Hosts, explainRouteHost{Host: h.Host, Port: h.Port, Priority: h.Priority})
		}
		out.SwitchesOff = append(out.SwitchesOff, "MX lookup of "+domain, "DANE for "+domain)
		if r.MTASTS {
			out.SwitchesOff = append(out.SwitchesOff, "MTA-STS of "+domain+" (the route hosts' own domain's policy applies instead, RFC 8461 §3.4)")
		} else {
			out.SwitchesOff = append(out.SwitchesOff, "MTA-STS of "+domain)
		}
	}
	return out
}

// ---- DNS ----

func (x *explainer) lookupMX(ctx context.Context) *explainMX {
	out := &explainMX{Name: x.domain, Records: []explainMXRecord{}}
	mxs, ans, err := x.env.dns.MX(ctx, x.domain)
	out.DNSSEC = ans.Secure && (err == nil || errors.Is(err, resolver.ErrNullMX))
	switch {
	case errors.Is(err, resolver.ErrNullMX):
		out.Status, out.NullMX = "NOERROR", true
	case err != nil:
		out.Status, out.Error = lookupStatus(ans, err), err.Error()
	default:
		out.Status = statusWord(ans.Status)
		if ans.Status == resolver.NoData || (ans.Status == resolver.OK && len(mxs) == 0) {
			out.Implicit = true
		}
	}
	for _, m := range mxs {
		out.Records = append(out.Records, explainMXRecord{Host: m.Host, Pref: int(m.Pref)})
	}
	return out
}

func lookupStatus(ans resolver.Answer, err error) string {
	var re *resolver.Error
	if errors.As(err, &re) {
		return statusWord(re.Status)
	}
	if err != nil {
		return "SERVFAIL"
	}
	return statusWord(ans.Status)
}

// lookupHost looks host's A and AAAA records up once.
func (x *explainer) lookupHost(ctx context.Context, host string) *explainHostDNS {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if h := x.hostDNS[host]; h != nil {
		return h
	}
	h := &explainHostDNS{Host: host}
	if a, err := netip.ParseAddr(host); err == nil {
		lit := explainLookup{Status: "literal", Addresses: []string{a.String()}}
		none := explainLookup{Status: "literal", Addresses: []string{}}
		if a.Unmap().Is4() {
			h.A, h.AAAA = lit, none
		} else {
			h.A, h.AAAA = none, lit
		}
	} else {
		one := func(f func(context.Context, string) ([]netip.Addr, resolver.Answer, error)) explainLookup {
			addrs, ans, err := f(ctx, host)
			l := explainLookup{Status: lookupStatus(ans, err), DNSSEC: err == nil && ans.Secure, Addresses: []string{}}
			if err != nil {
				l.Error = err.Error()
			}
			for _, a := range addrs {
				l.Addresses = append(l.Addresses, a.String())
			}
			return l
		}
		h.A, h.AAAA = one(x.env.dns.A), one(x.env.dns.AAAA)
	}
	x.hostDNS[host] = h
	x.hostOrder = append(x.hostOrder, host)
	return h
}

// orderAddrs is the order delivery tries host's addresses in under an IP
// preference (the resolver's order is IPv4 first, then IPv6).
func orderAddrs(h *explainHostDNS, pref string) []string {
	v4, v6 := h.A.Addresses, h.AAAA.Addresses
	out := []string{}
	switch pref {
	case "prefer-ipv6":
		out = append(append(out, v6...), v4...)
	case "require-ipv4":
		out = append(out, v4...)
	case "require-ipv6":
		out = append(out, v6...)
	default:
		out = append(append(out, v4...), v6...)
	}
	return out
}

// ---- MTA-STS (planner.STSLookup) ----

// Lookup implements planner.STSLookup: the daemon's cached policy, or with
// --fetch a live discovery that is never written to the cache.
func (x *explainer) Lookup(ctx context.Context, domain string) (tlspolicy.STSState, *tlspolicy.STS) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	l := explainSTSLookup{Domain: domain, For: "recipient domain"}
	if domain != x.domain {
		l.For = "route hosts' domain (RFC 8461 §3.4)"
	}
	var state tlspolicy.STSState
	var sts *tlspolicy.STS
	if x.fetch {
		state, sts = x.fetchPolicy(ctx, domain, &l)
	} else {
		state, sts = x.cachedPolicy(ctx, domain, &l)
	}
	x.sts.Lookups = append(x.sts.Lookups, l)
	return state, sts
}

func (x *explainer) cachedPolicy(ctx context.Context, domain string, l *explainSTSLookup) (tlspolicy.STSState, *tlspolicy.STS) {
	x.daemonProbed = true
	if x.daemonDown {
		l.State = "daemon-not-running"
		l.Note = "Outpost is not running: no cached policy can be shown; at delivery the policy is looked up (run with --fetch to see it)"
		return tlspolicy.STSNoPolicy, nil
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var e mtasts.Entry
	err := x.ctl.Do(cctx, "GET", "/v1/mta-sts/cache/"+domain, &e)
	switch {
	case errors.Is(err, ctl.ErrNotRunning):
		x.daemonDown = true
		l.State = "daemon-not-running"
		l.Note = "Outpost is not running: no cached policy can be shown; at delivery the policy is looked up (run with --fetch to see it)"
		return tlspolicy.STSNoPolicy, nil
	case err != nil:
		l.State = "not-cached"
		l.Note = "no cached policy (" + err.Error() + "); the daemon looks " + domain + " up (TXT record, then HTTPS fetch) at the next delivery; run with --fetch to see what it would find"
		return tlspolicy.STSNoPolicy, nil
	}
	l.ID, l.FetchedAt, l.Expires = e.ID, timePtr(e.FetchedAt), timePtr(e.Expires)
	fillPolicy(l, e.Policy)
	if !e.Valid(time.Now()) {
		l.State = "expired"
		l.Note = "the cached policy expired; the daemon looks " + domain + " up again at the next delivery"
		return tlspolicy.STSNoPolicy, nil
	}
	l.State = "policy"
	return app.STSFromPolicy(e.Policy, true)
}

func (x *explainer) fetchPolicy(ctx context.Context, domain string, l *explainSTSLookup) (tlspolicy.STSState, *tlspolicy.STS) {
	tctx, cancel := context.WithTimeout(ctx, x.fetchOpts.Timeout)
	txts, err := app.DNSAdapter{R: x.env.dns}.LookupTXT(tctx, "_mta-sts."+domain)
	cancel()
	l.TXT = txts
	switch {
	case errors.Is(err, mtasts.ErrNotFound):
		l.State, l.Error = "no-policy", "no TXT record at _mta-sts."+domain+": "+err.Error()
		return tlspolicy.STSNoPolicy, nil
	case err != nil:
		l.State, l.Error = "temporary-failure", err.Error()
		l.Note = "a temporary DNS failure is not \"no policy\": without a cached policy the daemon defers (RFC 8461 §5)"
		return tlspolicy.STSTempFail, nil
	}
	rec, err := mtasts.SelectTXT(txts)
	if err != nil {
		l.State, l.Error = "no-policy", err.Error()
		return tlspolicy.STSNoPolicy, nil
	}
	l.ID, l.URL = rec.ID, mtasts.PolicyURL(domain)
	f, err := mtasts.Fetch(ctx, domain, x.fetchOpts)
	if err != nil {
		l.State, l.Error = "no-policy", err.Error()
		l.Note = "no policy fetched and none cached: delivery goes on as if " + domain + " had no MTA-STS (RFC 8461 §3.3); a still-valid cached policy would be applied instead"
		return tlspolicy.STSNoPolicy, nil
	}
	l.State = "policy"
	fillPolicy(l, f.Policy)
	return app.STSFromPolicy(f.Policy, false)
}

func fillPolicy(l *explainSTSLookup, p *mtasts.Policy) {
	if p == nil {
		return
	}
	l.Mode, l.MX, l.MaxAge = p.Mode.String(), p.MX, p.MaxAge
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func (x *explainer) stsStatus(p config.Profile, rt *explainRoute, plan *tlspolicy.Plan, rerr *reply.Reply) string {
	switch {
	case rt != nil && rt.Kind == "discard":
		return "not applied: the /dev/null route drops the mail"
	case rt != nil && rt.Kind == "hosts" && rt.MTASTS:
		return "the route opted in: the MTA-STS policy of the route hosts' own domain applies (RFC 8461 §3.4); " + x.domain + "'s own policy does not"
	case rt != nil && rt.Kind == "hosts" && p.MTASTS:
		return "not applied: MTA-STS is not enforced for domains that have SMTP Routes configured"
	case rt != nil && rt.Kind == "hosts":
		return "not applied: the domain has an SMTP route, and MTA-STS is off in its profile"
	case !p.MTASTS:
		return "off for this destination (profile " + p.Name + ": mta_sts off): not consulted"
	case len(x.sts.Lookups) == 0:
		return "on, but not consulted: the MX lookup decided first"
	}
	l := x.sts.Lookups[0]
	switch l.State {
	case "policy":
		src := "cached by the daemon"
		if x.fetch {
			src = "fetched now (not cached)"
		}
		switch l.Mode {
		case "enforce":
			return "policy in enforce mode, " + src + ": only MX hosts matching " + strings.Join(l.MX, ", ") + ", TLS 1.2 or later, certificate valid for the MX name"
		case "testing":
			return "policy in testing mode, " + src + ": failures are reported, never enforced"
		default:
			return "policy mode none, " + src + ": the domain withdrew MTA-STS; no restriction"
		}
	case "daemon-not-running":
		return "Outpost is not running: nothing cached to show (use --fetch for a live lookup)"
	case "not-cached":
		return "on; no policy cached for " + l.Domain + " (use --fetch for a live lookup)"
	case "expired":
		return "on; the cached policy for " + l.Domain + " expired"
	case "temporary-failure":
		return "on; the lookup failed temporarily: delivery would wait (4.7.5)"
	}
	return "on; " + l.Domain + " publishes no usable MTA-STS policy: the profile's TLS mode applies"
}

// ---- DANE ----

func explainDANEOf(p config.Profile, plan *tlspolicy.Plan) explainDANE {
	d := explainDANE{Setting: p.DANE}
	if d.Setting == "" {
		d.Setting = "none"
	}
	used := false
	if plan != nil {
		used = plan.Source == tlspolicy.SourceDANE
		for _, h := range plan.Hosts {
			used = used || h.TLS.Source == tlspolicy.SourceDANE
		}
	}
	switch {
	case used:
		d.Evaluated, d.Status = true, "applied: the plan authenticates by the destination's TLSA records (see the plan)"
	case d.Setting == "none":
		d.Status = "off for this destination (profile " + p.Name + ": dane none)"
	default:
		d.Status = "not evaluated: the profile asks for DANE " + d.Setting + ", but the delivery plan does not apply DANE yet; no TLSA lookup was made"
	}
	return d
}

// ---- the plan ----

func (x *explainer) explainPlan(ctx context.Context, prof config.Profile, plan *tlspolicy.Plan, rerr *reply.Reply) explainPlan {
	cfg := x.env.cfg
	out := explainPlan{Hosts: []explainPlanHost{}, Notes: []string{}, Warnings: []string{},
		Limits: explainLimits{MaxConcurrency: prof.MaxConcurrency, MaxMessagesPerConnection: prof.MaxMessagesPerConnection,
			RecipientLimit: rateOf(prof.RecipientLimit), LimitsScope: prof.LimitsScope, LimitsApply: prof.LimitsApply}}
	b := cfg.BounceProfile(prof.BounceProfile)
	retry := fmt.Sprintf("retried after %s, then backing off to every %s; bounced after %s in the queue or %d attempts",
		b.InitialRetry, b.MaxRetryInterval, b.MaxQueueLifetime, b.MaxRetries)
	if rerr != nil {
		// The planner returns a reply only for a DNS outcome that decides
		// before any plan (NXDOMAIN, null MX, SERVFAIL/timeout).
		r := rerr
		out.SMTPCode, out.Code, out.Reason = r.Code, r.Enhanced, r.Text
		if r.Permanent() {
			out.Verdict = "bounce"
			out.Notes = append(out.Notes, "permanent: the recipient is bounced at once (a DSN goes to the sender)")
		} else {
			out.Verdict = "defer"
			out.Notes = append(out.Notes, "temporary: the mail stays queued, "+retry)
		}
		return out
	}
	out.Source = string(plan.Source)
	out.Notes = append(out.Notes, plan.Notes...)
	switch {
	case plan.Discard:
		out.Verdict = "discard"
		out.Reason = "the SMTP route sends " + x.domain + " to /dev/null: recipients are dropped (logged) without a connection"
		return out
	case plan.Deferred():
		out.Verdict, out.Code, out.Reason = "defer", plan.DeferCode, plan.DeferText
		out.Notes = append(out.Notes, "temporary: the mail stays queued, "+retry)
		if plan.DeferCode == "4.4.8" {
			for _, l := range x.sts.Lookups {
				if l.State == "policy" && !x.fetch {
					out.Notes = append(out.Notes, "before holding the mail the daemon looks the policy up again (RFC 8461 §5.1); run with --fetch to see the live policy")
					break
				}
			}
		}
		return out
	}
	out.Verdict = "deliver"
	port := cfg.Delivery.Port
	reachable := 0
	for _, h := range plan.Hosts {
		ph := explainPlanHost{Host: h.Name, Port: h.Port, Preference: h.Pref, IPPreference: h.IPPreference, TLS: explainTLSOf(h.TLS)}
		if ph.Port == 0 {
			ph.Port = port
		}
		if ph.IPPreference == "" {
			ph.IPPreference = "as-resolved"
		}
		hd := x.lookupHost(ctx, h.Name)
		ph.Addresses = orderAddrs(hd, h.IPPreference)
		if len(ph.Addresses) == 0 {
			why := "A " + hd.A.Status + ", AAAA " + hd.AAAA.Status
			if len(hd.A.Addresses)+len(hd.AAAA.Addresses) > 0 {
				why = "no address of the family " + h.IPPreference + " allows"
			}
			out.Warnings = append(out.Warnings, "host "+h.Name+" has no usable address ("+why+"): the connection attempt would fail")
		} else {
			reachable++
		}
		out.Hosts = append(out.Hosts, ph)
	}
	if len(plan.Hosts) > 0 && reachable == 0 {
		out.Warnings = append(out.Warnings, "no candidate host has a usable address: delivery would be attempted and then deferred ("+retry+")")
	}
	equal := false
	for i := 1; i < len(plan.Hosts); i++ {
		equal = equal || plan.Hosts[i].Pref == plan.Hosts[i-1].Pref
	}
	if equal && plan.Source != tlspolicy.SourceRoute {
		out.Notes = append(out.Notes, "MX hosts of equal preference are tried in random order")
	} else if len(plan.Hosts) > 1 && plan.Source == tlspolicy.SourceRoute {
		out.Notes = append(out.Notes, "route hosts are tried in priority order (0 first); hosts of equal priority share connections round robin; there is no fallback to MX")
	}
	return out
}

func explainTLSOf(r tlspolicy.Requirement) explainTLS {
	t := explainTLS{Mode: r.Mode.String(), Label: r.Mode.Label(), TLSRequired: r.Mode.MustTLS(), Verify: "none",
		MinVersion: "default", Names: r.Identity.Names, Why: r.Why, Source: string(r.Source), STSTesting: r.STSTesting}
	if t.Names == nil {
		t.Names = []string{}
	}
	switch {
	case r.Mode.MustVerify():
		t.Verify = "required"
	case r.Mode.Verifies():
		t.Verify = "logged"
	}
	if r.MinVersion != 0 {
		t.MinVersion = tls.VersionName(r.MinVersion)
	}
	return t
}

// ---- the human report ----

func writeExplain(w io.Writer, r *explainReport) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("Explain %s", r.Query)
	if r.Query != r.Domain {
		p(" (domain %s)", r.Domain)
	}
	p("   [config: %s]\n", r.Config)

	pr := r.Profile
	p("\nProfile\n")
	switch pr.Match {
	case "exact":
		p("  entry:                %s (exact match)\n", pr.Entry)
	case "suffix":
		p("  entry:                %s (matches subdomains)\n", pr.Entry)
	default:
		p("  entry:                default (no entry for %s)\n", r.Domain)
	}
	p("  TLS:                  %s (%s)\n", pr.TLS, pr.TLSLabel)
	p("  DANE:                 %s\n", pr.DANE)
	p("  MTA-STS:              %s\n", explainOnOff(pr.MTASTS))
	p("  IP preference:        %s\n", pr.IPPreference)
	p("  concurrency:          %d connections\n", pr.MaxConcurrency)
	p("  messages/connection:  %d\n", pr.MaxMessagesPerConnection)
	p("  recipient limit:      %s\n", rateText(pr.RecipientLimit))
	p("  limits:               counted per %s, %s\n", pr.LimitsScope, applyText(pr.LimitsApply))
	p("  bounce verification:  %s\n", explainOnOff(pr.BounceVerification))
	bp := pr.BounceProfile
	p("  bounce profile:       %s: %d retries, max %s in queue, retry schedule %s; bounces %s",
		bp.Name, bp.MaxRetries, bp.MaxQueueLifetime, strings.Join(bp.RetrySchedule, ", "), yesNo(bp.SendBounces, "sent", "not sent"))
	if bp.BounceAddress != "" {
		p(" to %s", bp.BounceAddress)
	}
	if bp.DelayWarnings.Enabled {
		p("; delay warnings every %s (at most %d)", bp.DelayWarnings.Interval, bp.DelayWarnings.Count)
	} else {
		p("; delay warnings off")
	}
	p("\n")

	p("\nRoute\n")
	if rt := r.Route; rt == nil {
		p("  none: delivery by the MX records of %s\n", r.Domain)
	} else {
		match := map[string]string{"exact": "exact match", "suffix": "matches subdomains", "all": "the ALL route"}[rt.Match]
		switch rt.Kind {
		case "discard":
			p("  %s (%s): /dev/null — mail is dropped and logged, no connection\n", rt.Entry, match)
		case "usedns":
			p("  %s (%s): USEDNS — delivery by the MX records, as without a route\n", rt.Entry, match)
		default:
			p("  %s (%s): %d host(s), by priority (0 first)\n", rt.Entry, match, len(rt.Hosts))
			for _, h := range rt.Hosts {
				hp := h.Host
				if h.Port != 0 {
					hp = fmt.Sprintf("%s:%d", h.Host, h.Port)
				}
				p("    %-40s priority %d\n", hp, h.Priority)
			}
			if rt.MTASTS {
				p("  mta_sts: on (the route hosts' domain's policy applies)\n")
			}
		}
		if len(rt.SwitchesOff) > 0 {
			p("  switches off: %s\n", strings.Join(rt.SwitchesOff, "; "))
		}
	}

	p("\nDNS (via %s)\n", strings.Join(r.DNS.Resolvers, ", "))
	if mx := r.DNS.MX; mx == nil {
		p("  MX %s: not looked up (the route decides)\n", r.Domain)
	} else {
		p("  MX %s: %s, %s\n", mx.Name, mx.Status, dnssecText(mx.DNSSEC))
		switch {
		case mx.NullMX:
			p("    0 .   null MX (RFC 7505): the domain accepts no mail\n")
		case mx.Implicit:
			p("    no MX records: %s itself is the implicit MX (RFC 5321 §5.1)\n", mx.Name)
		case mx.Error != "":
			p("    %s\n", mx.Error)
		}
		for _, rec := range mx.Records {
			p("    %-5d %s\n", rec.Pref, rec.Host)
		}
	}
	for _, h := range r.DNS.Hosts {
		p("  %s: A %s; AAAA %s\n", h.Host, lookupText(h.A), lookupText(h.AAAA))
	}

	s := r.MTASTS
	p("\nMTA-STS (%s)\n", map[string]string{"cache": "from the running daemon's cache", "fetch": "live lookup, not cached"}[s.Source])
	p("  %s\n", s.Status)
	for _, l := range s.Lookups {
		p("  %s (%s): %s", l.Domain, l.For, l.State)
		if l.Mode != "" {
			p(", mode %s, mx %s, max_age %d", l.Mode, strings.Join(l.MX, " "), l.MaxAge)
		}
		if l.ID != "" {
			p(", id %s", l.ID)
		}
		p("\n")
		if l.FetchedAt != nil && l.Expires != nil {
			p("    fetched %s, expires %s\n", l.FetchedAt.Local().Format(time.DateTime), l.Expires.Local().Format(time.DateTime))
		}
		if l.URL != "" {
			p("    policy: %s\n", l.URL)
		}
		if l.Error != "" {
			p("    %s\n", l.Error)
		}
		if l.Note != "" {
			p("    %s\n", l.Note)
		}
	}

	p("\nDANE\n  setting %s: %s\n", r.DANE.Setting, r.DANE.Status)

	pl := r.Plan
	p("\nPlan")
	if pl.Source != "" {
		p(" (source: %s)", pl.Source)
	}
	p("\n")
	for i, h := range pl.Hosts {
		p("  %d. %s port %d (preference %d)\n", i+1, h.Host, h.Port, h.Preference)
		t := h.TLS
		p("     TLS: %s (%s)", t.Mode, t.Why)
		if t.MinVersion != "default" {
			p(", %s or later", t.MinVersion)
		}
		p("; %s\n", map[string]string{"none": "certificate not verified", "logged": "certificate verified, failure only logged", "required": "certificate must verify"}[t.Verify])
		if len(t.Names) > 0 {
			p("     names accepted: %s\n", strings.Join(t.Names, ", "))
		}
		if t.STSTesting {
			p("     MTA-STS testing: the host matches the policy; the outcome is reported\n")
		}
		addrs := "none"
		if len(h.Addresses) > 0 {
			addrs = strings.Join(h.Addresses, ", ")
		}
		p("     addresses (%s): %s\n", h.IPPreference, addrs)
	}
	l := pl.Limits
	p("  limits: %d connection(s), %d message(s) per connection, recipients %s, counted per %s, %s\n",
		l.MaxConcurrency, l.MaxMessagesPerConnection, rateText(l.RecipientLimit), l.LimitsScope, applyText(l.LimitsApply))
	for _, n := range pl.Notes {
		p("  note: %s\n", n)
	}
	for _, n := range pl.Warnings {
		p("  warning: %s\n", n)
	}
	p("\nResult: ")
	switch pl.Verdict {
	case "deliver":
		p("would deliver to %s (%d candidate host(s))\n", r.Domain, len(pl.Hosts))
	case "discard":
		p("would discard: %s\n", pl.Reason)
	case "bounce":
		p("would bounce now: %d %s %s\n", pl.SMTPCode, pl.Code, pl.Reason)
	default:
		code := pl.Code
		if pl.SMTPCode != 0 {
			code = fmt.Sprintf("%d %s", pl.SMTPCode, pl.Code)
		}
		p("would defer: %s %s\n", code, pl.Reason)
	}
}

func explainOnOff(b bool) string { return yesNo(b, "on", "off") }

func rateText(r *explainRate) string {
	if r == nil {
		return "no limit"
	}
	return fmt.Sprintf("%d per %d minute(s)", r.Count, r.Minutes)
}

func applyText(a string) string {
	if a == "virtual-gateway" {
		return "per virtual gateway"
	}
	return "system-wide"
}

func dnssecText(ad bool) string { return yesNo(ad, "DNSSEC validated (AD)", "DNSSEC not validated") }

func lookupText(l explainLookup) string {
	s := l.Status
	if len(l.Addresses) > 0 {
		s += " " + strings.Join(l.Addresses, " ")
	}
	if l.DNSSEC {
		s += " (AD)"
	}
	return s
}
