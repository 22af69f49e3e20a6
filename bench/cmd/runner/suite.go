package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// report is everything one invocation measured (-json writes it).
type report struct {
	Started  time.Time                 `json:"started"`
	Machine  map[string]string         `json:"machine"`
	Sections map[string]*sectionReport `json:"sections"`
	Latency  []latencyResult           `json:"latency,omitempty"`
	Ceiling  []ceilingResult           `json:"ceiling,omitempty"`
	Memory   []memoryResult            `json:"memory,omitempty"`
	GoBench  map[string]goBenchResult  `json:"go_bench,omitempty"`
	Runs     []result                  `json:"runs"`
	Targets  []targetVerdict           `json:"targets"`
	failed   bool
	medians  map[string]map[string]summary
	extra    map[string]map[string]float64
}

type sectionReport struct {
	Title   string  `json:"title"`
	LoadAvg string  `json:"load_at_start"`
	Seconds float64 `json:"seconds"`
}

type targetVerdict struct {
	Target string `json:"target"`
	Value  string `json:"value"`
	Met    bool   `json:"met"`
}

func (r *report) target(name string, met bool, format string, a ...any) {
	v := fmt.Sprintf(format, a...)
	r.Targets = append(r.Targets, targetVerdict{Target: name, Value: v, Met: met})
	verdict := "MET"
	if !met {
		verdict = "NOT MET"
	}
	fmt.Printf("  target %-55s %-28s %s\n", name+":", v, verdict)
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "?"
}

func load1() float64 {
	f := strings.Fields(loadAvg())
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// waitLoad waits (at most limit) for the 1-minute load to drop below max.
func waitLoad(max float64, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for load1() >= max && time.Now().Before(deadline) {
		time.Sleep(5 * time.Second)
	}
}

func machineInfo() map[string]string {
	m := map[string]string{}
	out := func(name string, args ...string) string {
		b, _ := exec.Command(name, args...).Output()
		return strings.TrimSpace(string(b))
	}
	m["nproc"] = out("nproc")
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				m["cpu"] = strings.TrimSpace(l[strings.Index(l, ":")+1:])
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		m["memory"] = strings.Join(strings.Fields(strings.SplitN(string(b), "\n", 2)[0])[1:], " ")
	}
	m["kernel"] = out("uname", "-r")
	m["go"] = out("go", "version")
	m["postfix"] = out("postconf", "-d", "-h", "mail_version")
	m["postfix-mta-sts-resolver"] = out("dpkg-query", "-W", "-f", "${Version}", "postfix-mta-sts-resolver")
	m["load_at_start"] = loadAvg()
	return m
}

func (c *config) has(section string) bool {
	if c.suite == "all" {
		return true
	}
	for _, s := range strings.Split(c.suite, ",") {
		if strings.TrimSpace(s) == section {
			return true
		}
	}
	return false
}

