package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Destination Control limits observed at real receivers, and bounce
// profile schedules. Receivers live on 127.0.0.60-127.0.0.69.

func TestLimitMaxConcurrency(t *testing.T) {
	w := newWorld(t, "127.0.0.60")
	w.z.addMX("conc.test", 10, "mx.conc.test")
	w.z.addA("mx.conc.test", "127.0.0.60")
	// Each DATA is held 200 ms, so ready messages pile up and the queue
	// wants more connections than it may have.
	p := newProbe(t, fmt.Sprintf("127.0.0.60:%d", w.port), 200*time.Millisecond)
	w.d = startOutpost(t, t.TempDir(), baseConfig(w, `destinations:
  conc.test: {max_concurrency: 2}
`))
	logOnFailure(t, w.d)
	const n = 20
	for i := 0; i < n; i++ {
		submitTo(t, w.d, "a@sender.test", fmt.Sprintf("u%d@conc.test", i))
	}
	p.waitCount(t, n, 60*time.Second)
	_, conns, maxActive := p.stats()
	if maxActive > 2 {
		t.Fatalf("%d simultaneous connections with max_concurrency 2", maxActive)
	}
	if maxActive < 2 {
		t.Errorf("never more than %d connection at once: 20 held messages should use both allowed connections", maxActive)
	}
	t.Logf("%d messages over %d connections, at most %d at once", n, len(conns), maxActive)
}

func TestLimitMessagesPerConnection(t *testing.T) {
	w := newWorld(t, "127.0.0.61")
	w.z.addMX("mpc.test", 10, "mx.mpc.test")
	w.z.addA("mx.mpc.test", "127.0.0.61")
	p := newProbe(t, fmt.Sprintf("127.0.0.61:%d", w.port), 100*time.Millisecond)
	// One connection at a time, so messages queue behind it and would be
	// carried on it if nothing made a new connection.
	w.d = startOutpost(t, t.TempDir(), baseConfig(w, `destinations:
  mpc.test: {max_concurrency: 1, max_messages_per_connection: 3}
`))
	logOnFailure(t, w.d)
	const n = 10
	for i := 0; i < n; i++ {
		submitTo(t, w.d, "a@sender.test", fmt.Sprintf("u%d@mpc.test", i))
	}
	p.waitCount(t, n, 60*time.Second)
	time.Sleep(200 * time.Millisecond)
	_, conns, maxActive := p.stats()
	most, total := 0, 0
	for _, c := range conns {
		if c.Msgs > 3 {
			t.Errorf("a connection carried %d messages with max_messages_per_connection 3", c.Msgs)
		}
		most = max(most, c.Msgs)
		total += c.Msgs
	}
	if total != n {
		t.Fatalf("%d messages over the connections, want %d", total, n)
	}
	if most != 3 {
		t.Errorf("no connection was reused up to the limit (most %d per connection)", most)
	}
	if len(conns) < 4 {
		t.Errorf("%d connections for %d messages at 3 per connection", len(conns), n)
	}
	if maxActive > 1 {
		t.Errorf("%d simultaneous connections with max_concurrency 1", maxActive)
	}
}

