package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"outpost/internal/config"
)

func TestBounceconfigBatch(t *testing.T) {
	cfg := testConfig(t, "")
	out, e, c := runCmd(t, "bounceconfig", cfg, "", "new", "slow", "max_retries=5", "max_queue_lifetime=3600", "initial_retry=30",
		"max_retry_timeout=600", "send_bounces=no", "bounce_address=postmaster@example.net", "send_warnings=yes",
		"send_warnings_count=3", "send_warnings_interval=1800", "max_bounce_copy=20KB")
	if c != 0 {
		t.Fatal(e)
	}
	mustContain(t, out, commitReminder)
	_, eff := pending(t, cfg)
	b := eff.BounceProfile("slow")
	if b.MaxRetries != 5 || b.MaxQueueLifetime.D() != time.Hour || b.InitialRetry.D() != 30*time.Second || b.MaxRetryInterval.D() != 10*time.Minute ||
		*b.SendBounces || b.BounceAddress != "postmaster@example.net" || !b.DelayWarnings.Enabled || b.DelayWarnings.Count != 3 ||
		b.DelayWarnings.Interval.D() != 30*time.Minute || b.MaxBounceCopy != 20<<10 {
		t.Fatalf("slow: %+v %+v", b, b.DelayWarnings)
	}
	// Only some keys: the rest inherits from Default; delay warnings start from Default's.
	if _, e, c := runCmd(t, "bounceconfig", cfg, "", "new", "_quick", "max_retries=2", "send_warnings=yes"); c != 0 {
		t.Fatal(e)
	}
	if _, e, c := runCmd(t, "bounceconfig", cfg, "", "edit", "Default", "max_retries=50"); c != 0 {
		t.Fatal(e)
	}
	_, eff = pending(t, cfg)
	q := eff.BounceProfile("_quick")
	if q.MaxRetries != 2 || q.MaxQueueLifetime.D() != 72*time.Hour || !q.DelayWarnings.Enabled || q.DelayWarnings.Interval.D() != 4*time.Hour || q.DelayWarnings.Count != 1 {
		t.Fatalf("_quick: %+v %+v", q, q.DelayWarnings)
	}
	if eff.Bounce.MaxRetries != 50 {
		t.Fatal("edit Default")
	}
	if _, e, c := runCmd(t, "destconfig", cfg, "", "new", "a.test", "--bounce-profile", "slow"); c != 0 {
		t.Fatal(e)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"new", "9lives"}, 1, "The bounce profile name must start with a letter or underscore"},
		{[]string{"new", "slow"}, 1, "Profile name already in use"},
		{[]string{"new", "Default"}, 1, "Profile name already in use"},
		{[]string{"delete", "Default"}, 1, "The default profile may not be deleted"},
		{[]string{"delete", "slow"}, 1, `The profile "slow" is used by the destination(s) a.test`},
		{[]string{"delete", "nosuch"}, 1, `There is no bounce profile "nosuch".`},
		{[]string{"edit", "nosuch", "max_retries=1"}, 1, `no bounce profile "nosuch"`},
		{[]string{"edit", "slow", "max_retries=0"}, 1, "max_retries \"0\": want 1-10000"},
		{[]string{"edit", "slow", "initial_retry=abc"}, 1, "initial_retry \"abc\": want a number of seconds"},
		{[]string{"edit", "Default", "initial_retry=7200"}, 1, "bounce.max_retry_interval 1h0m0s is below bounce.initial_retry 2h0m0s"},
		{[]string{"edit", "slow", "send_bounces=perhaps"}, 1, `send_bounces "perhaps": want yes or no`},
		{[]string{"edit", "slow", "bounce_address=nobody"}, 1, "want an email address"},
		{[]string{"edit", "slow", "colour=blue"}, 2, `unknown key "colour"`},
		{[]string{"edit", "slow", "max_retries"}, 2, `"max_retries": want key=value`},
	} {
		_, e, c := runCmd(t, "bounceconfig", cfg, "", tc.args...)
		if c != tc.code || !strings.Contains(e, tc.want) {
			t.Errorf("%v: %d %q; want %d %q", tc.args, c, e, tc.code, tc.want)
		}
	}
	out, _, _ = runCmd(t, "bounceconfig", cfg, "", "list", "--json")
	var recs []bounceRecord
	if err := json.Unmarshal([]byte(out), &recs); err != nil || len(recs) != 3 || recs[0].Name != "Default" || recs[2].Name != "slow" || recs[2].MaxQueueLifetime != 3600 {
		t.Fatalf("list --json: %v %s", err, out)
	}
	runCmd(t, "destconfig", cfg, "", "delete", "a.test")
	if _, e, c := runCmd(t, "bounceconfig", cfg, "", "delete", "slow"); c != 0 {
		t.Fatal(e)
	}
	raw, _ := pending(t, cfg)
	if raw.BounceProfiles["slow"] != nil {
		t.Fatal("delete")
	}
}

