package e2e

// Load tests (issue 7 item 5), loopback only, bounded in count and time:
//
//   - TestLoadConcurrentSessions: 2 000 inbound sessions open at once, each
//     sends one message; every one gets 250 and every one is delivered.
//   - TestLoadBacklogNoStarvation: a backlog to a dead destination
//     (connection refused) of OUTPOST_LOAD_BACKLOG messages (default
//     20 000; the full run uses 100 000) while 200 messages to a live
//     destination are delivered; the live timing is compared with the same
//     200 sent before the backlog existed (logged as a ratio, not asserted),
//     and the daemon's RSS is logged at 10 000 queued and at the full
//     backlog.
//   - TestLoadSlowloris: 500 clients trickle bytes; with idle_timeout 2s
//     and session_timeout 10s each is cut off, and a normal client still
//     gets its message accepted promptly while they hang.
//
// The daemon here is built without -race (the other e2e tests use a race
// build), so memory and timing figures are those of a release binary.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

var (
	loadBinOnce sync.Once
	loadBin     string
	loadBinErr  error
)

// releaseBinary builds cmd/outpost without the race detector, once.
func releaseBinary(t *testing.T) string {
	t.Helper()
	loadBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "outpost-load-bin")
		if err != nil {
			loadBinErr = err
			return
		}
		loadBin = filepath.Join(dir, "outpost")
		out, err := exec.Command("go", "build", "-o", loadBin, "../../cmd/outpost").CombinedOutput()
		if err != nil {
			loadBinErr = fmt.Errorf("build outpost: %v\n%s", err, out)
		}
	})
	if loadBinErr != nil {
		t.Fatal(loadBinErr)
	}
	return loadBin
}

// raiseNoFile lifts RLIMIT_NOFILE for the test process and, inherited, the
// daemon it starts.
func raiseNoFile(t *testing.T, want uint64) {
	t.Helper()
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if rl.Cur >= want {
		return
	}
	nl := syscall.Rlimit{Cur: want, Max: max(rl.Max, want)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &nl); err != nil {
		// Unprivileged: go as far as the hard limit allows.
		nl = syscall.Rlimit{Cur: rl.Max, Max: rl.Max}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &nl); err != nil {
			t.Fatal(err)
		}
	}
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	t.Logf("RLIMIT_NOFILE %d/%d", rl.Cur, rl.Max)
	if rl.Cur < want/2 {
		t.Skipf("RLIMIT_NOFILE %d is too low for this test", rl.Cur)
	}
}

// startRelease runs the release binary like startOutpost does.
func startRelease(t *testing.T, dir, cfg string) *daemon {
	t.Helper()
	bin := releaseBinary(t)
	port := freePortOn(t, "127.0.0.1")
	d := &daemon{t: t, dir: dir, smtp: fmt.Sprintf("127.0.0.1:%d", port), cfgPath: filepath.Join(dir, "outpost.yaml")}
	cfg = strings.ReplaceAll(cfg, "%SMTP%", d.smtp)
	cfg = strings.ReplaceAll(cfg, "%DATA%", filepath.Join(dir, "data"))
	if err := os.WriteFile(d.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	d.stderr = &lockedBuffer{}
	d.cmd = exec.Command(bin, "serve", "--config", d.cfgPath)
	d.cmd.Stderr, d.cmd.Stdout = d.stderr, d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.stop)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", d.smtp); err == nil {
			c.Close()
			return d
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("outpost did not start listening: %s", d.stderr)
	return nil
}

func loadConfig(w *world, listenerExtra string) string {
	return fmt.Sprintf(`hostname: outpost.test
data_dir: %%DATA%%
listeners:
  - address: %%SMTP%%
    relay_from: [127.0.0.0/8]
%sdns:
  resolvers: [%q]
  timeout: 2s
tls:
  ca_file: %s
  system_roots: false
delivery:
  port: %d
bounce:
  initial_retry: 10m
  max_retry_interval: 30m
logs:
  level: info
  max_size: 1GB
  keep: 100
`, listenerExtra, w.z.addr, w.caFile, w.port)
}

