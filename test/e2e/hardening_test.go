package e2e

// Hardening (issue 7 item 6, docs/hardening.md):
//
//   - TestPrivilegeDrop (as root): with user: nobody, serve binds a
//     privileged port (25), drops to nobody for every thread before any
//     mail is accepted, and still accepts and delivers; the data directory
//     belongs to nobody and nothing in it is open to other users.
//   - TestSecretsNotLogged: a run that uses a TLS client key, a bounce
//     verification key and a web UI administrator password (right and
//     wrong) never writes any of them to the mail logs, the daemon's
//     stderr or the CLI's output.

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"outpost/internal/testpki"
)

// startReleaseAt is startRelease with a given listener address.
func startReleaseAt(t *testing.T, dir, cfg, smtpAddr string) *daemon {
	t.Helper()
	bin := releaseBinary(t)
	d := &daemon{t: t, dir: dir, smtp: smtpAddr, cfgPath: filepath.Join(dir, "outpost.yaml")}
	cfg = strings.ReplaceAll(cfg, "%SMTP%", d.smtp)
	cfg = strings.ReplaceAll(cfg, "%DATA%", filepath.Join(dir, "data"))
	if err := os.WriteFile(d.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	d.stderr = &lockedBuffer{}
	d.cmd = exec.Command(bin, "serve", "--config", d.cfgPath)
	d.cmd.Stderr, d.cmd.Stdout = d.stderr, d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.stop)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		// Wait for the greeting, not the connection: the socket is bound
		// (and the kernel completes handshakes) before the privilege drop,
		// but nothing is served until after it.
		if c, err := net.Dial("tcp", d.smtp); err == nil {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 4)
			_, err := io.ReadFull(c, buf)
			c.Close()
			if err == nil && string(buf[:3]) == "220" {
				return d
			}
		}
		if d.cmd.ProcessState != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("outpost did not start listening on %s: %s", d.smtp, d.stderr)
	return nil
}

// idLines returns the Uid:, Gid: and Groups: lines of a /proc status file.
func idLines(t *testing.T, path string) (uid, gid, groups string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, ":")
		v = strings.Join(strings.Fields(v), " ")
		switch k {
		case "Uid":
			uid = v
		case "Gid":
			gid = v
		case "Groups":
			groups = v
		}
	}
	return uid, gid, groups
}

