package main

// outpost smtproutes: SMTP routes (config key smtp_routes). A route sends
// all mail for a domain (exact, ".subdomain", or ALL for the default route)
// to its own hosts, written host[:port][/pri=N] (0 is the highest
// priority), or through an MX lookup (USEDNS), or nowhere (/dev/null).
// Interactive (the appliance's NEW / EDIT / DELETE / PRINT / IMPORT /
// EXPORT / CLEAR) or with arguments; every change is pending until commit.
//
// The import/export file has one route per line:
//
//	partner.example relay1.partner.example/pri=0, relay2.partner.example:2525/pri=10
//	.lists.example USEDNS
//	junk.example /dev/null
//	smarthost.example relay.provider.example/pri=0 mta_sts
//
// The trailing word mta_sts applies the route hosts' own MTA-STS policy
// (RFC 8461 §3.4). Blank lines and lines starting with # are ignored.

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"outpost/internal/config"
	"outpost/internal/configstore"
)

const smtproutesUsage = `usage: outpost smtproutes                          (interactive menu)
       outpost smtproutes new DOMAIN HOST[:PORT][/pri=N],...|USEDNS|/dev/null [--mta-sts]
       outpost smtproutes edit DOMAIN add|replace|remove HOSTS
       outpost smtproutes delete DOMAIN
       outpost smtproutes print [--json]
       outpost smtproutes clear
       outpost smtproutes import FILE            (- for standard input; replaces every route)
       outpost smtproutes export FILE            (- for standard output)
DOMAIN is example.com, .example.com (its subdomains) or ALL (the default route).
`

const routeNote = "MTA-STS is not enforced for domains that have SMTP Routes configured."

// routeName normalises a route's domain: ALL in capitals, others lower case.
func routeName(d string) string {
	d = strings.TrimSpace(d)
	if strings.EqualFold(d, "all") {
		return "ALL"
	}
	return normDomain(d)
}

// checkRouteDomain gives the reason d cannot be a new route, or "".
func checkRouteDomain(raw *config.Config, d string) string {
	if d == "" {
		return "Please enter a domain."
	}
	if d == "ALL" {
		if raw.SMTPRoutes["ALL"] != nil {
			return "There is already a default route set."
		}
		return ""
	}
	n := strings.TrimPrefix(d, ".")
	if n == "" || strings.HasPrefix(n, ".") || strings.ContainsAny(n, " \t@/\\:[]=,") || strings.Contains(n, "..") {
		return fmt.Sprintf("%q is not a valid domain (use example.com, .example.com or ALL).", d)
	}
	if raw.SMTPRoutes[d] != nil {
		return fmt.Sprintf("The value %s is already in the routing table.", d)
	}
	return ""
}

// parseRouteHosts reads "host[:port][/pri=N], ..." or USEDNS or /dev/null,
// appended to the hosts of base (nil for a new list).
func parseRouteHosts(s string, base []config.RouteHost) (*config.Route, error) {
	var parts []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			parts = append(parts, f)
		}
	}
	if len(parts) == 0 {
		return nil, errors.New("Please enter at least one destination host.")
	}
	for _, f := range parts {
		if strings.EqualFold(f, "USEDNS") || f == "/dev/null" {
			if len(parts) > 1 || len(base) > 0 {
				return nil, fmt.Errorf("%s must be used by itself.", f)
			}
			if f == "/dev/null" {
				return &config.Route{Discard: true}, nil
			}
			return &config.Route{UseDNS: true}, nil
		}
	}
	r := &config.Route{Hosts: append([]config.RouteHost{}, base...)}
	for _, f := range parts {
		h, err := parseRouteHost(f)
		if err != nil {
			return nil, err
		}
		for _, o := range r.Hosts {
			if !strings.EqualFold(o.Host, h.Host) {
				continue
			}
			if o.Port != 0 {
				return nil, fmt.Errorf("The host %s already has an alternate port (%d).", h.Host, o.Port)
			}
			return nil, fmt.Errorf("The host %s is already using the standard port.", h.Host)
		}
		r.Hosts = append(r.Hosts, h)
	}
	if len(r.Hosts) > 1000 {
		return nil, errors.New("Routes may not contain more than 1000 destinations.")
	}
	return r, nil
}

