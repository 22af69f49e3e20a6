package mtasts

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// env is one test world: a DNS server, a policy host and a clock.
type env struct {
	t     *testing.T
	dns   *dnsServer
	host  *policyHost
	clock *fakeClock
	lines *logBuf
	opts  Options
}

func newEnv(t *testing.T, policy string) *env {
	e := &env{t: t, dns: newDNSServer(t), clock: &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}}
	e.host = newPolicyHost(t, ca(t).MustLeaf("mta-sts."+testDomain), serveText(policy))
	e.dns.SetTXT("_mta-sts."+testDomain, "v=STSv1; id=id1;")
	log, lines := newLog()
	e.lines = lines
	e.opts = Options{
		Resolver:     dnsResolver{e.dns.Addr},
		Roots:        ca(t).Pool(),
		FetchTimeout: 2 * time.Second,
		DialContext:  loopbackDial(map[string]string{"mta-sts." + testDomain + ":443": e.host.Addr()}),
		Now:          e.clock.Now,
		Log:          log,
	}
	return e
}

func (e *env) manager(store Store) *Manager {
	o := e.opts
	o.Store = store
	m, err := New(context.Background(), o)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(m.Close)
	return m
}

func mustGet(t *testing.T, m *Manager, d string) Result {
	t.Helper()
	res, err := m.Get(context.Background(), d)
	if err != nil {
		t.Fatalf("Get(%s): %v", d, err)
	}
	return res
}

func TestGetFetchThenMemory(t *testing.T) {
	e := newEnv(t, goodPolicy)
	m := e.manager(nil)
	res := mustGet(t, m, "EXAMPLE.test.")
	if res.Mode != ModeEnforce || res.Source != SourceFetch || res.ID != "id1" || !res.Matches("a.mx.example.test") || res.Matches("evil.test") {
		t.Fatalf("first Get = %+v", res)
	}
	if want := e.clock.Now().Add(86400 * time.Second); !res.Expires.Equal(want) {
		t.Fatalf("expires %v want %v", res.Expires, want)
	}
	q := e.dns.queries.Load()
	res = mustGet(t, m, testDomain)
	if res.Source != SourceCache || e.host.hits.Load() != 1 || e.dns.queries.Load() != q {
		t.Fatalf("second Get went to the network: %+v hits %d", res, e.host.hits.Load())
	}
	want := []string{
		"Debug: DNS query: Q(_mta-sts.example.test, 'TXT')",
		"Info: Successfully fetched MTA-STS TXT record for domain(example.test)",
		"Debug: Fetch MTA-STS policy for the domain(example.test)",
		"Debug: Valid cache entry found for the domain (example.test).",
	}
	if got := e.lines.Lines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("log:\n%s", strings.Join(got, "\n"))
	}
}

