package app

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsServer serves Prometheus /metrics.
type metricsServer struct{ srv *http.Server }

func startMetrics(addr string, a *App) (*metricsServer, error) {
	reg := prometheus.NewRegistry()
	st := &a.q.Stats
	counter := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "outpost", Name: name, Help: help}, f))
	}
	counter("messages_accepted_total", "Messages accepted into the queue (including DSNs).", func() float64 { return float64(st.Messages.Load()) })
	counter("recipients_delivered_total", "Recipients delivered.", func() float64 { return float64(st.Delivered.Load()) })
	counter("recipients_deferred_total", "Temporary recipient failures (each deferral counts).", func() float64 { return float64(st.Deferred.Load()) })
	counter("recipients_bounced_total", "Recipients bounced.", func() float64 { return float64(st.Bounced.Load()) })
	counter("delivery_connections_total", "Delivery connections opened.", func() float64 { return float64(st.Connections.Load()) })
	counter("delivery_connections_reused_total", "Idle delivery connections taken from the pool (by any destination behind the same host and TLS requirement).", func() float64 { return float64(st.Reused.Load()) })
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "outpost", Name: "queue_messages", Help: "Messages in the queue."},
		func() float64 { n, _ := a.q.Size(); return float64(n) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "outpost", Name: "queue_messages_in_memory", Help: "Queued messages held in memory (the others wait for a retry on disk only)."},
		func() float64 { n, _ := a.q.Resident(); return float64(n) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "outpost", Name: "queue_oldest_seconds", Help: "Age of the oldest queued message."},
		func() float64 { _, age := a.q.Size(); return age.Seconds() }))
	reg.MustRegister(a.tlsOutcomes)
	reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	m := &metricsServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go m.srv.Serve(ln)
	return m, nil
}

func (m *metricsServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return m.srv.Shutdown(ctx)
}
