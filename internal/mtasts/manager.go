package mtasts

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"outpost/internal/maillog"
)

// TXTResolver is the DNS the Manager needs. The application adapts its
// resolver to it. LookupTXT returns one string per TXT record, the
// record's character-strings concatenated. CNAMEs are followed.
//
// Errors: NXDOMAIN and NODATA must wrap ErrNotFound (no policy); any other
// error (SERVFAIL, timeout, refused, network) is a temporary failure.
type TXTResolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

var (
	// ErrNotFound is what a TXTResolver (or MXResolver) returns, wrapped or
	// not, for NXDOMAIN or NODATA.
	ErrNotFound = errors.New("no such DNS name or no records of that type")
	// ErrTemporary is wrapped by every error Manager.Get, Recheck and
	// Refresh return: the policy state is unknown for now, so the caller
	// must defer the message, never send it as if there were no policy.
	ErrTemporary = errors.New("MTA-STS policy temporarily unavailable")
)

// Source says where a Result came from.
type Source uint8

// The result sources.
const (
	SourceNone  Source = iota // no policy
	SourceCache               // a cached, unexpired policy
	SourceFetch               // fetched during this call
)

func (s Source) String() string {
	return [...]string{"none", "cache", "fetch"}[min(int(s), 2)]
}

// Result is the policy that applies to a domain now.
//
// How a caller reads it:
//
//	res, err := m.Get(ctx, domain)
//	switch {
//	case err != nil:                 // errors.Is(err, ErrTemporary): defer the message
//	case res.Mode == ModeEnforce:    // only res.Matches(mx) hosts, TLS 1.2+, valid cert
//	case res.Mode == ModeTesting:    // deliver as usual, report what would fail
//	case res.Mode == ModeNone:       // the domain withdrew its policy: no restriction
//	default /* NoPolicy */:          // the profile's TLS mode alone; res.Err says why
//	}
type Result struct {
	Domain string
	// Mode is the policy's mode, or NoPolicy.
	Mode Mode
	// Policy is nil exactly when Mode is NoPolicy.
	Policy    *Policy
	ID        string // the TXT id the policy was fetched under
	FetchedAt time.Time
	Expires   time.Time
	Source    Source
	// Err explains a NoPolicy result (ErrNotFound, a TXT *SyntaxError, a
	// *FetchError) or, with a cached policy, the failure that made us keep
	// it (TXT lookup failure, failed refetch). Informational only.
	Err error
}

// Matches reports whether host may receive mail under the policy (RFC 8461
// §4.1); false when there is no policy.
func (r *Result) Matches(host string) bool { return r.Policy.Matches(host) }

func resultFromEntry(e *Entry, src Source, why error) Result {
	return Result{Domain: e.Domain, Mode: e.Policy.Mode, Policy: e.Policy, ID: e.ID,
		FetchedAt: e.FetchedAt, Expires: e.Expires, Source: src, Err: why}
}

// Options configure a Manager. Only Resolver is required.
type Options struct {
	Resolver TXTResolver
	// Store persists policies across restarts; nil keeps them in memory
	// only. The caller opens and closes it.
	Store Store
	// Roots verify policy hosts' certificates; nil means system roots.
	Roots *x509.CertPool
	// FetchTimeout bounds each TXT lookup and each policy fetch; zero
	// means DefaultFetchTimeout (10 s).
	FetchTimeout time.Duration
	// Proxy is an optional http://host:port CONNECT proxy for fetches.
	Proxy *url.URL
	// DialContext overrides TCP dialing for fetches (see FetchOptions).
	DialContext DialFunc
	// TXTCheckInterval is how long a TXT answer (or its absence) is
	// trusted before the next message to the domain looks again; zero
	// means one minute. Decisions inside it come from memory.
	TXTCheckInterval time.Duration
	// FetchRetryInterval is the least time between fetch attempts for one
	// policy id after a failure, and between forced rechecks of one
	// domain; zero means five minutes (RFC 8461 §3.3).
	FetchRetryInterval time.Duration
	// DisableRefresh turns off Run's proactive refresh.
	DisableRefresh bool
	// RefreshWindow: only domains that had a Get within this window are
	// refreshed in the background; zero means 7 days.
	RefreshWindow time.Duration
	// RefreshScanInterval is how often Run looks for due refreshes; zero
	// means one minute.
	RefreshScanInterval time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// ResolverLogsQueries says the Resolver already writes a Debug
	// "DNS query" line for each network query, so the manager must not
	// write its own.
	ResolverLogsQueries bool
	// Log receives the MTA-STS mail-log lines; nil discards them.
	Log *maillog.Logger
}

