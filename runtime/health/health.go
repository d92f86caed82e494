// Package health serves the operational HTTP endpoints of a host: /healthz
// (the process is alive), /readyz (it can do its work), /metrics
// (Prometheus) and /debug/pprof (profiles).
package health

import (
	"context"
	"fmt"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness condition; nil means satisfied.
type Check struct {
	Name string
	Fn   func(ctx context.Context) error
}

// Handler routes the endpoints.
type Handler struct {
	mux      *http.ServeMux
	checks   []Check
	draining atomic.Bool
	timeout  time.Duration
}

// New returns a Handler reporting metrics from g and readiness from checks.
func New(g prometheus.Gatherer, checks ...Check) *Handler {
	h := &Handler{mux: http.NewServeMux(), checks: checks, timeout: 2 * time.Second}
	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	h.mux.HandleFunc("GET /readyz", h.readyz)
	h.mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	return h
}

// ServeProfiles adds /debug/pprof, for finding where the time goes (go tool
// pprof http://host:8080/debug/pprof/profile). Off unless asked for
// (PPROF=on): profiles show internals and cost CPU to take.
func (h *Handler) ServeProfiles() {
	h.mux.HandleFunc("/debug/pprof/", pprof.Index)
	h.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	h.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	h.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
}

// Draining makes /readyz fail, so a load balancer or Kubernetes stops
// routing here while the host drains.
func (h *Handler) Draining() { h.draining.Store(true) }

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

func (h *Handler) readyz(w http.ResponseWriter, r *http.Request) {
	if h.draining.Load() {
		http.Error(w, "draining", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
	defer cancel()
	var failed []string
	for _, c := range h.checks {
		if err := c.Fn(ctx); err != nil {
			failed = append(failed, c.Name+": "+err.Error())
		}
	}
	if len(failed) > 0 {
		http.Error(w, strings.Join(failed, "\n"), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}