func TestCacheSurvivesRestart(t *testing.T) {
	e := newEnv(t, goodPolicy)
	dir := t.TempDir()
	s1, err := OpenBoltStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	m1 := e.manager(s1)
	mustGet(t, m1, testDomain)
	m1.Close()
	s1.Close()

	// The policy host now fails: only the store can answer.
	e.host.Set(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", 500) })
	e.clock.Advance(time.Hour)
	s2, err := OpenBoltStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	m2 := e.manager(s2)
	if l := m2.List(); len(l) != 1 || l[0].Domain != testDomain || l[0].Raw != goodPolicy {
		t.Fatalf("List after restart = %+v", l)
	}
	res := mustGet(t, m2, testDomain)
	if res.Mode != ModeEnforce || res.Source != SourceCache || e.host.hits.Load() != 1 {
		t.Fatalf("after restart Get = %+v (hits %d)", res, e.host.hits.Load())
	}
}

func TestExpiredEntriesDroppedOnLoad(t *testing.T) {
	e := newEnv(t, goodPolicy)
	s := NewMemStore()
	mustGet(t, e.manager(s), testDomain)
	e.clock.Advance(86401 * time.Second)
	m := e.manager(s)
	if l := m.List(); len(l) != 0 {
		t.Fatalf("expired entry loaded: %+v", l)
	}
	if l, _ := s.List(context.Background()); len(l) != 0 {
		t.Fatalf("expired entry kept in store")
	}
}

func TestIDChangeRefetches(t *testing.T) {
	e := newEnv(t, goodPolicy)
	m := e.manager(nil)
	mustGet(t, m, testDomain)
	e.dns.SetTXT("_mta-sts."+testDomain, "v=STSv1; id=id2;")
	e.host.Set(serveText(strings.Replace(goodPolicy, "enforce", "testing", 1)))
	// Inside the TXT check interval the memory answers.
	if res := mustGet(t, m, testDomain); res.Mode != ModeEnforce || res.ID != "id1" {
		t.Fatalf("inside interval: %+v", res)
	}
	e.clock.Advance(2 * time.Minute)
	res := mustGet(t, m, testDomain)
	if res.Mode != ModeTesting || res.ID != "id2" || res.Source != SourceFetch || e.host.hits.Load() != 2 {
		t.Fatalf("after id change: %+v hits %d", res, e.host.hits.Load())
	}
	// Unchanged id after the interval: TXT checked, no fetch.
	e.clock.Advance(2 * time.Minute)
	if res := mustGet(t, m, testDomain); res.Source != SourceCache || e.host.hits.Load() != 2 {
		t.Fatalf("unchanged id refetched: %+v", res)
	}
}

func TestFetchFailureKeepsCachedPolicy(t *testing.T) {
	e := newEnv(t, goodPolicy)
	m := e.manager(nil)
	mustGet(t, m, testDomain)
	e.dns.SetTXT("_mta-sts."+testDomain, "v=STSv1; id=id2;")
	e.host.Set(http.NotFound)
	e.clock.Advance(2 * time.Minute)
	res := mustGet(t, m, testDomain)
	var fe *FetchError
	if res.Mode != ModeEnforce || res.ID != "id1" || res.Source != SourceCache || !errors.As(res.Err, &fe) || fe.Kind != FetchHTTPStatus {
		t.Fatalf("Get = %+v", res)
	}
	// RFC 8461 §3.3: no new attempt for the same id within five minutes.
	hits := e.host.hits.Load()
	e.clock.Advance(2 * time.Minute)
	mustGet(t, m, testDomain)
	if e.host.hits.Load() != hits {
		t.Fatal("failed fetch retried within the retry interval")
	}
	e.clock.Advance(4 * time.Minute)
	mustGet(t, m, testDomain)
	if e.host.hits.Load() != hits+1 {
		t.Fatal("failed fetch not retried after the retry interval")
	}
}

func TestTXTFailures(t *testing.T) {
	t.Run("SERVFAIL without cache is temporary", func(t *testing.T) {
		e := newEnv(t, goodPolicy)
		e.dns.SetRcode("_mta-sts."+testDomain, dns.RcodeServerFailure)
		m := e.manager(nil)
		res, err := m.Get(context.Background(), testDomain)
		if !errors.Is(err, ErrTemporary) || res.Mode != NoPolicy {
			t.Fatalf("Get = %+v, %v; want ErrTemporary", res, err)
		}
		if e.host.hits.Load() != 0 {
			t.Fatal("fetched without a TXT record")
		}
	})
	t.Run("SERVFAIL with cache uses the cache", func(t *testing.T) {
		e := newEnv(t, goodPolicy)
		m := e.manager(nil)
		mustGet(t, m, testDomain)
		e.dns.SetRcode("_mta-sts."+testDomain, dns.RcodeServerFailure)
		e.clock.Advance(2 * time.Minute)
		res := mustGet(t, m, testDomain)
		if res.Mode != ModeEnforce || res.Source != SourceCache || res.Err == nil {
			t.Fatalf("Get = %+v", res)
		}
	})
	t.Run("NXDOMAIN without cache is no policy", func(t *testing.T) {
		e := newEnv(t, goodPolicy)
		m := e.manager(nil)
		res := mustGet(t, m, "nothing.test")
		if res.Mode != NoPolicy || !errors.Is(res.Err, ErrNotFound) {
			t.Fatalf("Get = %+v", res)
		}
	})
	t.Run("NODATA is no policy", func(t *testing.T) {
		e := newEnv(t, goodPolicy)
		e.dns.SetTXT("_mta-sts.nodata.test")
		m := e.manager(nil)
		if res := mustGet(t, m, "nodata.test"); res.Mode != NoPolicy || !errors.Is(res.Err, ErrNotFound) {
			t.Fatalf("Get = %+v", res)
		}
	})
	t.Run("two STS records is no policy", func(t *testing.T) {
		e := newEnv(t, goodPolicy)
		e.dns.SetTXT("_mta-sts."+testDomain, "v=STSv1; id=a;", "v=STSv1; id=b;")
		m := e.manager(nil)
		if res := mustGet(t, m, testDomain); res.Mode != NoPolicy || !errors.Is(res.Err, ErrMultipleSTSRecords) {
			t.Fatalf("Get = %+v", res)
		}
	})
	t.Run("record removed: cached unexpired policy still applies (§3.3)", func(t *testing.T) {
		e := newEnv(t, goodPolicy)
		m := e.manager(nil)
		mustGet(t, m, testDomain)
		e.dns.SetTXT("_mta-sts."+testDomain, "v=spf1 -all")
		e.clock.Advance(2 * time.Minute)
		if res := mustGet(t, m, testDomain); res.Mode != ModeEnforce || res.Source != SourceCache {
			t.Fatalf("Get = %+v", res)
		}
		// After expiry the absence wins.
		e.clock.Advance(86400 * time.Second)
		if res := mustGet(t, m, testDomain); res.Mode != NoPolicy {
			t.Fatalf("after expiry Get = %+v", res)
		}
	})
	t.Run("long TXT record split in character-strings", func(t *testing.T) {
		e := newEnv(t, goodPolicy)
		e.dns.SetTXT("_mta-sts."+testDomain, "v=STSv1; pad="+strings.Repeat("p", 300)+"; id=long1;")
		m := e.manager(nil)
		if res := mustGet(t, m, testDomain); res.ID != "long1" {
			t.Fatalf("Get = %+v", res)
		}
	})
}

func TestConcurrentGetsShareOneFetch(t *testing.T) {
	e := newEnv(t, goodPolicy)
	release := make(chan struct{})
	e.host.Set(func(w http.ResponseWriter, r *http.Request) {
		<-release
		serveText(goodPolicy)(w, r)
	})
	m := e.manager(nil)
	var wg sync.WaitGroup
	results := make([]Result, 20)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = mustGet(t, m, testDomain)
		}()
	}
	time.Sleep(100 * time.Millisecond)
	close(release)
	wg.Wait()
	for _, r := range results {
		if r.Mode != ModeEnforce {
			t.Fatalf("result %+v", r)
		}
	}
	if h := e.host.hits.Load(); h != 1 {
		t.Fatalf("%d fetches, want 1", h)
	}
}

