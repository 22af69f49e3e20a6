package qmgr_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"outpost/internal/deliver"
	"outpost/internal/envelope"
	"outpost/internal/qmgr"
	"outpost/internal/reply"
	"outpost/internal/spool"
	"outpost/internal/tlspolicy"
)

// These tests run the queue manager with its real neighbours: the spool on
// disk, the delivery client, and go-smtp receivers on loopback. Only the
// planner is a table (domain → receiver address), standing in for DNS.

type receiver struct {
	mu        sync.Mutex
	active    int32
	maxActive int32
	conns     atomic.Int32
	msgs      atomic.Int32
	perConn   []int
	delay     time.Duration
	addr      string
}

type rsess struct {
	r *receiver
	n int
}

func (s *rsess) Reset() {}

// Mail counts a transaction in flight (until its data is taken): with at
// most N connections there are never more than N transactions at once,
// while session ends (Logout) trail the client's QUIT and could make a
// reconnect look like an overlap.
func (s *rsess) Mail(string, *smtp.MailOptions) error {
	n := atomic.AddInt32(&s.r.active, 1)
	s.r.mu.Lock()
	if n > s.r.maxActive {
		s.r.maxActive = n
	}
	s.r.mu.Unlock()
	return nil
}
func (s *rsess) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *rsess) Logout() error {
	s.r.mu.Lock()
	s.r.perConn = append(s.r.perConn, s.n)
	s.r.mu.Unlock()
	return nil
}
func (s *rsess) Data(r io.Reader) error {
	io.Copy(io.Discard, r)
	time.Sleep(s.r.delay)
	s.n++
	s.r.msgs.Add(1)
	atomic.AddInt32(&s.r.active, -1)
	return nil
}

func newReceiver(t *testing.T, delay time.Duration) *receiver {
	return serveReceiver(t, "127.0.0.1:0", delay, nil)
}

// serveReceiver starts a receiver on addr (one that was refusing
// connections until now, or :0), tuned by tune when set.
func serveReceiver(t *testing.T, addr string, delay time.Duration, tune func(*smtp.Server)) *receiver {
	t.Helper()
	rc := &receiver{delay: delay}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		rc.conns.Add(1)
		return &rsess{r: rc}, nil
	}))
	srv.Domain = "rcv.test"
	srv.AllowInsecureAuth = true
	if tune != nil {
		tune(srv)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	rc.addr = ln.Addr().String()
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return rc
}

type tablePlanner map[string]string // domain → host:port

func (p tablePlanner) Plan(_ context.Context, domain string) (*tlspolicy.Plan, *reply.Reply) {
	hp, ok := p[domain]
	if !ok {
		return nil, reply.New(550, "5.1.2", "no such domain %s", domain)
	}
	host, port, _ := net.SplitHostPort(hp)
	var n int
	fmt.Sscan(port, &n)
	return &tlspolicy.Plan{Domain: domain, Hosts: []tlspolicy.Host{{Name: host, Port: n, TLS: tlspolicy.ForMode(tlspolicy.None, domain, host)}}}, nil
}

type dialer struct{ c *deliver.Client }

func (d dialer) Connect(ctx context.Context, dst qmgr.Dest, h tlspolicy.Host) (qmgr.Conn, error) {
	c, err := d.c.Connect(ctx, dst.Domain, h)
	if err != nil {
		return nil, deliver.AsReply(err)
	}
	return conn{c}, nil
}

type conn struct{ c *deliver.Conn }

func (c conn) Send(ctx context.Context, t *qmgr.Txn) *qmgr.TxnResult {
	m := &deliver.Message{MID: t.MID, From: t.Env.From, Size: t.Size, Body: t.Open}
	for _, rid := range t.RIDs {
		m.Rcpts = append(m.Rcpts, deliver.Rcpt{RID: rid, Addr: t.Env.Recipients[rid].Addr})
	}
	r := c.c.Send(ctx, m)
	return &qmgr.TxnResult{Rcpt: r.Rcpt, Data: r.Data, Broken: r.Broken}
}
func (c conn) Close() error     { return c.c.Close() }
func (c conn) RemoteIP() string { return c.c.RemoteAddr().Addr().String() }
func (c conn) DCID() uint64     { return c.c.DCID() }
func (c conn) Host() string     { return c.c.Host() }

