package app

import (
	"bufio"
	"bytes"
	"testing"
)

// The exposition is the Prometheus text format: HELP and TYPE lines, one
// sample per series, labels in name order with escaped values.
func TestWriteMetrics(t *testing.T) {
	vec := newCounterVec("outcome", "mode")
	vec.WithLabelValues("success", "preferred").Inc()
	vec.WithLabelValues("success", "preferred").Inc()
	vec.WithLabelValues("failed", `we"ird\`).Inc()
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	writeMetrics(w, []metric{
		{name: "outpost_x_total", help: "Line one\nline two.", kind: "counter", value: func() float64 { return 3 }},
		{name: "outpost_tls_connections_total", help: "By outcome.", kind: "counter", vec: vec},
		{name: "outpost_age_seconds", help: "Age.", kind: "gauge", value: func() float64 { return 0.25 }},
	})
	w.Flush()
	want := `# HELP outpost_x_total Line one\nline two.
# TYPE outpost_x_total counter
outpost_x_total 3
# HELP outpost_tls_connections_total By outcome.
# TYPE outpost_tls_connections_total counter
outpost_tls_connections_total{mode="preferred",outcome="success"} 2
outpost_tls_connections_total{mode="we\"ird\\",outcome="failed"} 1
# HELP outpost_age_seconds Age.
# TYPE outpost_age_seconds gauge
outpost_age_seconds 0.25
`
	if got := buf.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	if rss := processRSS(); rss <= 0 {
		t.Errorf("resident memory %v", rss)
	}
	if cpu := processCPU(); cpu <= 0 {
		t.Errorf("CPU seconds %v", cpu)
	}
	if live := runtimeMetric("/gc/heap/live:bytes"); live < 0 {
		t.Errorf("heap live %v", live)
	}
}