func TestGetCancelledCallerDoesNotFailOthers(t *testing.T) {
	e := newEnv(t, goodPolicy)
	release := make(chan struct{})
	e.host.Set(func(w http.ResponseWriter, r *http.Request) {
		<-release
		serveText(goodPolicy)(w, r)
	})
	m := e.manager(nil)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := m.Get(ctx, testDomain); errc <- err }()
	resc := make(chan Result, 1)
	go func() { resc <- mustGet(t, m, testDomain) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := <-errc; !errors.Is(err, ErrTemporary) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller got %v", err)
	}
	close(release)
	if res := <-resc; res.Mode != ModeEnforce {
		t.Fatalf("other caller got %+v", res)
	}
}

func TestRecheck(t *testing.T) {
	e := newEnv(t, goodPolicy)
	m := e.manager(nil)
	mustGet(t, m, testDomain)
	// The domain moved its MX without changing the id.
	e.host.Set(serveText(strings.Replace(goodPolicy, "mx1.example.test", "mx9.example.test", 1)))
	if res := mustGet(t, m, testDomain); res.Matches("mx9.example.test") {
		t.Fatal("cache changed by itself")
	}
	res, err := m.Recheck(context.Background(), testDomain)
	if err != nil || !res.Matches("mx9.example.test") || res.Source != SourceFetch {
		t.Fatalf("Recheck = %+v, %v", res, err)
	}
	// Once per retry interval.
	hits := e.host.hits.Load()
	if _, err := m.Recheck(context.Background(), testDomain); err != nil || e.host.hits.Load() != hits {
		t.Fatalf("second Recheck went to the network (%v)", err)
	}
	e.clock.Advance(6 * time.Minute)
	if _, err := m.Recheck(context.Background(), testDomain); err != nil || e.host.hits.Load() != hits+1 {
		t.Fatalf("Recheck after the interval did not refetch (%v)", err)
	}
}

