package health_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/orderflow/runtime/health"
)

func get(h http.Handler, path string) (int, string) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func TestReadiness(t *testing.T) {
	var failing error
	h := health.New(prometheus.NewRegistry(), health.Check{Name: "nats", Fn: func(context.Context) error { return failing }})
	if code, _ := get(h, "/readyz"); code != 200 {
		t.Errorf("ready: %d", code)
	}
	failing = errors.New("not connected")
	if code, body := get(h, "/readyz"); code != 503 || !strings.Contains(body, "nats: not connected") {
		t.Errorf("failing check: %d %q", code, body)
	}
	if code, _ := get(h, "/healthz"); code != 200 {
		t.Errorf("healthz with a failing readiness check: %d; liveness must not depend on it", code)
	}
	failing = nil
	h.Draining()
	if code, body := get(h, "/readyz"); code != 503 || !strings.Contains(body, "draining") {
		t.Errorf("draining: %d %q", code, body)
	}
	if code, body := get(h, "/metrics"); code != 200 {
		t.Errorf("metrics: %d %q", code, body)
	}
}