func TestLimitRecipientRateHoldsBack(t *testing.T) {
	w := newWorld(t, "127.0.0.62")
	w.z.addMX("rate.test", 10, "mx.rate.test")
	w.z.addA("mx.rate.test", "127.0.0.62")
	p := newProbe(t, fmt.Sprintf("127.0.0.62:%d", w.port), 0)
	w.d = startOutpost(t, t.TempDir(), baseConfig(w, `destinations:
  rate.test: {recipient_limit: {count: 5, minutes: 1}}
`))
	logOnFailure(t, w.d)
	var all []string
	for m, k := range []int{4, 4, 3} {
		var to []string
		for i := 0; i < k; i++ {
			to = append(to, fmt.Sprintf("m%dr%d@rate.test", m, i))
		}
		all = append(all, to...)
		submitTo(t, w.d, "a@sender.test", to...)
	}
	w.d.waitLog(`^Info: MID \d+ to RID \[[\d, ]+\] held: recipient limit of 5 per 1m0s reached for rate\.test, next attempt .+$`, 15*time.Second)
	// A few seconds in (the window is a minute): exactly 5 were sent.
	time.Sleep(3 * time.Second)
	got := rcptsOf(p)
	if len(got) != 5 {
		t.Fatalf("%d recipients delivered within the first window, want 5: %v", len(got), got)
	}
	log := w.d.mailLog()
	if strings.Contains(log, "Bounced:") {
		t.Fatalf("held recipients were bounced:\n%s", log)
	}
	// The 6 over the limit were held (never attempted, never bounced).
	heldRE := regexp.MustCompile(`(?m)MID \d+ to RID \[([\d, ]+)\] held: recipient limit`)
	held := 0
	for _, m := range heldRE.FindAllStringSubmatch(log, -1) {
		held += len(strings.Split(m[1], ","))
	}
	if held != len(all)-5 {
		t.Errorf("%d recipients logged as held, want %d:\n%s", held, len(all)-5, log)
	}
	out, err := w.d.cli("queue", "list")
	if err != nil {
		t.Fatalf("queue list: %v\n%s", err, out)
	}
	delivered := map[string]bool{}
	for _, r := range got {
		delivered[r] = true
	}
	for _, r := range all {
		if !delivered[r] && !strings.Contains(out, r) {
			t.Errorf("held recipient %s not in the queue:\n%s", r, out)
		}
	}
	if !strings.Contains(out, "deferred") {
		t.Errorf("held recipients not shown as deferred:\n%s", out)
	}
}

// TestLimitsBounceProfileSchedule: a destination on a named bounce profile
// (retry 1s..2s, 5 s in queue) bounces with 5.4.7 and a DSN after about
// 5 s, while a destination on the default profile (72 h) keeps waiting.
func TestLimitsBounceProfileSchedule(t *testing.T) {
	w := newWorld(t, "127.0.0.63", "127.0.0.64")
	senderBox := w.addDomain(t, "sender.test", "mx.sender.test", "127.0.0.63", nil)
	// Both destinations point at a host where nothing listens.
	w.z.addMX("fast.test", 10, "mx.dead.test")
	w.z.addMX("slow.test", 10, "mx.dead.test")
	w.z.addA("mx.dead.test", "127.0.0.64")
	w.d = startOutpost(t, t.TempDir(), baseConfig(w, `bounce_profiles:
  quick: {initial_retry: 1s, max_retry_interval: 2s, max_queue_lifetime: 5s}
destinations:
  fast.test: {bounce_profile: quick}
`))
	logOnFailure(t, w.d)
	start := time.Now()
	submitTo(t, w.d, "alice@sender.test", "u@fast.test")
	submitTo(t, w.d, "alice@sender.test", "u@slow.test")
	w.d.waitLog(`^Info: MID \d+ to RID \[0\] pending till .+ \[quick\]$`, 10*time.Second)
	w.d.waitLog(`^Info: MID \d+ to RID \[0\] pending till .+ \[Default\]$`, 10*time.Second)
	dsn := senderBox.wait(t, 30*time.Second)
	took := time.Since(start)
	if dsn.From != "" || len(dsn.Rcpts) != 1 || dsn.Rcpts[0] != "alice@sender.test" {
		t.Fatalf("DSN envelope %+v", dsn)
	}
	for _, want := range []string{"Action: failed", "Status: 5.4.7", "Final-Recipient: rfc822; u@fast.test"} {
		if !strings.Contains(dsn.Data, want) {
			t.Errorf("DSN lacks %q:\n%s", want, dsn.Data)
		}
	}
	if strings.Contains(dsn.Data, "u@slow.test") {
		t.Errorf("DSN names the default-profile recipient:\n%s", dsn.Data)
	}
	if took < 5*time.Second || took > 20*time.Second {
		t.Errorf("bounced after %v, want about 5 s (max_queue_lifetime 5s, retries up to 2 s apart)", took.Round(100*time.Millisecond))
	}
	w.d.waitLog(`^Info: Bounced: DCID \d+ MID \d+ From: <alice@sender\.test> To: <u@fast\.test> RID 0 - 5\.4\.7 - `, 5*time.Second)
	if strings.Contains(w.d.mailLog(), "To: <u@slow.test> RID 0 - 5.") {
		t.Fatalf("the default-profile destination bounced:\n%s", w.d.mailLog())
	}
	out, err := w.d.cli("queue", "list")
	if err != nil || !strings.Contains(out, "u@slow.test") || strings.Contains(out, "u@fast.test") {
		t.Fatalf("queue after the quick bounce: %v\n%s", err, out)
	}
}
