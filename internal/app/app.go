// Package app is the one place that wires Outpost together: configuration,
// mail log, spool, resolver, planner, delivery client, queue manager,
// listeners, control socket and metrics. Every other package knows only the
// interfaces it consumes.
package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"outpost/internal/config"
	"outpost/internal/configstore"
	"outpost/internal/ctl"
	"outpost/internal/deliver"
	"outpost/internal/dsn"
	"outpost/internal/envelope"
	"outpost/internal/maillog"
	"outpost/internal/mtasts"
	"outpost/internal/planner"
	"outpost/internal/prvs"
	"outpost/internal/qmgr"
	"outpost/internal/reply"
	"outpost/internal/resolver"
	"outpost/internal/smtpd"
	"outpost/internal/spool"
)

// App is a running Outpost.
type App struct {
	dataDir  string
	log      *maillog.Logger
	spool    *spool.Spool
	q        *qmgr.Manager
	sts      *mtasts.Manager
	stsStore *mtasts.BoltStore
	ctl      *ctl.Server
	metrics  *metricsServer
	ids      *counter
	// tlsOutcomes counts delivery connections by TLS outcome and mode.
	tlsOutcomes *counterVec
	// tlsReport is the per-destination TLS report of the web UI (tlsreport.go).
	tlsReport tlsReport

	// cur is the live configuration with what is built from it; Apply
	// swaps it whole, so a reader sees one consistent generation.
	cur atomic.Pointer[runtime]

	store  *configstore.Store
	alerts tlsAlerts
	ipLim  ipLimits

	// mu serialises Apply and guards listeners.
	mu        sync.Mutex
	listeners []*listener
	runCtx    context.Context
	errc      chan error

	// prebound are sockets bound before a privilege drop (privdrop.go).
	preMu    sync.Mutex
	prebound map[string]net.Listener
}

// runtime is one generation of configuration-dependent parts.
type runtime struct {
	cfg    *config.Config
	dns    *resolver.Resolver
	roots  *x509.CertPool
	client *deliver.Client
	// gateways are delivery clients bound to virtual gateway sources.
	gateways map[string]*deliver.Client
	// bv tags senders and checks bounces (bounce verification).
	bv *prvs.Keys
}

// listener is one running SMTP listener and the configuration it runs.
type listener struct {
	key  string // the listener's configuration, for change detection
	addr string
	srv  *smtpd.Server
}

// New builds an App from a validated configuration; nothing is listening yet.
func New(cfg *config.Config) (*App, error) {
	a := &App{dataDir: cfg.DataDir, tlsOutcomes: newCounterVec("outcome", "mode")}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	lv, err := maillog.ParseLevel(cfg.Logs.Level)
	if err != nil {
		return nil, err
	}
	a.log, err = maillog.Open(filepath.Join(cfg.DataDir, "logs", "mail_logs"), maillog.Options{
		Level: lv, MaxSize: int64(cfg.Logs.MaxSize), MaxAge: cfg.Logs.MaxAge.D(), Keep: cfg.Logs.Keep, Syslog: cfg.Logs.Syslog})
	if err != nil {
		return nil, err
	}
	a.spool, err = spool.Open(filepath.Join(cfg.DataDir, "spool"), spool.Options{MinFree: int64(cfg.Logs.MinFreeDisk)})
	if err != nil {
		return nil, err
	}
	a.ids, err = openCounter(filepath.Join(cfg.DataDir, "spool", "conn-ids"))
	if err != nil {
		return nil, err
	}
	rt, err := a.build(cfg)
	if err != nil {
		return nil, err
	}
	a.cur.Store(rt)
	proxy, err := ProxyURL(cfg)
	if err != nil {
		return nil, err
	}
	a.stsStore, err = mtasts.OpenBoltStore(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("MTA-STS policy cache: %w", err)
	}
	a.sts, err = mtasts.New(context.Background(), mtasts.Options{Resolver: DNSAdapter{rt.dns}, Store: a.stsStore, Roots: rt.roots,
		FetchTimeout: cfg.MTASTS.FetchTimeout.D(), Proxy: proxy, DialContext: ResolverDial(rt.dns, proxy), DisableRefresh: !*cfg.MTASTS.Refresh, Log: a.log, ResolverLogsQueries: true})
	if err != nil {
		return nil, fmt.Errorf("MTA-STS: %w", err)
	}
	// The same profile and route views outpost explain uses (explain.go),
	// read from the live configuration generation.
	pl := &planner.Planner{DNS: dnsOf{a}, DANEDNS: dnsOf{a}, Log: a.log, STS: stsLookup{m: a.sts, log: a.log},
		Profile: func(domain string) planner.Profile { return PlannerProfile(a.config(), domain) },
		Route:   func(domain string) *planner.Route { return PlannerRoute(a.config(), domain) },
	}
	a.q = qmgr.New(qmgr.Options{
		Store: a.spool, Planner: pl, Dialer: dialer{a: a}, Bouncer: &bouncer{a: a},
		Profile: func(domain string) qmgr.Profile {
			c := a.config()
			p := c.Profile(domain)
			b := c.BounceProfile(p.BounceProfile)
			return qmgr.Profile{MaxConcurrency: p.MaxConcurrency, MaxMessagesPerConnection: p.MaxMessagesPerConnection,
				LimitsPerGateway: p.LimitsApply == "virtual-gateway", LimitsPerIP: p.LimitsScope == "mx-ip",
				RecipientLimit: p.RecipientLimit.Count, RecipientWindow: time.Duration(p.RecipientLimit.Minutes) * time.Minute,
				DelayWarnCount: delayCount(b), DelayWarnInterval: b.DelayWarnings.Interval.D(),
				BounceProfile: p.BounceProfile, InitialRetry: b.InitialRetry.D(), MaxRetryInterval: b.MaxRetryInterval.D(),
				MaxQueueLifetime: b.MaxQueueLifetime.D(), MaxRetries: b.MaxRetries}
		},
		Log: a.log, MaxConnections: cfg.Delivery.MaxConnections, MaxActive: cfg.Delivery.MaxActive,
	})
	return a, nil
}

