package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/orderflow/orderflow/functions/internal/inventory"
	"github.com/orderflow/orderflow/functions/internal/orderlog"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	runtimev1 "github.com/orderflow/orderflow/proto/gen/runtime/v1"
)

// serverProc is a nats-server process with fsync on every write.
type serverProc struct {
	cmd  *exec.Cmd
	conf string
	url  string
	env  []string // added to its environment (passwords)
	// user and password to check it is up with, if it takes none anonymous
	user, password string
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

// startAs starts the server, checking it is up as user.
func (s *serverProc) startAs(t *testing.T, user, password string) {
	t.Helper()
	s.user, s.password = user, password
	s.start(t)
}

func (s *serverProc) start(t *testing.T) {
	t.Helper()
	s.cmd = exec.Command(filepath.Join(binDir, "nats-server"), "-c", s.conf)
	s.cmd.Env = append(os.Environ(), s.env...)
	stderr := &lockedBuffer{}
	s.cmd.Stderr = stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var opts []nats.Option
		if s.user != "" {
			opts = append(opts, nats.UserInfo(s.user, s.password))
		}
		nc, err := nats.Connect(s.url, opts...)
		if err == nil {
			nc.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server not up: %v\n%s", err, stderr.String())
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
		return order("A", 1, 2*faultPaymentLimit), "A", 1
	case i%5 == 1: // scarce: some REJECTED
		return order("B", 1, 500), "B", 1
	default:
		q := int32(1 + i%3)
		return order("A", q, int64(100+i)), "A", q
	}
}

// faultLoad is a careful client's load on a system under faults: every
// create carries an Idempotency-Key and is retried until the system
// answers, so an order acknowledged once is known whatever fails.
type faultLoad struct {
	t        *testing.T
	nc       *nats.Conn
	restocks map[string]int32
	// connect are options of the load's connection (credentials); ops,
	// when set, calls the operators' endpoints (restock, dead letters),
	// which in the secure mode the client identity may not.
	connect []nats.Option
	ops     *nats.Conn

	mu  sync.Mutex
	ids []string // order i's id, "" until acknowledged
	// acked counts acknowledged creates, for faults paced by the load;
	// slowest is the longest create, first send to acknowledgement.
	acked   atomic.Int32
	slowest atomic.Int64
}

func newFaultLoad(t *testing.T, urls string, restocks map[string]int32, opts ...func(*faultLoad)) *faultLoad {
	t.Helper()
	l := &faultLoad{t: t, restocks: restocks}
	for _, o := range opts {
		o(l)
	}
	nc, err := nats.Connect(urls, append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}, l.connect...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	l.nc = nc
	for sku, n := range restocks {
		if err := l.call("inventory.restock", &ordersv1.RestockRequest{Sku: sku, Quantity: n}, &ordersv1.RestockResponse{}, nil, time.Now().Add(30*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// call retries until the system answers: during the faults requests time
// out, find no responder or get a 5xx, and a create is retried with its key.
// A 4xx is final.
func (l *faultLoad) call(subject string, in, out proto.Message, hdr nats.Header, deadline time.Time) error {
	data, err := proto.Marshal(in)
	if err != nil {
		return err
	}
	nc := l.nc
	if l.ops != nil && (subject == "inventory.restock" || strings.HasPrefix(subject, "deadletters.")) {
		nc = l.ops
	}
	for {
		m := nats.NewMsg(subject)
		m.Data, m.Header = data, hdr
		rctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		reply, err := nc.RequestMsgWithContext(rctx, m)
		cancel()
		if err == nil {
			code := reply.Header.Get("Nats-Service-Error-Code")
			if code == "" {
				return proto.Unmarshal(reply.Data, out)
			}
			err = fmt.Errorf("%s: %s %s", subject, code, reply.Header.Get("Nats-Service-Error"))
			if code[0] == '4' {
				return err
			}
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// run places orders faultOrder(0), (1), ... from workers clients, each
// pausing pace between orders, while faults runs, and until at least min
// orders (and at most max) are placed. It returns the ids of the orders
// placed; every one must have been acknowledged.
func (l *faultLoad) run(workers, minOrders, maxOrders int, pace time.Duration, faults func()) []string {
	l.t.Helper()
	var next atomic.Int32
	faultsDone := make(chan struct{})
	go func() { defer close(faultsDone); faults() }()
	done := func(i int) bool {
		select {
		case <-faultsDone:
			return i >= minOrders
		default:
			return i >= maxOrders
		}
	}
	loadDeadline := time.Now().Add(3 * time.Minute)
	var wg sync.WaitGroup
	var loadErr atomic.Value
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if done(i) {
					return
				}
				in, _, _ := faultOrder(i)
				out := &ordersv1.CreateOrderResponse{}
				hdr := nats.Header{"Idempotency-Key": []string{fmt.Sprintf("fault-%d", i)}}
				began := time.Now()
				err := l.call("orders.create", in, out, hdr, loadDeadline)
				for took := int64(time.Since(began)); ; {
					if prev := l.slowest.Load(); took <= prev || l.slowest.CompareAndSwap(prev, took) {
						break
					}
				}
				l.mu.Lock()
				for len(l.ids) <= i {
					l.ids = append(l.ids, "")
				}
				l.ids[i] = out.GetOrderId()
				l.mu.Unlock()
				if err != nil {
					loadErr.Store(fmt.Errorf("order %d: %w", i, err))
					return
				}
				l.acked.Add(1)
				time.Sleep(pace)
			}
		})
	}
	wg.Wait()
	<-faultsDone
	if err, _ := loadErr.Load().(error); err != nil {
		l.t.Fatal(err)
	}
	return l.ids
}

// verify checks every invariant of the design on the orders placed, once
// the saga has run its course.
func (l *faultLoad) verify(s *testSystem) {
	t := l.t
	t.Helper()
	ids := l.ids
	// 1. Every acknowledged order reaches a terminal state.
	deadline := time.Now().Add(90 * time.Second)
	status := make([]ordersv1.OrderStatus, len(ids))
	for i, id := range ids {
		for {
			got := &ordersv1.GetOrderResponse{}
			if err := l.call("orders.get", &ordersv1.GetOrderRequest{OrderId: id}, got, nil, deadline); err != nil {
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
	waitIdle(t, s)

	counts := map[ordersv1.OrderStatus]int{}
	sold := map[string]int32{}
	for i, id := range ids {
		// Terminal states never change.
		got := &ordersv1.GetOrderResponse{}
		if err := l.call("orders.get", &ordersv1.GetOrderRequest{OrderId: id}, got, nil, deadline); err != nil {
			t.Fatal(err)
		}
		if got.GetOrder().GetStatus() != status[i] {
			t.Errorf("order %d changed from %s to %s", i, status[i], got.GetOrder().GetStatus())
		}
		counts[status[i]]++
		in, sku, qty := faultOrder(i)
		if status[i] == confirmed {
			sold[sku] += qty
		}
		// No order the gateway would accept is cancelled by a fault: the
		// system rides out outages and the retry policy outlasts the
		// injected failures.
		if status[i] == cancelled && total(in) <= faultPaymentLimit {
			t.Errorf("payable order %d (%s, %d) CANCELLED: %s; events %s", i, id, total(in), got.GetOrder().GetReason(), eventTypes(got))
		}

		// 2. At most one capture; net charge 1 for CONFIRMED, else 0.
		p := &ordersv1.GetPaymentResponse{}
		err := l.call("payments.get", &ordersv1.GetPaymentRequest{OrderId: id}, p, nil, deadline)
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
	t.Logf("%d orders: %v", len(ids), counts)
	if counts[confirmed] == 0 || counts[cancelled] == 0 || counts[rejected] == 0 {
		t.Errorf("the load did not exercise every outcome: %v", counts)
	}

	// 3. Stock is conserved per SKU, nothing stays reserved, and sold is
	// exactly what the confirmed orders bought.
	for sku, restocked := range l.restocks {
		st := &ordersv1.GetStockResponse{}
		if err := l.call("inventory.get", &ordersv1.GetStockRequest{Sku: sku}, st, nil, deadline); err != nil {
			t.Fatal(err)
		}
		if st.GetAvailable()+st.GetReserved()+st.GetSold() != restocked || st.GetReserved() != 0 || st.GetSold() != sold[sku] {
			t.Errorf("%s: available %d + reserved %d + sold %d, restocked %d, confirmed orders bought %d",
				sku, st.GetAvailable(), st.GetReserved(), st.GetSold(), restocked, sold[sku])
			explainHolds(t, s, sku, l.call, deadline)
		}
	}

	// 4. A repeated create after the faults returns the same order.
	for i := 0; i < len(ids); i += 37 {
		in, _, _ := faultOrder(i)
		out := &ordersv1.CreateOrderResponse{}
		hdr := nats.Header{"Idempotency-Key": []string{fmt.Sprintf("fault-%d", i)}}
		if err := l.call("orders.create", in, out, hdr, deadline); err != nil || out.GetOrderId() != ids[i] {
			t.Errorf("repeat of order %d: %v, %v; want %s", i, out.GetOrderId(), err, ids[i])
		}
	}

	// 5. Nothing is stuck: the consumers are idle (waitIdle above), and
	// every dead letter belongs to an order that was compensated.
	dls := &runtimev1.ListDeadLettersResponse{}
	if err := l.call("deadletters.list", &runtimev1.ListDeadLettersRequest{Limit: 1000}, dls, nil, deadline); err != nil {
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

func total(o *ordersv1.CreateOrderRequest) int64 {
	var sum int64
	for _, it := range o.GetItems() {
		sum += int64(it.GetQuantity()) * it.GetUnitPriceMinor()
	}
	return sum
}

// faultPaymentLimit is PAYMENT_MAX_ORDER_MINOR of the fault tests.
const faultPaymentLimit = 100_000

// faultHostEnv configures the hosts of the fault tests: a flaky gateway,
// and for the charge a retry policy whose attempts outlast its failure rate
// (a payable order is cancelled by bad luck with probability 0.3^20 ≈
// 3.5e-11, under 1e-7 for a run of 1,500 orders); every other step fails
// only when JetStream does, and gets a policy far shorter than an election
// (3 attempts within 0.3s): only riding out outages without spending
// attempts keeps their orders. Short ack waits and timeouts.
func faultHostEnv(urls string) []string {
	return append([]string{"NATS_URL=" + urls, "HTTP_ADDR=off"}, faultSettings()...)
}

// faultSettings are the settings of faultHostEnv that do not depend on
// where the hosts run: the container test's pods take them too.
func faultSettings() []string {
	return []string{
		"PAYMENT_FAILURE_RATE=0.3",
		"PAYMENT_MAX_ORDER_MINOR=" + fmt.Sprint(faultPaymentLimit),
		"RETRY_POLICY=attempts=3,initial=50ms,multiplier=2,max=200ms,jitter=0.2",
		"RETRY_POLICY_PAYMENTS_CHARGE=attempts=20,initial=20ms,multiplier=2,max=400ms,jitter=0.2",
		"ACK_WAIT=3s",
		"REQUEST_TIMEOUT=2s",
	}
}

// TestFaults is the durability test of the saga: a real nats-server with
// fsync on every write and two hosts, each its own process, take a few
// hundred orders with a flaky payment gateway while one host and then the
// server are killed with SIGKILL and restarted. Then the invariants of the
// design must hold, exactly.
func TestFaults(t *testing.T) {
	const orders = 300
	dir := t.TempDir()
	srv := startServer(t, dir, freePort(t))
	hostEnv := faultHostEnv(srv.url)
	hostA := startBinary(t, t.TempDir(), hostEnv...)
	startBinary(t, t.TempDir(), hostEnv...) // host B runs throughout

	l := newFaultLoad(t, srv.url, map[string]int32{"A": 2000, "B": 20})
	l.run(8, orders, orders, 0, func() {
		waitCount(&l.acked, orders/3)
		hostA.kill9()
		time.Sleep(300 * time.Millisecond)
		hostA = startBinary(t, t.TempDir(), hostEnv...)
		waitCount(&l.acked, 2*orders/3)
		srv.kill()
		time.Sleep(300 * time.Millisecond)
		srv.start(t)
	})
	l.verify(&testSystem{nc: l.nc, js: must[jetstream.JetStream](t)(jetstream.New(l.nc))})
}

// explainHolds prints the orders still holding units of sku, with their
// histories and reservation records, to make a failure readable.
func explainHolds(t *testing.T, s *testSystem, sku string, call func(string, proto.Message, proto.Message, nats.Header, time.Time) error, deadline time.Time) {
	t.Helper()
	// The SKU's units are spread over its sub-ledgers (or, for a SKU
	// stocked before them, one record), each in its slot's partition.
	keys := []string{"sku." + sku}
	for n := range inventory.SubLedgers {
		keys = append(keys, fmt.Sprintf("sku.%s.%d", sku, n))
	}
	for _, key := range keys {
		kv, err := s.js.KeyValue(context.Background(), stockBucket(key))
		if err != nil {
			t.Log(err)
			return
		}
		e, err := kv.Get(context.Background(), key)
		if err != nil {
			continue
		}
		var l ordersv1.StockLevel
		if err := proto.Unmarshal(e.Value(), &l); err != nil {
			t.Log(key, err)
			continue
		}
		explainLedger(t, s.js, &l, call, deadline)
	}
}

func explainLedger(t *testing.T, js jetstream.JetStream, l *ordersv1.StockLevel, call func(string, proto.Message, proto.Message, nats.Header, time.Time) error, deadline time.Time) {
	t.Helper()
	for id, h := range l.GetHolds() {
		if h.GetState() != ordersv1.HoldState_HOLD_STATE_HELD {
			continue
		}
		o := &ordersv1.GetOrderResponse{}
		_ = call("orders.get", &ordersv1.GetOrderRequest{OrderId: id}, o, nil, deadline)
		var r ordersv1.Reservation
		if kv, err := js.KeyValue(context.Background(), stockBucket("order."+id)); err == nil {
			if re, err := kv.Get(context.Background(), "order."+id); err == nil {
				_ = proto.Unmarshal(re.Value(), &r)
			}
		}
		t.Logf("held: %s x%d by attempt %s since %s, order %s, events %s, reservation %v", id, h.GetQuantity(), h.GetAttempt(),
			time.Unix(h.GetHeldUnix(), 0).UTC().Format(time.TimeOnly), o.GetOrder().GetStatus(), eventTypes(o), &r)
	}
}

// waitCount waits until n reaches want, for at most two minutes (a load
// that fails stops counting; the test reports why).
func waitCount(n *atomic.Int32, want int) {
	deadline := time.Now().Add(2 * time.Minute)
	for int(n.Load()) < want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}
