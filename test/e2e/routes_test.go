package e2e

import (
	"fmt"
	"net/smtp"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// SMTP routes end to end: priorities and failover, round robin of equal
// priorities per connection, no MX fallback when every route host fails,
// .subdomain and ALL matching, USEDNS, /dev/null, the MTA-STS note, and a
// route host's own port. Receivers live on 127.0.0.40-127.0.0.59.

// submitTo sends one message to the daemon with net/smtp; every recipient
// must be accepted.
func submitTo(t *testing.T, d *daemon, from string, to ...string) {
	t.Helper()
	body := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: test %d\r\n\r\nhello\r\n", from, to[0], time.Now().UnixNano())
	if err := smtp.SendMail(d.smtp, nil, from, to, []byte(body)); err != nil {
		t.Fatalf("submit %s -> %v: %v", from, to, err)
	}
}

// logOnFailure prints the daemon's mail log when the test has failed.
func logOnFailure(t *testing.T, d *daemon) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("mail log:\n%s", d.mailLog())
		}
	})
}

// rcptsOf lists the recipients of every message a probe received.
func rcptsOf(p *probe) []string {
	msgs, _, _ := p.stats()
	var out []string
	for _, m := range msgs {
		out = append(out, m.Rcpts...)
	}
	return out
}

// queueHas reports whether `outpost queue list` shows addr.
func queueHas(t *testing.T, d *daemon, addr string) (bool, string) {
	t.Helper()
	out, err := d.cli("queue", "list")
	if err != nil {
		t.Fatalf("queue list: %v\n%s", err, out)
	}
	return strings.Contains(out, addr), out
}

func TestRoutePriorityAndFailover(t *testing.T) {
	w := newWorld(t, "127.0.0.40", "127.0.0.41")
	w.z.addA("relay1.partner.test", "127.0.0.40")
	w.z.addA("relay2.partner.test", "127.0.0.41")
	primary := newProbe(t, fmt.Sprintf("127.0.0.40:%d", w.port), 0)
	backup := newProbe(t, fmt.Sprintf("127.0.0.41:%d", w.port), 0)
	// The backup is listed first: the order of hosts is by priority, not
	// by position.
	w.d = startOutpost(t, t.TempDir(), baseConfig(w, `smtp_routes:
  partner.test:
    hosts:
      - {host: relay2.partner.test, priority: 10}
      - {host: relay1.partner.test, priority: 0}
destinations:
  partner.test: {max_messages_per_connection: 1}
`))
	logOnFailure(t, w.d)
	for i := 0; i < 4; i++ {
		submitTo(t, w.d, "a@sender.test", fmt.Sprintf("u%d@partner.test", i))
	}
	primary.waitCount(t, 4, 20*time.Second)
	time.Sleep(300 * time.Millisecond)
	if n := backup.count(); n != 0 {
		t.Fatalf("priority 10 host got %d message(s) while the priority 0 host was up", n)
	}

	// Failover: the primary goes away (nothing listens any more).
	primary.close()
	// Let an idle connection to the primary be noticed as gone.
	time.Sleep(2500 * time.Millisecond)
	submitTo(t, w.d, "a@sender.test", "late@partner.test")
	backup.waitCount(t, 1, 20*time.Second)
	if got := rcptsOf(backup); len(got) != 1 || got[0] != "late@partner.test" {
		t.Fatalf("backup received %v", got)
	}
	w.d.waitLog(`^Info: Message finished MID \d+ done$`, 10*time.Second)
	if ok, out := queueHas(t, w.d, "late@partner.test"); ok {
		t.Fatalf("message still queued after failover:\n%s", out)
	}
}