func TestPrivilegeDrop(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test binds port 25 and drops to nobody")
	}
	id, err := lookupNobody()
	if err != nil {
		t.Skip(err)
	}
	w := newWorld(t, "127.0.0.174")
	w.z.addMX("live.test", 10, "mx.live.test")
	w.z.addA("mx.live.test", "127.0.0.174")
	p := newProbe(t, fmt.Sprintf("127.0.0.174:%d", w.port), 0)
	dir := t.TempDir()
	// nobody must reach the data directory through the test's temporary
	// directories (created 0700 for root).
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o711)
	}
	// The CA file is read after the drop.
	os.Chmod(filepath.Dir(w.caFile), 0o711)
	os.Chmod(w.caFile, 0o644)
	cfg := "user: nobody\n" + loadConfig(w, "")
	d := startReleaseAt(t, dir, cfg, "127.0.0.173:25")
	logOnFailure(t, d)
	pid := d.cmd.Process.Pid

	// Every thread runs as nobody: real, effective, saved and file-system
	// ids, and no supplementary group but nobody's own.
	want := fmt.Sprintf("%d %d %d %d", id.uid, id.uid, id.uid, id.uid)
	wantG := fmt.Sprintf("%d %d %d %d", id.gid, id.gid, id.gid, id.gid)
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("threads of %d: %v", pid, err)
	}
	for _, task := range tasks {
		uid, gid, groups := idLines(t, fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()))
		if uid != want || gid != wantG || groups != strconv.Itoa(id.gid) {
			t.Fatalf("thread %s: Uid %q Gid %q Groups %q, want %q %q %q", task.Name(), uid, gid, groups, want, wantG, strconv.Itoa(id.gid))
		}
	}
	uid, gid, groups := idLines(t, fmt.Sprintf("/proc/%d/status", pid))
	t.Logf("daemon %d (%d threads): Uid: %s Gid: %s Groups: %s", pid, len(tasks), uid, gid, groups)
	if !strings.Contains(d.stderr.String(), "running unprivileged") {
		t.Errorf("no 'running unprivileged' line on stderr:\n%s", d.stderr)
	}

	// The listener bound as root on port 25 still accepts, and the mail
	// is delivered.
	submitTo(t, d, "a@sender.test", "u@live.test")
	p.waitCount(t, 1, 30*time.Second)

	// The data directory belongs to nobody and is private: directories
	// 0700 or tighter for others, no file readable or writable by others,
	// spool records 0600.
	data := filepath.Join(dir, "data")
	if st, err := os.Stat(data); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("data dir: %v %v, want 0700", st.Mode(), err)
	}
	n := 0
	err = filepath.WalkDir(data, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		n++
		st := info.Sys().(*syscall.Stat_t)
		if int(st.Uid) != id.uid {
			t.Errorf("%s is owned by uid %d, not nobody", path, st.Uid)
		}
		if info.Mode()&fs.ModeSocket == 0 && info.Mode().Perm()&0o007 != 0 {
			t.Errorf("%s has mode %v: open to other users", path, info.Mode())
		}
		if strings.Contains(path, "/spool/msg/") && info.Mode().IsRegular() && info.Mode().Perm() != 0o600 {
			t.Errorf("spool record %s has mode %v, want 0600", path, info.Mode())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(d.cfgPath); st.Mode().Perm()&0o077 != 0 {
		t.Errorf("config file mode %v", st.Mode())
	}
	t.Logf("%d entries under the data directory, all nobody's and private", n)
}

type unixID struct{ uid, gid int }

func lookupNobody() (unixID, error) {
	out, err := exec.Command("id", "-u", "nobody").Output()
	if err != nil {
		return unixID{}, fmt.Errorf("no user nobody: %v", err)
	}
	gout, err := exec.Command("id", "-g", "nobody").Output()
	if err != nil {
		return unixID{}, err
	}
	u, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	g, _ := strconv.Atoi(strings.TrimSpace(string(gout)))
	return unixID{u, g}, nil
}

func TestSecretsNotLogged(t *testing.T) {
	w := newWorld(t, "127.0.0.175")
	rcv := w.addDomain(t, "tagged.test", "mx.tagged.test", "127.0.0.175", nil)
	dir := t.TempDir()

	// A client certificate whose key is a secret.
	leaf, err := w.ca.Leaf([]string{"outpost.test"}, testpki.LeafOptions{})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := testpki.WriteFiles(dir, "client", leaf)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(leaf.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	var secrets []string
	for _, l := range strings.Split(keyPEM, "\n") {
		if len(l) >= 40 && !strings.HasPrefix(l, "-----") {
			secrets = append(secrets, l) // each base64 line of the key
		}
	}
	const bvKey = "bv-SECRET-7f3c9a1e5d2b8f40a6c1"
	const adminPass = "admin-PASSWORD-c0rrect-h0rse"
	const wrongPass = "wrong-PASSWORD-b4ttery-st4ple"
	secrets = append(secrets, bvKey, adminPass, wrongPass)

	uiPort := freePortOn(t, "127.0.0.1")
	cfg := baseConfig(w, fmt.Sprintf(`destinations:
  default: {tls: preferred}
  tagged.test: {bounce_verification: true}
bounce_verification:
  keys: [{key: %q, added: "2026-01-01"}]
  domains: [ours.test]
webui:
  address: 127.0.0.1:%d
`, bvKey, uiPort))
	cfg = strings.Replace(cfg, "tls:\n  ca_file:", fmt.Sprintf("tls:\n  client_cert: {cert_file: %s, key_file: %s}\n  ca_file:", certFile, keyFile), 1)
	cfg = strings.Replace(cfg, "    relay_from: [127.0.0.0/8]\n", "    relay_from: [127.0.0.0/8]\n    reject_invalid_bounces: true\n", 1)

	// The administrator account, made with the CLI before the start.
	cfgPath := filepath.Join(dir, "outpost.yaml")
	writeFile(t, cfgPath, strings.ReplaceAll(strings.ReplaceAll(cfg, "%DATA%", filepath.Join(dir, "data")), "%SMTP%", "127.0.0.1:1"))
	add := exec.Command(releaseBinary(t), "adminuser", "add", "admin", "--password-stdin", "--config", cfgPath)
	add.Stdin = strings.NewReader(adminPass + "\n")
	cliOut, err := add.CombinedOutput()
	if err != nil {
		t.Fatalf("adminuser add: %v\n%s", err, cliOut)
	}
	d := startRelease(t, dir, cfg)
	logOnFailure(t, d)

	// Mail out over TLS with the client certificate and a tagged sender;
	// a valid and a forged bounce back.
	submitTo(t, d, "joe@ours.test", "u@tagged.test")
	got := rcv.wait(t, 30*time.Second)
	if got.TLS == nil || !strings.HasPrefix(got.From, "prvs=") {
		t.Fatalf("delivery: TLS %v, sender %q", got.TLS != nil, got.From)
	}
	w.z.addMX("ours.test", 10, "mx.tagged.test")
	submitTo(t, d, "", got.From)
	rcv.wait(t, 30*time.Second)
	if err := sendRaw(d.smtp, "", "prvs=0000000000=joe@ours.test"); err == nil || !strings.Contains(err.Error(), "553") {
		t.Fatalf("forged bounce: %v", err)
	}

	// Web UI: a failed and a successful login.
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	base := fmt.Sprintf("https://127.0.0.1:%d", uiPort)
	var lastCode int
	for _, pw := range []string{wrongPass, adminPass} {
		var resp *http.Response
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err = hc.Get(base + "/login")
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("web UI: %v", err)
		}
		body := string(mustReadAll(resp))
		m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no CSRF token on the login page:\n%s", body)
		}
		resp, err = hc.PostForm(base+"/login", url.Values{"csrf": {m[1]}, "user": {"admin"}, "password": {pw}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		lastCode = resp.StatusCode
		if pw == wrongPass && resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong password: %s", resp.Status)
		}
	}
	if lastCode != http.StatusSeeOther {
		t.Fatalf("right password: status %d", lastCode)
	}
	d.waitLog(`invalid bounce`, 10*time.Second)
	out, _ := d.cli("queue", "list")
	cliOut = append(cliOut, out...)
	d.stop()

	logs := allMailLogs(t, d)
	if !strings.Contains(logs, "DCID") || !strings.Contains(d.stderr.String(), "web UI login") {
		t.Fatalf("the run did not log what this test looks through:\nstderr:\n%s", d.stderr)
	}
	for name, text := range map[string]string{"mail logs": logs, "stderr": d.stderr.String(), "CLI output": string(cliOut)} {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("secret %q appears in the %s", s, name)
			}
		}
	}
	t.Logf("%d secrets (client key lines, bounce-verification key, admin passwords) absent from %d bytes of mail logs, %d of stderr, %d of CLI output",
		len(secrets), len(logs), len(d.stderr.String()), len(cliOut))
}

