// Command runner is Outpost's relay benchmark: in one invocation it builds
// Outpost and the bench sink, starts the sink (STARTTLS with a certificate
// from a throw-away CA, verified by the relays), a tiny authoritative DNS
// server for bench.test, and then, run after run, a fresh Outpost and a fresh
// private Postfix instance. Each relay receives N messages of SIZE bytes from
// Postfix's smtp-source over S parallel sessions and relays them to the sink;
// the runner records messages/s (injection start → last message at the sink),
// CPU seconds of the relay (every process of it, via a cgroup when the system
// allows), CPU per 1000 messages and peak memory, and prints medians and the
// Outpost/Postfix ratios. Everything is on the loopback. See bench/README.md.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ", ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

type config struct {
	n, size, sessions, runs int
	timeout, stall, settle  time.Duration
	only                    string
	workdir, root           string
	keep, verbose           bool
	outpostBin              string
	outpostExtra            string
	postfixReuse            bool
	postfixDNS              string
	postfixSet              multiFlag
	clientReuse             bool
	jsonOut                 string
	sampleEvery             time.Duration
	suite                   string
	largeSize, largeN       int
	latRate                 float64
	latDuration             time.Duration
	stsDomains, stsN        int
	ceilingN                int
	memBacklogs             string
	memRuns                 int
	memSettle               time.Duration
	maxLoad                 float64
}

// env is what the runs share: the sink, the DNS server and the CA.
type env struct {
	work, bin     string
	bundle        string // sink CA + policy-host CA (PEM)
	policy        *policyHost
	sinkPort      int
	sinkStats     string
	caFile        string
	dnsAddr       string
	postfixDNS    string // "mx" or "static"
	resolvConf    string
	sinkCmd       *exec.Cmd
	sinkLog       string
	startedAt     time.Time
	cpuMethodSeen map[string]string
}

type instance struct {
	side, addr, dir, logFile string
	acct                     *accounting
	alive                    func() bool
	mainPID                  func() int
	stopFn                   func()
	stopOnce                 sync.Once
}

func (i *instance) stop() {
	i.stopOnce.Do(func() {
		if i.stopFn != nil {
			i.stopFn()
		}
	})
}

type side interface {
	name() string
	describe() string
	// start starts a fresh instance configured for one scenario kind:
	// kindRelay (bench.test via its MX, verified TLS), kindSTS (MTA-STS
	// enforce to dN.bench.test through the policy host) or kindDead (a
	// destination whose MX refuses connections).
	start(run int, dir string, kind string) (*instance, error)
}

const (
	kindRelay = "relay"
	kindSTS   = "mtasts"
	kindDead  = "dead"
)

type result struct {
	Section       string  `json:"section"`
	Side          string  `json:"side"`
	Run           int     `json:"run"`
	OK            bool    `json:"ok"`
	Error         string  `json:"error,omitempty"`
	Messages      int64   `json:"messages"`
	Seconds       float64 `json:"seconds"`
	MsgsPerSec    float64 `json:"msgs_per_sec"`
	InjectSeconds float64 `json:"inject_seconds"`
	CPUSeconds    float64 `json:"cpu_seconds"`
	CPUPer1000    float64 `json:"cpu_seconds_per_1000"`
	CPUAtDone     float64 `json:"cpu_seconds_at_last_delivery"`
	RSSPeakMiB    float64 `json:"rss_peak_mib"`
	PSSPeakMiB    float64 `json:"pss_peak_mib"`
	ProcsPeak     int     `json:"procs_peak"`
	SinkConns     int64   `json:"sink_connections"`
	SinkTLS       int64   `json:"sink_tls_handshakes"`
	SinkResumed   int64   `json:"sink_tls_resumed"`
	SinkBytes     int64   `json:"sink_bytes"`
	CPUMethod     string  `json:"cpu_method"`
	WarmSeconds   float64 `json:"warm_seconds,omitempty"`
	PolicyFetches int64   `json:"policy_fetches_measured,omitempty"`
	DNSQueries    int64   `json:"dns_queries_measured"`
}

