package webui

import (
	"fmt"
	"net/http"
	"sort"
	"strings"

	"outpost/internal/config"
	"outpost/internal/tlspolicy"
)

// routeNote is the appliance's wording, shown on the Destination Controls
// pages (design.md §3: a route switches DANE and MTA-STS off).
const routeNote = "DANE and MTA STS will not be enforced for domains that have SMTP Routes configured"

const defaultSTSWarning = "MTA-STS is switched on for the default entry: every destination domain without its own entry costs MTA-STS lookups (DNS and HTTPS) and is held when its policy cannot be met."

// cell is one table value; Inherited values come from the default entry.
type cell struct {
	Text      string
	Inherited bool
}

type destRow struct {
	Name                                                    string
	IsDefault                                               bool
	IPPreference, Limits, TLS, DANE, MTASTS, BV, BounceProf cell
	Routed                                                  bool
}

func (s *Server) destinations(w http.ResponseWriter, r *http.Request, ss *session) {
	s.showDestinations(w, r, ss, http.StatusOK, "")
}

// showDestinations renders the table, with an error from an action.
func (s *Server) showDestinations(w http.ResponseWriter, r *http.Request, ss *session, status int, errText string) {
	p := &page{Title: "Destination Controls", Nav: "destinations", Error: errText}
	raw, eff, _, err := s.working()
	if err != nil {
		p.Error = err.Error()
		s.render(w, r, ss, http.StatusInternalServerError, "destinations", p)
		return
	}
	var rows []destRow
	for _, name := range eff.DestinationNames() {
		pr := eff.Profile(name)
		d := raw.Destinations[name]
		if d == nil {
			d = &config.Destination{}
		}
		isDef := name == "default"
		c := func(set bool, text string) cell { return cell{Text: text, Inherited: !set && !isDef} }
		limits := fmt.Sprintf("%d conn, %d msg/conn", pr.MaxConcurrency, pr.MaxMessagesPerConnection)
		if pr.RecipientLimit.Count > 0 {
			limits += fmt.Sprintf(", %d rcpt/%d min", pr.RecipientLimit.Count, pr.RecipientLimit.Minutes)
		}
		limits += ", per " + pr.LimitsScope
		if pr.LimitsApply == "virtual-gateway" {
			limits += " per gateway"
		}
		limitsSet := d.MaxConcurrency != nil || d.MaxMessagesPerConnection != nil || d.RecipientLimit != nil || d.LimitsScope != nil || d.LimitsApply != nil
		ipPref := pr.IPPreference
		if ipPref == "" {
			ipPref = "as resolved"
		}
		_, route := eff.RouteFor(strings.TrimPrefix(name, "."))
		rows = append(rows, destRow{Name: name, IsDefault: isDef,
			IPPreference: c(d.IPPreference != nil, ipPref),
			Limits:       c(limitsSet, limits),
			TLS:          c(d.TLS != nil, pr.TLS.Label()),
			DANE:         c(d.DANE != nil, pr.DANE),
			MTASTS:       c(d.MTASTS != nil, yesNo(pr.MTASTS)),
			BV:           c(d.BounceVerification != nil, yesNo(pr.BounceVerification)),
			BounceProf:   c(d.BounceProfile != nil, pr.BounceProfile),
			Routed:       !isDef && route != nil,
		})
	}
	if eff.Profile("default").MTASTS {
		p.Warning = defaultSTSWarning
	}
	p.Data = struct {
		Rows []destRow
		Note string
	}{rows, routeNote}
	s.render(w, r, ss, status, "destinations", p)
}

