package webui

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"outpost/internal/config"
)

// field is one form control; the templates render every form from these,
// so an error always sits beside its field.
type field struct {
	Name    string // form name = the configuration key ("max_concurrency")
	Label   string
	Kind    string // text, number, select, radio
	Value   string
	Options []option
	Help    string
	Warn    string
	Err     string
	// ReadOnly fields are shown and posted but cannot be changed.
	ReadOnly bool
}

type option struct {
	Value, Label string
	Selected     bool
}

// opts makes options from value/label pairs, marking value selected.
func opts(value string, pairs ...string) []option {
	out := make([]option, 0, len(pairs)/2)
	for i := 0; i+1 < len(pairs); i += 2 {
		out = append(out, option{Value: pairs[i], Label: pairs[i+1], Selected: pairs[i] == value})
	}
	return out
}

// form is a page's form: its fields, errors and where it posts.
type form struct {
	Title   string
	Action  string
	Orig    string // the entry's name when editing ("" for a new one)
	New     bool
	Fields  []*field
	Errs    map[string]string // by field name, before they are attached
	General []string          // errors that name no field of this form
	Notes   []string
	Warns   []string
	Check   string // domain for the "Check this domain" link
}

func (f *form) field(name string) *field {
	for _, fl := range f.Fields {
		if fl.Name == name {
			return fl
		}
	}
	return nil
}

// fail records an error for a field (or a general one when the form has
// no such field).
func (f *form) fail(name, msg string) {
	if fl := f.field(name); fl != nil {
		if fl.Err == "" {
			fl.Err = msg
		}
		return
	}
	if f.Errs == nil {
		f.Errs = map[string]string{}
	}
	if _, ok := f.Errs[name]; ok || name == "" {
		f.General = append(f.General, msg)
		return
	}
	f.Errs[name] = msg
}

func (f *form) failed() bool {
	if len(f.General) > 0 || len(f.Errs) > 0 {
		return true
	}
	for _, fl := range f.Fields {
		if fl.Err != "" {
			return true
		}
	}
	return false
}

// applyConfigError spreads a configuration validation error over the
// form: each line "<prefix>.<key> ...: reason" goes beside field <key>
// (keys as in the YAML, "recipient_limit.count"); "<prefix>: key: reason"
// goes beside key when the form has it; anything else is general.
func (f *form) applyConfigError(err error, prefix string) {
	for _, line := range strings.Split(err.Error(), "\n") {
		line = strings.TrimSpace(line)
		line = strings.TrimPrefix(line, "pending configuration: ")
		if line == "" {
			continue
		}
		if rest, ok := strings.CutPrefix(line, prefix+"."); ok {
			end := strings.IndexAny(rest, " :")
			if end < 0 {
				end = len(rest)
			}
			key, reason := rest[:end], strings.TrimSpace(rest[end:])
			if m := hostsKeyRE.FindStringSubmatch(key); m != nil {
				key = m[0] + ".host" // "hosts[2]: listed twice"
			}
			if f.field(key) != nil {
				f.fail(key, reasonText(reason))
				continue
			}
		}
		if rest, ok := strings.CutPrefix(line, prefix+": "); ok {
			if k, reason, ok := strings.Cut(rest, ": "); ok && f.field(k) != nil {
				f.fail(k, k+": "+reason)
				continue
			}
			f.General = append(f.General, rest)
			continue
		}
		f.General = append(f.General, line)
	}
}

var hostsKeyRE = regexp.MustCompile(`^hosts\[\d+\]$`)

// reasonText turns `5000: want 1-1000` into `5000: want 1-1000` and
// `: want x` into `want x`.
func reasonText(s string) string {
	s = strings.TrimSpace(strings.TrimPrefix(s, ":"))
	if s == "" {
		return "not valid"
	}
	return s
}

// ---- value parsing (the same rules as the YAML decoder) ----

func optInt(f *form, name, v string, dst **int) {
	v = strings.TrimSpace(v)
	if v == "" {
		*dst = nil
		return
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		f.fail(name, fmt.Sprintf("%q is not a whole number", v))
		return
	}
	*dst = &n
}

func reqInt(f *form, name, v string) int {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		f.fail(name, fmt.Sprintf("%q is not a whole number", v))
	}
	return n
}

func optEnum(f *form, name, v string, allowed []string, dst **string) {
	if v == "" {
		*dst = nil
		return
	}
	for _, a := range allowed {
		if v == a {
			*dst = &v
			return
		}
	}
	f.fail(name, fmt.Sprintf("want one of %s", strings.Join(allowed, ", ")))
}

func optBool(f *form, name, v string, dst **bool) {
	switch v {
	case "":
		*dst = nil
	case "yes":
		t := true
		*dst = &t
	case "no":
		b := false
		*dst = &b
	default:
		f.fail(name, "choose Default, No or Yes")
	}
}

func duration(f *form, name, v string) config.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d config.Duration
	if err := d.UnmarshalYAML(&yaml.Node{Kind: yaml.ScalarNode, Value: v}); err != nil {
		f.fail(name, fmt.Sprintf("%q is not a duration (want e.g. 60s, 5m, 72h)", v))
	}
	return d
}

func size(f *form, name, v string) config.Size {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	n, err := config.ParseSize(v)
	if err != nil {
		f.fail(name, fmt.Sprintf("%q is not a size (want e.g. 10KB, 35MB)", v))
	}
	return config.Size(n)
}

// ---- showing values ----

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func intStr(p *int) string {
	if p == nil {
		return ""
	}
	return strconv.Itoa(*p)
}

func boolStr(p *bool) string {
	switch {
	case p == nil:
		return ""
	case *p:
		return "yes"
	}
	return "no"
}

func yesNo(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}

func durStr(d config.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

// working returns the working configuration raw and validated.
func (s *Server) working() (raw, eff *config.Config, pending bool, err error) {
	raw, pending, err = s.b.Working()
	if err != nil {
		return nil, nil, false, err
	}
	data, err := config.Marshal(raw)
	if err != nil {
		return nil, nil, false, err
	}
	eff, err = config.Parse(data, "working configuration")
	return raw, eff, pending, err
}