func TestRouteRoundRobinEqualPriority(t *testing.T) {
	w := newWorld(t, "127.0.0.42", "127.0.0.43")
	w.z.addA("a.rr.test", "127.0.0.42")
	w.z.addA("b.rr.test", "127.0.0.43")
	pa := newProbe(t, fmt.Sprintf("127.0.0.42:%d", w.port), 50*time.Millisecond)
	pb := newProbe(t, fmt.Sprintf("127.0.0.43:%d", w.port), 50*time.Millisecond)
	w.d = startOutpost(t, t.TempDir(), baseConfig(w, `smtp_routes:
  rr.test:
    hosts:
      - {host: a.rr.test, priority: 5}
      - {host: b.rr.test, priority: 5}
destinations:
  rr.test: {max_messages_per_connection: 1}
`))
	logOnFailure(t, w.d)
	const n = 8
	for i := 0; i < n; i++ {
		submitTo(t, w.d, "a@sender.test", fmt.Sprintf("u%d@rr.test", i))
	}
	deadline := time.Now().Add(30 * time.Second)
	for pa.count()+pb.count() < n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	_, ca, _ := pa.stats()
	_, cb, _ := pb.stats()
	if pa.count()+pb.count() != n {
		t.Fatalf("delivered %d+%d of %d", pa.count(), pb.count(), n)
	}
	if pa.count() == 0 || pb.count() == 0 {
		t.Fatalf("equal-priority hosts did not share the mail: a.rr.test %d, b.rr.test %d", pa.count(), pb.count())
	}
	// One message per connection: each connection is a new plan, and the
	// rotation gives each host half of them.
	if len(ca)+len(cb) < n {
		t.Fatalf("%d connections for %d messages with max_messages_per_connection 1", len(ca)+len(cb), n)
	}
	if d := pa.count() - pb.count(); d > 2 || d < -2 {
		t.Errorf("round robin uneven: a.rr.test %d, b.rr.test %d", pa.count(), pb.count())
	}
}

func TestRouteAllHostsDownWaitsWithoutMXFallback(t *testing.T) {
	w := newWorld(t, "127.0.0.44", "127.0.0.45", "127.0.0.46")
	// Route hosts where nothing listens.
	w.z.addA("dead1.stuck.test", "127.0.0.44")
	w.z.addA("dead2.stuck.test", "127.0.0.45")
	// The domain's own MX is up, and must not be used.
	w.z.addMX("stuck.test", 10, "mx.stuck.test")
	w.z.addA("mx.stuck.test", "127.0.0.46")
	mx := newProbe(t, fmt.Sprintf("127.0.0.46:%d", w.port), 0)
	w.d = startOutpost(t, t.TempDir(), baseConfig(w, `smtp_routes:
  stuck.test:
    hosts:
      - {host: dead1.stuck.test, priority: 0}
      - {host: dead2.stuck.test, priority: 1}
`))
	logOnFailure(t, w.d)
	submitTo(t, w.d, "a@sender.test", "u@stuck.test")
	w.d.waitLog(`^Info: Delayed: DCID \d+ MID \d+ From: <a@sender\.test> To: <u@stuck\.test> RID 0 - 4\.`, 15*time.Second)
	// Both route hosts were tried, in priority order.
	w.d.waitLog(`^Info: Connection Error: DCID: \d+ IP: 127\.0\.0\.44 `, 5*time.Second)
	w.d.waitLog(`^Info: Connection Error: DCID: \d+ IP: 127\.0\.0\.45 `, 5*time.Second)
	// Several retries (initial_retry 1s, max 2s) later: still waiting.
	time.Sleep(4 * time.Second)
	if n := mx.count(); n != 0 {
		t.Fatalf("the domain's MX got %d message(s): a routed domain must not fall back to MX", n)
	}
	_, conns, _ := mx.stats()
	if len(conns) != 0 {
		t.Fatalf("the domain's MX was connected to %d time(s)", len(conns))
	}
	if strings.Contains(w.d.mailLog(), "Bounced:") {
		t.Fatalf("route failure bounced:\n%s", w.d.mailLog())
	}
	if strings.Contains(w.d.mailLog(), "Q(stuck.test, 'MX')") {
		t.Errorf("MX of a routed domain was looked up:\n%s", w.d.mailLog())
	}
	if ok, out := queueHas(t, w.d, "u@stuck.test"); !ok || !strings.Contains(out, "deferred") {
		t.Fatalf("message not waiting in the queue:\n%s", out)
	}
	if n := len(regexp.MustCompile(`(?m)Delayed: .*To: <u@stuck\.test>`).FindAllString(w.d.mailLog(), -1)); n < 2 {
		t.Errorf("expected retries, saw %d Delayed line(s)", n)
	}
}