// domainState is the in-memory cache slot of one domain. Fields other than
// lastUsed are guarded by Manager.mu; entry is immutable once published.
type domainState struct {
	entry       *Entry    // cached policy, possibly expired; nil = none
	checkedAt   time.Time // last TXT check that settled the state
	why         error     // why there is no policy (when entry is nil)
	failedID    string    // id whose fetch last failed
	failedAt    time.Time
	recheckedAt time.Time
	refreshAt   time.Time
	lastUsed    atomic.Int64 // unix nanoseconds of the last Get
}

type call struct {
	done chan struct{}
	res  Result
	err  error
}

type discoverKind uint8

const (
	kindGet     discoverKind = iota // normal: fetch only on new id or no cache
	kindRecheck                     // before failing on a cached enforce policy
	kindRefresh                     // proactive refresh / admin refresh
)

// Manager decides which policy applies to a domain: memory first, the
// store after a restart, DNS and HTTPS when needed. It is safe for
// concurrent use.
type Manager struct {
	o   Options
	now func() time.Time

	mu  sync.RWMutex
	mem map[string]*domainState

	fmu     sync.Mutex
	flights map[string]*call
	wg      sync.WaitGroup
}

// New makes a Manager and loads the store's entries into memory (expired
// ones are dropped from the store).
func New(ctx context.Context, o Options) (*Manager, error) {
	if o.Resolver == nil {
		return nil, errors.New("mta-sts: a resolver is required")
	}
	if o.Proxy != nil && o.Proxy.Scheme != "http" {
		return nil, fmt.Errorf("mta-sts: proxy %q: only http:// (CONNECT) proxies are supported", o.Proxy.Redacted())
	}
	if o.Store == nil {
		o.Store = NewMemStore()
	}
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = DefaultFetchTimeout
	}
	if o.TXTCheckInterval <= 0 {
		o.TXTCheckInterval = time.Minute
	}
	if o.FetchRetryInterval <= 0 {
		o.FetchRetryInterval = 5 * time.Minute
	}
	if o.RefreshWindow <= 0 {
		o.RefreshWindow = 7 * 24 * time.Hour
	}
	if o.RefreshScanInterval <= 0 {
		o.RefreshScanInterval = time.Minute
	}
	m := &Manager{o: o, now: o.Now, mem: map[string]*domainState{}, flights: map[string]*call{}}
	if m.now == nil {
		m.now = time.Now
	}
	entries, err := o.Store.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("mta-sts: load cache: %w", err)
	}
	now := m.now()
	for _, e := range entries {
		if !e.Valid(now) {
			if err := o.Store.Delete(ctx, e.Domain); err != nil {
				slog.Warn("mta-sts: drop expired cache entry", "domain", e.Domain, "err", err)
			}
			continue
		}
		st := &domainState{entry: e}
		st.refreshAt = refreshTime(e)
		m.mem[e.Domain] = st
	}
	return m, nil
}

// Close waits for discoveries still running (each is bounded by the fetch
// timeout). It does not close the Store.
func (m *Manager) Close() { m.wg.Wait() }