var (
	workDir   string // for the interrupt message
	cleanupMu sync.Mutex
	cleanups  []func()
)

func registerCleanup(f func()) {
	cleanupMu.Lock()
	cleanups = append(cleanups, f)
	cleanupMu.Unlock()
}

func runCleanups() {
	cleanupMu.Lock()
	fs := cleanups
	cleanups = nil
	cleanupMu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

func fatalf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", a...)
	runCleanups()
	os.Exit(1)
}

func main() {
	cfg := &config{}
	flag.IntVar(&cfg.n, "n", 10000, "messages per run")
	flag.IntVar(&cfg.size, "size", 4096, "message payload bytes (smtp-source -l); e.g. 102400 for the large-message variant")
	flag.IntVar(&cfg.sessions, "sessions", 20, "parallel injecting SMTP sessions (smtp-source -s)")
	flag.IntVar(&cfg.runs, "runs", 5, "runs per side (medians are reported)")
	flag.DurationVar(&cfg.timeout, "timeout", 0, "per-run limit for injection+delivery (0: 120s + 20ms per message)")
	flag.DurationVar(&cfg.stall, "stall", 60*time.Second, "fail a run when the sink count does not move for this long")
	flag.DurationVar(&cfg.settle, "settle", time.Second, "CPU is read this long after the last delivery too (cleanup work)")
	flag.StringVar(&cfg.only, "only", "both", "which relays: both, outpost, postfix")
	flag.StringVar(&cfg.workdir, "workdir", "", "working directory (default: a new /var/tmp/outpost-bench.*); must not be tmpfs for fsync to mean anything")
	flag.StringVar(&cfg.root, "root", "", "repository root (default: found from the working directory)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the working directory (it is kept anyway when a run fails)")
	flag.BoolVar(&cfg.verbose, "v", false, "verbose")
	flag.StringVar(&cfg.outpostBin, "outpost-bin", "", "use this outpost binary instead of building ./cmd/outpost")
	flag.StringVar(&cfg.outpostExtra, "outpost-extra", "", "YAML file appended to the generated outpost config")
	flag.BoolVar(&cfg.postfixReuse, "postfix-tls-reuse", false, "let Postfix reuse TLS connections (smtp_tls_connection_reuse = yes, via tlsproxy)")
	flag.StringVar(&cfg.postfixDNS, "postfix-dns", "auto", "how Postfix finds the sink: mx (real MX lookup: bench DNS on 127.0.0.1:53 + private mount namespace with its own resolv.conf), static (transport [127.0.0.1]:port + tls_policy match=sink.bench.test), auto (mx if possible)")
	flag.Var(&cfg.postfixSet, "postfix-set", "extra main.cf line for the Postfix instance, e.g. -postfix-set 'smtp_destination_concurrency_limit = 40' (repeatable)")
	flag.BoolVar(&cfg.clientReuse, "client-reuse", false, "injector keeps its sessions open between messages (smtp-source -d)")
	flag.StringVar(&cfg.jsonOut, "json", "", "also write every run's figures as JSON to this file")
	flag.DurationVar(&cfg.sampleEvery, "mem-sample", 100*time.Millisecond, "memory sampling interval")
	flag.StringVar(&cfg.suite, "suite", "all", "comma-separated sections: relay, relay-large, latency, mtasts, ceiling, memory, policy-bench (all: every one)")
	flag.IntVar(&cfg.largeSize, "large-size", 102400, "relay-large: message size")
	flag.IntVar(&cfg.largeN, "large-n", 2000, "relay-large: messages per run")
	flag.Float64Var(&cfg.latRate, "latency-rate", 5, "latency: messages per second")
	flag.DurationVar(&cfg.latDuration, "latency-duration", 60*time.Second, "latency: injection time per run")
	flag.IntVar(&cfg.stsDomains, "sts-domains", 1000, "mtasts: enforce-mode domains dN.bench.test")
	flag.IntVar(&cfg.stsN, "sts-n", 5000, "mtasts: measured messages per run (spread over the domains, after one warm-up message per domain)")
	flag.IntVar(&cfg.ceilingN, "ceiling-n", 50000, "ceiling: messages per run (4 KiB; a fifth of it for the large size)")
	flag.StringVar(&cfg.memBacklogs, "mem-backlogs", "10000,100000", "memory: queued-message counts")
	flag.IntVar(&cfg.memRuns, "mem-runs", 1, "memory: runs per side and backlog")
	flag.Float64Var(&cfg.maxLoad, "max-load", 1.5, "before each section wait (at most 90 s) for the 1-minute load average to drop below this; 0: don't wait")
	flag.DurationVar(&cfg.memSettle, "mem-settle", 15*time.Second, "memory: wait after the backlog is accepted before sampling")
	flag.Parse()
	if cfg.n <= 0 || cfg.size <= 0 || cfg.sessions <= 0 || cfg.runs <= 0 {
		fatalf("-n, -size, -sessions and -runs must be positive")
	}
	stsDomains.Store(int64(cfg.stsDomains))
	doOutpost := cfg.only == "both" || cfg.only == "outpost"
	doPostfix := cfg.only == "both" || cfg.only == "postfix"
	if !doOutpost && !doPostfix {
		fatalf("-only must be both, outpost or postfix")
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "\nbench: %v: stopping everything\n", s)
		runCleanups()
		if workDir != "" {
			fmt.Fprintf(os.Stderr, "bench: working directory kept: %s\n", workDir)
		}
		os.Exit(130)
	}()
	defer runCleanups()

	root := cfg.root
	if root == "" {
		root = findRoot()
	}
	if root == "" {
		fatalf("cannot find the repository root (go.mod with module outpost); use -root")
	}
	if _, err := exec.LookPath("smtp-source"); err != nil {
		if _, err2 := os.Stat("/usr/sbin/smtp-source"); err2 != nil {
			fatalf("smtp-source not found: install the Debian package postfix (apt-get install -y postfix)")
		}
		os.Setenv("PATH", os.Getenv("PATH")+":/usr/sbin")
	}
	if doPostfix {
		if _, err := exec.LookPath("postfix"); err != nil {
			fatalf("postfix not found: install the Debian package postfix")
		}
	}

	e := &env{startedAt: time.Now()}
	work := cfg.workdir
	if work == "" {
		d, err := os.MkdirTemp("/var/tmp", "outpost-bench.")
		if err != nil {
			fatalf("%v", err)
		}
		work = d
	} else if err := os.MkdirAll(work, 0o755); err != nil {
		fatalf("%v", err)
	}
	work, _ = filepath.Abs(work)
	// Postfix daemons (user postfix) need to traverse to data_directory.
	os.Chmod(work, 0o755)
	e.work = work
	workDir = work
	os.WriteFile(filepath.Join(work, "runner.pid"), []byte(fmt.Sprintln(os.Getpid())), 0o644)
	e.bin = filepath.Join(work, "bin")
	os.MkdirAll(e.bin, 0o755)
	if isTmpfs(work) {
		fmt.Fprintf(os.Stderr, "bench: WARNING: %s is on tmpfs: fsync costs nothing there, figures are not representative\n", work)
	}
	failed := false
	defer func() {
		if cfg.keep || failed {
			fmt.Fprintf(os.Stderr, "bench: working directory kept: %s\n", work)
		} else if cfg.workdir == "" {
			os.RemoveAll(work)
		}
	}()
	fmt.Printf("bench: workdir %s; %d msgs × %d bytes, %d sessions, %d run(s) per side\n",
		work, cfg.n, cfg.size, cfg.sessions, cfg.runs)

	// a. Build.
	if out, err := goBuild(root, filepath.Join(e.bin, "sink"), "./bench/sink"); err != nil {
		fatalf("building the sink failed: %v\n%s", err, out)
	}
	var sides []side
	outpostErr := ""
	if doOutpost {
		bin := cfg.outpostBin
		if bin == "" {
			bin = filepath.Join(e.bin, "outpost")
			if _, err := os.Stat(filepath.Join(root, "cmd", "outpost")); err != nil {
				outpostErr = "./cmd/outpost does not exist"
			} else if out, err := goBuild(root, bin, "./cmd/outpost"); err != nil {
				outpostErr = fmt.Sprintf("go build ./cmd/outpost failed: %v\n%s", err, strings.TrimSpace(string(out)))
			}
		} else if _, err := os.Stat(bin); err != nil {
			outpostErr = err.Error()
		}
		if outpostErr != "" {
			if !doPostfix {
				fatalf("outpost unavailable: %s", outpostErr)
			}
			fmt.Fprintf(os.Stderr, "bench: OUTPOST UNAVAILABLE, measuring Postfix only: %s\n", outpostErr)
		} else {
			sides = append(sides, &outpostSide{cfg: cfg, env: e, bin: bin})
		}
	}
	if doPostfix {
		sides = append(sides, &postfixSide{cfg: cfg, env: e})
	}

	// c. DNS for Outpost (any free loopback port) and, in mx mode, for Postfix
	// on 127.0.0.1:53 (the resolver library cannot be told another port).
	dnsPort, err := freePort()
	if err != nil {
		fatalf("%v", err)
	}
	e.dnsAddr = fmt.Sprintf("127.0.0.1:%d", dnsPort)
	d, err := startDNS(e.dnsAddr)
	if err != nil {
		fatalf("DNS server on %s: %v", e.dnsAddr, err)
	}
	registerCleanup(d.stop)
	if doPostfix {
		e.postfixDNS = cfg.postfixDNS
		if e.postfixDNS == "auto" || e.postfixDNS == "mx" {
			why := ""
			if _, err := exec.LookPath("unshare"); err != nil {
				why = "unshare(1) not found"
			} else if err := exec.Command("unshare", "--mount", "--propagation", "private", "true").Run(); err != nil {
				why = "cannot make a mount namespace: " + err.Error()
			} else if d53, err := startDNS("127.0.0.1:53"); err != nil {
				why = "127.0.0.1:53 unavailable: " + err.Error()
			} else {
				registerCleanup(d53.stop)
				e.resolvConf = filepath.Join(work, "resolv.conf")
				os.WriteFile(e.resolvConf, []byte("# bench: Postfix's private resolver configuration\nnameserver 127.0.0.1\noptions timeout:2 attempts:2\n"), 0o644)
				e.postfixDNS = "mx"
			}
			if why != "" {
				if cfg.postfixDNS == "mx" {
					fatalf("-postfix-dns mx: %s", why)
				}
				fmt.Fprintf(os.Stderr, "bench: Postfix MX lookup mode unavailable (%s); using static transport\n", why)
				e.postfixDNS = "static"
			}
		} else if e.postfixDNS != "static" {
			fatalf("-postfix-dns must be auto, mx or static")
		}
	}

	// b. The sink.
	if err := startSink(e); err != nil {
		fatalf("sink: %v", err)
	}
	// The MTA-STS policy host's CA; both relays trust the bundle of the two.
	pol, err := newPolicyCA()
	if err != nil {
		fatalf("policy CA: %v", err)
	}
	e.policy = pol
	sinkCA, err := os.ReadFile(e.caFile)
	if err != nil {
		fatalf("%v", err)
	}
	e.bundle = filepath.Join(work, "ca-bundle.pem")
	if err := os.WriteFile(e.bundle, append(sinkCA, pol.caPEM...), 0o644); err != nil {
		fatalf("%v", err)
	}

	for _, s := range sides {
		fmt.Printf("bench: %-8s %s\n", s.name()+":", s.describe())
	}

	rep := runSuite(cfg, e, sides, outpostErr, root)
	if rep.failed {
		failed = true
	}
	if cfg.jsonOut != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		os.WriteFile(cfg.jsonOut, b, 0o644)
	}
	if outpostErr != "" && !failed {
		runCleanups()
		fmt.Fprintf(os.Stderr, "bench: Outpost could not be measured: %s\n", firstLine(outpostErr))
		os.Exit(2)
	}
	if failed {
		runCleanups()
		fmt.Fprintf(os.Stderr, "bench: some runs failed; working directory kept: %s\n", work)
		os.Exit(1)
	}
}

