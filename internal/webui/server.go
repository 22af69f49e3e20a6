package webui

import (
	"bytes"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// page is what every template receives.
type page struct {
	Title   string
	Nav     string // the active navigation entry
	User    string
	CSRF    string
	Pending bool
	Flash   string
	Warning string
	Error   string
	Data    any
}

// pageNames are the templates besides layout.html.
var pageNames = []string{"login", "destinations", "destination_form", "commit", "routes", "route_form",
	"bounce_profiles", "bounce_form", "check", "monitor", "logs"}

func parseTemplates() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"when": func(t time.Time) string {
			if t.IsZero() {
				return "-"
			}
			return t.Local().Format("2006-01-02 15:04:05")
		},
		"ago": func(t time.Time) string {
			if t.IsZero() {
				return "-"
			}
			return time.Since(t).Round(time.Second).String()
		},
		"join":     strings.Join,
		"domainOf": func(name string) string { return strings.TrimPrefix(name, ".") },
		"query":    url.QueryEscape,
	}
	base, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("web UI templates: %w", err)
	}
	out := map[string]*template.Template{}
	for _, n := range pageNames {
		t, err := template.Must(base.Clone()).ParseFS(templateFS, "templates/"+n+".html")
		if err != nil {
			return nil, fmt.Errorf("web UI template %s: %w", n, err)
		}
		out[n] = t
	}
	return out, nil
}

// render writes a page; a template failure is a 500 with nothing partial sent.
func (s *Server) render(w http.ResponseWriter, r *http.Request, ss *session, status int, name string, p *page) {
	if ss != nil {
		p.User, p.CSRF = ss.user, ss.csrf
		if _, pending, err := s.b.Working(); err == nil {
			p.Pending = pending
		}
	}
	if p.Flash == "" {
		p.Flash = flashes[r.URL.Query().Get("done")]
	}
	var buf bytes.Buffer
	if err := s.pages[name].ExecuteTemplate(&buf, "layout", p); err != nil {
		slog.Error("web UI template", "page", name, "err", err)
		http.Error(w, "internal error rendering the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// flashes are the confirmation messages a redirect can ask for (?done=…).
var flashes = map[string]string{
	"saved":             "The change is pending. Use Commit Changes to make it live.",
	"saved-default-sts": "The change is pending. Warning: " + defaultSTSWarning,
	"deleted":           "The entry is removed (pending). Use Commit Changes to make it live.",
	"committed":         "Changes committed: the running server uses them now.",
	"abandoned":         "Pending changes abandoned.",
	"rolledback":        "Rolled back: the earlier configuration is live again.",
	"flushed":           "Deferred messages are scheduled for delivery now.",
	"bounced":           "The message's pending recipients were bounced to its sender.",
	"removed":           "The message was deleted from the queue (no bounce).",
}

// secure adds the headers every response carries.
func secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Strict-Transport-Security", "max-age=31536000")
		if !strings.HasPrefix(r.URL.Path, "/static/") {
			hd.Set("Cache-Control", "no-store")
		}
		h.ServeHTTP(w, r)
	})
}

type authedFunc func(w http.ResponseWriter, r *http.Request, ss *session)

