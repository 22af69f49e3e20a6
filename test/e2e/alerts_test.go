package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestTLSAlertAndDelayWarning: a destination that requires verified TLS
// fails verification → a Warning line and one alert mail to the configured
// address (rate-limited per domain); with delay warnings on, the sender
// gets a "delayed" DSN while the message waits.
func TestTLSAlertAndDelayWarning(t *testing.T) {
	w := newWorld(t, "127.0.0.12", "127.0.0.13")
	// The receiver's certificate names only its MX host: required-verify fails.
	strict := w.addDomain(t, "strict.test", "mx.provider.test", "127.0.0.12", nil)
	admin := w.addDomain(t, "admin.test", "mx.admin.test", "127.0.0.13", nil)
	cfg := strings.Replace(baseConfig(w, `destinations:
  default: {tls: preferred}
  strict.test: {tls: required-verify}
`), "tls:\n  ca_file:", "tls:\n  alert: {enabled: true, to: postmaster@admin.test, interval: 1h}\n  ca_file:", 1)
	cfg = strings.Replace(cfg, "  max_retry_interval: 2s\n", "  max_retry_interval: 2s\n  delay_warnings: {enabled: true, interval: 2s, count: 1}\n", 1)
	w.d = startOutpost(t, t.TempDir(), cfg)
	for i := 0; i < 2; i++ {
		if out, err := swaks(t, w.d.smtp, "--from", "someone@admin.test", "--to", "u@strict.test", "--header", "Subject: needs tls"); err != nil {
			t.Fatalf("swaks: %v\n%s", err, out)
		}
	}
	w.d.waitLog(`^Warning: TLS was required for delivery to strict\.test \(host mx\.provider\.test\) but failed: .*peer cert does not match domain`, 20*time.Second)
	w.d.waitLog(`^Info: A System/Warning alert was sent to postmaster@admin\.test with subject "Warning <System> outpost\.test: TLS required delivery to strict\.test failed"$`, 10*time.Second)
	// The alert and the delay DSN(s) go to admin.test's MX.
	var alert, delay string
	deadline := time.After(30 * time.Second)
	for alert == "" || delay == "" {
		select {
		case m := <-admin.ch:
			switch {
			case strings.Contains(m.Data, "TLS required delivery to strict.test failed"):
				if alert != "" {
					t.Fatal("a second alert within the interval")
				}
				alert = m.Data
			case strings.Contains(m.Data, "Action: delayed"):
				delay = m.Data
			}
		case <-deadline:
			t.Fatalf("alert %v, delay DSN %v", alert != "", delay != "")
		}
	}
	for _, want := range []string{"Status: 4.7.", "Will-Retry-Until:", "Final-Recipient: rfc822; u@strict.test", "(Delay)"} {
		if !strings.Contains(delay, want) {
			t.Errorf("delay DSN lacks %q:\n%s", want, delay)
		}
	}
	if strict.count() != 0 {
		t.Fatal("mail reached a receiver that failed verification")
	}
	time.Sleep(2 * time.Second)
	if n := strings.Count(w.d.mailLog(), "A System/Warning alert was sent"); n != 1 {
		t.Fatalf("%d alerts, want 1 (rate-limited per domain)", n)
	}
}
