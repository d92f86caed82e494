package host_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/host"
	"github.com/orderflow/orderflow/runtime/middleware"
	"github.com/orderflow/orderflow/runtime/retry"
	"github.com/orderflow/orderflow/runtime/runtimetest"
)

var testService = function.Service{Name: "stock", Version: "1.2.3", Description: "test service"}

// lookup is a function whose behaviour follows the SKU it is asked for.
func lookup(_ context.Context, req *ordersv1.GetStockRequest) (*ordersv1.GetStockResponse, error) {
	switch sku := req.GetSku(); {
	case sku == "":
		return nil, function.Invalid("sku", "required")
	case sku == "missing":
		return nil, fmt.Errorf("sku %s: %w", sku, function.ErrNotFound)
	case sku == "taken":
		return nil, fmt.Errorf("sku %s: %w", sku, function.ErrConflict)
	case sku == "boom":
		return nil, errors.New("disk on fire")
	case sku == "panic":
		panic("bug")
	case sku == "nil":
		return nil, nil
	default:
		return &ordersv1.GetStockResponse{Sku: sku, Available: int32(len(sku))}, nil
	}
}

func startHost(t testing.TB, nc *nats.Conn, defs []function.Definition, opts ...host.Option) *host.Host {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	opts = append([]host.Option{host.WithMiddleware(middleware.Recover(log), middleware.Timeout(5*time.Second))}, opts...)
	h, err := host.New(nc, opts...)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range defs {
		if err := h.Add(testService, d); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Drain(context.Background()) })
	return h
}

func call(t *testing.T, nc *nats.Conn, sku string, enc runtimetest.Encoding) (*ordersv1.GetStockResponse, error) {
	t.Helper()
	return runtimetest.Call[ordersv1.GetStockResponse](context.Background(), nc, "stock.get",
		&ordersv1.GetStockRequest{Sku: sku}, runtimetest.Request{Encoding: enc})
}