// destForm builds the Add/Edit form for entry name ("" for a new entry)
// with values from d (nil: none set).
func (s *Server) destForm(eff *config.Config, name string, isNew bool, d *config.Destination) *form {
	if d == nil {
		d = &config.Destination{}
	}
	isDef := name == "default"
	// What "Default" means: the default entry's value, or for the default
	// entry itself the built-in value.
	inh := eff.Profile("default")
	if isDef {
		inh = config.Default().Profile("default")
	}
	def := func(v string) string { return "Default (" + v + ")" }
	rl := d.RecipientLimit
	rc, rm := "", ""
	if rl != nil {
		rc, rm = fmt.Sprint(rl.Count), fmt.Sprint(rl.Minutes)
	}
	tlsPairs := []string{"", def(inh.TLS.Label())}
	for m := tlspolicy.None; m <= tlspolicy.RequiredVerifyHosted; m++ {
		tlsPairs = append(tlsPairs, m.String(), m.Label())
	}
	bps := []string{"", def(inh.BounceProfile), "Default", "Default"}
	for _, n := range sortedKeys(eff.BounceProfiles) {
		bps = append(bps, n, n)
	}
	ipPairs := []string{"", def(inh.IPPreference)}
	for _, v := range config.IPPreferences {
		ipPairs = append(ipPairs, v, v)
	}
	tlsVal := ""
	if d.TLS != nil {
		tlsVal = tlspolicy.Mode(*d.TLS).String()
	}
	f := &form{Action: "/destinations/save", Orig: name, New: isNew, Fields: []*field{
		{Name: "name", Label: "Destination", Kind: "text", Value: name, ReadOnly: !isNew,
			Help: "A domain (example.com) or, with a leading dot, its subdomains (.example.com)."},
		{Name: "ip_preference", Label: "IP address preference", Kind: "select", Options: opts(str(d.IPPreference), ipPairs...)},
		{Name: "max_concurrency", Label: "Maximum concurrent connections", Kind: "number", Value: intStr(d.MaxConcurrency),
			Help: fmt.Sprintf("1-1000; blank: default (%d).", inh.MaxConcurrency)},
		{Name: "max_messages_per_connection", Label: "Maximum messages per connection", Kind: "number", Value: intStr(d.MaxMessagesPerConnection),
			Help: fmt.Sprintf("1-1000; blank: default (%d).", inh.MaxMessagesPerConnection)},
		{Name: "recipient_limit.count", Label: "Maximum recipients", Kind: "number", Value: rc,
			Help: "Recipients per time window; 0: no limit; blank: default."},
		{Name: "recipient_limit.minutes", Label: "… per number of minutes", Kind: "number", Value: rm, Help: "1-60."},
		{Name: "limits_scope", Label: "Apply limits per", Kind: "select", Options: opts(str(d.LimitsScope),
			"", def(inh.LimitsScope), "domain", "destination domain", "mx-ip", "MX IP address")},
		{Name: "limits_apply", Label: "Apply limits across", Kind: "select", Options: opts(str(d.LimitsApply),
			"", def(inh.LimitsApply), "system", "the whole system", "virtual-gateway", "each virtual gateway")},
		{Name: "tls", Label: "TLS support", Kind: "select", Options: opts(tlsVal, tlsPairs...)},
		{Name: "dane", Label: "DANE support", Kind: "select", Options: opts(str(d.DANE),
			"", def(inh.DANE), "none", "No", "opportunistic", "Opportunistic", "mandatory", "Mandatory")},
		{Name: "mta_sts", Label: "Enable MTA-STS", Kind: "radio", Options: opts(boolStr(d.MTASTS),
			"", def(yesNo(inh.MTASTS)), "no", "No", "yes", "Yes"), Help: routeNote + "."},
		{Name: "bounce_verification", Label: "Bounce verification (tag the envelope sender)", Kind: "radio", Options: opts(boolStr(d.BounceVerification),
			"", def(yesNo(inh.BounceVerification)), "no", "No", "yes", "Yes")},
		{Name: "bounce_profile", Label: "Bounce profile", Kind: "select", Options: opts(str(d.BounceProfile), bps...)},
	}}
	if isNew {
		f.Title = "Add Destination"
	} else {
		f.Title = "Edit Destination: " + name
	}
	if isDef {
		f.field("mta_sts").Warn = "Switching MTA-STS on here applies it to every destination without its own entry."
		f.field("name").Help = "The default entry: its values apply to every destination without its own entry."
	}
	if !isDef && name != "" {
		f.Check = strings.TrimPrefix(name, ".")
		if _, route := eff.RouteFor(f.Check); route != nil {
			f.Warns = append(f.Warns, "This destination has an SMTP route: "+routeNote+".")
		}
	}
	return f
}

func (s *Server) destinationForm(w http.ResponseWriter, r *http.Request, ss *session) {
	p := &page{Title: "Destination Controls", Nav: "destinations"}
	raw, eff, _, err := s.working()
	if err != nil {
		p.Error = err.Error()
		s.render(w, r, ss, http.StatusInternalServerError, "destinations", p)
		return
	}
	name := strings.ToLower(strings.TrimSpace(r.URL.Query().Get("name")))
	var d *config.Destination
	if name != "" {
		var ok bool
		if d, ok = raw.Destinations[name]; !ok && name != "default" {
			http.Error(w, "no destination entry "+name, http.StatusNotFound)
			return
		}
	}
	p.Data = s.destForm(eff, name, name == "", d)
	s.render(w, r, ss, http.StatusOK, "destination_form", p)
}

