// Package destini reads and writes the Destination Control table in the
// appliance's INI-like import/export format (destconfig IMPORT / EXPORT):
// a [DEFAULT] section, then one [domain] section per entry, each holding
// "keyword = value" lines.
//
// The keywords are the appliance's where it has them (UG 9.1.2 Table 24-9),
// and Outpost's own where its page was never seen:
//
//	ip_sort_pref                 PREFER_V4 | PREFER_V6 | REQUIRE_V4 | REQUIRE_V6
//	max_host_concurrency         1-1000
//	max_messages_per_connection  1-1000
//	recipient_limit              0-1000000000 (0: no limit)
//	recipient_minutes            1-60 (only with recipient_limit)
//	limit_type                   0 or host (one limit per domain), 1 or MXIP (per MX IP address)
//	limit_apply                  0 or system (system wide), 1 or VG (per virtual gateway)
//	bounce_profile               a bounce profile name, or Default
//	use_tls                      0 off, 1 on (preferred), 2 require, 3 on_verify,
//	                             4 require_verify, 5 require_verify_hosted
//	dane_support                 0 none, 1 opportunistic, 2 mandatory
//	mta_sts                      0 off, 1 on
//	bounce_validation            0 off, 1 on (bounce verification address tagging)
//
// A keyword left out of a domain section means "use the Default entry's
// value", as in the configuration. Unlike the appliance, keywords may also
// be left out of [DEFAULT] (Outpost's built-in defaults then apply), and
// max_host_concurrency or recipient_limit do not require limit_type and
// limit_apply. Write always emits a complete [DEFAULT] section, so what it
// writes satisfies the appliance's stricter rule for that section.
//
// Read checks syntax, keywords and ranges and names the line of the first
// problem; cross-references (does the bounce profile exist, does a mode
// conflict with the Default entry) are left to the configuration's own
// validation, which runs when the table is stored. Read(Write(t)) == t.
package destini

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"outpost/internal/config"
	"outpost/internal/tlspolicy"
)

// Table is the destination table keyed as in the configuration:
// "default" for the [DEFAULT] section, then domain names.
type Table map[string]*config.Destination

// Value spellings, in file order (index = numeric value).
var (
	ipSortPrefs = []string{"PREFER_V4", "PREFER_V6", "REQUIRE_V4", "REQUIRE_V6"} // = config.IPPreferences
	limitTypes  = []string{"host", "MXIP"}                                       // = config.LimitScopes
	limitApply  = []string{"system", "VG"}                                       // = config.LimitApplies
	tlsWords    = []string{"off", "on", "require", "on_verify", "require_verify", "require_verify_hosted"}
)

