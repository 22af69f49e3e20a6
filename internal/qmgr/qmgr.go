// Package qmgr is the queue manager: it decides what is delivered when, and
// it is the only writer of per-recipient state.
//
// # Strategies and their knobs
//
//   - Per-destination queues. Each message is split per recipient domain
//     into jobs (all recipients of one domain go in one transaction). Each
//     destination domain has its own ready queue, so a slow or dead
//     destination only ever holds its own jobs.
//   - Bounded concurrency. A destination gets at most Profile.MaxConcurrency
//     connections (default 500), and never more connections than it has
//     ready jobs; all destinations together get at most MaxConnections.
//   - Connection reuse. A connection carries up to
//     Profile.MaxMessagesPerConnection messages (default 50), then a new one
//     is opened. A worker that runs out of work for its destination waits
//     IdleReuse for more, then says QUIT; while it waits, its connection
//     sits in a pool keyed by what makes connections interchangeable:
//     host, port, the whole TLS requirement (mode, minimum version,
//     accepted certificate names, DANE records), address preference and
//     gateway. A worker of any destination whose plan names that host with
//     that requirement takes the connection from there (the idle worker
//     then ends), so 1 000 domains behind one MX share a few connections
//     instead of a TLS handshake each (design.md §4). An idle connection
//     counts against its destination's limit until another takes it, as
//     it is still open at the receiver. A pooled connection is checked
//     before reuse (the server may have closed it). Profiles with
//     per-MX-IP limits keep their connections to themselves.
//   - Retry with backoff. A deferred job waits InitialRetry, doubling per
//     attempt up to MaxRetryInterval (bounce profile: 60 s, 3600 s).
//   - Dead destination. When no host of a destination accepts a connection,
//     every ready job of that destination is deferred with the same reason,
//     instead of each one trying again at once.
//   - Expiry. A recipient still undelivered after MaxQueueLifetime (72 h) or
//     MaxRetries attempts (100) is bounced with 5.4.7.
//
// # Memory
//
// A message is in memory while one of its jobs is ready or being sent.
// When every job of a message waits for a retry, the message leaves
// memory: each job is kept as a small coldJob (when, which MID, which
// destination, attempts, the last reply) and the message is read back from
// the spool (Loader) when a job is due. A backlog of 100 000 messages to a
// dead destination therefore costs a few megabytes, not the envelopes.
//
// A new message is attempted at once. Recipient outcomes are made durable
// in the spool journal (Store.Mark) before the message is removed, and a
// DSN for a bounced recipient is stored before the recipient is marked
// bounced, so a crash never loses the bounce.
package qmgr

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"outpost/internal/envelope"
	"outpost/internal/maillog"
	"outpost/internal/reply"
	"outpost/internal/spool"
	"outpost/internal/tlspolicy"
)

// Store is the durable side the queue manager needs (implemented by the spool).
type Store interface {
	Body(mid uint64) (io.ReadCloser, int64, error)
	Mark(mid uint64, rids []int, st spool.State) error
	Remove(mid uint64) error
}

// Loader is implemented by stores that can read a queued message back (the
// spool). Without it every queued message stays in memory.
type Loader interface {
	Load(mid uint64) (*spool.Record, error)
}

// Bouncer stores a DSN for failed recipients of a message. It returns only
// once the DSN is durable (or an error).
type Bouncer interface {
	Bounce(ctx context.Context, m *Message, failed []Failure, action string) error
}

// Failure is one recipient's final or delay outcome, for DSNs.
type Failure struct {
	RID       int
	Reply     *reply.Reply
	RemoteMTA string
	Reason    string
}

// Planner builds the security plan for a destination domain; a non-nil
// reply means no plan could be made (temporary or permanent, by its code).
type Planner interface {
	Plan(ctx context.Context, domain string) (*tlspolicy.Plan, *reply.Reply)
}

// Dest names a destination queue: the recipient domain and the virtual
// gateway (outbound source) the mail leaves through.
type Dest struct {
	Domain  string
	Gateway string
}

// Dialer opens delivery connections.
type Dialer interface {
	Connect(ctx context.Context, d Dest, h tlspolicy.Host) (Conn, error)
}

// Conn is one open delivery connection. A Conn may also implement
// Checker and Reuser.
type Conn interface {
	Send(ctx context.Context, t *Txn) *TxnResult
	Close() error
	DCID() uint64
	Host() string
	// RemoteIP is the address connected to (for per-MX-IP limits).
	RemoteIP() string
}

// Checker is implemented by connections that can tell, without blocking,
// whether an idle connection is still open (the pool asks before reuse).
type Checker interface {
	Alive() bool
}

// Reuser is implemented by connections that want to know when the pool
// hands them to another destination (for per-domain logs and reports).
type Reuser interface {
	Reused(d Dest, h tlspolicy.Host)
}

// Txn is one transaction: one message to the recipients of one domain.
type Txn struct {
	MID   uint64
	Env   *envelope.Envelope
	RIDs  []int
	Size  int64
	Open  func() (io.ReadCloser, error)
	Dest  string
	Retry int
}

// TxnResult is a transaction's outcome.
type TxnResult struct {
	// Rcpt is each recipient's final outcome, aligned with Txn.RIDs: the
	// RCPT reply when refused, else the reply to the end of data; nil means
	// no answer (treated as a temporary failure).
	Rcpt   []*reply.Reply
	Data   *reply.Reply // reply to the end of data; nil when not reached
	Broken bool         // the connection cannot be reused
}

// Profile is what the queue manager needs of a Destination Control
// profile and its bounce profile. Zero durations and counts take the
// Options' values.
type Profile struct {
	MaxConcurrency           int
	MaxMessagesPerConnection int
	// LimitsPerGateway counts MaxConcurrency per virtual gateway instead
	// of across all of them (limits_apply: virtual-gateway).
	LimitsPerGateway bool
	// RecipientLimit recipients at most per RecipientWindow (0: no limit),
	// counted per destination domain, or per MX IP address when
	// LimitsPerIP (limits_scope: mx-ip); per gateway when LimitsPerGateway.
	RecipientLimit  int
	RecipientWindow time.Duration
	LimitsPerIP     bool
	BounceProfile   string
	// DelayWarnings sends up to DelayWarnCount "delayed" DSNs, one per
	// DelayWarnInterval of queue time (0: off).
	DelayWarnCount    int
	DelayWarnInterval time.Duration
	InitialRetry      time.Duration
	MaxRetryInterval  time.Duration
	MaxQueueLifetime  time.Duration
	MaxRetries        int
}

// Options configure a Manager.
type Options struct {
	Store            Store
	Planner          Planner
	Dialer           Dialer
	Bouncer          Bouncer
	Profile          func(domain string) Profile
	Log              *maillog.Logger
	MaxConnections   int
	InitialRetry     time.Duration
	MaxRetryInterval time.Duration
	MaxQueueLifetime time.Duration
	MaxRetries       int
	// IdleReuse is how long an unused connection stays open for more
	// work (default 2s).
	IdleReuse time.Duration
	// MaxActive bounds the messages in memory (0: no bound). Beyond it a
	// new message waits on disk, first in line, until a message in
	// memory finishes or leaves memory (needs a Loader store).
	MaxActive int
	Now       func() time.Time
}