// Get returns the policy that applies to mail for domain now (RFC 8461
// §5.1 step 1). Inside TXTCheckInterval of the last check the answer comes
// from memory; otherwise the TXT record is looked up and, when its id is
// new or nothing is cached, the policy is fetched, the caller waiting at
// most about two fetch timeouts. Concurrent calls for one domain share one
// lookup and fetch.
//
// The error is non-nil only for a temporary failure (errors.Is(err,
// ErrTemporary)): the TXT lookup failed with nothing cached, or ctx ended.
// A domain that is not a valid host name has NoPolicy.
func (m *Manager) Get(ctx context.Context, domain string) (Result, error) {
	d, ok := normalizeDomain(domain)
	if !ok {
		return Result{Domain: d, Err: fmt.Errorf("%q is not a host name", domain)}, nil
	}
	now := m.now()
	m.mu.RLock()
	st := m.mem[d]
	var (
		res Result
		hit bool
	)
	if st != nil {
		st.lastUsed.Store(now.UnixNano())
		if now.Sub(st.checkedAt) < m.o.TXTCheckInterval {
			if st.entry.Valid(now) {
				res, hit = resultFromEntry(st.entry, SourceCache, nil), true
			} else if st.entry == nil {
				res, hit = Result{Domain: d, Err: st.why}, true
			}
		}
	}
	m.mu.RUnlock()
	if hit {
		if res.Policy != nil {
			m.o.Log.MTASTSCacheHit(d)
		}
		return res, nil
	}
	return m.do(ctx, d, kindGet)
}

// Recheck is called before failing a message because no MX host matches a
// cached enforce policy (RFC 8461 §5.1 step 3: "A message delivery attempt
// MUST NOT be permanently failed until the sender has first checked for
// the presence of a new policy"). It looks the TXT record up again and
// refetches the policy once, whatever the id (a domain may have changed
// its MX list without changing the id), at most once per
// FetchRetryInterval per domain; inside that interval it returns what Get
// would. Errors are as for Get.
func (m *Manager) Recheck(ctx context.Context, domain string) (Result, error) {
	d, ok := normalizeDomain(domain)
	if !ok {
		return Result{Domain: d, Err: fmt.Errorf("%q is not a host name", domain)}, nil
	}
	return m.do(ctx, d, kindRecheck)
}

// Refresh looks the domain up and fetches its policy now, whatever the
// cache holds (cache admin "refresh"). A failed fetch keeps the cached
// policy, as always.
func (m *Manager) Refresh(ctx context.Context, domain string) (Result, error) {
	d, ok := normalizeDomain(domain)
	if !ok {
		return Result{Domain: d, Err: fmt.Errorf("%q is not a host name", domain)}, nil
	}
	return m.do(ctx, d, kindRefresh)
}

// do runs one discovery per (domain, kind) at a time; callers for the same
// key wait for it. The discovery runs detached from any one caller's
// cancellation (it is bounded by the timeouts), so one impatient caller
// does not fail the others.
func (m *Manager) do(ctx context.Context, d string, kind discoverKind) (Result, error) {
	key := d
	if kind != kindGet {
		key = string(rune('0'+kind)) + "\x00" + d
	}
	m.fmu.Lock()
	c, ok := m.flights[key]
	if !ok {
		c = &call{done: make(chan struct{})}
		m.flights[key] = c
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			c.res, c.err = m.discover(context.WithoutCancel(ctx), d, kind)
			m.fmu.Lock()
			delete(m.flights, key)
			m.fmu.Unlock()
			close(c.done)
		}()
	}
	m.fmu.Unlock()
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		return Result{Domain: d}, fmt.Errorf("mta-sts %s: %w: %w", d, ErrTemporary, ctx.Err())
	}
}

// state returns d's slot, creating it; the caller holds m.mu.
func (m *Manager) stateLocked(d string) *domainState {
	st := m.mem[d]
	if st == nil {
		st = &domainState{}
		m.mem[d] = st
	}
	return st
}

