// Package webui is Outpost's administration web interface: server-rendered
// pages (html/template, templates and stylesheet embedded, no JavaScript)
// over HTTPS, inside the daemon.
//
// It has no model of its own. Every page reads and every action writes
// through Backend, which the app implements over the same parts the CLI
// uses: configuration edits are configstore pending edits (validated whole,
// refused whole), commits and rollbacks go through the running server's
// commit path (configstore.Commit with the live apply) and record the
// logged-in administrator, and the queue, MTA-STS checker and mail log are
// the daemon's own.
//
// Access: administrators are kept in <data_dir>/webui/users.json (bcrypt
// hashes, managed by `outpost adminuser`). Every page and action needs a
// session (else 303 to /login); the session cookie is HttpOnly, Secure,
// SameSite=Strict, a random 32-byte id, and ends after the idle timeout.
// Every POST carries the session's CSRF token in a hidden field (else 403).
// Failed logins are limited per client IP and per user name (429).
package webui

import (
	"context"
	"crypto/tls"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"outpost/internal/config"
	"outpost/internal/configstore"
	"outpost/internal/mtasts"
	"outpost/internal/qmgr"
)

// ConfigStore is the pending-configuration side (configstore.Store).
type ConfigStore interface {
	// Working returns the raw configuration edits apply to and whether
	// it is pending.
	Working() (*config.Config, bool, error)
	// Edit applies fn, validates the whole result and stores it as
	// pending; a change that does not validate is refused whole.
	Edit(fn func(raw *config.Config) error) error
	Diff() (string, error)
	Clear() error
	History() ([]configstore.Commit, error)
}

// Committer makes configuration live in the running server.
type Committer interface {
	Commit(comment, user string) (*configstore.Commit, error)
	Rollback(id int, user string) (*configstore.Commit, error)
}

// Queue is the queue manager's admin side.
type Queue interface {
	List() []qmgr.Info
	Destinations() []qmgr.DestInfo
	Flush() int
	Delete(mid uint64) error
	BounceNow(ctx context.Context, mid uint64) error
}

// Backend is everything the web UI needs of the running server.
type Backend interface {
	ConfigStore
	Committer
	Queue
	// CheckMTASTS runs the MTA-STS checker with the gateway's resolvers,
	// trust store and proxy (as `outpost mta-sts check`).
	CheckMTASTS(ctx context.Context, domain string) *mtasts.Report
	// TLSReport lists per-destination TLS connection outcomes.
	TLSReport() []TLSStat
	// MailLogDir is the directory holding mail.current and rolled files.
	MailLogDir() string
}

// TLSStat is one destination's TLS connection outcomes since start.
type TLSStat struct {
	Domain    string
	Success   int // connections with TLS negotiated
	Failed    int // connections that failed at TLS or for a TLS requirement
	Plaintext int // connections made without TLS
	// MTASTSMode is off, none (no policy), testing or enforce;
	// MTASTSOutcome success or failed ("" when not applied).
	MTASTSMode, MTASTSOutcome string
	// DANEOutcome is success or failed when DANE applied ("" otherwise).
	DANEOutcome string
	LastError   string
	LastErrorAt time.Time
	Last        time.Time
}

// Options configure a Server.
type Options struct {
	Config  *config.WebUI
	DataDir string
	// Hostname goes into a generated certificate.
	Hostname string
	Backend  Backend
	// Now is the clock (sessions, rate limits); nil means time.Now.
	Now func() time.Time
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Server is the web UI.
type Server struct {
	opts     Options
	b        Backend
	users    *Users
	sessions *sessions
	limiter  *limiter
	pages    map[string]*template.Template
	handler  http.Handler
	srv      *http.Server
}

// Dir is the web UI's directory under the data directory.
func Dir(dataDir string) string { return filepath.Join(dataDir, "webui") }

// New builds the web UI (nothing is listening yet).
func New(o Options) (*Server, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Config == nil {
		o.Config = &config.WebUI{}
	}
	idle := o.Config.IdleTimeout.D()
	if idle <= 0 {
		idle = 30 * time.Minute
	}
	s := &Server{opts: o, b: o.Backend, users: OpenUsers(Dir(o.DataDir)),
		sessions: newSessions(idle, o.Now), limiter: newLimiter(5, time.Minute, o.Now)}
	var err error
	if s.pages, err = parseTemplates(); err != nil {
		return nil, err
	}
	s.handler = s.routes()
	return s, nil
}

// Handler serves the web UI (for tests; Start serves it over TLS).
func (s *Server) Handler() http.Handler { return s.handler }

// Start listens on the configured address with the configured certificate
// (or the generated one) and serves until Close.
func (s *Server) Start() error {
	cert, err := s.certificate()
	if err != nil {
		return err
	}
	addr := s.opts.Config.Address
	if addr == "" {
		addr = config.DefaultWebUIAddress
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("web UI listener: %w", err)
	}
	s.srv = &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute,
		WriteTimeout: 10 * time.Minute, IdleTimeout: 2 * time.Minute,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	go func() {
		if err := s.srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			slog.Error("web UI stopped", "err", err)
		}
	}()
	slog.Info("web UI listening", "address", "https://"+ln.Addr().String()+"/")
	return nil
}

// Close stops serving, letting requests in flight finish for a moment.
func (s *Server) Close() error {
	if s.srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}

func staticFiles() http.Handler {
	sub, _ := fs.Sub(staticFS, "static")
	return http.StripPrefix("/static/", http.FileServer(http.FS(sub)))
}
