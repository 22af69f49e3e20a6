package webui

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"outpost/internal/config"
	"outpost/internal/configstore"
	"outpost/internal/mtasts"
	"outpost/internal/qmgr"
)

// fakeBackend is a real configuration store with a recording apply and a
// fixed queue.
type fakeBackend struct {
	*configstore.Store
	mu      sync.Mutex
	applied []*config.Config
	deleted []uint64
	logDir  string
}

func (f *fakeBackend) apply(c *config.Config) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = append(f.applied, c)
	return nil
}

func (f *fakeBackend) Commit(comment, user string) (*configstore.Commit, error) {
	return f.Store.Commit(comment, user, f.apply)
}

func (f *fakeBackend) Rollback(id int, user string) (*configstore.Commit, error) {
	return f.Store.Rollback(id, user, f.apply)
}

func (f *fakeBackend) List() []qmgr.Info {
	return []qmgr.Info{{MID: 7, From: "a@sender.test", Arrived: time.Now().Add(-time.Minute), Recipients: []qmgr.RcptInfo{
		{Addr: "u@partner.test", State: "deferred", LastReply: "451 4.7.5 verify error"},
		{Addr: "v@other.test", State: "active"},
		{Addr: "w@done.test", State: "delivered"},
	}}}
}

func (f *fakeBackend) Destinations() []qmgr.DestInfo {
	return []qmgr.DestInfo{{Domain: "partner.test", Active: 0, LastErr: "451 4.7.5 verify error"}}
}
func (f *fakeBackend) Flush() int { return 1 }
func (f *fakeBackend) Delete(mid uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if mid != 7 {
		return errors.New("not queued")
	}
	f.deleted = append(f.deleted, mid)
	return nil
}
func (f *fakeBackend) BounceNow(ctx context.Context, mid uint64) error { return nil }
func (f *fakeBackend) CheckMTASTS(ctx context.Context, domain string) *mtasts.Report {
	return &mtasts.Report{Domain: domain, Findings: []mtasts.Finding{{Check: "txt", Verdict: mtasts.Fail, Message: "no _mta-sts." + domain + " TXT record", Fix: "publish one"}}}
}
func (f *fakeBackend) TLSReport() []TLSStat {
	return []TLSStat{{Domain: "partner.test", Failed: 2, MTASTSMode: "none (no policy)", LastError: "mx.partner.test: 451 4.7.5 verify error"}}
}
func (f *fakeBackend) MailLogDir() string { return f.logDir }

type rig struct {
	t     *testing.T
	srv   *httptest.Server
	c     *http.Client
	b     *fakeBackend
	s     *Server
	now   time.Time
	nowMu sync.Mutex
}

