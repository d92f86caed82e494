package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderflow/orderflow/functions/chargepayment"
	"github.com/orderflow/orderflow/functions/internal/orderlog"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	runtimev1 "github.com/orderflow/orderflow/proto/gen/runtime/v1"
	"github.com/orderflow/orderflow/runtime/config"
	"github.com/orderflow/orderflow/runtime/host"
	"github.com/orderflow/orderflow/runtime/runtimetest"
)

const (
	confirmed = ordersv1.OrderStatus_ORDER_STATUS_CONFIRMED
	rejected  = ordersv1.OrderStatus_ORDER_STATUS_REJECTED
	cancelled = ordersv1.OrderStatus_ORDER_STATUS_CANCELLED
)

func (s *testSystem) create(t *testing.T, req *ordersv1.CreateOrderRequest) string {
	t.Helper()
	return must[*ordersv1.CreateOrderResponse](t)(call[ordersv1.CreateOrderResponse](t, s, "orders.create", req)).GetOrderId()
}

func (s *testSystem) order(t *testing.T, id string) *ordersv1.GetOrderResponse {
	t.Helper()
	return must[*ordersv1.GetOrderResponse](t)(call[ordersv1.GetOrderResponse](t, s, "orders.get", &ordersv1.GetOrderRequest{OrderId: id}))
}

