package smtpd

import (
	"errors"
	"strings"
	"sync"
	"testing"
)

// TestBounceCheck: the hook sees only recipients of null-sender mail that
// passed the address checks; an error is a 553 5.7.1 and the appliance's
// log line; its answer replaces the recipient after the same checks.
func TestBounceCheck(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	ts := startServer(t, func(c *Config) {
		c.BounceCheck = func(rcpt string) (string, error) {
			mu.Lock()
			seen = append(seen, rcpt)
			mu.Unlock()
			switch {
			case strings.HasPrefix(rcpt, "tag="):
				return strings.TrimPrefix(rcpt, "tag="), nil
			case strings.HasPrefix(rcpt, "keep@"):
				return "", nil
			case strings.HasPrefix(rcpt, "evil@"):
				return "a@b@c.example", nil // a broken hook cannot smuggle an address
			}
			return "", errors.New("no tag")
		}
	})
	c := dialRaw(t, ts.addr)
	c.cmd("EHLO client.test")

	c.startTx("", "tag=joe@example.com")
	for rcpt, want := range map[string]string{
		"joe@example.com":   "553 5.7.1 invalid bounce, rcpt address <joe@example.com> rejected by bounce verification",
		"keep@example.com":  "250",
		"evil@example.com":  "553 5.1.3",
		"bad%x@example.com": "553 5.1.3", // refused before the hook
	} {
		if r := c.cmd("RCPT TO:<" + rcpt + ">"); !strings.HasPrefix(r, want) {
			t.Errorf("RCPT %s: %q, want %q", rcpt, r, want)
		}
	}
	if r := c.cmd("DATA"); !strings.HasPrefix(r, "354") {
		t.Fatalf("DATA: %q", r)
	}
	if r := c.cmd("Subject: x\r\n\r\nbody\r\n."); !strings.HasPrefix(r, "250") {
		t.Fatalf("end of data: %q", r)
	}
	var got []string
	for _, r := range ts.recv.env(1).Recipients {
		got = append(got, r.Addr)
	}
	if strings.Join(got, " ") != "joe@example.com keep@example.com" {
		t.Errorf("stored recipients %q", got)
	}
	lines := strings.Join(ts.log.waitFor(t, "MID 1 queued for delivery"), "\n")
	for _, want := range []string{
		"MID 1 ICID 1 RID 0 To: <joe@example.com>",
		"MID 1 ICID 1 invalid bounce, rcpt address <joe@example.com> rejected by bounce verification.",
		"MID 1 ICID 1 RID 1 To: <keep@example.com>",
		"MID 1 ICID 1 To: <evil@example.com> Rejected by address policy (multiple @)",
	} {
		if !strings.Contains(lines+"\n", want+"\n") {
			t.Errorf("log lacks %q:\n%s", want, lines)
		}
	}

	// Mail with a sender never reaches the hook.
	mu.Lock()
	before := len(seen)
	mu.Unlock()
	c.startTx("alice@example.com", "joe@example.com")
	c.cmd("RSET")
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != before {
		t.Errorf("hook called for non-bounce mail: %q", seen[before:])
	}
	if strings.Contains(strings.Join(seen, " "), "bad%x") {
		t.Error("hook saw a recipient refused by the address checks")
	}
}