// procStatus returns VmRSS and VmHWM of pid in KiB.
func procStatus(t *testing.T, pid int) (rss, hwm int64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = n
		case "VmHWM:":
			hwm = n
		}
	}
	return rss, hwm
}

// sendOne runs one SMTP transaction on c.
func loadSend(c *smtp.Client, from, to, body string) error {
	if err := c.Mail(from, nil); err != nil {
		return fmt.Errorf("MAIL: %w", err)
	}
	if err := c.Rcpt(to, nil); err != nil {
		return fmt.Errorf("RCPT: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if _, err := io.WriteString(w, body); err != nil {
		return fmt.Errorf("DATA write: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("end of DATA: %w", err)
	}
	return nil
}

// inject sends n messages over conns parallel sessions (each carrying many
// messages); rcpt names recipient i. progress, when set, is called with the
// count accepted so far every 1 000 messages.
func inject(t *testing.T, addr string, n, conns int, rcpt func(i int) string, progress func(done int)) time.Duration {
	t.Helper()
	var next, done, failed atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	var wg sync.WaitGroup
	for k := 0; k < conns; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *smtp.Client
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					break
				}
				if c == nil {
					var err error
					if c, err = smtp.Dial(addr); err == nil {
						err = c.Hello("loader.test")
					}
					if err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
						c = nil
						continue
					}
				}
				body := fmt.Sprintf("From: <load@sender.test>\r\nTo: <%s>\r\nSubject: load %d\r\n\r\nbacklog message %d\r\n", rcpt(i), i, i)
				if err := loadSend(c, "load@sender.test", rcpt(i), body); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					c.Close()
					c = nil
					continue
				}
				if d := done.Add(1); progress != nil && d%1000 == 0 {
					progress(int(d))
				}
			}
			if c != nil {
				c.Quit()
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d messages not accepted; first error: %v", f, n, firstErr.Load())
	}
	return time.Since(start)
}

// timeLive sends n messages to live.test, one session each from 20
// clients, and returns how long until the probe has all of them.
func timeLive(t *testing.T, d *daemon, p *probe, tag string, n int) time.Duration {
	t.Helper()
	before := p.count()
	start := time.Now()
	inject(t, d.smtp, n, 20, func(i int) string { return fmt.Sprintf("%s%d@live.test", tag, i) }, nil)
	p.waitCount(t, before+n, 5*time.Minute)
	return time.Since(start)
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestLoadConcurrentSessions(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	const n = 2000
	raiseNoFile(t, 16384)
	w := newWorld(t, "127.0.0.171")
	w.z.addMX("live.test", 10, "mx.live.test")
	w.z.addA("mx.live.test", "127.0.0.171")
	p := newProbe(t, fmt.Sprintf("127.0.0.171:%d", w.port), 0)
	d := startRelease(t, t.TempDir(), loadConfig(w, ""))
	logOnFailure(t, d)

	// Open every session first, so all 2 000 are open at once, then send.
	clients := make([]*smtp.Client, n)
	var wg sync.WaitGroup
	var dialErrs atomic.Int64
	var firstErr atomic.Value
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := smtp.Dial(d.smtp)
			if err == nil {
				if err = c.Hello(fmt.Sprintf("c%d.test", i)); err != nil {
					c.Close()
				}
			}
			if err != nil {
				dialErrs.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	if e := dialErrs.Load(); e > 0 {
		t.Fatalf("%d of %d sessions could not be opened: %v", e, n, firstErr.Load())
	}
	pid := d.cmd.Process.Pid
	rss, _ := procStatus(t, pid)
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	t.Logf("%d sessions open at once: daemon RSS %d KiB, %d open files", n, rss, len(fds))

	start := time.Now()
	var sendErrs atomic.Int64
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			to := fmt.Sprintf("c%d@live.test", i)
			if err := loadSend(c, "load@sender.test", to, fmt.Sprintf("Subject: c%d\r\n\r\nhello\r\n", i)); err != nil {
				sendErrs.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			}
			c.Quit()
		}()
	}
	wg.Wait()
	accepted := time.Since(start)
	if e := sendErrs.Load(); e > 0 {
		t.Fatalf("%d of %d messages were not answered 250: %v", e, n, firstErr.Load())
	}
	p.waitCount(t, n, 5*time.Minute)
	delivered := time.Since(start)
	seen := map[string]bool{}
	for _, r := range rcptsOf(p) {
		seen[r] = true
	}
	for i := 0; i < n; i++ {
		if !seen[fmt.Sprintf("c%d@live.test", i)] {
			t.Fatalf("c%d@live.test was not delivered", i)
		}
	}
	_, hwm := procStatus(t, pid)
	t.Logf("%d concurrent sessions: all 250 in %v, all delivered in %v; daemon VmHWM %d KiB", n, accepted.Round(time.Millisecond), delivered.Round(time.Millisecond), hwm)
}