// runSuite runs the selected sections in order and prints their tables.
func runSuite(cfg *config, e *env, sides []side, outpostErr, root string) *report {
	rep := &report{Started: time.Now(), Machine: machineInfo(), Sections: map[string]*sectionReport{},
		medians: map[string]map[string]summary{}, extra: map[string]map[string]float64{}}
	fmt.Printf("bench: machine %v\n", rep.Machine)
	section := func(name, title string, f func()) {
		if !cfg.has(name) {
			return
		}
		// Our own previous section keeps the 1-minute load up for a while;
		// other users of the machine too. Wait (bounded) for it to calm.
		if cfg.maxLoad > 0 {
			waitLoad(cfg.maxLoad, 90*time.Second)
		}
		sr := &sectionReport{Title: title, LoadAvg: loadAvg()}
		rep.Sections[name] = sr
		fmt.Printf("\n##### %s — %s (load average %s)\n", name, title, sr.LoadAvg)
		t0 := time.Now()
		f()
		sr.Seconds = time.Since(t0).Seconds()
	}
	throughput := func(j job, runs int) {
		var results []result
		for r := 1; r <= runs; r++ {
			order := append([]side(nil), sides...)
			if r%2 == 0 {
				for i, k := 0, len(order)-1; i < k; i, k = i+1, k-1 {
					order[i], order[k] = order[k], order[i]
				}
			}
			for _, s := range order {
				res := runOne(cfg, e, s, r, j)
				if !res.OK {
					rep.failed = true
				}
				results = append(results, res)
				printRun(res)
			}
		}
		rep.Runs = append(rep.Runs, results...)
		rep.medians[j.section] = summarize(cfg, j, runs, results, outpostErr)
	}

	section("relay", fmt.Sprintf("relay throughput, %d × %d B, %d sessions (smtp-source, 1 msg/connection), verified STARTTLS to the sink", cfg.n, cfg.size, cfg.sessions), func() {
		throughput(job{section: "relay", kind: kindRelay, n: cfg.n, size: cfg.size, sessions: cfg.sessions}, cfg.runs)
	})
	section("relay-large", fmt.Sprintf("relay throughput, %d × %d B, %d sessions", cfg.largeN, cfg.largeSize, cfg.sessions), func() {
		throughput(job{section: "relay-large", kind: kindRelay, n: cfg.largeN, size: cfg.largeSize, sessions: cfg.sessions}, cfg.runs)
	})
	section("latency", fmt.Sprintf("latency at %.0f msg/s for %v, 4 KiB, one reused injecting session, verified TLS", cfg.latRate, cfg.latDuration), func() {
		runLatencySection(cfg, e, sides, rep)
	})
	section("mtasts", fmt.Sprintf("MTA-STS enforce, %d domains, warm cache, %d × 4 KiB, %d reused sessions (Go injector)", cfg.stsDomains, cfg.stsN, cfg.sessions), func() {
		if err := startPolicyHost(e); err != nil {
			fmt.Printf("mtasts: cannot run: %v\n", err)
			rep.failed = true
			return
		}
		d := cfg.stsDomains
		throughput(job{section: "mtasts", kind: kindSTS, n: cfg.stsN, size: 4096, sessions: cfg.sessions, goInject: true,
			rcpt:     func(i int) string { return fmt.Sprintf("user%d@d%d.bench.test", i, i%d+1) },
			warm:     d,
			warmRcpt: func(i int) string { return fmt.Sprintf("warm@d%d.bench.test", i%d+1) }}, cfg.runs)
		o, ok1 := rep.medians["mtasts"]["outpost"]
		p, ok2 := rep.medians["mtasts"]["postfix"]
		if ok1 && ok2 {
			rep.target("MTA-STS msgs/s ≥ 5× Postfix+resolver", o.rate/p.rate >= 5, "%.2f×", o.rate/p.rate)
			rep.target("MTA-STS CPU/msg ≤ 1/5 Postfix+resolver", o.cpuK/p.cpuK <= 0.2, "%.3f×", o.cpuK/p.cpuK)
		}
	})
	section("ceiling", fmt.Sprintf("raw ceiling: Go client → Go sink, TLS 1.3, %d reused sessions, BDAT pipelined", cfg.sessions), func() {
		runCeilingSection(cfg, e, rep)
	})
	section("memory", "memory with a queued backlog (destination down: its MX refuses connections)", func() {
		runMemorySection(cfg, e, sides, rep)
	})
	section("policy-bench", "warm-cache MTA-STS policy decision (go test -bench ./internal/mtasts)", func() {
		runGoBench(root, rep)
	})

	fmt.Printf("\n##### targets (issue 7)\n")
	for _, t := range rep.Targets {
		v := "MET"
		if !t.Met {
			v = "NOT MET"
		}
		fmt.Printf("  %-55s %-28s %s\n", t.Target, t.Value, v)
	}
	return rep
}