// Read parses a table; name is used in error messages ("file:line: ...").
func Read(r io.Reader, name string) (Table, error) {
	t := Table{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var cur *config.Destination
	seenKeys := map[string]int{}
	lineNo := 0
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s:%d: %s", name, lineNo, fmt.Sprintf(format, args...))
	}
	for sc.Scan() {
		lineNo++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' {
			if !strings.HasSuffix(line, "]") {
				return nil, fail("section header %q: want [DEFAULT] or [domain]", line)
			}
			sec := strings.TrimSpace(line[1 : len(line)-1])
			key := strings.ToLower(sec)
			if sec == "DEFAULT" || key == "default" {
				key = "default"
			} else if err := checkDomain(key); err != nil {
				return nil, fail("section [%s]: %v", sec, err)
			}
			if t[key] != nil {
				return nil, fail("section [%s] appears twice", sec)
			}
			cur = &config.Destination{}
			t[key] = cur
			seenKeys = map[string]int{}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fail("%q: want keyword = value", line)
		}
		k, v = strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
		if cur == nil {
			return nil, fail("%s before the first section (start with [DEFAULT])", k)
		}
		if prev, dup := seenKeys[k]; dup {
			return nil, fail("%s is already set in this section (line %d)", k, prev)
		}
		seenKeys[k] = lineNo
		if err := set(cur, k, v); err != nil {
			return nil, fail("%s", err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if t["default"] == nil {
		return nil, fmt.Errorf("%s: no [DEFAULT] section", name)
	}
	for d, e := range t {
		if e.RecipientLimit != nil && e.RecipientLimit.Count > 0 && e.RecipientLimit.Minutes == 0 {
			return nil, fmt.Errorf("%s: [%s]: recipient_limit needs recipient_minutes (1-60)", name, sectionName(d))
		}
	}
	return t, nil
}

func sectionName(d string) string {
	if d == "default" {
		return "DEFAULT"
	}
	return d
}

func checkDomain(d string) error {
	n := strings.TrimPrefix(d, ".")
	if n == "" || strings.ContainsAny(n, " \t@/\\:[]=") || strings.Contains(n, "..") || strings.HasPrefix(n, ".") {
		return errors.New("not a domain name (use example.com, or .example.com for its subdomains)")
	}
	return nil
}

func intIn(k, v string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%s %q: not a number (want %d-%d)", k, v, lo, hi)
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("%s %d: want %d-%d", k, n, lo, hi)
	}
	return n, nil
}

// choice reads a value given by its number or its word.
func choice(k, v string, words []string) (int, error) {
	for i, w := range words {
		if strings.EqualFold(v, w) || v == strconv.Itoa(i) {
			return i, nil
		}
	}
	var alts []string
	for i, w := range words {
		alts = append(alts, fmt.Sprintf("%d/%s", i, w))
	}
	return 0, fmt.Errorf("%s %q: want one of %s", k, v, strings.Join(alts, ", "))
}

func set(d *config.Destination, k, v string) error {
	switch k {
	case "ip_sort_pref":
		i, err := choice(k, v, ipSortPrefs)
		if err != nil {
			return err
		}
		d.IPPreference = ptr(config.IPPreferences[i])
	case "max_host_concurrency":
		n, err := intIn(k, v, 1, 1000)
		if err != nil {
			return err
		}
		d.MaxConcurrency = &n
	case "max_messages_per_connection":
		n, err := intIn(k, v, 1, 1000)
		if err != nil {
			return err
		}
		d.MaxMessagesPerConnection = &n
	case "recipient_limit":
		n, err := intIn(k, v, 0, 1000000000)
		if err != nil {
			return err
		}
		if d.RecipientLimit == nil {
			d.RecipientLimit = &config.RecipientLimit{}
		}
		d.RecipientLimit.Count = n
	case "recipient_minutes":
		n, err := intIn(k, v, 1, 60)
		if err != nil {
			return err
		}
		if d.RecipientLimit == nil {
			d.RecipientLimit = &config.RecipientLimit{}
		}
		d.RecipientLimit.Minutes = n
	case "limit_type":
		i, err := choice(k, v, limitTypes)
		if err != nil {
			return err
		}
		d.LimitsScope = ptr(config.LimitScopes[i])
	case "limit_apply":
		i, err := choice(k, v, limitApply)
		if err != nil {
			return err
		}
		d.LimitsApply = ptr(config.LimitApplies[i])
	case "bounce_profile":
		if v == "" {
			return errors.New("bounce_profile: empty (leave the keyword out to use the Default entry's)")
		}
		d.BounceProfile = ptr(v)
	case "use_tls":
		i, err := choice(k, v, tlsWords)
		if err != nil {
			if m, err2 := tlspolicy.ParseMode(v); err2 == nil {
				i, err = int(m), nil
			}
		}
		if err != nil {
			return err
		}
		m := config.TLSMode(tlspolicy.Mode(i))
		d.TLS = &m
	case "dane_support":
		i, err := choice(k, v, config.DANEModes)
		if err != nil {
			return err
		}
		d.DANE = ptr(config.DANEModes[i])
	case "mta_sts":
		b, err := flag01(k, v)
		if err != nil {
			return err
		}
		d.MTASTS = &b
	case "bounce_validation":
		b, err := flag01(k, v)
		if err != nil {
			return err
		}
		d.BounceVerification = &b
	default:
		return fmt.Errorf("unknown keyword %q", k)
	}
	return nil
}

func flag01(k, v string) (bool, error) {
	switch strings.ToLower(v) {
	case "0", "off", "no", "false":
		return false, nil
	case "1", "on", "yes", "true":
		return true, nil
	}
	return false, fmt.Errorf("%s %q: want 0 (off) or 1 (on)", k, v)
}

func ptr[T any](v T) *T { return &v }

func index(list []string, v string) int {
	for i, s := range list {
		if s == v {
			return i
		}
	}
	return -1
}

// Write writes the table: a header comment, [DEFAULT] completed from
// effective (the Default entry's values after the configuration's
// defaults were applied; nil writes the entry as it is), then the domain
// sections in name order with only the keywords they set.
func Write(w io.Writer, t Table, effective *config.Destination) error {
	bw := bufio.NewWriter(w)
	fmt.Fprint(bw, header)
	def := t["default"]
	if def == nil {
		def = &config.Destination{}
	}
	if effective != nil {
		def = merge(def, effective)
	}
	fmt.Fprintln(bw, "[DEFAULT]")
	if err := writeEntry(bw, def); err != nil {
		return err
	}
	names := make([]string, 0, len(t))
	for n := range t {
		if n != "default" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(bw, "\n[%s]\n", n)
		if err := writeEntry(bw, t[n]); err != nil {
			return err
		}
	}
	return bw.Flush()
}

const header = `# Outpost destination control table (destconfig EXPORT).
# use_tls: 0 off, 1 on (preferred), 2 require, 3 on_verify, 4 require_verify, 5 require_verify_hosted
# dane_support: 0 none, 1 opportunistic, 2 mandatory; mta_sts, bounce_validation: 0 off, 1 on
# limit_type: 0 host (per domain), 1 MXIP; limit_apply: 0 system, 1 VG (per virtual gateway)
# A keyword left out of a domain section uses the [DEFAULT] value.

`

// merge returns d with its unset fields taken from def.
func merge(d, def *config.Destination) *config.Destination {
	out := *d
	if out.IPPreference == nil {
		out.IPPreference = def.IPPreference
	}
	if out.MaxConcurrency == nil {
		out.MaxConcurrency = def.MaxConcurrency
	}
	if out.MaxMessagesPerConnection == nil {
		out.MaxMessagesPerConnection = def.MaxMessagesPerConnection
	}
	if out.RecipientLimit == nil {
		out.RecipientLimit = def.RecipientLimit
	}
	if out.LimitsScope == nil {
		out.LimitsScope = def.LimitsScope
	}
	if out.LimitsApply == nil {
		out.LimitsApply = def.LimitsApply
	}
	if out.TLS == nil {
		out.TLS = def.TLS
	}
	if out.DANE == nil {
		out.DANE = def.DANE
	}
	if out.MTASTS == nil {
		out.MTASTS = def.MTASTS
	}
	if out.BounceVerification == nil {
		out.BounceVerification = def.BounceVerification
	}
	if out.BounceProfile == nil {
		out.BounceProfile = def.BounceProfile
	}
	return &out
}

func writeEntry(w io.Writer, d *config.Destination) error {
	if d == nil {
		return nil
	}
	kv := func(k string, v any) { fmt.Fprintf(w, "%s = %v\n", k, v) }
	if d.IPPreference != nil {
		i := index(config.IPPreferences, *d.IPPreference)
		if i < 0 {
			return fmt.Errorf("ip_preference %q: want one of %s", *d.IPPreference, strings.Join(config.IPPreferences, ", "))
		}
		kv("ip_sort_pref", ipSortPrefs[i])
	}
	if d.MaxConcurrency != nil {
		kv("max_host_concurrency", *d.MaxConcurrency)
	}
	if d.MaxMessagesPerConnection != nil {
		kv("max_messages_per_connection", *d.MaxMessagesPerConnection)
	}
	if r := d.RecipientLimit; r != nil {
		kv("recipient_limit", r.Count)
		if r.Minutes != 0 {
			kv("recipient_minutes", r.Minutes)
		}
	}
	if d.LimitsScope != nil {
		i := index(config.LimitScopes, *d.LimitsScope)
		if i < 0 {
			return fmt.Errorf("limits_scope %q: want one of %s", *d.LimitsScope, strings.Join(config.LimitScopes, ", "))
		}
		kv("limit_type", i)
	}
	if d.LimitsApply != nil {
		i := index(config.LimitApplies, *d.LimitsApply)
		if i < 0 {
			return fmt.Errorf("limits_apply %q: want one of %s", *d.LimitsApply, strings.Join(config.LimitApplies, ", "))
		}
		kv("limit_apply", i)
	}
	if d.BounceProfile != nil {
		kv("bounce_profile", *d.BounceProfile)
	}
	if d.TLS != nil {
		kv("use_tls", int(*d.TLS))
	}
	if d.DANE != nil {
		i := index(config.DANEModes, *d.DANE)
		if i < 0 {
			return fmt.Errorf("dane %q: want one of %s", *d.DANE, strings.Join(config.DANEModes, ", "))
		}
		kv("dane_support", i)
	}
	if d.MTASTS != nil {
		kv("mta_sts", b01(*d.MTASTS))
	}
	if d.BounceVerification != nil {
		kv("bounce_validation", b01(*d.BounceVerification))
	}
	return nil
}

func b01(b bool) int {
	if b {
		return 1
	}
	return 0
}
