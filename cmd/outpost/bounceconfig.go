package main

// outpost bounceconfig: bounce profiles. The top-level `bounce:` key is the
// "Default" profile; `bounce_profiles:` holds the named ones, whose unset
// fields inherit from Default. Interactive (NEW / EDIT / DELETE / SETUP)
// or batch (`bounceconfig new|edit NAME key=value...`, the appliance's
// keys); every change is pending until `outpost commit`.

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"outpost/internal/config"
	"outpost/internal/configstore"
)

const bounceconfigUsage = `usage: outpost bounceconfig                        (interactive menu)
       outpost bounceconfig new|edit NAME key=value...   (NAME Default is the default profile)
       outpost bounceconfig delete NAME
       outpost bounceconfig list [--json]
keys: max_retries (1-10000)           max_queue_lifetime (seconds, or 72h)
      initial_retry (seconds)         max_retry_timeout (seconds; at least initial_retry)
      send_bounces (yes|no)           bounce_address (ADDRESS, or sender)
      send_warnings (yes|no)          send_warnings_count (1-100)
      send_warnings_interval (seconds) max_bounce_copy (bytes, or 10KB)
`

// Ranges of the bounce settings (the configuration treats 0 as "use the
// default", so every minimum is at least 1).
const (
	maxRetriesLimit = 10000
	maxSeconds      = 365 * 24 * 3600
	maxWarnings     = 100
	maxBounceCopy   = 100 << 20
)

// checkNewProfile gives the reason a name cannot be a new bounce profile, or "".
func checkNewProfile(raw *config.Config, n string) string {
	if n == "" {
		return "Please enter a name."
	}
	c := n[0]
	if !(c == '_' || (c|0x20 >= 'a' && c|0x20 <= 'z')) {
		return "The bounce profile name must start with a letter or underscore"
	}
	if strings.ContainsAny(n, " \t:/,=") {
		return "Invalid profile name: use letters, digits, '-' and '_'"
	}
	if strings.EqualFold(n, "Default") || raw.BounceProfiles[n] != nil {
		return "Profile name already in use"
	}
	return ""
}

func bounceconfigCmd(cfgPath string, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	st, _, err := openStore(cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "outpost:", err)
		return 1
	}
	if len(args) == 0 {
		s := &bounceSession{editSession{p: newPrompter(stdin, stdout), st: st}}
		if err := s.run(); err != nil {
			fmt.Fprintln(stderr, "outpost:", err)
			return 1
		}
		return 0
	}
	if err := bounceBatch(st, args, stdout); err != nil {
		fmt.Fprintln(stderr, "outpost: bounceconfig:", err)
		code := exitCode(err)
		if code == 2 {
			fmt.Fprint(stderr, bounceconfigUsage)
		}
		return code
	}
	return 0
}