// awaitTerminal waits for the saga to end the order by itself.
func (s *testSystem) awaitTerminal(t *testing.T, id string) *ordersv1.GetOrderResponse {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		o := s.order(t, id)
		if orderlog.IsTerminal(o.GetOrder().GetStatus()) {
			return o
		}
		if time.Now().After(deadline) {
			t.Fatalf("order %s still %s after 20s: %v", id, o.GetOrder().GetStatus(), o.GetEvents())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *testSystem) stock(t *testing.T, sku string) *ordersv1.GetStockResponse {
	t.Helper()
	return must[*ordersv1.GetStockResponse](t)(call[ordersv1.GetStockResponse](t, s, "inventory.get", &ordersv1.GetStockRequest{Sku: sku}))
}

func (s *testSystem) payment(t *testing.T, id string) *ordersv1.GetPaymentResponse {
	t.Helper()
	return must[*ordersv1.GetPaymentResponse](t)(call[ordersv1.GetPaymentResponse](t, s, "payments.get", &ordersv1.GetPaymentRequest{OrderId: id}))
}

func order(sku string, qty int32, price int64) *ordersv1.CreateOrderRequest {
	return &ordersv1.CreateOrderRequest{CustomerId: "c-1", Currency: "USD", Items: []*ordersv1.OrderItem{{Sku: sku, Quantity: qty, UnitPriceMinor: price}}}
}

func eventTypes(o *ordersv1.GetOrderResponse) string {
	var types []string
	for _, e := range o.GetEvents() {
		types = append(types, e.GetType())
	}
	return strings.Join(types, " ")
}

func checkStock(t *testing.T, got *ordersv1.GetStockResponse, available, reserved, sold int32) {
	t.Helper()
	if got.GetAvailable() != available || got.GetReserved() != reserved || got.GetSold() != sold {
		t.Errorf("%s: available %d reserved %d sold %d; want %d %d %d", got.GetSku(),
			got.GetAvailable(), got.GetReserved(), got.GetSold(), available, reserved, sold)
	}
}

func TestSagaConfirms(t *testing.T) {
	s := startSystem(t)
	s.restock(t, "SKU-1", 10)
	id := s.create(t, order("SKU-1", 2, 1999))
	o := s.awaitTerminal(t, id)
	if o.GetOrder().GetStatus() != confirmed {
		t.Fatalf("order ended %s: %v", o.GetOrder().GetStatus(), o.GetEvents())
	}
	if got, want := eventTypes(o), "OrderCreated StockReserved PaymentCharged StockSold"; got != want {
		t.Errorf("history %q, want %q", got, want)
	}
	// CONFIRMED is written after the sale: inventory already agrees.
	checkStock(t, s.stock(t, "SKU-1"), 8, 0, 2)
	if p := s.payment(t, id); p.GetCaptures() != 1 || p.GetRefunds() != 0 || p.GetAmountMinor() != 3998 {
		t.Errorf("payment %v, want one capture of 3998", p)
	}
	// A confirmed order cannot be cancelled.
	_, err := call[ordersv1.CancelOrderResponse](t, s, "orders.cancel", &ordersv1.CancelOrderRequest{OrderId: id})
	if runtimetest.Code(err) != 409 {
		t.Errorf("cancel of a confirmed order: %v, want 409", err)
	}
}

func TestSagaCancelsAboveThePaymentLimit(t *testing.T) {
	s := startSystem(t, func(c *config.Config) { c.PaymentMaxOrderMinor = 5000 })
	s.restock(t, "SKU-1", 10)
	id := s.create(t, order("SKU-1", 3, 1999))
	o := s.awaitTerminal(t, id)
	if o.GetOrder().GetStatus() != cancelled || !strings.Contains(o.GetOrder().GetReason(), "exceeds the per-order limit") {
		t.Fatalf("order ended %s (%q), want CANCELLED for the limit: %v", o.GetOrder().GetStatus(), o.GetOrder().GetReason(), o.GetEvents())
	}
	if got, want := eventTypes(o), "OrderCreated StockReserved PaymentDeclined StockReleased"; got != want {
		t.Errorf("history %q, want %q", got, want)
	}
	checkStock(t, s.stock(t, "SKU-1"), 10, 0, 0)
	if p := s.payment(t, id); p.GetCaptures() != 0 || p.GetStatus() != ordersv1.PaymentStatus_PAYMENT_STATUS_DECLINED {
		t.Errorf("payment %v, want declined with no capture", p)
	}
}

func TestSagaRejectsWithoutStock(t *testing.T) {
	s := startSystem(t)
	s.restock(t, "SKU-1", 1)
	id := s.create(t, order("SKU-1", 2, 100))
	o := s.awaitTerminal(t, id)
	if o.GetOrder().GetStatus() != rejected || !strings.Contains(o.GetOrder().GetReason(), "insufficient stock for SKU-1") {
		t.Fatalf("order ended %s (%q), want REJECTED for stock", o.GetOrder().GetStatus(), o.GetOrder().GetReason())
	}
	unknown := s.awaitTerminal(t, s.create(t, order("NEVER-STOCKED", 1, 100)))
	if unknown.GetOrder().GetStatus() != rejected {
		t.Errorf("order of an unknown SKU ended %s", unknown.GetOrder().GetStatus())
	}
	checkStock(t, s.stock(t, "SKU-1"), 1, 0, 0)
	if _, err := call[ordersv1.GetPaymentResponse](t, s, "payments.get", &ordersv1.GetPaymentRequest{OrderId: id}); runtimetest.Code(err) != 404 {
		t.Errorf("a rejected order was charged: %v", err)
	}
}

// With a flaky gateway every order still confirms, each captured once.
func TestSagaRetriesTransientFailures(t *testing.T) {
	s := startSystem(t, func(c *config.Config) {
		c.PaymentFailureRate = 0.3
		c.RetryPolicy = "attempts=12,initial=5ms,multiplier=1.5,max=50ms,jitter=0.2"
	})
	const orders = 40
	s.restock(t, "SKU-1", orders)
	ids := make([]string, orders)
	for i := range ids {
		ids[i] = s.create(t, order("SKU-1", 1, 100))
	}
	retried := 0
	for _, id := range ids {
		if o := s.awaitTerminal(t, id); o.GetOrder().GetStatus() != confirmed {
			t.Errorf("order %s ended %s (%s)", id, o.GetOrder().GetStatus(), o.GetOrder().GetReason())
		}
		p := s.payment(t, id)
		if p.GetCaptures() != 1 || p.GetRefunds() != 0 {
			t.Errorf("order %s: %d captures, %d refunds", id, p.GetCaptures(), p.GetRefunds())
		}
		if p.GetAttempts() > 1 {
			retried++
		}
	}
	if retried == 0 {
		t.Error("no payment needed a second attempt at a 30% failure rate")
	}
	checkStock(t, s.stock(t, "SKU-1"), 0, 0, orders)
}

func TestCancelOnRequest(t *testing.T) {
	// No charge function runs: the order waits, reserved, until cancelled.
	s := startSystem(t, func(c *config.Config) { c.Functions = []string{"orders", "inventory"} })
	s.restock(t, "SKU-1", 5)
	id := s.create(t, order("SKU-1", 2, 100))
	waitStatus(t, s, id, ordersv1.OrderStatus_ORDER_STATUS_RESERVED)

	got := must[*ordersv1.CancelOrderResponse](t)(call[ordersv1.CancelOrderResponse](t, s, "orders.cancel", &ordersv1.CancelOrderRequest{OrderId: id, Reason: "changed my mind"}))
	if got.GetStatus() == cancelled {
		t.Errorf("cancel replied %s before the release", got.GetStatus())
	}
	// The payment functions join late, as a pod that starts: the charge
	// still pending and the refund both run, in either order.
	startSystemOn(t, s, func(c *config.Config) { c.Functions = []string{"payments"} })
	o := s.awaitTerminal(t, id)
	if o.GetOrder().GetStatus() != cancelled || o.GetOrder().GetReason() != "changed my mind" {
		t.Fatalf("order ended %s (%q): %s", o.GetOrder().GetStatus(), o.GetOrder().GetReason(), eventTypes(o))
	}
	checkStock(t, s.stock(t, "SKU-1"), 5, 0, 0)
	// Whether the late pod charged first (then it was refunded) or the
	// refund voided the charge first, nothing is kept.
	if p := s.payment(t, id); p.GetCaptures()-p.GetRefunds() != 0 {
		t.Errorf("cancelled order kept money: %v", p)
	}
	for _, bad := range []*ordersv1.CancelOrderRequest{{}, {OrderId: "no-such-order"}, {OrderId: id, Reason: strings.Repeat("x", 600)}, {OrderId: id, Reason: "\u001b[2Jgone"}} {
		if _, err := call[ordersv1.CancelOrderResponse](t, s, "orders.cancel", bad); runtimetest.Code(err) < 400 || runtimetest.Code(err) >= 500 {
			t.Errorf("cancel %v: %v, want a 4xx", bad, err)
		}
	}
}

func waitStatus(t *testing.T, s *testSystem, id string, want ordersv1.OrderStatus) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.order(t, id).GetOrder().GetStatus() != want {
		if time.Now().After(deadline) {
			t.Fatalf("order %s never reached %s", id, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startSystemOn starts another host on the server of s, as another pod.
func startSystemOn(t *testing.T, s *testSystem, mutate ...func(*config.Config)) *system {
	t.Helper()
	cfg := s.sys.cfg
	cfg.Functions = nil
	for _, m := range mutate {
		m(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sys, err := start(ctx, cfg, io.Discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sys.shutdown() })
	return sys
}

// A step that always fails is dead-lettered, and the saga compensates: the
// order ends CANCELLED with the failure as its reason, its stock released
// and anything the gateway captured refunded. Replaying the dead letter of
// the ended order changes nothing.
func TestDeadLetterCompensates(t *testing.T) {
	// This pod can reach everything but the gateway, for charging: every
	// capture fails, half of them after the money moved (a lost reply).
	s := startSystem(t, func(c *config.Config) {
		c.Functions = []string{"orders", "inventory", "payments.refund", "payments.get", "deadletters"}
	})
	startSystemOn(t, s, func(c *config.Config) {
		c.Functions = []string{"payments.charge"}
		c.PaymentFailureRate = 1
		c.RetryPolicies = map[string]string{"payments.charge": "attempts=3,initial=5ms,max=20ms"}
	})
	s.restock(t, "SKU-1", 10)
	const orders = 6
	ids := make([]string, orders)
	for i := range ids {
		ids[i] = s.create(t, order("SKU-1", 1, 500))
	}
	for _, id := range ids {
		o := s.awaitTerminal(t, id)
		if o.GetOrder().GetStatus() != cancelled || !strings.Contains(o.GetOrder().GetReason(), "payments.charge gave up after 3 attempts") {
			t.Errorf("order %s ended %s (%q)", id, o.GetOrder().GetStatus(), o.GetOrder().GetReason())
		}
		if p := s.payment(t, id); p.GetCaptures()-p.GetRefunds() != 0 || p.GetAttempts() != 3 {
			t.Errorf("order %s: %d captures, %d refunds in %d attempts; want nothing kept after 3", id, p.GetCaptures(), p.GetRefunds(), p.GetAttempts())
		}
	}
	checkStock(t, s.stock(t, "SKU-1"), 10, 0, 0)

	list := must[*runtimev1.ListDeadLettersResponse](t)(call[runtimev1.ListDeadLettersResponse](t, s, "deadletters.list", &runtimev1.ListDeadLettersRequest{}))
	if len(list.GetDeadLetters()) != orders {
		t.Fatalf("%d dead letters, want %d", len(list.GetDeadLetters()), orders)
	}
	dl := list.GetDeadLetters()[0]
	if dl.GetConsumer() != chargepayment.Durable || dl.GetFunction() != "payments.charge" || dl.GetAttempts() != 3 ||
		!strings.Contains(dl.GetError(), "gateway unavailable") || !strings.HasSuffix(dl.GetSubject(), ".stock_reserved") || len(dl.GetData()) == 0 {
		t.Errorf("dead letter %v", dl)
	}

	// The charging pod's stats count the retries and dead letters.
	var data host.EndpointData
	for _, st := range runtimetest.Stats(t, s.nc, "payments") {
		for _, e := range st.Endpoints {
			var d host.EndpointData
			if e.Name == "charge" && json.Unmarshal(e.Data, &d) == nil && d.Triggers != nil {
				data = d
			}
		}
	}
	if ts := data.Triggers[chargepayment.Durable]; ts == nil || ts.DeadLetters != orders || ts.Retries != 2*orders {
		t.Errorf("charge trigger stats %+v, want %d dead letters and %d retries", ts, orders, 2*orders)
	}

	// Replay one: the order has ended, so the dead letter is removed and
	// nothing is published: the order, its history included, is unchanged.
	id := orderlog.OrderID(dl.GetSubject())
	before := s.order(t, id)
	rep := must[*runtimev1.ReplayDeadLetterResponse](t)(call[runtimev1.ReplayDeadLetterResponse](t, s, "deadletters.replay", &runtimev1.ReplayDeadLetterRequest{Sequence: dl.GetSequence()}))
	if rep.GetSubject() != dl.GetSubject() || rep.GetReplayedSequence() != 0 {
		t.Errorf("replay of an ended order's letter = %v, want nothing replayed", rep)
	}
	time.Sleep(300 * time.Millisecond)
	waitIdle(t, s)
	after := s.order(t, id)
	if !proto.Equal(after, before) {
		t.Errorf("replay changed the order: %v, was %v", after, before)
	}
	checkStock(t, s.stock(t, "SKU-1"), 10, 0, 0)
	list = must[*runtimev1.ListDeadLettersResponse](t)(call[runtimev1.ListDeadLettersResponse](t, s, "deadletters.list", &runtimev1.ListDeadLettersRequest{}))
	if len(list.GetDeadLetters()) != orders-1 {
		t.Errorf("%d dead letters after one replay, want %d", len(list.GetDeadLetters()), orders-1)
	}
	if _, err := call[runtimev1.ReplayDeadLetterResponse](t, s, "deadletters.replay", &runtimev1.ReplayDeadLetterRequest{Sequence: dl.GetSequence()}); runtimetest.Code(err) != 404 {
		t.Errorf("second replay of one dead letter: %v, want 404", err)
	}
	for _, bad := range []*runtimev1.ListDeadLettersRequest{{Limit: -1}, {AfterSequence: math.MaxUint64}, {AfterSequence: math.MaxInt64 + 1}} {
		if _, err := call[runtimev1.ListDeadLettersResponse](t, s, "deadletters.list", bad); runtimetest.Code(err) != 400 {
			t.Errorf("list %v: %v, want 400", bad, err)
		}
	}
}

// waitIdle waits until every consumer has handled every message.
func waitIdle(t *testing.T, s *testSystem) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	for {
		busy := ""
		for _, stream := range append(orderStreams(), "DEADLETTERS") {
			st, err := s.js.Stream(ctx, stream)
			if err != nil {
				t.Fatal(err)
			}
			for name := range st.ConsumerNames(ctx).Name() {
				c, err := st.Consumer(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				info, err := c.Info(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if info.NumPending > 0 || info.NumAckPending > 0 || info.NumRedelivered > 0 {
					busy = fmt.Sprintf("%s: %d pending, %d unacked, %d redelivering", name, info.NumPending, info.NumAckPending, info.NumRedelivered)
				}
			}
		}
		if busy == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumers not idle after 20s: %s", busy)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Many concurrent orders for scarce stock: every order ends, stock is
// conserved and exactly as many orders confirm as there are units.
func TestSagaUnderContention(t *testing.T) {
	s := startSystem(t)
	const units, orders = 15, 40
	s.restock(t, "HOT", units)
	ids := make(chan string, orders)
	var wg sync.WaitGroup
	for range orders {
		wg.Go(func() { ids <- s.create(t, order("HOT", 1, 100)) })
	}
	wg.Wait()
	close(ids)
	got := map[ordersv1.OrderStatus]int{}
	for id := range ids {
		got[s.awaitTerminal(t, id).GetOrder().GetStatus()]++
	}
	if got[confirmed] != units || got[rejected] != orders-units {
		t.Errorf("outcomes %v, want %d confirmed and %d rejected", got, units, orders-units)
	}
	checkStock(t, s.stock(t, "HOT"), 0, 0, units)
}

// Any order and timing of public calls keeps the invariants: creates
// (repeated with their key), cancels (sometimes twice) and gets, at random
// moments while the saga runs with a slow, flaky gateway. A cancel that was
// accepted never lets the order confirm and nothing is kept, whatever step
// it met (the charge window included); one refused with 409 met an order
// that had ended. Every order ends, at most one capture each, stock is conserved.
func TestRandomInterleavingOfPublicCalls(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	var rngMu sync.Mutex
	intn := func(n int) int { rngMu.Lock(); defer rngMu.Unlock(); return rng.IntN(n) }

	s := startSystem(t, func(c *config.Config) {
		c.PaymentLatency = 30 * time.Millisecond
		c.PaymentFailureRate = 0.2
		c.PaymentMaxOrderMinor = 50_000
		c.RetryPolicy = "attempts=30,initial=5ms,multiplier=1.5,max=50ms,jitter=0.2"
	})
	const orders = 60
	restocked := map[string]int32{"R-1": 40, "R-2": 15}
	for sku, n := range restocked {
		s.restock(t, sku, n)
	}
	type outcome struct {
		id       string
		sku      string
		qty      int32
		payable  bool
		accepted bool // a cancel was accepted
	}
	results := make([]outcome, orders)
	var wg sync.WaitGroup
	for i := range orders {
		wg.Go(func() {
			sku := []string{"R-1", "R-2"}[i%2]
			qty := int32(1 + i%3)
			price := int64(1000)
			if i%7 == 0 {
				price = 60_000 // above the limit: declined
			}
			req := order(sku, qty, price)
			key := fmt.Sprintf("rand-%d", i)
			r := outcome{sku: sku, qty: qty, payable: int64(qty)*price <= 50_000}
			created := must[*ordersv1.CreateOrderResponse](t)(call[ordersv1.CreateOrderResponse](t, s, "orders.create", req, "Idempotency-Key", key))
			r.id = created.GetOrderId()
			for range 1 + intn(4) {
				time.Sleep(time.Duration(intn(60)) * time.Millisecond)
				switch intn(4) {
				case 0, 1:
					_, err := call[ordersv1.CancelOrderResponse](t, s, "orders.cancel", &ordersv1.CancelOrderRequest{OrderId: r.id, Reason: "random"})
					switch code := runtimetest.Code(err); {
					case err == nil:
						r.accepted = true
					case code == 409:
					default:
						t.Errorf("cancel of %s: %v", r.id, err)
					}
				case 2:
					again := must[*ordersv1.CreateOrderResponse](t)(call[ordersv1.CreateOrderResponse](t, s, "orders.create", req, "Idempotency-Key", key))
					if again.GetOrderId() != r.id {
						t.Errorf("repeat of %s created %s", r.id, again.GetOrderId())
					}
				case 3:
					s.order(t, r.id)
				}
			}
			results[i] = r
		})
	}
	wg.Wait()

	counts := map[ordersv1.OrderStatus]int{}
	sold := map[string]int32{}
	for _, r := range results {
		o := s.awaitTerminal(t, r.id).GetOrder()
		counts[o.GetStatus()]++
		// An accepted cancel never ends CONFIRMED; REJECTED happens when
		// the reservation, already under way, found no stock.
		if r.accepted && o.GetStatus() == confirmed {
			t.Errorf("order %s: cancel accepted, ended %s", r.id, o.GetStatus())
		}
		if o.GetStatus() == confirmed {
			sold[r.sku] += r.qty
		}
		p, err := call[ordersv1.GetPaymentResponse](t, s, "payments.get", &ordersv1.GetPaymentRequest{OrderId: r.id})
		if err != nil && runtimetest.Code(err) != 404 {
			t.Fatal(err)
		}
		want := int32(0)
		if o.GetStatus() == confirmed {
			want = 1
		}
		if p.GetCaptures() > 1 || p.GetCaptures()-p.GetRefunds() != want {
			t.Errorf("order %s %s: %d captures, %d refunds", r.id, o.GetStatus(), p.GetCaptures(), p.GetRefunds())
		}
		if !r.accepted && r.payable && o.GetStatus() == cancelled && !strings.Contains(o.GetReason(), "random") {
			t.Errorf("payable order %s cancelled without a cancel: %s", r.id, o.GetReason())
		}
	}
	waitIdle(t, s)
	for sku, n := range restocked {
		st := s.stock(t, sku)
		if st.GetAvailable()+st.GetReserved()+st.GetSold() != n || st.GetReserved() != 0 || st.GetSold() != sold[sku] {
			t.Errorf("%s: %v, restocked %d, confirmed orders bought %d", sku, st, n, sold[sku])
		}
	}
	t.Logf("outcomes: %v", counts)
}

// Dead letters expire with ORDER_RETENTION once their order has ended (or
// if it never existed); the letter of an order still open stays, however
// old: invariant 5 holds for every order in flight.
func TestDeadLettersOfEndedOrdersExpire(t *testing.T) {
	// No compensation and no payments here: the order stays open.
	s := startSystem(t, func(c *config.Config) {
		c.OrderRetention = 20 * time.Second
		c.Functions = []string{"orders.create", "orders.get", "inventory", "deadletters"}
	})
	s.restock(t, "SKU-1", 5)
	open := s.create(t, order("SKU-1", 1, 100))
	waitStatus(t, s, open, ordersv1.OrderStatus_ORDER_STATUS_RESERVED)
	letter := func(subject, typ string) {
		t.Helper()
		// Failed a minute ago, so older than the retention, while the open
		// order's events are fresh.
		dl := &runtimev1.DeadLetter{Stream: orderStream(orderlog.OrderID(subject)), Subject: subject, Consumer: "payments-charge", Function: "payments.charge",
			FailedAt: timestamppb.New(time.Now().Add(-time.Minute)), Headers: []*runtimev1.Header{{Name: "Event-Type", Value: typ}},
			Data: must[[]byte](t)(proto.Marshal(&ordersv1.StockReserved{OrderId: orderlog.OrderID(subject)}))}
		if _, err := s.js.Publish(context.Background(), "DEADLETTER.payments-charge", must[[]byte](t)(proto.Marshal(dl))); err != nil {
			t.Fatal(err)
		}
	}
	letter(orderlog.Subject(open, orderlog.StockReserved), "orders.v1.StockReserved")
	letter(orderlog.Subject("never-existed", orderlog.StockReserved), "orders.v1.StockReserved")
	letter("$KV.stock.sku.SKU-1", "orders.v1.StockLevel")
	deadline := time.Now().Add(15 * time.Second)
	for {
		list := must[*runtimev1.ListDeadLettersResponse](t)(call[runtimev1.ListDeadLettersResponse](t, s, "deadletters.list", &runtimev1.ListDeadLettersRequest{}))
		var subjects []string
		for _, dl := range list.GetDeadLetters() {
			subjects = append(subjects, dl.GetSubject())
		}
		if len(subjects) == 1 && subjects[0] == orderlog.Subject(open, orderlog.StockReserved) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead letters after the retention: %v, want only the open order's", subjects)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