func findRoot() string {
	dir, _ := os.Getwd()
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), "module outpost") {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

func goBuild(root, out, pkg string) ([]byte, error) {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	return cmd.CombinedOutput()
}

func isTmpfs(path string) bool {
	var st syscall.Statfs_t
	return syscall.Statfs(path, &st) == nil && st.Type == 0x01021994
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func killPID(pid int) { syscall.Kill(pid, syscall.SIGKILL) }

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitBanner waits until addr answers with an SMTP 220 greeting.
func waitBanner(addr string, limit time.Duration, alive func() bool) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		if !alive() {
			return errors.New("process exited")
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err == nil && strings.HasPrefix(line, "220") {
				io.WriteString(c, "QUIT\r\n")
				c.Close()
				return nil
			}
			c.Close()
			last = fmt.Errorf("greeting %q: %v", strings.TrimSpace(line), err)
		} else {
			last = err
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("timed out after %v: %v", limit, last)
}

// --- sink -------------------------------------------------------------------

type sinkStats struct {
	Connections  int64 `json:"connections"`
	TLS          int64 `json:"tls_handshakes"`
	TLSResumed   int64 `json:"tls_resumed"`
	Messages     int64 `json:"messages"`
	Recipients   int64 `json:"recipients"`
	Bytes        int64 `json:"bytes"`
	Rejected     int64 `json:"rejected"`
	FirstMessage int64 `json:"first_message_unix_nano"`
	LastMessage  int64 `json:"last_message_unix_nano"`
}

var httpc = &http.Client{Timeout: 5 * time.Second}

func startSink(e *env) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	sport, err := freePort()
	if err != nil {
		return err
	}
	e.sinkPort = port
	e.sinkStats = fmt.Sprintf("127.0.0.1:%d", sport)
	e.caFile = filepath.Join(e.work, "sink-ca.pem")
	e.sinkLog = filepath.Join(e.work, "sink.log")
	logf, err := os.Create(e.sinkLog)
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(e.bin, "sink"),
		"-listen", fmt.Sprintf("127.0.0.1:%d", port), "-stats", e.sinkStats,
		"-name", "sink.bench.test", "-alt-names", "bench.test,mx.bench.test", "-ca-out", e.caFile)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	registerCleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
		}
	})
	e.sinkCmd = cmd
	alive := func() bool {
		select {
		case <-exited:
			return false
		default:
			return true
		}
	}
	if err := waitBanner(fmt.Sprintf("127.0.0.1:%d", port), 15*time.Second, alive); err != nil {
		return fmt.Errorf("%v\n%s", err, tail(e.sinkLog, 10))
	}
	for i := 0; i < 100; i++ {
		if _, err := getSinkStats(e); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("counters endpoint does not answer")
}