type bounces struct {
	mu   sync.Mutex
	list []qmgr.Failure
}

func (b *bounces) Bounce(_ context.Context, _ *qmgr.Message, f []qmgr.Failure, _ string) error {
	b.mu.Lock()
	b.list = append(b.list, f...)
	b.mu.Unlock()
	return nil
}

func (b *bounces) n() int { b.mu.Lock(); defer b.mu.Unlock(); return len(b.list) }

type harness struct {
	q  *qmgr.Manager
	sp *spool.Spool
	b  *bounces
}

func start(t *testing.T, plan tablePlanner, prof qmgr.Profile, o qmgr.Options) *harness {
	sp, err := spool.Open(t.TempDir(), spool.Options{MinFree: 1})
	if err != nil {
		t.Fatal(err)
	}
	sp.Start()
	if _, err := sp.Recover(); err != nil {
		t.Fatal(err)
	}
	h := &harness{sp: sp, b: &bounces{}}
	o.Store, o.Planner, o.Bouncer = sp, plan, h.b
	o.Dialer = dialer{deliver.New(deliver.Options{Hostname: "outpost.test", Timeouts: deliver.Timeouts{Connect: 2 * time.Second}})}
	o.Profile = func(string) qmgr.Profile { return prof }
	h.q = qmgr.New(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.q.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; sp.Close() })
	return h
}