// parseRouteHost reads host[:port][/pri=N]; an IPv6 address with a port is
// written in brackets ([2001:db8::1]:2525).
func parseRouteHost(f string) (config.RouteHost, error) {
	var h config.RouteHost
	spec := f
	if i := strings.Index(f, "/"); i >= 0 {
		spec = f[:i]
		opt := f[i+1:]
		v, ok := strings.CutPrefix(strings.ToLower(opt), "pri=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil {
			return h, fmt.Errorf("%q: after the host only /pri=N is allowed.", f)
		}
		if n < 0 || n > 65535 {
			return h, fmt.Errorf("%q: the priority must be between 0 and 65535 (0 is the highest).", f)
		}
		h.Priority = n
	}
	host, port := spec, ""
	switch {
	case strings.HasPrefix(spec, "["):
		hh, pp, err := net.SplitHostPort(spec)
		if err != nil {
			return h, fmt.Errorf("%q: want [IPv6 address]:port.", f)
		}
		host, port = hh, pp
	case strings.Count(spec, ":") == 1:
		host, port, _ = strings.Cut(spec, ":")
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return h, fmt.Errorf("%q: the port must be between 1 and 65535.", f)
		}
		h.Port = n
	}
	if host == "" || strings.ContainsAny(host, " \t@/[]=") {
		return h, fmt.Errorf("%q is not a valid host name or IP address.", f)
	}
	h.Host = host
	return h, nil
}

func formatRouteHost(h config.RouteHost) string {
	s := h.Host
	if h.Port != 0 {
		s = net.JoinHostPort(h.Host, strconv.Itoa(h.Port))
	}
	return fmt.Sprintf("%s/pri=%d", s, h.Priority)
}

// formatRoute writes a route's destinations as they are entered.
func formatRoute(r *config.Route) string {
	switch {
	case r == nil:
		return ""
	case r.UseDNS:
		return "USEDNS"
	case r.Discard:
		return "/dev/null"
	}
	var parts []string
	for _, h := range r.Hosts {
		parts = append(parts, formatRouteHost(h))
	}
	return strings.Join(parts, ", ")
}

// routeNames lists the routes sorted, ALL last.
func routeNames(raw *config.Config) []string {
	var names []string
	for n := range raw.SMTPRoutes {
		if n != "ALL" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	if raw.SMTPRoutes["ALL"] != nil {
		names = append(names, "ALL")
	}
	return names
}

func writeRoutes(w io.Writer, raw *config.Config) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintln(bw, "# Outpost SMTP routes (smtproutes EXPORT): DOMAIN DESTINATIONS [mta_sts]")
	for _, n := range routeNames(raw) {
		r := raw.SMTPRoutes[n]
		line := n + " " + formatRoute(r)
		if r.MTASTS {
			line += " mta_sts"
		}
		fmt.Fprintln(bw, line)
	}
	return bw.Flush()
}

// readRoutes reads an export file; errors name the line.
func readRoutes(r io.Reader, name string) (map[string]*config.Route, error) {
	out := map[string]*config.Route{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return nil, fmt.Errorf("%s:%d: want DOMAIN DESTINATIONS", name, n)
		}
		dom := routeName(f[0])
		rest := f[1:]
		sts := false
		if len(rest) > 1 && strings.EqualFold(rest[len(rest)-1], "mta_sts") {
			sts, rest = true, rest[:len(rest)-1]
		}
		if out[dom] != nil {
			if dom == "ALL" {
				return nil, fmt.Errorf("%s:%d: There is already a default route set.", name, n)
			}
			return nil, fmt.Errorf("%s:%d: The value %s is already in the routing table.", name, n, dom)
		}
		if why := checkRouteDomain(&config.Config{}, dom); why != "" {
			return nil, fmt.Errorf("%s:%d: %s", name, n, why)
		}
		rt, err := parseRouteHosts(strings.Join(rest, " "), nil)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, n, err)
		}
		if sts && len(rt.Hosts) == 0 {
			return nil, fmt.Errorf("%s:%d: mta_sts is only for routes with hosts", name, n)
		}
		rt.MTASTS = sts
		out[dom] = rt
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(out) > config.MaxRoutes {
		return nil, fmt.Errorf("%s: There is a maximum of %d routes.", name, config.MaxRoutes)
	}
	return out, nil
}

func smtproutesCmd(cfgPath string, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	st, _, err := openStore(cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "outpost:", err)
		return 1
	}
	if len(args) == 0 {
		s := &routeSession{editSession{p: newPrompter(stdin, stdout), st: st}}
		if err := s.run(); err != nil {
			fmt.Fprintln(stderr, "outpost:", err)
			return 1
		}
		return 0
	}
	if err := routesBatch(st, args, stdin, stdout); err != nil {
		fmt.Fprintln(stderr, "outpost: smtproutes:", err)
		code := exitCode(err)
		if code == 2 {
			fmt.Fprint(stderr, smtproutesUsage)
		}
		return code
	}
	return 0
}

