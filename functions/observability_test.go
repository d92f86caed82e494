package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderflow/orderflow/functions/internal/orderlog"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/config"
	"github.com/orderflow/orderflow/runtime/runtimetest"
)

const (
	clientTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientSpanID  = "00f067aa0ba902b7"
)

func attr(s tracetest.SpanStub, key string) attribute.Value {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// One order is one trace: from the caller's traceparent through
// orders.create, every event published and every function it triggers, to
// the terminal status.
func TestOneTracePerOrder(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	s := startTraced(t, tp)
	s.restock(t, "SKU-1", 5)

	hdr := nats.Header{"traceparent": []string{"00-" + clientTraceID + "-" + clientSpanID + "-01"}}
	created, err := runtimetest.Call[ordersv1.CreateOrderResponse](context.Background(), s.nc, "orders.create", order("SKU-1", 1, 100), runtimetest.Request{Header: hdr})
	if err != nil {
		t.Fatal(err)
	}
	id := created.GetOrderId()
	if o := s.awaitTerminal(t, id); o.GetOrder().GetStatus() != confirmed {
		t.Fatalf("order ended %s", o.GetOrder().GetStatus())
	}
	waitIdle(t, s)

	byName := map[string]tracetest.SpanStub{}
	for _, sp := range exp.GetSpans() {
		if strings.HasSuffix(sp.Name, ".get") {
			continue // the test's polls are traces of their own
		}
		if attr(sp, "orderflow.order_id").AsString() == id || strings.Contains(attr(sp, "messaging.destination.name").AsString(), id) {
			if got := sp.SpanContext.TraceID().String(); got != clientTraceID {
				t.Errorf("span %q is in trace %s, not the caller's %s", sp.Name, got, clientTraceID)
			}
			byName[sp.Name] = sp
		}
	}
	// Each step, and what it must be the child of.
	chain := []struct{ name, parent string }{
		{"orders.create", ""},
		{"ORDER.*.*.created publish", "orders.create"},
		{"inventory.reserve process ORDER.*.*.created", "ORDER.*.*.created publish"},
		{"ORDER.*.*.stock_reserved publish", "inventory.reserve process ORDER.*.*.created"},
		{"payments.charge process ORDER.*.*.stock_reserved", "ORDER.*.*.stock_reserved publish"},
		{"ORDER.*.*.payment_charged publish", "payments.charge process ORDER.*.*.stock_reserved"},
		{"inventory.sell process ORDER.*.*.payment_charged", "ORDER.*.*.payment_charged publish"},
		{"ORDER.*.*.stock_sold publish", "inventory.sell process ORDER.*.*.payment_charged"},
	}
	for _, c := range chain {
		sp, ok := byName[c.name]
		if !ok {
			var names []string
			for n := range byName {
				names = append(names, n)
			}
			t.Fatalf("no span %q; have %q", c.name, names)
		}
		want := clientSpanID
		if c.parent != "" {
			want = byName[c.parent].SpanContext.SpanID().String()
		}
		if got := sp.Parent.SpanID().String(); got != want {
			t.Errorf("span %q has parent %s, want %q (%s)", c.name, got, c.parent, want)
		}
		if attr(sp, "messaging.system").AsString() != "nats" {
			t.Errorf("span %q lacks messaging.system=nats", c.name)
		}
	}

	server := byName["orders.create"]
	if server.SpanKind != trace.SpanKindServer || attr(server, "orderflow.order_id").AsString() != id || attr(server, "orderflow.outcome").AsString() != "ok" {
		t.Errorf("orders.create span: kind %v, attributes %v", server.SpanKind, server.Attributes)
	}
	pub := byName["ORDER.*.*.created publish"]
	if pub.SpanKind != trace.SpanKindProducer || attr(pub, "messaging.nats.stream.sequence").AsInt64() == 0 ||
		attr(pub, "messaging.destination.name").AsString() != orderlog.Subject(id, orderlog.Created) {
		t.Errorf("publish span: kind %v, attributes %v", pub.SpanKind, pub.Attributes)
	}
	charge := byName["payments.charge process ORDER.*.*.stock_reserved"]
	for key, want := range map[string]string{
		"messaging.consumer.group.name":  "payments-charge",
		"messaging.destination.name":     orderlog.Subject(id, orderlog.StockReserved),
		"messaging.destination.template": "ORDER.*.*.stock_reserved",
		"messaging.operation.type":       "process",
		"orderflow.function":             "payments.charge",
		"orderflow.order_id":             id,
		"orderflow.outcome":              "ack",
	} {
		if got := attr(charge, key).Emit(); got != want {
			t.Errorf("charge span %s = %q, want %q", key, got, want)
		}
	}
	if charge.SpanKind != trace.SpanKindConsumer || attr(charge, "messaging.nats.message.delivery_attempt").AsInt64() != 1 {
		t.Errorf("charge span: kind %v, attempt %v", charge.SpanKind, attr(charge, "messaging.nats.message.delivery_attempt"))
	}
}

// A redelivered message carries its attempt, and its trace survives the
// stay in the stream: each retry of a charge is a span of the order's trace.
func TestRetriesStayInTheTrace(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	s := startTraced(t, tp, func(c *config.Config) {
		c.PaymentFailureRate = 0.5
		c.RetryPolicy = "attempts=30,initial=5ms,multiplier=1,max=5ms"
	})
	s.restock(t, "SKU-1", 20)
	ids := map[string]bool{}
	for range 10 {
		ids[s.create(t, order("SKU-1", 1, 100))] = true
	}
	for id := range ids {
		s.awaitTerminal(t, id)
	}
	waitIdle(t, s)
	traceOf := map[string]trace.TraceID{}
	maxAttempt := int64(0)
	for _, sp := range exp.GetSpans() {
		id := attr(sp, "orderflow.order_id").AsString()
		if !ids[id] || strings.HasSuffix(sp.Name, ".get") {
			continue // a read is its own trace
		}
		if prev, ok := traceOf[id]; ok && prev != sp.SpanContext.TraceID() {
			t.Errorf("order %s spans two traces (%s)", id, sp.Name)
		}
		traceOf[id] = sp.SpanContext.TraceID()
		if sp.Name == "payments.charge process ORDER.*.*.stock_reserved" {
			maxAttempt = max(maxAttempt, attr(sp, "messaging.nats.message.delivery_attempt").AsInt64())
		}
	}
	if maxAttempt < 2 {
		t.Errorf("no charge span with a delivery attempt above 1 at a 50%% failure rate")
	}
}

// /metrics after a few orders: the counters and histograms say exactly what
// happened.
func TestMetricsAfterOrders(t *testing.T) {
	s := startSystem(t)
	s.restock(t, "SKU-1", 10)
	const orders, bad = 3, 2
	for range orders {
		s.awaitTerminal(t, s.create(t, order("SKU-1", 1, 100)))
	}
	for range bad {
		if _, err := call[ordersv1.CreateOrderResponse](t, s, "orders.create", &ordersv1.CreateOrderRequest{}); runtimetest.Code(err) != 400 {
			t.Fatalf("bad create: %v", err)
		}
	}
	waitIdle(t, s)
	resp, err := http.Get("http://" + s.sys.httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`orderflow_requests_total{code="200",function="orders.create"} 3`,
		`orderflow_requests_total{code="400",function="orders.create"} 2`,
		`orderflow_request_duration_seconds_count{function="orders.create"} 5`,
		`orderflow_requests_in_flight{function="orders.create"} 0`,
		`orderflow_messages_total{consumer="inventory-reserve",function="inventory.reserve",outcome="ack"} 3`,
		`orderflow_messages_total{consumer="payments-charge",function="payments.charge",outcome="ack"} 3`,
		`orderflow_messages_total{consumer="inventory-sell",function="inventory.sell",outcome="ack"} 3`,
		`orderflow_message_duration_seconds_count{consumer="inventory-reserve",function="inventory.reserve"} 3`,
		`orderflow_orders_ended_total{status="CONFIRMED"} 3`,
		`orderflow_order_duration_seconds_count{status="CONFIRMED"} 3`,
		`orderflow_consumer_pending_messages{consumer="inventory-reserve",function="inventory.reserve",stream="ORDERS_0"} 0`,
		`orderflow_consumer_ack_pending_messages{consumer="payments-charge",function="payments.charge",stream="ORDERS_0"} 0`,
		`orderflow_consumer_redelivered_messages{consumer="inventory-sell",function="inventory.sell",stream="ORDERS_0"} 0`,
		`orderflow_consumer_info_up{consumer="orders-compensate",function="orders.cancel",stream="DEADLETTERS"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