// TestRouteSubdomainAllUseDNSAndPort: ".sub.test" takes every subdomain
// (not sub.test itself), "ALL" takes every other domain, "usedns: true"
// delivers by MX despite ALL, and a route host's port overrides
// delivery.port.
func TestRouteSubdomainAllUseDNSAndPort(t *testing.T) {
	w := newWorld(t, "127.0.0.47", "127.0.0.48", "127.0.0.49", "127.0.0.50")
	altPort := freePortOn(t, "127.0.0.50")
	w.z.addA("relay.sub.test", "127.0.0.47")
	subRelay := newProbe(t, fmt.Sprintf("127.0.0.47:%d", w.port), 0)
	w.z.addA("smarthost.test", "127.0.0.48")
	smart := newProbe(t, fmt.Sprintf("127.0.0.48:%d", w.port), 0)
	// sub.test itself and direct.test deliver by MX.
	w.z.addMX("sub.test", 10, "mx.direct.test")
	w.z.addMX("direct.test", 10, "mx.direct.test")
	w.z.addA("mx.direct.test", "127.0.0.49")
	direct := newProbe(t, fmt.Sprintf("127.0.0.49:%d", w.port), 0)
	// port.test goes to an IP literal on its own port; nothing listens on
	// delivery.port there.
	portRelay := newProbe(t, fmt.Sprintf("127.0.0.50:%d", altPort), 0)
	w.d = startOutpost(t, t.TempDir(), baseConfig(w, fmt.Sprintf(`smtp_routes:
  .sub.test:
    hosts: [{host: relay.sub.test}]
  ALL:
    hosts: [{host: smarthost.test}]
  direct.test: {usedns: true}
  sub.test: {usedns: true}
  port.test:
    hosts: [{host: 127.0.0.50, port: %d}]
`, altPort)))
	logOnFailure(t, w.d)
	submitTo(t, w.d, "a@sender.test", "u@a.sub.test")
	submitTo(t, w.d, "a@sender.test", "u@deep.b.sub.test")
	submitTo(t, w.d, "a@sender.test", "u@sub.test")
	submitTo(t, w.d, "a@sender.test", "u@direct.test")
	submitTo(t, w.d, "a@sender.test", "u@anywhere.test") // no DNS at all: ALL route
	submitTo(t, w.d, "a@sender.test", "u@port.test")
	subRelay.waitCount(t, 2, 20*time.Second)
	direct.waitCount(t, 2, 20*time.Second)
	smart.waitCount(t, 1, 20*time.Second)
	portRelay.waitCount(t, 1, 20*time.Second)
	time.Sleep(300 * time.Millisecond)
	check := func(name string, p *probe, want ...string) {
		t.Helper()
		got := rcptsOf(p)
		if strings.Join(sortedCopy(got), ",") != strings.Join(sortedCopy(want), ",") {
			t.Errorf("%s received %v, want %v", name, got, want)
		}
	}
	check(".sub.test relay", subRelay, "u@a.sub.test", "u@deep.b.sub.test")
	check("MX of direct.test/sub.test", direct, "u@sub.test", "u@direct.test")
	check("ALL smarthost", smart, "u@anywhere.test")
	check("port.test route host", portRelay, "u@port.test")
	w.d.waitLog(fmt.Sprintf(`^Info: New SMTP DCID \d+ interface \S+ address 127\.0\.0\.50 port %d$`, altPort), 5*time.Second)
	// USEDNS looked up the MX; the ALL-routed domain did not.
	w.d.waitLog(`^Debug: DNS query: Q\(direct\.test, 'MX'\)$`, 5*time.Second)
	if w.d.hasLine("Debug: DNS query: Q(anywhere.test, 'MX')") {
		t.Error("ALL-routed domain had its MX looked up")
	}
}

