package configstore

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"outpost/internal/config"
	"outpost/internal/tlspolicy"
)

func setTLS(domain string, m tlspolicy.Mode) func(*config.Config) error {
	return func(c *config.Config) error {
		if c.Destinations == nil {
			c.Destinations = map[string]*config.Destination{}
		}
		mm := config.TLSMode(m)
		c.Destinations[domain] = &config.Destination{TLS: &mm}
		return nil
	}
}

func TestEditCommitHistoryRollback(t *testing.T) {
	dir := t.TempDir()
	live := filepath.Join(dir, "outpost.yaml")
	os.WriteFile(live, []byte("hostname: gw.test\n"), 0o600)
	s, err := Open(live, dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit("nothing", "alice", nil); !errors.Is(err, ErrNothingPending) {
		t.Fatalf("commit without pending: %v", err)
	}
	if err := s.Edit(setTLS("example.com", tlspolicy.RequiredVerify)); err != nil {
		t.Fatal(err)
	}
	d, _ := s.Diff()
	if !strings.Contains(d, "+   example.com:") || !strings.Contains(d, "tls: required-verify") {
		t.Fatalf("diff:\n%s", d)
	}
	// Nothing is live before the commit.
	if b, _ := os.ReadFile(live); strings.Contains(string(b), "example.com") {
		t.Fatal("edit reached the live file before commit")
	}
	var applied *config.Config
	c, err := s.Commit("require TLS for example.com", "alice", func(cfg *config.Config) error { applied = cfg; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if applied.Profile("example.com").TLS != tlspolicy.RequiredVerify || c.User != "alice" || c.ID != 2 {
		t.Fatalf("commit %+v applied %+v", c, applied.Profile("example.com"))
	}
	if s.HasPending() {
		t.Fatal("pending kept after commit")
	}
	// A failing apply leaves the old configuration live and the pending change in place.
	s.Edit(setTLS("example.com", tlspolicy.None))
	if _, err := s.Commit("break it", "bob", func(*config.Config) error { return errors.New("listener cannot bind") }); err == nil || !strings.Contains(err.Error(), "running configuration is unchanged") {
		t.Fatalf("failed apply: %v", err)
	}
	if b, _ := os.ReadFile(live); !strings.Contains(string(b), "required-verify") {
		t.Fatalf("live file changed by a failed commit:\n%s", b)
	}
	if !s.HasPending() {
		t.Fatal("pending lost by a failed commit")
	}
	if err := s.Clear(); err != nil || s.HasPending() {
		t.Fatal("clear")
	}
	// Invalid edits are refused and nothing is saved.
	err = s.Edit(func(c *config.Config) error {
		n := 5000
		c.Destinations["example.com"].MaxConcurrency = &n
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "max_concurrency 5000: want 1-1000") || s.HasPending() {
		t.Fatalf("invalid edit: %v", err)
	}
	h, _ := s.History()
	if len(h) != 2 || h[0].Comment != "configuration before the first commit" {
		t.Fatalf("history %+v", h)
	}
	// Roll back to the configuration before the first commit.
	rb, err := s.Rollback(0, "carol", func(cfg *config.Config) error { applied = cfg; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if rb.Rollback != 1 || applied.Profile("example.com").TLS != tlspolicy.Preferred {
		t.Fatalf("rollback %+v", rb)
	}
	if _, err := s.Rollback(99, "carol", nil); err == nil {
		t.Fatal("rollback to unknown commit")
	}
}

func TestRollbackDepth(t *testing.T) {
	dir := t.TempDir()
	s, _ := Open(filepath.Join(dir, "live.yaml"), dir)
	for i := 0; i < 13; i++ {
		n := i + 1
		s.Edit(func(c *config.Config) error { c.Delivery.MaxConnections = n; return nil })
		if _, err := s.Commit("c", "u", nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Rollback(1, "u", nil); err == nil || !strings.Contains(err.Error(), "older than the last 10") {
		t.Fatalf("deep rollback: %v", err)
	}
	if _, err := s.Rollback(5, "u", nil); err != nil {
		t.Fatal(err)
	}
}

func TestDiff(t *testing.T) {
	d := diff("a\nb\nc\nd\ne\nf\ng\n", "a\nb\nc\nX\ne\nf\ng\n")
	if d != "  b\n  c\n- d\n+ X\n  e\n  f\n" {
		t.Fatalf("diff:\n%q", d)
	}
}
