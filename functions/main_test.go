package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/orderflow/orderflow/functions/internal/inventory"
	"github.com/orderflow/orderflow/functions/internal/orderlog"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/config"
	"github.com/orderflow/orderflow/runtime/durable"
	"github.com/orderflow/orderflow/runtime/partition"
	"github.com/orderflow/orderflow/runtime/runtimetest"
)

// testSystem is the whole host, in process, against a real server.
type testSystem struct {
	sys *system
	nc  *nats.Conn
	js  jetstream.JetStream
}

func testConfig(url string) config.Config {
	c, err := config.Load()
	if err != nil {
		panic(err)
	}
	c.NATSURL = url
	c.HTTPAddr = "127.0.0.1:0"
	c.LogLevel = 12 // above errors: dead letters are expected in some tests
	// Quick retries keep the tests short.
	c.RetryPolicy = "attempts=5,initial=10ms,multiplier=2,max=200ms,jitter=0.2"
	return c
}

func startSystem(t *testing.T, mutate ...func(*config.Config)) *testSystem {
	t.Helper()
	return startTraced(t, nil, mutate...)
}

// startTraced starts the system with tp as its tracer provider.
func startTraced(t *testing.T, tp trace.TracerProvider, mutate ...func(*config.Config)) *testSystem {
	t.Helper()
	srv := runtimetest.StartNATS(t)
	cfg := testConfig(srv.ClientURL())
	for _, m := range mutate {
		m(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sys, err := start(ctx, cfg, io.Discard, tp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sys.shutdown(); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	nc := runtimetest.Connect(t, srv)
	return &testSystem{sys: sys, nc: nc, js: runtimetest.JetStream(t, nc)}
}

// call sends req as JSON, as `nats req` does.
func call[Resp any, P interface {
	*Resp
	proto.Message
}](t *testing.T, s *testSystem, subject string, req proto.Message, hdr ...string) (P, error) {
	t.Helper()
	h := nats.Header{}
	for i := 0; i+1 < len(hdr); i += 2 {
		h.Set(hdr[i], hdr[i+1])
	}
	return runtimetest.Call[Resp, P](context.Background(), s.nc, subject, req, runtimetest.Request{Encoding: runtimetest.JSON, Header: h})
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func (s *testSystem) restock(t *testing.T, sku string, n int32) {
	t.Helper()
	must[*ordersv1.RestockResponse](t)(call[ordersv1.RestockResponse](t, s, "inventory.restock", &ordersv1.RestockRequest{Sku: sku, Quantity: n}))
}

// events counts the OrderCreated events stored.
func (s *testSystem) events(t *testing.T) uint64 {
	t.Helper()
	var n uint64
	for _, name := range orderStreams() {
		st, err := s.js.Stream(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(context.Background(), jetstream.WithSubjectFilter(orderlog.On(orderlog.Created)))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range info.State.Subjects {
			n += c
		}
	}
	return n
}

func validOrder() *ordersv1.CreateOrderRequest {
	return &ordersv1.CreateOrderRequest{
		CustomerId: "c-1",
		Currency:   "USD",
		Items:      []*ordersv1.OrderItem{{Sku: "SKU-1", Quantity: 2, UnitPriceMinor: 1999}},
	}
}

func TestOrdersCreateAndGet(t *testing.T) {
	s := startSystem(t)
	for _, enc := range []runtimetest.Encoding{runtimetest.JSON, runtimetest.Protobuf} {
		created, err := runtimetest.Call[ordersv1.CreateOrderResponse](context.Background(), s.nc, "orders.create", validOrder(), runtimetest.Request{Encoding: enc})
		if err != nil {
			t.Fatal(err)
		}
		if created.GetOrderId() == "" || created.GetStatus() != ordersv1.OrderStatus_ORDER_STATUS_PENDING {
			t.Fatalf("create = %v", created)
		}
		got, err := runtimetest.Call[ordersv1.GetOrderResponse](context.Background(), s.nc, "orders.get", &ordersv1.GetOrderRequest{OrderId: created.GetOrderId()}, runtimetest.Request{Encoding: enc})
		if err != nil {
			t.Fatal(err)
		}
		o := got.GetOrder()
		if o.GetOrderId() != created.GetOrderId() || o.GetCustomerId() != "c-1" || o.GetCurrency() != "USD" || o.GetTotalMinor() != 3998 ||
			o.GetStatus() != ordersv1.OrderStatus_ORDER_STATUS_PENDING || len(o.GetItems()) != 1 || o.GetCreatedAt() == nil {
			t.Errorf("get = %v", o)
		}
		if len(got.GetEvents()) == 0 || got.GetEvents()[0].GetType() != "OrderCreated" ||
			got.GetEvents()[0].GetSubject() != orderlog.Subject(created.GetOrderId(), orderlog.Created) {
			t.Errorf("events = %v", got.GetEvents())
		}
	}
	// The JSON a person sees uses the proto field names and shows zeros.
	m, err := s.nc.Request("orders.create", []byte(`{"customer_id":"c-1","currency":"USD","items":[{"sku":"SKU-1","quantity":2,"unit_price_minor":1999}]}`), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var reply map[string]any
	if err := json.Unmarshal(m.Data, &reply); err != nil || reply["order_id"] == nil || reply["status"] != "ORDER_STATUS_PENDING" {
		t.Errorf("create reply %s (%v)", m.Data, err)
	}
}

// Bad input gets a 400 that names the field, and stores nothing.
func TestOrdersCreateRejectsBadInput(t *testing.T) {
	s := startSystem(t)
	item := func(sku string, q int32, p int64) *ordersv1.OrderItem {
		return &ordersv1.OrderItem{Sku: sku, Quantity: q, UnitPriceMinor: p}
	}
	tests := []struct {
		name  string
		body  string // raw JSON, when set
		req   *ordersv1.CreateOrderRequest
		hdr   []string
		field string
	}{
		{name: "garbage", body: "garbage", field: "body"},
		{name: "truncated JSON", body: `{"customer_id":"c-1",`, field: "body"},
		{name: "unknown field", body: `{"customer_id":"c-1","currency":"USD","items":[],"coupon":"x"}`, field: "coupon"},
		{name: "float price", body: `{"customer_id":"c-1","currency":"USD","items":[{"sku":"A","quantity":1,"unit_price_minor":19.99}]}`, field: "unit_price_minor"},
		{name: "empty body", body: "", field: "customer_id"},
		{name: "no customer", req: &ordersv1.CreateOrderRequest{Currency: "USD", Items: []*ordersv1.OrderItem{item("A", 1, 1)}}, field: "customer_id"},
		{name: "control char in customer", req: &ordersv1.CreateOrderRequest{CustomerId: "c\x00", Currency: "USD", Items: []*ordersv1.OrderItem{item("A", 1, 1)}}, field: "customer_id"},
		{name: "missing currency", req: &ordersv1.CreateOrderRequest{CustomerId: "c", Items: []*ordersv1.OrderItem{item("A", 1, 1)}}, field: "currency"},
		{name: "lower-case currency", req: &ordersv1.CreateOrderRequest{CustomerId: "c", Currency: "usd", Items: []*ordersv1.OrderItem{item("A", 1, 1)}}, field: "currency"},
		{name: "unknown currency", req: &ordersv1.CreateOrderRequest{CustomerId: "c", Currency: "ABC", Items: []*ordersv1.OrderItem{item("A", 1, 1)}}, field: "currency"},
		{name: "empty items", req: &ordersv1.CreateOrderRequest{CustomerId: "c", Currency: "USD"}, field: "items"},
		{name: "zero quantity", req: &ordersv1.CreateOrderRequest{CustomerId: "c", Currency: "USD", Items: []*ordersv1.OrderItem{item("A", 0, 1)}}, field: "items[0].quantity"},
		{name: "negative quantity", req: &ordersv1.CreateOrderRequest{CustomerId: "c", Currency: "USD", Items: []*ordersv1.OrderItem{item("A", 1, 1), item("B", -3, 1)}}, field: "items[1].quantity"},
		{name: "negative price", req: &ordersv1.CreateOrderRequest{CustomerId: "c", Currency: "USD", Items: []*ordersv1.OrderItem{item("A", 1, -1)}}, field: "items[0].unit_price_minor"},
		{name: "missing sku", req: &ordersv1.CreateOrderRequest{CustomerId: "c", Currency: "USD", Items: []*ordersv1.OrderItem{item("", 1, 1)}}, field: "items[0].sku"},
		{name: "wildcard sku", req: &ordersv1.CreateOrderRequest{CustomerId: "c", Currency: "USD", Items: []*ordersv1.OrderItem{item("A.>", 1, 1)}}, field: "items[0].sku"},
		{name: "duplicate sku", req: &ordersv1.CreateOrderRequest{CustomerId: "c", Currency: "USD", Items: []*ordersv1.OrderItem{item("A", 1, 1), item("A", 1, 1)}}, field: "items[1].sku"},
		{name: "total overflows", req: &ordersv1.CreateOrderRequest{CustomerId: "c", Currency: "USD", Items: []*ordersv1.OrderItem{item("A", 1_000_000, 1<<50)}}, field: "items[0].unit_price_minor"},
		{name: "bad idempotency key", req: validOrder(), hdr: []string{"Idempotency-Key", strings.Repeat("k", 300)}, field: "Idempotency-Key"},
	}
	before := s.events(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := nats.Header{}
			for i := 0; i+1 < len(tt.hdr); i += 2 {
				h.Set(tt.hdr[i], tt.hdr[i+1])
			}
			var err error
			if tt.req != nil {
				_, err = runtimetest.Call[ordersv1.CreateOrderResponse](context.Background(), s.nc, "orders.create", tt.req, runtimetest.Request{Encoding: runtimetest.JSON, Header: h})
			} else {
				_, err = runtimetest.CallRaw[ordersv1.CreateOrderResponse](context.Background(), s.nc, "orders.create", []byte(tt.body), runtimetest.Request{Header: h})
			}
			se, ok := err.(*runtimetest.ServiceError)
			if !ok || se.Code != 400 {
				t.Fatalf("got %v, want a 400", err)
			}
			if !strings.Contains(se.Description, tt.field) {
				t.Errorf("description %q does not name %s", se.Description, tt.field)
			}
		})
	}
	if after := s.events(t); after != before {
		t.Errorf("bad requests stored %d events", after-before)
	}
	// micro stats count every one of them as an error.
	st := runtimetest.Stats(t, s.nc, "orders")[0]
	for _, e := range st.Endpoints {
		if e.Name == "create" && (e.NumErrors != len(tests) || e.NumRequests != len(tests)) {
			t.Errorf("orders.create stats: %d requests, %d errors; want %d of each", e.NumRequests, e.NumErrors, len(tests))
		}
	}
}

func TestIdempotencyKey(t *testing.T) {
	s := startSystem(t)
	const key = "Idempotency-Key"
	before := s.events(t)
	first := must[*ordersv1.CreateOrderResponse](t)(call[ordersv1.CreateOrderResponse](t, s, "orders.create", validOrder(), key, "k-1"))
	again := must[*ordersv1.CreateOrderResponse](t)(call[ordersv1.CreateOrderResponse](t, s, "orders.create", validOrder(), key, "k-1"))
	if first.GetOrderId() != again.GetOrderId() {
		t.Errorf("same key gave orders %s and %s", first.GetOrderId(), again.GetOrderId())
	}
	if n := s.events(t) - before; n != 1 {
		t.Errorf("two creates with one key stored %d events, want 1", n)
	}
	got := must[*ordersv1.GetOrderResponse](t)(call[ordersv1.GetOrderResponse](t, s, "orders.get", &ordersv1.GetOrderRequest{OrderId: first.GetOrderId()}))
	if got.GetOrder().GetIdempotencyKey() != "k-1" {
		t.Errorf("order does not record its key: %v", got.GetOrder())
	}

	// Reusing the key for another order is a client bug: 409, nothing stored.
	other := validOrder()
	other.Items[0].Quantity = 3
	if _, err := call[ordersv1.CreateOrderResponse](t, s, "orders.create", other, key, "k-1"); runtimetest.Code(err) != 409 {
		t.Errorf("same key, other order: %v, want 409", err)
	}
	// Keys are per customer.
	theirs := validOrder()
	theirs.CustomerId = "c-2"
	if o := must[*ordersv1.CreateOrderResponse](t)(call[ordersv1.CreateOrderResponse](t, s, "orders.create", theirs, key, "k-1")); o.GetOrderId() == first.GetOrderId() {
		t.Error("another customer's key returned the first customer's order")
	}
	// Without a key every create is a new order.
	a := must[*ordersv1.CreateOrderResponse](t)(call[ordersv1.CreateOrderResponse](t, s, "orders.create", validOrder()))
	b := must[*ordersv1.CreateOrderResponse](t)(call[ordersv1.CreateOrderResponse](t, s, "orders.create", validOrder()))
	if a.GetOrderId() == b.GetOrderId() {
		t.Error("two keyless creates returned one order")
	}

	// Concurrent retries with one key, as a client with a short timeout
	// sends them, still make one order.
	before = s.events(t)
	ids := make(chan string, 16)
	var wg sync.WaitGroup
	for range cap(ids) {
		wg.Go(func() {
			o, err := call[ordersv1.CreateOrderResponse](t, s, "orders.create", validOrder(), key, "k-race")
			if err != nil {
				t.Error(err)
				return
			}
			ids <- o.GetOrderId()
		})
	}
	wg.Wait()
	close(ids)
	seen := map[string]bool{}
	for id := range ids {
		seen[id] = true
	}
	if len(seen) != 1 || s.events(t)-before != 1 {
		t.Errorf("concurrent creates with one key: orders %v, %d events; want one of each", seen, s.events(t)-before)
	}
}

func TestOrdersGet(t *testing.T) {
	s := startSystem(t)
	tests := []struct {
		id   string
		code int
	}{
		{"", 400},
		{"a.b", 400},
		{"ORDER.>", 400},
		{strings.Repeat("x", 65), 400},
		{"unknown-order", 404},
	}
	for _, tt := range tests {
		_, err := call[ordersv1.GetOrderResponse](t, s, "orders.get", &ordersv1.GetOrderRequest{OrderId: tt.id})
		if got := runtimetest.Code(err); got != tt.code {
			t.Errorf("orders.get %q: %v, want %d", tt.id, err, tt.code)
		}
		if tt.code == 400 && !strings.Contains(err.Error(), "order_id") {
			t.Errorf("orders.get %q: %v does not name order_id", tt.id, err)
		}
	}
}

func TestInventory(t *testing.T) {
	s := startSystem(t)
	got := must[*ordersv1.RestockResponse](t)(call[ordersv1.RestockResponse](t, s, "inventory.restock", &ordersv1.RestockRequest{Sku: "SKU-1", Quantity: 10}))
	if got.GetSku() != "SKU-1" || got.GetAvailable() != 10 {
		t.Errorf("restock = %v", got)
	}
	s.restock(t, "SKU-1", 5)
	s.restock(t, "SKU-2", 1)

	// Reservations happen only through the saga: one order confirms, one is
	// short of SKU-2 and is rejected, all or nothing.
	ok := s.create(t, &ordersv1.CreateOrderRequest{CustomerId: "c-1", Currency: "USD", Items: []*ordersv1.OrderItem{
		{Sku: "SKU-1", Quantity: 4, UnitPriceMinor: 100}, {Sku: "SKU-2", Quantity: 1, UnitPriceMinor: 100}}})
	if st := s.awaitTerminal(t, ok).GetOrder().GetStatus(); st != confirmed {
		t.Errorf("order = %s, want CONFIRMED", st)
	}
	short := s.create(t, &ordersv1.CreateOrderRequest{CustomerId: "c-1", Currency: "USD", Items: []*ordersv1.OrderItem{
		{Sku: "SKU-1", Quantity: 1, UnitPriceMinor: 100}, {Sku: "SKU-2", Quantity: 1, UnitPriceMinor: 100}}})
	if o := s.awaitTerminal(t, short).GetOrder(); o.GetStatus() != rejected || !strings.Contains(o.GetReason(), "SKU-2") {
		t.Errorf("short order = %v, want REJECTED for SKU-2", o)
	}
	lvl := must[*ordersv1.GetStockResponse](t)(call[ordersv1.GetStockResponse](t, s, "inventory.get", &ordersv1.GetStockRequest{Sku: "SKU-1"}))
	if lvl.GetAvailable() != 11 || lvl.GetReserved() != 0 || lvl.GetSold() != 4 {
		t.Errorf("inventory.get = %v, want 11 available, 4 sold", lvl)
	}

	bad := []struct {
		subject string
		req     proto.Message
		code    int
		field   string
	}{
		{"inventory.restock", &ordersv1.RestockRequest{Quantity: 1}, 400, "sku"},
		{"inventory.restock", &ordersv1.RestockRequest{Sku: "a b", Quantity: 1}, 400, "sku"},
		{"inventory.restock", &ordersv1.RestockRequest{Sku: "SKU-1"}, 400, "quantity"},
		{"inventory.restock", &ordersv1.RestockRequest{Sku: "SKU-1", Quantity: -5}, 400, "quantity"},
		{"inventory.get", &ordersv1.GetStockRequest{}, 400, "sku"},
		{"inventory.get", &ordersv1.GetStockRequest{Sku: "SKU-*"}, 400, "sku"},
		{"inventory.get", &ordersv1.GetStockRequest{Sku: "NEVER-STOCKED"}, 404, "NEVER-STOCKED"},
	}
	for _, tt := range bad {
		_, err := runtimetest.Call[ordersv1.GetStockResponse](context.Background(), s.nc, tt.subject, tt.req, runtimetest.Request{Encoding: runtimetest.JSON})
		se, ok := err.(*runtimetest.ServiceError)
		if !ok || se.Code != tt.code || !strings.Contains(se.Description, tt.field) {
			t.Errorf("%s %v: %v, want %d naming %s", tt.subject, tt.req, err, tt.code, tt.field)
		}
	}
	// None of that changed the stock.
	after := must[*ordersv1.GetStockResponse](t)(call[ordersv1.GetStockResponse](t, s, "inventory.get", &ordersv1.GetStockRequest{Sku: "SKU-1"}))
	if !proto.Equal(after, lvl) {
		t.Errorf("bad requests changed stock: %v, was %v", after, lvl)
	}
}

// The saga's own steps run only on their events: nobody answers a request
// to them, yet they are listed, with their triggers, in `nats micro info`.
func TestSagaStepsAreNotCallable(t *testing.T) {
	s := startSystem(t)
	for _, subject := range []string{"inventory.reserve", "inventory.sell", "inventory.release", "payments.charge", "payments.refund"} {
		_, err := s.nc.Request(subject, []byte(`{"order_id":"o-1"}`), time.Second)
		if !errors.Is(err, nats.ErrNoResponders) {
			t.Errorf("request to %s: %v, want no responders", subject, err)
		}
	}
	for _, svc := range []string{"inventory", "payments"} {
		reply, err := s.nc.Request("$SRV.INFO."+svc, nil, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var info micro.Info
		if err := json.Unmarshal(reply.Data, &info); err != nil {
			t.Fatal(err)
		}
		for _, e := range info.Endpoints {
			if e.Name == "get" || e.Name == "restock" {
				continue
			}
			if e.Metadata["requests"] == "" || !strings.Contains(e.Metadata["triggers"], "ORDERS ORDER.*.*.") {
				t.Errorf("%s.%s metadata %v, want its triggers and no requests", svc, e.Name, e.Metadata)
			}
		}
	}
}

func TestPayments(t *testing.T) {
	s := startSystem(t, func(c *config.Config) { c.PaymentMaxOrderMinor = 5000 })
	s.restock(t, "SKU-1", 10)
	paid := s.create(t, order("SKU-1", 2, 1999))
	s.awaitTerminal(t, paid)
	p := must[*ordersv1.GetPaymentResponse](t)(call[ordersv1.GetPaymentResponse](t, s, "payments.get", &ordersv1.GetPaymentRequest{OrderId: paid}))
	want := &ordersv1.GetPaymentResponse{OrderId: paid, Status: ordersv1.PaymentStatus_PAYMENT_STATUS_CHARGED, AmountMinor: 3998, Currency: "USD", Attempts: 1, Captures: 1}
	if !proto.Equal(p, want) {
		t.Errorf("payments.get = %v, want %v", p, want)
	}
	declined := s.create(t, order("SKU-1", 1, 5001))
	s.awaitTerminal(t, declined)
	p = must[*ordersv1.GetPaymentResponse](t)(call[ordersv1.GetPaymentResponse](t, s, "payments.get", &ordersv1.GetPaymentRequest{OrderId: declined}))
	if p.GetStatus() != ordersv1.PaymentStatus_PAYMENT_STATUS_DECLINED || p.GetCaptures() != 0 {
		t.Errorf("payment above the limit = %v, want DECLINED with no capture", p)
	}

	bad := []struct {
		req   proto.Message
		code  int
		field string
	}{
		{&ordersv1.GetPaymentRequest{}, 400, "order_id"},
		{&ordersv1.GetPaymentRequest{OrderId: "o-9"}, 404, "o-9"},
	}
	for _, tt := range bad {
		_, err := runtimetest.Call[ordersv1.GetPaymentResponse](context.Background(), s.nc, "payments.get", tt.req, runtimetest.Request{Encoding: runtimetest.JSON})
		se, ok := err.(*runtimetest.ServiceError)
		if !ok || se.Code != tt.code || !strings.Contains(se.Description, tt.field) {
			t.Errorf("payments.get %v: %v, want %d naming %s", tt.req, err, tt.code, tt.field)
		}
	}
}

func TestHTTPEndpoints(t *testing.T) {
	s := startSystem(t)
	s.restock(t, "SKU-1", 3)
	_, _ = call[ordersv1.GetStockResponse](t, s, "inventory.get", &ordersv1.GetStockRequest{})
	base := "http://" + s.sys.httpAddr
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d %s", path, resp.StatusCode, body)
		}
		if path == "/metrics" {
			for _, want := range []string{
				`orderflow_requests_total{code="200",function="inventory.restock"} 1`,
				`orderflow_requests_total{code="400",function="inventory.get"} 1`,
				`orderflow_request_duration_seconds_count{function="inventory.restock"} 1`,
				`orderflow_requests_in_flight{function="orders.create"} 0`,
			} {
				if !strings.Contains(string(body), want) {
					t.Errorf("/metrics lacks %q", want)
				}
			}
		}
	}
}

// Profiles are served only when asked for.
func TestProfilesOnlyWithPPROF(t *testing.T) {
	for _, on := range []bool{false, true} {
		s := startSystem(t, func(c *config.Config) { c.PProf = config.Switch(on) })
		resp, err := http.Get("http://" + s.sys.httpAddr + "/debug/pprof/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.StatusCode == 200; got != on {
			t.Errorf("PPROF=%t: /debug/pprof/ answered %d", on, resp.StatusCode)
		}
	}
}

func TestFunctionsSelectsWhatAPodHosts(t *testing.T) {
	s := startSystem(t, func(c *config.Config) { c.Functions = []string{"inventory", "orders.get"} })
	got := strings.Join(s.sys.host.Subjects(), ",")
	if want := "orders.get,inventory.restock,inventory.get,inventory.reserve,inventory.sell,inventory.release"; got != want {
		t.Errorf("hosted %s, want %s", got, want)
	}
	if _, err := s.nc.Request("orders.create", []byte("{}"), 500*time.Millisecond); err != nats.ErrNoResponders {
		t.Errorf("orders.create on a pod without it: %v, want no responders", err)
	}
	if _, err := selectFunctions(registry(stores{}), []string{"orders.nope"}); err == nil || !strings.Contains(err.Error(), "FUNCTIONS") {
		t.Errorf("unknown function: %v, want an error naming FUNCTIONS", err)
	}
}

// A pod creates and opens only what its functions declare they touch.
func TestPodTouchesOnlyWhatItsFunctionsDeclare(t *testing.T) {
	tests := []struct {
		functions []string
		want      string
	}{
		{[]string{"inventory.get"}, "KV_stock_0,KV_stock_1,KV_stock_2,KV_stock_3"},
		{[]string{"payments.get"}, "KV_gateway,KV_payments"},
		{[]string{"payments"}, "DEADLETTERS,KV_gateway,KV_payments,ORDERS_0,ORDERS_1,ORDERS_2,ORDERS_3"},
		{[]string{"orders.get", "deadletters.list"}, "DEADLETTERS,ORDERS_0,ORDERS_1,ORDERS_2,ORDERS_3"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.functions, ","), func(t *testing.T) {
			s := startSystem(t, func(c *config.Config) { c.Functions = tt.functions })
			var got []string
			for name := range s.js.StreamNames(context.Background()).Name() {
				got = append(got, name)
			}
			slices.Sort(got)
			if strings.Join(got, ",") != tt.want {
				t.Errorf("streams %v, want %s", got, tt.want)
			}
		})
	}
}

// In the open dev mode a stream deleted under a running host makes /readyz
// fail and name it, is re-created, and the saga runs on it again.
func TestDeletedStreamIsRecreated(t *testing.T) {
	defer func(d time.Duration) { keepEvery = d }(keepEvery)
	keepEvery = 300 * time.Millisecond
	s := startSystem(t)
	s.restock(t, "SKU-1", 10)
	if err := s.js.DeleteStream(context.Background(), "ORDERS_0"); err != nil {
		t.Fatal(err)
	}
	base := "http://" + s.sys.httpAddr
	sawMissing := false
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 503 && strings.Contains(string(body), "stream ORDERS_0") {
			sawMissing = true
		}
		if resp.StatusCode == 200 && sawMissing {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz: %d %s (saw ORDERS missing: %t)", resp.StatusCode, body, sawMissing)
		}
		time.Sleep(20 * time.Millisecond)
	}
	id := s.create(t, validOrder())
	if got := s.awaitTerminal(t, id).GetOrder().GetStatus(); got != confirmed {
		t.Errorf("order after the stream came back: %s", got)
	}
}

// A restock retried with its Idempotency-Key after a lost reply adds once.
func TestRestockWithIdempotencyKey(t *testing.T) {
	s := startSystem(t)
	for range 3 {
		must[*ordersv1.RestockResponse](t)(call[ordersv1.RestockResponse](t, s, "inventory.restock", &ordersv1.RestockRequest{Sku: "SKU-1", Quantity: 10}, "idempotency-key", "restock-1"))
	}
	if st := s.stock(t, "SKU-1"); st.GetAvailable() != 10 {
		t.Errorf("available %d after three restocks with one key, want 10", st.GetAvailable())
	}
	if _, err := call[ordersv1.RestockResponse](t, s, "inventory.restock", &ordersv1.RestockRequest{Sku: "SKU-1", Quantity: 1}, "Idempotency-Key", "bad\x07key"); runtimetest.Code(err) != 400 {
		t.Errorf("a key with a control character: %v, want 400", err)
	}
}

// The header's name matches in any letter case, as HTTP gateways in front
// of NATS may lower-case it.
func TestIdempotencyKeyInAnyCase(t *testing.T) {
	s := startSystem(t)
	before := s.events(t)
	var ids []string
	for _, name := range []string{"Idempotency-Key", "idempotency-key", "IDEMPOTENCY-KEY"} {
		ids = append(ids, must[*ordersv1.CreateOrderResponse](t)(call[ordersv1.CreateOrderResponse](t, s, "orders.create", validOrder(), name, "k-case")).GetOrderId())
	}
	if ids[0] != ids[1] || ids[1] != ids[2] || s.events(t)-before != 1 {
		t.Errorf("one key in three cases gave orders %v and %d events, want one", ids, s.events(t)-before)
	}
}

// Order ids follow from (customer, Idempotency-Key) through a secret that
// only the orders identity can read: the same key gives the same order in
// one system, and nobody can compute the id from the key alone (another
// system, with its own secret, gives another id).
func TestOrderIDsAreKeyedBySecret(t *testing.T) {
	a, b := startSystem(t), startSystem(t)
	create := func(s *testSystem) string {
		return must[*ordersv1.CreateOrderResponse](t)(call[ordersv1.CreateOrderResponse](t, s, "orders.create", validOrder(), "Idempotency-Key", "k-1")).GetOrderId()
	}
	ida, idb := create(a), create(b)
	if ida == idb {
		t.Errorf("two secrets gave one id %s", ida)
	}
	if again := create(a); again != ida {
		t.Errorf("one key gave %s and %s", ida, again)
	}
	legacy := uuid.NewSHA1(uuid.MustParse("6f1b7f0e-6a43-4d0c-9a53-5b1f3f3c2a10"), []byte("c-1\x00k-1")).String()
	if ida == legacy {
		t.Error("the id is the old, predictable one")
	}
	kv := must[jetstream.KeyValue](t)(a.js.KeyValue(context.Background(), "secrets"))
	e := must[jetstream.KeyValueEntry](t)(kv.Get(context.Background(), "order-id"))
	var k ordersv1.OrderIDKey
	if err := proto.Unmarshal(e.Value(), &k); err != nil || len(k.GetKey()) != 32 || k.GetLegacyUntil() != nil {
		t.Errorf("secret %v (%v), want 32 bytes and no legacy window in a new store", &k, err)
	}
}

// An upgrade keeps retries working: in a store that already holds orders,
// a create whose key made an order under the old derivation finds it.
func TestOrderIDsOfTheOldDerivationAreFound(t *testing.T) {
	s := startSystem(t)
	legacy := uuid.NewSHA1(uuid.MustParse("6f1b7f0e-6a43-4d0c-9a53-5b1f3f3c2a10"), []byte("c-1\x00k-old")).String()
	o := validOrder()
	old := &ordersv1.Order{OrderId: legacy, CustomerId: o.GetCustomerId(), Currency: o.GetCurrency(), Items: o.GetItems(), IdempotencyKey: "k-old"}
	if err := publishEvent(t, s, orderlog.Subject(legacy, orderlog.Created), &ordersv1.OrderCreated{Order: old}); err != nil {
		t.Fatal(err)
	}
	got := must[*ordersv1.CreateOrderResponse](t)(call[ordersv1.CreateOrderResponse](t, s, "orders.create", validOrder(), "Idempotency-Key", "k-old"))
	if got.GetOrderId() != legacy {
		t.Errorf("retry across the upgrade created %s, want the first order %s", got.GetOrderId(), legacy)
	}
	kv := must[jetstream.KeyValue](t)(s.js.KeyValue(context.Background(), "secrets"))
	e := must[jetstream.KeyValueEntry](t)(kv.Get(context.Background(), "order-id"))
	var k ordersv1.OrderIDKey
	if err := proto.Unmarshal(e.Value(), &k); err != nil || k.GetLegacyUntil() == nil {
		t.Errorf("secret %v, want a legacy window in a store that held orders", &k)
	}
}

// publishEvent appends an order event as a step would.
func publishEvent(t *testing.T, s *testSystem, subject string, ev proto.Message) error {
	t.Helper()
	m := nats.NewMsg(subject)
	m.Data = must[[]byte](t)(proto.Marshal(ev))
	m.Header.Set("Event-Type", string(ev.ProtoReflect().Descriptor().FullName()))
	_, err := s.js.PublishMsg(context.Background(), m)
	return err
}

func TestRedactHidesPasswords(t *testing.T) {
	tests := []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://orders:s3cret@n1:4222,nats://orders:s3cret@n2:4222", "nats://orders:xxxxx@n1:4222,nats://orders:xxxxx@n2:4222"},
		{"nats://s3cret@n1:4222", "nats://xxxxx@n1:4222"},
	}
	for _, tt := range tests {
		if got := redact(tt.in); got != tt.want || strings.Contains(got, "s3cret") {
			t.Errorf("redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// A stream that refuses writes (full, with its limits set to discard new
// messages) makes /readyz fail with the reason, and pass again once it
// takes writes.
func TestReadyzFailsWhileAStreamRefusesWrites(t *testing.T) {
	s := startSystem(t)
	ctx := context.Background()
	st := must[jetstream.Stream](t)(s.js.Stream(ctx, "ORDERS_0"))
	cfg := st.CachedInfo().Config
	cfg.MaxBytes, cfg.Discard = 16<<10, jetstream.DiscardNew
	if _, err := s.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	readyz := func() (int, string) { return httpGet(t, "http://"+s.sys.httpAddr+"/readyz") }
	refused := false
	// With a key, a create's id (and so its partition) is fixed: without
	// one, a retry of a refused create takes a new id, which may land in
	// a partition with room.
	for i := 0; i < 500 && !refused; i++ {
		_, err := call[ordersv1.CreateOrderResponse](t, s, "orders.create", validOrder(), "Idempotency-Key", fmt.Sprint("full-", i))
		refused = err != nil
	}
	if !refused {
		t.Fatal("the full stream took every order")
	}
	if code, body := readyz(); code != 503 || !strings.Contains(body, "ORDERS_0 refuses writes") || !strings.Contains(body, "maximum bytes") {
		t.Errorf("/readyz with ORDERS full: %d %s", code, body)
	}
	cfg.MaxBytes = -1
	if _, err := s.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	// Readiness comes back with a write to the partition that refused.
	for i := 0; i < 200; i++ {
		id := must[*ordersv1.CreateOrderResponse](t)(call[ordersv1.CreateOrderResponse](t, s, "orders.create", validOrder())).GetOrderId()
		if orderStream(id) == "ORDERS_0" {
			break
		}
	}
	if code, body := readyz(); code != 200 {
		t.Errorf("/readyz after the stream took a write again: %d %s", code, body)
	}
}

// With MAX_PENDING_ORDERS, creates are refused (503, with a hint to retry)
// while that many orders are in flight, and taken again once the saga
// catches up.
func TestAdmissionLimit(t *testing.T) {
	s := startSystem(t, func(c *config.Config) {
		c.MaxPendingOrders = 5
		c.PaymentLatency = time.Second // orders wait in the charge step
	})
	s.restock(t, "SKU-1", 1000)
	var accepted []string
	var busy error
	for i := 0; i < 50 && busy == nil; i++ {
		o, err := call[ordersv1.CreateOrderResponse](t, s, "orders.create", validOrder())
		if err != nil {
			busy = err
			break
		}
		accepted = append(accepted, o.GetOrderId())
		time.Sleep(50 * time.Millisecond)
	}
	if runtimetest.Code(busy) != 503 || !strings.Contains(busy.Error(), "in flight, the limit is 5") {
		t.Fatalf("after %d creates: %v, want a 503 naming the limit", len(accepted), busy)
	}
	if len(accepted) < 5 {
		t.Errorf("only %d orders taken before the limit of 5", len(accepted))
	}
	for _, id := range accepted {
		s.awaitTerminal(t, id)
	}
	time.Sleep(1100 * time.Millisecond) // the count is at most a second old
	if _, err := call[ordersv1.CreateOrderResponse](t, s, "orders.create", validOrder()); err != nil {
		t.Errorf("create once the saga caught up: %v", err)
	}
}

// With ORDER_RETENTION, an order's events and records go once it is old;
// the SKU's levels stay. A create repeated with its key after that starts
// a new order (the key is forgotten with its order), which runs to its end
// like any other: never a stuck order.
func TestRetention(t *testing.T) {
	const retention = 3 * time.Second
	s := startSystem(t, func(c *config.Config) { c.OrderRetention = retention })
	s.restock(t, "SKU-1", 10)
	create := func() string {
		return must[*ordersv1.CreateOrderResponse](t)(call[ordersv1.CreateOrderResponse](t, s, "orders.create", validOrder(), "Idempotency-Key", "k-ret")).GetOrderId()
	}
	id := create()
	if st := s.awaitTerminal(t, id).GetOrder().GetStatus(); st != confirmed {
		t.Fatalf("order %s", st)
	}
	ctx := context.Background()
	for _, name := range orderStreams() {
		// The events outlive the records by a margin (durable's eventAge).
		if age := must[jetstream.Stream](t)(s.js.Stream(ctx, name)).CachedInfo().Config.MaxAge; age != retention+5*time.Second {
			t.Errorf("%s max age %s, want %s", name, age, retention+5*time.Second)
		}
	}
	for _, b := range []string{"KV_stock_0", "KV_stock_3", "KV_payments", "KV_gateway"} {
		if !must[jetstream.Stream](t)(s.js.Stream(ctx, b)).CachedInfo().Config.AllowMsgTTL {
			t.Errorf("%s does not allow per-message TTLs", b)
		}
	}
	deadline := time.Now().Add(retention + 10*time.Second)
	for {
		_, err := call[ordersv1.GetOrderResponse](t, s, "orders.get", &ordersv1.GetOrderRequest{OrderId: id})
		_, perr := call[ordersv1.GetPaymentResponse](t, s, "payments.get", &ordersv1.GetPaymentRequest{OrderId: id})
		if runtimetest.Code(err) == 404 && runtimetest.Code(perr) == 404 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the retention: orders.get %v, payments.get %v; want both 404", err, perr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if st := s.stock(t, "SKU-1"); st.GetSold() != 2 || st.GetAvailable() != 8 {
		t.Errorf("the SKU's levels went with the order: %v", st)
	}
	kv := must[jetstream.KeyValue](t)(s.js.KeyValue(ctx, "secrets"))
	if _, err := kv.Get(ctx, "order-id"); err != nil {
		t.Errorf("the order-id secret expired: %v", err)
	}

	again := create()
	if again != id {
		t.Errorf("the repeat got %s, want the same id %s (a new order under it)", again, id)
	}
	if st := s.awaitTerminal(t, again).GetOrder().GetStatus(); st != confirmed {
		t.Errorf("the new order under the old key ended %s", st)
	}
	if p := s.payment(t, again); p.GetCaptures() != 1 {
		t.Errorf("the new order's payment %v, want one capture", p)
	}
	if st := s.stock(t, "SKU-1"); st.GetSold() != 4 {
		t.Errorf("stock after the second order %v, want 4 sold", st)
	}
}

// layout is the stream and bucket layout of testConfig.
func layout() durable.Config { return storeConfig(testConfig("")) }

// orderStreams are the partitions of the order log in testConfig.
func orderStreams() []string { return layout().Streams(durable.EventStream) }

// orderStream is the partition of the order log that holds orderID.
func orderStream(orderID string) string {
	return orderStreams()[partition.Of(partition.Slot(orderID), len(orderStreams()))]
}

// stockBucket is the partition of the stock bucket that holds key.
func stockBucket(key string) string {
	bs := layout().Buckets(inventory.Bucket)
	return bs[partition.Of(partition.Slot(key), len(bs))]
}

// A host refuses, at once and as a configuration error, a store of the
// layout before partitions and one provisioned with another PARTITIONS,
// saying what to do; it makes no partition beside them.
func TestStoreOfAnotherLayoutIsRefused(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, js jetstream.JetStream, url string)
		want    string
	}{
		{"before partitions", func(t *testing.T, js jetstream.JetStream, _ string) {
			if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"ORDER.>"}}); err != nil {
				t.Fatal(err)
			}
		}, "layout from before partitions"},
		{"another partition count", func(t *testing.T, _ jetstream.JetStream, url string) {
			cfg := testConfig(url)
			cfg.Partitions = 8
			sys, err := start(context.Background(), cfg, io.Discard, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := sys.shutdown(); err != nil {
				t.Fatal(err)
			}
		}, "set PARTITIONS=8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := runtimetest.StartNATS(t)
			js := runtimetest.JetStream(t, runtimetest.Connect(t, srv))
			tt.prepare(t, js, srv.ClientURL())
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			sys, err := start(ctx, testConfig(srv.ClientURL()), io.Discard, nil)
			if err == nil {
				_ = sys.shutdown()
				t.Fatal("the host started on a store it cannot read")
			}
			if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("start: %v, want a configuration error saying %q", err, tt.want)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if strings.Count(err.Error(), line) > 1 {
					t.Errorf("start says %q more than once:\n%v", line, err)
					break
				}
			}
			if _, err := js.Stream(ctx, "ORDERS_1"); !errors.Is(err, jetstream.ErrStreamNotFound) && tt.name == "before partitions" {
				t.Errorf("ORDERS_1 after the refusal: %v, want none made", err)
			}
		})
	}
}
