package webui

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"outpost/internal/config"
)

// ---- Network > SMTP Routes ----

type routeRow struct {
	Name, Kind, Hosts string
	MTASTS            bool
}

func (s *Server) routesPage(w http.ResponseWriter, r *http.Request, ss *session) {
	s.showRoutes(w, r, ss, http.StatusOK, "")
}

func (s *Server) showRoutes(w http.ResponseWriter, r *http.Request, ss *session, status int, errText string) {
	p := &page{Title: "SMTP Routes", Nav: "routes", Error: errText}
	raw, _, _, err := s.working()
	if err != nil {
		p.Error = err.Error()
		status = http.StatusInternalServerError
	} else {
		var rows []routeRow
		for _, name := range sortedKeys(raw.SMTPRoutes) {
			rt := raw.SMTPRoutes[name]
			row := routeRow{Name: name, MTASTS: rt.MTASTS}
			switch {
			case rt.Discard:
				row.Kind, row.Hosts = "/dev/null", "mail is discarded"
			case rt.UseDNS:
				row.Kind, row.Hosts = "USEDNS", "MX lookup of the domain"
			default:
				row.Kind = "hosts"
				var hs []string
				for _, h := range rt.Hosts {
					x := h.Host
					if h.Port != 0 {
						x += ":" + strconv.Itoa(h.Port)
					}
					hs = append(hs, fmt.Sprintf("%s (priority %d)", x, h.Priority))
				}
				row.Hosts = strings.Join(hs, ", ")
			}
			rows = append(rows, row)
		}
		p.Data = struct {
			Rows []routeRow
			Note string
		}{rows, routeNote}
	}
	s.render(w, r, ss, status, "routes", p)
}

// routeHostRow is one editable host line of the route form.
type routeHostRow struct {
	Host, Port, Priority *field
}

type routeForm struct {
	*form
	Kind  string
	Hosts []routeHostRow
}

func newRouteForm(name string, isNew bool, rt *config.Route) *routeForm {
	if rt == nil {
		rt = &config.Route{}
	}
	kind := "hosts"
	switch {
	case rt.Discard:
		kind = "discard"
	case rt.UseDNS:
		kind = "usedns"
	}
	f := &routeForm{form: &form{Action: "/routes/save", Orig: name, New: isNew, Fields: []*field{
		{Name: "name", Label: "Receiving domain", Kind: "text", Value: name, ReadOnly: !isNew,
			Help: "example.com, .example.com for its subdomains, or ALL for every domain without a route."},
		{Name: "kind", Label: "Destination", Kind: "radio", Options: opts(kind,
			"hosts", "These hosts", "usedns", "USEDNS (MX lookup)", "discard", "/dev/null (discard the mail)")},
		{Name: "mta_sts", Label: "Apply the route host's own MTA-STS policy", Kind: "radio", Options: opts(boolStr(&rt.MTASTS), "no", "No", "yes", "Yes"),
			Help: "RFC 8461 §3.4 (smart host): the host's domain policy, never the recipient domain's."},
	}}, Kind: kind}
	if isNew {
		f.Title = "Add SMTP Route"
	} else {
		f.Title = "Edit SMTP Route: " + name
	}
	f.Notes = []string{routeNote + "."}
	for i := 0; i < len(rt.Hosts)+2; i++ {
		var h config.RouteHost
		if i < len(rt.Hosts) {
			h = rt.Hosts[i]
		}
		port := ""
		if h.Port != 0 {
			port = strconv.Itoa(h.Port)
		}
		pri := ""
		if h.Host != "" {
			pri = strconv.Itoa(h.Priority)
		}
		f.addHostRow(i, h.Host, port, pri)
	}
	return f
}

func (f *routeForm) addHostRow(i int, host, port, pri string) {
	k := fmt.Sprintf("hosts[%d]", i)
	row := routeHostRow{
		Host:     &field{Name: k + ".host", Label: "Host", Kind: "text", Value: host},
		Port:     &field{Name: k + ".port", Label: "Port", Kind: "number", Value: port},
		Priority: &field{Name: k + ".priority", Label: "Priority", Kind: "number", Value: pri},
	}
	f.Hosts = append(f.Hosts, row)
	f.Fields = append(f.Fields, row.Host, row.Port, row.Priority)
}

func (s *Server) routeForm(w http.ResponseWriter, r *http.Request, ss *session) {
	raw, _, _, err := s.working()
	if err != nil {
		s.showRoutes(w, r, ss, http.StatusInternalServerError, err.Error())
		return
	}
	name := strings.TrimSpace(r.URL.Query().Get("name"))
	var rt *config.Route
	if name != "" {
		if rt = raw.SMTPRoutes[name]; rt == nil {
			http.Error(w, "no SMTP route "+name, http.StatusNotFound)
			return
		}
	}
	s.render(w, r, ss, http.StatusOK, "route_form", &page{Title: "SMTP Routes", Nav: "routes", Data: newRouteForm(name, name == "", rt)})
}