// UseStore connects the configuration store whose commits the running
// server applies (outpost commit / rollback through the control socket).
func (a *App) UseStore(s *configstore.Store) { a.store = s }

// config is the live configuration.
func (a *App) config() *config.Config { return a.cur.Load().cfg }

// build makes the configuration-dependent parts of one generation.
func (a *App) build(cfg *config.Config) (*runtime, error) {
	rt := &runtime{cfg: cfg, gateways: map[string]*deliver.Client{}}
	rt.dns = resolver.New(cfg.DNS.Resolvers, resolver.WithTimeout(cfg.DNS.Timeout.D()), resolver.WithLog(a.log))
	var err error
	if rt.bv, err = prvs.NewKeys(cfg.BounceVerification.Keys); err != nil {
		return nil, fmt.Errorf("bounce_verification: %w", err)
	}
	if rt.roots, err = trustStore(cfg.TLS); err != nil {
		return nil, err
	}
	var clientCert *tls.Certificate
	if cc := cfg.TLS.ClientCert; cc != nil {
		c, err := tls.LoadX509KeyPair(cc.CertFile, cc.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.client_cert: %w", err)
		}
		clientCert = &c
	}
	opts := deliver.Options{
		Hostname: cfg.Hostname, Port: cfg.Delivery.Port, Roots: rt.roots, ClientCert: clientCert,
		Resolver: rt.dns, Log: a.log, NextDCID: a.ids.next,
		Timeouts: deliver.Timeouts{Connect: cfg.Delivery.ConnectTimeout.D()},
	}
	var plain net.Dialer
	opts.Dial = a.ipLim.dial(plain.DialContext)
	rt.client = deliver.New(opts)
	for name, g := range cfg.VirtualGateways {
		src, _ := netip.ParseAddr(g.Source)
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		o := opts
		o.Dial = a.ipLim.dial(d.DialContext)
		rt.gateways[name] = deliver.New(o)
	}
	return rt, nil
}

