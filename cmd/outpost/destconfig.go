package main

// outpost destconfig: the Destination Control table, interactively (the
// appliance's menu, prompts and re-prompts) or with arguments for scripts.
// Every change is a pending edit through configstore.Store.Edit, which
// validates the whole configuration and refuses a change that does not
// validate; nothing reaches the running server before `outpost commit`.

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"outpost/internal/config"
	"outpost/internal/configstore"
	"outpost/internal/destini"
	"outpost/internal/tlspolicy"
)

const commitReminder = "Use the commit command to make these changes active."

// editSession is what the interactive editors (destconfig, smtproutes,
// bounceconfig) share: the prompter, the configuration store their edits
// go to as pending changes, and whether anything was changed.
type editSession struct {
	p       *prompter
	st      *configstore.Store
	changed bool
}

// remind tells the administrator, on leaving, that changes are pending.
func (s *editSession) remind() {
	if s.changed {
		s.p.say("\n%s", commitReminder)
	}
}

// working returns the working configuration (pending, else live) raw and
// validated (with defaults applied).
func working(st *configstore.Store) (raw, eff *config.Config, err error) {
	raw, _, err = st.Working()
	if err != nil {
		return nil, nil, err
	}
	data, err := config.Marshal(raw)
	if err != nil {
		return nil, nil, err
	}
	eff, err = config.Parse(data, "working configuration")
	if err != nil {
		return nil, nil, err
	}
	return raw, eff, nil
}

// ---- prompting ----

// errEOF ends an interactive session (the input was closed).
var errEOF = errors.New("end of input")

// prompter asks the appliance-style questions: "question [default]> ",
// re-asking with a reason until the answer is valid.
type prompter struct {
	in  *bufio.Reader
	out io.Writer
}

func newPrompter(in io.Reader, out io.Writer) *prompter {
	return &prompter{in: bufio.NewReader(in), out: out}
}

func (p *prompter) say(format string, args ...any) { fmt.Fprintf(p.out, format+"\n", args...) }

// ask prints "q [def]> " and returns the trimmed answer, or def when the
// answer is empty.
func (p *prompter) ask(q, def string) (string, error) {
	if q != "" {
		fmt.Fprintf(p.out, "%s\n", q)
	}
	fmt.Fprintf(p.out, "[%s]> ", def)
	line, err := p.in.ReadString('\n')
	if err != nil && line == "" {
		fmt.Fprintln(p.out)
		return "", errEOF
	}
	line = strings.TrimSpace(line)
	if line == "" {
		return def, nil
	}
	return line, nil
}

// askInline is ask with the default on the question's line, as the
// appliance prints yes/no and number questions.
func (p *prompter) askInline(q, def string) (string, error) {
	fmt.Fprintf(p.out, "%s [%s]> ", q, def)
	line, err := p.in.ReadString('\n')
	if err != nil && line == "" {
		fmt.Fprintln(p.out)
		return "", errEOF
	}
	line = strings.TrimSpace(line)
	if line == "" {
		return def, nil
	}
	return line, nil
}

func (p *prompter) yesNo(q string, def bool) (bool, error) {
	d := "N"
	if def {
		d = "Y"
	}
	for {
		a, err := p.askInline(q, d)
		if err != nil {
			return false, err
		}
		switch strings.ToLower(a) {
		case "y", "yes":
			return true, nil
		case "n", "no":
			return false, nil
		}
		p.say("Please answer Y or N.")
	}
}

func (p *prompter) number(q string, def, lo, hi int) (int, error) {
	for {
		a, err := p.askInline(q, strconv.Itoa(def))
		if err != nil {
			return 0, err
		}
		n, err := strconv.Atoi(a)
		switch {
		case err != nil:
			p.say("%q is not a number. The value must be between %d and %d.", a, lo, hi)
		case n < lo || n > hi:
			p.say("The value must be between %d and %d.", lo, hi)
		default:
			return n, nil
		}
	}
}

// choose shows numbered options and returns the 0-based index chosen; def
// is 0-based too. inline prints the options on one line ("1. Off  2. On").
// check, when set, refuses an otherwise valid choice with a reason.
func (p *prompter) choose(q string, opts []string, def int, inline bool, check func(int) string) (int, error) {
	for {
		p.say("%s", q)
		if inline {
			var parts []string
			for i, o := range opts {
				parts = append(parts, fmt.Sprintf("%d. %s", i+1, o))
			}
			p.say("%s", strings.Join(parts, "  "))
		} else {
			for i, o := range opts {
				p.say("%d. %s", i+1, o)
			}
		}
		a, err := p.ask("", strconv.Itoa(def+1))
		if err != nil {
			return 0, err
		}
		n, err := strconv.Atoi(a)
		if err != nil || n < 1 || n > len(opts) {
			p.say("The value must be between 1 and %d.", len(opts))
			continue
		}
		if check != nil {
			if why := check(n - 1); why != "" {
				p.say("%s", why)
				continue
			}
		}
		return n - 1, nil
	}
}

// text asks for a free-form answer, re-asking while check gives a reason.
func (p *prompter) text(q, def string, check func(string) string) (string, error) {
	for {
		a, err := p.ask(q, def)
		if err != nil {
			return "", err
		}
		if check != nil {
			if why := check(a); why != "" {
				p.say("%s", why)
				continue
			}
		}
		return a, nil
	}
}

// ---- labels ----

var (
	tlsLabels  = []string{"No", "Preferred", "Required", "Preferred (Verify)", "Required (Verify)", "Required - Verify Hosted Domains"}
	daneLabels = []string{"No", "Opportunistic", "Mandatory"}
	ipLabels   = []string{"Prefer IPv4", "Prefer IPv6", "Require IPv4", "Require IPv6"}
	scopeOpts  = []string{"One limit applies to the entire domain", "Separate limit for each mail exchanger IP address"}
	applyOpts  = []string{"System Wide", "Per Virtual Gateway(tm)"}
)