func TestServesBothEncodings(t *testing.T) {
	nc := runtimetest.Connect(t, runtimetest.StartNATS(t))
	startHost(t, nc, []function.Definition{function.New("get", lookup)})
	for _, enc := range []runtimetest.Encoding{runtimetest.JSON, runtimetest.Protobuf} {
		got, err := call(t, nc, "SKU-1", enc)
		if err != nil {
			t.Fatalf("encoding %d: %v", enc, err)
		}
		if got.GetSku() != "SKU-1" || got.GetAvailable() != 5 {
			t.Errorf("encoding %d: got %v", enc, got)
		}
	}
	// The reply is in the request's encoding, and says so.
	for body, want := range map[string]string{`{"sku":"ab"}`: "application/json", "\x0a\x02ab": "application/protobuf"} {
		m, err := nc.Request("stock.get", []byte(body), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Header.Get("Content-Type"); got != want {
			t.Errorf("reply to %q: Content-Type %q, want %q", body, got, want)
		}
		if want == "application/json" && !strings.Contains(string(m.Data), `"reserved":0`) {
			t.Errorf("JSON reply %s hides zero values", m.Data)
		}
	}
}

// A function marked NotIdempotent is called once, even when a config
// override asks for retries.
func TestNotIdempotentIsNeverRetried(t *testing.T) {
	nc := runtimetest.Connect(t, runtimetest.StartNATS(t))
	var calls atomic.Int32
	fail := func(context.Context, *ordersv1.GetStockRequest) (*ordersv1.GetStockResponse, error) {
		calls.Add(1)
		return nil, errors.New("lost reply")
	}
	startHost(t, nc, []function.Definition{function.New("get", fail, function.NotIdempotent())},
		host.WithRetryFor("stock.get", retry.Policy{MaxAttempts: 5, Initial: time.Millisecond, Multiplier: 1, Max: time.Millisecond}))
	if _, err := call(t, nc, "SKU-1", runtimetest.Protobuf); runtimetest.Code(err) != 500 {
		t.Fatalf("call = %v, want a 500", err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("called %d times, want once", n)
	}
}

func TestErrorsBecomeMicroErrors(t *testing.T) {
	nc := runtimetest.Connect(t, runtimetest.StartNATS(t))
	startHost(t, nc, []function.Definition{function.New("get", lookup)}, host.WithMaxBody(64))
	tests := []struct {
		name     string
		body     string
		wantCode int
		wantDesc string
	}{
		{"validation", `{"sku":""}`, 400, "sku: required"},
		{"unknown field", `{"sku":"a","colour":"red"}`, 400, "colour"},
		{"text", "hello world", 400, "body: neither JSON (a JSON body must be an object, starting with '{') nor protobuf"},
		{"a JSON array", "[1,2]", 400, "neither JSON"},
		{"binary garbage", "\xff\xfe\x00\x01", 400, "body: cannot decode protobuf"},
		{"too large", `{"sku":"` + strings.Repeat("x", 100) + `"}`, 400, "exceeds the limit of 64"},
		{"not found", `{"sku":"missing"}`, 404, "sku missing: not found"},
		{"conflict", `{"sku":"taken"}`, 409, "conflict"},
		{"internal", `{"sku":"boom"}`, 500, "disk on fire"},
		{"panic", `{"sku":"panic"}`, 500, "handler panicked: bug"},
		{"nil response", `{"sku":"nil"}`, 500, "no response"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := runtimetest.CallRaw[ordersv1.GetStockResponse](context.Background(), nc, "stock.get", []byte(tt.body), runtimetest.Request{Encoding: runtimetest.JSON})
			var se *runtimetest.ServiceError
			if !errors.As(err, &se) {
				t.Fatalf("got %v, want a service error", err)
			}
			if se.Code != tt.wantCode || !strings.Contains(se.Description, tt.wantDesc) {
				t.Errorf("got %d %q, want %d containing %q", se.Code, se.Description, tt.wantCode, tt.wantDesc)
			}
		})
	}
	// Headers are bounded as the body is.
	t.Run("headers too large", func(t *testing.T) {
		_, err := runtimetest.CallRaw[ordersv1.GetStockResponse](context.Background(), nc, "stock.get", []byte(`{"sku":"a"}`),
			runtimetest.Request{Encoding: runtimetest.JSON, Header: nats.Header{"X-Big": {strings.Repeat("x", 200<<10)}}})
		if runtimetest.Code(err) != 400 || !strings.Contains(err.Error(), "headers") {
			t.Errorf("a 200 KiB header: %v, want a 400 naming the headers", err)
		}
	})
}

// stats is the STATS reply of the one instance of svc.
func stats(t *testing.T, nc *nats.Conn, svc string) micro.Stats {
	t.Helper()
	all := runtimetest.Stats(t, nc, svc)
	if len(all) != 1 {
		t.Fatalf("%d instances of %s, want 1", len(all), svc)
	}
	return all[0]
}

func TestConcurrencyAndStats(t *testing.T) {
	const workers, requests, work = 8, 64, 50 * time.Millisecond
	nc := runtimetest.Connect(t, runtimetest.StartNATS(t))
	var inFlight, peak atomic.Int32
	slow := func(ctx context.Context, req *ordersv1.GetStockRequest) (*ordersv1.GetStockResponse, error) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		time.Sleep(work)
		return lookup(ctx, req)
	}
	startHost(t, nc, []function.Definition{function.New("get", slow)}, host.WithWorkers(workers))

	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := range requests {
		wg.Go(func() {
			sku := "SKU-1"
			if i%4 == 0 {
				sku = "" // a 400
			}
			if _, err := call(t, nc, sku, runtimetest.Protobuf); err != nil {
				if runtimetest.Code(err) != 400 {
					t.Errorf("request %d: %v", i, err)
				}
				failed.Add(1)
			}
		})
	}
	wg.Wait()

	if got := peak.Load(); got != workers {
		t.Errorf("peak concurrency %d, want exactly %d (the worker pool size)", got, workers)
	}
	if got, want := failed.Load(), int32(requests/4); got != want {
		t.Errorf("%d requests failed, want %d", got, want)
	}
	s := stats(t, nc, testService.Name)
	if len(s.Endpoints) != 1 {
		t.Fatalf("stats has %d endpoints", len(s.Endpoints))
	}
	e := s.Endpoints[0]
	if e.NumRequests != requests || e.NumErrors != requests/4 {
		t.Errorf("stats: %d requests, %d errors; want %d and %d", e.NumRequests, e.NumErrors, requests, requests/4)
	}
	if !strings.HasPrefix(e.LastError, "400:") {
		t.Errorf("last error %q, want a 400", e.LastError)
	}
	// Processing time is the time calls really took, not the time to hand
	// them to a worker.
	if e.AverageProcessingTime < work {
		t.Errorf("average processing time %v, want at least %v", e.AverageProcessingTime, work)
	}
	var data struct {
		InFlight int `json:"in_flight"`
		Workers  int `json:"workers"`
	}
	if err := json.Unmarshal(e.Data, &data); err != nil || data.InFlight != 0 || data.Workers != workers {
		t.Errorf("stats data %s (%v), want in_flight 0, workers %d", e.Data, err, workers)
	}
}