func setRoute(st *configstore.Store, dom string, r *config.Route) error {
	return st.Edit(func(raw *config.Config) error {
		if raw.SMTPRoutes == nil {
			raw.SMTPRoutes = map[string]*config.Route{}
		}
		raw.SMTPRoutes[dom] = r
		return nil
	})
}

func deleteRoute(st *configstore.Store, dom string) error {
	return st.Edit(func(raw *config.Config) error {
		delete(raw.SMTPRoutes, dom)
		if len(raw.SMTPRoutes) == 0 {
			raw.SMTPRoutes = nil
		}
		return nil
	})
}

// editRoute applies EDIT's ADD / REPLACE / REMOVE to a route.
func editRoute(cur *config.Route, op, hosts string) (*config.Route, error) {
	switch strings.ToUpper(op) {
	case "ADD":
		if cur.UseDNS || cur.Discard {
			return nil, fmt.Errorf("%s must be used by itself; use REPLACE.", formatRoute(cur))
		}
		r, err := parseRouteHosts(hosts, cur.Hosts)
		if err != nil {
			return nil, err
		}
		r.MTASTS = cur.MTASTS && len(r.Hosts) > 0
		return r, nil
	case "REPLACE":
		r, err := parseRouteHosts(hosts, nil)
		if err != nil {
			return nil, err
		}
		r.MTASTS = cur.MTASTS && len(r.Hosts) > 0
		return r, nil
	case "REMOVE":
		if len(cur.Hosts) == 0 {
			return nil, fmt.Errorf("%s cannot be removed; use REPLACE or DELETE.", formatRoute(cur))
		}
		out := &config.Route{MTASTS: cur.MTASTS}
		gone := map[int]bool{}
		for _, f := range strings.Split(hosts, ",") {
			f = strings.TrimSpace(f)
			if f == "" {
				continue
			}
			found := false
			for i, h := range cur.Hosts {
				if n, err := strconv.Atoi(f); (err == nil && n == i+1) || strings.EqualFold(h.Host, f) || strings.EqualFold(formatRouteHost(h), f) {
					gone[i], found = true, true
				}
			}
			if !found {
				return nil, fmt.Errorf("The host %s is not a destination of this route.", f)
			}
		}
		for i, h := range cur.Hosts {
			if !gone[i] {
				out.Hosts = append(out.Hosts, h)
			}
		}
		if len(out.Hosts) == 0 {
			return nil, errors.New("A route needs at least one destination; use DELETE to remove the route.")
		}
		return out, nil
	}
	return nil, usagef("unknown edit operation %q (want add, replace or remove)", op)
}

