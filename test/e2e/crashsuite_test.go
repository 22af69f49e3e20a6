package e2e

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/smtp"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// crashCycles is the number of kill -9 cycles of TestCrashSuiteKill9Cycles:
// OUTPOST_CRASH_CYCLES, default 60 (15 under -short). The full run is
// OUTPOST_CRASH_CYCLES=500: 3–5 minutes here, too long to add to every run
// of the e2e package under go test's default 10-minute timeout; its results
// are in docs/reliability.md.
func crashCycles(t *testing.T) int {
	n := 60
	if testing.Short() {
		n = 15
	}
	if v := os.Getenv("OUTPOST_CRASH_CYCLES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("OUTPOST_CRASH_CYCLES=%q: want a positive integer", v)
		}
	}
	return n
}

// burst sends up to n messages over reused connections until it has sent
// them or stop is set (the daemon was killed), and returns the Message-IDs
// that got 250 after DATA and the number of DATA attempts.
func burst(addr, prefix, to string, n int, stop *atomic.Bool) (accepted []string, attempted int) {
	sb := &submitter{addr: addr, from: "cycle@sender.test", to: to, prefix: prefix}
	for attempted < n && !stop.Load() {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			time.Sleep(2 * time.Millisecond)
			continue
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		c, err := smtp.NewClient(conn, "127.0.0.1")
		if err != nil {
			conn.Close()
			continue
		}
		if c.Hello("client.test") != nil {
			c.Close()
			continue
		}
		for attempted < n && !stop.Load() {
			sb.seq++
			id := fmt.Sprintf("<%s-%d@sender.test>", prefix, sb.seq)
			attempted++
			if !sb.sendOn(c, id) {
				break
			}
			accepted = append(accepted, id)
		}
		c.Close()
	}
	return accepted, attempted
}

// TestCrashSuiteKill9Cycles is the long form of
// TestCrashKill9DuringBurstLosesNothing: many short cycles, each a burst of
// 20–50 messages from 5 parallel clients while the backlog of earlier
// cycles is being delivered, SIGKILL at a random 5–150 ms into the burst,
// and a restart. At the end every message that got 250 must have reached
// the destination (0 lost) and the duplicates must not exceed one per crash
// (one delivery connection to the destination: max_concurrency 1), counted
// after every cycle as well as at the end.
func TestCrashSuiteKill9Cycles(t *testing.T) {
	cycles := crashCycles(t)
	const clients = 5
	w := newWorld(t, "127.0.0.90")
	rcv := w.addDomain(t, "cycles.test", "mx.cycles.test", "127.0.0.90", nil)
	dir := t.TempDir()
	w.d = startOutpost(t, dir, baseConfig(w, `destinations:
  default: {tls: preferred}
  cycles.test: {tls: preferred, max_concurrency: 1}
`))
	d := w.d
	begin := time.Now()
	dupCount := func() int {
		n := 0
		for _, c := range rcv.byMessageID() {
			n += c - 1
		}
		return n
	}

	var accepted []string
	attempted, backlogAtKill := 0, 0
	var delays []int
	for cycle := 0; cycle < cycles; cycle++ {
		size := 20 + rand.IntN(31)
		var stop atomic.Bool
		var wg sync.WaitGroup
		var mu sync.Mutex
		before := rcv.count()
		for i := 0; i < clients; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				acc, att := burst(d.smtp, fmt.Sprintf("cyc%d-c%d", cycle, i), fmt.Sprintf("rcpt%d@cycles.test", i), size/clients+boolInt(i < size%clients), &stop)
				mu.Lock()
				accepted = append(accepted, acc...)
				attempted += att
				mu.Unlock()
			}(i)
		}
		delay := 5 + rand.IntN(146)
		delays = append(delays, delay)
		time.Sleep(time.Duration(delay) * time.Millisecond)
		if rcv.count() > before {
			backlogAtKill++ // deliveries were running when the kill came
		}
		d.kill9()
		stop.Store(true)
		wg.Wait()
		if dups := dupCount(); dups > cycle+1 {
			t.Errorf("after %d crashes: %d duplicate arrivals, more than one per crash", cycle+1, dups)
		}
		d.start()
	}
	if len(accepted) == 0 {
		t.Fatal("no message got 250: the bursts never reached the daemon")
	}
	crashed := time.Since(begin)

	got, dups, extra, _, maxPer := waitAllArrived(t, d, rcv, accepted, 3*time.Minute)
	sort.Ints(delays)
	t.Logf("CRASH SUITE: %d cycles (kill -9 at %d–%d ms, median %d ms) in %v (+%v drain): %d DATA attempts, %d got 250, 0 lost, %d distinct delivered (%d stored without the client seeing 250), %d duplicate arrivals (%.3f per crash, most for one message %d); deliveries under way at %d of %d kills",
		cycles, delays[0], delays[len(delays)-1], delays[len(delays)/2], crashed.Round(time.Second), (time.Since(begin) - crashed).Round(time.Second),
		attempted, len(accepted), len(got), extra, dups, float64(dups)/float64(cycles), maxPer, backlogAtKill, cycles)
	if dups > cycles {
		t.Errorf("%d duplicate deliveries after %d crashes: more than one per crash", dups, cycles)
	}
	corrupt, err := os.ReadDir(filepath.Join(dir, "data", "spool", "corrupt"))
	if err != nil {
		t.Fatalf("spool/corrupt: %v", err)
	}
	if len(corrupt) > 0 {
		t.Errorf("%d records moved aside as corrupt after the crashes (a kill -9 never tears an accepted record)", len(corrupt))
	}
	if out, _ := d.cli("queue", "list"); !strings.Contains(out, "0 message(s)") {
		t.Errorf("queue not empty after every message was delivered:\n%s", out)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
