// Package app is the one place that wires Outpost together: configuration,
// mail log, spool, resolver, planner, delivery client, queue manager,
// listeners, control socket and metrics. Every other package knows only the
// interfaces it consumes.
package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"outpost/internal/config"
	"outpost/internal/ctl"
	"outpost/internal/deliver"
	"outpost/internal/dsn"
	"outpost/internal/envelope"
	"outpost/internal/maillog"
	"outpost/internal/mtasts"
	"outpost/internal/planner"
	"outpost/internal/qmgr"
	"outpost/internal/reply"
	"outpost/internal/resolver"
	"outpost/internal/smtpd"
	"outpost/internal/spool"
)

// App is a running Outpost.
type App struct {
	cfg      *config.Config
	log      *maillog.Logger
	spool    *spool.Spool
	dns      *resolver.Resolver
	client   *deliver.Client
	q        *qmgr.Manager
	sts      *mtasts.Manager
	stsStore *mtasts.BoltStore
	roots    *x509.CertPool
	servers  []*smtpd.Server
	ctl      *ctl.Server
	metrics  *metricsServer
	ids      *counter
	// tlsOutcomes counts delivery connections by TLS outcome and mode.
	tlsOutcomes *prometheus.CounterVec
}

// New builds an App from a validated configuration; nothing is listening yet.
func New(cfg *config.Config) (*App, error) {
	a := &App{cfg: cfg, tlsOutcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "outpost", Name: "tls_connections_total",
		Help: "Delivery connection attempts by TLS outcome (success, failed, plaintext) and destination TLS mode."}, []string{"outcome", "mode"})}
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
	a.dns = resolver.New(cfg.DNS.Resolvers, resolver.WithTimeout(cfg.DNS.Timeout.D()), resolver.WithLog(a.log))
	roots, err := trustStore(cfg.TLS)
	if err != nil {
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
	a.client = deliver.New(deliver.Options{
		Hostname: cfg.Hostname, Port: cfg.Delivery.Port, Roots: roots, ClientCert: clientCert,
		Resolver: a.dns, Log: a.log, NextDCID: a.ids.next,
		Timeouts: deliver.Timeouts{Connect: cfg.Delivery.ConnectTimeout.D()},
	})
	a.roots = roots
	proxy, err := ProxyURL(cfg)
	if err != nil {
		return nil, err
	}
	a.stsStore, err = mtasts.OpenBoltStore(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("MTA-STS policy cache: %w", err)
	}
	a.sts, err = mtasts.New(context.Background(), mtasts.Options{Resolver: DNSAdapter{a.dns}, Store: a.stsStore, Roots: roots,
		FetchTimeout: cfg.MTASTS.FetchTimeout.D(), Proxy: proxy, DialContext: ResolverDial(a.dns, proxy), DisableRefresh: !*cfg.MTASTS.Refresh, Log: a.log})
	if err != nil {
		return nil, fmt.Errorf("MTA-STS: %w", err)
	}
	pl := &planner.Planner{DNS: a.dns, Log: a.log, STS: stsLookup{m: a.sts, log: a.log}, Profile: func(domain string) planner.Profile {
		p := cfg.Profile(domain)
		return planner.Profile{TLS: p.TLS, MTASTS: p.MTASTS}
	}}
	a.q = qmgr.New(qmgr.Options{
		Store: a.spool, Planner: pl, Dialer: dialer{c: a.client, tls: a.tlsOutcomes, log: a.log, roots: roots}, Bouncer: &bouncer{a: a},
		Profile: func(domain string) qmgr.Profile {
			p := cfg.Profile(domain)
			return qmgr.Profile{MaxConcurrency: p.MaxConcurrency, MaxMessagesPerConnection: p.MaxMessagesPerConnection}
		},
		Log: a.log, MaxConnections: cfg.Delivery.MaxConnections,
		InitialRetry: cfg.Bounce.InitialRetry.D(), MaxRetryInterval: cfg.Bounce.MaxRetryInterval.D(),
		MaxQueueLifetime: cfg.Bounce.MaxQueueLifetime.D(), MaxRetries: cfg.Bounce.MaxRetries,
	})
	for _, l := range cfg.Listeners {
		sc := smtpd.Config{Hostname: cfg.Hostname, Address: l.Address, Name: l.Name, RelayFrom: l.Networks,
			MaxMessageSize: int64(l.MaxMessageSize), MaxRecipients: l.MaxRecipients,
			ReadTimeout: l.IdleTimeout.D(), TotalTimeout: l.SessionTimeout.D(),
			Log: a.log, NextICID: a.ids.next, Receiver: receiver{a}}
		if l.TLS != nil {
			c, err := tls.LoadX509KeyPair(l.TLS.CertFile, l.TLS.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("listener %s tls: %w", l.Address, err)
			}
			sc.TLS = &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12}
		}
		s, err := smtpd.New(sc)
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", l.Address, err)
		}
		a.servers = append(a.servers, s)
	}
	return a, nil
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
	slog.Info("outpost starting", "data_dir", a.cfg.DataDir, "recovered", len(recs))
	qctx, qcancel := context.WithCancel(context.Background())
	qdone := make(chan struct{})
	go func() { a.q.Run(qctx); close(qdone) }()
	stsDone := make(chan struct{})
	go func() { a.sts.Run(qctx); close(stsDone) }()
	for _, r := range recs {
		a.q.Submit(r)
	}
	sock := a.cfg.Control.Socket
	if !filepath.IsAbs(sock) {
		sock = filepath.Join(a.cfg.DataDir, sock)
	}
	a.ctl, err = ctl.Listen(sock, a.q, a.log, stsAdmin{a.sts})
	if err != nil {
		qcancel()
		return err
	}
	if a.cfg.Metrics.Address != "" {
		a.metrics, err = startMetrics(a.cfg.Metrics.Address, a)
		if err != nil {
			qcancel()
			return err
		}
	}
	errc := make(chan error, len(a.servers))
	for _, s := range a.servers {
		go func(s *smtpd.Server) { errc <- s.ListenAndServe(ctx) }(s)
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	for _, s := range a.servers {
		s.Close()
	}
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
type receiver struct{ a *App }

func (r receiver) NewMID() uint64 { return r.a.spool.NewMID() }

func (r receiver) CheckSpace() error { return r.a.spool.CheckSpace() }

func (r receiver) Accept(ctx context.Context, mid uint64, env *envelope.Envelope, body io.Reader) (int64, error) {
	if env.Time.IsZero() {
		env.Time = time.Now()
	}
	hdr := receivedHeader(r.a.cfg.Hostname, env, mid)
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
	if m.Env.From == "" {
		return nil // RFC 3461 §6.2 / RFC 5321 §6.1: never a DSN to the null sender
	}
	if !*a.cfg.Bounce.SendBounces {
		return nil
	}
	rep := &dsn.Report{ReportingMTA: a.cfg.Hostname, EnvID: m.Env.EnvID, ArrivalDate: m.Env.Time, Sender: m.Env.From, RET: m.Env.RET}
	for _, f := range failed {
		rc := m.Env.Recipients[f.RID]
		if !rc.Notify.WantsFailure() {
			continue
		}
		st := f.Reply.Class()
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
	msg, err := dsn.Build(rep, body, dsn.Options{MaxCopy: int(a.cfg.Bounce.MaxBounceCopy)})
	if err != nil {
		return fmt.Errorf("build DSN for MID %d: %w", m.MID, err)
	}
	mid := a.spool.NewMID()
	env := &envelope.Envelope{From: "", Recipients: []envelope.Recipient{{Addr: m.Env.From}}, Time: time.Now(), Helo: a.cfg.Hostname, ClientIP: "127.0.0.1"}
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

func reasonText(f qmgr.Failure) string {
	if f.Reason != "" {
		return f.Reason
	}
	if f.Reply.Remote {
		return "the destination server " + f.RemoteMTA + " refused the message: " + f.Reply.String()
	}
	return f.Reply.Text
}
