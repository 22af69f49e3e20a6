package qmgr

import (
	"testing"
	"time"
)

// TestSchedule checks the retry schedule against the appliance's worked
// examples (bounce profiles, UG 9.1 p.24-39) on an explicit clock.
func TestSchedule(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	type step struct {
		failAt  int // seconds after arrival the attempt failed
		next    int // expected next attempt, seconds after arrival; -1: bounce
		attempt int
	}
	for _, tc := range []struct {
		name  string
		p     Profile
		steps []step
	}{
		{"max retries 2, max interval 60: attempts at 0, 60, 120, then bounce",
			Profile{InitialRetry: 60 * time.Second, MaxRetryInterval: 60 * time.Second, MaxQueueLifetime: 72 * time.Hour, MaxRetries: 2},
			[]step{{0, 60, 1}, {60, 120, 2}, {120, -1, 3}}},
		{"max time in queue 100 s: the attempt due at 120 is brought to 100, then bounce",
			Profile{InitialRetry: 60 * time.Second, MaxRetryInterval: 60 * time.Second, MaxQueueLifetime: 100 * time.Second, MaxRetries: 100},
			[]step{{0, 60, 1}, {60, 100, 2}, {100, -1, 3}}},
		{"defaults: 60 s doubling up to 3600 s",
			Profile{InitialRetry: 60 * time.Second, MaxRetryInterval: 3600 * time.Second, MaxQueueLifetime: 72 * time.Hour, MaxRetries: 100},
			[]step{{0, 60, 1}, {60, 180, 2}, {180, 420, 3}, {420, 900, 4}, {900, 1860, 5}, {1860, 3780, 6}, {3780, 7380, 7}, {7380, 10980, 8}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, st := range tc.steps {
				next, expired := schedule(tc.p, t0, at(st.failAt), st.attempt)
				if st.next < 0 {
					if !expired {
						t.Fatalf("attempt %d at %ds: next %v, want a bounce", st.attempt, st.failAt, next.Sub(t0))
					}
					continue
				}
				if expired || !next.Equal(at(st.next)) {
					t.Fatalf("attempt %d at %ds: next %v expired %v, want %ds", st.attempt, st.failAt, next.Sub(t0), expired, st.next)
				}
			}
		})
	}
}