func getSinkStats(e *env) (sinkStats, error) {
	var s sinkStats
	resp, err := httpc.Get("http://" + e.sinkStats + "/stats")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

func resetSink(e *env) error {
	resp, err := httpc.Post("http://"+e.sinkStats+"/reset", "text/plain", nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// --- one run ------------------------------------------------------------------

// job is one throughput measurement: n messages of size bytes over sessions
// parallel injecting sessions into a fresh instance configured for kind.
type job struct {
	section           string // names the run directories and the results
	kind              string
	n, size, sessions int
	// goInject: the runner's Go injector (sessions reused, recipient
	// rcpt(i)) instead of smtp-source (one message per connection, one
	// recipient rcpt@bench.test).
	goInject bool
	rcpt     func(i int) string
	// warm messages (recipient warmRcpt(i)) are injected and delivered
	// before the measurement starts; they are not counted.
	warm     int
	warmRcpt func(i int) string
}

func runOne(cfg *config, e *env, s side, run int, j job) (res result) {
	res = result{Side: s.name(), Run: run, Section: j.section}
	rd := filepath.Join(e.work, fmt.Sprintf("%s-%s-%d", j.section, s.name(), run))
	if err := os.MkdirAll(rd, 0o755); err != nil {
		res.Error = err.Error()
		return
	}
	inst, err := s.start(run, rd, j.kind)
	if err != nil {
		res.Error = "start: " + err.Error()
		return
	}
	defer inst.stop()
	res.CPUMethod = inst.acct.method()
	// Let the freshly started instance settle (Postfix spawns its daemons).
	time.Sleep(500 * time.Millisecond)
	timeout := 120*time.Second + time.Duration(j.n+j.warm)*20*time.Millisecond
	if cfg.timeout > 0 {
		timeout = cfg.timeout
	}

	if j.warm > 0 {
		if err := resetSink(e); err != nil {
			res.Error = "sink reset: " + err.Error()
			return
		}
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		plan := injectPlan{n: j.warm, sessions: j.sessions, size: j.size, rcpt: j.warmRcpt, tag: "warm"}
		_, err := plan.run(ctx, inst.addr)
		if err == nil {
			err = waitSink(ctx, e, int64(j.warm), cfg.stall, inst.alive)
		}
		cancel()
		if err != nil {
			res.Error = fmt.Sprintf("warm-up: %v\n--- %s (last lines) ---\n%s", err, inst.logFile, tail(inst.logFile, 25))
			return
		}
		res.WarmSeconds = time.Since(t0).Seconds()
		time.Sleep(cfg.settle)
	}
	if err := resetSink(e); err != nil {
		res.Error = "sink reset: " + err.Error()
		return
	}
	var policy0 int64
	if e.policy != nil {
		policy0 = e.policy.requests.Load()
	}
	dns0 := dnsQueries.Load()

	mem := sampleMemory(inst.acct, cfg.sampleEvery)
	cpu0, err := inst.acct.cpu()
	if err != nil {
		mem.finish()
		res.Error = "cpu: " + err.Error()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	injOut := filepath.Join(rd, "injector.log")
	injDone := make(chan error, 1)
	t0 := time.Now()
	if j.goInject {
		go func() {
			plan := injectPlan{n: j.n, sessions: j.sessions, size: j.size, rcpt: j.rcpt, tag: "m"}
			_, err := plan.run(ctx, inst.addr)
			injDone <- err
		}()
	} else {
		args := []string{"-s", fmt.Sprint(j.sessions), "-m", fmt.Sprint(j.n), "-l", fmt.Sprint(j.size),
			"-M", "client.bench-inject.test", "-f", "from@client.bench-inject.test", "-t", "rcpt@bench.test"}
		if cfg.clientReuse {
			args = append(args, "-d")
		}
		args = append(args, inst.addr)
		injLog, _ := os.Create(injOut)
		inj := exec.CommandContext(ctx, "smtp-source", args...)
		inj.Stdout, inj.Stderr = injLog, injLog
		inj.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if cfg.verbose {
			fmt.Fprintf(os.Stderr, "bench: smtp-source %s\n", strings.Join(args, " "))
		}
		t0 = time.Now()
		if err := inj.Start(); err != nil {
			mem.finish()
			res.Error = "smtp-source: " + err.Error()
			return
		}
		go func() { injDone <- inj.Wait(); injLog.Close() }()
	}

	var st sinkStats
	injecting := true
	lastCount, lastMove := int64(-1), time.Now()
	fail := func(msg string) result {
		mem.finish()
		res.Error = msg
		res.Messages = st.Messages
		diag := fmt.Sprintf("\n--- %s (last lines) ---\n%s", inst.logFile, tail(inst.logFile, 25))
		if s.name() == "postfix" {
			diag += fmt.Sprintf("\n(postfix queue still holds %d messages)", postfixQueueCount(rd))
		}
		if b, _ := os.ReadFile(injOut); len(b) > 0 {
			diag += "\n--- smtp-source ---\n" + tail(injOut, 10)
		}
		res.Error += diag
		return res
	}
	for {
		if injecting {
			select {
			case err := <-injDone:
				injecting = false
				res.InjectSeconds = time.Since(t0).Seconds()
				if err != nil {
					return fail(fmt.Sprintf("injector failed after %.1fs: %v", res.InjectSeconds, err))
				}
			default:
			}
		}
		st, err = getSinkStats(e)
		if err != nil {
			return fail("sink stats: " + err.Error())
		}
		if st.Messages >= int64(j.n) && !injecting {
			break
		}
		if st.Messages != lastCount {
			lastCount, lastMove = st.Messages, time.Now()
		}
		if !inst.alive() {
			return fail(fmt.Sprintf("%s exited during the run (%d/%d delivered)", s.name(), st.Messages, j.n))
		}
		if ctx.Err() != nil {
			return fail(fmt.Sprintf("timeout after %v: %d/%d delivered", timeout, st.Messages, j.n))
		}
		if time.Since(lastMove) > cfg.stall {
			return fail(fmt.Sprintf("stalled: sink count stuck at %d/%d for %v", st.Messages, j.n, cfg.stall))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cpuDone, _ := inst.acct.cpu()
	time.Sleep(cfg.settle)
	cpuEnd, _ := inst.acct.cpu()
	peaks := mem.finish()
	var hwm int64
	if p := inst.mainPID(); p > 0 {
		_, _, hwm = readMem(p)
	}

	elapsed := time.Unix(0, st.LastMessage).Sub(t0).Seconds()
	res.OK = true
	res.Messages = st.Messages
	res.Seconds = elapsed
	res.MsgsPerSec = float64(st.Messages) / elapsed
	res.CPUAtDone = (cpuDone - cpu0).Seconds()
	res.CPUSeconds = (cpuEnd - cpu0).Seconds()
	res.CPUPer1000 = res.CPUSeconds / float64(st.Messages) * 1000
	res.RSSPeakMiB = float64(max(peaks.rssKB, hwm)) / 1024
	res.PSSPeakMiB = float64(peaks.pssKB) / 1024
	res.ProcsPeak = peaks.procs
	res.SinkConns, res.SinkTLS, res.SinkResumed, res.SinkBytes = st.Connections, st.TLS, st.TLSResumed, st.Bytes
	if e.policy != nil {
		res.PolicyFetches = e.policy.requests.Load() - policy0
	}
	res.DNSQueries = dnsQueries.Load() - dns0
	return res
}

// waitSink waits until the sink has counted n messages.
func waitSink(ctx context.Context, e *env, n int64, stall time.Duration, alive func() bool) error {
	last, moved := int64(-1), time.Now()
	for {
		st, err := getSinkStats(e)
		if err != nil {
			return err
		}
		if st.Messages >= n {
			return nil
		}
		if st.Messages != last {
			last, moved = st.Messages, time.Now()
		}
		if !alive() {
			return fmt.Errorf("relay exited (%d/%d delivered)", st.Messages, n)
		}
		if time.Since(moved) > stall {
			return fmt.Errorf("stalled at %d/%d", st.Messages, n)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("timeout: %d/%d delivered", st.Messages, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