func routesBatch(st *configstore.Store, args []string, stdin io.Reader, stdout io.Writer) error {
	op, args := strings.ToLower(args[0]), args[1:]
	raw, eff, err := working(st)
	if err != nil {
		return err
	}
	switch op {
	case "new":
		fs := flag.NewFlagSet("smtproutes", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		sts := fs.Bool("mta-sts", false, "")
		var pos []string
		if err := parseInterleaved(fs, args, &pos); err != nil {
			return usageError{err.Error()}
		}
		if len(pos) < 2 {
			return usagef("new needs DOMAIN and DESTINATIONS")
		}
		dom := routeName(pos[0])
		if why := checkRouteDomain(raw, dom); why != "" {
			return errors.New(why)
		}
		r, err := parseRouteHosts(strings.Join(pos[1:], " "), nil)
		if err != nil {
			return err
		}
		if *sts && len(r.Hosts) == 0 {
			return errors.New("--mta-sts is only for routes with hosts")
		}
		r.MTASTS = *sts
		if err := setRoute(st, dom, r); err != nil {
			return err
		}
		if dom != "ALL" && eff.Profile(dom).MTASTS && !r.MTASTS {
			fmt.Fprintf(stdout, "Note: %s has MTA-STS on; %s\n", dom, routeNote)
		}
	case "edit":
		if len(args) < 3 {
			return usagef("edit needs DOMAIN, add|replace|remove and HOSTS")
		}
		dom := routeName(args[0])
		cur := raw.SMTPRoutes[dom]
		if cur == nil {
			return fmt.Errorf("%q was not found in the routing table.", dom)
		}
		r, err := editRoute(cur, args[1], strings.Join(args[2:], " "))
		if err != nil {
			return err
		}
		if err := setRoute(st, dom, r); err != nil {
			return err
		}
	case "delete":
		if len(args) != 1 {
			return usagef("delete needs one DOMAIN")
		}
		dom := routeName(args[0])
		if raw.SMTPRoutes[dom] == nil {
			return fmt.Errorf("%q was not found in the routing table.", dom)
		}
		if err := deleteRoute(st, dom); err != nil {
			return err
		}
	case "clear":
		if err := st.Edit(func(raw *config.Config) error { raw.SMTPRoutes = nil; return nil }); err != nil {
			return err
		}
	case "print", "list":
		asJSON, err := onlyJSONFlag(args, 0)
		if err != nil {
			return err
		}
		if asJSON {
			type rec struct {
				Domain string `json:"domain"`
				*config.Route
			}
			out := []rec{}
			for _, n := range routeNames(raw) {
				out = append(out, rec{n, raw.SMTPRoutes[n]})
			}
			return writeJSON(stdout, out)
		}
		printRoutes(stdout, raw)
		return nil
	case "import":
		if len(args) != 1 {
			return usagef("import needs one FILE")
		}
		if err := importRoutes(st, args[0], stdin); err != nil {
			return err
		}
	case "export":
		if len(args) != 1 {
			return usagef("export needs one FILE")
		}
		return exportRoutes(raw, args[0], stdout)
	default:
		return usagef("unknown operation %q", op)
	}
	fmt.Fprintln(stdout, commitReminder)
	return nil
}

func importRoutes(st *configstore.Store, file string, stdin io.Reader) error {
	r, name := stdin, "standard input"
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return fmt.Errorf("Error reading file: %w", err)
		}
		defer f.Close()
		r, name = f, file
	}
	routes, err := readRoutes(r, name)
	if err != nil {
		return fmt.Errorf("Import failed. %w", err)
	}
	if err := st.Edit(func(raw *config.Config) error { raw.SMTPRoutes = routes; return nil }); err != nil {
		return fmt.Errorf("Import failed. %w", err)
	}
	return nil
}

func exportRoutes(raw *config.Config, file string, stdout io.Writer) error {
	if file == "-" {
		return writeRoutes(stdout, raw)
	}
	f, err := os.Create(file)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := writeRoutes(f, raw); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "The routes were exported to %s.\n", file)
	return nil
}

