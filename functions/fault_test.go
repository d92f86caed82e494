package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/orderflow/orderflow/functions/internal/orderlog"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	runtimev1 "github.com/orderflow/orderflow/proto/gen/runtime/v1"
)

// serverProc is a nats-server process with fsync on every write.
type serverProc struct {
	cmd  *exec.Cmd
	conf string
	url  string
}

func startServer(t *testing.T, dir string, port int) *serverProc {
	t.Helper()
	binaries(t)
	conf := filepath.Join(dir, "nats.conf")
	body := fmt.Sprintf("server_name: fault\nhost: 127.0.0.1\nport: %d\njetstream { store_dir: %q, sync_interval: always }\n", port, filepath.Join(dir, "js"))
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &serverProc{conf: conf, url: fmt.Sprintf("nats://127.0.0.1:%d", port)}
	s.start(t)
	t.Cleanup(func() { s.kill() })
	return s
}

func (s *serverProc) start(t *testing.T) {
	t.Helper()
	s.cmd = exec.Command(filepath.Join(binDir, "nats-server"), "-c", s.conf)
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		nc, err := nats.Connect(s.url)
		if err == nil {
			nc.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server not up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill is kill -9: no flush, no goodbye.
func (s *serverProc) kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGKILL)
		_ = s.cmd.Wait()
	}
}

func (p *proc) kill9() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// faultOrder is what order i of the load asks for.
func faultOrder(i int) (*ordersv1.CreateOrderRequest, string, int32) {
	switch {
	case i%10 == 0: // above the payment limit: CANCELLED
		return order("A", 1, 200_000), "A", 1
	case i%5 == 1: // scarce: some REJECTED
		return order("B", 1, 500), "B", 1
	default:
		q := int32(1 + i%3)
		return order("A", q, int64(100+i)), "A", q
	}
}