func TestLoadBacklogNoStarvation(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	backlog := 20000
	if s := os.Getenv("OUTPOST_LOAD_BACKLOG"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 10000 {
			t.Fatalf("OUTPOST_LOAD_BACKLOG=%q: want a number ≥ 10000", s)
		}
		backlog = v
	}
	const live = 200
	raiseNoFile(t, 16384)
	w := newWorld(t, "127.0.0.171", "127.0.0.172")
	w.z.addMX("live.test", 10, "mx.live.test")
	w.z.addA("mx.live.test", "127.0.0.171")
	w.z.addMX("dead.test", 10, "mx.dead.test")
	w.z.addA("mx.dead.test", "127.0.0.172") // nothing listens: connection refused
	p := newProbe(t, fmt.Sprintf("127.0.0.171:%d", w.port), 0)
	dir := t.TempDir()
	d := startRelease(t, dir, loadConfig(w, ""))
	logOnFailure(t, d)
	pid := d.cmd.Process.Pid

	base := timeLive(t, d, p, "base", live)
	rss0, _ := procStatus(t, pid)
	t.Logf("baseline: %d messages to live.test delivered in %v with no backlog; daemon RSS %d KiB", live, base.Round(time.Millisecond), rss0)

	var rss10k int64
	took := inject(t, d.smtp, backlog, 32, func(i int) string { return fmt.Sprintf("d%d@dead.test", i) }, func(done int) {
		if done == 10000 {
			rss10k, _ = procStatus(t, pid)
		}
	})
	rssN, hwmN := procStatus(t, pid)
	t.Logf("backlog: %d messages to dead.test accepted in %v (%.0f msg/s); RSS at 10 000 queued %d KiB, at %d queued %d KiB (VmHWM %d KiB)",
		backlog, took.Round(time.Millisecond), float64(backlog)/took.Seconds(), rss10k, backlog, rssN, hwmN)

	during := timeLive(t, d, p, "busy", live)
	t.Logf("with the backlog: %d messages to live.test delivered in %v; ratio to baseline %.2f", live, during.Round(time.Millisecond), during.Seconds()/base.Seconds())

	// Every dead.test message is still queued (deferred, not bounced or
	// lost); the live ones are gone from the spool.
	time.Sleep(2 * time.Second)
	msgDir := filepath.Join(dir, "data", "spool", "msg")
	var queued int
	deadline := time.Now().Add(2 * time.Minute)
	for {
		queued = countFiles(t, msgDir)
		if queued == backlog || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if queued != backlog {
		t.Fatalf("%d messages in the spool, want the %d dead.test messages", queued, backlog)
	}
	// ... and each was attempted and deferred: the mail log has a
	// "pending till" line for every one of them.
	pendingRE := regexp.MustCompile(`MID (\d+) to RID \[[0-9, ]+\] pending till`)
	var deferred int
	var logText string
	deadline = time.Now().Add(3 * time.Minute)
	for {
		logText = allMailLogs(t, d)
		mids := map[string]bool{}
		sc := bufio.NewScanner(strings.NewReader(logText))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if m := pendingRE.FindStringSubmatch(sc.Text()); m != nil {
				mids[m[1]] = true
			}
		}
		deferred = len(mids)
		if deferred >= backlog || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if strings.Contains(logText, "Bounced:") {
		t.Fatalf("a message bounced during the backlog test")
	}
	rssEnd, hwmEnd := procStatus(t, pid)
	t.Logf("after the live run: %d dead.test messages queued, %d of them logged deferred ('pending till'); RSS %d KiB, VmHWM %d KiB", queued, deferred, rssEnd, hwmEnd)
	if deferred < backlog {
		t.Fatalf("only %d of the %d dead.test messages were deferred (attempted and rescheduled) within 3 minutes", deferred, backlog)
	}
}

func TestLoadSlowloris(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	const slow = 500
	raiseNoFile(t, 8192)
	w := newWorld(t, "127.0.0.171")
	w.z.addMX("live.test", 10, "mx.live.test")
	w.z.addA("mx.live.test", "127.0.0.171")
	p := newProbe(t, fmt.Sprintf("127.0.0.171:%d", w.port), 0)
	d := startRelease(t, t.TempDir(), loadConfig(w, "    idle_timeout: 2s\n    session_timeout: 10s\n"))
	logOnFailure(t, d)

	// Half trickle a byte every second (idle timeout never fires: only the
	// session timeout can end them), half every three seconds (the idle
	// timeout ends them).
	type result struct {
		lasted time.Duration
		err    error
	}
	results := make(chan result, slow)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	for i := 0; i < slow; i++ {
		every := time.Second
		if i%2 == 1 {
			every = 3 * time.Second
		}
		go func() {
			start := time.Now()
			c, err := net.Dial("tcp", d.smtp)
			if err != nil {
				results <- result{err: err}
				return
			}
			defer c.Close()
			closed := make(chan struct{})
			go func() {
				// The server's replies (greeting, then 421 at the timeout),
				// until it closes the connection.
				io.Copy(io.Discard, c)
				close(closed)
			}()
			msg := []byte("EHLO slowloris.test\r\n")
			for k := 0; ; k++ {
				select {
				case <-closed:
					results <- result{lasted: time.Since(start)}
					return
				case <-ctx.Done():
					results <- result{lasted: time.Since(start), err: fmt.Errorf("still open after %v", time.Since(start))}
					return
				case <-time.After(every):
				}
				c.Write(msg[k%len(msg) : k%len(msg)+1])
			}
		}()
	}
	// While they hang, a normal client gets its message accepted promptly.
	time.Sleep(3 * time.Second)
	start := time.Now()
	c, err := smtp.Dial(d.smtp)
	if err == nil {
		err = c.Hello("normal.test")
	}
	if err == nil {
		err = loadSend(c, "a@sender.test", "normal@live.test", "Subject: normal\r\n\r\nhello\r\n")
		c.Quit()
	}
	if err != nil {
		t.Fatalf("normal client during slowloris: %v", err)
	}
	normal := time.Since(start)
	if normal > 5*time.Second {
		t.Errorf("normal client took %v to get its 250 while %d slow clients hung", normal, slow)
	}
	p.waitCount(t, 1, time.Minute)

	var longest time.Duration
	for i := 0; i < slow; i++ {
		r := <-results
		if r.err != nil {
			t.Fatalf("slow client: %v", r.err)
		}
		longest = max(longest, r.lasted)
	}
	if longest > 15*time.Second {
		t.Errorf("a slow client lasted %v with session_timeout 10s", longest)
	}
	t.Logf("%d slow clients all cut off, the longest after %v; a normal client got 250 in %v meanwhile", slow, longest.Round(time.Millisecond), normal.Round(time.Millisecond))
}

// allMailLogs returns the current mail log and every rotated one.
func allMailLogs(t *testing.T, d *daemon) string {
	t.Helper()
	dir := filepath.Join(d.dir, "data", "logs", "mail_logs")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		b.Write(data)
	}
	return b.String()
}
