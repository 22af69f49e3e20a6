package app

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	goruntime "runtime"
	"runtime/metrics"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The metrics endpoint writes the Prometheus text exposition format
// (version 0.0.4) itself. It used to be github.com/prometheus/client_golang,
// which with its protobuf dependency made up a sixth of the binary and
// ~1.8 MiB of the daemon's resident memory for a dozen numbers.

// metric is one exposed series family.
type metric struct {
	name, help, kind string // kind: counter or gauge
	value            func() float64
	vec              *counterVec // labelled counters instead of value
}

// counterVec counts by label values.
type counterVec struct {
	labels []string
	mu     sync.Mutex
	m      map[string]*labelled
}

type labelled struct {
	values []string
	n      atomic.Uint64
}

// newCounterVec makes a counter family with these label names.
func newCounterVec(labels ...string) *counterVec {
	return &counterVec{labels: labels, m: map[string]*labelled{}}
}

// WithLabelValues returns the counter for these label values (in the
// order of the label names).
func (v *counterVec) WithLabelValues(values ...string) *labelled {
	key := strings.Join(values, "\x00")
	v.mu.Lock()
	defer v.mu.Unlock()
	c := v.m[key]
	if c == nil {
		c = &labelled{values: append([]string(nil), values...)}
		v.m[key] = c
	}
	return c
}

// Inc adds one.
func (c *labelled) Inc() { c.n.Add(1) }

// metricsServer serves Prometheus /metrics.
type metricsServer struct{ srv *http.Server }

func (a *App) metricList() []metric {
	st := &a.q.Stats
	counter := func(name, help string, f func() float64) metric {
		return metric{name: "outpost_" + name, help: help, kind: "counter", value: f}
	}
	gauge := func(name, help string, f func() float64) metric {
		return metric{name: name, help: help, kind: "gauge", value: f}
	}
	start := float64(time.Now().Unix())
	return []metric{
		counter("messages_accepted_total", "Messages accepted into the queue (including DSNs).", func() float64 { return float64(st.Messages.Load()) }),
		counter("recipients_delivered_total", "Recipients delivered.", func() float64 { return float64(st.Delivered.Load()) }),
		counter("recipients_deferred_total", "Temporary recipient failures (each deferral counts).", func() float64 { return float64(st.Deferred.Load()) }),
		counter("recipients_bounced_total", "Recipients bounced.", func() float64 { return float64(st.Bounced.Load()) }),
		counter("delivery_connections_total", "Delivery connections opened.", func() float64 { return float64(st.Connections.Load()) }),
		counter("delivery_connections_reused_total", "Idle delivery connections taken from the pool (by any destination behind the same host and TLS requirement).", func() float64 { return float64(st.Reused.Load()) }),
		{name: "outpost_tls_connections_total", help: "Delivery connection attempts by TLS outcome (success, failed, plaintext) and destination TLS mode.", kind: "counter", vec: a.tlsOutcomes},
		gauge("outpost_queue_messages", "Messages in the queue.", func() float64 { n, _ := a.q.Size(); return float64(n) }),
		gauge("outpost_queue_messages_in_memory", "Queued messages held in memory (the others wait for a retry on disk only).", func() float64 { n, _ := a.q.Resident(); return float64(n) }),
		gauge("outpost_queue_oldest_seconds", "Age of the oldest queued message.", func() float64 { _, age := a.q.Size(); return age.Seconds() }),
		gauge("go_goroutines", "Number of goroutines that currently exist.", func() float64 { return float64(goruntime.NumGoroutine()) }),
		gauge("go_heap_live_bytes", "Heap memory occupied by live objects at the last garbage collection.", func() float64 { return runtimeMetric("/gc/heap/live:bytes") }),
		gauge("go_memory_total_bytes", "All memory mapped by the Go runtime (runtime/metrics /memory/classes/total:bytes).", func() float64 { return runtimeMetric("/memory/classes/total:bytes") }),
		{name: "process_cpu_seconds_total", help: "Total user and system CPU time spent in seconds.", kind: "counter", value: processCPU},
		gauge("process_resident_memory_bytes", "Resident memory size in bytes.", processRSS),
		gauge("process_open_fds", "Number of open file descriptors.", func() float64 {
			ents, err := os.ReadDir("/proc/self/fd")
			if err != nil {
				return -1
			}
			return float64(len(ents))
		}),
		gauge("process_start_time_seconds", "Start time of the process since the Unix epoch in seconds.", func() float64 { return start }),
	}
}

func runtimeMetric(name string) float64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	if s[0].Value.Kind() == metrics.KindUint64 {
		return float64(s[0].Value.Uint64())
	}
	return -1
}

func processCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return -1
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

func processRSS() float64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return -1
	}
	pages, err := strconv.ParseFloat(f[1], 64)
	if err != nil {
		return -1
	}
	return pages * float64(os.Getpagesize())
}

// writeMetrics writes the text exposition format.
func writeMetrics(w *bufio.Writer, list []metric) {
	num := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	for _, m := range list {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", m.name, escapeHelp(m.help), m.name, m.kind)
		if m.vec == nil {
			fmt.Fprintf(w, "%s %s\n", m.name, num(m.value()))
			continue
		}
		m.vec.mu.Lock()
		rows := make([]*labelled, 0, len(m.vec.m))
		for _, c := range m.vec.m {
			rows = append(rows, c)
		}
		m.vec.mu.Unlock()
		// Labels in name order, rows in a stable order.
		order := make([]int, len(m.vec.labels))
		for i := range order {
			order[i] = i
		}
		sort.Slice(order, func(i, j int) bool { return m.vec.labels[order[i]] < m.vec.labels[order[j]] })
		lines := make([]string, 0, len(rows))
		for _, c := range rows {
			var b strings.Builder
			b.WriteString(m.name + "{")
			for k, i := range order {
				if k > 0 {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, "%s=\"%s\"", m.vec.labels[i], escapeLabel(c.values[i]))
			}
			fmt.Fprintf(&b, "} %d", c.n.Load())
			lines = append(lines, b.String())
		}
		sort.Strings(lines)
		for _, l := range lines {
			w.WriteString(l + "\n")
		}
	}
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeHelp(s string) string  { return helpEscaper.Replace(s) }
func escapeLabel(s string) string { return labelEscaper.Replace(s) }

func startMetrics(addr string, a *App) (*metricsServer, error) {
	list := a.metricList()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w := bufio.NewWriter(rw)
		writeMetrics(w, list)
		w.Flush()
	})
	m := &metricsServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go m.srv.Serve(ln)
	return m, nil
}

func (m *metricsServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return m.srv.Shutdown(ctx)
}