func (m *Manager) discover(ctx context.Context, d string, kind discoverKind) (Result, error) {
	now := m.now()
	m.mu.Lock()
	st := m.stateLocked(d)
	if kind == kindGet {
		st.lastUsed.Store(now.UnixNano())
	}
	cur := st.entry
	if !cur.Valid(now) {
		cur = nil
	}
	if kind == kindRecheck {
		if now.Sub(st.recheckedAt) < m.o.FetchRetryInterval {
			res := m.currentLocked(st, d, now)
			m.mu.Unlock()
			return res, nil
		}
		st.recheckedAt = now
	}
	failedID, failedAt := st.failedID, st.failedAt
	m.mu.Unlock()

	// RFC 8461 §3.1: policy discovery starts at the _mta-sts TXT record.
	if !m.o.ResolverLogsQueries {
		m.o.Log.MTASTSTXTQuery(d)
	}
	tctx, cancel := context.WithTimeout(ctx, m.o.FetchTimeout)
	txts, err := m.o.Resolver.LookupTXT(tctx, "_mta-sts."+d)
	cancel()
	var (
		rec  TXTRecord
		none error
	)
	switch {
	case err == nil:
		rec, none = SelectTXT(txts)
	case errors.Is(err, ErrNotFound):
		none = fmt.Errorf("no _mta-sts TXT record: %w", err)
	default:
		// A temporary DNS failure is not "no policy": with a cached policy
		// we apply it (RFC 8461 §3.3), without one the caller defers.
		if cur != nil {
			m.markChecked(d, now)
			return resultFromEntry(cur, SourceCache, fmt.Errorf("TXT lookup failed, cached policy kept: %w", err)), nil
		}
		return Result{Domain: d}, fmt.Errorf("mta-sts %s: TXT lookup: %w: %w", d, ErrTemporary, err)
	}
	if none != nil {
		// RFC 8461 §3.3: "if no 'live' policy can be discovered via DNS or
		// fetched via HTTPS, but a valid (non-expired) policy exists in the
		// sender's cache, the sender MUST apply that cached policy."
		if cur != nil {
			m.markChecked(d, now)
			return resultFromEntry(cur, SourceCache, none), nil
		}
		m.setNoPolicy(d, now, none)
		return Result{Domain: d, Err: none}, nil
	}
	m.o.Log.MTASTSTXTFetched(d)
	if kind == kindGet {
		if cur != nil && cur.ID == rec.ID {
			m.markChecked(d, now)
			m.o.Log.MTASTSCacheHit(d)
			return resultFromEntry(cur, SourceCache, nil), nil
		}
		// RFC 8461 §3.3: after a failed fetch, "implementations SHOULD
		// limit further attempts to a period of five minutes or longer per
		// version ID".
		if failedID == rec.ID && now.Sub(failedAt) < m.o.FetchRetryInterval {
			m.mu.Lock()
			st.checkedAt = now
			res := m.currentLocked(st, d, now)
			m.mu.Unlock()
			return res, nil
		}
	}

	f, ferr := Fetch(ctx, d, FetchOptions{
		Roots: m.o.Roots, Timeout: m.o.FetchTimeout, Proxy: m.o.Proxy,
		DialContext: m.o.DialContext, Log: m.o.Log,
	})
	now = m.now()
	if ferr != nil {
		m.mu.Lock()
		st.failedID, st.failedAt = rec.ID, now
		st.checkedAt = now
		if kind == kindRefresh {
			st.refreshAt = now.Add(m.o.FetchRetryInterval)
		}
		if cur == nil {
			st.entry, st.why = nil, ferr
		}
		m.mu.Unlock()
		if cur != nil {
			// RFC 8461 §3.3: keep applying the valid cached policy.
			return resultFromEntry(cur, SourceCache, ferr), nil
		}
		// RFC 8461 §3.3: no policy fetched and none cached → deliver as
		// though the domain had not implemented MTA-STS.
		return Result{Domain: d, Err: ferr}, nil
	}
	e := &Entry{Domain: d, ID: rec.ID, Raw: f.Raw, Policy: f.Policy, FetchedAt: now,
		Expires: now.Add(time.Duration(f.Policy.MaxAge) * time.Second)}
	if err := m.o.Store.Put(ctx, e); err != nil {
		slog.Warn("mta-sts: cache write failed; policy kept in memory", "domain", d, "err", err)
	}
	m.mu.Lock()
	st.entry, st.why, st.checkedAt = e, nil, now
	st.failedID, st.failedAt = "", time.Time{}
	st.refreshAt = refreshTime(e)
	m.mu.Unlock()
	return resultFromEntry(e, SourceFetch, nil), nil
}