func (s *Server) routeSave(w http.ResponseWriter, r *http.Request, ss *session) {
	raw, _, _, err := s.working()
	if err != nil {
		s.showRoutes(w, r, ss, http.StatusInternalServerError, err.Error())
		return
	}
	v := r.PostForm.Get
	orig := strings.TrimSpace(v("orig"))
	isNew := orig == ""
	name := orig
	if isNew {
		name = strings.TrimSuffix(strings.TrimSpace(v("name")), ".")
		if !strings.EqualFold(name, "ALL") {
			name = strings.ToLower(name)
		} else {
			name = "ALL"
		}
	}
	// Rebuild the form from what was posted.
	f := newRouteForm(name, isNew, nil)
	f.Kind = v("kind")
	f.Fields = f.Fields[:3]
	f.Hosts = nil
	rt := &config.Route{}
	n := 0
	for i := 0; i < 1000; i++ {
		k := fmt.Sprintf("hosts[%d]", i)
		if _, ok := r.PostForm[k+".host"]; !ok {
			break
		}
		host := strings.TrimSpace(v(k + ".host"))
		port, pri := strings.TrimSpace(v(k+".port")), strings.TrimSpace(v(k+".priority"))
		if host == "" && port == "" && pri == "" {
			continue
		}
		// Rows are renumbered without the blank ones, so the
		// configuration's hosts[i] errors name the right row.
		f.addHostRow(n, host, port, pri)
		key := fmt.Sprintf("hosts[%d]", n)
		if host == "" {
			f.fail(key+".host", "enter a host name or IP address")
		}
		rt.Hosts = append(rt.Hosts, config.RouteHost{Host: host, Port: reqInt(f.form, key+".port", port), Priority: reqInt(f.form, key+".priority", pri)})
		n++
	}
	f.addHostRow(n, "", "", "")
	f.addHostRow(n+1, "", "", "")
	for _, fl := range f.Fields[:3] {
		fl.Value = v(fl.Name)
		for i := range fl.Options {
			fl.Options[i].Selected = fl.Options[i].Value == fl.Value
		}
	}
	f.field("name").Value = name
	switch f.Kind {
	case "usedns":
		rt.UseDNS = true
	case "discard":
		rt.Discard = true
	case "hosts":
		if len(rt.Hosts) == 0 {
			f.fail("kind", "give at least one host, or choose USEDNS or /dev/null")
		}
	default:
		f.fail("kind", "choose hosts, USEDNS or /dev/null")
	}
	if f.Kind != "hosts" {
		rt.Hosts = nil
	}
	rt.MTASTS = v("mta_sts") == "yes"
	switch {
	case name == "":
		f.fail("name", "enter a domain, .domain or ALL")
	case isNew && raw.SMTPRoutes[name] != nil:
		f.fail("name", "a route for "+name+" exists already; edit it instead")
	}
	if !f.failed() {
		err = s.b.Edit(func(c *config.Config) error {
			if c.SMTPRoutes == nil {
				c.SMTPRoutes = map[string]*config.Route{}
			}
			c.SMTPRoutes[name] = rt
			return nil
		})
		if err == nil {
			redirect(w, r, "/routes", "saved")
			return
		}
		f.applyConfigError(err, "smtp_routes."+name)
	}
	for k, msg := range f.Errs {
		f.General = append(f.General, k+": "+msg)
	}
	p := &page{Title: "SMTP Routes", Nav: "routes", Error: "The change was not saved: correct the fields marked below.", Data: f}
	s.render(w, r, ss, http.StatusUnprocessableEntity, "route_form", p)
}

func (s *Server) routeDelete(w http.ResponseWriter, r *http.Request, ss *session) {
	name := r.PostForm.Get("name")
	err := s.b.Edit(func(c *config.Config) error {
		if c.SMTPRoutes[name] == nil {
			return fmt.Errorf("there is no SMTP route %s", name)
		}
		delete(c.SMTPRoutes, name)
		return nil
	})
	if err != nil {
		s.showRoutes(w, r, ss, http.StatusConflict, "Not deleted: "+err.Error())
		return
	}
	redirect(w, r, "/routes", "deleted")
}

// ---- Network > Bounce Profiles ----

type bounceRow struct {
	Name                                                   string
	MaxRetries, Lifetime, Initial, MaxInterval, Send, Addr string
	Copy, Delay                                            string
	UsedBy                                                 []string
}