// authed requires a session (else 303 to /login) and, for POST, the
// session's CSRF token (else 403).
func (s *Server) authed(h authedFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ss *session
		if c, err := r.Cookie(sessionCookie); err == nil {
			ss = s.sessions.get(c.Value)
		}
		if ss == nil {
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
			if err := r.ParseForm(); err != nil {
				http.Error(w, "bad form: "+err.Error(), http.StatusBadRequest)
				return
			}
			if !tokensEqual(r.PostForm.Get("csrf"), ss.csrf) {
				http.Error(w, "Forbidden: this form has no valid CSRF token. Reload the page and try again.", http.StatusForbidden)
				return
			}
		}
		h(w, r, ss)
	})
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /static/", staticFiles())
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/static/favicon.svg", http.StatusMovedPermanently)
	})
	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("POST /login", s.login)
	a := func(pattern string, h authedFunc) { mux.Handle(pattern, s.authed(h)) }
	a("/", func(w http.ResponseWriter, r *http.Request, ss *session) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		http.Redirect(w, r, "/destinations", http.StatusSeeOther)
	})
	a("POST /logout", s.logout)
	a("GET /destinations", s.destinations)
	a("GET /destinations/edit", s.destinationForm)
	a("POST /destinations/save", s.destinationSave)
	a("POST /destinations/delete", s.destinationDelete)
	a("GET /routes", s.routesPage)
	a("GET /routes/edit", s.routeForm)
	a("POST /routes/save", s.routeSave)
	a("POST /routes/delete", s.routeDelete)
	a("GET /bounce-profiles", s.bounceProfiles)
	a("GET /bounce-profiles/edit", s.bounceForm)
	a("POST /bounce-profiles/save", s.bounceSave)
	a("POST /bounce-profiles/delete", s.bounceDelete)
	a("GET /commit", s.commitPage)
	a("POST /commit", s.commit)
	a("POST /commit/abandon", s.abandon)
	a("POST /commit/rollback", s.rollback)
	a("GET /mta-sts/check", s.check)
	a("GET /monitor", s.monitor)
	a("POST /monitor/flush", s.flush)
	a("POST /monitor/message", s.messageAction)
	a("GET /logs", s.logs)
	return secure(mux)
}

// ---- login ----

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil && s.sessions.get(c.Value) != nil {
		http.Redirect(w, r, "/destinations", http.StatusSeeOther)
		return
	}
	// Keep a token the browser already has: a second load of the login
	// page (another tab, a redirected favicon request) must not invalidate
	// the form shown first.
	tok := ""
	if c, err := r.Cookie(loginCookie); err == nil && tokenRE.MatchString(c.Value) {
		tok = c.Value
	} else {
		tok = randomToken()
	}
	setCookie(w, loginCookie, tok, 3600)
	s.render(w, r, nil, http.StatusOK, "login", &page{Title: "Log in", CSRF: tok})
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	c, err := r.Cookie(loginCookie)
	if err != nil || !tokensEqual(r.PostForm.Get("csrf"), c.Value) {
		http.Error(w, "Forbidden: the login form has no valid CSRF token. Reload the login page and try again.", http.StatusForbidden)
		return
	}
	name := strings.TrimSpace(r.PostForm.Get("user"))
	keys := []string{"ip " + clientIP(r), "user " + strings.ToLower(name)}
	p := &page{Title: "Log in", CSRF: c.Value, Data: name}
	if blocked, wait := s.limiter.blocked(keys...); blocked {
		secs := int(wait.Seconds() + 0.999)
		w.Header().Set("Retry-After", fmt.Sprint(secs))
		p.Error = fmt.Sprintf("Too many failed login attempts from this address or for this user. Try again in %d seconds.", secs)
		s.render(w, r, nil, http.StatusTooManyRequests, "login", p)
		return
	}
	if name == "" || !s.users.Verify(name, r.PostForm.Get("password")) {
		s.limiter.fail(keys...)
		slog.Warn("web UI login failed", "user", name, "client", clientIP(r))
		p.Error = "Wrong user name or password."
		s.render(w, r, nil, http.StatusUnauthorized, "login", p)
		return
	}
	ss := s.sessions.create(name)
	setCookie(w, sessionCookie, ss.id, 0)
	setCookie(w, loginCookie, "", -1)
	slog.Info("web UI login", "user", name, "client", clientIP(r))
	http.Redirect(w, r, "/destinations", http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, ss *session) {
	s.sessions.delete(ss.id)
	setCookie(w, sessionCookie, "", -1)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

var tokenRE = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)

// redirect answers a successful POST (303, so a reload does not repeat it).
func redirect(w http.ResponseWriter, r *http.Request, path, done string) {
	if done != "" {
		path += "?done=" + done
	}
	http.Redirect(w, r, path, http.StatusSeeOther)
}