func bounceBatch(st *configstore.Store, args []string, stdout io.Writer) error {
	op, args := strings.ToLower(args[0]), args[1:]
	raw, eff, err := working(st)
	if err != nil {
		return err
	}
	switch op {
	case "new", "edit":
		if len(args) < 1 {
			return usagef("%s needs a profile NAME", op)
		}
		name, kvs := args[0], args[1:]
		isDefault := strings.EqualFold(name, "Default")
		if op == "new" {
			if why := checkNewProfile(raw, name); why != "" {
				return errors.New(why)
			}
		} else if !isDefault && raw.BounceProfiles[name] == nil {
			return fmt.Errorf("no bounce profile %q (the profiles are %s)", name, strings.Join(profileNames(raw), ", "))
		}
		err := st.Edit(func(raw *config.Config) error {
			b := &raw.Bounce
			if !isDefault {
				if raw.BounceProfiles == nil {
					raw.BounceProfiles = map[string]*config.Bounce{}
				}
				if raw.BounceProfiles[name] == nil {
					raw.BounceProfiles[name] = &config.Bounce{}
				}
				b = raw.BounceProfiles[name]
			}
			for _, kv := range kvs {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return usagef("%q: want key=value", kv)
				}
				if err := setBounceKey(b, eff.Bounce, strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	case "delete":
		if len(args) != 1 {
			return usagef("delete needs a profile NAME")
		}
		if err := deleteProfile(st, raw, args[0]); err != nil {
			return err
		}
	case "list", "print":
		asJSON, err := onlyJSONFlag(args, 0)
		if err != nil {
			return err
		}
		if asJSON {
			return writeJSON(stdout, bounceRecords(raw, eff))
		}
		listProfiles(stdout, raw, eff)
		return nil
	default:
		return usagef("unknown operation %q", op)
	}
	fmt.Fprintln(stdout, commitReminder)
	return nil
}

func profileNames(raw *config.Config) []string {
	return append([]string{"Default"}, sortedKeys(raw.BounceProfiles)...)
}

// deleteProfile removes a named profile; the Default one cannot go, nor
// one that a destination still uses.
func deleteProfile(st *configstore.Store, raw *config.Config, name string) error {
	if why := checkDeleteProfile(raw, name); why != "" {
		return errors.New(why)
	}
	return st.Edit(func(raw *config.Config) error {
		delete(raw.BounceProfiles, name)
		if len(raw.BounceProfiles) == 0 {
			raw.BounceProfiles = nil
		}
		return nil
	})
}

func checkDeleteProfile(raw *config.Config, name string) string {
	if strings.EqualFold(name, "Default") {
		return "The default profile may not be deleted"
	}
	if raw.BounceProfiles[name] == nil {
		return fmt.Sprintf("There is no bounce profile %q.", name)
	}
	var users []string
	for _, d := range sortedKeys(raw.Destinations) {
		if e := raw.Destinations[d]; e != nil && e.BounceProfile != nil && *e.BounceProfile == name {
			users = append(users, d)
		}
	}
	if len(users) > 0 {
		return fmt.Sprintf("The profile %q is used by the destination(s) %s; change them first.", name, strings.Join(users, ", "))
	}
	return ""
}

func secondsIn(k, v string, lo, hi int) (config.Duration, error) {
	if n, err := strconv.Atoi(v); err == nil {
		if n < lo || n > hi {
			return 0, fmt.Errorf("%s %d: want %d-%d seconds", k, n, lo, hi)
		}
		return config.Duration(time.Duration(n) * time.Second), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s %q: want a number of seconds (%d-%d) or a duration such as 72h", k, v, lo, hi)
	}
	if d < time.Duration(lo)*time.Second || d > time.Duration(hi)*time.Second {
		return 0, fmt.Errorf("%s %s: want %d-%d seconds", k, v, lo, hi)
	}
	return config.Duration(d), nil
}

func yesNoValue(k, v string) (bool, error) {
	switch strings.ToLower(v) {
	case "yes", "y", "on", "true", "1":
		return true, nil
	case "no", "n", "off", "false", "0":
		return false, nil
	}
	return false, fmt.Errorf("%s %q: want yes or no", k, v)
}

// setBounceKey applies one appliance batch key to a profile; def is the
// effective Default profile (delay-warning settings start from its values).
func setBounceKey(b *config.Bounce, def config.Bounce, k, v string) error {
	warnings := func() *config.DelayWarnings {
		if b.DelayWarnings == nil {
			w := *def.DelayWarnings
			b.DelayWarnings = &w
		}
		return b.DelayWarnings
	}
	switch k {
	case "max_retries":
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxRetriesLimit {
			return fmt.Errorf("max_retries %q: want 1-%d", v, maxRetriesLimit)
		}
		b.MaxRetries = n
	case "max_queue_lifetime":
		d, err := secondsIn(k, v, 1, maxSeconds)
		if err != nil {
			return err
		}
		b.MaxQueueLifetime = d
	case "initial_retry":
		d, err := secondsIn(k, v, 1, maxSeconds)
		if err != nil {
			return err
		}
		b.InitialRetry = d
	case "max_retry_timeout":
		d, err := secondsIn(k, v, 1, maxSeconds)
		if err != nil {
			return err
		}
		b.MaxRetryInterval = d
	case "send_bounces":
		y, err := yesNoValue(k, v)
		if err != nil {
			return err
		}
		b.SendBounces = &y
	case "bounce_address":
		if strings.EqualFold(v, "sender") || v == "" {
			b.BounceAddress = ""
		} else if !strings.Contains(v, "@") {
			return fmt.Errorf("bounce_address %q: want an email address (or sender)", v)
		} else {
			b.BounceAddress = v
		}
	case "send_warnings":
		y, err := yesNoValue(k, v)
		if err != nil {
			return err
		}
		warnings().Enabled = y
	case "send_warnings_count":
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxWarnings {
			return fmt.Errorf("send_warnings_count %q: want 1-%d", v, maxWarnings)
		}
		warnings().Count = n
	case "send_warnings_interval":
		d, err := secondsIn(k, v, 1, maxSeconds)
		if err != nil {
			return err
		}
		warnings().Interval = d
	case "max_bounce_copy":
		n, err := config.ParseSize(v)
		if err != nil || n < 1 || n > maxBounceCopy {
			return fmt.Errorf("max_bounce_copy %q: want 1-%d bytes (or a size such as 10KB)", v, maxBounceCopy)
		}
		b.MaxBounceCopy = config.Size(n)
	default:
		return usagef("unknown key %q (want max_retries, max_queue_lifetime, initial_retry, max_retry_timeout, send_bounces, bounce_address, send_warnings, send_warnings_count, send_warnings_interval, max_bounce_copy)", k)
	}
	return nil
}

type bounceRecord struct {
	Name                 string `json:"name"`
	MaxRetries           int    `json:"max_retries"`
	MaxQueueLifetime     int    `json:"max_queue_lifetime"`
	InitialRetry         int    `json:"initial_retry"`
	MaxRetryTimeout      int    `json:"max_retry_timeout"`
	SendBounces          bool   `json:"send_bounces"`
	BounceAddress        string `json:"bounce_address,omitempty"`
	SendWarnings         bool   `json:"send_warnings"`
	SendWarningsCount    int    `json:"send_warnings_count"`
	SendWarningsInterval int    `json:"send_warnings_interval"`
	MaxBounceCopy        int64  `json:"max_bounce_copy"`
}

func secs(d config.Duration) int { return int(d.D() / time.Second) }

func bounceRecords(raw, eff *config.Config) []bounceRecord {
	var out []bounceRecord
	for _, n := range profileNames(raw) {
		b := eff.BounceProfile(n)
		out = append(out, bounceRecord{
			Name: n, MaxRetries: b.MaxRetries, MaxQueueLifetime: secs(b.MaxQueueLifetime), InitialRetry: secs(b.InitialRetry),
			MaxRetryTimeout: secs(b.MaxRetryInterval), SendBounces: *b.SendBounces, BounceAddress: b.BounceAddress,
			SendWarnings: b.DelayWarnings.Enabled, SendWarningsCount: b.DelayWarnings.Count,
			SendWarningsInterval: secs(b.DelayWarnings.Interval), MaxBounceCopy: int64(b.MaxBounceCopy),
		})
	}
	return out
}

func listProfiles(w io.Writer, raw, eff *config.Config) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "Profile\tRetries\tQueue Time\tInitial Retry\tMax Retry\tBounces\tBounce Recipient\tDelay Warnings\tDSN Copy")
	for _, r := range bounceRecords(raw, eff) {
		to := r.BounceAddress
		if to == "" {
			to = "sender"
		}
		warn := "Off"
		if r.SendWarnings {
			warn = fmt.Sprintf("%d every %ds", r.SendWarningsCount, r.SendWarningsInterval)
		}
		fmt.Fprintf(tw, "%s\t%d\t%ds\t%ds\t%ds\t%s\t%s\t%s\t%d\n", r.Name, r.MaxRetries, r.MaxQueueLifetime, r.InitialRetry,
			r.MaxRetryTimeout, onOff(r.SendBounces), to, warn, r.MaxBounceCopy)
	}
	tw.Flush()
}

// ---- interactive ----

type bounceSession struct{ editSession }

func (s *bounceSession) run() error {
	defer s.remind()
	for {
		raw, eff, err := working(s.st)
		if err != nil {
			return err
		}
		s.p.say("\nCurrent bounce profiles:")
		for i, n := range profileNames(raw) {
			s.p.say("%d. %s", i+1, n)
		}
		s.p.say("\nChoose the operation you want to perform:")
		s.p.say("- NEW - Create a new profile.")
		s.p.say("- EDIT - Modify a profile.")
		s.p.say("- DELETE - Remove a profile.")
		s.p.say("- SETUP - Configure global bounce settings.")
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

func (s *bounceSession) do(op string, raw, eff *config.Config) error {
	p := s.p
	names := profileNames(raw)
	switch op {
	case "NEW":
		name, err := p.text("Please create a name for the profile:", "", func(a string) string { return checkNewProfile(raw, a) })
		if err != nil {
			return err
		}
		b, err := s.askProfile(eff.Bounce)
		if err != nil {
			return err
		}
		return s.save(name, b)
	case "EDIT":
		i, err := p.choose("Please choose the profile to edit:", names, 0, false, nil)
		if err != nil {
			return err
		}
		b, err := s.askProfile(eff.BounceProfile(names[i]))
		if err != nil {
			return err
		}
		return s.save(names[i], b)
	case "DELETE":
		i, err := p.choose("Please choose the profile to delete:", names, 0, false, func(i int) string { return checkDeleteProfile(raw, names[i]) })
		if err != nil {
			return err
		}
		if err := deleteProfile(s.st, raw, names[i]); err != nil {
			return err
		}
		s.changed = true
		p.say("The bounce profile %q was deleted.", names[i])
		return nil
	case "SETUP":
		p.say("Outpost's global bounce settings are those of the Default profile, which applies wherever no other profile is chosen.")
		b, err := s.askProfile(eff.Bounce)
		if err != nil {
			return err
		}
		return s.save("Default", b)
	}
	p.say("No bounce profile action for %q.", op)
	return nil
}

func (s *bounceSession) save(name string, b *config.Bounce) error {
	err := s.st.Edit(func(raw *config.Config) error {
		if name == "Default" {
			raw.Bounce = *b
			return nil
		}
		if raw.BounceProfiles == nil {
			raw.BounceProfiles = map[string]*config.Bounce{}
		}
		raw.BounceProfiles[name] = b
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w\nThe profile was not saved.", err)
	}
	s.changed = true
	return nil
}

// askProfile asks every bounce setting, defaulting to cur (effective
// values), and returns them all set explicitly.
func (s *bounceSession) askProfile(cur config.Bounce) (*config.Bounce, error) {
	p := s.p
	b := &config.Bounce{}
	var err error
	if b.MaxRetries, err = p.number("Please enter the maximum number of retries.", cur.MaxRetries, 1, maxRetriesLimit); err != nil {
		return nil, err
	}
	n, err := p.number("Please enter the maximum number of seconds a message may stay in the queue before being hard bounced.", secs(cur.MaxQueueLifetime), 1, maxSeconds)
	if err != nil {
		return nil, err
	}
	b.MaxQueueLifetime = config.Duration(time.Duration(n) * time.Second)
	initial, err := p.number("Please enter the initial number of seconds to wait before retrying a message.", secs(cur.InitialRetry), 1, maxSeconds)
	if err != nil {
		return nil, err
	}
	b.InitialRetry = config.Duration(time.Duration(initial) * time.Second)
	mx := max(secs(cur.MaxRetryInterval), initial)
	if n, err = p.number("Please enter the maximum number of seconds to wait before retrying a message.", mx, initial, maxSeconds); err != nil {
		return nil, err
	}
	b.MaxRetryInterval = config.Duration(time.Duration(n) * time.Second)
	send, err := p.yesNo("Do you want hard bounce messages to be sent?", *cur.SendBounces)
	if err != nil {
		return nil, err
	}
	b.SendBounces = &send
	if send {
		alt, err := p.yesNo("Do you want bounce messages sent to an alternate address instead of the sender?", cur.BounceAddress != "")
		if err != nil {
			return nil, err
		}
		if alt {
			if b.BounceAddress, err = p.text("Please enter the email address to send bounces to.", cur.BounceAddress, func(a string) string {
				if !strings.Contains(a, "@") {
					return fmt.Sprintf("%q is not an email address.", a)
				}
				return ""
			}); err != nil {
				return nil, err
			}
		}
		if n, err = p.number("Please enter the maximum number of bytes of the original message to include in the bounce (DSN) message.", int(cur.MaxBounceCopy), 1, maxBounceCopy); err != nil {
			return nil, err
		}
		b.MaxBounceCopy = config.Size(n)
	}
	dw := *cur.DelayWarnings
	if dw.Enabled, err = p.yesNo("Do you want to send delay warning messages?", dw.Enabled); err != nil {
		return nil, err
	}
	if dw.Enabled {
		if n, err = p.number("Please enter the minimum number of seconds to wait between delay warning messages.", secs(dw.Interval), 1, maxSeconds); err != nil {
			return nil, err
		}
		dw.Interval = config.Duration(time.Duration(n) * time.Second)
		if dw.Count, err = p.number("Please enter the maximum number of delay warning messages to send per message.", dw.Count, 1, maxWarnings); err != nil {
			return nil, err
		}
	}
	b.DelayWarnings = &dw
	return b, nil
}