func (s *Server) bounceProfiles(w http.ResponseWriter, r *http.Request, ss *session) {
	s.showBounce(w, r, ss, http.StatusOK, "")
}

func (s *Server) showBounce(w http.ResponseWriter, r *http.Request, ss *session, status int, errText string) {
	p := &page{Title: "Bounce Profiles", Nav: "bounce", Error: errText}
	_, eff, _, err := s.working()
	if err != nil {
		p.Error = err.Error()
		s.render(w, r, ss, http.StatusInternalServerError, "bounce_profiles", p)
		return
	}
	var rows []bounceRow
	for _, name := range append([]string{"Default"}, sortedKeys(eff.BounceProfiles)...) {
		b := eff.BounceProfile(name)
		row := bounceRow{Name: name, MaxRetries: strconv.Itoa(b.MaxRetries), Lifetime: b.MaxQueueLifetime.String(),
			Initial: b.InitialRetry.String(), MaxInterval: b.MaxRetryInterval.String(), Send: yesNo(*b.SendBounces),
			Addr: b.BounceAddress, Copy: strconv.FormatInt(int64(b.MaxBounceCopy), 10) + " bytes", Delay: "No"}
		if row.Addr == "" {
			row.Addr = "the sender"
		}
		if dw := b.DelayWarnings; dw != nil && dw.Enabled {
			row.Delay = fmt.Sprintf("Yes, every %s, at most %d", dw.Interval, dw.Count)
		}
		for _, dn := range eff.DestinationNames() {
			if eff.Profile(dn).BounceProfile == name {
				row.UsedBy = append(row.UsedBy, dn)
			}
		}
		rows = append(rows, row)
	}
	p.Data = rows
	s.render(w, r, ss, status, "bounce_profiles", p)
}

func newBounceForm(name string, isNew bool, b *config.Bounce) *form {
	if b == nil {
		b = &config.Bounce{}
	}
	dw := b.DelayWarnings
	dwEnabled, dwInterval, dwCount := "", "", ""
	if dw != nil {
		dwEnabled = boolStr(&dw.Enabled)
		dwInterval = durStr(dw.Interval)
		if dw.Count != 0 {
			dwCount = strconv.Itoa(dw.Count)
		}
	}
	retries, bcopy := "", ""
	if b.MaxRetries != 0 {
		retries = strconv.Itoa(b.MaxRetries)
	}
	if b.MaxBounceCopy != 0 {
		bcopy = strconv.FormatInt(int64(b.MaxBounceCopy), 10)
	}
	inherit := "blank: the Default profile's value"
	if name == "Default" {
		inherit = "blank: the built-in default"
	}
	f := &form{Action: "/bounce-profiles/save", Orig: name, New: isNew, Fields: []*field{
		{Name: "name", Label: "Profile name", Kind: "text", Value: name, ReadOnly: !isNew, Help: "Starts with a letter or underscore."},
		{Name: "max_retries", Label: "Maximum number of retries", Kind: "number", Value: retries, Help: "1-10000; " + inherit + " (100)."},
		{Name: "max_queue_lifetime", Label: "Maximum time in queue", Kind: "text", Value: durStr(b.MaxQueueLifetime), Help: "e.g. 72h; " + inherit + "."},
		{Name: "initial_retry", Label: "Initial time to wait per retry", Kind: "text", Value: durStr(b.InitialRetry), Help: "e.g. 60s; " + inherit + "."},
		{Name: "max_retry_interval", Label: "Maximum time to wait per retry", Kind: "text", Value: durStr(b.MaxRetryInterval), Help: "e.g. 1h; " + inherit + "."},
		{Name: "send_bounces", Label: "Send hard bounce messages", Kind: "radio", Options: opts(boolStr(b.SendBounces), "", "Default", "no", "No", "yes", "Yes")},
		{Name: "bounce_address", Label: "Alternate bounce address", Kind: "text", Value: b.BounceAddress, Help: "DSNs go here instead of to the sender; blank: the sender (or the Default profile's)."},
		{Name: "max_bounce_copy", Label: "Copy of the message in a DSN, at most", Kind: "text", Value: bcopy, Help: "e.g. 10KB; " + inherit + "."},
		{Name: "delay_warnings.enabled", Label: "Send delay warning messages", Kind: "radio", Options: opts(dwEnabled, "", "Default", "no", "No", "yes", "Yes")},
		{Name: "delay_warnings.interval", Label: "Minimum time between delay warnings", Kind: "text", Value: dwInterval, Help: "e.g. 4h."},
		{Name: "delay_warnings.count", Label: "Maximum delay warnings per message", Kind: "number", Value: dwCount, Help: "1-100."},
	}}
	if isNew {
		f.Title = "Add Bounce Profile"
	} else {
		f.Title = "Edit Bounce Profile: " + name
	}
	return f
}