func printRoutes(w io.Writer, raw *config.Config) {
	names := routeNames(raw)
	if len(names) == 0 {
		fmt.Fprintln(w, "There are no routes configured.")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "Domain\tDestinations\tMTA-STS")
	for _, n := range names {
		r := raw.SMTPRoutes[n]
		sts := "not enforced"
		if r.MTASTS {
			sts = "route hosts' policy"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", n, formatRoute(r), sts)
	}
	tw.Flush()
}

// ---- interactive ----

type routeSession struct{ editSession }

func (s *routeSession) run() error {
	defer s.remind()
	for {
		raw, eff, err := working(s.st)
		if err != nil {
			return err
		}
		s.p.say("\nThere are currently %d routes configured.\n", len(raw.SMTPRoutes))
		s.p.say("Choose the operation you want to perform:")
		s.p.say("- NEW - Create a new route.")
		s.p.say("- EDIT - Edit destinations of an existing route.")
		s.p.say("- DELETE - Remove a route.")
		s.p.say("- PRINT - Display all routes.")
		s.p.say("- IMPORT - Import new routes from a file.")
		s.p.say("- EXPORT - Export all routes to a file.")
		s.p.say("- CLEAR - Remove all routes.")
		op, err := s.p.ask("", "")
		if errors.Is(err, errEOF) || op == "" {
			return nil
		}
		err = s.do(strings.ToUpper(op), raw, eff)
		if errors.Is(err, errEOF) {
			return nil
		}
		if err != nil {
			s.p.say("%v", err)
		}
	}
}

func (s *routeSession) askHosts(dom string, check func(string) string) (string, error) {
	return s.p.text(fmt.Sprintf("Enter the destination hosts, separated by commas, which you want mail for %s to be delivered.\n"+
		"Enter USEDNS by itself to use normal DNS resolution for this route.\n"+
		"Enter /dev/null by itself if you wish to discard the mail.\n"+
		"Add :PORT for another port and /pri=N for a priority (0 is the highest).", dom), "", check)
}

func (s *routeSession) do(op string, raw, eff *config.Config) error {
	p := s.p
	pickRoute := func(verb string) (string, error) {
		d, err := p.text(fmt.Sprintf("Enter the domain you wish to %s.", verb), "", func(a string) string {
			if a != "" && raw.SMTPRoutes[routeName(a)] == nil {
				return fmt.Sprintf("%q was not found in the routing table.", a)
			}
			return ""
		})
		return routeName(d), err
	}
	switch op {
	case "NEW":
		dom, err := p.text("Enter the domain for which you want to set up a permanent route.\n"+
			"Partial hostnames such as \".example.com\" are allowed.\n"+
			"Use \"ALL\" for the default route.", "", func(a string) string {
			if a == "" {
				return "" // back to the menu
			}
			return checkRouteDomain(raw, routeName(a))
		})
		if err != nil || dom == "" {
			return err
		}
		dom = routeName(dom)
		var r *config.Route
		if _, err := s.askHosts(dom, func(a string) string {
			if a == "" {
				return "" // back to the menu
			}
			var err error
			if r, err = parseRouteHosts(a, nil); err != nil {
				return err.Error()
			}
			return ""
		}); err != nil || r == nil {
			return err
		}
		if len(r.Hosts) > 0 {
			p.say("Note: %s", routeNote)
			if r.MTASTS, err = p.yesNo("Do you want to apply the MTA-STS policy of the route hosts' own domain (RFC 8461 section 3.4)?", false); err != nil {
				return err
			}
		} else if dom != "ALL" && eff.Profile(dom).MTASTS {
			p.say("Note: %s", routeNote)
		}
		if err := setRoute(s.st, dom, r); err != nil {
			return err
		}
		s.changed = true
		return nil
	case "EDIT":
		if len(raw.SMTPRoutes) == 0 {
			p.say("There are no routes configured.")
			return nil
		}
		dom, err := pickRoute("edit")
		if err != nil || dom == "" {
			return err
		}
		cur := raw.SMTPRoutes[dom]
		p.say("Destination hosts for %q are: %s\n", dom, formatRoute(cur))
		p.say("Choose the operation you want to perform:")
		p.say("- ADD - Add a new destination host.")
		p.say("- REPLACE - Specify a new destination or set of destinations.")
		p.say("- REMOVE - Remove a destination host.")
		sub, err := p.text("", "", func(a string) string {
			switch strings.ToUpper(a) {
			case "ADD", "REPLACE", "REMOVE", "":
				return ""
			}
			return fmt.Sprintf("%q is not an operation: choose ADD, REPLACE or REMOVE.", a)
		})
		if err != nil || sub == "" {
			return err
		}
		var r *config.Route
		check := func(a string) string {
			if a == "" {
				return "" // back to the menu
			}
			var err error
			if r, err = editRoute(cur, sub, a); err != nil {
				return err.Error()
			}
			return ""
		}
		if strings.EqualFold(sub, "REMOVE") {
			for i, h := range cur.Hosts {
				p.say("%d. %s", i+1, formatRouteHost(h))
			}
			if _, err := p.text("Enter the number or name of the destination host you wish to remove.", "", check); err != nil {
				return err
			}
		} else if _, err := s.askHosts(dom, check); err != nil {
			return err
		}
		if r == nil {
			return nil
		}
		if err := setRoute(s.st, dom, r); err != nil {
			return err
		}
		s.changed = true
		return nil
	case "DELETE":
		if len(raw.SMTPRoutes) == 0 {
			p.say("There are no routes configured.")
			return nil
		}
		dom, err := pickRoute("delete")
		if err != nil || dom == "" {
			return err
		}
		if dom == "ALL" {
			ok, err := p.yesNo("Are you sure you want to delete the default route?", false)
			if err != nil || !ok {
				return err
			}
		}
		if err := deleteRoute(s.st, dom); err != nil {
			return err
		}
		s.changed = true
		return nil
	case "PRINT":
		printRoutes(p.out, raw)
		return nil
	case "CLEAR":
		ok, err := p.yesNo("Are you sure you want to delete all of the configured routes?", false)
		if err != nil || !ok {
			return err
		}
		if err := s.st.Edit(func(raw *config.Config) error { raw.SMTPRoutes = nil; return nil }); err != nil {
			return err
		}
		s.changed = true
		return nil
	case "IMPORT":
		file, err := p.text("Enter the name of the file to import.", "", nil)
		if err != nil || file == "" || file == "-" {
			return err
		}
		if err := importRoutes(s.st, file, nil); err != nil {
			return err
		}
		s.changed = true
		p.say("The routes were imported from %s.", file)
		return nil
	case "EXPORT":
		file, err := p.text("Enter a name for the exported file.", "smtproutes.txt", nil)
		if err != nil || file == "-" {
			return err
		}
		return exportRoutes(raw, file, p.out)
	}
	p.say("No SMTP route action for %q.", op)
	return nil
}