// Message is a queued message.
type Message struct {
	MID    uint64
	Env    envelope.Envelope
	Size   int64
	States []spool.State
	// LastReply per recipient (for the queue views and DSNs).
	LastReply []*reply.Reply
	open      int // jobs not finished
	deleted   bool
	warned    atomic.Int32 // delay DSNs sent
	// waiting are the jobs in the retry heap; coldJobs counts this
	// message's jobs still in the cold heap (since it was read back).
	waiting  []*job
	coldJobs int
}

// coldJob is a job waiting for a retry whose message is not in memory.
// It takes 24 bytes and holds no pointer (the garbage collector does not
// scan the heap of them). Its last reply is its destination's coldReply;
// its arrival time is read back when the queue age needs it.
type coldJob struct {
	next     int64 // unix nanoseconds
	mid      uint64
	dest     uint32 // index in Manager.destByID
	attempts uint16
	warned   uint8
}

type coldHeap []coldJob

func (h coldHeap) Len() int           { return len(h) }
func (h coldHeap) Less(i, j int) bool { return h[i].next < h[j].next }
func (h coldHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *coldHeap) Push(x any)        { *h = append(*h, x.(coldJob)) }
func (h *coldHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = coldJob{}
	*h = old[:len(old)-1]
	return c
}

type job struct {
	msg      *Message
	dest     *dest
	rids     []int
	attempts int
	next     time.Time
	index    int // in the retry heap; -1 when not there
	active   bool
}

type dest struct {
	domain  string
	gateway string
	ready   []*job
	active  int // connections (workers)
	idle    int // workers waiting for work
	notify  chan struct{}
	lastErr string
	// id indexes Manager.destByID (coldJob.dest).
	id uint32
	// deadReply, until deadUntil, defers new jobs without a connection
	// attempt: no host of the destination accepted one moments ago.
	deadReply *reply.Reply
	deadUntil time.Time
	// coldReply is the last reply a job of this destination got before
	// it left memory: the queue views show it for every cold job.
	coldReply *reply.Reply
}

// deadFor is how long a destination whose hosts all refused is left
// alone (at most its initial retry interval): jobs arriving meanwhile are
// deferred with the same reply, as Postfix does for a dead destination.
const deadFor = 10 * time.Second

// Stats are counters for metrics.
type Stats struct {
	Delivered, Deferred, Bounced, Connections, Messages atomic.Int64
	// Reused counts connections taken from the pool.
	Reused atomic.Int64
}

// pooled is a delivery connection with what the pool knows of it.
type pooled struct {
	conn   Conn
	key    string // "" when it may not be pooled
	dest   Dest   // the destination it last carried mail for
	sent   int    // transactions so far
	parked bool   // in the pool, its worker waiting for work
	// stolen is closed when another worker takes the connection from
	// the pool (or it is evicted); its idle worker then ends.
	stolen chan struct{}
}

// Manager is the queue manager.
type Manager struct {
	o     Options
	mu    sync.Mutex
	msgs  map[uint64]*Message
	dests map[Dest]*dest
	// domainConns counts connections per domain across gateways.
	domainConns map[string]int
	// byDomain lists each domain's destinations (one per gateway).
	byDomain map[string][]*dest
	// rate holds the recipient-limit windows by key.
	rate  map[string]*window
	retry retryHeap
	// cold holds the jobs of messages not in memory; coldMsgs counts
	// those messages.
	cold     coldHeap
	coldMsgs int
	// thawing are due cold jobs being read back (Run, outside the lock):
	// still visible to the queue views, and an administrator's Delete
	// takes them away from the read-back.
	thawing map[uint64][]coldJob
	// destByID are the destinations by id; oldestCold caches the arrival
	// time of the oldest message out of memory.
	destByID   []*dest
	oldestCold struct {
		mid uint64
		t   time.Time
	}
	conns int
	// pool holds the connections of idle workers by poolKey.
	pool    map[string][]*pooled
	closers sync.WaitGroup
	kick    chan struct{}
	ctx     context.Context
	wg      sync.WaitGroup
	Stats   Stats
}

// New makes a Manager; call Run to start it.
func New(o Options) *Manager {
	if o.IdleReuse == 0 {
		o.IdleReuse = 2 * time.Second
	}
	if o.MaxConnections == 0 {
		o.MaxConnections = 10000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.InitialRetry == 0 {
		o.InitialRetry = time.Minute
	}
	if o.MaxRetryInterval == 0 {
		o.MaxRetryInterval = time.Hour
	}
	if o.MaxQueueLifetime == 0 {
		o.MaxQueueLifetime = 72 * time.Hour
	}
	if o.MaxRetries == 0 {
		o.MaxRetries = 100
	}
	return &Manager{o: o, msgs: map[uint64]*Message{}, dests: map[Dest]*dest{}, domainConns: map[string]int{}, rate: map[string]*window{},
		pool: map[string][]*pooled{}, kick: make(chan struct{}, 1), ctx: context.Background()}
}

// Run schedules until ctx ends, then waits for the workers.
func (q *Manager) Run(ctx context.Context) {
	q.mu.Lock()
	q.ctx = ctx
	q.mu.Unlock()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		q.mu.Lock()
		now := q.o.Now()
		for q.retry.Len() > 0 && !q.retry[0].next.After(now) {
			j := q.popRetryLocked()
			q.readyLocked(j)
		}
		due, room := 0, 1000
		if q.o.MaxActive > 0 {
			// Read back only what the active queue has room for; a
			// message finishing or leaving memory kicks this loop.
			room = min(room, q.o.MaxActive-len(q.msgs))
		}
		for q.cold.Len() > 0 && q.cold[0].next <= now.UnixNano() && due < room {
			c := heap.Pop(&q.cold).(coldJob)
			if q.thawing == nil {
				q.thawing = map[uint64][]coldJob{}
			}
			q.thawing[c.mid] = append(q.thawing[c.mid], c)
			due++
		}
		wait := time.Hour
		if q.retry.Len() > 0 {
			wait = q.retry[0].next.Sub(now)
		}
		if q.cold.Len() > 0 && due < room {
			wait = min(wait, time.Duration(q.cold[0].next-now.UnixNano()))
		}
		q.mu.Unlock()
		if due > 0 {
			// Read the messages back outside the lock, then queue them.
			q.thaw()
			continue
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			q.wg.Wait()
			q.closers.Wait()
			return
		case <-t.C:
		case <-q.kick:
		}
	}
}

func (q *Manager) context() context.Context {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.ctx
}

