package e2e

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/smtp"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var messageIDRE = regexp.MustCompile(`(?im)^Message-ID:\s*(<[^>\r\n]+>)`)

// byMessageID counts the messages the sink received per Message-ID header.
func (s *sink) byMessageID() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for _, m := range s.msgs {
		if g := messageIDRE.FindStringSubmatch(m.Data); g != nil {
			out[g[1]]++
		}
	}
	return out
}

// submitter is one SMTP client that keeps submitting messages, over reused
// connections, until stop is set. It records the Message-IDs that got 250
// after DATA.
type submitter struct {
	addr, from, to string
	prefix         string
	seq            int
	accepted       []string // got 250 after DATA
	attempted      int
}

func (sb *submitter) run(stop *atomic.Bool) {
	for !stop.Load() {
		conn, err := net.DialTimeout("tcp", sb.addr, 2*time.Second)
		if err != nil {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		c, err := smtp.NewClient(conn, "127.0.0.1")
		if err != nil {
			conn.Close()
			continue
		}
		if err := c.Hello("client.test"); err != nil {
			c.Close()
			continue
		}
		for i := 0; i < 5 && !stop.Load(); i++ {
			sb.seq++
			id := fmt.Sprintf("<%s-%d@sender.test>", sb.prefix, sb.seq)
			sb.attempted++
			if !sb.sendOn(c, id) {
				break
			}
			sb.accepted = append(sb.accepted, id)
		}
		c.Close()
	}
}

func (sb *submitter) sendOn(c *smtp.Client, id string) bool {
	if err := c.Mail(sb.from); err != nil {
		return false
	}
	if err := c.Rcpt(sb.to); err != nil {
		return false
	}
	w, err := c.Data()
	if err != nil {
		return false
	}
	fmt.Fprintf(w, "Message-ID: %s\r\nFrom: <%s>\r\nTo: <%s>\r\nSubject: crash burst %s\r\n\r\n%s\r\n",
		id, sb.from, sb.to, id, strings.Repeat("crash-safety body line\r\n", 20))
	// Close sends <CRLF>.<CRLF> and reads the reply: nil only for 250.
	return w.Close() == nil
}

// TestCrashKill9DuringBurstLosesNothing kills the daemon with SIGKILL at a
// random moment of a burst of parallel submissions, several times, and then
// checks that every message that got 250 after DATA reached the destination,
// with at most one duplicate per crash, and that nothing was moved aside as
// corrupt.
func TestCrashKill9DuringBurstLosesNothing(t *testing.T) {
	const (
		rounds  = 8
		clients = 10
	)
	w := newWorld(t, "127.0.0.8")
	rcv := w.addDomain(t, "crash.test", "mx.crash.test", "127.0.0.8", nil)
	dir := t.TempDir()
	// The unavoidable duplicate window is per delivery in flight (between
	// the destination's 250 and our journal write), so with one delivery
	// connection to the destination a crash can cause at most one duplicate.
	w.d = startOutpost(t, dir, baseConfig(w, `destinations:
  default: {tls: preferred}
  crash.test: {tls: preferred, max_concurrency: 1}
`))
	d := w.d
	begin := time.Now()

	var accepted []string
	attempted := 0
	for round := 0; round < rounds; round++ {
		var stop atomic.Bool
		var wg sync.WaitGroup
		subs := make([]*submitter, clients)
		for i := range subs {
			subs[i] = &submitter{addr: d.smtp, from: "burst@sender.test", to: fmt.Sprintf("rcpt%d@crash.test", i),
				prefix: fmt.Sprintf("crash-r%d-c%d", round, i)}
			wg.Add(1)
			go func(sb *submitter) { defer wg.Done(); sb.run(&stop) }(subs[i])
		}
		time.Sleep(time.Duration(10+rand.IntN(291)) * time.Millisecond)
		d.kill9()
		stop.Store(true)
		wg.Wait()
		crashDups := 0
		for _, n := range rcv.byMessageID() {
			crashDups += n - 1
		}
		n := 0
		for _, sb := range subs {
			accepted = append(accepted, sb.accepted...)
			attempted += sb.attempted
			n += len(sb.accepted)
		}
		t.Logf("round %d: killed after %d messages got 250; %d arrivals so far, %d of them duplicates", round, n, rcv.count(), crashDups)
		d.start()
	}
	if len(accepted) == 0 {
		t.Fatal("no message got 250: the burst never reached the daemon")
	}

	// Every message that got 250 must arrive; wait (bounded) for the queue to drain.
	got, dups, extra, worst, maxPer := waitAllArrived(t, d, rcv, accepted, 60*time.Second)
	if maxPer > rounds {
		t.Errorf("%s arrived %d times: more than one duplicate per crash", worst, maxPer+1)
	}
	t.Logf("%d rounds in %v: %d submissions tried, %d got 250, %d distinct delivered (%d without a 250 seen), %d duplicate arrivals",
		rounds, time.Since(begin).Round(time.Millisecond), attempted, len(accepted), len(got), extra, dups)
	if dups > rounds {
		t.Errorf("%d duplicate deliveries after %d crashes: more than one per crash", dups, rounds)
	}

	corrupt, err := os.ReadDir(filepath.Join(dir, "data", "spool", "corrupt"))
	if err != nil {
		t.Fatalf("spool/corrupt: %v", err)
	}
	if len(corrupt) > 0 {
		var names []string
		for _, e := range corrupt {
			names = append(names, e.Name())
		}
		t.Errorf("records moved aside as corrupt after the crashes: %v\nstderr:\n%s", names, d.stderr)
	}
	if out, _ := d.cli("queue", "list"); !strings.Contains(out, "0 message(s)") {
		t.Errorf("queue not empty after every message was delivered:\n%s", out)
	}
}

// waitAllArrived waits (at most timeout) until every message that got 250
// has arrived at rcv, failing the test with the missing ones if not; then
// it lets late retries land and counts the arrivals: duplicates in all,
// messages stored without the client seeing 250 (allowed), and the most
// duplicated message with its duplicate count.
func waitAllArrived(t *testing.T, d *daemon, rcv *sink, accepted []string, timeout time.Duration) (got map[string]int, dups, extra int, worst string, maxPer int) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var missing []string
	for {
		got = rcv.byMessageID()
		missing = missing[:0]
		for _, id := range accepted {
			if got[id] == 0 {
				missing = append(missing, id)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		q, _ := d.cli("queue", "list")
		t.Fatalf("%d of %d messages that got 250 were lost, e.g. %v\nqueue:\n%s", len(missing), len(accepted), missing[:min(10, len(missing))], q)
	}
	time.Sleep(2 * time.Second) // late retries (duplicates)
	got = rcv.byMessageID()
	acc := make(map[string]bool, len(accepted))
	for _, id := range accepted {
		acc[id] = true
	}
	for id, n := range got {
		dups += n - 1
		if n-1 > maxPer {
			worst, maxPer = id, n-1
		}
		if !acc[id] {
			extra++
		}
	}
	return got, dups, extra, worst, maxPer
}
