package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// TestWebUIDestinationCommitRollbackInChromium drives the admin web UI of
// the running daemon with Debian's Chromium: log in, add a destination
// (TLS Required (Verify), MTA-STS Yes), Submit, Commit with a comment; the
// next delivery to that domain follows the new profile (deferred: the
// receiver's certificate names only its MX host); bad input shows its error
// beside the field; rollback brings the old profile back and the held
// message goes out. Without the CSRF token a POST is refused, and without a
// session every page redirects to the login. Screenshots of each page, at
// 1280 px and at phone width, are kept as artifacts.
func TestWebUIDestinationCommitRollbackInChromium(t *testing.T) {
	chrome := needTool(t, "chromium")
	w := newWorld(t, "127.0.0.11")
	rcv := w.addDomain(t, "partner.test", "mx.partner.test", "127.0.0.11", nil)
	dir := t.TempDir()
	uiAddr := fmt.Sprintf("127.0.0.1:%d", freePortOn(t, "127.0.0.1"))
	w.d = startOutpost(t, dir, baseConfig(w, "destinations:\n  default: {tls: preferred}\nwebui:\n  address: "+uiAddr+"\n"))
	base := "https://" + uiAddr

	// An administrator, added while the daemon runs (read at each login).
	add := exec.Command(binPath, "adminuser", "add", "admin", "--password-stdin", "--config", w.d.cfgPath)
	add.Stdin = strings.NewReader("s3cret-passphrase\n")
	if out, err := add.CombinedOutput(); err != nil || !strings.Contains(string(out), "Administrator admin added") {
		t.Fatalf("adminuser add: %v\n%s", err, out)
	}
	if fi, err := os.Stat(filepath.Join(dir, "data", "webui", "users.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("users.json: %v %v", fi, err)
	}

	// The generated certificate is kept in the data directory and is valid
	// for the loopback address: a Go client trusting it verifies the server.
	pem, err := os.ReadFile(filepath.Join(dir, "data", "webui", "cert.pem"))
	if err != nil {
		t.Fatalf("self-signed certificate: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 30 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := hc.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	post := func(path string, form url.Values) (*http.Response, string) {
		t.Helper()
		resp, err := hc.PostForm(base+path, form)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	// No session: every page redirects to the login page.
	for _, p := range []string{"/", "/destinations", "/commit", "/monitor", "/logs?q=partner.test", "/mta-sts/check?domain=partner.test"} {
		if resp, _ := get(p); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
			t.Errorf("GET %s without a session: %d %q, want 303 to /login", p, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	if resp, _ := post("/commit", url.Values{"comment": {"x"}}); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Errorf("POST /commit without a session: %d", resp.StatusCode)
	}

	// ---- the browser ----
	shots := artifactDir(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chrome), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		// The daemon's certificate is self-signed (loopback only).
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()
	if err := chromedp.Do(bctx); err != nil { // start the browser (no timeout on the first run)
		t.Fatalf("start chromium: %v", err)
	}
	// dump says where the browser is when a step fails.
	dump := func() string {
		ctx, cancel := context.WithTimeout(bctx, 10*time.Second)
		defer cancel()
		loc, _ := chromedp.Run(ctx, chromedp.Location())
		html, _ := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("body")))
		if buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
			os.WriteFile(filepath.Join(shots, "failure.png"), buf, 0o644)
		}
		return fmt.Sprintf("at %s:\n%s", loc, html)
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		ctx, cancel := context.WithTimeout(bctx, 60*time.Second)
		defer cancel()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v; %s", what, err, dump())
		}
	}
	// clickLoad clicks and waits for the page that follows.
	clickLoad := func(what string, sel chromedp.CSS) {
		t.Helper()
		ctx, cancel := context.WithTimeout(bctx, 60*time.Second)
		defer cancel()
		if _, err := chromedp.Run(ctx, chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.Click(sel))); err != nil {
			t.Fatalf("%s: click %s: %v; %s", what, sel, err, dump())
		}
	}
	text := func(sel chromedp.CSS) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(bctx, 30*time.Second)
		defer cancel()
		s, err := chromedp.Run(ctx, chromedp.Text(sel))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	location := func() string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Location())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	shot := func(name string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(bctx, 60*time.Second)
		defer cancel()
		buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name+".png"), buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	phone := func(name string) {
		t.Helper()
		do("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
		shot(name + "-phone")
		do("desktop viewport", chromedp.EmulateViewport(1280, 900))
	}

	// Log in (redirected there from a page).
	do("open", chromedp.Navigate(base+"/destinations"), chromedp.WaitVisible(chromedp.ID("login-submit")))
	if !strings.HasSuffix(location(), "/login") {
		t.Fatalf("not redirected to the login page: %s", location())
	}
	shot("01-login")
	phone("01-login")
	do("credentials", chromedp.SendKeys(chromedp.ID("user"), "admin"), chromedp.SendKeys(chromedp.ID("password"), "s3cret-passphrase"))
	clickLoad("login", "#login-submit")
	do("destinations", chromedp.WaitVisible(chromedp.ID("destinations")))
	shot("02-destinations")

	// Add partner.test: TLS Required (Verify), MTA-STS Yes; Submit.
	clickLoad("add", "#add-destination")
	do("form", chromedp.WaitVisible(chromedp.ID("in-name")),
		chromedp.SendKeys(chromedp.ID("in-name"), "partner.test"),
		chromedp.SetValue(chromedp.ID("in-tls"), "required-verify"),
		chromedp.Click(chromedp.CSS(`input[name="mta_sts"][value="yes"]`)))
	shot("03-destination-form")
	phone("03-destination-form")
	clickLoad("submit", "#submit")
	do("table", chromedp.WaitVisible(chromedp.ID("destinations")))
	row := text(`tr[id="dest-partner.test"]`)
	if !strings.Contains(row, "Required (Verify)") || !strings.Contains(row, "Yes") {
		t.Fatalf("partner.test row after Submit: %q", row)
	}
	if !strings.Contains(text("#commit-link"), "Commit Changes") {
		t.Error("the Commit Changes button does not show pending changes")
	}
	shot("04-destinations-pending")
	phone("04-destinations-pending")
	// Pending only: nothing reached the running server yet.
	if w.d.hasLine("Info: Configuration committed and applied") {
		t.Fatal("Submit applied the configuration")
	}

	// Bad input: the error is beside the field, and nothing is saved.
	do("edit", chromedp.Navigate(base+"/destinations/edit?name=partner.test"), chromedp.WaitVisible(chromedp.ID("in-max_concurrency")),
		chromedp.SetValue(chromedp.ID("in-max_concurrency"), "5000"))
	clickLoad("submit bad", "#submit")
	do("field error", chromedp.WaitVisible(chromedp.ID("err-max_concurrency")))
	if e := text("#err-max_concurrency"); !strings.Contains(e, "5000: want 1-1000") {
		t.Fatalf("error beside max_concurrency: %q", e)
	}
	if e := text(`div[id="f-max_concurrency"]`); !strings.Contains(e, "Maximum concurrent connections") {
		t.Fatalf("the error is not in the field's block: %q", e)
	}
	shot("05-form-error")
	phone("05-form-error")
	if out, _ := w.d.cli("config", "diff"); strings.Contains(out, "5000") || !strings.Contains(out, "mta_sts: true") {
		t.Fatalf("pending after a refused change:\n%s", out)
	}

	// Commit with a comment.
	do("commit page", chromedp.Navigate(base+"/commit"), chromedp.WaitVisible(chromedp.ID("diff")))
	if d := text("#diff"); !strings.Contains(d, "partner.test:") || !strings.Contains(d, "tls: required-verify") || !strings.Contains(d, "mta_sts: true") {
		t.Fatalf("pending diff on the commit page:\n%s", d)
	}
	do("comment", chromedp.SendKeys(chromedp.ID("comment"), "web: verify partner.test"))
	shot("06-commit")
	phone("06-commit")
	clickLoad("commit", "#commit")
	do("committed", chromedp.WaitVisible(chromedp.CSS(".flash")))
	w.d.waitLog(`^Info: Configuration committed and applied$`, 10*time.Second)
	if out, _ := w.d.cli("config", "history"); !regexp.MustCompile(`admin\s+web: verify partner\.test`).MatchString(out) {
		t.Fatalf("history does not record the user and comment:\n%s", out)
	}
	shot("07-committed-history")

	// The running server's next delivery follows the new profile.
	if out, err := swaks(t, w.d.smtp, "--from", "a@sender.test", "--to", "u@partner.test", "--header", "Subject: after web commit"); err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	w.d.waitLog(`^Info: DCID \d+ TLS deferring: verify error: peer cert does not match domain$`, 20*time.Second)
	if rcv.count() != 0 {
		t.Fatal("delivered despite required-verify")
	}

	// Monitor: the queue and the TLS report show it.
	do("monitor", chromedp.Navigate(base+"/monitor"), chromedp.WaitVisible(chromedp.ID("queue")))
	if q := text(`tr[id="q-partner.test"]`); !strings.Contains(q, "partner.test") {
		t.Fatalf("queue row: %q", q)
	}
	if r := text(`tr[id="tls-partner.test"]`); !strings.Contains(r, "peer cert does not match domain") || !strings.Contains(r, "none (no policy)") {
		t.Fatalf("TLS report row: %q", r)
	}
	shot("08-monitor")
	phone("08-monitor")

	// Mail-log search by domain.
	do("logs", chromedp.Navigate(base+"/logs?q=partner.test"), chromedp.WaitVisible(chromedp.ID("log-lines")))
	if l := text("#log-lines"); !strings.Contains(l, "Delayed: DCID 0 MID 1 From: <a@sender.test> To: <u@partner.test>") || !strings.Contains(l, "peer cert does not match domain") {
		t.Fatalf("log search:\n%s", l)
	}
	shot("09-logs")

	// The checker, from the destination's "Check this domain" link.
	do("edit again", chromedp.Navigate(base+"/destinations/edit?name=partner.test"), chromedp.WaitVisible(chromedp.ID("check-domain")))
	clickLoad("check", "#check-domain")
	do("report", chromedp.WaitVisible(chromedp.ID("findings")))
	if v := text("#verdict"); !strings.Contains(v, "would NOT deliver") {
		t.Fatalf("checker verdict: %q", v)
	}
	if f := text("#findings"); !strings.Contains(f, "FAIL") && !strings.Contains(f, "fail") {
		t.Fatalf("findings: %q", f)
	}
	shot("10-mta-sts-check")
	phone("10-mta-sts-check")

	// The other pages render.
	for _, p := range []struct{ path, id, name string }{
		{"/routes", "routes", "11-routes"}, {"/routes/edit", "submit", "12-route-form"},
		{"/bounce-profiles", "bounce-profiles", "13-bounce-profiles"}, {"/bounce-profiles/edit?name=Default", "submit", "14-bounce-form"},
	} {
		do(p.path, chromedp.Navigate(base+p.path), chromedp.WaitVisible(chromedp.ID(p.id)))
		shot(p.name)
	}
	phone("12-route-form-bounce")

	// A POST without the CSRF token is refused (a logged-in Go client).
	resp, body := get("/login")
	tok := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(body)
	if tok == nil {
		t.Fatalf("login form without a token:\n%s", body)
	}
	if resp, _ = post("/login", url.Values{"csrf": {tok[1]}, "user": {"admin"}, "password": {"s3cret-passphrase"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("Go client login: %d", resp.StatusCode)
	}
	histBefore, _ := w.d.cli("config", "history")
	if resp, body = post("/destinations/save", url.Values{"orig": {""}, "name": {"evil.test"}}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("POST without the CSRF token: %d %s", resp.StatusCode, body)
	}
	if resp, _ = post("/commit/rollback", url.Values{"id": {"1"}}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("rollback without the CSRF token: %d", resp.StatusCode)
	}
	if out, _ := w.d.cli("config", "diff"); strings.Contains(out, "evil.test") {
		t.Fatal("a POST without the token changed the configuration")
	}
	if h, _ := w.d.cli("config", "history"); h != histBefore {
		t.Fatal("a POST without the token committed")
	}

	// Roll back to the configuration before the first commit: the held
	// message goes out.
	do("history", chromedp.Navigate(base+"/commit"), chromedp.WaitVisible(chromedp.ID("rollback-1")))
	clickLoad("rollback", "#rollback-1")
	do("rolled back", chromedp.WaitVisible(chromedp.CSS(".flash")))
	waitLogCount(t, w.d, "Info: Configuration committed and applied", 2, 10*time.Second)
	shot("15-rolled-back")
	do("monitor", chromedp.Navigate(base+"/monitor"), chromedp.WaitVisible(chromedp.ID("flush")))
	clickLoad("flush", "#flush")
	rcv.wait(t, 20*time.Second)
	if out, _ := w.d.cli("config", "history"); !regexp.MustCompile(`admin\s+rollback to commit 1`).MatchString(out) {
		t.Fatalf("history lacks the rollback by admin:\n%s", out)
	}
	t.Logf("screenshots in %s", shots)
}

// waitLogCount waits until line appears n times in the mail log.
func waitLogCount(t *testing.T, d *daemon, line string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c := 0
		for _, l := range d.logLines() {
			if l == line {
				c++
			}
		}
		if c >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q logged %d times, want %d", line, c, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// artifactDir is where screenshots go: test/e2e/artifacts/<test> under CI
// (kept by the CI job), else a temporary directory.
func artifactDir(t *testing.T) string {
	if os.Getenv("CI") == "" {
		return t.TempDir()
	}
	dir := filepath.Join("artifacts", t.Name())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestWebUIAdminuserPromptsOnTerminal adds an administrator the interactive
// way: the password is asked twice on the terminal, without echo, and a
// mismatch adds nothing.
func TestWebUIAdminuserPromptsOnTerminal(t *testing.T) {
	cfgPath, dataDir := destconfigSetup(t, "")
	p := startPTY(t, "adminuser", "add", "ops", "--config", cfgPath)
	p.answer("Password: ", "first-password")
	p.answer("Retype the password: ", "other-password")
	p.expect("the passwords do not match")
	<-p.eof
	if _, err := os.Stat(filepath.Join(dataDir, "webui", "users.json")); err == nil {
		t.Fatal("a mismatched password added the user")
	}
	p = startPTY(t, "adminuser", "add", "ops", "--config", cfgPath)
	p.answer("Password: ", "good-password")
	p.answer("Retype the password: ", "good-password")
	p.expect("Administrator ops added")
	p.wait()
	p.mu.Lock()
	out := p.buf.String()
	p.mu.Unlock()
	if strings.Contains(out, "good-password") || strings.Contains(out, "first-password") {
		t.Fatalf("the password was echoed:\n%s", out)
	}
	if out, err := exec.Command(binPath, "adminuser", "list", "--config", cfgPath).CombinedOutput(); err != nil || !strings.Contains(string(out), "ops") {
		t.Fatalf("adminuser list: %v\n%s", err, out)
	}
}