// Submit queues a message (new, or recovered at start-up). Pending
// recipients are grouped per domain and attempted at once.
func (q *Manager) Submit(r *spool.Record) {
	m := &Message{MID: r.MID, Env: r.Env, Size: r.Size, States: r.States, LastReply: make([]*reply.Reply, len(r.Env.Recipients))}
	byDomain := map[string][]int{}
	var order []string
	for rid, rc := range r.Env.Recipients {
		if r.States[rid] != spool.Pending {
			continue
		}
		d := envelope.Domain(rc.Addr)
		if _, ok := byDomain[d]; !ok {
			order = append(order, d)
		}
		byDomain[d] = append(byDomain[d], rid)
	}
	q.Stats.Messages.Add(1)
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, ok := q.o.Store.(Loader); ok && q.o.MaxActive > 0 && len(q.msgs) >= q.o.MaxActive && len(order) > 0 {
		// The active queue is full: the message waits on disk, due now,
		// and is read back when there is room (Run).
		now := q.o.Now().UnixNano()
		for _, d := range order {
			heap.Push(&q.cold, coldJob{next: now, mid: m.MID, dest: q.destLocked(Dest{Domain: d, Gateway: m.Env.Gateway}).id})
		}
		q.coldMsgs++
		q.kickLocked()
		return
	}
	q.msgs[m.MID] = m
	for _, d := range order {
		m.open++
		j := &job{msg: m, dest: q.destLocked(Dest{Domain: d, Gateway: m.Env.Gateway}), rids: byDomain[d], index: -1}
		q.readyLocked(j)
	}
}

func (q *Manager) destLocked(k Dest) *dest {
	d := q.dests[k]
	if d == nil {
		d = &dest{domain: k.Domain, gateway: k.Gateway, notify: make(chan struct{}), id: uint32(len(q.destByID))}
		q.dests[k] = d
		q.destByID = append(q.destByID, d)
		if q.byDomain == nil {
			q.byDomain = map[string][]*dest{}
		}
		q.byDomain[k.Domain] = append(q.byDomain[k.Domain], d)
	}
	return d
}

// profile returns the destination's profile with defaults filled in.
func (q *Manager) profile(domain string) Profile {
	p := q.o.Profile(domain)
	if p.InitialRetry <= 0 {
		p.InitialRetry = q.o.InitialRetry
	}
	if p.MaxRetryInterval <= 0 {
		p.MaxRetryInterval = q.o.MaxRetryInterval
	}
	if p.MaxQueueLifetime <= 0 {
		p.MaxQueueLifetime = q.o.MaxQueueLifetime
	}
	if p.MaxRetries <= 0 {
		p.MaxRetries = q.o.MaxRetries
	}
	if p.MaxConcurrency <= 0 {
		p.MaxConcurrency = 500
	}
	if p.MaxMessagesPerConnection <= 0 {
		p.MaxMessagesPerConnection = 50
	}
	if p.BounceProfile == "" {
		p.BounceProfile = "Default"
	}
	return p
}

// readyLocked puts a job on its destination's ready queue and starts a
// worker when the destination may have another connection.
func (q *Manager) readyLocked(j *job) {
	d := j.dest
	d.ready = append(d.ready, j)
	close(d.notify)
	d.notify = make(chan struct{})
	q.spawnLocked(d)
}

func (q *Manager) spawnLocked(d *dest) {
	p := q.profile(d.domain)
	active := func() int {
		if p.LimitsPerGateway {
			return d.active
		}
		return q.domainConns[d.domain]
	}
	limit := p.MaxConcurrency
	if p.LimitsPerIP {
		// The limit is per MX IP address, enforced where the address is
		// known (the Dialer); here only the overall bound applies.
		limit = 1000
	}
	for len(d.ready) > d.idle && active() < limit && q.roomLocked() && len(d.ready) > d.active-d.idle {
		d.active++
		q.domainConns[d.domain]++
		q.conns++
		q.wg.Add(1)
		go q.worker(d)
		if len(d.ready) <= d.active-d.idle {
			break
		}
	}
}

// take removes the next ready job of d, waiting up to IdleReuse for one
// when wait is set.
func (q *Manager) take(d *dest, wait bool) *job {
	q.mu.Lock()
	for {
		if j := q.takeLocked(d); j != nil {
			q.mu.Unlock()
			return j
		}
		if !wait {
			q.mu.Unlock()
			return nil
		}
		ch := d.notify
		d.idle++
		ctx := q.ctx
		q.mu.Unlock()
		t := time.NewTimer(q.o.IdleReuse)
		select {
		case <-ch:
		case <-t.C:
			wait = false
		case <-ctx.Done():
			wait = false
		}
		t.Stop()
		q.mu.Lock()
		d.idle--
	}
}

// takeLocked removes the next ready job of d, or returns nil.
func (q *Manager) takeLocked(d *dest) *job {
	for len(d.ready) > 0 {
		j := d.ready[0]
		d.ready[0] = nil
		d.ready = d.ready[1:]
		if j.msg.deleted {
			continue
		}
		j.active = true
		return j
	}
	return nil
}