func TestDiscovery(t *testing.T) {
	nc := runtimetest.Connect(t, runtimetest.StartNATS(t))
	startHost(t, nc, []function.Definition{
		function.New("get", lookup, function.WithDescription("stock of a SKU")),
	})

	m, err := nc.Request("$SRV.PING", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var ping micro.Ping
	if err := json.Unmarshal(m.Data, &ping); err != nil || ping.Type != micro.PingResponseType || ping.Name != "stock" || ping.Version != "1.2.3" {
		t.Errorf("ping = %+v (%v)", ping, err)
	}

	m, err = nc.Request("$SRV.INFO.stock."+ping.ID, nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var info micro.Info
	if err := json.Unmarshal(m.Data, &info); err != nil {
		t.Fatal(err)
	}
	if info.Type != micro.InfoResponseType || info.Description != "test service" || len(info.Endpoints) != 1 {
		t.Fatalf("info = %+v", info)
	}
	e := info.Endpoints[0]
	want := map[string]string{"request": "orders.v1.GetStockRequest", "response": "orders.v1.GetStockResponse", "description": "stock of a SKU"}
	for k, v := range want {
		if e.Metadata[k] != v {
			t.Errorf("endpoint metadata %s = %q, want %q", k, e.Metadata[k], v)
		}
	}
	if e.Subject != "stock.get" || e.QueueGroup != "q" {
		t.Errorf("endpoint %s in group %q, want stock.get in q", e.Subject, e.QueueGroup)
	}
}

func TestDrainFinishesInFlightCalls(t *testing.T) {
	nc := runtimetest.Connect(t, runtimetest.StartNATS(t))
	release := make(chan struct{})
	var started atomic.Int32
	blocked := func(ctx context.Context, req *ordersv1.GetStockRequest) (*ordersv1.GetStockResponse, error) {
		started.Add(1)
		<-release
		return lookup(ctx, req)
	}
	h := startHost(t, nc, []function.Definition{function.New("get", blocked)})

	const calls = 3
	errs := make(chan error, calls)
	for range calls {
		go func() { _, err := call(t, nc, "SKU-1", runtimetest.Protobuf); errs <- err }()
	}
	waitFor(t, func() bool { return started.Load() == calls })

	drained := make(chan error, 1)
	go func() { drained <- h.Drain(context.Background()) }()

	// Once drained, the endpoint takes nothing new...
	waitFor(t, func() bool {
		_, err := nc.Request("stock.get", []byte(`{"sku":"x"}`), 200*time.Millisecond)
		return errors.Is(err, nats.ErrNoResponders)
	})
	select {
	case err := <-drained:
		t.Fatalf("Drain returned %v with calls in flight", err)
	default:
	}
	// ...and every call in flight still gets its reply.
	close(release)
	for range calls {
		if err := <-errs; err != nil {
			t.Errorf("in-flight call: %v", err)
		}
	}
	if err := <-drained; err != nil {
		t.Errorf("Drain: %v", err)
	}
}

func TestDrainGivesUpAtDeadline(t *testing.T) {
	nc := runtimetest.Connect(t, runtimetest.StartNATS(t))
	release := make(chan struct{})
	defer close(release)
	var started atomic.Bool
	stuck := func(ctx context.Context, req *ordersv1.GetStockRequest) (*ordersv1.GetStockResponse, error) {
		started.Store(true)
		<-release
		return lookup(ctx, req)
	}
	h := startHost(t, nc, []function.Definition{function.New("get", stuck)})
	go func() { _, _ = call(t, nc, "SKU-1", runtimetest.Protobuf) }()
	waitFor(t, func() bool { return started.Load() })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := h.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Drain = %v, want DeadlineExceeded", err)
	}
}

func TestAddRejectsBadRegistrations(t *testing.T) {
	nc := runtimetest.Connect(t, runtimetest.StartNATS(t))
	def := function.New("get", lookup)
	tests := []struct {
		name string
		svc  function.Service
	}{
		{"no version", function.Service{Name: "s"}},
		{"not semver", function.Service{Name: "s", Version: "v1"}},
		{"bad name", function.Service{Name: "a.b", Version: "1.0.0"}},
	}
	for _, tt := range tests {
		h, _ := host.New(nc)
		if err := h.Add(tt.svc, def); !errors.Is(err, host.ErrConfig) {
			t.Errorf("%s: Add = %v, want ErrConfig", tt.name, err)
		}
	}
	h, _ := host.New(nc)
	if err := h.Add(testService, def); err != nil {
		t.Fatal(err)
	}
	if err := h.Add(testService, def); !errors.Is(err, host.ErrConfig) {
		t.Errorf("duplicate Add = %v, want ErrConfig", err)
	}
	if err := h.Add(function.Service{Name: "stock", Version: "9.9.9"}, function.New("other", lookup)); !errors.Is(err, host.ErrConfig) {
		t.Errorf("second version Add = %v, want ErrConfig", err)
	}
	h, _ = host.New(nc)
	bad := function.New("restock", lookup, function.NotIdempotent(), function.On("EV", "EV.>", "c", func(context.Context, *ordersv1.StockSold) error { return nil }))
	if err := h.Add(testService, bad); !errors.Is(err, host.ErrConfig) {
		t.Errorf("a non-idempotent function with a trigger: Add = %v, want ErrConfig", err)
	}
	if _, err := host.New(nc, host.WithWorkers(0)); !errors.Is(err, host.ErrConfig) {
		t.Errorf("WithWorkers(0) = %v, want ErrConfig", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