// newListener makes the SMTP server for listener i of cfg.
func (a *App) newListener(cfg *config.Config, i int) (*listener, error) {
	l := cfg.Listeners[i]
	sc := smtpd.Config{Hostname: cfg.Hostname, Address: l.Address, Name: l.Name, RelayFrom: l.Networks,
		MaxMessageSize: int64(l.MaxMessageSize), MaxRecipients: l.MaxRecipients,
		ReadTimeout: l.IdleTimeout.D(), TotalTimeout: l.SessionTimeout.D(),
		Log: a.log, NextICID: a.ids.next, Receiver: receiver{a: a, listener: i}}
	if l.TLS != nil {
		c, err := tls.LoadX509KeyPair(l.TLS.CertFile, l.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("listener %s tls: %w", l.Address, err)
		}
		sc.TLS = &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12}
	}
	if l.RejectInvalidBounces {
		// Read the live generation so a key change applies at commit.
		sc.BounceCheck = func(rcpt string) (string, error) {
			rt := a.cur.Load()
			return (&prvs.Checker{Keys: rt.bv, Domains: rt.cfg.BounceVerification.Domains}).Check(rcpt)
		}
	}
	s, err := smtpd.New(sc)
	if err != nil {
		return nil, fmt.Errorf("listener %s: %w", l.Address, err)
	}
	key, _ := json.Marshal(struct {
		L config.Listener
		H string
	}{l, cfg.Hostname})
	return &listener{key: string(key), addr: l.Address, srv: s}, nil
}

// startListener binds and serves a listener; a bind failure is returned.
func (a *App) startListener(l *listener) error {
	ln := a.takePrebound(l.addr) // bound before a privilege drop
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", l.addr); err != nil {
			return fmt.Errorf("listen %s: %w", l.addr, err)
		}
	}
	go func() {
		if err := l.srv.Serve(ln); err != nil {
			select {
			case a.errc <- err:
			default:
			}
		}
	}()
	return nil
}

// Apply makes a new configuration live without a restart: it builds the
// new resolver, trust store and delivery clients, starts changed listeners
// (binding first, so a bad address fails the commit while the old
// configuration keeps running), swaps the generation, and shuts the old
// listeners down gracefully, letting their sessions finish. data_dir cannot
// change while running; control, metrics, logs and mta_sts settings take
// effect at the next restart (the returned error is nil; warnings are logged).
func (a *App) Apply(cfg *config.Config) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.config()
	if cfg.DataDir != old.DataDir {
		return fmt.Errorf("data_dir cannot change while Outpost runs (from %s to %s): restart to move it", old.DataDir, cfg.DataDir)
	}
	rt, err := a.build(cfg)
	if err != nil {
		return err
	}
	keep := map[string]*listener{}
	for _, l := range a.listeners {
		keep[l.key] = l
	}
	var next, started []*listener
	for i := range cfg.Listeners {
		nl, err := a.newListener(cfg, i)
		if err != nil {
			return err
		}
		if l, ok := keep[nl.key]; ok {
			delete(keep, nl.key)
			next = append(next, l)
			continue
		}
		// A listener whose address an old one still holds is started
		// after the old one is shut down.
		next = append(next, nl)
		started = append(started, nl)
	}
	a.cur.Store(rt)
	for _, l := range keep {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		l.srv.Shutdown(ctx)
		cancel()
	}
	for _, l := range started {
		if err := a.startListener(l); err != nil {
			slog.Error("listener did not start after configuration change", "err", err)
			a.log.Warnf("Listener %s could not be started: %v", l.addr, err)
		}
	}
	a.listeners = next
	for _, w := range restartOnly(old, cfg) {
		a.log.Warnf("Configuration change of %s takes effect at the next restart", w)
	}
	a.log.Infof("Configuration committed and applied")
	return nil
}

func restartOnly(old, cfg *config.Config) []string {
	var out []string
	same := func(a, b any) bool {
		x, _ := json.Marshal(a)
		y, _ := json.Marshal(b)
		return string(x) == string(y)
	}
	if !same(old.Control, cfg.Control) {
		out = append(out, "control")
	}
	if !same(old.Metrics, cfg.Metrics) {
		out = append(out, "metrics")
	}
	if !same(old.Logs, cfg.Logs) {
		out = append(out, "logs")
	}
	if !same(old.MTASTS, cfg.MTASTS) {
		out = append(out, "mta_sts")
	}
	if !same(old.WebUI, cfg.WebUI) {
		out = append(out, "webui")
	}
	if old.Delivery.MaxConnections != cfg.Delivery.MaxConnections {
		out = append(out, "delivery.max_connections")
	}
	if old.Delivery.MaxActive != cfg.Delivery.MaxActive {
		out = append(out, "delivery.max_active")
	}
	return out
}

// dnsOf gives the planner the live resolver.
type dnsOf struct{ a *App }

func (d dnsOf) MX(ctx context.Context, domain string) ([]resolver.MX, resolver.Answer, error) {
	return d.a.cur.Load().dns.MX(ctx, domain)
}

func (d dnsOf) Addrs(ctx context.Context, host string) ([]netip.Addr, resolver.Answer, error) {
	return d.a.cur.Load().dns.Addrs(ctx, host)
}

