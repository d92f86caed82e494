package config_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/orderflow/orderflow/runtime/config"
)

func TestDefaults(t *testing.T) {
	c, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	if c.NATSURL != "" || c.WorkerPoolSize != 10 || c.StreamReplicas != 1 || c.HTTPAddr != ":8080" ||
		c.PaymentMaxOrderMinor != 1_000_000 || c.DrainTimeout >= 10*time.Second || len(c.Functions) != 0 ||
		c.OutageHorizon != 2*time.Minute || !c.CreateMissing {
		t.Errorf("defaults = %+v", c)
	}
}

// Every attempt may wait out an outage, so attempts × OUTAGE_HORIZON counts
// towards the retry span that must stay inside the duplicate window.
func TestOutageHorizonCountsPerAttempt(t *testing.T) {
	t.Setenv("OUTAGE_HORIZON", "5m")
	t.Setenv("RETRY_POLICY_PAYMENTS_CHARGE", "attempts=20")
	_, err := config.Load()
	if err == nil || !strings.Contains(err.Error(), "RETRY_POLICY_PAYMENTS_CHARGE") || !strings.Contains(err.Error(), "OUTAGE_HORIZON") {
		t.Errorf("Load = %v, want the override named with the horizon", err)
	}
	t.Setenv("EVENT_DUPLICATE_WINDOW", "3h")
	if _, err := config.Load(); err != nil {
		t.Errorf("with a window that outlasts 20 × 5m: %v", err)
	}
}

func TestRetryOverrides(t *testing.T) {
	t.Setenv("RETRY_POLICY", "attempts=4,initial=10ms,max=1s")
	t.Setenv("RETRY_POLICY_PAYMENTS_CHARGE", "attempts=9")
	c, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	if c.Default().MaxAttempts != 4 {
		t.Errorf("default policy %v", c.Default())
	}
	p, ok := c.Policies()["payments.charge"]
	if !ok || p.MaxAttempts != 9 || p.Initial != 10*time.Millisecond {
		t.Errorf("override %v (%v), want 9 attempts on the default's backoff", p, ok)
	}
}

func TestParse(t *testing.T) {
	t.Setenv("PPROF", "on")
	t.Setenv("FUNCTIONS", "orders,inventory.get")
	t.Setenv("PAYMENT_LATENCY", "300ms")
	t.Setenv("LOG_LEVEL", "debug")
	c, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Functions) != 2 || c.Functions[1] != "inventory.get" || c.PaymentLatency != 300*time.Millisecond || c.LogLevel.String() != "DEBUG" || !c.PProf {
		t.Errorf("parsed %+v", c)
	}
}

func TestBadValuesNameTheVariable(t *testing.T) {
	tests := []struct{ name, value string }{
		{"WORKER_POOL_SIZE", "ten"},
		{"WORKER_POOL_SIZE", "0"},
		{"STREAM_REPLICAS", "7"},
		{"PAYMENT_FAILURE_RATE", "1.5"},
		{"PAYMENT_FAILURE_RATE", "often"},
		{"PAYMENT_LATENCY", "300"},
		{"PAYMENT_LATENCY", "-1s"},
		{"REQUEST_TIMEOUT", "0s"},
		{"HTTP_ADDR", "8080"},
		{"LOG_LEVEL", "loud"},
		{"EVENT_DUPLICATE_WINDOW", "1ms"},
		{"ACK_WAIT", "2s"}, // not above REQUEST_TIMEOUT
		{"RETRY_POLICY", "attempts=many"},
		{"RETRY_POLICY_PAYMENTS_CHARGE", "jitter=3"},
		{"RETRY_POLICY_PAYMENTS_CHARGE", "attempts=40,initial=1m,max=1h"}, // outlasts the duplicate window
		{"OUTAGE_HORIZON", "-1s"},
		{"OUTAGE_HORIZON", "15m"}, // 5 attempts × 15m outlasts the 1h duplicate window
		{"CREATE_MISSING", "perhaps"},
		{"PPROF", "sometimes"},
		{"MAX_PENDING_ORDERS", "-1"},
		{"PAYMENT_FAILURE_RATE", "NaN"},
		{"PAYMENT_MAX_ORDER_MINOR", "0"},
		{"RETRY_POLICY", "multiplier=NaN"},
		{"RETRY_POLICY", "jitter=NaN"},
		{"RETRY_POLICY", "multiplier=+Inf"},
		{"NATS_URL", "nats://user:pw@host:notaport"},
		{"NATS_URL", "http://example.com:4222"},
		{"NATS_URL", "nats://"},
		{"NATS_CREDS", "/no/such/file.creds"},
		{"NATS_CERT", "/no/such/cert.pem"},
	}
	for _, tt := range tests {
		t.Run(tt.name+"="+tt.value, func(t *testing.T) {
			t.Setenv(tt.name, tt.value)
			_, err := config.Load()
			if !errors.Is(err, config.ErrInvalid) {
				t.Fatalf("Load = %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.name) {
				t.Errorf("error %q does not name %s", err, tt.name)
			}
		})
	}
}

// A bad NATS_URL is named without its password.
func TestBadURLHidesPassword(t *testing.T) {
	t.Setenv("NATS_URL", "nats://orders:s3cret@[::1")
	_, err := config.Load()
	if err == nil || !strings.Contains(err.Error(), "NATS_URL") || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("Load = %v, want NATS_URL named and the password hidden", err)
	}
}
