package app

import (
	"context"
	"errors"
	"path/filepath"
	"sync"

	"outpost/internal/config"
	"outpost/internal/configstore"
	"outpost/internal/mtasts"
	"outpost/internal/qmgr"
	"outpost/internal/webui"
)

// startWebUI starts the administration web UI when the configuration has
// a webui: section. The returned stop is never nil and may be called more
// than once. Changes to webui: take effect at the next restart.
func (a *App) startWebUI() (stop func(), err error) {
	cfg := a.config()
	if cfg.WebUI == nil {
		return func() {}, nil
	}
	if a.store == nil {
		return nil, errors.New("webui: this server has no configuration store")
	}
	s, err := webui.New(webui.Options{Config: cfg.WebUI, DataDir: cfg.DataDir, Hostname: cfg.Hostname, Backend: webBackend{a}})
	if err != nil {
		return nil, err
	}
	if err := s.Start(); err != nil {
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(func() { s.Close() }) }, nil
}

// webBackend is the web UI's view of the running server: the same
// configuration store, commit path, queue, checker and mail log as the
// CLI and the control socket.
type webBackend struct{ a *App }

func (b webBackend) Working() (*config.Config, bool, error)   { return b.a.store.Working() }
func (b webBackend) Edit(fn func(*config.Config) error) error { return b.a.store.Edit(fn) }
func (b webBackend) Diff() (string, error)                    { return b.a.store.Diff() }
func (b webBackend) Clear() error                             { return b.a.store.Clear() }
func (b webBackend) History() ([]configstore.Commit, error)   { return b.a.store.History() }
func (b webBackend) List() []qmgr.Info                        { return b.a.q.List() }
func (b webBackend) Destinations() []qmgr.DestInfo            { return b.a.q.Destinations() }
func (b webBackend) Flush() int                               { return b.a.q.Flush() }
func (b webBackend) Delete(mid uint64) error                  { return b.a.q.Delete(mid) }
func (b webBackend) BounceNow(ctx context.Context, mid uint64) error {
	return b.a.q.BounceNow(ctx, mid)
}
func (b webBackend) TLSReport() []webui.TLSStat { return b.a.tlsReport.snapshot() }
func (b webBackend) MailLogDir() string         { return filepath.Join(b.a.dataDir, "logs", "mail_logs") }

// Commit makes the pending configuration live through the same path as
// `outpost commit` (configstore.Commit with Apply).
func (b webBackend) Commit(comment, user string) (*configstore.Commit, error) {
	return b.a.store.Commit(comment, user, b.a.Apply)
}

// Rollback re-applies an earlier commit, as `outpost rollback` does.
func (b webBackend) Rollback(id int, user string) (*configstore.Commit, error) {
	return b.a.store.Rollback(id, user, b.a.Apply)
}

// CheckMTASTS runs the checker as `outpost mta-sts check` does, with the
// live configuration's resolvers, trust store and proxy.
func (b webBackend) CheckMTASTS(ctx context.Context, domain string) *mtasts.Report {
	rt := b.a.cur.Load()
	cfg := rt.cfg
	proxy, err := ProxyURL(cfg)
	if err != nil {
		r := &mtasts.Report{Domain: domain, MX: []mtasts.MXCheck{}}
		r.Findings = append(r.Findings, mtasts.Finding{Check: "policy", Verdict: mtasts.Fail, Message: err.Error()})
		return r
	}
	return mtasts.Check(ctx, domain, mtasts.CheckOptions{
		Resolver: DNSAdapter{R: rt.dns}, Roots: rt.roots,
		Timeout: cfg.MTASTS.FetchTimeout.D(), Proxy: proxy,
		DialContext: ResolverDial(rt.dns, proxy),
		SMTPPort:    cfg.Delivery.Port, HeloName: cfg.Hostname,
	})
}