func TestRunRefreshesRecentDomains(t *testing.T) {
	e := newEnv(t, goodPolicy)
	e.opts.RefreshScanInterval = 5 * time.Millisecond
	m := e.manager(nil)
	mustGet(t, m, testDomain)
	e.dns.SetTXT("_mta-sts.idle.test", "v=STSv1; id=i1;")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()

	// Not yet due: nothing happens.
	time.Sleep(30 * time.Millisecond)
	if e.host.hits.Load() != 1 {
		t.Fatal("refreshed before due")
	}
	// Due (at most 3/4 of max_age, at most a day): refreshed, the expiry moves on.
	e.clock.Advance(65000 * time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for e.host.hits.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if e.host.hits.Load() < 2 {
		t.Fatal("not refreshed")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop on cancel")
	}
	ent, err := m.Show(testDomain)
	if err != nil || !ent.FetchedAt.Equal(e.clock.Now()) {
		t.Fatalf("Show = %+v, %v", ent, err)
	}
}

func TestRunSkipsIdleDomains(t *testing.T) {
	e := newEnv(t, goodPolicy)
	e.opts.RefreshScanInterval = 5 * time.Millisecond
	e.opts.RefreshWindow = time.Hour
	m := e.manager(nil)
	mustGet(t, m, testDomain)
	e.clock.Advance(65000 * time.Second) // last mail long before the window
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	<-done
	if e.host.hits.Load() != 1 {
		t.Fatal("idle domain refreshed")
	}
}

func TestAdmin(t *testing.T) {
	e := newEnv(t, goodPolicy)
	s := NewMemStore()
	m := e.manager(s)
	if _, err := m.Show(testDomain); !errors.Is(err, ErrNoEntry) {
		t.Fatalf("Show before fetch: %v", err)
	}
	res, err := m.Refresh(context.Background(), testDomain)
	if err != nil || res.Source != SourceFetch {
		t.Fatalf("Refresh = %+v, %v", res, err)
	}
	if ent, err := m.Show(testDomain); err != nil || ent.ID != "id1" || ent.Policy.Mode != ModeEnforce {
		t.Fatalf("Show = %+v, %v", ent, err)
	}
	if err := m.Flush(context.Background(), testDomain); err != nil {
		t.Fatal(err)
	}
	if len(m.List()) != 0 {
		t.Fatal("List after Flush not empty")
	}
	if _, err := s.Get(context.Background(), testDomain); !errors.Is(err, ErrNoEntry) {
		t.Fatalf("store after Flush: %v", err)
	}
	// The next Get fetches afresh.
	if res := mustGet(t, m, testDomain); res.Source != SourceFetch {
		t.Fatalf("Get after flush = %+v", res)
	}
}

func TestModeNoneAndInvalidDomain(t *testing.T) {
	e := newEnv(t, "version: STSv1\nmode: none\nmax_age: 600\n")
	m := e.manager(nil)
	if res := mustGet(t, m, testDomain); res.Mode != ModeNone || res.Policy == nil {
		t.Fatalf("Get = %+v", res)
	}
	if res := mustGet(t, m, "[192.0.2.1]"); res.Mode != NoPolicy || res.Err == nil {
		t.Fatalf("Get(ip literal) = %+v", res)
	}
}

// TestApplyLogLines pins the delivery-side lines written through the typed
// methods in internal/maillog/mtasts.go.
func TestApplyLogLines(t *testing.T) {
	log, lines := newLog()
	log.MTASTSApplying("domain.com")
	log.MTASTSSuccess("domain.com")
	log.MTASTSFailed("domain.com", "MX not in policy")
	log.MTASTSFetchViaProxy()
	want := []string{
		"Info: Applying MTA-STS policy for the domain (domain.com)",
		"Info: MTA-STS policy for the domain (domain.com) Successful.",
		"Info: MTA-STS policy for the domain (domain.com) Failed: MX not in policy",
		"Debug: Requesting MTA-STS policy fetch via proxy",
	}
	if got := lines.Lines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("log:\n%s", strings.Join(got, "\n"))
	}
}