func TestBounceconfigInteractive(t *testing.T) {
	cfg := testConfig(t, "")
	script := lines(
		"NEW", "1st", "Default", "retry_often",
		"0", "10", // retries
		"",          // queue time 259200
		"120",       // initial
		"60", "240", // max retry: below initial refused
		"y",                             // send bounces
		"y", "nobody", "pm@example.net", // alternate address
		"",                   // DSN copy
		"y", "600", "0", "2", // warnings
		"DELETE", "1", "2",
		"SETUP", "", "", "", "", "n", "n",
	)
	out, e, c := runCmd(t, "bounceconfig", cfg, script)
	if c != 0 {
		t.Fatal(e)
	}
	mustContain(t, out,
		"Current bounce profiles:\n1. Default\n",
		"- NEW - Create a new profile.",
		"The bounce profile name must start with a letter or underscore",
		"Profile name already in use",
		"Please enter the maximum number of retries. [100]>",
		"Please enter the maximum number of seconds a message may stay in the queue before being hard bounced. [259200]>",
		"Please enter the initial number of seconds to wait before retrying a message. [60]>",
		"The value must be between 1 and 10000.",
		"The value must be between 120 and 31536000.",
		"[10240]>",
		"The value must be between 1 and 100.",
		"The default profile may not be deleted",
		"Outpost's global bounce settings are those of the Default profile",
		commitReminder,
	)
	raw, eff := pending(t, cfg)
	if len(raw.BounceProfiles) != 0 {
		t.Fatalf("retry_often not deleted: %v", raw.BounceProfiles)
	}
	if *eff.Bounce.SendBounces || eff.Bounce.MaxRetries != 100 {
		t.Fatalf("SETUP: %+v", eff.Bounce)
	}
	// Before the delete, the profile held the answers: replay NEW alone.
	cfg2 := testConfig(t, "")
	runCmd(t, "bounceconfig", cfg2, strings.Join(strings.Split(script, "\n")[:19], "\n")+"\n")
	_, eff2 := pending(t, cfg2)
	b := eff2.BounceProfile("retry_often")
	want := config.Bounce{MaxRetries: 10, MaxQueueLifetime: config.Duration(72 * time.Hour), InitialRetry: config.Duration(2 * time.Minute),
		MaxRetryInterval: config.Duration(4 * time.Minute), BounceAddress: "pm@example.net", MaxBounceCopy: 10 << 10}
	if b.MaxRetries != want.MaxRetries || b.MaxQueueLifetime != want.MaxQueueLifetime || b.InitialRetry != want.InitialRetry ||
		b.MaxRetryInterval != want.MaxRetryInterval || b.BounceAddress != want.BounceAddress || b.MaxBounceCopy != want.MaxBounceCopy ||
		!*b.SendBounces || !b.DelayWarnings.Enabled || b.DelayWarnings.Interval.D() != 10*time.Minute || b.DelayWarnings.Count != 2 {
		t.Fatalf("retry_often: %+v %+v", b, b.DelayWarnings)
	}
}