func (d dnsOf) TLSA(ctx context.Context, port int, host string) ([]resolver.TLSA, resolver.Answer, error) {
	return d.a.cur.Load().dns.TLSA(ctx, port, host)
}

func trustStore(t config.TLS) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if t.UseSystemRoots() {
		if sys, err := x509.SystemCertPool(); err == nil {
			pool = sys
		}
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file %s: no PEM certificate found", t.CAFile)
		}
	}
	return pool, nil
}

// Run recovers the spool, starts everything and serves until ctx ends.
func (a *App) Run(ctx context.Context) error {
	a.spool.Start()
	recs, err := a.spool.Recover()
	if err != nil {
		return fmt.Errorf("spool recovery: %w", err)
	}
	cfg := a.config()
	slog.Info("outpost starting", "data_dir", cfg.DataDir, "recovered", len(recs))
	qctx, qcancel := context.WithCancel(context.Background())
	qdone := make(chan struct{})
	go func() { a.q.Run(qctx); close(qdone) }()
	stsDone := make(chan struct{})
	go func() { a.sts.Run(qctx); close(stsDone) }()
	for _, r := range recs {
		a.q.Submit(r)
	}
	sock := cfg.Control.Socket
	if !filepath.IsAbs(sock) {
		sock = filepath.Join(cfg.DataDir, sock)
	}
	a.ctl, err = ctl.Listen(sock, a.q, a.log, stsAdmin{a.sts}, configAdmin{a})
	if err != nil {
		qcancel()
		return err
	}
	if cfg.Metrics.Address != "" {
		a.metrics, err = startMetrics(cfg.Metrics.Address, a)
		if err != nil {
			qcancel()
			return err
		}
	}
	stopUI, err := a.startWebUI() // webui.go
	if err != nil {
		a.ctl.Close()
		qcancel()
		return err
	}
	defer stopUI()
	a.mu.Lock()
	a.errc = make(chan error, 16)
	for i := range cfg.Listeners {
		l, err := a.newListener(cfg, i)
		if err == nil {
			err = a.startListener(l)
		}
		if err != nil {
			a.mu.Unlock()
			a.ctl.Close()
			qcancel()
			return err
		}
		a.listeners = append(a.listeners, l)
	}
	a.mu.Unlock()
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-a.errc:
	}
	a.mu.Lock()
	for _, l := range a.listeners {
		l.srv.Close()
	}
	a.mu.Unlock()
	stopUI()
	a.ctl.Close()
	if a.metrics != nil {
		a.metrics.Close()
	}
	qcancel()
	<-qdone
	<-stsDone
	a.sts.Close()
	a.stsStore.Close()
	a.spool.Close()
	a.log.Close()
	return runErr
}

// receiver implements smtpd.Receiver over the spool and the queue.
type receiver struct {
	a        *App
	listener int
}

func (r receiver) NewMID() uint64 { return r.a.spool.NewMID() }

func (r receiver) CheckSpace() error { return r.a.spool.CheckSpace() }

func (r receiver) Accept(ctx context.Context, mid uint64, env *envelope.Envelope, body io.Reader) (int64, error) {
	if env.Time.IsZero() {
		env.Time = time.Now()
	}
	cfg := r.a.config()
	env.Gateway = cfg.Gateway(r.listener, env.From)
	hdr := receivedHeader(cfg.Hostname, env, mid)
	n, err := r.a.spool.Accept(mid, env, io.MultiReader(strings.NewReader(hdr), body))
	if err != nil {
		if errors.Is(err, spool.ErrNoSpace) {
			return 0, reply.New(452, "4.3.1", "Insufficient system storage")
		}
		var rr *reply.Reply
		if errors.As(err, &rr) {
			return 0, rr
		}
		slog.Error("accept failed", "mid", mid, "err", err)
		return 0, reply.New(451, "4.3.0", "Temporary local problem: message not stored")
	}
	st := make([]spool.State, len(env.Recipients))
	r.a.q.Submit(&spool.Record{MID: mid, Env: *env, Size: n, States: st})
	return n, nil
}

// receivedHeader is the RFC 5321 §4.4 trace field.
func receivedHeader(host string, env *envelope.Envelope, mid uint64) string {
	with := "ESMTP"
	if env.SMTPUTF8 {
		with = "UTF8SMTP"
	}
	return fmt.Sprintf("Received: from %s ([%s])\r\n\tby %s (Outpost) with %s id %d;\r\n\t%s\r\n",
		env.Helo, env.ClientIP, host, with, mid, env.Time.Format(time.RFC1123Z))
}