func indexOf(list []string, v string) int {
	for i, s := range list {
		if s == v {
			return i
		}
	}
	return 0
}

func onOff(b bool) string {
	if b {
		return "On"
	}
	return "Off"
}

func ptrTo[T any](v T) *T { return &v }

// ---- the command ----

const destconfigUsage = `usage: outpost destconfig                          (interactive menu)
       outpost destconfig new|edit DOMAIN [flags]
       outpost destconfig default [flags]
       outpost destconfig delete DOMAIN
       outpost destconfig list [--json]
       outpost destconfig detail DOMAIN|DEFAULT|ALL [--json]
       outpost destconfig clear
       outpost destconfig import FILE            (- for standard input)
       outpost destconfig export FILE            (- for standard output)
       outpost destconfig setup [--client-cert CERT,KEY|none] [--tls-alert on|off] [--tls-alert-to ADDR]
flags (the value inherit removes the setting, so the Default entry's applies):
  --tls none|preferred|required|preferred-verify|required-verify|required-verify-hosted
  --mta-sts on|off   --dane none|opportunistic|mandatory
  --max-concurrency N (1-1000)   --max-messages-per-connection N (1-1000)
  --recipient-limit N/MINUTES (N 0-1000000000, MINUTES 1-60) | none
  --limits-scope domain|mx-ip    --limits-apply system|virtual-gateway
  --ip-preference prefer-ipv4|prefer-ipv6|require-ipv4|require-ipv6
  --bounce-verification on|off   --bounce-profile NAME
`

func destconfigCmd(cfgPath string, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	st, _, err := openStore(cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "outpost:", err)
		return 1
	}
	if len(args) == 0 {
		s := &destSession{editSession{p: newPrompter(stdin, stdout), st: st}}
		if err := s.run(); err != nil {
			fmt.Fprintln(stderr, "outpost:", err)
			return 1
		}
		return 0
	}
	code, err := destconfigBatch(st, args, stdout)
	if err != nil {
		fmt.Fprintln(stderr, "outpost: destconfig:", err)
		if code == 2 {
			fmt.Fprint(stderr, destconfigUsage)
		}
	}
	return code
}

// usageError marks an error in the command line (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var u usageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}

func normDomain(d string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
}

// checkNewDomain gives the reason a name cannot be a new destination, or "".
func checkNewDomain(raw *config.Config, d string) string {
	if d == "" {
		return "Please enter a domain."
	}
	if d == "default" || d == "all" {
		return fmt.Sprintf("%q is reserved; use DEFAULT to change the default entry.", d)
	}
	n := strings.TrimPrefix(d, ".")
	if n == "" || strings.HasPrefix(n, ".") || strings.ContainsAny(n, " \t@/\\:[]=,") || strings.Contains(n, "..") {
		return fmt.Sprintf("%q is not a valid domain (use example.com, or .example.com for its subdomains).", d)
	}
	if _, ok := raw.Destinations[d]; ok {
		return fmt.Sprintf("The destination %q already exists.", d)
	}
	return ""
}

func notFound(d string) string { return fmt.Sprintf("%q was not found in the destination table.", d) }

func destconfigBatch(st *configstore.Store, args []string, stdout io.Writer) (int, error) {
	op, args := strings.ToLower(args[0]), args[1:]
	raw, eff, err := working(st)
	if err != nil {
		return 1, err
	}
	changed := func() (int, error) {
		fmt.Fprintln(stdout, commitReminder)
		return 0, nil
	}
	switch op {
	case "new", "edit", "default":
		var dom string
		var pos []string
		fs, apply := destFlags()
		if err := parseInterleaved(fs, args, &pos); err != nil {
			return 2, usageError{err.Error()}
		}
		if op == "default" {
			if len(pos) != 0 {
				return 2, usagef("default takes no domain")
			}
			dom = "default"
		} else {
			if len(pos) != 1 {
				return 2, usagef("%s needs one DOMAIN", op)
			}
			dom = normDomain(pos[0])
			if op == "new" {
				if why := checkNewDomain(raw, dom); why != "" {
					return 1, errors.New(why)
				}
			} else if raw.Destinations[dom] == nil || dom == "default" {
				return 1, errors.New(notFound(dom))
			}
		}
		err := st.Edit(func(raw *config.Config) error {
			if raw.Destinations == nil {
				raw.Destinations = map[string]*config.Destination{}
			}
			d := raw.Destinations[dom]
			if d == nil {
				d = &config.Destination{}
				raw.Destinations[dom] = d
			}
			return apply(d)
		})
		if err != nil {
			return exitCode(err), err
		}
		return changed()
	case "delete":
		if len(args) != 1 {
			return 2, usagef("delete needs one DOMAIN")
		}
		dom := normDomain(args[0])
		if dom == "default" {
			return 1, errors.New("the default entry cannot be deleted")
		}
		if raw.Destinations[dom] == nil {
			return 1, errors.New(notFound(dom))
		}
		if err := st.Edit(func(raw *config.Config) error { delete(raw.Destinations, dom); return nil }); err != nil {
			return 1, err
		}
		return changed()
	case "clear":
		if err := st.Edit(clearDestinations); err != nil {
			return 1, err
		}
		return changed()
	case "list":
		asJSON, err := onlyJSONFlag(args, 0)
		if err != nil {
			return 2, err
		}
		if asJSON {
			return 0, writeJSON(stdout, destRecords(raw, eff, eff.DestinationNames()))
		}
		listDestinations(stdout, raw, eff)
		return 0, nil
	case "detail":
		asJSON, err := onlyJSONFlag(args, 1)
		if err != nil {
			return 2, err
		}
		var target string
		for _, a := range args {
			if a != "--json" && a != "-json" {
				target = a
			}
		}
		names, err := detailNames(raw, target)
		if err != nil {
			return 1, err
		}
		if asJSON {
			return 0, writeJSON(stdout, destRecords(raw, eff, names))
		}
		for _, n := range names {
			detailDestination(stdout, raw, eff, n)
		}
		return 0, nil
	case "import":
		if len(args) != 1 {
			return 2, usagef("import needs one FILE")
		}
		if err := importDestinations(st, args[0], os.Stdin); err != nil {
			return 1, err
		}
		return changed()
	case "export":
		if len(args) != 1 {
			return 2, usagef("export needs one FILE")
		}
		if err := exportDestinations(raw, eff, args[0], stdout); err != nil {
			return 1, err
		}
		if args[0] != "-" {
			fmt.Fprintf(stdout, "The destination table was exported to %s.\n", args[0])
		}
		return 0, nil
	case "setup":
		return destSetupBatch(st, args, stdout)
	}
	return 2, usagef("No destination control table action for %q.", op)
}