// currentLocked is what memory says for d at now; the caller holds m.mu.
func (m *Manager) currentLocked(st *domainState, d string, now time.Time) Result {
	if st.entry.Valid(now) {
		return resultFromEntry(st.entry, SourceCache, nil)
	}
	return Result{Domain: d, Err: st.why}
}

func (m *Manager) markChecked(d string, now time.Time) {
	m.mu.Lock()
	m.stateLocked(d).checkedAt = now
	m.mu.Unlock()
}

func (m *Manager) setNoPolicy(d string, now time.Time, why error) {
	m.mu.Lock()
	st := m.stateLocked(d)
	st.entry, st.why, st.checkedAt = nil, why, now
	m.mu.Unlock()
}

// refreshTime is when Run refreshes e: three quarters into its lifetime but
// at most a day after the fetch (RFC 8461 §3.3 suggests daily), minus up
// to 10% jitter so that policies fetched together are not refreshed in
// one burst.
func refreshTime(e *Entry) time.Time {
	life := e.Expires.Sub(e.FetchedAt)
	d := min(life*3/4, 24*time.Hour)
	if d > 0 {
		d -= time.Duration(rand.Int64N(int64(d)/10 + 1))
	}
	return e.FetchedAt.Add(d)
}

// Run refreshes cached policies before they expire (RFC 8461 §3.3: "MTAs
// SHOULD proactively refresh cached policies before they expire"), for
// domains that had mail within RefreshWindow, until ctx ends. A refresh
// re-reads the TXT record and refetches; a failure keeps the cached
// policy and is retried after FetchRetryInterval. With DisableRefresh it
// only waits for ctx.
func (m *Manager) Run(ctx context.Context) error {
	if m.o.DisableRefresh {
		<-ctx.Done()
		return nil
	}
	t := time.NewTimer(m.o.RefreshScanInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		for _, d := range m.dueForRefresh() {
			if ctx.Err() != nil {
				return nil
			}
			if _, err := m.do(ctx, d, kindRefresh); err != nil && ctx.Err() == nil {
				slog.Debug("mta-sts: refresh", "domain", d, "err", err)
			}
		}
		t.Reset(m.o.RefreshScanInterval)
	}
}

func (m *Manager) dueForRefresh() []string {
	now := m.now()
	recent := now.Add(-m.o.RefreshWindow).UnixNano()
	var due []string
	m.mu.RLock()
	for d, st := range m.mem {
		if st.entry != nil && !now.Before(st.refreshAt) && st.lastUsed.Load() >= recent {
			due = append(due, d)
		}
	}
	m.mu.RUnlock()
	sort.Strings(due)
	return due
}

// List returns the cached policies (expired ones included until they are
// dropped), sorted by domain.
func (m *Manager) List() []Entry {
	m.mu.RLock()
	out := make([]Entry, 0, len(m.mem))
	for _, st := range m.mem {
		if st.entry != nil {
			out = append(out, *st.entry)
		}
	}
	m.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Domain < out[j].Domain })
	return out
}

// Show returns domain's cached policy, or ErrNoEntry.
func (m *Manager) Show(domain string) (Entry, error) {
	d, _ := normalizeDomain(domain)
	m.mu.RLock()
	defer m.mu.RUnlock()
	if st := m.mem[d]; st != nil && st.entry != nil {
		return *st.entry, nil
	}
	return Entry{}, fmt.Errorf("%s: %w", d, ErrNoEntry)
}

// Flush forgets domain: memory and store. The next message looks it up
// afresh. Note that this drops the protection of a cached policy (RFC 8461
// §10 warns that an attacker can then block the fetch); it is an
// administrator's decision.
func (m *Manager) Flush(ctx context.Context, domain string) error {
	d, _ := normalizeDomain(domain)
	m.mu.Lock()
	delete(m.mem, d)
	m.mu.Unlock()
	if err := m.o.Store.Delete(ctx, d); err != nil {
		return fmt.Errorf("flush %s: %w", d, err)
	}
	return nil
}
