package e2e

import (
	"net/smtp"
	"strings"
	"testing"
	"time"
)

// TestBounceVerification: mail to a destination with bounce verification
// leaves with a prvs-tagged sender; a listener that rejects invalid bounces
// takes a bounce to the tagged address and refuses one to an untagged or
// forged address.
func TestBounceVerification(t *testing.T) {
	w := newWorld(t, "127.0.0.11")
	rcv := w.addDomain(t, "tagged.test", "mx.tagged.test", "127.0.0.11", nil)
	cfg := baseConfig(w, `destinations:
  default: {tls: preferred}
  tagged.test: {bounce_verification: true}
bounce_verification:
  keys: [{key: "0123456789abcdef-secret", added: "2026-01-01"}]
  domains: [ours.test]
`)
	cfg = strings.Replace(cfg, "    relay_from: [127.0.0.0/8]\n", "    relay_from: [127.0.0.0/8]\n    reject_invalid_bounces: true\n", 1)
	w.d = startOutpost(t, t.TempDir(), cfg)
	if out, err := swaks(t, w.d.smtp, "--from", "joe@ours.test", "--to", "u@tagged.test"); err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	got := rcv.wait(t, 20*time.Second)
	if !strings.HasPrefix(got.From, "prvs=") || !strings.HasSuffix(got.From, "=joe@ours.test") {
		t.Fatalf("sender not tagged: %q", got.From)
	}
	// A bounce to the tagged address is accepted (and routed untagged).
	w.z.addMX("ours.test", 10, "mx.tagged.test")
	if err := smtp.SendMail(w.d.smtp, nil, "", []string{got.From}, []byte("Subject: bounce\r\n\r\nreturned\r\n")); err != nil {
		t.Fatalf("valid bounce refused: %v", err)
	}
	back := rcv.wait(t, 20*time.Second)
	if len(back.Rcpts) != 1 || back.Rcpts[0] != "joe@ours.test" {
		t.Fatalf("bounce delivered to %v, want the untagged address", back.Rcpts)
	}
	for _, bad := range []string{"joe@ours.test", "prvs=0000000000=joe@ours.test"} {
		err := smtp.SendMail(w.d.smtp, nil, "", []string{bad}, []byte("Subject: bounce\r\n\r\nforged\r\n"))
		if err == nil || !strings.Contains(err.Error(), "553") {
			t.Fatalf("bounce to %s: %v, want 553", bad, err)
		}
	}
	w.d.waitLog(`^Info: MID \d+ ICID \d+ invalid bounce, rcpt address <joe@ours\.test> rejected by bounce verification\.$`, 5*time.Second)
}