func (s *Server) destinationSave(w http.ResponseWriter, r *http.Request, ss *session) {
	p := &page{Title: "Destination Controls", Nav: "destinations"}
	raw, eff, _, err := s.working()
	if err != nil {
		p.Error = err.Error()
		s.render(w, r, ss, http.StatusInternalServerError, "destinations", p)
		return
	}
	v := r.PostForm.Get
	orig := strings.ToLower(strings.TrimSpace(v("orig")))
	isNew := orig == ""
	name := orig
	if isNew {
		name = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(v("name")), "."))
	}
	// Parse into a new entry; the form is shown again with the posted
	// values and errors when anything is wrong, and nothing is saved.
	d := &config.Destination{}
	f := s.destForm(eff, name, isNew, nil)
	for _, fl := range f.Fields {
		fl.Value = v(fl.Name)
		for i := range fl.Options {
			fl.Options[i].Selected = fl.Options[i].Value == fl.Value
		}
	}
	f.field("name").Value = name
	switch {
	case name == "":
		f.fail("name", "enter a domain (example.com) or .example.com for its subdomains")
	case isNew && name == "default":
		f.fail("name", "the default entry exists already; edit it instead")
	case isNew && raw.Destinations[name] != nil:
		f.fail("name", "an entry for "+name+" exists already; edit it instead")
	case !isNew && name != "default" && raw.Destinations[name] == nil:
		f.General = append(f.General, "the entry "+name+" no longer exists (abandoned or deleted meanwhile)")
	}
	optEnum(f, "ip_preference", v("ip_preference"), config.IPPreferences, &d.IPPreference)
	optInt(f, "max_concurrency", v("max_concurrency"), &d.MaxConcurrency)
	optInt(f, "max_messages_per_connection", v("max_messages_per_connection"), &d.MaxMessagesPerConnection)
	if c, m := strings.TrimSpace(v("recipient_limit.count")), strings.TrimSpace(v("recipient_limit.minutes")); c != "" || m != "" {
		d.RecipientLimit = &config.RecipientLimit{Count: reqInt(f, "recipient_limit.count", c), Minutes: reqInt(f, "recipient_limit.minutes", m)}
		if c == "" {
			f.fail("recipient_limit.count", "give the number of recipients (0: no limit)")
		}
	}
	optEnum(f, "limits_scope", v("limits_scope"), config.LimitScopes, &d.LimitsScope)
	optEnum(f, "limits_apply", v("limits_apply"), config.LimitApplies, &d.LimitsApply)
	if t := v("tls"); t != "" {
		m, err := tlspolicy.ParseMode(t)
		if err != nil {
			f.fail("tls", err.Error())
		} else {
			tm := config.TLSMode(m)
			d.TLS = &tm
		}
	}
	optEnum(f, "dane", v("dane"), config.DANEModes, &d.DANE)
	optBool(f, "mta_sts", v("mta_sts"), &d.MTASTS)
	optBool(f, "bounce_verification", v("bounce_verification"), &d.BounceVerification)
	if bp := v("bounce_profile"); bp != "" {
		d.BounceProfile = &bp
	}
	if !f.failed() {
		err = s.b.Edit(func(c *config.Config) error {
			if c.Destinations == nil {
				c.Destinations = map[string]*config.Destination{}
			}
			c.Destinations[name] = d
			return nil
		})
		if err == nil {
			done := "saved"
			if name == "default" && d.MTASTS != nil && *d.MTASTS {
				done = "saved-default-sts"
			}
			redirect(w, r, "/destinations", done)
			return
		}
		f.applyConfigError(err, "destinations."+name)
	}
	for k, msg := range f.Errs {
		f.General = append(f.General, k+": "+msg)
	}
	p.Error = "The change was not saved: correct the fields marked below."
	p.Data = f
	s.render(w, r, ss, http.StatusUnprocessableEntity, "destination_form", p)
}

func (s *Server) destinationDelete(w http.ResponseWriter, r *http.Request, ss *session) {
	name := r.PostForm.Get("name")
	if name == "default" || name == "" {
		http.Error(w, "the default entry cannot be deleted", http.StatusBadRequest)
		return
	}
	err := s.b.Edit(func(c *config.Config) error {
		if c.Destinations[name] == nil {
			return fmt.Errorf("there is no destination entry %s", name)
		}
		delete(c.Destinations, name)
		return nil
	})
	if err != nil {
		s.showDestinations(w, r, ss, http.StatusConflict, "Not deleted: "+err.Error())
		return
	}
	redirect(w, r, "/destinations", "deleted")
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