func (q *Manager) worker(d *dest) {
	defer q.wg.Done()
	defer func() {
		q.mu.Lock()
		atCap := q.conns >= q.o.MaxConnections
		d.active--
		q.domainConns[d.domain]--
		q.conns--
		q.spawnLocked(d)
		// The same domain through other gateways shares its connection
		// limit (limits_apply: system): one of them may have been waiting
		// for this connection to end.
		for _, other := range q.byDomain[d.domain] {
			if other != d && len(other.ready) > 0 {
				q.spawnLocked(other)
			}
		}
		if atCap {
			// Other destinations may have been waiting for a connection
			// slot; only then is it worth looking at them all.
			for _, other := range q.dests {
				if len(other.ready) > 0 && other != d && q.conns < q.o.MaxConnections {
					q.spawnLocked(other)
				}
			}
		}
		q.mu.Unlock()
	}()
	ctx := q.context()
	first := q.take(d, false)
	if first == nil {
		return
	}
	q.mu.Lock()
	dead := d.deadReply
	if dead != nil && !q.o.Now().Before(d.deadUntil) {
		dead, d.deadReply = nil, nil
	}
	q.mu.Unlock()
	if dead != nil {
		// No host answered moments ago: defer with that reason instead
		// of a connection attempt per arriving message.
		q.failDest(d, first, 0, dead, "")
		return
	}
	plan, rerr := q.o.Planner.Plan(ctx, d.domain)
	if rerr == nil && plan.Deferred() {
		rerr = reply.New(451, plan.DeferCode, "%s", plan.DeferText)
	}
	if rerr != nil {
		q.failDest(d, first, 0, rerr, "")
		return
	}
	if plan.Discard {
		q.discardDest(d, first)
		return
	}
	for _, n := range plan.Notes {
		q.o.Log.Infof("%s", n)
	}
	prof := q.profile(d.domain)
	dst := Dest{Domain: d.domain, Gateway: d.gateway}
	var pc *pooled
	var lastErr error
	for _, h := range plan.Hosts {
		key := ""
		if !prof.LimitsPerIP {
			key = poolKey(d.gateway, h)
		}
		if pc = q.poolTake(key, dst, h); pc != nil {
			break
		}
		c, err := q.o.Dialer.Connect(ctx, dst, h)
		if err == nil {
			q.Stats.Connections.Add(1)
			pc = &pooled{conn: c, key: key, dest: dst}
			break
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	if pc == nil {
		r := asReply(lastErr)
		if len(plan.Hosts) == 0 {
			r = reply.New(451, "4.4.4", "no destination host for %s", d.domain)
		}
		if !r.Permanent() && ctx.Err() == nil {
			q.mu.Lock()
			d.deadReply, d.deadUntil = r, q.o.Now().Add(min(prof.InitialRetry, deadFor))
			q.mu.Unlock()
		}
		q.failDest(d, first, 0, r, "")
		return
	}
	conn := pc.conn
	for j := first; j != nil; {
		if j = q.admit(j, conn); j == nil {
			// Held back by the recipient limit; try the next job.
			j = q.take(d, false)
			continue
		}
		res := conn.Send(ctx, q.txn(j))
		q.finish(j, conn, res)
		pc.sent++
		if res.Broken || pc.sent >= prof.MaxMessagesPerConnection || ctx.Err() != nil {
			break
		}
		if pc.key == "" {
			j = q.take(d, true)
			continue
		}
		if j = q.take(d, false); j == nil {
			if j = q.idleWait(d, pc); j == nil {
				return // the connection went to another worker, or was closed
			}
		}
	}
	conn.Close()
}

// poolKey says which connections are interchangeable: the same host and
// port, the same security requirement (everything that decided how the
// connection was verified), address preference and gateway. The labels
// (Why, Source) do not matter: a connection verified for mx.example.net
// with TLS 1.2+ is as good for one MTA-STS domain as for another.
func poolKey(gateway string, h tlspolicy.Host) string {
	var b strings.Builder
	r := h.TLS
	fmt.Fprintf(&b, "%s|%d|%s|%d|%d|%t|%s|", strings.ToLower(h.Name), h.Port, gateway, r.Mode, r.MinVersion, r.STSTesting, h.IPPreference)
	names := append([]string(nil), r.Identity.Names...)
	for i := range names {
		names[i] = strings.ToLower(names[i])
	}
	sort.Strings(names)
	b.WriteString(strings.Join(names, ","))
	for _, t := range r.DANE {
		fmt.Fprintf(&b, "|%d %d %d %x", t.Usage, t.Selector, t.MatchingType, t.Data)
	}
	return b.String()
}

// roomLocked reports whether another connection may be opened. At the
// limit it evicts one idle connection from the pool, so that its worker
// ends and frees the slot for a destination with work.
func (q *Manager) roomLocked() bool {
	if q.conns < q.o.MaxConnections {
		return true
	}
	for _, l := range q.pool {
		if len(l) > 0 {
			pc := l[0]
			q.unparkLocked(pc, true)
			q.closeAsync(pc.conn)
			break
		}
	}
	return false
}

// idleWait parks pc in the pool while its worker waits IdleReuse for more
// work for d. It returns the next job with the connection back in the
// worker's hands, or nil when the connection is gone: taken by another
// worker, or closed here (idle too long, shutting down).
func (q *Manager) idleWait(d *dest, pc *pooled) *job {
	q.mu.Lock()
	pc.parked = true
	pc.stolen = make(chan struct{})
	q.pool[pc.key] = append(q.pool[pc.key], pc)
	d.idle++
	ctx := q.ctx
	q.mu.Unlock()
	t := time.NewTimer(q.o.IdleReuse)
	defer t.Stop()
	for {
		q.mu.Lock()
		if !pc.parked {
			d.idle--
			q.mu.Unlock()
			return nil
		}
		if j := q.takeLocked(d); j != nil {
			q.unparkLocked(pc, false)
			d.idle--
			q.mu.Unlock()
			return j
		}
		ch := d.notify
		q.mu.Unlock()
		select {
		case <-ch:
			continue
		case <-pc.stolen:
			continue
		case <-t.C:
		case <-ctx.Done():
		}
		q.mu.Lock()
		mine := pc.parked
		if mine {
			q.unparkLocked(pc, false)
		}
		d.idle--
		q.mu.Unlock()
		if mine {
			pc.conn.Close()
		}
		return nil
	}
}

// unparkLocked takes pc out of the pool; stolen tells its idle worker
// that the connection is no longer its own.
func (q *Manager) unparkLocked(pc *pooled, stolen bool) {
	l := q.pool[pc.key]
	for i, x := range l {
		if x == pc {
			l = append(l[:i], l[i+1:]...)
			break
		}
	}
	if len(l) == 0 {
		delete(q.pool, pc.key)
	} else {
		q.pool[pc.key] = l
	}
	pc.parked = false
	if stolen {
		close(pc.stolen)
	}
}

// poolTake returns a live parked connection for key (the most recently
// parked, so the others can time out), or nil.
func (q *Manager) poolTake(key string, d Dest, h tlspolicy.Host) *pooled {
	if key == "" {
		return nil
	}
	for {
		q.mu.Lock()
		l := q.pool[key]
		if len(l) == 0 {
			q.mu.Unlock()
			return nil
		}
		pc := l[len(l)-1]
		q.unparkLocked(pc, true)
		q.mu.Unlock()
		if ch, ok := pc.conn.(Checker); ok && !ch.Alive() {
			pc.conn.Close()
			continue
		}
		q.Stats.Reused.Add(1)
		if pc.dest != d {
			if r, ok := pc.conn.(Reuser); ok {
				r.Reused(d, h)
			}
			pc.dest = d
		}
		return pc
	}
}

func (q *Manager) closeAsync(c Conn) {
	q.closers.Add(1)
	go func() {
		defer q.closers.Done()
		c.Close()
	}()
}

// schedule is the bounce profile's retry schedule: after the attempts-th
// attempt (1 = the first) failed at now, either the time of the next one,
// or expired when the recipient must bounce instead. Max retries counts
// retries, not the first attempt (the appliance: 2 retries with a 60 s
// interval means attempts at 0, 60 and 120 s, then a bounce). The interval
// starts at InitialRetry and doubles up to MaxRetryInterval; the last retry
// is brought forward to the end of MaxQueueLifetime, so a message never
// waits past its lifetime for an attempt.
func schedule(p Profile, arrival, now time.Time, attempts int) (next time.Time, expired bool) {
	deadline := arrival.Add(p.MaxQueueLifetime)
	if !now.Before(deadline) || attempts > p.MaxRetries {
		return time.Time{}, true
	}
	delay := p.InitialRetry << min(attempts-1, 20)
	if delay > p.MaxRetryInterval || delay <= 0 {
		delay = p.MaxRetryInterval
	}
	next = now.Add(delay)
	if next.After(deadline) {
		next = deadline
	}
	return next, false
}

// pushRetryLocked puts a job on the retry heap.
func (q *Manager) pushRetryLocked(j *job) {
	heap.Push(&q.retry, j)
	j.msg.waiting = append(j.msg.waiting, j)
}

// popRetryLocked takes the earliest job off the retry heap.
func (q *Manager) popRetryLocked() *job {
	j := heap.Pop(&q.retry).(*job)
	j.msg.unwait(j)
	return j
}

// removeRetryLocked takes a job off the retry heap.
func (q *Manager) removeRetryLocked(j *job) {
	heap.Remove(&q.retry, j.index)
	j.msg.unwait(j)
}

func (m *Message) unwait(j *job) {
	for i, x := range m.waiting {
		if x == j {
			m.waiting = append(m.waiting[:i], m.waiting[i+1:]...)
			break
		}
	}
	if len(m.waiting) == 0 {
		m.waiting = nil
	}
}

// freezeLocked moves a message out of memory when every one of its jobs
// waits for a retry: its jobs become coldJobs and the message is read back
// from the store when one is due. It stays in memory when the store cannot
// read messages back, or when two of its jobs are for the same destination
// (a recipient-limit split), which a read-back could not tell apart.
func (q *Manager) freezeLocked(m *Message) {
	if _, ok := q.o.Store.(Loader); !ok || m.deleted || len(m.waiting)+m.coldJobs != m.open {
		return
	}
	seen := make(map[uint32]bool, len(m.waiting))
	for _, j := range m.waiting {
		if seen[j.dest.id] {
			return
		}
		seen[j.dest.id] = true
	}
	if m.coldJobs > 0 {
		for _, c := range q.cold {
			if c.mid == m.MID && seen[c.dest] {
				return
			}
		}
	}
	for len(m.waiting) > 0 {
		j := m.waiting[0]
		q.removeRetryLocked(j)
		if last := m.LastReply[j.rids[0]]; last != nil {
			j.dest.coldReply = last
		}
		heap.Push(&q.cold, coldJob{next: j.next.UnixNano(), mid: m.MID, dest: j.dest.id,
			attempts: uint16(min(j.attempts, 65535)), warned: uint8(min(m.warned.Load(), 255))})
	}
	delete(q.msgs, m.MID)
	q.coldMsgs++
	if q.o.MaxActive > 0 {
		q.kickLocked() // room in the active queue
	}
}

// kickLocked wakes Run.
func (q *Manager) kickLocked() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// thaw brings the jobs in q.thawing back: each one's message is read from
// the store (outside the lock) unless it is already in memory, and the job
// for that destination is queued.
func (q *Manager) thaw() {
	loader := q.o.Store.(Loader)
	q.mu.Lock()
	var need []uint64
	for mid := range q.thawing {
		if _, hot := q.msgs[mid]; !hot {
			need = append(need, mid)
		}
	}
	q.mu.Unlock()
	recs := make(map[uint64]*spool.Record, len(need))
	for _, mid := range need {
		r, err := loader.Load(mid)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				slog.Error("qmgr: reading a deferred message back from the spool failed; it is retried at the next start", "mid", mid, "err", err)
			}
			continue
		}
		recs[mid] = r
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for mid, cs := range q.thawing {
		delete(q.thawing, mid)
		m := q.msgs[mid]
		if m == nil {
			r := recs[mid]
			if r == nil {
				q.coldMsgs-- // not readable (logged above): it stays on disk
				continue
			}
			m = q.messageFromRecord(r)
			m.coldJobs = m.open
			m.warned.Store(int32(cs[0].warned))
			q.msgs[mid] = m
			q.coldMsgs--
		}
		for _, c := range cs {
			q.coldJobLocked(m, c)
		}
	}
}

// coldJobLocked turns a cold job of a message now in memory into a ready
// job for its destination.
func (q *Manager) coldJobLocked(m *Message, c coldJob) {
	if j := q.jobFromColdLocked(m, c); j != nil {
		q.readyLocked(j)
	} else if m.open == 0 && !m.deleted {
		q.removeLocked(m, "done")
	}
}

// jobFromColdLocked makes the job of a message now in memory for one of
// its cold jobs: the pending recipients of that destination. It returns
// nil, and counts the job as finished, when none are left.
func (q *Manager) jobFromColdLocked(m *Message, c coldJob) *job {
	m.coldJobs--
	d := q.destByID[c.dest]
	var rids []int
	for rid, rc := range m.Env.Recipients {
		if m.States[rid] == spool.Pending && envelope.Domain(rc.Addr) == d.domain {
			rids = append(rids, rid)
			if m.LastReply[rid] == nil {
				m.LastReply[rid] = d.coldReply
			}
		}
	}
	if len(rids) == 0 {
		m.open-- // finished meanwhile
		return nil
	}
	return &job{msg: m, dest: d, rids: rids, attempts: int(c.attempts), next: time.Unix(0, c.next), index: -1}
}

// messageFromRecord makes the in-memory message for a record; open is the
// number of destinations with pending recipients (one job each).
func (q *Manager) messageFromRecord(r *spool.Record) *Message {
	m := &Message{MID: r.MID, Env: r.Env, Size: r.Size, States: r.States, LastReply: make([]*reply.Reply, len(r.Env.Recipients))}
	seen := map[string]bool{}
	for rid, rc := range r.Env.Recipients {
		if r.States[rid] != spool.Pending {
			continue
		}
		if d := envelope.Domain(rc.Addr); !seen[d] {
			seen[d] = true
			m.open++
		}
	}
	return m
}

// thawLocked brings a message that is out of memory back with all its
// jobs on the retry heap (for the administrator's Delete and Bounce). It
// reads the store under the lock: these are rare, single-message actions.
func (q *Manager) thawLocked(mid uint64) (*Message, bool) {
	mine := q.thawing[mid]
	delete(q.thawing, mid)
	kept := q.cold[:0]
	for _, c := range q.cold {
		if c.mid == mid {
			mine = append(mine, c)
		} else {
			kept = append(kept, c)
		}
	}
	if len(mine) == 0 {
		return nil, false
	}
	for i := len(kept); i < len(q.cold); i++ {
		q.cold[i] = coldJob{}
	}
	q.cold = kept
	heap.Init(&q.cold)
	m := q.msgs[mid]
	if m == nil {
		r, err := q.o.Store.(Loader).Load(mid)
		if err != nil {
			slog.Error("qmgr: reading a deferred message back from the spool failed", "mid", mid, "err", err)
			q.coldMsgs--
			return nil, false
		}
		m = q.messageFromRecord(r)
		m.coldJobs = m.open
		m.warned.Store(int32(mine[0].warned))
		q.msgs[mid] = m
		q.coldMsgs--
	}
	for _, c := range mine {
		if j := q.jobFromColdLocked(m, c); j != nil {
			q.pushRetryLocked(j)
		}
	}
	return m, true
}

// window counts recipients sent in the current rate-limit window.
type window struct {
	start time.Time
	used  int
}

// admit applies the destination's recipient limit to a job about to be
// sent on conn: it returns the job (possibly with fewer recipients, the
// rest split off and held) or nil when the whole job is held back until the
// window ends. Held recipients are deferred without counting as an attempt
// and are never bounced for it.
func (q *Manager) admit(j *job, conn Conn) *job {
	p := q.profile(j.dest.domain)
	if p.RecipientLimit <= 0 || p.RecipientWindow <= 0 {
		return j
	}
	key := "d:" + j.dest.domain
	if p.LimitsPerIP {
		key = "ip:" + conn.RemoteIP()
	}
	if p.LimitsPerGateway {
		key += "|" + j.dest.gateway
	}
	now := q.o.Now()
	q.mu.Lock()
	defer q.mu.Unlock()
	w := q.rate[key]
	if w == nil || now.Sub(w.start) >= p.RecipientWindow {
		w = &window{start: now}
		q.rate[key] = w
	}
	room := p.RecipientLimit - w.used
	if room >= len(j.rids) {
		w.used += len(j.rids)
		return j
	}
	until := w.start.Add(p.RecipientWindow)
	held := j
	if room > 0 {
		// Send what fits now; the rest waits for the next window.
		held = &job{msg: j.msg, dest: j.dest, rids: j.rids[room:], attempts: j.attempts, index: -1}
		j.msg.open++
		j.rids = j.rids[:room]
		w.used += room
	}
	held.active = false
	held.next = until
	q.o.Log.Infof("MID %d to RID %s held: recipient limit of %d per %s reached for %s, next attempt %s", held.msg.MID, ridString(held.rids),
		p.RecipientLimit, p.RecipientWindow, j.dest.domain, until.Format("Mon Jan _2 15:04:05 2006"))
	q.pushRetryLocked(held)
	select {
	case q.kick <- struct{}{}:
	default:
	}
	if room > 0 {
		return j
	}
	return nil
}

func asReply(err error) *reply.Reply {
	if r, ok := err.(*reply.Reply); ok {
		return r
	}
	if err == nil {
		return reply.New(451, "4.4.0", "connection failed")
	}
	return reply.New(451, "4.4.0", "%v", err)
}

func (q *Manager) txn(j *job) *Txn {
	m := j.msg
	return &Txn{MID: m.MID, Env: &m.Env, RIDs: j.rids, Size: m.Size, Dest: j.dest.domain, Retry: j.attempts,
		Open: func() (io.ReadCloser, error) {
			rc, _, err := q.o.Store.Body(m.MID)
			return rc, err
		}}
}

// failDest defers (or bounces, for a permanent reply) the first job and
// every other ready job of the destination: the destination is dead for now.
func (q *Manager) failDest(d *dest, first *job, dcid uint64, r *reply.Reply, host string) {
	jobs := []*job{first}
	if !r.Permanent() {
		q.mu.Lock()
		for _, j := range d.ready {
			if !j.msg.deleted {
				j.active = true
				jobs = append(jobs, j)
			}
		}
		d.ready = nil
		d.lastErr = r.String()
		q.mu.Unlock()
	}
	for _, j := range jobs {
		res := &TxnResult{Rcpt: make([]*reply.Reply, len(j.rids))}
		for i := range res.Rcpt {
			res.Rcpt[i] = r
		}
		q.outcome(j, dcid, host, res)
	}
}

// discardDest drops the first job and every ready job of a destination
// whose SMTP route is /dev/null: the recipients are final, and logged.
func (q *Manager) discardDest(d *dest, first *job) {
	jobs := []*job{first}
	q.mu.Lock()
	for _, j := range d.ready {
		if !j.msg.deleted {
			j.active = true
			jobs = append(jobs, j)
		}
	}
	d.ready = nil
	q.mu.Unlock()
	for _, j := range jobs {
		q.o.Log.Infof("MID %d to RID %s discarded: SMTP route /dev/null for %s", j.msg.MID, ridString(j.rids), d.domain)
		res := &TxnResult{Rcpt: make([]*reply.Reply, len(j.rids))}
		for i := range res.Rcpt {
			res.Rcpt[i] = &reply.Reply{Code: 250, Enhanced: "2.0.0", Text: "discarded by SMTP route /dev/null"}
		}
		q.outcome(j, 0, "/dev/null", res)
	}
}

func (q *Manager) finish(j *job, conn Conn, res *TxnResult) {
	q.outcome(j, conn.DCID(), conn.Host(), res)
}

// outcome applies a transaction result to a job's recipients.
func (q *Manager) outcome(j *job, dcid uint64, host string, res *TxnResult) {
	m := j.msg
	var done, bounced, deferred []int
	var bounceF, deferF []Failure
	for i, rid := range j.rids {
		r := res.Rcpt[i]
		if r == nil {
			r = reply.New(0, "4.4.2", "connection lost before the destination answered")
		}
		m.LastReply[rid] = r
		switch {
		case r.Success():
			done = append(done, rid)
		case r.Permanent():
			bounced = append(bounced, rid)
			bounceF = append(bounceF, Failure{RID: rid, Reply: r, RemoteMTA: host})
		default:
			deferred = append(deferred, rid)
			deferF = append(deferF, Failure{RID: rid, Reply: r, RemoteMTA: host})
		}
	}
	from := m.Env.From
	if len(done) > 0 {
		if err := q.o.Store.Mark(m.MID, done, spool.Delivered); err != nil {
			// The destination has it; a failed journal write means a
			// possible duplicate after a crash, never a loss.
			slog.Error("qmgr: recording delivery", "mid", m.MID, "err", err)
		}
		q.Stats.Delivered.Add(int64(len(done)))
	}
	j.attempts++
	now := q.o.Now()
	prof := q.profile(j.dest.domain)
	next, expired := schedule(prof, m.Env.Time, now, j.attempts)
	if len(deferred) > 0 && expired {
		for i := range deferF {
			last := deferF[i].Reply
			deferF[i].Reason = fmt.Sprintf("delivery expired after %s in queue and %d attempts; last error: %s", now.Sub(m.Env.Time).Round(time.Second), j.attempts, last)
			deferF[i].Reply = reply.New(last.Code, "5.4.7", "Delivery expired (message too old): %s", last.Text)
			deferF[i].Reply.Code = last.Code
		}
		bounced = append(bounced, deferred...)
		bounceF = append(bounceF, deferF...)
		deferred, deferF = nil, nil
	}
	for _, f := range bounceF {
		code := f.Reply.CodeString()
		enh := f.Reply.Class()
		if enh[0] != '5' {
			enh = "5" + enh[1:]
		}
		q.o.Log.Bounced(dcid, m.MID, from, m.Env.Recipients[f.RID].Addr, f.RID, enh, code, f.Reply.Text)
	}
	if len(bounced) > 0 {
		if q.o.Bouncer != nil {
			if err := q.o.Bouncer.Bounce(q.context(), m, bounceF, "failed"); err != nil {
				// Without a durable DSN the recipient stays pending: retry later.
				slog.Error("qmgr: storing DSN failed; recipients kept for retry", "mid", m.MID, "err", err)
				deferred = append(deferred, bounced...)
				bounced = nil
			}
		}
		if len(bounced) > 0 {
			if err := q.o.Store.Mark(m.MID, bounced, spool.Bounced); err != nil {
				slog.Error("qmgr: recording bounce", "mid", m.MID, "err", err)
			}
			q.Stats.Bounced.Add(int64(len(bounced)))
		}
	}
	if len(deferred) > 0 && q.o.Bouncer != nil && prof.DelayWarnCount > 0 && prof.DelayWarnInterval > 0 {
		n := m.warned.Load()
		if int(n) < prof.DelayWarnCount && now.Sub(m.Env.Time) >= prof.DelayWarnInterval*time.Duration(n+1) && m.warned.CompareAndSwap(n, n+1) {
			if err := q.o.Bouncer.Bounce(q.context(), m, deferF, "delayed"); err != nil {
				slog.Error("qmgr: storing delay DSN failed", "mid", m.MID, "err", err)
			}
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, rid := range done {
		m.States[rid] = spool.Delivered
	}
	for _, rid := range bounced {
		m.States[rid] = spool.Bounced
	}
	j.active = false
	if len(deferred) > 0 && !m.deleted {
		q.Stats.Deferred.Add(int64(len(deferred)))
		for _, f := range deferF {
			q.o.Log.Delayed(dcid, m.MID, from, m.Env.Recipients[f.RID].Addr, f.RID, f.Reply.Class(), f.Reply.CodeString(), f.Reply.Text)
		}
		j.rids = deferred
		j.next = next
		q.o.Log.Pending(m.MID, deferred, j.next, prof.BounceProfile)
		q.pushRetryLocked(j)
		q.freezeLocked(m)
		select {
		case q.kick <- struct{}{}:
		default:
		}
		return
	}
	m.open--
	if m.open == 0 && !m.deleted {
		q.removeLocked(m, "done")
	}
}

func (q *Manager) removeLocked(m *Message, how string) {
	delete(q.msgs, m.MID)
	if q.o.MaxActive > 0 {
		q.kickLocked() // room in the active queue
	}
	if err := q.o.Store.Remove(m.MID); err != nil {
		slog.Error("qmgr: remove message", "mid", m.MID, "err", err)
	}
	q.o.Log.MessageFinished(m.MID, how)
}

// Info is a queue view row.
type Info struct {
	MID        uint64     `json:"mid"`
	From       string     `json:"from"`
	Recipients []RcptInfo `json:"recipients"`
	Size       int64      `json:"size"`
	Arrived    time.Time  `json:"arrived"`
}

// RcptInfo is one recipient in a queue view.
type RcptInfo struct {
	RID       int       `json:"rid"`
	Addr      string    `json:"addr"`
	State     string    `json:"state"`
	LastReply string    `json:"last_reply,omitempty"`
	NextTry   time.Time `json:"next_try,omitempty"`
	Attempts  int       `json:"attempts"`
}

// List returns the queued messages, oldest first. It holds every row at
// once: for a large queue prefer Each.
func (q *Manager) List() []Info {
	var out []Info
	q.Each(func(in Info) bool {
		out = append(out, in)
		return true
	})
	return out
}

// Each calls f for every queued message, oldest (lowest MID) first, until
// f returns false. Messages out of memory are read back one at a time,
// outside the lock, so a backlog of 100 000 is never all in memory at once.
func (q *Manager) Each(f func(Info) bool) {
	q.mu.Lock()
	hot := make([]uint64, 0, len(q.msgs))
	for mid := range q.msgs {
		hot = append(hot, mid)
	}
	cold := make([]coldJob, 0, q.cold.Len())
	cold = append(cold, q.cold...)
	for _, cs := range q.thawing {
		cold = append(cold, cs...)
	}
	q.mu.Unlock()
	slices.Sort(hot)
	slices.SortFunc(cold, func(a, b coldJob) int { return cmp.Compare(a.mid, b.mid) })
	for len(hot) > 0 || len(cold) > 0 {
		if len(hot) > 0 && (len(cold) == 0 || hot[0] <= cold[0].mid) {
			mid := hot[0]
			hot = hot[1:]
			// Its cold jobs, if any (a message partly read back).
			n := 0
			for n < len(cold) && cold[n].mid == mid {
				n++
			}
			jobs := cold[:n]
			cold = cold[n:]
			q.mu.Lock()
			m, ok := q.msgs[mid]
			var in Info
			if ok {
				in = q.infoLocked(m, jobs)
			}
			q.mu.Unlock()
			if ok && !f(in) {
				return
			}
			continue
		}
		mid := cold[0].mid
		n := 0
		for n < len(cold) && cold[n].mid == mid {
			n++
		}
		jobs := cold[:n]
		cold = cold[n:]
		in, ok := q.coldInfo(mid, jobs)
		if !ok {
			q.mu.Lock()
			m, hotNow := q.msgs[mid] // read back meanwhile
			if hotNow {
				in, ok = q.infoLocked(m, nil), true
			}
			q.mu.Unlock()
		}
		if ok && !f(in) {
			return
		}
	}
}

// Show returns one message.
func (q *Manager) Show(mid uint64) (Info, bool) {
	q.mu.Lock()
	mine := append([]coldJob(nil), q.thawing[mid]...)
	for _, c := range q.cold {
		if c.mid == mid {
			mine = append(mine, c)
		}
	}
	if m, ok := q.msgs[mid]; ok {
		defer q.mu.Unlock()
		return q.infoLocked(m, mine), true
	}
	q.mu.Unlock()
	if len(mine) == 0 {
		return Info{}, false
	}
	return q.coldInfo(mid, mine)
}

// coldInfo is the queue view of a message out of memory, read back.
func (q *Manager) coldInfo(mid uint64, jobs []coldJob) (Info, bool) {
	r, err := q.o.Store.(Loader).Load(mid)
	if err != nil {
		return Info{}, false // finished meanwhile
	}
	m := q.messageFromRecord(r)
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.infoLocked(m, jobs), true
}

// infoLocked is a message's queue view; cold are its jobs out of memory.
func (q *Manager) infoLocked(m *Message, cold []coldJob) Info {
	in := Info{MID: m.MID, From: m.Env.From, Size: m.Size, Arrived: m.Env.Time}
	jobOf := map[int]*job{}
	for _, j := range m.waiting {
		for _, r := range j.rids {
			jobOf[r] = j
		}
	}
	coldOf := map[string]coldJob{}
	for _, c := range cold {
		coldOf[q.destByID[c.dest].domain] = c
	}
	for rid, rc := range m.Env.Recipients {
		ri := RcptInfo{RID: rid, Addr: rc.Addr}
		last := m.LastReply[rid]
		switch m.States[rid] {
		case spool.Delivered:
			ri.State = "delivered"
		case spool.Bounced:
			ri.State = "bounced"
		default:
			ri.State = "active"
			if j := jobOf[rid]; j != nil {
				ri.State, ri.NextTry, ri.Attempts = "deferred", j.next, j.attempts
			} else if c, ok := coldOf[envelope.Domain(rc.Addr)]; ok {
				ri.State, ri.NextTry, ri.Attempts = "deferred", time.Unix(0, c.next), int(c.attempts)
				if last == nil {
					last = q.destByID[c.dest].coldReply
				}
			}
		}
		if last != nil {
			ri.LastReply = last.String()
		}
		in.Recipients = append(in.Recipients, ri)
	}
	return in
}

// Flush makes every deferred job ready now; it returns how many.
func (q *Manager) Flush() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, d := range q.dests {
		d.deadReply = nil // the administrator asks for attempts now
	}
	n := 0
	for q.retry.Len() > 0 {
		j := q.popRetryLocked()
		q.readyLocked(j)
		n++
	}
	// Jobs of messages not in memory: due now; Run reads them back.
	now := q.o.Now().UnixNano()
	for i := range q.cold {
		q.cold[i].next = now
	}
	n += q.cold.Len()
	if q.cold.Len() > 0 {
		select {
		case q.kick <- struct{}{}:
		default:
		}
	}
	return n
}

// Delete removes a message from the queue without a DSN.
func (q *Manager) Delete(mid uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	m, ok := q.msgs[mid]
	if !ok || m.coldJobs > 0 {
		m, ok = q.thawLocked(mid)
	}
	if !ok {
		return fmt.Errorf("MID %d is not in the queue", mid)
	}
	q.dropJobsLocked(m)
	var rids []int
	for rid, st := range m.States {
		if st == spool.Pending {
			rids = append(rids, rid)
		}
	}
	if err := q.o.Store.Mark(mid, rids, spool.Bounced); err != nil {
		return fmt.Errorf("delete MID %d: %w", mid, err)
	}
	m.deleted = true
	q.o.Log.Infof("Deleted: MID %d to %s", mid, ridString(rids))
	q.removeLocked(m, "aborted")
	return nil
}

// BounceNow bounces every pending recipient of a message with a DSN.
func (q *Manager) BounceNow(ctx context.Context, mid uint64) error {
	q.mu.Lock()
	m, ok := q.msgs[mid]
	if !ok || m.coldJobs > 0 {
		m, ok = q.thawLocked(mid)
	}
	if !ok {
		q.mu.Unlock()
		return fmt.Errorf("MID %d is not in the queue", mid)
	}
	q.dropJobsLocked(m)
	var fails []Failure
	var rids []int
	for rid, st := range m.States {
		if st == spool.Pending {
			rids = append(rids, rid)
			fails = append(fails, Failure{RID: rid, Reply: reply.New(554, "5.0.0", "bounced by the administrator"), Reason: "the gateway administrator bounced this message from the queue"})
		}
	}
	m.deleted = true
	q.mu.Unlock()
	for _, f := range fails {
		q.o.Log.Bounced(0, mid, m.Env.From, m.Env.Recipients[f.RID].Addr, f.RID, "5.0.0", "554", f.Reply.Text)
	}
	if q.o.Bouncer != nil {
		if err := q.o.Bouncer.Bounce(ctx, m, fails, "failed"); err != nil {
			return fmt.Errorf("bounce MID %d: %w", mid, err)
		}
	}
	if err := q.o.Store.Mark(mid, rids, spool.Bounced); err != nil {
		return fmt.Errorf("bounce MID %d: %w", mid, err)
	}
	q.mu.Lock()
	q.removeLocked(m, "done")
	q.mu.Unlock()
	return nil
}

func (q *Manager) dropJobsLocked(m *Message) {
	for len(m.waiting) > 0 {
		q.removeRetryLocked(m.waiting[0])
	}
	for _, d := range q.dests {
		kept := d.ready[:0]
		for _, j := range d.ready {
			if j.msg != m {
				kept = append(kept, j)
			}
		}
		d.ready = kept
	}
}

// DestInfo summarises a destination queue.
type DestInfo struct {
	Domain  string `json:"domain"`
	Gateway string `json:"gateway,omitempty"`
	Ready   int    `json:"ready"`
	Active  int    `json:"connections"`
	LastErr string `json:"last_error,omitempty"`
}

// Destinations lists destination queues.
func (q *Manager) Destinations() []DestInfo {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []DestInfo
	for _, d := range q.dests {
		out = append(out, DestInfo{Domain: d.domain, Gateway: d.gateway, Ready: len(d.ready), Active: d.active, LastErr: d.lastErr})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Domain < out[j].Domain })
	return out
}

// Size returns the number of queued messages and the age of the oldest.
func (q *Manager) Size() (int, time.Duration) {
	q.mu.Lock()
	var oldest time.Time
	for _, m := range q.msgs {
		if oldest.IsZero() || m.Env.Time.Before(oldest) {
			oldest = m.Env.Time
		}
	}
	// MIDs grow with arrival: the oldest message out of memory is the
	// one with the lowest MID.
	var first uint64
	for _, c := range q.cold {
		if first == 0 || c.mid < first {
			first = c.mid
		}
	}
	for mid := range q.thawing {
		if first == 0 || mid < first {
			first = mid
		}
	}
	cached := q.oldestCold
	n := len(q.msgs) + q.coldMsgs
	q.mu.Unlock()
	if first != 0 {
		t := cached.t
		if cached.mid != first {
			if r, err := q.o.Store.(Loader).Load(first); err == nil {
				t = r.Env.Time
				q.mu.Lock()
				q.oldestCold.mid, q.oldestCold.t = first, t
				q.mu.Unlock()
			}
		}
		if !t.IsZero() && (oldest.IsZero() || t.Before(oldest)) {
			oldest = t
		}
	}
	if oldest.IsZero() {
		return n, 0
	}
	return n, q.o.Now().Sub(oldest)
}

// Resident returns how many queued messages are in memory and how many
// wait for a retry on disk only.
func (q *Manager) Resident() (inMemory, onDisk int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.msgs), q.coldMsgs
}

func ridString(rids []int) string {
	s := make([]string, len(rids))
	for i, r := range rids {
		s[i] = fmt.Sprint(r)
	}
	return "[" + strings.Join(s, ", ") + "]"
}

type retryHeap []*job

func (h retryHeap) Len() int           { return len(h) }
func (h retryHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
func (h retryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].index = i; h[j].index = j }
func (h *retryHeap) Push(x any)        { j := x.(*job); j.index = len(*h); *h = append(*h, j) }
func (h *retryHeap) Pop() any {
	old := *h
	j := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	j.index = -1
	return j
}