func (s *Server) bounceForm(w http.ResponseWriter, r *http.Request, ss *session) {
	raw, _, _, err := s.working()
	if err != nil {
		s.showBounce(w, r, ss, http.StatusInternalServerError, err.Error())
		return
	}
	name := strings.TrimSpace(r.URL.Query().Get("name"))
	var b *config.Bounce
	switch {
	case name == "Default":
		b = &raw.Bounce
	case name != "":
		if b = raw.BounceProfiles[name]; b == nil {
			http.Error(w, "no bounce profile "+name, http.StatusNotFound)
			return
		}
	}
	s.render(w, r, ss, http.StatusOK, "bounce_form", &page{Title: "Bounce Profiles", Nav: "bounce", Data: newBounceForm(name, name == "", b)})
}

func (s *Server) bounceSave(w http.ResponseWriter, r *http.Request, ss *session) {
	raw, _, _, err := s.working()
	if err != nil {
		s.showBounce(w, r, ss, http.StatusInternalServerError, err.Error())
		return
	}
	v := r.PostForm.Get
	orig := strings.TrimSpace(v("orig"))
	isNew := orig == ""
	name := orig
	if isNew {
		name = strings.TrimSpace(v("name"))
	}
	f := newBounceForm(name, isNew, nil)
	for _, fl := range f.Fields {
		fl.Value = v(fl.Name)
		for i := range fl.Options {
			fl.Options[i].Selected = fl.Options[i].Value == fl.Value
		}
	}
	f.field("name").Value = name
	switch {
	case name == "":
		f.fail("name", "enter a name")
	case isNew && (name == "Default" || raw.BounceProfiles[name] != nil):
		f.fail("name", "a profile named "+name+" exists already; edit it instead")
	}
	b := &config.Bounce{}
	b.MaxRetries = reqInt(f, "max_retries", v("max_retries"))
	b.MaxQueueLifetime = duration(f, "max_queue_lifetime", v("max_queue_lifetime"))
	b.InitialRetry = duration(f, "initial_retry", v("initial_retry"))
	b.MaxRetryInterval = duration(f, "max_retry_interval", v("max_retry_interval"))
	optBool(f, "send_bounces", v("send_bounces"), &b.SendBounces)
	b.BounceAddress = strings.TrimSpace(v("bounce_address"))
	b.MaxBounceCopy = size(f, "max_bounce_copy", v("max_bounce_copy"))
	switch en := v("delay_warnings.enabled"); en {
	case "":
		if strings.TrimSpace(v("delay_warnings.interval")) != "" || strings.TrimSpace(v("delay_warnings.count")) != "" {
			f.fail("delay_warnings.enabled", "choose No or Yes to set the delay warning interval or count")
		}
	case "yes", "no":
		b.DelayWarnings = &config.DelayWarnings{Enabled: en == "yes",
			Interval: duration(f, "delay_warnings.interval", v("delay_warnings.interval")),
			Count:    reqInt(f, "delay_warnings.count", v("delay_warnings.count"))}
	default:
		f.fail("delay_warnings.enabled", "choose Default, No or Yes")
	}
	if !f.failed() {
		err = s.b.Edit(func(c *config.Config) error {
			if name == "Default" {
				c.Bounce = *b
				return nil
			}
			if c.BounceProfiles == nil {
				c.BounceProfiles = map[string]*config.Bounce{}
			}
			c.BounceProfiles[name] = b
			return nil
		})
		if err == nil {
			redirect(w, r, "/bounce-profiles", "saved")
			return
		}
		prefix := "bounce_profiles." + name
		if name == "Default" {
			prefix = "bounce"
		}
		f.applyConfigError(err, prefix)
	}
	for k, msg := range f.Errs {
		f.General = append(f.General, k+": "+msg)
	}
	p := &page{Title: "Bounce Profiles", Nav: "bounce", Error: "The change was not saved: correct the fields marked below.", Data: f}
	s.render(w, r, ss, http.StatusUnprocessableEntity, "bounce_form", p)
}

func (s *Server) bounceDelete(w http.ResponseWriter, r *http.Request, ss *session) {
	name := r.PostForm.Get("name")
	err := s.b.Edit(func(c *config.Config) error {
		if name == "Default" {
			return fmt.Errorf("the Default profile cannot be deleted")
		}
		if c.BounceProfiles[name] == nil {
			return fmt.Errorf("there is no bounce profile %s", name)
		}
		delete(c.BounceProfiles, name)
		return nil
	})
	if err != nil {
		s.showBounce(w, r, ss, http.StatusConflict, "Not deleted: "+err.Error())
		return
	}
	redirect(w, r, "/bounce-profiles", "deleted")
}