func mustReadAll(resp *http.Response) []byte {
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return []byte(b.String())
		}
	}
}

// sendRaw sends one small message with net/smtp-like semantics and returns
// the first error.
func sendRaw(addr, from, to string) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return err
	}
	return loadSend(c, from, to, "Subject: bounce\r\n\r\nforged\r\n")
}

// TestCapabilityBind reproduces the systemd unit's privilege model without
// systemd: the daemon runs as nobody from exec, with CAP_NET_BIND_SERVICE
// as its only (ambient) capability and no_new_privs, binds port 25 and
// accepts mail.
func TestCapabilityBind(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to start a process as nobody with a capability")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv (util-linux) is not installed")
	}
	if _, err := lookupNobody(); err != nil {
		t.Skip(err)
	}
	w := newWorld(t, "127.0.0.176")
	w.z.addMX("live.test", 10, "mx.live.test")
	w.z.addA("mx.live.test", "127.0.0.176")
	p := newProbe(t, fmt.Sprintf("127.0.0.176:%d", w.port), 0)
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o711)
	}
	os.Chmod(filepath.Dir(w.caFile), 0o711)
	os.Chmod(w.caFile, 0o644)
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("chown", "nobody", data).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v %s", err, out)
	}
	cfgPath := filepath.Join(dir, "outpost.yaml")
	addr := "127.0.0.177:25"
	cfg := strings.ReplaceAll(strings.ReplaceAll(loadConfig(w, ""), "%SMTP%", addr), "%DATA%", data)
	writeFile(t, cfgPath, cfg)
	os.Chmod(cfgPath, 0o644)
	d := &daemon{t: t, dir: dir, smtp: addr, cfgPath: cfgPath, stderr: &lockedBuffer{}}
	d.cmd = exec.Command(setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups",
		"--inh-caps=-all,+net_bind_service", "--ambient-caps=+net_bind_service", "--bounding-set=-all,+net_bind_service", "--no-new-privs",
		releaseBinary(t), "serve", "--config", cfgPath)
	d.cmd.Stdout, d.cmd.Stderr = d.stderr, d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.stop)
	logOnFailure(t, d)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no listener on %s: %s", addr, d.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	st := string(b)
	for _, want := range []string{"CapEff:\t0000000000000400", "CapAmb:\t0000000000000400", "NoNewPrivs:\t1"} {
		if !strings.Contains(st, want) {
			t.Fatalf("status lacks %q:\n%s", want, st)
		}
	}
	submitTo(t, d, "a@sender.test", "u@live.test")
	p.waitCount(t, 1, 30*time.Second)
	uid, _, _ := idLines(t, fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	t.Logf("outpost as Uid %s with only CAP_NET_BIND_SERVICE bound %s and delivered", uid, addr)
}