func newRig(t *testing.T) *rig {
	t.Helper()
	dir := t.TempDir()
	live := filepath.Join(dir, "outpost.yaml")
	if err := os.WriteFile(live, []byte("data_dir: "+dir+"\ndns:\n  resolvers: [127.0.0.1:53]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := configstore.Open(live, dir)
	if err != nil {
		t.Fatal(err)
	}
	logDir := filepath.Join(dir, "logs")
	os.MkdirAll(logDir, 0o700)
	r := &rig{t: t, b: &fakeBackend{Store: st, logDir: logDir}, now: time.Now()}
	r.s, err = New(Options{Config: &config.WebUI{IdleTimeout: config.Duration(30 * time.Minute)}, DataDir: dir, Hostname: "outpost.test",
		Backend: r.b, Now: r.clock})
	if err != nil {
		t.Fatal(err)
	}
	r.s.users.cost = bcrypt.MinCost // the race detector makes bcrypt slow
	if _, err := r.s.users.Add("admin", "correct horse"); err != nil {
		t.Fatal(err)
	}
	r.srv = httptest.NewTLSServer(r.s.Handler())
	t.Cleanup(r.srv.Close)
	r.c = r.client()
	return r
}

func (r *rig) clock() time.Time {
	r.nowMu.Lock()
	defer r.nowMu.Unlock()
	return r.now
}

func (r *rig) advance(d time.Duration) {
	r.nowMu.Lock()
	r.now = r.now.Add(d)
	r.nowMu.Unlock()
}

func (r *rig) client() *http.Client {
	jar, _ := cookiejar.New(nil)
	c := r.srv.Client()
	return &http.Client{Transport: c.Transport, Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func (r *rig) do(c *http.Client, method, path string, form url.Values) (int, string, http.Header) {
	r.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, r.srv.URL+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (r *rig) csrf(page string) string {
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		r.t.Fatalf("no CSRF field in page:\n%s", page)
	}
	return m[1]
}

// login logs c in and returns the session's CSRF token.
func (r *rig) login(c *http.Client, user, pw string) (int, string) {
	r.t.Helper()
	_, page, _ := r.do(c, "GET", "/login", nil)
	code, body, _ := r.do(c, "POST", "/login", url.Values{"csrf": {r.csrf(page)}, "user": {user}, "password": {pw}})
	return code, body
}

func (r *rig) session(c *http.Client) string {
	r.t.Helper()
	if code, body := r.login(c, "admin", "correct horse"); code != http.StatusSeeOther {
		r.t.Fatalf("login: %d\n%s", code, body)
	}
	_, page, _ := r.do(c, "GET", "/destinations", nil)
	return r.csrf(page)
}

func TestEveryPageNeedsASession(t *testing.T) {
	r := newRig(t)
	for _, p := range []string{"/", "/destinations", "/destinations/edit?name=default", "/commit", "/routes", "/bounce-profiles",
		"/mta-sts/check?domain=x.test", "/monitor", "/logs?q=1", "/no-such-page"} {
		code, _, h := r.do(r.c, "GET", p, nil)
		if code != http.StatusSeeOther || h.Get("Location") != "/login" {
			t.Errorf("GET %s without a session: %d → %q, want 303 → /login", p, code, h.Get("Location"))
		}
	}
	for _, p := range []string{"/destinations/save", "/commit", "/commit/rollback", "/monitor/flush", "/logout"} {
		code, _, h := r.do(r.c, "POST", p, url.Values{"csrf": {"x"}})
		if code != http.StatusSeeOther || h.Get("Location") != "/login" {
			t.Errorf("POST %s without a session: %d → %q", p, code, h.Get("Location"))
		}
	}
	if code, _, _ := r.do(r.c, "GET", "/static/style.css", nil); code != 200 {
		t.Errorf("stylesheet: %d", code)
	}
}

func TestLoginCookieAndCSRF(t *testing.T) {
	r := newRig(t)
	// The login form itself needs its token.
	if code, _, _ := r.do(r.c, "POST", "/login", url.Values{"user": {"admin"}, "password": {"correct horse"}}); code != http.StatusForbidden {
		t.Fatalf("login without the form token: %d, want 403", code)
	}
	_, page, _ := r.do(r.c, "GET", "/login", nil)
	req, _ := http.NewRequest("POST", r.srv.URL+"/login", strings.NewReader(url.Values{"csrf": {r.csrf(page)}, "user": {"admin"}, "password": {"correct horse"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := r.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var sc *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == sessionCookie {
			sc = c
		}
	}
	if sc == nil || !sc.HttpOnly || !sc.Secure || sc.SameSite != http.SameSiteStrictMode || len(sc.Value) != 43 {
		t.Fatalf("session cookie %+v: want HttpOnly, Secure, SameSite=Strict, 32 random bytes", sc)
	}
	_, page, _ = r.do(r.c, "GET", "/destinations", nil)
	tok := r.csrf(page)
	form := url.Values{"orig": {""}, "name": {"partner.test"}, "mta_sts": {"yes"}}
	if code, body, _ := r.do(r.c, "POST", "/destinations/save", form); code != http.StatusForbidden || !strings.Contains(body, "CSRF") {
		t.Fatalf("POST without the CSRF token: %d %s, want 403", code, body)
	}
	form.Set("csrf", "wrong"+tok[5:])
	if code, _, _ := r.do(r.c, "POST", "/destinations/save", form); code != http.StatusForbidden {
		t.Fatalf("POST with a wrong CSRF token: %d, want 403", code)
	}
	if r.b.HasPending() {
		t.Fatal("a refused POST changed the configuration")
	}
	form.Set("csrf", tok)
	if code, body, h := r.do(r.c, "POST", "/destinations/save", form); code != http.StatusSeeOther || !strings.HasPrefix(h.Get("Location"), "/destinations") {
		t.Fatalf("POST with the token: %d %s", code, body)
	}
	if d, _ := r.b.Diff(); !strings.Contains(d, "partner.test") || !strings.Contains(d, "mta_sts: true") {
		t.Fatalf("pending diff:\n%s", d)
	}
	// Logout ends the session.
	r.do(r.c, "POST", "/logout", url.Values{"csrf": {tok}})
	if code, _, _ := r.do(r.c, "GET", "/destinations", nil); code != http.StatusSeeOther {
		t.Fatalf("after logout: %d", code)
	}
}

func TestIdleTimeout(t *testing.T) {
	r := newRig(t)
	r.session(r.c)
	r.advance(29 * time.Minute)
	if code, _, _ := r.do(r.c, "GET", "/monitor", nil); code != 200 {
		t.Fatalf("within the idle timeout: %d", code)
	}
	r.advance(31 * time.Minute)
	if code, _, h := r.do(r.c, "GET", "/monitor", nil); code != http.StatusSeeOther || h.Get("Location") != "/login" {
		t.Fatalf("after the idle timeout: %d %s", code, h.Get("Location"))
	}
}

func TestLoginRateLimit(t *testing.T) {
	r := newRig(t)
	for i := 0; i < 5; i++ {
		if code, _ := r.login(r.c, "admin", "wrong password"); code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d, want 401", i+1, code)
		}
	}
	code, body := r.login(r.c, "admin", "correct horse")
	if code != http.StatusTooManyRequests || !strings.Contains(body, "Too many failed login attempts") {
		t.Fatalf("sixth attempt: %d, want 429 with a message\n%s", code, body)
	}
	// Per user too: another client (same IP here) for another user is
	// limited by IP; after the window both work again.
	r.advance(61 * time.Second)
	if code, _ := r.login(r.c, "admin", "correct horse"); code != http.StatusSeeOther {
		t.Fatalf("after the window: %d", code)
	}
	// The per-user limit alone.
	l := newLimiter(5, time.Minute, time.Now)
	for i := 0; i < 5; i++ {
		l.fail("ip 10.0.0."+string(rune('1'+i)), "user bob")
	}
	if b, _ := l.blocked("ip 10.0.0.9", "user bob"); !b {
		t.Fatal("five failures for bob from five addresses do not block bob")
	}
	if b, _ := l.blocked("ip 10.0.0.9", "user alice"); b {
		t.Fatal("alice blocked")
	}
}

func TestDestinationErrorsBesideFieldsNothingSaved(t *testing.T) {
	r := newRig(t)
	tok := r.session(r.c)
	code, body, _ := r.do(r.c, "POST", "/destinations/save", url.Values{"csrf": {tok}, "orig": {""}, "name": {"partner.test"},
		"max_concurrency": {"5000"}, "max_messages_per_connection": {"ten"}, "tls": {"required-verify"}, "mta_sts": {"yes"}})
	if code != http.StatusUnprocessableEntity {
		t.Fatalf("bad form: %d", code)
	}
	// "ten" is refused before validation; fix it and the range error of
	// max_concurrency comes from the configuration's own validation.
	if !strings.Contains(body, `id="err-max_messages_per_connection">&#34;ten&#34; is not a whole number`) {
		t.Fatalf("no error beside max_messages_per_connection:\n%s", body)
	}
	code, body, _ = r.do(r.c, "POST", "/destinations/save", url.Values{"csrf": {tok}, "orig": {""}, "name": {"partner.test"},
		"max_concurrency": {"5000"}, "tls": {"required-verify"}, "mta_sts": {"yes"}})
	if code != http.StatusUnprocessableEntity || !regexp.MustCompile(`id="err-max_concurrency">5000: want 1-1000`).MatchString(body) {
		t.Fatalf("range error not beside the field: %d\n%s", code, body)
	}
	// The posted values are kept in the form.
	if !strings.Contains(body, `value="5000"`) || !regexp.MustCompile(`value="yes" checked`).MatchString(body) {
		t.Fatal("posted values lost")
	}
	if r.b.HasPending() {
		t.Fatal("a refused change was saved")
	}
	// Cross-field rule: mta_sts needs TLS.
	_, body, _ = r.do(r.c, "POST", "/destinations/save", url.Values{"csrf": {tok}, "orig": {""}, "name": {"plain.test"}, "tls": {"none"}, "mta_sts": {"yes"}})
	if !strings.Contains(body, `id="err-mta_sts">mta_sts: true needs TLS, but tls is none`) {
		t.Fatalf("cross-field error not beside mta_sts:\n%s", body)
	}
	// Unknown bounce profile.
	_, body, _ = r.do(r.c, "POST", "/destinations/save", url.Values{"csrf": {tok}, "orig": {""}, "name": {"bp.test"}, "bounce_profile": {"nope"}})
	if !strings.Contains(body, `id="err-bounce_profile">&#34;nope&#34;: no such bounce profile`) {
		t.Fatalf("bounce profile error:\n%s", body)
	}
}

func TestCommitRecordsUserAndRollback(t *testing.T) {
	r := newRig(t)
	tok := r.session(r.c)
	r.do(r.c, "POST", "/destinations/save", url.Values{"csrf": {tok}, "orig": {""}, "name": {"partner.test"}, "tls": {"required-verify"}})
	_, page, _ := r.do(r.c, "GET", "/commit", nil)
	if !strings.Contains(page, "&#43;   partner.test:") {
		t.Fatalf("commit page lacks the diff:\n%s", page)
	}
	if code, _, h := r.do(r.c, "POST", "/commit", url.Values{"csrf": {tok}, "comment": {"verify partner"}}); code != http.StatusSeeOther || h.Get("Location") != "/commit?done=committed" {
		t.Fatalf("commit: %d %s", code, h.Get("Location"))
	}
	hist, _ := r.b.History()
	last := hist[len(hist)-1]
	if last.User != "admin" || last.Comment != "verify partner" {
		t.Fatalf("commit recorded %+v", last)
	}
	if len(r.b.applied) != 1 || r.b.applied[0].Profile("partner.test").TLS.String() != "required-verify" {
		t.Fatal("the commit was not applied")
	}
	// Nothing pending: a second commit says so.
	if code, body, _ := r.do(r.c, "POST", "/commit", url.Values{"csrf": {tok}}); code != http.StatusConflict || !strings.Contains(body, "no pending changes") {
		t.Fatalf("empty commit: %d", code)
	}
	// Roll back to the configuration before the first commit.
	_, page, _ = r.do(r.c, "GET", "/commit", nil)
	if !strings.Contains(page, `id="rollback-1"`) {
		t.Fatalf("no rollback button:\n%s", page)
	}
	if code, _, _ := r.do(r.c, "POST", "/commit/rollback", url.Values{"csrf": {tok}, "id": {"1"}}); code != http.StatusSeeOther {
		t.Fatalf("rollback: %d", code)
	}
	if len(r.b.applied) != 2 || r.b.applied[1].Profile("partner.test").Name != "default" {
		t.Fatal("rollback not applied")
	}
	// Abandon.
	r.do(r.c, "POST", "/destinations/save", url.Values{"csrf": {tok}, "orig": {""}, "name": {"x.test"}})
	r.do(r.c, "POST", "/commit/abandon", url.Values{"csrf": {tok}})
	if r.b.HasPending() {
		t.Fatal("abandon kept the pending change")
	}
}

func TestDefaultEntryMTASTSWarning(t *testing.T) {
	r := newRig(t)
	tok := r.session(r.c)
	_, form, _ := r.do(r.c, "GET", "/destinations/edit?name=default", nil)
	for _, want := range []string{"Default (No)", "DANE and MTA STS will not be enforced for domains that have SMTP Routes configured",
		"Switching MTA-STS on here applies it to every destination"} {
		if !strings.Contains(form, want) {
			t.Errorf("default form lacks %q", want)
		}
	}
	_, _, h := r.do(r.c, "POST", "/destinations/save", url.Values{"csrf": {tok}, "orig": {"default"}, "mta_sts": {"yes"}})
	_, page, _ := r.do(r.c, "GET", h.Get("Location"), nil)
	if !strings.Contains(page, "MTA-STS is switched on for the default entry") {
		t.Fatalf("no warning after switching MTA-STS on for default:\n%s", page)
	}
	// A domain entry links to the checker.
	r.do(r.c, "POST", "/destinations/save", url.Values{"csrf": {tok}, "orig": {""}, "name": {".partner.test"}})
	_, form, _ = r.do(r.c, "GET", "/destinations/edit?name=.partner.test", nil)
	if !strings.Contains(form, `href="/mta-sts/check?domain=partner.test" id="check-domain">Check this domain`) {
		t.Fatal("no Check this domain link")
	}
}

func TestRoutesAndBounceProfiles(t *testing.T) {
	r := newRig(t)
	tok := r.session(r.c)
	code, body, _ := r.do(r.c, "POST", "/routes/save", url.Values{"csrf": {tok}, "orig": {""}, "name": {"partner.test"}, "kind": {"hosts"},
		"hosts[0].host": {"relay.partner.test"}, "hosts[0].port": {"70000"}, "hosts[0].priority": {"0"}, "hosts[1].host": {""}})
	if code != http.StatusUnprocessableEntity || !strings.Contains(body, "70000: want 1-65535") {
		t.Fatalf("route port error: %d\n%s", code, body)
	}
	code, _, _ = r.do(r.c, "POST", "/routes/save", url.Values{"csrf": {tok}, "orig": {""}, "name": {"partner.test"}, "kind": {"hosts"},
		"hosts[0].host": {"relay.partner.test"}, "hosts[0].port": {"2525"}, "hosts[0].priority": {"0"}, "hosts[1].host": {""}, "mta_sts": {"no"}})
	if code != http.StatusSeeOther {
		t.Fatalf("route save: %d", code)
	}
	_, page, _ := r.do(r.c, "GET", "/routes", nil)
	if !strings.Contains(page, "relay.partner.test:2525 (priority 0)") {
		t.Fatalf("routes list:\n%s", page)
	}
	// The destination table marks the routed domain.
	r.do(r.c, "POST", "/destinations/save", url.Values{"csrf": {tok}, "orig": {""}, "name": {"partner.test"}})
	_, page, _ = r.do(r.c, "GET", "/destinations", nil)
	if !strings.Contains(page, "SMTP route</span>") {
		t.Fatal("routed destination not marked")
	}
	if code, _, _ := r.do(r.c, "POST", "/routes/delete", url.Values{"csrf": {tok}, "name": {"partner.test"}}); code != http.StatusSeeOther {
		t.Fatalf("route delete: %d", code)
	}
	// Bounce profiles: a bad duration beside its field, then a good one.
	code, body, _ = r.do(r.c, "POST", "/bounce-profiles/save", url.Values{"csrf": {tok}, "orig": {""}, "name": {"slow"}, "initial_retry": {"soon"}})
	if code != http.StatusUnprocessableEntity || !strings.Contains(body, `id="err-initial_retry">&#34;soon&#34; is not a duration`) {
		t.Fatalf("duration error: %d\n%s", code, body)
	}
	code, body, _ = r.do(r.c, "POST", "/bounce-profiles/save", url.Values{"csrf": {tok}, "orig": {""}, "name": {"slow"}, "max_retries": {"20000"}})
	if code != http.StatusUnprocessableEntity || !strings.Contains(body, `id="err-max_retries">20000: want 1-10000`) {
		t.Fatalf("range error: %d\n%s", code, body)
	}
	if code, _, _ := r.do(r.c, "POST", "/bounce-profiles/save", url.Values{"csrf": {tok}, "orig": {""}, "name": {"slow"}, "initial_retry": {"5m"}, "send_bounces": {"no"}}); code != http.StatusSeeOther {
		t.Fatalf("bounce save: %d", code)
	}
	r.do(r.c, "POST", "/destinations/save", url.Values{"csrf": {tok}, "orig": {"partner.test"}, "bounce_profile": {"slow"}})
	// A profile in use cannot be deleted: the validation says why.
	code, body, _ = r.do(r.c, "POST", "/bounce-profiles/delete", url.Values{"csrf": {tok}, "name": {"slow"}})
	if code != http.StatusConflict || !strings.Contains(body, "no such bounce profile") {
		t.Fatalf("delete of a used profile: %d\n%s", code, body)
	}
	_, page, _ = r.do(r.c, "GET", "/bounce-profiles", nil)
	if !strings.Contains(page, "5m0s to 1h0m0s") || !strings.Contains(page, "partner.test") {
		t.Fatalf("bounce list:\n%s", page)
	}
}

func TestMonitorCheckAndLogSearch(t *testing.T) {
	r := newRig(t)
	tok := r.session(r.c)
	_, page, _ := r.do(r.c, "GET", "/monitor", nil)
	for _, want := range []string{`id="q-partner.test"`, "451 4.7.5 verify error", `id="tls-partner.test"`, "none (no policy)", `id="q-other.test"`} {
		if !strings.Contains(page, want) {
			t.Errorf("monitor lacks %q", want)
		}
	}
	if strings.Contains(page, "done.test") {
		t.Error("a delivered recipient is shown as queued")
	}
	if code, _, h := r.do(r.c, "POST", "/monitor/message", url.Values{"csrf": {tok}, "mid": {"7"}, "action": {"delete"}}); code != http.StatusSeeOther || h.Get("Location") != "/monitor?done=removed" {
		t.Fatalf("delete: %d", code)
	}
	if code, body, _ := r.do(r.c, "POST", "/monitor/message", url.Values{"csrf": {tok}, "mid": {"8"}, "action": {"delete"}}); code != http.StatusConflict || !strings.Contains(body, "MID 8: not queued") {
		t.Fatalf("delete of an unknown MID: %d", code)
	}
	_, page, _ = r.do(r.c, "GET", "/mta-sts/check?domain=partner.test", nil)
	if !strings.Contains(page, `<span class="v v-fail">fail</span>`) || !strings.Contains(page, "Fix: publish one") {
		t.Fatalf("check page:\n%s", page)
	}
	// Mail-log search over rolled and current files: the lines of the
	// messages and of their connections.
	os.WriteFile(filepath.Join(r.b.logDir, "mail.@20260101T000000.000000.s"), []byte(
		"Thu Jan  1 00:00:00 2026 Info: New SMTP ICID 1 interface Main (127.0.0.1) address 127.0.0.1 reverse dns host localhost verified yes\n"+
			"Thu Jan  1 00:00:00 2026 Info: MID 5 ICID 1 From: <a@sender.test>\n"+
			"Thu Jan  1 00:00:00 2026 Info: MID 5 ICID 1 RID 0 To: <u@partner.test>\n"+
			"Thu Jan  1 00:00:00 2026 Info: MID 6 ICID 2 RID 0 To: <z@else.test>\n"), 0o600)
	os.WriteFile(filepath.Join(r.b.logDir, "mail.current"), []byte(
		"Thu Jan  1 00:00:01 2026 Info: New SMTP DCID 3 interface 127.0.0.1 address 127.0.0.2 port 25\n"+
			"Thu Jan  1 00:00:01 2026 Info: DCID 3 TLS success protocol TLSv1.3 cipher TLS_AES_128_GCM_SHA256\n"+
			"Thu Jan  1 00:00:01 2026 Info: Delivery start DCID 3 MID 5 to RID [0]\n"+
			"Thu Jan  1 00:00:01 2026 Info: Message finished MID 5 done\n"+
			"Thu Jan  1 00:00:02 2026 Info: New SMTP DCID 9 to mx.partner.test [127.0.0.2]:25\n"+
			"Thu Jan  1 00:00:02 2026 Info: DCID 9 TLS deferring: verify error: peer cert does not match domain\n"+
			"Thu Jan  1 00:00:02 2026 Info: Message finished MID 6 done\n"), 0o600)
	for q, want := range map[string]int{"partner.test": 9, "u@partner.test": 7, "MID 6": 2, "6": 2, "MID 5": 7, "nothing.test": 0} {
		lines, _, err := searchLogs(r.b.logDir, q)
		if err != nil || len(lines) != want {
			t.Errorf("search %q: %d lines %v, want %d:\n%s", q, len(lines), err, want, strings.Join(lines, "\n"))
		}
	}
	_, page, _ = r.do(r.c, "GET", "/logs?q=partner.test", nil)
	if !strings.Contains(page, "Message finished MID 5 done") || strings.Contains(page, "MID 6") {
		t.Fatalf("log search page:\n%s", page)
	}
}

func TestUsersFile(t *testing.T) {
	dir := t.TempDir()
	u := OpenUsers(dir)
	u.cost = bcrypt.MinCost
	if _, err := u.Add("bad name", "long enough"); err == nil {
		t.Error("bad name accepted")
	}
	if _, err := u.Add("ops", "short"); err == nil {
		t.Error("short password accepted")
	}
	if _, err := u.Add("ops", "long enough"); err != nil {
		t.Fatal(err)
	}
	if replaced, _ := u.Add("ops", "another one"); !replaced {
		t.Error("second add did not replace")
	}
	fi, err := os.Stat(filepath.Join(dir, "users.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("users.json mode %v %v", fi.Mode(), err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "users.json"))
	if strings.Contains(string(b), "another one") || !strings.Contains(string(b), "$2a$04$") {
		t.Fatalf("users.json does not hold a bcrypt hash:\n%s", b)
	}
	if !u.Verify("ops", "another one") || u.Verify("ops", "long enough") || u.Verify("nobody", "another one") {
		t.Error("Verify")
	}
	if err := u.Delete("ops"); err != nil {
		t.Fatal(err)
	}
	if err := u.Delete("ops"); !errors.Is(err, ErrNoUser) {
		t.Errorf("delete twice: %v", err)
	}
}

func TestSelfSignedCertificateKept(t *testing.T) {
	dir := t.TempDir()
	s, err := New(Options{Config: &config.WebUI{Address: "127.0.0.1:0"}, DataDir: dir, Hostname: "outpost.test", Backend: &fakeBackend{}})
	if err != nil {
		t.Fatal(err)
	}
	c1, err := s.certificate()
	if err != nil {
		t.Fatal(err)
	}
	c2, err := s.certificate()
	if err != nil {
		t.Fatal(err)
	}
	if string(c1.Certificate[0]) != string(c2.Certificate[0]) {
		t.Fatal("certificate regenerated at the second start")
	}
	if fi, err := os.Stat(filepath.Join(dir, "webui", "key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key.pem: %v %v", fi, err)
	}
	_ = tls.VersionTLS12
}

// A second load of the login page (another tab, a favicon request that was
// redirected) keeps the token of the form shown first.
func TestLoginTokenSurvivesReload(t *testing.T) {
	r := newRig(t)
	_, first, _ := r.do(r.c, "GET", "/login", nil)
	r.do(r.c, "GET", "/login", nil)
	if code, _, _ := r.do(r.c, "GET", "/favicon.ico", nil); code != http.StatusMovedPermanently {
		t.Errorf("favicon: %d", code)
	}
	code, _, _ := r.do(r.c, "POST", "/login", url.Values{"csrf": {r.csrf(first)}, "user": {"admin"}, "password": {"correct horse"}})
	if code != http.StatusSeeOther {
		t.Fatalf("login with the first form's token: %d", code)
	}
}