func clearDestinations(raw *config.Config) error {
	for d := range raw.Destinations {
		if d != "default" {
			delete(raw.Destinations, d)
		}
	}
	return nil
}

func onlyJSONFlag(args []string, positional int) (bool, error) {
	asJSON, n := false, 0
	for _, a := range args {
		if a == "--json" || a == "-json" {
			asJSON = true
		} else {
			n++
		}
	}
	if n != positional {
		return false, usagef("unexpected arguments %q", args)
	}
	return asJSON, nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// detailNames resolves DETAIL's argument: a domain, DEFAULT or ALL.
func detailNames(raw *config.Config, target string) ([]string, error) {
	switch strings.ToUpper(target) {
	case "":
		return nil, usagef("detail needs DOMAIN, DEFAULT or ALL")
	case "ALL":
		names := sortedDomains(raw)
		return append(names, "default"), nil
	case "DEFAULT":
		return []string{"default"}, nil
	}
	d := normDomain(target)
	if raw.Destinations[d] == nil {
		return nil, errors.New(notFound(d))
	}
	return []string{d}, nil
}

func sortedDomains(raw *config.Config) []string {
	var names []string
	for n := range raw.Destinations {
		if n != "default" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// parseInterleaved parses flags that may come before or after the
// positional arguments, which are appended to pos.
func parseInterleaved(fs *flag.FlagSet, args []string, pos *[]string) error {
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			return nil
		}
		*pos = append(*pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// destFlags defines the new/edit/default flags; apply sets those given on
// an entry ("inherit" unsets a field).
func destFlags() (*flag.FlagSet, func(*config.Destination) error) {
	fs := flag.NewFlagSet("destconfig", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	names := []string{"tls", "mta-sts", "dane", "max-concurrency", "max-messages-per-connection", "recipient-limit",
		"limits-scope", "limits-apply", "ip-preference", "bounce-verification", "bounce-profile"}
	vals := map[string]*string{}
	for _, n := range names {
		vals[n] = fs.String(n, "", "")
	}
	apply := func(d *config.Destination) error {
		var errs []error
		fs.Visit(func(f *flag.Flag) {
			if err := setDestField(d, f.Name, *vals[f.Name]); err != nil {
				errs = append(errs, err)
			}
		})
		return errors.Join(errs...)
	}
	return fs, apply
}

func enumFlag(name, v string, allowed []string) (*string, error) {
	for _, a := range allowed {
		if v == a {
			return &v, nil
		}
	}
	return nil, usagef("--%s %q: want one of %s (or inherit)", name, v, strings.Join(allowed, ", "))
}

func boolFlag(name, v string) (*bool, error) {
	switch strings.ToLower(v) {
	case "on", "yes", "true", "1":
		return ptrTo(true), nil
	case "off", "no", "false", "0":
		return ptrTo(false), nil
	}
	return nil, usagef("--%s %q: want on or off (or inherit)", name, v)
}

func intFlag(name, v string) (*int, error) {
	n, err := strconv.Atoi(v)
	if err != nil {
		return nil, usagef("--%s %q: not a number", name, v)
	}
	return &n, nil
}

// setDestField applies one command-line setting; ranges are checked by
// the configuration's validation when the edit is stored.
func setDestField(d *config.Destination, name, v string) error {
	v = strings.TrimSpace(v)
	inherit := strings.EqualFold(v, "inherit")
	var err error
	switch name {
	case "tls":
		if inherit {
			d.TLS = nil
			return nil
		}
		m, perr := tlspolicy.ParseMode(v)
		if perr != nil {
			return usagef("--tls: %v", perr)
		}
		d.TLS = ptrTo(config.TLSMode(m))
	case "mta-sts":
		if inherit {
			d.MTASTS = nil
			return nil
		}
		d.MTASTS, err = boolFlag(name, v)
	case "bounce-verification":
		if inherit {
			d.BounceVerification = nil
			return nil
		}
		d.BounceVerification, err = boolFlag(name, v)
	case "dane":
		if inherit {
			d.DANE = nil
			return nil
		}
		if strings.EqualFold(v, "no") || strings.EqualFold(v, "off") {
			v = "none"
		}
		d.DANE, err = enumFlag(name, strings.ToLower(v), config.DANEModes)
	case "max-concurrency":
		if inherit {
			d.MaxConcurrency = nil
			return nil
		}
		d.MaxConcurrency, err = intFlag(name, v)
	case "max-messages-per-connection":
		if inherit {
			d.MaxMessagesPerConnection = nil
			return nil
		}
		d.MaxMessagesPerConnection, err = intFlag(name, v)
	case "recipient-limit":
		if inherit {
			d.RecipientLimit = nil
			return nil
		}
		if strings.EqualFold(v, "none") || v == "0" {
			d.RecipientLimit = &config.RecipientLimit{}
			return nil
		}
		c, m, ok := strings.Cut(v, "/")
		cn, err1 := strconv.Atoi(c)
		mn, err2 := strconv.Atoi(m)
		if !ok || err1 != nil || err2 != nil {
			return usagef("--recipient-limit %q: want COUNT/MINUTES (e.g. 500/60) or none", v)
		}
		d.RecipientLimit = &config.RecipientLimit{Count: cn, Minutes: mn}
	case "limits-scope":
		if inherit {
			d.LimitsScope = nil
			return nil
		}
		d.LimitsScope, err = enumFlag(name, strings.ToLower(v), config.LimitScopes)
	case "limits-apply":
		if inherit {
			d.LimitsApply = nil
			return nil
		}
		d.LimitsApply, err = enumFlag(name, strings.ToLower(v), config.LimitApplies)
	case "ip-preference":
		if inherit {
			d.IPPreference = nil
			return nil
		}
		d.IPPreference, err = enumFlag(name, strings.ToLower(v), config.IPPreferences)
	case "bounce-profile":
		if inherit {
			d.BounceProfile = nil
			return nil
		}
		if v == "" {
			return usagef("--bounce-profile: empty name")
		}
		d.BounceProfile = &v
	}
	return err
}

func importDestinations(st *configstore.Store, file string, stdin io.Reader) error {
	var r io.Reader = stdin
	name := "standard input"
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		defer f.Close()
		r, name = f, file
	}
	tab, err := destini.Read(r, name)
	if err != nil {
		return fmt.Errorf("import failed: %w", err)
	}
	err = st.Edit(func(raw *config.Config) error {
		raw.Destinations = map[string]*config.Destination(tab)
		return nil
	})
	if err != nil {
		return fmt.Errorf("import failed: %w", err)
	}
	return nil
}

func exportDestinations(raw, eff *config.Config, file string, stdout io.Writer) error {
	if file == "-" {
		return destini.Write(stdout, destini.Table(raw.Destinations), eff.Destinations["default"])
	}
	f, err := os.Create(file)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := destini.Write(f, destini.Table(raw.Destinations), eff.Destinations["default"]); err != nil {
		f.Close()
		return fmt.Errorf("export: %w", err)
	}
	return f.Close()
}

func destSetupBatch(st *configstore.Store, args []string, stdout io.Writer) (int, error) {
	fs := flag.NewFlagSet("setup", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cert := fs.String("client-cert", "", "")
	alert := fs.String("tls-alert", "", "")
	to := fs.String("tls-alert-to", "", "")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return 2, usagef("setup [--client-cert CERT,KEY|none] [--tls-alert on|off] [--tls-alert-to ADDR]")
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if len(given) == 0 {
		return 2, usagef("setup needs at least one of --client-cert, --tls-alert, --tls-alert-to")
	}
	err := st.Edit(func(raw *config.Config) error {
		if given["client-cert"] {
			if strings.EqualFold(*cert, "none") {
				raw.TLS.ClientCert = nil
			} else {
				c, k, ok := strings.Cut(*cert, ",")
				if !ok {
					return usagef("--client-cert %q: want CERT_FILE,KEY_FILE or none", *cert)
				}
				raw.TLS.ClientCert = &config.Cert{CertFile: c, KeyFile: k}
			}
		}
		if given["tls-alert"] {
			b, err := boolFlag("tls-alert", *alert)
			if err != nil {
				return err
			}
			raw.TLS.Alert.Enabled = *b
		}
		if given["tls-alert-to"] {
			raw.TLS.Alert.To = *to
		}
		return nil
	})
	if err != nil {
		return exitCode(err), err
	}
	fmt.Fprintln(stdout, commitReminder)
	return 0, nil
}

// ---- display ----

// destRecord is one entry as list --json and detail --json show it: the
// effective values, and which of them the entry inherits from the default.
type destRecord struct {
	Domain                   string         `json:"domain"`
	IPPreference             string         `json:"ip_preference"`
	MaxConcurrency           int            `json:"max_concurrency"`
	MaxMessagesPerConnection int            `json:"max_messages_per_connection"`
	RecipientLimit           recipientLimit `json:"recipient_limit"`
	LimitsScope              string         `json:"limits_scope"`
	LimitsApply              string         `json:"limits_apply"`
	TLS                      string         `json:"tls"`
	DANE                     string         `json:"dane"`
	MTASTS                   bool           `json:"mta_sts"`
	BounceVerification       bool           `json:"bounce_verification"`
	BounceProfile            string         `json:"bounce_profile"`
	Inherited                []string       `json:"inherited,omitempty"`
	SMTPRoute                string         `json:"smtp_route,omitempty"`
}

type recipientLimit struct {
	Count   int `json:"count"`
	Minutes int `json:"minutes,omitempty"`
}

func destRecords(raw, eff *config.Config, names []string) []destRecord {
	out := []destRecord{}
	for _, n := range names {
		p := eff.Profile(n) // "default" is an entry's name too
		r := destRecord{
			Domain: n, IPPreference: p.IPPreference, MaxConcurrency: p.MaxConcurrency,
			MaxMessagesPerConnection: p.MaxMessagesPerConnection,
			RecipientLimit:           recipientLimit{p.RecipientLimit.Count, p.RecipientLimit.Minutes},
			LimitsScope:              p.LimitsScope, LimitsApply: p.LimitsApply, TLS: p.TLS.String(), DANE: p.DANE,
			MTASTS: p.MTASTS, BounceVerification: p.BounceVerification, BounceProfile: p.BounceProfile,
		}
		if n != "default" {
			r.Inherited = inherited(raw.Destinations[n])
			if _, ok := raw.SMTPRoutes[n]; ok {
				r.SMTPRoute = n
			}
		}
		out = append(out, r)
	}
	return out
}

// inherited lists the YAML names of the fields an entry leaves unset.
func inherited(d *config.Destination) []string {
	if d == nil {
		d = &config.Destination{}
	}
	var out []string
	add := func(unset bool, n string) {
		if unset {
			out = append(out, n)
		}
	}
	add(d.IPPreference == nil, "ip_preference")
	add(d.MaxConcurrency == nil, "max_concurrency")
	add(d.MaxMessagesPerConnection == nil, "max_messages_per_connection")
	add(d.RecipientLimit == nil, "recipient_limit")
	add(d.LimitsScope == nil, "limits_scope")
	add(d.LimitsApply == nil, "limits_apply")
	add(d.TLS == nil, "tls")
	add(d.DANE == nil, "dane")
	add(d.MTASTS == nil, "mta_sts")
	add(d.BounceVerification == nil, "bounce_verification")
	add(d.BounceProfile == nil, "bounce_profile")
	return out
}

func ipLabel(v string) string { return ipLabels[indexOf(config.IPPreferences, v)] }

func daneLabel(v string) string {
	return [...]string{"None", "Opportunistic", "Mandatory"}[indexOf(config.DANEModes, v)]
}

// listDestinations prints the LIST summary: one row per entry, "Default"
// where the entry inherits the default's setting, the default entry last.
func listDestinations(w io.Writer, raw, eff *config.Config) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "Domain\tRate Limiting\tTLS\tDANE\tMTA-STS\tBounce Verification\tBounce Profile\tIP preference")
	fmt.Fprintln(tw, "======\t=============\t===\t====\t=======\t===================\t==============\t=============")
	or := func(set bool, v string) string {
		if set {
			return v
		}
		return "Default"
	}
	for _, n := range sortedDomains(raw) {
		d := raw.Destinations[n]
		if d == nil {
			d = &config.Destination{}
		}
		rate := "Default"
		if d.MaxConcurrency != nil || d.MaxMessagesPerConnection != nil || d.RecipientLimit != nil || d.LimitsScope != nil || d.LimitsApply != nil {
			rate = "Custom"
		}
		var tls, dane, sts, bv, bp, ip string
		if d.TLS != nil {
			tls = tlsLabels[int(*d.TLS)]
		}
		if d.DANE != nil {
			dane = daneLabel(*d.DANE)
		}
		if d.MTASTS != nil {
			sts = onOff(*d.MTASTS)
			if *d.MTASTS && raw.SMTPRoutes[n] != nil {
				sts += " (routed: not enforced)"
			}
		}
		if d.BounceVerification != nil {
			bv = onOff(*d.BounceVerification)
		}
		if d.BounceProfile != nil {
			bp = *d.BounceProfile
		}
		if d.IPPreference != nil {
			ip = ipLabel(*d.IPPreference)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n, rate, or(d.TLS != nil, tls), or(d.DANE != nil, dane),
			or(d.MTASTS != nil, sts), or(d.BounceVerification != nil, bv), or(d.BounceProfile != nil, bp), or(d.IPPreference != nil, ip))
	}
	def := eff.Destinations["default"]
	fmt.Fprintf(tw, "(Default)\tOn\t%s\t%s\t%s\t%s\t%s\t%s\n", tlsLabels[int(*def.TLS)], daneLabel(*def.DANE),
		onOff(*def.MTASTS), onOff(*def.BounceVerification), *def.BounceProfile, ipLabel(*def.IPPreference))
	tw.Flush()
}

// detailDestination prints DETAIL for one entry: every effective value,
// marked "(Default)" where the entry inherits it.
func detailDestination(w io.Writer, raw, eff *config.Config, name string) {
	def := eff.Destinations["default"]
	d := raw.Destinations[name]
	title := name
	if name == "default" {
		d, title = def, "Default"
	}
	if d == nil {
		d = &config.Destination{}
	}
	mark := func(set bool) string {
		if set || name == "default" {
			return ""
		}
		return " (Default)"
	}
	rl := pickPtr(d.RecipientLimit, def.RecipientLimit)
	recip := "No limit"
	if rl.Count > 0 {
		recip = fmt.Sprintf("%d recipients per %d minutes", rl.Count, rl.Minutes)
	}
	sts := onOff(pickPtr(d.MTASTS, def.MTASTS)) + mark(d.MTASTS != nil)
	if raw.SMTPRoutes[name] != nil {
		sts += " — not enforced: MTA-STS is not enforced for domains that have SMTP Routes configured"
	}
	fmt.Fprintf(w, "\n%s\n", title)
	fmt.Fprintf(w, "    IP Sort Preference: %s%s\n", ipLabel(pickPtr(d.IPPreference, def.IPPreference)), mark(d.IPPreference != nil))
	fmt.Fprintf(w, "    Maximum concurrent connections: %d%s\n", pickPtr(d.MaxConcurrency, def.MaxConcurrency), mark(d.MaxConcurrency != nil))
	fmt.Fprintf(w, "    Maximum messages per connection: %d%s\n", pickPtr(d.MaxMessagesPerConnection, def.MaxMessagesPerConnection), mark(d.MaxMessagesPerConnection != nil))
	fmt.Fprintf(w, "    Recipient limit: %s%s\n", recip, mark(d.RecipientLimit != nil))
	fmt.Fprintf(w, "    Limits apply to: %s%s\n", scopeOpts[indexOf(config.LimitScopes, pickPtr(d.LimitsScope, def.LimitsScope))], mark(d.LimitsScope != nil))
	fmt.Fprintf(w, "    Limits enforced: %s%s\n", applyOpts[indexOf(config.LimitApplies, pickPtr(d.LimitsApply, def.LimitsApply))], mark(d.LimitsApply != nil))
	fmt.Fprintf(w, "    TLS: %s%s\n", tlsLabels[int(pickPtr(d.TLS, def.TLS))], mark(d.TLS != nil))
	fmt.Fprintf(w, "    DANE: %s%s\n", daneLabel(pickPtr(d.DANE, def.DANE)), mark(d.DANE != nil))
	fmt.Fprintf(w, "    MTA-STS: %s\n", sts)
	fmt.Fprintf(w, "    Bounce Verification: %s%s\n", onOff(pickPtr(d.BounceVerification, def.BounceVerification)), mark(d.BounceVerification != nil))
	fmt.Fprintf(w, "    Bounce Profile: %s%s\n", pickPtr(d.BounceProfile, def.BounceProfile), mark(d.BounceProfile != nil))
}

func pickPtr[T any](v, def *T) T {
	if v != nil {
		return *v
	}
	if def != nil {
		return *def
	}
	var zero T
	return zero
}

// ---- the interactive session ----

type destSession struct{ editSession }

func (s *destSession) run() error {
	defer s.remind()
	for {
		raw, eff, err := working(s.st)
		if err != nil {
			return err
		}
		n := len(sortedDomains(raw))
		s.p.say("\nThere are currently %d entries configured.\n", n)
		s.p.say("Choose the operation you want to perform:")
		for _, l := range []string{
			"- NEW - Create a new destination.",
			"- EDIT - Modify a destination.",
			"- DELETE - Remove a destination.",
			"- DEFAULT - Change the default.",
			"- LIST - Display a summary list of all destinations.",
			"- DETAIL - Display details for one destination or all destinations.",
			"- CLEAR - Remove all destinations.",
			"- IMPORT - Import tables from a file.",
			"- EXPORT - Export tables to a file.",
			"- SETUP - Change global settings.",
		} {
			s.p.say("%s", l)
		}
		op, err := s.p.ask("", "")
		if errors.Is(err, errEOF) || op == "" {
			return nil
		}
		err = s.do(strings.ToUpper(op), raw, eff)
		if errors.Is(err, errEOF) {
			return nil
		}
		if err != nil {
			s.p.say("Error: %v", err)
		}
	}
}

// edit stores a change as pending and remembers to remind about commit.
func (s *destSession) edit(fn func(*config.Config) error) error {
	if err := s.st.Edit(fn); err != nil {
		return err
	}
	s.changed = true
	return nil
}

func (s *destSession) do(op string, raw, eff *config.Config) error {
	p := s.p
	switch op {
	case "NEW":
		dom, err := p.text("Enter the domain you wish to configure.", "", func(a string) string {
			if a == "" {
				return "" // back to the menu
			}
			return checkNewDomain(raw, normDomain(a))
		})
		if err != nil || dom == "" {
			return err
		}
		dom = normDomain(dom)
		return s.askAndSave(dom, &config.Destination{}, raw, eff)
	case "EDIT", "DELETE":
		verb := strings.ToLower(op)
		if len(sortedDomains(raw)) == 0 {
			p.say("There are no destinations configured.")
			return nil
		}
		dom, err := p.text(fmt.Sprintf("Enter the domain you wish to %s.", verb), "", func(a string) string {
			d := normDomain(a)
			if d != "" && (d == "default" || raw.Destinations[d] == nil) {
				return notFound(a)
			}
			return ""
		})
		if err != nil || dom == "" {
			return err
		}
		dom = normDomain(dom)
		if op == "DELETE" {
			if err := s.edit(func(raw *config.Config) error { delete(raw.Destinations, dom); return nil }); err != nil {
				return err
			}
			p.say("The destination %q was deleted.", dom)
			return nil
		}
		return s.askAndSave(dom, raw.Destinations[dom], raw, eff)
	case "DEFAULT":
		cur := raw.Destinations["default"]
		if cur == nil {
			cur = &config.Destination{}
		}
		return s.askAndSave("default", cur, raw, eff)
	case "LIST":
		listDestinations(p.out, raw, eff)
		return nil
	case "DETAIL":
		var names []string
		_, err := p.text("Enter the domain you wish to view, DEFAULT, or ALL.", "ALL", func(a string) string {
			var err error
			names, err = detailNames(raw, a)
			if err != nil {
				return notFound(a)
			}
			return ""
		})
		if err != nil {
			return err
		}
		for _, n := range names {
			detailDestination(p.out, raw, eff, n)
		}
		return nil
	case "CLEAR":
		ok, err := p.yesNo("Are you sure you want to remove all destinations (the default entry stays)?", false)
		if err != nil || !ok {
			return err
		}
		if err := s.edit(clearDestinations); err != nil {
			return err
		}
		p.say("All destinations were removed.")
		return nil
	case "IMPORT":
		file, err := p.text("Enter the name of the file to import.", "", func(a string) string {
			if a == "" {
				return "Please enter a file name."
			}
			return ""
		})
		if err != nil {
			return err
		}
		if file == "-" {
			return errors.New("enter a file name")
		}
		if err := importDestinations(s.st, file, nil); err != nil {
			return err
		}
		s.changed = true
		p.say("The destination table was imported from %s.", file)
		return nil
	case "EXPORT":
		file, err := p.text("Enter a name for the exported file.", "destconfig.ini", nil)
		if err != nil {
			return err
		}
		if file == "-" {
			return errors.New("enter a file name")
		}
		if err := exportDestinations(raw, eff, file, nil); err != nil {
			return err
		}
		p.say("The destination table was exported to %s.", file)
		return nil
	case "SETUP":
		return s.setup(raw)
	}
	p.say("No destination control table action for %q.", op)
	return nil
}

// askAndSave asks the entry's questions and stores the answers as pending.
func (s *destSession) askAndSave(name string, cur *config.Destination, raw, eff *config.Config) error {
	d, newProfile, err := s.askEntry(name, cur, raw, eff)
	if err != nil {
		return err
	}
	err = s.edit(func(raw *config.Config) error {
		if raw.Destinations == nil {
			raw.Destinations = map[string]*config.Destination{}
		}
		raw.Destinations[name] = d
		if newProfile != "" {
			if raw.BounceProfiles == nil {
				raw.BounceProfiles = map[string]*config.Bounce{}
			}
			raw.BounceProfiles[newProfile] = &config.Bounce{}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w\nThe destination was not saved.", err)
	}
	if newProfile != "" {
		s.p.say("The bounce profile %q was created with the Default profile's settings; change them with bounceconfig.", newProfile)
	}
	return nil
}

// askEntry asks the appliance's questions in its order. For a domain
// entry each group is gated by "Do you wish to ...?", and a "no" leaves
// the field unset (the Default entry's value applies); the default entry
// is asked every value directly. Answers default to the entry's current
// values, else the default entry's.
func (s *destSession) askEntry(name string, cur *config.Destination, raw, eff *config.Config) (*config.Destination, string, error) {
	p := s.p
	isDef := name == "default"
	def := eff.Destinations["default"]
	out := &config.Destination{}
	gate := func(q string, wasSet bool) (bool, error) {
		if isDef {
			return true, nil
		}
		return p.yesNo(q, wasSet)
	}
	var err error
	var yes bool

	// Concurrency.
	if isDef {
		n, err := p.number("Enter the default maximum concurrency limit.", pickPtr(cur.MaxConcurrency, def.MaxConcurrency), 1, 1000)
		if err != nil {
			return nil, "", err
		}
		out.MaxConcurrency = &n
	} else {
		if yes, err = gate(fmt.Sprintf("Do you wish to configure a concurrency limit for %s?", name), cur.MaxConcurrency != nil); err != nil {
			return nil, "", err
		}
		if yes {
			n, err := p.number(fmt.Sprintf("Enter the max concurrency limit for %q.", name), pickPtr(cur.MaxConcurrency, def.MaxConcurrency), 1, 1000)
			if err != nil {
				return nil, "", err
			}
			out.MaxConcurrency = &n
		}
	}

	// Recipient limit.
	q := fmt.Sprintf("Do you wish to apply a recipient limit for %s?", name)
	if isDef {
		q = "Do you wish to apply a default recipient limit?"
	}
	rl := pickPtr(cur.RecipientLimit, nil)
	if yes, err = p.yesNo(q, rl.Count > 0); err != nil {
		return nil, "", err
	}
	if yes {
		m := rl.Minutes
		if m == 0 {
			m = 60
		}
		minutes, err := p.number(fmt.Sprintf("Enter the amount of time (in minutes) over which to measure the recipient limit for %q.", name), m, 1, 60)
		if err != nil {
			return nil, "", err
		}
		c := rl.Count
		if c == 0 {
			c = 500
		}
		count, err := p.number(fmt.Sprintf("Enter the max number of recipients per %d minutes for %q.", minutes, name), c, 1, 1000000000)
		if err != nil {
			return nil, "", err
		}
		out.RecipientLimit = &config.RecipientLimit{Count: count, Minutes: minutes}
	} else if isDef {
		out.RecipientLimit = &config.RecipientLimit{}
	}

	// How the limits apply: asked for the default, and for a domain that
	// sets a limit.
	if isDef || out.MaxConcurrency != nil || out.RecipientLimit != nil {
		i, err := p.choose(fmt.Sprintf("Select how you want to apply the limits for %s:", name), scopeOpts,
			indexOf(config.LimitScopes, pickPtr(cur.LimitsScope, def.LimitsScope)), false, nil)
		if err != nil {
			return nil, "", err
		}
		out.LimitsScope = ptrTo(config.LimitScopes[i])
		i, err = p.choose("Select how the limits will be enforced:", applyOpts,
			indexOf(config.LimitApplies, pickPtr(cur.LimitsApply, def.LimitsApply)), false, nil)
		if err != nil {
			return nil, "", err
		}
		out.LimitsApply = ptrTo(config.LimitApplies[i])
	}

	// Messages per connection.
	if yes, err = gate("Do you wish to apply a messages-per-connection limit to this domain?", cur.MaxMessagesPerConnection != nil); err != nil {
		return nil, "", err
	}
	if yes {
		q := fmt.Sprintf("Enter the max number of messages per connection for %q.", name)
		if isDef {
			q = "Enter the maximum number of messages per connection."
		}
		n, err := p.number(q, pickPtr(cur.MaxMessagesPerConnection, def.MaxMessagesPerConnection), 1, 1000)
		if err != nil {
			return nil, "", err
		}
		out.MaxMessagesPerConnection = &n
	}

	// TLS.
	if yes, err = gate("Do you wish to apply a specific TLS setting for this domain?", cur.TLS != nil); err != nil {
		return nil, "", err
	}
	if yes {
		i, err := p.choose("Do you want to use TLS support?", tlsLabels, int(pickPtr(cur.TLS, def.TLS)), false, nil)
		if err != nil {
			return nil, "", err
		}
		out.TLS = ptrTo(config.TLSMode(tlspolicy.Mode(i)))
	}
	effTLS := tlspolicy.Mode(pickPtr(out.TLS, def.TLS))
	needsTLS := func(what string) func(int) string {
		return func(i int) string {
			if i > 0 && effTLS == tlspolicy.None {
				return fmt.Sprintf("%s requires TLS, but the TLS setting for %s is No.", what, name)
			}
			return ""
		}
	}

	// DANE.
	if yes, err = gate("Do you wish to configure DANE Support?", cur.DANE != nil); err != nil {
		return nil, "", err
	}
	if yes {
		i, err := p.choose("Choose a DANE option:", daneLabels, indexOf(config.DANEModes, pickPtr(cur.DANE, def.DANE)), false, needsTLS("DANE"))
		if err != nil {
			return nil, "", err
		}
		out.DANE = ptrTo(config.DANEModes[i])
	} else if effTLS == tlspolicy.None && *def.DANE != "none" {
		out.DANE = ptrTo("none")
	}

	// MTA-STS.
	if yes, err = gate("Do you wish to configure MTA STS Support?", cur.MTASTS != nil); err != nil {
		return nil, "", err
	}
	if yes {
		p.say("Note: MTA-STS is not enforced for domains that have SMTP Routes configured.")
		if !isDef && raw.SMTPRoutes[name] != nil {
			p.say("%s has an SMTP route: its MTA-STS setting has no effect while the route exists.", name)
		}
		b := pickPtr(cur.MTASTS, def.MTASTS)
		i, err := p.choose("Choose an MTA STS option:", []string{"Off", "On"}, map[bool]int{false: 0, true: 1}[b], true, needsTLS("MTA-STS"))
		if err != nil {
			return nil, "", err
		}
		out.MTASTS = ptrTo(i == 1)
	} else if effTLS == tlspolicy.None && *def.MTASTS {
		out.MTASTS = ptrTo(false)
	}

	// Bounce verification.
	if yes, err = gate("Do you wish to apply a specific bounce verification address tagging setting for this domain?", cur.BounceVerification != nil); err != nil {
		return nil, "", err
	}
	if yes {
		b, err := p.yesNo("Perform bounce verification address tagging?", pickPtr(cur.BounceVerification, def.BounceVerification))
		if err != nil {
			return nil, "", err
		}
		out.BounceVerification = &b
	}

	// Bounce profile.
	newProfile := ""
	if yes, err = gate("Do you wish to apply a specific bounce profile to this domain?", cur.BounceProfile != nil); err != nil {
		return nil, "", err
	}
	if yes {
		profiles := append([]string{"Default"}, sortedKeys(raw.BounceProfiles)...)
		opts := append(append([]string{}, profiles...), "New Profile")
		i, err := p.choose("Please choose a bounce profile to apply:", opts, indexOf(profiles, pickPtr(cur.BounceProfile, def.BounceProfile)), false, nil)
		if err != nil {
			return nil, "", err
		}
		if i < len(profiles) {
			out.BounceProfile = ptrTo(profiles[i])
		} else {
			n, err := p.text("Please enter the name of a profile:", "", func(a string) string { return checkNewProfile(raw, a) })
			if err != nil {
				return nil, "", err
			}
			newProfile = n
			out.BounceProfile = &n
		}
	}

	// IP sort preference.
	if yes, err = gate("Do you wish to apply a specific IP sort preference for this domain?", cur.IPPreference != nil); err != nil {
		return nil, "", err
	}
	if yes {
		i, err := p.choose("Choose how to sort IP addresses within an MX preference level:", ipLabels,
			indexOf(config.IPPreferences, pickPtr(cur.IPPreference, def.IPPreference)), false, nil)
		if err != nil {
			return nil, "", err
		}
		out.IPPreference = ptrTo(config.IPPreferences[i])
	}
	return out, newProfile, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// setup edits the global settings: the outbound client certificate and
// the alert on failed required-TLS deliveries.
func (s *destSession) setup(raw *config.Config) error {
	p := s.p
	cur := raw.TLS
	exists := func(a string) string {
		if a == "" {
			return "Please enter a file name."
		}
		if _, err := os.Stat(a); err != nil {
			return fmt.Sprintf("The file %s cannot be read: %v", a, errors.Unwrap(err))
		}
		return ""
	}
	useCert, err := p.yesNo("Do you wish to present a client certificate on outbound TLS connections?", cur.ClientCert != nil)
	if err != nil {
		return err
	}
	var cert *config.Cert
	if useCert {
		c := pickPtr(cur.ClientCert, nil)
		cf, err := p.text("Please choose the certificate: enter the certificate file (PEM).", c.CertFile, exists)
		if err != nil {
			return err
		}
		kf, err := p.text("Enter the private key file (PEM).", c.KeyFile, exists)
		if err != nil {
			return err
		}
		cert = &config.Cert{CertFile: cf, KeyFile: kf}
	}
	alert, err := p.yesNo("Do you want to send an alert when a required TLS connection fails?", cur.Alert.Enabled)
	if err != nil {
		return err
	}
	to := cur.Alert.To
	if alert {
		to, err = p.text("Enter the address to notify (NONE: only the Warning mail-log line).", orNone(to), func(a string) string {
			if !strings.EqualFold(a, "none") && !strings.Contains(a, "@") {
				return fmt.Sprintf("%q is not an email address.", a)
			}
			return ""
		})
		if err != nil {
			return err
		}
		if strings.EqualFold(to, "none") {
			to = ""
		}
	}
	return s.edit(func(raw *config.Config) error {
		raw.TLS.ClientCert = cert
		raw.TLS.Alert.Enabled = alert
		raw.TLS.Alert.To = to
		return nil
	})
}

func orNone(s string) string {
	if s == "" {
		return "NONE"
	}
	return s
}
