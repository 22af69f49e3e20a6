package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"outpost/internal/deliver"
	"outpost/internal/qmgr"
	"outpost/internal/tlspolicy"
)

// dialer adapts the delivery client to qmgr.Dialer.
type dialer struct{ a *App }

func (d dialer) Connect(ctx context.Context, dst qmgr.Dest, h tlspolicy.Host) (qmgr.Conn, error) {
	rt := d.a.cur.Load()
	client := rt.client
	if g, ok := rt.gateways[dst.Gateway]; ok {
		client = g
	}
	domain := dst.Domain
	if p := rt.cfg.Profile(domain); p.LimitsScope == "mx-ip" {
		gw := ""
		if p.LimitsApply == "virtual-gateway" {
			gw = dst.Gateway
		}
		ctx = withIPLimit(ctx, p.MaxConcurrency, gw)
	}
	c, err := client.Connect(ctx, domain, h)
	d.a.tlsReport.observe(rt.cfg.Profile(domain), domain, h, c, err)
	mode := h.TLS.Mode.String()
	switch h.TLS.Source {
	case tlspolicy.SourceMTASTS:
		mode = "mta-sts-enforce"
	case tlspolicy.SourceDANE:
		mode = "dane"
	}
	why := stsOutcome(d.a.log, domain, h, err)
	if err != nil {
		var de *deliver.Error
		if errors.As(err, &de) && de.Stage == deliver.StageTLS {
			d.a.tlsOutcomes.WithLabelValues("failed", mode).Inc()
		}
		r := deliver.AsReply(err)
		if errors.As(err, &de) && (de.Stage == deliver.StageTLS || strings.HasPrefix(r.Enhanced, "4.7.")) {
			d.a.tlsRequiredFailed(domain, h, r.String())
		}
		if why != "" {
			// Say in the Delayed line and the eventual DSN that MTA-STS held it.
			r2 := *r
			r2.Text = why + " (" + r.Text + ")"
			r2.Remote = false
			r = &r2
		}
		return nil, r
	}
	if h.TLS.STSTesting {
		d.reportTesting(domain, h, c, rt.roots)
	}
	if _, ok := c.TLSState(); ok {
		d.a.tlsOutcomes.WithLabelValues("success", mode).Inc()
	} else {
		d.a.tlsOutcomes.WithLabelValues("plaintext", mode).Inc()
	}
	return conn{c: c, a: d.a}, nil
}

type conn struct {
	c *deliver.Conn
	a *App
}

func (c conn) Send(ctx context.Context, t *qmgr.Txn) *qmgr.TxnResult {
	from := t.Env.From
	if rt := c.a.cur.Load(); rt.cfg.Profile(t.Dest).BounceVerification {
		// Bounce verification tagging at each attempt; the null sender and
		// already-tagged addresses are left alone.
		from = rt.bv.Tag(from, time.Now())
	}
	m := &deliver.Message{MID: t.MID, From: from, RET: t.Env.RET, EnvID: t.Env.EnvID,
		SMTPUTF8: t.Env.SMTPUTF8, EightBit: t.Env.Body8Bit, Size: t.Size, Body: t.Open}
	for _, rid := range t.RIDs {
		r := t.Env.Recipients[rid]
		m.Rcpts = append(m.Rcpts, deliver.Rcpt{RID: rid, Addr: r.Addr, Notify: r.Notify, ORCPT: r.ORCPT})
	}
	res := c.c.Send(ctx, m)
	return &qmgr.TxnResult{Rcpt: res.Rcpt, Data: res.Data, Broken: res.Broken || !c.c.Usable()}
}

// reportTesting logs whether a connection made under a testing-mode policy
// would have met it (RFC 8461 §5: testing mode reports, never blocks).
func (d dialer) reportTesting(domain string, h tlspolicy.Host, c *deliver.Conn, roots *x509.CertPool) {
	cs, ok := c.TLSState()
	var fail string
	switch {
	case !ok:
		fail = "STARTTLS not used with " + h.Name
	case cs.Version < tls.VersionTLS12:
		fail = "TLS version below 1.2 at " + h.Name
	default:
		if _, err := deliver.Verify(cs, roots, []string{h.Name}, time.Now()); err != nil {
			fail = "certificate of " + h.Name + " not valid: " + err.Error()
		}
	}
	if fail != "" {
		d.a.log.Infof("MTA-STS policy for the domain (%s) in testing mode would have failed: %s", domain, fail)
		return
	}
	d.a.log.Infof("MTA-STS policy for the domain (%s) in testing mode would have succeeded", domain)
}

// Alive reports whether a pooled connection is still open (qmgr.Checker).
func (c conn) Alive() bool { return c.c.Alive() }

// Reused records a pooled connection taken by another destination domain
// (qmgr.Reuser): that domain's TLS report counts it, and under MTA-STS its
// success line is logged as for a new connection. The pool hands over a
// connection only under the same requirement it was verified for.
func (c conn) Reused(d qmgr.Dest, h tlspolicy.Host) {
	rt := c.a.cur.Load()
	c.a.tlsReport.observe(rt.cfg.Profile(d.Domain), d.Domain, h, c.c, nil)
	stsOutcome(c.a.log, d.Domain, h, nil)
}

func (c conn) Close() error { return c.c.Close() }
func (c conn) DCID() uint64 { return c.c.DCID() }
func (c conn) Host() string { return c.c.Host() }

// counter hands out connection ids (ICID, DCID), reserving blocks on disk
// so ids are not reused across restarts.
type counter struct {
	mu       sync.Mutex
	f        *os.File
	n, limit uint64
}

const idBlock = 100000

func openCounter(path string) (*counter, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("connection id file: %w", err)
	}
	c := &counter{f: f, n: 1}
	var b [8]byte
	if _, err := io.ReadFull(f, b[:]); err == nil {
		c.n = binary.BigEndian.Uint64(b[:])
	}
	c.limit = c.n
	return c, nil
}

func (c *counter) next() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n >= c.limit {
		c.limit = c.n + idBlock
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], c.limit)
		c.f.WriteAt(b[:], 0)
		c.f.Sync()
	}
	id := c.n
	c.n++
	return id
}

// configAdmin exposes commit and rollback to the control API; the running
// server applies what it commits.
type configAdmin struct{ a *App }

func (c configAdmin) Commit(comment, user string) (any, error) {
	if c.a.store == nil {
		return nil, errNoStore
	}
	return c.a.store.Commit(comment, user, c.a.Apply)
}

func (c configAdmin) Rollback(id int, user string) (any, error) {
	if c.a.store == nil {
		return nil, errNoStore
	}
	return c.a.store.Rollback(id, user, c.a.Apply)
}

var errNoStore = errors.New("this server has no configuration store")

func (c conn) RemoteIP() string { return c.c.RemoteAddr().Addr().String() }
