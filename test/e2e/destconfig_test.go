package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"outpost/internal/config"
	"outpost/internal/configstore"
	"outpost/internal/tlspolicy"
)

// ptySession runs the real binary on a Linux pseudo-terminal (the slave
// side is its controlling terminal, stdin and stdout) and is driven like
// expect: wait for a prompt, type an answer.
type ptySession struct {
	t      *testing.T
	master *os.File
	cmd    *exec.Cmd
	mu     sync.Mutex
	buf    bytes.Buffer
	mark   int
	eof    chan struct{}
}

func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	fd := int(m.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil { // unlockpt
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN) // ptsname
	if err != nil {
		t.Fatalf("ptsname: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pts: %v", err)
	}
	return m, s
}

func startPTY(t *testing.T, args ...string) *ptySession {
	t.Helper()
	m, s := openPTY(t)
	cmd := exec.Command(binPath, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = s, s, s
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	p := &ptySession{t: t, master: m, cmd: cmd, eof: make(chan struct{})}
	go func() {
		defer close(p.eof)
		b := make([]byte, 4096)
		for {
			n, err := m.Read(b)
			p.mu.Lock()
			p.buf.Write(b[:n])
			p.mu.Unlock()
			if err != nil { // EIO once the child has closed the terminal
				return
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		m.Close()
	})
	return p
}

// expect waits for s in the output after the previous match.
func (p *ptySession) expect(s string) {
	p.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		p.mu.Lock()
		out := strings.ReplaceAll(p.buf.String(), "\r\n", "\n")
		i := strings.Index(out[p.mark:], s)
		if i >= 0 {
			p.mark += i + len(s)
		}
		p.mu.Unlock()
		if i >= 0 {
			return
		}
		select {
		case <-p.eof:
			p.t.Fatalf("session ended before %q; output:\n%s", s, out[p.mark:])
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("timed out waiting for %q; output after the last match:\n%s", s, out[p.mark:])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// answer waits for the prompt and types the line.
func (p *ptySession) answer(prompt, line string) {
	p.t.Helper()
	p.expect(prompt)
	if _, err := p.master.WriteString(line + "\r"); err != nil {
		p.t.Fatal(err)
	}
}

func (p *ptySession) wait() {
	p.t.Helper()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.t.Fatalf("exit: %v\n%s", err, p.buf.String())
		}
	case <-time.After(20 * time.Second):
		p.t.Fatal("the session did not end")
	}
	<-p.eof
}

func destconfigSetup(t *testing.T, extra string) (cfgPath, dataDir string) {
	dir := t.TempDir()
	dataDir = filepath.Join(dir, "data")
	cfgPath = filepath.Join(dir, "outpost.yaml")
	writeFile(t, cfgPath, "hostname: gw.test\ndata_dir: "+dataDir+"\n"+extra)
	return cfgPath, dataDir
}

func workingConfig(t *testing.T, cfgPath, dataDir string) *config.Config {
	t.Helper()
	st, err := configstore.Open(cfgPath, dataDir)
	if err != nil {
		t.Fatal(err)
	}
	raw, pending, err := st.Working()
	if err != nil || !pending {
		t.Fatalf("working: pending=%v err=%v", pending, err)
	}
	data, err := config.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(data, "pending")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const menuPrompt = "Choose the operation you want to perform:"

func TestDestconfigInteractivePTY(t *testing.T) {
	cfgPath, dataDir := destconfigSetup(t, "bounce_profiles: {slow: {max_retries: 3}}\nsmtp_routes: {routed.example: {hosts: [{host: relay.example}]}}\n")
	p := startPTY(t, "--config", cfgPath, "destconfig")
	p.expect("There are currently 0 entries configured.")
	for _, item := range []string{"- NEW - Create a new destination.", "- EDIT - Modify a destination.", "- DELETE - Remove a destination.",
		"- DEFAULT - Change the default.", "- LIST - Display a summary list of all destinations.",
		"- DETAIL - Display details for one destination or all destinations.", "- CLEAR - Remove all destinations.",
		"- IMPORT - Import tables from a file.", "- EXPORT - Export tables to a file.", "- SETUP - Change global settings."} {
		p.expect(item)
	}
	p.answer("[]> ", "NEW")
	p.answer("Enter the domain you wish to configure.\n[]> ", "not a domain")
	p.expect(`"not a domain" is not a valid domain`)
	p.answer("[]> ", "example.com")
	p.answer("Do you wish to configure a concurrency limit for example.com? [N]>", "y")
	p.answer(`Enter the max concurrency limit for "example.com". [500]>`, "1001")
	p.expect("The value must be between 1 and 1000.")
	p.answer(`Enter the max concurrency limit for "example.com". [500]>`, "ten")
	p.expect(`"ten" is not a number. The value must be between 1 and 1000.`)
	p.answer(`Enter the max concurrency limit for "example.com". [500]>`, "25")
	p.answer("Do you wish to apply a recipient limit for example.com? [N]>", "y")
	p.answer(`Enter the amount of time (in minutes) over which to measure the recipient limit for "example.com". [60]>`, "0")
	p.expect("The value must be between 1 and 60.")
	p.answer("[60]>", "10")
	p.answer(`Enter the max number of recipients per 10 minutes for "example.com". [500]>`, "")
	p.expect("Select how you want to apply the limits for example.com:\n1. One limit applies to the entire domain\n2. Separate limit for each mail exchanger IP address\n")
	p.answer("[1]> ", "2")
	p.expect("Select how the limits will be enforced:\n1. System Wide\n2. Per Virtual Gateway(tm)\n")
	p.answer("[1]> ", "")
	p.answer("Do you wish to apply a messages-per-connection limit to this domain? [N]>", "n")
	p.answer("Do you wish to apply a specific TLS setting for this domain? [N]>", "y")
	p.expect("1. No\n2. Preferred\n3. Required\n4. Preferred (Verify)\n5. Required (Verify)\n6. Required - Verify Hosted Domains\n")
	p.answer("[2]> ", "9")
	p.expect("The value must be between 1 and 6.")
	p.answer("[2]> ", "5")
	p.answer("Do you wish to configure DANE Support? [N]>", "x")
	p.expect("Please answer Y or N.")
	p.answer("Do you wish to configure DANE Support? [N]>", "n")
	p.answer("Do you wish to configure MTA STS Support? [N]>", "y")
	p.expect("MTA-STS is not enforced for domains that have SMTP Routes configured")
	p.expect("1. Off  2. On")
	p.answer("[1]> ", "2")
	p.answer("Do you wish to apply a specific bounce verification address tagging setting for this domain? [N]>", "n")
	p.answer("Do you wish to apply a specific bounce profile to this domain? [N]>", "y")
	p.expect("1. Default\n2. slow\n3. New Profile\n")
	p.answer("[1]> ", "2")
	p.answer("Do you wish to apply a specific IP sort preference for this domain? [N]>", "")

	// The routed domain: the note says MTA-STS will not apply.
	p.answer(menuPrompt, "NEW")
	p.answer("Enter the domain you wish to configure.", "example.com")
	p.expect(`The destination "example.com" already exists.`)
	p.answer("[]> ", "routed.example")
	for _, q := range []string{"concurrency limit", "recipient limit", "messages-per-connection", "specific TLS setting"} {
		p.answer(q, "n")
	}
	p.answer("Do you wish to configure DANE Support? [N]>", "n")
	p.answer("Do you wish to configure MTA STS Support? [N]>", "y")
	p.expect("routed.example has an SMTP route: its MTA-STS setting has no effect while the route exists.")
	p.answer("[1]> ", "2")
	for _, q := range []string{"bounce verification", "bounce profile", "IP sort preference"} {
		p.answer(q, "n")
	}

	p.answer(menuPrompt, "EDIT")
	p.answer("Enter the domain you wish to edit.", "nosuch.example")
	p.expect(`"nosuch.example" was not found in the destination table.`)
	p.answer("[]> ", "")

	p.answer(menuPrompt, "LIST")
	p.expect("Domain")
	p.expect("Rate Limiting")
	p.expect("IP preference")
	p.expect("example.com")
	p.expect("Custom")
	p.expect("Required (Verify)")
	p.expect("(Default)")

	p.answer(menuPrompt, "DETAIL")
	p.answer("Enter the domain you wish to view, DEFAULT, or ALL.", "example.com")
	p.expect("Recipient limit: 500 recipients per 10 minutes")
	p.expect("Bounce Profile: slow")

	p.answer(menuPrompt, "")
	p.expect("Use the commit command to make these changes active.")
	p.wait()

	c := workingConfig(t, cfgPath, dataDir)
	got := c.Profile("example.com")
	want := config.Profile{Name: "example.com", IPPreference: "prefer-ipv4", MaxConcurrency: 25, MaxMessagesPerConnection: 50,
		RecipientLimit: config.RecipientLimit{Count: 500, Minutes: 10}, LimitsScope: "mx-ip", LimitsApply: "system",
		TLS: tlspolicy.RequiredVerify, DANE: "none", MTASTS: true, BounceProfile: "slow"}
	if got != want {
		t.Fatalf("example.com\n got %+v\nwant %+v", got, want)
	}
	if !c.Profile("routed.example").MTASTS {
		t.Fatal("routed.example")
	}

	// Pending, not live: config diff shows it; commit makes it live.
	out, err := exec.Command(binPath, "--config", cfgPath, "config", "diff").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "example.com") || !strings.Contains(string(out), "required-verify") {
		t.Fatalf("config diff: %v\n%s", err, out)
	}
	live, err := config.Load(cfgPath)
	if err != nil || live.Destinations["example.com"] != nil {
		t.Fatalf("live changed before commit: %v", err)
	}
	if out, err := exec.Command(binPath, "--config", cfgPath, "commit", "-m", "destconfig e2e").CombinedOutput(); err != nil {
		t.Fatalf("commit: %v\n%s", err, out)
	}
	live, err = config.Load(cfgPath)
	if err != nil || live.Profile("example.com") != want {
		t.Fatalf("live after commit: %v %+v", err, live.Profile("example.com"))
	}
}

func TestDestconfigDefaultAndSetupPTY(t *testing.T) {
	cfgPath, dataDir := destconfigSetup(t, "")
	dir := filepath.Dir(cfgPath)
	cert, key := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	writeFile(t, cert, "cert")
	writeFile(t, key, "key")
	p := startPTY(t, "--config", cfgPath, "destconfig")
	p.answer(menuPrompt, "default")
	p.answer("Enter the default maximum concurrency limit. [500]>", "100")
	p.answer("Do you wish to apply a default recipient limit? [N]>", "n")
	p.answer("[1]> ", "1")
	p.answer("[1]> ", "2")
	p.answer("Enter the maximum number of messages per connection. [50]>", "5")
	p.expect("Do you want to use TLS support?")
	p.answer("[2]> ", "3")
	p.expect("Choose a DANE option:")
	p.answer("[1]> ", "3")
	p.expect("Choose an MTA STS option:")
	p.answer("[1]> ", "1")
	p.answer("Perform bounce verification address tagging? [N]>", "y")
	p.expect("Please choose a bounce profile to apply:")
	p.answer("[1]> ", "")
	p.expect("1. Prefer IPv4\n2. Prefer IPv6\n3. Require IPv4\n4. Require IPv6\n")
	p.answer("[1]> ", "5")
	p.expect("The value must be between 1 and 4.")
	p.answer("[1]> ", "2")

	p.answer(menuPrompt, "SETUP")
	p.answer("Do you wish to present a client certificate on outbound TLS connections? [N]>", "y")
	p.answer("[]> ", filepath.Join(dir, "nope.pem"))
	p.expect("cannot be read")
	p.answer("[]> ", cert)
	p.answer("Enter the private key file (PEM).", key)
	p.answer("Do you want to send an alert when a required TLS connection fails? [N]>", "y")
	p.answer("[NONE]> ", "admin")
	p.expect(`"admin" is not an email address.`)
	p.answer("[NONE]> ", "admin@example.net")
	p.answer(menuPrompt, "")
	p.expect("Use the commit command to make these changes active.")
	p.wait()

	c := workingConfig(t, cfgPath, dataDir)
	d := c.Profile("anything.example")
	if d.MaxConcurrency != 100 || d.LimitsApply != "virtual-gateway" || d.MaxMessagesPerConnection != 5 || d.TLS != tlspolicy.Required ||
		d.DANE != "mandatory" || d.MTASTS || !d.BounceVerification || d.IPPreference != "prefer-ipv6" {
		t.Fatalf("default: %+v", d)
	}
	if c.TLS.ClientCert == nil || c.TLS.ClientCert.CertFile != cert || !c.TLS.Alert.Enabled || c.TLS.Alert.To != "admin@example.net" {
		t.Fatalf("setup: %+v", c.TLS)
	}
}

// The batch forms through the real binary: import/export round trip,
// routes and bounce profiles, range errors on stderr with exit status 1.
func TestDestconfigBatchCommands(t *testing.T) {
	cfgPath, dataDir := destconfigSetup(t, "")
	dir := filepath.Dir(cfgPath)
	run := func(wantCode int, args ...string) string {
		t.Helper()
		out, err := exec.Command(binPath, append([]string{"--config", cfgPath}, args...)...).CombinedOutput()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != wantCode {
			t.Fatalf("%v: exit %d, want %d\n%s", args, code, wantCode, out)
		}
		return string(out)
	}
	run(0, "bounceconfig", "new", "slow", "max_retries=5", "initial_retry=120", "max_retry_timeout=600", "send_warnings=yes")
	run(0, "destconfig", "new", "example.com", "--tls", "required-verify", "--mta-sts", "on", "--bounce-profile", "slow", "--recipient-limit", "100/5")
	run(0, "destconfig", "new", ".example.org", "--dane", "opportunistic", "--ip-preference", "require-ipv6", "--limits-scope", "mx-ip")
	run(0, "smtproutes", "new", "partner.example", "relay1.example/pri=0,relay2.example:2525/pri=10")
	run(0, "smtproutes", "new", "ALL", "USEDNS")
	out := run(1, "destconfig", "new", "a.example", "--max-concurrency", "0")
	if !strings.Contains(out, "max_concurrency 0: want 1-1000") {
		t.Fatal(out)
	}
	out = run(1, "smtproutes", "new", "all", "x.example")
	if !strings.Contains(out, "There is already a default route set.") {
		t.Fatal(out)
	}
	out = run(1, "bounceconfig", "delete", "Default")
	if !strings.Contains(out, "The default profile may not be deleted") {
		t.Fatal(out)
	}
	out = run(0, "destconfig", "list", "--json")
	if !strings.Contains(out, `"domain": "example.com"`) || !strings.Contains(out, `"tls": "required-verify"`) {
		t.Fatal(out)
	}
	out = run(0, "smtproutes", "print")
	if !strings.Contains(out, "relay2.example:2525/pri=10") {
		t.Fatal(out)
	}

	table, routes := filepath.Join(dir, "dest.ini"), filepath.Join(dir, "routes.txt")
	run(0, "destconfig", "export", table)
	run(0, "smtproutes", "export", routes)
	before := workingConfig(t, cfgPath, dataDir)
	run(0, "destconfig", "clear")
	run(0, "smtproutes", "clear")
	if c := workingConfig(t, cfgPath, dataDir); len(c.Destinations) != 1 || len(c.SMTPRoutes) != 0 {
		t.Fatalf("clear: %v %v", c.Destinations, c.SMTPRoutes)
	}
	run(0, "destconfig", "import", table)
	run(0, "smtproutes", "import", routes)
	after := workingConfig(t, cfgPath, dataDir)
	for _, d := range []string{"example.com", "a.example.org", "partner.example", "other.test"} {
		if before.Profile(d) != after.Profile(d) {
			t.Errorf("%s: %+v != %+v", d, before.Profile(d), after.Profile(d))
		}
		bn, br := before.RouteFor(d)
		an, ar := after.RouteFor(d)
		if bn != an || fmt.Sprint(br) != fmt.Sprint(ar) {
			t.Errorf("route %s: %s %+v != %s %+v", d, bn, br, an, ar)
		}
	}
	table2 := filepath.Join(dir, "dest2.ini")
	run(0, "destconfig", "export", table2)
	b1, _ := os.ReadFile(table)
	b2, _ := os.ReadFile(table2)
	if !bytes.Equal(b1, b2) {
		t.Fatalf("export after import differs:\n%s\n---\n%s", b1, b2)
	}
	writeFile(t, table2, "[DEFAULT]\n[b.example]\nmax_messages_per_connection = 2000\n")
	out = run(1, "destconfig", "import", table2)
	if !strings.Contains(out, table2+":3: max_messages_per_connection 2000: want 1-1000") {
		t.Fatal(out)
	}
}
