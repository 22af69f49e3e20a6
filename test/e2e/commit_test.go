package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"outpost/internal/config"
	"outpost/internal/configstore"
	"outpost/internal/tlspolicy"
)

// TestCommitClearRollbackWhileRunning changes a destination's TLS mode with
// the daemon running: the next delivery follows the committed profile, a
// broken configuration is refused while the old one keeps running, and a
// rollback restores the earlier behaviour — all without a restart.
func TestCommitClearRollbackWhileRunning(t *testing.T) {
	w := newWorld(t, "127.0.0.10")
	// The receiver's certificate names its MX host only, not the domain.
	rcv := w.addDomain(t, "partner.test", "mx.partner.test", "127.0.0.10", nil)
	dir := t.TempDir()
	w.d = startOutpost(t, dir, baseConfig(w, "destinations:\n  default: {tls: preferred}\n"))
	store, err := configstore.Open(w.d.cfgPath, filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	send := func(subject string) {
		t.Helper()
		if out, err := swaks(t, w.d.smtp, "--from", "a@sender.test", "--to", "u@partner.test", "--header", "Subject: "+subject); err != nil {
			t.Fatalf("swaks: %v\n%s", err, out)
		}
	}
	send("before")
	rcv.wait(t, 20*time.Second)

	setMode := func(m tlspolicy.Mode) {
		t.Helper()
		err := store.Edit(func(c *config.Config) error {
			mm := config.TLSMode(m)
			c.Destinations["partner.test"] = &config.Destination{TLS: &mm}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	setMode(tlspolicy.RequiredVerify)
	if out, _ := w.d.cli("config", "diff"); !strings.Contains(out, "partner.test") {
		t.Fatalf("config diff:\n%s", out)
	}
	// Clear abandons it.
	if out, err := w.d.cli("clear"); err != nil || !strings.Contains(out, "abandoned") {
		t.Fatalf("clear: %v %s", err, out)
	}
	setMode(tlspolicy.RequiredVerify)
	out, err := w.d.cli("commit", "-m", "verify partner.test")
	if err != nil || !strings.Contains(out, "Changes committed") {
		t.Fatalf("commit: %v\n%s", err, out)
	}
	w.d.waitLog(`^Info: Configuration committed and applied$`, 5*time.Second)
	send("after commit")
	w.d.waitLog(`^Info: DCID \d+ TLS deferring: verify error: peer cert does not match domain$`, 20*time.Second)
	if rcv.count() != 1 {
		t.Fatalf("message delivered despite required-verify: %d", rcv.count())
	}

	// A configuration that cannot be applied is refused; the old one runs on.
	err = store.Edit(func(c *config.Config) error {
		c.TLS.ClientCert = &config.Cert{CertFile: filepath.Join(dir, "missing.pem"), KeyFile: filepath.Join(dir, "missing.key")}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	out, err = w.d.cli("commit", "-m", "broken")
	if err == nil || !strings.Contains(out, "running configuration is unchanged") {
		t.Fatalf("broken commit accepted: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(w.d.cfgPath); strings.Contains(string(b), "missing.pem") {
		t.Fatal("broken configuration written to the live file")
	}
	w.d.cli("clear")

	// Roll back to the first configuration: the held message goes out.
	out, err = w.d.cli("rollback")
	if err != nil || !strings.Contains(out, "Rolled back") {
		t.Fatalf("rollback: %v\n%s", err, out)
	}
	w.d.cli("queue", "flush")
	rcv.wait(t, 20*time.Second)
	out, _ = w.d.cli("config", "history")
	for _, want := range []string{"verify partner.test", "rollback to commit 1", "configuration before the first commit"} {
		if !strings.Contains(out, want) {
			t.Errorf("history lacks %q:\n%s", want, out)
		}
	}
}