// TestFaults is the durability test of the saga: a real nats-server with
// fsync on every write and two hosts, each its own process, take a few
// hundred orders with a flaky payment gateway while one host and then the
// server are killed with SIGKILL and restarted. Then the invariants of the
// design must hold, exactly.
func TestFaults(t *testing.T) {
	const (
		orders   = 300
		workers  = 8
		restockA = 2000
		restockB = 20
	)
	dir := t.TempDir()
	srv := startServer(t, dir, freePort(t))
	hostEnv := []string{
		"NATS_URL=" + srv.url,
		"HTTP_ADDR=off",
		"PAYMENT_FAILURE_RATE=0.3",
		"PAYMENT_MAX_ORDER_MINOR=100000",
		"RETRY_POLICY=attempts=8,initial=20ms,multiplier=2,max=400ms,jitter=0.2",
		"ACK_WAIT=3s",
		"REQUEST_TIMEOUT=2s",
	}
	hostA := startBinary(t, t.TempDir(), hostEnv...)
	startBinary(t, t.TempDir(), hostEnv...) // host B runs throughout

	nc, err := nats.Connect(srv.url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()

	// call retries until the system answers: during the faults requests time
	// out or find no responder, and a create is retried with its key.
	callRetry := func(subject string, msg *nats.Msg, deadline time.Time) (*nats.Msg, error) {
		for {
			m := nats.NewMsg(subject)
			m.Data, m.Header = msg.Data, msg.Header
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			reply, err := nc.RequestMsgWithContext(rctx, m)
			cancel()
			if err == nil && reply.Header.Get("Nats-Service-Error-Code") == "" {
				return reply, nil
			}
			if err == nil {
				code := reply.Header.Get("Nats-Service-Error-Code")
				if code[0] == '4' {
					return nil, fmt.Errorf("%s: %s %s", subject, code, reply.Header.Get("Nats-Service-Error"))
				}
				err = fmt.Errorf("%s: %s %s", subject, code, reply.Header.Get("Nats-Service-Error"))
			}
			if time.Now().After(deadline) {
				return nil, err
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	protoCall := func(subject string, in, out proto.Message, hdr nats.Header, deadline time.Time) error {
		data, err := proto.Marshal(in)
		if err != nil {
			return err
		}
		reply, err := callRetry(subject, &nats.Msg{Data: data, Header: hdr}, deadline)
		if err != nil {
			return err
		}
		return proto.Unmarshal(reply.Data, out)
	}

	for sku, n := range map[string]int32{"A": restockA, "B": restockB} {
		if err := protoCall("inventory.restock", &ordersv1.RestockRequest{Sku: sku, Quantity: n}, &ordersv1.RestockResponse{}, nil, time.Now().Add(10*time.Second)); err != nil {
			t.Fatal(err)
		}
	}

	// The load, with the faults injected as it goes.
	ids := make([]string, orders)
	var acked atomic.Int32
	loadDeadline := time.Now().Add(45 * time.Second)
	work := make(chan int)
	var wg sync.WaitGroup
	var loadErr atomic.Value
	for range workers {
		wg.Go(func() {
			for i := range work {
				in, _, _ := faultOrder(i)
				out := &ordersv1.CreateOrderResponse{}
				hdr := nats.Header{"Idempotency-Key": []string{fmt.Sprintf("fault-%d", i)}}
				if err := protoCall("orders.create", in, out, hdr, loadDeadline); err != nil {
					loadErr.Store(fmt.Errorf("order %d: %w", i, err))
					continue
				}
				ids[i] = out.GetOrderId()
				acked.Add(1)
			}
		})
	}
	faults := make(chan struct{})
	go func() {
		defer close(faults)
		waitCount(&acked, orders/3)
		hostA.kill9()
		time.Sleep(300 * time.Millisecond)
		hostA = startBinary(t, t.TempDir(), hostEnv...)
		waitCount(&acked, 2*orders/3)
		srv.kill()
		time.Sleep(300 * time.Millisecond)
		srv.start(t)
	}()
	for i := range orders {
		work <- i
	}
	close(work)
	wg.Wait()
	<-faults
	if err, _ := loadErr.Load().(error); err != nil {
		t.Fatal(err)
	}

	// 1. Every acknowledged order reaches a terminal state.
	deadline := time.Now().Add(40 * time.Second)
	status := make([]ordersv1.OrderStatus, orders)
	for i, id := range ids {
		for {
			got := &ordersv1.GetOrderResponse{}
			if err := protoCall("orders.get", &ordersv1.GetOrderRequest{OrderId: id}, got, nil, deadline); err != nil {
				t.Fatalf("order %d (%s): %v", i, id, err)
			}
			status[i] = got.GetOrder().GetStatus()
			if orderlog.IsTerminal(status[i]) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("order %d (%s) still %s: %v", i, id, status[i], eventTypes(got))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	s := &testSystem{nc: nc, js: must[jetstream.JetStream](t)(jetstream.New(nc))}
	waitIdle(t, s)

	counts := map[ordersv1.OrderStatus]int{}
	sold := map[string]int32{}
	for i, id := range ids {
		// Terminal states never change.
		got := &ordersv1.GetOrderResponse{}
		if err := protoCall("orders.get", &ordersv1.GetOrderRequest{OrderId: id}, got, nil, deadline); err != nil {
			t.Fatal(err)
		}
		if got.GetOrder().GetStatus() != status[i] {
			t.Errorf("order %d changed from %s to %s", i, status[i], got.GetOrder().GetStatus())
		}
		counts[status[i]]++
		_, sku, qty := faultOrder(i)
		if status[i] == confirmed {
			sold[sku] += qty
		}

		// 2. At most one capture; net charge 1 for CONFIRMED, else 0.
		p := &ordersv1.GetPaymentResponse{}
		err := protoCall("payments.get", &ordersv1.GetPaymentRequest{OrderId: id}, p, nil, deadline)
		if err != nil && status[i] == confirmed {
			t.Errorf("confirmed order %d has no payment: %v", i, err)
		}
		want := int32(0)
		if status[i] == confirmed {
			want = 1
		}
		if p.GetCaptures() > 1 || p.GetCaptures()-p.GetRefunds() != want {
			t.Errorf("order %d %s: %d captures, %d refunds; want net %d", i, status[i], p.GetCaptures(), p.GetRefunds(), want)
		}
	}
	t.Logf("outcomes: %v", counts)
	if counts[confirmed] == 0 || counts[cancelled] == 0 || counts[rejected] == 0 {
		t.Errorf("the load did not exercise every outcome: %v", counts)
	}

	// 3. Stock is conserved per SKU, nothing stays reserved, and sold is
	// exactly what the confirmed orders bought.
	for sku, restocked := range map[string]int32{"A": restockA, "B": restockB} {
		l := &ordersv1.GetStockResponse{}
		if err := protoCall("inventory.get", &ordersv1.GetStockRequest{Sku: sku}, l, nil, deadline); err != nil {
			t.Fatal(err)
		}
		if l.GetAvailable()+l.GetReserved()+l.GetSold() != restocked || l.GetReserved() != 0 || l.GetSold() != sold[sku] {
			t.Errorf("%s: available %d + reserved %d + sold %d, restocked %d, confirmed orders bought %d",
				sku, l.GetAvailable(), l.GetReserved(), l.GetSold(), restocked, sold[sku])
			explainHolds(t, s, sku, protoCall, deadline)
		}
	}

	// 4. A repeated create after the faults returns the same order.
	for i := 0; i < orders; i += 37 {
		in, _, _ := faultOrder(i)
		out := &ordersv1.CreateOrderResponse{}
		hdr := nats.Header{"Idempotency-Key": []string{fmt.Sprintf("fault-%d", i)}}
		if err := protoCall("orders.create", in, out, hdr, deadline); err != nil || out.GetOrderId() != ids[i] {
			t.Errorf("repeat of order %d: %v, %v; want %s", i, out.GetOrderId(), err, ids[i])
		}
	}

	// 5. Nothing is stuck: the consumers are idle (waitIdle above), and
	// every dead letter belongs to an order that was compensated.
	dls := &runtimev1.ListDeadLettersResponse{}
	if err := protoCall("deadletters.list", &runtimev1.ListDeadLettersRequest{Limit: 1000}, dls, nil, deadline); err != nil {
		t.Fatal(err)
	}
	byID := map[string]int{}
	for i, id := range ids {
		byID[id] = i
	}
	for _, dl := range dls.GetDeadLetters() {
		i, ok := byID[orderlog.OrderID(dl.GetSubject())]
		if !ok || status[i] != cancelled {
			t.Errorf("dead letter %s (%s) is not of a cancelled order", dl.GetSubject(), dl.GetError())
		}
	}
	t.Logf("%d dead letters", len(dls.GetDeadLetters()))
}

// explainHolds prints the orders still holding units of sku, with their
// histories and reservation records, to make a failure readable.
func explainHolds(t *testing.T, s *testSystem, sku string, call func(string, proto.Message, proto.Message, nats.Header, time.Time) error, deadline time.Time) {
	t.Helper()
	kv, err := s.js.KeyValue(context.Background(), "stock")
	if err != nil {
		t.Log(err)
		return
	}
	e, err := kv.Get(context.Background(), "sku."+sku)
	if err != nil {
		t.Log(err)
		return
	}
	var l ordersv1.StockLevel
	if err := proto.Unmarshal(e.Value(), &l); err != nil {
		t.Log(err)
		return
	}
	for id, h := range l.GetHolds() {
		if h.GetState() != ordersv1.HoldState_HOLD_STATE_HELD {
			continue
		}
		o := &ordersv1.GetOrderResponse{}
		_ = call("orders.get", &ordersv1.GetOrderRequest{OrderId: id}, o, nil, deadline)
		var r ordersv1.Reservation
		if re, err := kv.Get(context.Background(), "order."+id); err == nil {
			_ = proto.Unmarshal(re.Value(), &r)
		}
		t.Logf("held: %s x%d, order %s, events %s, reservation %v", id, h.GetQuantity(), o.GetOrder().GetStatus(), eventTypes(o), &r)
	}
}

func waitCount(n *atomic.Int32, want int) {
	for int(n.Load()) < want {
		time.Sleep(10 * time.Millisecond)
	}
}
