package main

import (
	"strings"
	"testing"
	"time"
)

func TestExplainDomain(t *testing.T) {
	for in, want := range map[string]string{
		"user@Example.COM":    "example.com",
		"example.com.":        "example.com",
		"a@b@sub.example.net": "sub.example.net",
		"plain.test":          "plain.test",
	} {
		if got, err := explainDomain(in); err != nil || got != want {
			t.Errorf("explainDomain(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"user@", "@", "user@[192.0.2.1]", "a..b", ".example.com", "ex ample.com", "host:25"} {
		if got, err := explainDomain(bad); err == nil {
			t.Errorf("explainDomain(%q) = %q, want an error", bad, got)
		}
	}
}

func TestRetrySchedule(t *testing.T) {
	for _, tc := range []struct {
		initial, max time.Duration
		want         string
	}{
		{time.Minute, time.Hour, "1m0s,2m0s,4m0s,8m0s,16m0s,32m0s,1h0m0s"},
		{time.Second, 2 * time.Second, "1s,2s"},
		{time.Hour, time.Hour, "1h0m0s"},
	} {
		if got := strings.Join(retrySchedule(tc.initial, tc.max), ","); got != tc.want {
			t.Errorf("retrySchedule(%v, %v) = %s, want %s", tc.initial, tc.max, got, tc.want)
		}
	}
}

func TestExplainUsageExit(t *testing.T) {
	var out, errb strings.Builder
	if code := run([]string{"explain"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "usage: outpost explain") {
		t.Errorf("no argument: exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"explain", "--nope", "x.test"}, &out, &errb); code != 2 {
		t.Errorf("unknown flag: exit %d", code)
	}
}