func (h *harness) submit(t *testing.T, to ...string) {
	env := &envelope.Envelope{From: "s@sender.test", Time: time.Now()}
	for _, a := range to {
		env.Recipients = append(env.Recipients, envelope.Recipient{Addr: a})
	}
	mid := h.sp.NewMID()
	n, err := h.sp.Accept(mid, env, strings.NewReader("Subject: t\r\n\r\nbody\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	h.q.Submit(&spool.Record{MID: mid, Env: *env, Size: n, States: make([]spool.State, len(to))})
}

func eventually(t *testing.T, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if f() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestConcurrencyAndMessagesPerConnection(t *testing.T) {
	rc := newReceiver(t, 20*time.Millisecond)
	h := start(t, tablePlanner{"a.test": rc.addr}, qmgr.Profile{MaxConcurrency: 2, MaxMessagesPerConnection: 5}, qmgr.Options{IdleReuse: 200 * time.Millisecond})
	for i := 0; i < 30; i++ {
		h.submit(t, fmt.Sprintf("u%d@a.test", i))
	}
	eventually(t, 20*time.Second, "30 deliveries", func() bool { return rc.msgs.Load() == 30 })
	eventually(t, 5*time.Second, "transactions done", func() bool { return atomic.LoadInt32(&rc.active) == 0 })
	// The receiver has the data before the queue records the outcome.
	eventually(t, 5*time.Second, "an empty queue", func() bool { n, _ := h.q.Size(); return n == 0 })
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.maxActive > 2 {
		t.Errorf("%d simultaneous transactions, limit 2 connections", rc.maxActive)
	}
	for _, n := range rc.perConn {
		if n > 5 {
			t.Errorf("a connection carried %d messages, limit 5", n)
		}
	}
	if rc.conns.Load() < 6 {
		t.Errorf("30 messages at 5 per connection took only %d connections", rc.conns.Load())
	}
}

func TestDeadDestinationDoesNotStarveOthers(t *testing.T) {
	live := newReceiver(t, 0)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := l.Addr().String()
	l.Close() // nothing listens: connection refused
	h := start(t, tablePlanner{"live.test": live.addr, "dead.test": dead}, qmgr.Profile{MaxConcurrency: 20, MaxMessagesPerConnection: 50}, qmgr.Options{InitialRetry: time.Hour})
	for i := 0; i < 300; i++ {
		h.submit(t, fmt.Sprintf("u%d@dead.test", i))
	}
	for i := 0; i < 30; i++ {
		h.submit(t, fmt.Sprintf("u%d@live.test", i))
	}
	eventually(t, 20*time.Second, "live deliveries", func() bool { return live.msgs.Load() == 30 })
	eventually(t, 20*time.Second, "dead messages deferred", func() bool {
		deferred := 0
		for _, m := range h.q.List() {
			if m.Recipients[0].State == "deferred" {
				deferred++
			}
		}
		return deferred == 300
	})
	if h.b.n() != 0 {
		t.Fatal("a connection failure bounced mail")
	}
}

func TestRetryThenDeliverAndExpiryBounce(t *testing.T) {
	// The receiver comes up only after the first attempt failed.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	h := start(t, tablePlanner{"later.test": addr, "never.test": "127.0.0.1:1"}, qmgr.Profile{MaxConcurrency: 5, MaxMessagesPerConnection: 10},
		qmgr.Options{InitialRetry: 200 * time.Millisecond, MaxRetryInterval: 400 * time.Millisecond, MaxQueueLifetime: 3 * time.Second})
	h.submit(t, "x@later.test")
	h.submit(t, "y@never.test")
	eventually(t, 5*time.Second, "deferral", func() bool {
		in, ok := h.q.Show(1)
		return ok && in.Recipients[0].State == "deferred"
	})
	rc := serveReceiver(t, addr, 0, nil)
	eventually(t, 10*time.Second, "delivery after retry", func() bool { return rc.msgs.Load() == 1 })
	eventually(t, 10*time.Second, "expiry bounce", func() bool { return h.b.n() == 1 })
	if f := h.b.list[0]; f.Reply.Class() != "5.4.7" || !strings.Contains(f.Reason, "expired") {
		t.Fatalf("expiry failure %+v %s", f, f.Reply)
	}
	eventually(t, 5*time.Second, "empty queue", func() bool { n, _ := h.q.Size(); return n == 0 })
}

func TestPermanentFailureBouncesAndQueueOps(t *testing.T) {
	h := start(t, tablePlanner{}, qmgr.Profile{MaxConcurrency: 5, MaxMessagesPerConnection: 10}, qmgr.Options{})
	h.submit(t, "a@nowhere.test")
	eventually(t, 5*time.Second, "bounce", func() bool { return h.b.n() == 1 })
	if h.b.list[0].Reply.Class() != "5.1.2" {
		t.Fatalf("bounce %v", h.b.list[0].Reply)
	}
	if err := h.q.Delete(999); err == nil {
		t.Fatal("deleting an unknown MID succeeded")
	}
}

func TestRecipientRateLimitHoldsBackWithoutBouncing(t *testing.T) {
	rc := newReceiver(t, 0)
	prof := qmgr.Profile{MaxConcurrency: 5, MaxMessagesPerConnection: 100, RecipientLimit: 4, RecipientWindow: 1500 * time.Millisecond}
	h := start(t, tablePlanner{"slow.test": rc.addr}, prof, qmgr.Options{IdleReuse: 100 * time.Millisecond})
	h.submit(t, "a@slow.test", "b@slow.test", "c@slow.test") // 3 recipients in one transaction
	for i := 0; i < 4; i++ {
		h.submit(t, fmt.Sprintf("u%d@slow.test", i))
	}
	// 7 recipients, 4 per window: the first window carries at most 4.
	time.Sleep(700 * time.Millisecond)
	rcpts := func() int {
		in := 0
		for _, m := range h.q.List() {
			for _, r := range m.Recipients {
				if r.State != "delivered" {
					in++
				}
			}
		}
		return 7 - in
	}
	if got := rcpts(); got > 4 {
		t.Fatalf("%d recipients delivered in the first window, limit 4", got)
	}
	eventually(t, 10*time.Second, "all delivered after the window", func() bool { n, _ := h.q.Size(); return n == 0 })
	if h.b.n() != 0 {
		t.Fatal("the rate limit bounced mail")
	}
}

// Destinations behind the same host under the same requirement share
// idle connections: 60 domains delivered one after another use one
// connection, not 60.
func TestConnectionsPooledAcrossDomains(t *testing.T) {
	rc := newReceiver(t, 0)
	plan := tablePlanner{}
	for i := 0; i < 60; i++ {
		plan[fmt.Sprintf("d%d.test", i)] = rc.addr
	}
	h := start(t, plan, qmgr.Profile{MaxConcurrency: 5, MaxMessagesPerConnection: 1000}, qmgr.Options{IdleReuse: 10 * time.Second})
	for i := 0; i < 60; i++ {
		h.submit(t, fmt.Sprintf("u@d%d.test", i))
		eventually(t, 10*time.Second, "delivery", func() bool { return rc.msgs.Load() == int32(i+1) })
		eventually(t, 5*time.Second, "an empty queue", func() bool { n, _ := h.q.Size(); return n == 0 })
	}
	if n := rc.conns.Load(); n != 1 {
		t.Errorf("60 domains behind one host took %d connections, want 1", n)
	}
	if n := h.q.Stats.Reused.Load(); n != 59 {
		t.Errorf("%d connections reused, want 59", n)
	}
	if n := h.q.Stats.Deferred.Load(); n != 0 {
		t.Errorf("%d deferrals", n)
	}
}

// A parked connection the server has closed meanwhile is not used: the
// next message goes on a new connection at its first attempt.
func TestPooledConnectionClosedByServer(t *testing.T) {
	rc := serveReceiver(t, "127.0.0.1:0", 0, func(srv *smtp.Server) {
		srv.ReadTimeout = 150 * time.Millisecond // closes idle sessions
	})
	h := start(t, tablePlanner{"a.test": rc.addr, "b.test": rc.addr}, qmgr.Profile{MaxConcurrency: 5, MaxMessagesPerConnection: 100}, qmgr.Options{IdleReuse: 10 * time.Second})
	h.submit(t, "u@a.test")
	eventually(t, 10*time.Second, "first delivery", func() bool { return rc.msgs.Load() == 1 })
	eventually(t, 5*time.Second, "an empty queue", func() bool { n, _ := h.q.Size(); return n == 0 })
	time.Sleep(600 * time.Millisecond) // the server times the parked session out
	h.submit(t, "u@b.test")
	eventually(t, 10*time.Second, "second delivery", func() bool { return rc.msgs.Load() == 2 })
	if n := h.q.Stats.Deferred.Load(); n != 0 {
		t.Errorf("%d deferrals: the dead pooled connection was used", n)
	}
	if n := rc.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

func (c conn) Alive() bool { return c.c.Alive() }

// Messages whose every job waits for a retry leave memory and come back
// from the spool when due: the queue views still show them (with the last
// reply), Delete and Flush work on them, and once the destination answers
// every one is delivered exactly once, multi-domain messages included.
func TestDeferredMessagesLeaveMemory(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close() // refused until the receiver starts
	h := start(t, tablePlanner{"a.test": addr, "b.test": addr}, qmgr.Profile{MaxConcurrency: 5, MaxMessagesPerConnection: 100},
		qmgr.Options{InitialRetry: time.Hour, MaxRetryInterval: time.Hour})
	const n = 40
	for i := 0; i < n; i++ {
		if i%4 == 0 {
			h.submit(t, fmt.Sprintf("x%d@a.test", i), fmt.Sprintf("y%d@b.test", i)) // two destinations
		} else {
			h.submit(t, fmt.Sprintf("x%d@a.test", i))
		}
	}
	eventually(t, 10*time.Second, "every message out of memory", func() bool {
		hot, cold := h.q.Resident()
		return hot == 0 && cold == n
	})
	if size, age := h.q.Size(); size != n || age <= 0 || age > time.Minute {
		t.Fatalf("Size %d, oldest %v; want %d, under a minute", size, age, n)
	}
	in, ok := h.q.Show(1)
	if !ok || len(in.Recipients) != 2 {
		t.Fatalf("Show(1) = %+v, %v", in, ok)
	}
	for _, r := range in.Recipients {
		if r.State != "deferred" || r.Attempts != 1 || !strings.Contains(r.LastReply, "no answer from host") || r.NextTry.Before(time.Now().Add(50*time.Minute)) {
			t.Errorf("recipient %+v: want deferred after 1 attempt, the connection failure as last reply, next try in about an hour", r)
		}
	}
	if list := h.q.List(); len(list) != n || list[0].MID != 1 || list[0].From != "s@sender.test" {
		t.Fatalf("List: %d messages, first %+v", len(list), list[0])
	}
	var seen []uint64
	h.q.Each(func(in qmgr.Info) bool {
		seen = append(seen, in.MID)
		return len(seen) < 3
	})
	if fmt.Sprint(seen) != "[1 2 3]" {
		t.Errorf("Each, stopped after 3: %v", seen)
	}
	if err := h.q.Delete(2); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.q.Show(2); ok {
		t.Fatal("a deleted message is still shown")
	}
	rc := serveReceiver(t, addr, 0, nil)
	if got := h.q.Flush(); got != n-1+n/4 {
		t.Errorf("Flush made %d jobs due, want %d", got, n-1+n/4)
	}
	// 39 messages left, 10 of them with a second destination.
	eventually(t, 10*time.Second, "every delivery", func() bool { return rc.msgs.Load() == n-1+n/4 })
	eventually(t, 5*time.Second, "an empty queue", func() bool { size, _ := h.q.Size(); return size == 0 })
	if hot, cold := h.q.Resident(); hot != 0 || cold != 0 {
		t.Errorf("after delivery: %d in memory, %d on disk", hot, cold)
	}
	time.Sleep(200 * time.Millisecond)
	if got := rc.msgs.Load(); got != n-1+n/4 {
		t.Errorf("%d transactions, want %d (a duplicate?)", got, n-1+n/4)
	}
	if h.b.n() != 0 {
		t.Errorf("%d bounces", h.b.n())
	}
}

// MaxActive bounds the messages in memory: the rest wait on disk, first in
// line, and every one is delivered once.
func TestMaxActiveBoundsMemory(t *testing.T) {
	rc := newReceiver(t, 30*time.Millisecond)
	h := start(t, tablePlanner{"a.test": rc.addr, "b.test": rc.addr}, qmgr.Profile{MaxConcurrency: 2, MaxMessagesPerConnection: 100},
		qmgr.Options{MaxActive: 5})
	const n = 40
	for i := 0; i < n; i++ {
		h.submit(t, fmt.Sprintf("u%d@a.test", i), fmt.Sprintf("u%d@b.test", i))
	}
	peak := 0
	eventually(t, 30*time.Second, "every delivery", func() bool {
		if hot, _ := h.q.Resident(); hot > peak {
			peak = hot
		}
		return rc.msgs.Load() == 2*n
	})
	eventually(t, 5*time.Second, "an empty queue", func() bool { size, _ := h.q.Size(); return size == 0 })
	if peak > 5 {
		t.Errorf("%d messages in memory at once, max_active 5", peak)
	}
	if peak == 0 {
		t.Error("never saw a message in memory")
	}
	time.Sleep(100 * time.Millisecond)
	if got := rc.msgs.Load(); got != 2*n {
		t.Errorf("%d transactions, want %d", got, 2*n)
	}
}

// A destination whose hosts all failed moments ago is left alone for a
// while: messages arriving meanwhile are deferred with the same reply
// instead of a connection attempt each. Flush tries again at once.
func TestDeadDestinationNotRetriedPerMessage(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepts atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepts.Add(1)
			c.Close() // no greeting: the connection attempt fails
		}
	}()
	t.Cleanup(func() { ln.Close() })
	h := start(t, tablePlanner{"dead.test": ln.Addr().String()}, qmgr.Profile{MaxConcurrency: 5, MaxMessagesPerConnection: 10},
		qmgr.Options{InitialRetry: time.Hour})
	for i := 0; i < 30; i++ {
		h.submit(t, fmt.Sprintf("u%d@dead.test", i))
		time.Sleep(5 * time.Millisecond)
	}
	eventually(t, 10*time.Second, "30 deferrals", func() bool { return h.q.Stats.Deferred.Load() == 30 })
	if n := accepts.Load(); n > 5 {
		t.Errorf("%d connection attempts for 30 messages to a dead destination", n)
	}
	in, ok := h.q.Show(30)
	if !ok || in.Recipients[0].State != "deferred" || in.Recipients[0].LastReply == "" {
		t.Errorf("the last message: %+v", in)
	}
	before := accepts.Load()
	h.q.Flush()
	eventually(t, 10*time.Second, "an attempt after Flush", func() bool { return accepts.Load() > before })
}