func TestRouteDiscardDropsAndLogs(t *testing.T) {
	w := newWorld(t, "127.0.0.51")
	w.z.addMX("junk.test", 10, "mx.junk.test")
	w.z.addA("mx.junk.test", "127.0.0.51")
	mx := newProbe(t, fmt.Sprintf("127.0.0.51:%d", w.port), 0)
	w.d = startOutpost(t, t.TempDir(), baseConfig(w, `smtp_routes:
  junk.test: {discard: true}
`))
	logOnFailure(t, w.d)
	submitTo(t, w.d, "a@sender.test", "x@junk.test", "y@junk.test")
	line := w.d.waitLog(`^Info: MID \d+ to RID \[0, 1\] discarded: SMTP route /dev/null for junk\.test$`, 15*time.Second)
	var mid int
	fmt.Sscanf(line, "Info: MID %d", &mid)
	w.d.waitLog(fmt.Sprintf(`^Info: Message finished MID %d done$`, mid), 10*time.Second)
	time.Sleep(500 * time.Millisecond)
	if n := mx.count(); n != 0 {
		t.Fatalf("discarded mail reached the MX (%d)", n)
	}
	if _, conns, _ := mx.stats(); len(conns) != 0 {
		t.Fatalf("a connection was made for a /dev/null route")
	}
	if strings.Contains(w.d.mailLog(), "Bounced:") {
		t.Fatalf("discard bounced:\n%s", w.d.mailLog())
	}
	if ok, out := queueHas(t, w.d, "junk.test"); ok {
		t.Fatalf("discarded message still queued:\n%s", out)
	}
}

func TestRouteMTASTSNotEnforcedLogged(t *testing.T) {
	w := newWorld(t, "127.0.0.52")
	w.z.addA("relay.routed.test", "127.0.0.52")
	relay := newProbe(t, fmt.Sprintf("127.0.0.52:%d", w.port), 0)
	w.d = startOutpost(t, t.TempDir(), baseConfig(w, `destinations:
  routed.test: {mta_sts: true}
smtp_routes:
  routed.test:
    hosts: [{host: relay.routed.test}]
`))
	logOnFailure(t, w.d)
	submitTo(t, w.d, "a@sender.test", "u@routed.test")
	relay.waitCount(t, 1, 20*time.Second)
	w.d.waitLog(`^Info: MTA-STS is not enforced for domains that have SMTP Routes configured$`, 5*time.Second)
	// No policy discovery for the routed domain.
	if strings.Contains(w.d.mailLog(), "_mta-sts.routed.test") {
		t.Errorf("MTA-STS policy of a routed domain was looked up:\n%s", w.d.mailLog())
	}
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

// TestRouteKeysCaseInsensitive: domain names are case-insensitive, so a
// route or profile written with capitals (or a trailing dot) applies.
func TestRouteKeysCaseInsensitive(t *testing.T) {
	w := newWorld(t, "127.0.0.53")
	w.z.addA("relay.case.test", "127.0.0.53")
	relay := newProbe(t, fmt.Sprintf("127.0.0.53:%d", w.port), 0)
	w.d = startOutpost(t, t.TempDir(), baseConfig(w, `destinations:
  Routed.Case.TEST: {mta_sts: true}
smtp_routes:
  Routed.Case.TEST:
    hosts: [{host: relay.case.test}]
  .Sub.Case.Test.: {discard: true}
`))
	logOnFailure(t, w.d)
	submitTo(t, w.d, "a@sender.test", "u@routed.case.test")
	submitTo(t, w.d, "a@sender.test", "u@x.sub.case.test")
	relay.waitCount(t, 1, 20*time.Second)
	// The profile applied too: its mta_sts switch is what the note reports.
	w.d.waitLog(`^Info: MTA-STS is not enforced for domains that have SMTP Routes configured$`, 5*time.Second)
	w.d.waitLog(`^Info: MID \d+ to RID \[0\] discarded: SMTP route /dev/null for x\.sub\.case\.test$`, 10*time.Second)
}