// bouncer implements qmgr.Bouncer: it stores a DSN as a new message.
type bouncer struct{ a *App }

func (b *bouncer) Bounce(ctx context.Context, m *qmgr.Message, failed []qmgr.Failure, action string) error {
	a := b.a
	cfg := a.config()
	if m.Env.From == "" {
		return nil // RFC 3461 §6.2 / RFC 5321 §6.1: never a DSN to the null sender
	}
	// The bounce profile of the (first) failed recipient's destination.
	bp := cfg.Bounce
	if len(failed) > 0 {
		bp = cfg.BounceProfile(cfg.Profile(envelope.Domain(m.Env.Recipients[failed[0].RID].Addr)).BounceProfile)
	}
	if !*bp.SendBounces {
		return nil
	}
	to := m.Env.From
	if bp.BounceAddress != "" {
		to = bp.BounceAddress // the profile's alternate bounce recipient
	}
	delayed := action == "delayed"
	rep := &dsn.Report{ReportingMTA: cfg.Hostname, EnvID: m.Env.EnvID, ArrivalDate: m.Env.Time, Sender: m.Env.From, RET: m.Env.RET}
	for _, f := range failed {
		rc := m.Env.Recipients[f.RID]
		if (!delayed && !rc.Notify.WantsFailure()) || (delayed && !rc.Notify.WantsDelay()) {
			continue
		}
		st := f.Reply.Class()
		if delayed {
			st = "4" + st[1:]
			rep.Recipients = append(rep.Recipients, dsn.Recipient{Addr: rc.Addr, ORCPT: rc.ORCPT, Action: "delayed", Status: st,
				RemoteMTA: f.RemoteMTA, Diagnostic: diagnostic(f), LastAttempt: time.Now(), Reason: reasonText(f),
				WillRetryUntil: m.Env.Time.Add(bp.MaxQueueLifetime.D())})
			continue
		}
		if st[0] != '5' {
			st = "5" + st[1:]
		}
		diag := ""
		if f.Reply.Remote {
			diag = "smtp; " + f.Reply.String()
		}
		rep.Recipients = append(rep.Recipients, dsn.Recipient{Addr: rc.Addr, ORCPT: rc.ORCPT, Action: "failed", Status: st,
			RemoteMTA: f.RemoteMTA, Diagnostic: diag, LastAttempt: time.Now(), Reason: reasonText(f),
			Expired: strings.HasPrefix(st, "5.4.7")})
	}
	if len(rep.Recipients) == 0 {
		return nil
	}
	body, _, err := a.spool.Body(m.MID)
	if err != nil {
		return err
	}
	defer body.Close()
	msg, err := dsn.Build(rep, body, dsn.Options{MaxCopy: int(bp.MaxBounceCopy)})
	if err != nil {
		return fmt.Errorf("build DSN for MID %d: %w", m.MID, err)
	}
	mid := a.spool.NewMID()
	env := &envelope.Envelope{From: "", Recipients: []envelope.Recipient{{Addr: to}}, Time: time.Now(), Helo: cfg.Hostname, ClientIP: "127.0.0.1"}
	n, err := a.spool.Accept(mid, env, strings.NewReader(string(msg)))
	if err != nil {
		return fmt.Errorf("store DSN for MID %d: %w", m.MID, err)
	}
	a.log.BounceGenerated(mid, m.MID)
	a.log.MIDReady(mid, n, "")
	a.log.MIDQueued(mid)
	a.q.Submit(&spool.Record{MID: mid, Env: *env, Size: n, States: make([]spool.State, 1)})
	return nil
}

func diagnostic(f qmgr.Failure) string {
	if f.Reply.Remote {
		return "smtp; " + f.Reply.String()
	}
	return ""
}

func delayCount(b config.Bounce) int {
	if b.DelayWarnings == nil || !b.DelayWarnings.Enabled {
		return 0
	}
	return b.DelayWarnings.Count
}

func reasonText(f qmgr.Failure) string {
	if f.Reason != "" {
		return f.Reason
	}
	if f.Reply.Remote {
		return "the destination server " + f.RemoteMTA + " refused the message: " + f.Reply.String()
	}
	return f.Reply.Text
}