func printRun(r result) {
	if !r.OK {
		fmt.Printf("run %d %-8s FAILED: %s\n", r.Run, r.Side, r.Error)
		return
	}
	extra := ""
	if r.WarmSeconds > 0 {
		extra = fmt.Sprintf("  warm-up %.1fs, policy fetches while measuring %d, DNS queries %d", r.WarmSeconds, r.PolicyFetches, r.DNSQueries)
	}
	fmt.Printf("run %d %-8s %8.1f msg/s  %6.2fs  inject %6.2fs  CPU %6.2fs (%.3f s/1000 msgs)  RSS %6.1f MiB  PSS %6.1f MiB  procs %d  sink: %d conns, %d TLS (%d resumed)%s\n",
		r.Run, r.Side, r.MsgsPerSec, r.Seconds, r.InjectSeconds, r.CPUSeconds, r.CPUPer1000, r.RSSPeakMiB, r.PSSPeakMiB,
		r.ProcsPeak, r.SinkConns, r.SinkTLS, r.SinkResumed, extra)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

type summary struct {
	ok                                    int
	rate, secs, cpu, cpuK, rss, pss, conn float64
	tls, inj                              float64
}

func summarize(cfg *config, j job, runs int, results []result, outpostErr string) map[string]summary {
	by := map[string][]result{}
	for _, r := range results {
		if r.OK {
			by[r.Side] = append(by[r.Side], r)
		}
	}
	sum := map[string]summary{}
	for side, rs := range by {
		col := func(f func(result) float64) float64 {
			var xs []float64
			for _, r := range rs {
				xs = append(xs, f(r))
			}
			return median(xs)
		}
		sum[side] = summary{
			ok:   len(rs),
			rate: col(func(r result) float64 { return r.MsgsPerSec }),
			secs: col(func(r result) float64 { return r.Seconds }),
			cpu:  col(func(r result) float64 { return r.CPUSeconds }),
			cpuK: col(func(r result) float64 { return r.CPUPer1000 }),
			rss:  col(func(r result) float64 { return r.RSSPeakMiB }),
			pss:  col(func(r result) float64 { return r.PSSPeakMiB }),
			conn: col(func(r result) float64 { return float64(r.SinkConns) }),
			tls:  col(func(r result) float64 { return float64(r.SinkTLS) }),
			inj:  col(func(r result) float64 { return r.InjectSeconds }),
		}
	}
	fmt.Printf("\n=== %s medians: %d msgs × %d bytes, %d sessions, %d run(s) per side ===\n", j.section, j.n, j.size, j.sessions, runs)
	fmt.Printf("%-8s %5s %10s %9s %9s %14s %13s %13s %11s %11s\n",
		"relay", "ok", "msgs/s", "time s", "CPU s", "CPU s/1000msg", "RSS peak MiB", "PSS peak MiB", "sink conns", "sink TLS hs")
	for _, side := range []string{"outpost", "postfix"} {
		s, ok := sum[side]
		if !ok {
			note := "no successful run"
			if side == "outpost" && outpostErr != "" {
				note = "unavailable: " + firstLine(outpostErr)
			}
			if side == "postfix" && cfg.only == "outpost" || side == "outpost" && cfg.only == "postfix" {
				continue
			}
			fmt.Printf("%-8s %s\n", side, note)
			continue
		}
		fmt.Printf("%-8s %2d/%-2d %10.1f %9.2f %9.2f %14.3f %13.1f %13.1f %11.0f %11.0f\n",
			side, s.ok, runs, s.rate, s.secs, s.cpu, s.cpuK, s.rss, s.pss, s.conn, s.tls)
	}
	for _, side := range []string{"outpost", "postfix"} {
		if s, ok := sum[side]; ok && s.inj > 0 && s.secs < s.inj*1.05 {
			fmt.Printf("note: %s finished within 5%% of the injection's end (%.2fs of %.2fs): its rate is bounded by the injector\n", side, s.secs, s.inj)
		}
	}
	o, ok1 := sum["outpost"]
	p, ok2 := sum["postfix"]
	if ok1 && ok2 {
		fmt.Printf("ratios (Outpost / Postfix): messages/s %.2f×, CPU per message %.3f×, peak RSS %.2f×, peak PSS %.2f×\n",
			o.rate/p.rate, o.cpuK/p.cpuK, o.rss/p.rss, o.pss/p.pss)
	}
	return sum
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	// nearest rank
	k := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	if k < 0 {
		k = 0
	}
	if k >= len(sorted) {
		k = len(sorted) - 1
	}
	return sorted[k]
}

// --- policy host ----------------------------------------------------------------

func startPolicyHost(e *env) error {
	p := e.policy
	if p.srv != nil {
		return nil
	}
	if err := p.start("127.0.0.1:443"); err != nil {
		return fmt.Errorf("policy host on 127.0.0.1:443: %w", err)
	}
	registerCleanup(p.stop)
	return nil
}

// --- latency ----------------------------------------------------------------------

type latencyResult struct {
	Side      string  `json:"side"`
	Run       int     `json:"run"`
	OK        bool    `json:"ok"`
	Error     string  `json:"error,omitempty"`
	Sent      int     `json:"sent"`
	Delivered int     `json:"delivered"`
	P50ms     float64 `json:"p50_ms"`
	P90ms     float64 `json:"p90_ms"`
	P99ms     float64 `json:"p99_ms"`
	MaxMs     float64 `json:"max_ms"`
	InjectP50 float64 `json:"inject_p50_ms"` // MAIL → final 250, for reference
	CPUPer1k  float64 `json:"cpu_seconds_per_1000"`
	SinkConns int64   `json:"sink_connections"`
}

const latencyWarm = 5 // first messages of a run, not counted

func runLatencySection(cfg *config, e *env, sides []side, rep *report) {
	var all []latencyResult
	for r := 1; r <= cfg.runs; r++ {
		order := append([]side(nil), sides...)
		if r%2 == 0 {
			for i, k := 0, len(order)-1; i < k; i, k = i+1, k-1 {
				order[i], order[k] = order[k], order[i]
			}
		}
		for _, s := range order {
			lr := runLatency(cfg, e, s, r)
			if !lr.OK {
				rep.failed = true
				fmt.Printf("run %d %-8s FAILED: %s\n", r, s.name(), lr.Error)
			} else {
				fmt.Printf("run %d %-8s sent %d delivered %d  inject→delivered p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms  (MAIL→250 p50 %.2f ms)  CPU %.3f s/1000 msgs  sink conns %d\n",
					r, s.name(), lr.Sent, lr.Delivered, lr.P50ms, lr.P90ms, lr.P99ms, lr.MaxMs, lr.InjectP50, lr.CPUPer1k, lr.SinkConns)
			}
			all = append(all, lr)
		}
	}
	rep.Latency = append(rep.Latency, all...)
	fmt.Printf("\n=== latency medians over runs (per-run percentiles, first %d messages of a run excluded) ===\n", latencyWarm)
	fmt.Printf("%-8s %5s %10s %10s %10s %10s %14s\n", "relay", "ok", "p50 ms", "p90 ms", "p99 ms", "max ms", "CPU s/1000msg")
	med := map[string][]float64{}
	for _, side := range []string{"outpost", "postfix"} {
		var p50, p90, p99, mx, cpu []float64
		for _, l := range all {
			if l.Side == side && l.OK {
				p50, p90, p99, mx, cpu = append(p50, l.P50ms), append(p90, l.P90ms), append(p99, l.P99ms), append(mx, l.MaxMs), append(cpu, l.CPUPer1k)
			}
		}
		if len(p50) == 0 {
			continue
		}
		med[side] = []float64{median(p50), median(p90), median(p99), median(mx), median(cpu)}
		fmt.Printf("%-8s %2d/%-2d %10.2f %10.2f %10.2f %10.2f %14.3f\n", side, len(p50), cfg.runs, med[side][0], med[side][1], med[side][2], med[side][3], med[side][4])
	}
	if o, p := med["outpost"], med["postfix"]; o != nil && p != nil {
		fmt.Printf("ratios (Outpost / Postfix): p50 %.2f×, p99 %.2f×\n", o[0]/p[0], o[2]/p[2])
	}
	if o := med["outpost"]; o != nil {
		rep.target("latency p50 at 5 msg/s, verified TLS ≤ 5 ms", o[0] <= 5, "%.2f ms", o[0])
	}
}

func runLatency(cfg *config, e *env, s side, run int) (lr latencyResult) {
	lr = latencyResult{Side: s.name(), Run: run}
	rd := filepath.Join(e.work, fmt.Sprintf("latency-%s-%d", s.name(), run))
	os.MkdirAll(rd, 0o755)
	inst, err := s.start(run, rd, kindRelay)
	if err != nil {
		lr.Error = "start: " + err.Error()
		return
	}
	defer inst.stop()
	time.Sleep(500 * time.Millisecond)
	if err := resetSink(e); err != nil {
		lr.Error = err.Error()
		return
	}
	if err := sinkPost(e, "/track?on=1"); err != nil {
		lr.Error = err.Error()
		return
	}
	defer sinkPost(e, "/track?on=0")
	ctx, cancel := context.WithTimeout(context.Background(), cfg.latDuration+2*time.Minute)
	defer cancel()
	c, err := dialSMTP(ctx, inst.addr, "client.bench-inject.test")
	if err != nil {
		lr.Error = "connect: " + err.Error()
		return
	}
	interval := time.Duration(float64(time.Second) / cfg.latRate)
	total := int(cfg.latDuration/interval) + latencyWarm
	injected := map[string]time.Time{}
	var mail []float64
	cpu0, _ := inst.acct.cpu()
	t0 := time.Now()
	for i := 0; i < total; i++ {
		if d := time.Until(t0.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		id := fmt.Sprintf("<lat-%s-%d-%d@bench-inject.test>", s.name(), run, i)
		body := makeBody(id, "rcpt@bench.test", 4096)
		ts := time.Now()
		if err := c.send("from@client.bench-inject.test", "rcpt@bench.test", body); err != nil {
			c.c.Close()
			lr.Error = fmt.Sprintf("message %d: %v", i, err)
			return
		}
		if i >= latencyWarm {
			injected[id] = time.Now()
			mail = append(mail, float64(time.Since(ts).Microseconds())/1000)
		}
	}
	c.quit()
	lr.Sent = len(injected)
	// Wait for the stragglers.
	var arr map[string]int64
	deadline := time.Now().Add(60 * time.Second)
	for {
		arr, err = sinkArrivals(e)
		if err != nil {
			lr.Error = "arrivals: " + err.Error()
			return
		}
		got := 0
		for id := range injected {
			if _, ok := arr[id]; ok {
				got++
			}
		}
		lr.Delivered = got
		if got == len(injected) || time.Now().After(deadline) || !inst.alive() {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(cfg.settle)
	cpu1, _ := inst.acct.cpu()
	var lat []float64
	for id, t := range injected {
		if a, ok := arr[id]; ok {
			lat = append(lat, float64(a-t.UnixNano())/1e6)
		}
	}
	sort.Float64s(lat)
	sort.Float64s(mail)
	if lr.Delivered != lr.Sent {
		lr.Error = fmt.Sprintf("%d of %d messages not delivered within 60 s", lr.Sent-lr.Delivered, lr.Sent)
		return
	}
	st, _ := getSinkStats(e)
	lr.SinkConns = st.Connections
	lr.OK = true
	lr.P50ms, lr.P90ms, lr.P99ms, lr.MaxMs = percentile(lat, 50), percentile(lat, 90), percentile(lat, 99), lat[len(lat)-1]
	lr.InjectP50 = percentile(mail, 50)
	lr.CPUPer1k = (cpu1 - cpu0).Seconds() / float64(total) * 1000
	return lr
}

func sinkPost(e *env, path string) error {
	resp, err := httpc.Post("http://"+e.sinkStats+path, "text/plain", nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("sink %s: %s", path, resp.Status)
	}
	return nil
}

func sinkArrivals(e *env) (map[string]int64, error) {
	resp, err := httpc.Get("http://" + e.sinkStats + "/arrivals")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("sink /arrivals: %s", resp.Status)
	}
	m := map[string]int64{}
	return m, json.NewDecoder(resp.Body).Decode(&m)
}

// --- ceiling ------------------------------------------------------------------------

type ceilingResult struct {
	Size       int     `json:"size"`
	Run        int     `json:"run"`
	Messages   int     `json:"messages"`
	Seconds    float64 `json:"seconds"`
	MsgsPerSec float64 `json:"msgs_per_sec"`
	Error      string  `json:"error,omitempty"`
}

func runCeilingSection(cfg *config, e *env, rep *report) {
	pem, err := os.ReadFile(e.caFile)
	if err != nil {
		fmt.Printf("ceiling: %v\n", err)
		rep.failed = true
		return
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	addr := fmt.Sprintf("127.0.0.1:%d", e.sinkPort)
	type sz struct {
		size, n int
		vs      string
	}
	sizes := []sz{{cfg.size, cfg.ceilingN, "relay"}, {cfg.largeSize, max(cfg.ceilingN/5, 1), "relay-large"}}
	fmt.Printf("%-8s %8s %5s %10s\n", "size", "msgs", "run", "msgs/s")
	for _, z := range sizes {
		var rates []float64
		for r := 1; r <= cfg.runs; r++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			el, err := ceilingRun(ctx, addr, roots, z.n, cfg.sessions, z.size)
			cancel()
			cr := ceilingResult{Size: z.size, Run: r, Messages: z.n, Seconds: el.Seconds()}
			if err != nil {
				cr.Error = err.Error()
				rep.failed = true
				fmt.Printf("%-8d %8d %5d FAILED: %v\n", z.size, z.n, r, err)
			} else {
				cr.MsgsPerSec = float64(z.n) / el.Seconds()
				rates = append(rates, cr.MsgsPerSec)
				fmt.Printf("%-8d %8d %5d %10.0f\n", z.size, z.n, r, cr.MsgsPerSec)
			}
			rep.Ceiling = append(rep.Ceiling, cr)
		}
		m := median(rates)
		line := fmt.Sprintf("ceiling %d B: median %.0f msgs/s", z.size, m)
		if o, ok := rep.medians[z.vs]["outpost"]; ok && m > 0 {
			line += fmt.Sprintf("; Outpost relay (%s) %.0f msgs/s = %.1f%% of the ceiling", z.vs, o.rate, 100*o.rate/m)
		}
		if p, ok := rep.medians[z.vs]["postfix"]; ok && m > 0 {
			line += fmt.Sprintf("; Postfix %.1f%%", 100*p.rate/m)
		}
		fmt.Println(line)
	}
}

// --- memory ---------------------------------------------------------------------------

type memoryResult struct {
	Side         string  `json:"side"`
	Backlog      int     `json:"backlog"`
	Run          int     `json:"run"`
	OK           bool    `json:"ok"`
	Error        string  `json:"error,omitempty"`
	InjectSecs   float64 `json:"inject_seconds"`
	Queued       int     `json:"queued_files,omitempty"`
	RSSMiB       float64 `json:"rss_mib_steady"`
	PSSMiB       float64 `json:"pss_mib_steady"`
	RSSPeakMiB   float64 `json:"rss_mib_peak"`
	PSSPeakMiB   float64 `json:"pss_mib_peak"`
	Procs        int     `json:"procs"`
	SinkMessages int64   `json:"sink_messages"`
}

func runMemorySection(cfg *config, e *env, sides []side, rep *report) {
	var backlogs []int
	for _, f := range strings.Split(cfg.memBacklogs, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			backlogs = append(backlogs, n)
		}
	}
	var all []memoryResult
	for _, n := range backlogs {
		for r := 1; r <= cfg.memRuns; r++ {
			for _, s := range sides {
				mr := runMemory(cfg, e, s, n, r)
				if !mr.OK {
					rep.failed = true
					fmt.Printf("backlog %d run %d %-8s FAILED: %s\n", n, r, s.name(), mr.Error)
				} else {
					fmt.Printf("backlog %d run %d %-8s accepted in %.1fs  steady RSS %.1f MiB  PSS %.1f MiB  (peak RSS %.1f, PSS %.1f)  procs %d  queue files %d\n",
						n, r, s.name(), mr.InjectSecs, mr.RSSMiB, mr.PSSMiB, mr.RSSPeakMiB, mr.PSSPeakMiB, mr.Procs, mr.Queued)
				}
				all = append(all, mr)
			}
		}
	}
	rep.Memory = append(rep.Memory, all...)
	fmt.Printf("\n=== memory medians (steady state after the backlog was accepted + %v) ===\n", cfg.memSettle)
	fmt.Printf("%-8s %8s %12s %12s %12s %12s\n", "relay", "backlog", "RSS MiB", "PSS MiB", "peak RSS", "peak PSS")
	for _, n := range backlogs {
		med := map[string][4]float64{}
		for _, side := range []string{"outpost", "postfix"} {
			var a, b, c, d []float64
			for _, m := range all {
				if m.Side == side && m.Backlog == n && m.OK {
					a, b, c, d = append(a, m.RSSMiB), append(b, m.PSSMiB), append(c, m.RSSPeakMiB), append(d, m.PSSPeakMiB)
				}
			}
			if len(a) == 0 {
				continue
			}
			med[side] = [4]float64{median(a), median(b), median(c), median(d)}
			v := med[side]
			fmt.Printf("%-8s %8d %12.1f %12.1f %12.1f %12.1f\n", side, n, v[0], v[1], v[2], v[3])
		}
		o, ok1 := med["outpost"]
		p, ok2 := med["postfix"]
		if ok1 && ok2 {
			fmt.Printf("ratio Outpost PSS / Postfix PSS at %d: steady %.2f×, peak %.2f× (Outpost RSS / Postfix PSS: %.2f×)\n", n, o[1]/p[1], o[3]/p[3], o[0]/p[1])
			rep.target(fmt.Sprintf("memory with %d queued ≤ 1/3 Postfix PSS", n), o[1]/p[1] <= 1.0/3, "%.2f× (%.0f vs %.0f MiB)", o[1]/p[1], o[1], p[1])
		}
	}
}

func runMemory(cfg *config, e *env, s side, backlog, run int) (mr memoryResult) {
	mr = memoryResult{Side: s.name(), Backlog: backlog, Run: run}
	rd := filepath.Join(e.work, fmt.Sprintf("memory%d-%s-%d", backlog, s.name(), run))
	os.MkdirAll(rd, 0o755)
	inst, err := s.start(run, rd, kindDead)
	if err != nil {
		mr.Error = "start: " + err.Error()
		return
	}
	defer func() {
		inst.stop()
		if mr.OK && !cfg.keep {
			os.RemoveAll(rd) // a 100 000-message spool is large
		}
	}()
	time.Sleep(500 * time.Millisecond)
	resetSink(e)
	mem := sampleMemory(inst.acct, 250*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second+time.Duration(backlog)*20*time.Millisecond)
	defer cancel()
	args := []string{"-s", fmt.Sprint(cfg.sessions), "-m", fmt.Sprint(backlog), "-l", "4096",
		"-M", "client.bench-inject.test", "-f", "from@client.bench-inject.test", "-t", "rcpt@dead.bench.test", inst.addr}
	logf, _ := os.Create(filepath.Join(rd, "smtp-source.log"))
	inj := exec.CommandContext(ctx, "smtp-source", args...)
	inj.Stdout, inj.Stderr = logf, logf
	inj.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	t0 := time.Now()
	err = inj.Run()
	logf.Close()
	mr.InjectSecs = time.Since(t0).Seconds()
	if err != nil {
		mem.finish()
		mr.Error = fmt.Sprintf("smtp-source: %v\n%s", err, tail(filepath.Join(rd, "smtp-source.log"), 5))
		return
	}
	if b, _ := os.ReadFile(filepath.Join(rd, "smtp-source.log")); len(b) > 0 {
		// smtp-source reports refused transactions on stderr.
		mr.Error = "smtp-source: " + firstLine(string(b))
		mem.finish()
		return
	}
	time.Sleep(cfg.memSettle)
	peaks := mem.finish()
	// Steady state: the highest of 10 samples over 5 s.
	steady := sampleMemory(inst.acct, 500*time.Millisecond)
	time.Sleep(5 * time.Second)
	sv := steady.finish()
	if !inst.alive() {
		mr.Error = "relay exited"
		return
	}
	st, _ := getSinkStats(e)
	mr.SinkMessages = st.Messages
	if s.name() == "postfix" {
		mr.Queued = postfixQueueCount(rd)
	}
	var hwm int64
	if p := inst.mainPID(); p > 0 {
		_, _, hwm = readMem(p)
	}
	mr.OK = true
	mr.RSSMiB, mr.PSSMiB = float64(sv.rssKB)/1024, float64(sv.pssKB)/1024
	mr.RSSPeakMiB, mr.PSSPeakMiB = float64(max(peaks.rssKB, sv.rssKB, hwm))/1024, float64(max(peaks.pssKB, sv.pssKB))/1024
	mr.Procs = sv.procs
	return mr
}

// --- go benchmark of the policy decision ------------------------------------------------

type goBenchResult struct {
	NsPerOp     float64   `json:"ns_per_op_median"`
	Samples     []float64 `json:"ns_per_op"`
	BytesPerOp  float64   `json:"bytes_per_op,omitempty"`
	AllocsPerOp float64   `json:"allocs_per_op,omitempty"`
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op(?:.*?\s([\d.]+) B/op\s+([\d.]+) allocs/op)?`)

func runGoBench(root string, rep *report) {
	cmd := exec.Command("go", "test", "-run", "^$", "-bench", ".", "-count", "5", "./internal/mtasts")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		fmt.Printf("go test -bench ./internal/mtasts: %v\n%s\n", err, out)
		rep.failed = true
		return
	}
	rep.GoBench = map[string]goBenchResult{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		r := rep.GoBench[m[1]]
		v, _ := strconv.ParseFloat(m[2], 64)
		r.Samples = append(r.Samples, v)
		if m[3] != "" {
			r.BytesPerOp, _ = strconv.ParseFloat(m[3], 64)
			r.AllocsPerOp, _ = strconv.ParseFloat(m[4], 64)
		}
		rep.GoBench[m[1]] = r
	}
	var names []string
	for n, r := range rep.GoBench {
		r.NsPerOp = median(r.Samples)
		rep.GoBench[n] = r
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Printf("%-28s %14s %10s %12s\n", "benchmark (median of 5)", "ns/op", "B/op", "allocs/op")
	for _, n := range names {
		r := rep.GoBench[n]
		fmt.Printf("%-28s %14.1f %10.0f %12.0f\n", n, r.NsPerOp, r.BytesPerOp, r.AllocsPerOp)
	}
	if r, ok := rep.GoBench["BenchmarkGetWarm"]; ok {
		rep.target("warm-cache policy decision ≤ 2 µs", r.NsPerOp <= 2000, "%.0f ns", r.NsPerOp)
	}
}
