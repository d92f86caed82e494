package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/orderflow/orderflow/functions/internal/orderlog"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	runtimev1 "github.com/orderflow/orderflow/proto/gen/runtime/v1"
	"github.com/orderflow/orderflow/runtime/authz"
	"github.com/orderflow/orderflow/runtime/config"
	"github.com/orderflow/orderflow/runtime/runtimetest"
)

// secureServer is a nats-server running the generated permissions: every
// role of `orderflow authz`, each with its password from the environment.
type secureServer struct {
	srv       *server.Server
	passwords map[string]string
}

func (s *secureServer) url() string { return s.srv.ClientURL() }

// startSecure writes the authz fragment and a server config that includes
// it, as deploy/nats/secure.conf does, and starts the server.
func startSecure(t *testing.T) *secureServer {
	t.Helper()
	dir := t.TempDir()
	s := &secureServer{passwords: map[string]string{}}
	for _, r := range roles(testConfig("")) {
		pw := "pw-" + r.Name + "-" + fmt.Sprint(time.Now().UnixNano())
		s.passwords[r.Name] = pw
		t.Setenv(authz.PasswordVar(r.Name), pw)
	}
	if err := os.WriteFile(filepath.Join(dir, "auth.conf"), []byte(authz.Config(roles(testConfig("")), "")), 0o600); err != nil {
		t.Fatal(err)
	}
	port := runtimetest.FreePorts(t, 1)[0]
	conf := filepath.Join(dir, "secure.conf")
	body := fmt.Sprintf("listen: 127.0.0.1:%d\njetstream { store_dir: %q }\ninclude ./auth.conf\n", port, filepath.Join(dir, "js"))
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("the generated permissions do not load: %v", err)
	}
	opts.NoLog, opts.NoSigs = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("secure server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	s.srv = srv
	return s
}

// as is a config for a host acting as role.
func (s *secureServer) as(role string, mutate ...func(*config.Config)) config.Config {
	cfg := testConfig(s.url())
	cfg.NATSUser, cfg.NATSPassword = role, s.passwords[role]
	cfg.CreateMissing = false
	for _, m := range mutate {
		m(&cfg)
	}
	return cfg
}

// violations collects the permission violations a connection is told of.
type violations struct {
	mu   sync.Mutex
	seen []string
}

func (v *violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrPermissionViolation) {
		v.mu.Lock()
		v.seen = append(v.seen, err.Error())
		v.mu.Unlock()
	}
}

// saw waits for a violation that names subject.
func (v *violations) saw(subject string) bool {
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		v.mu.Lock()
		for _, s := range v.seen {
			if strings.Contains(s, `"`+subject+`"`) {
				v.mu.Unlock()
				return true
			}
		}
		v.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// connectAs connects as role, with the role's inbox prefix.
func (s *secureServer) connectAs(t *testing.T, role string) (*nats.Conn, *violations) {
	t.Helper()
	v := &violations{}
	nc, err := nats.Connect(s.url(), nats.UserInfo(role, s.passwords[role]), nats.CustomInboxPrefix(authz.Inbox(role)),
		nats.ErrorHandler(v.handler))
	if err != nil {
		t.Fatalf("connect as %s: %v", role, err)
	}
	t.Cleanup(nc.Close)
	return nc, v
}

// securePods provisions the server as admin and starts one pod per
// service role, each with its own identity and nothing to manage streams.
func securePods(t *testing.T, s *secureServer, mutate ...func(*config.Config)) map[string]*system {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := provision(ctx, s.as("admin", mutate...), &out, false); err != nil {
		t.Fatalf("provision as admin: %v\n%s", err, out.String())
	}
	pods := map[string]*system{}
	for _, role := range []string{"orders", "inventory", "payments", "deadletters"} {
		cfg := s.as(role, append(mutate, func(c *config.Config) { c.Functions = []string{role} })...)
		sys, err := start(ctx, cfg, io.Discard, nil)
		if err != nil {
			t.Fatalf("pod %s: %v", role, err)
		}
		t.Cleanup(func() { _ = sys.shutdown() })
		for deadline := time.Now().Add(10 * time.Second); sys.host.Ready() != nil; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("pod %s not ready: %v", role, sys.host.Ready())
			}
		}
		pods[role] = sys
	}
	return pods
}

// With every pod on its own role and orders placed by the client role, the
// saga runs as before: confirm, decline, reject, cancel.
func TestSecureModeRunsTheSaga(t *testing.T) {
	s := startSecure(t)
	securePods(t, s, func(c *config.Config) { c.PaymentMaxOrderMinor = 100_000 })
	ops, _ := s.connectAs(t, "ops")
	client, _ := s.connectAs(t, "client")
	sys := &testSystem{nc: client}
	opsSys := &testSystem{nc: ops}
	opsSys.restock(t, "SKU-1", 10)

	for _, tt := range []struct {
		order *ordersv1.CreateOrderRequest
		want  ordersv1.OrderStatus
	}{
		{order("SKU-1", 2, 1999), confirmed},
		{order("SKU-1", 1, 200_000), cancelled},
		{order("SKU-9", 1, 100), rejected},
	} {
		id := sys.create(t, tt.order)
		if got := sys.awaitTerminal(t, id).GetOrder().GetStatus(); got != tt.want {
			t.Errorf("order %v: %s, want %s", tt.order.GetItems(), got, tt.want)
		}
	}
	if st := sys.stock(t, "SKU-1"); st.GetSold() != 2 || st.GetReserved() != 0 || st.GetAvailable() != 8 {
		t.Errorf("stock %v, want 8 available, 2 sold", st)
	}
}

// An attack is something a role tries on the bus.
type attack struct {
	role, what string
	// do tries it on a connection of the role; subject is what the server
	// must refuse.
	do      func(nc *nats.Conn) error
	subject string
}

func publishTo(subject string, hdr nats.Header, data string) func(*nats.Conn) error {
	return func(nc *nats.Conn) error {
		m := nats.NewMsg(subject)
		m.Header, m.Data = hdr, []byte(data)
		if err := nc.PublishMsg(m); err != nil {
			return err
		}
		return nc.Flush()
	}
}

func subscribeTo(subject, queue string) func(*nats.Conn) error {
	return func(nc *nats.Conn) error {
		_, err := nc.QueueSubscribe(subject, queue, func(*nats.Msg) {})
		if err != nil {
			return err
		}
		return nc.Flush()
	}
}

// attacks are the list, and the like, as a table of role × attack.
// Each must be refused by the server's permissions.
func attacks(order string) []attack {
	charged := orderlog.Subject(order, orderlog.PaymentCharged)
	return []attack{
		{"client", "refund a confirmed order", publishTo("payments.refund", nil, `{"order_id":"`+order+`"}`), "payments.refund"},
		{"client", "un-sell a confirmed order", publishTo("inventory.release", nil, `{"order_id":"`+order+`"}`), "inventory.release"},
		{"client", "reserve under a fake id", publishTo("inventory.reserve", nil, `{"order_id":"fake"}`), "inventory.reserve"},
		{"client", "sell", publishTo("inventory.sell", nil, `{}`), "inventory.sell"},
		{"client", "charge", publishTo("payments.charge", nil, `{}`), "payments.charge"},
		{"client", "forge PaymentCharged", publishTo(charged, nil, ""), charged},
		{"client", "squat a message id in ORDERS", publishTo(orderlog.Subject("x", orderlog.Created), nats.Header{"Nats-Msg-Id": {order + "/stock_sold"}}, ""), orderlog.Subject("x", orderlog.Created)},
		{"client", "an event without a type", publishTo(orderlog.Subject(order, orderlog.Created), nil, "junk"), orderlog.Subject(order, orderlog.Created)},
		{"client", "set a stock level", publishTo("$KV.stock.sku.SKU-1", nil, "x"), "$KV.stock.sku.SKU-1"},
		{"client", "wipe the stock bucket", publishTo("$KV.stock.x", nats.Header{"Nats-Rollup": {"all"}}, ""), "$KV.stock.x"},
		{"client", "fake a capture", publishTo("$KV.gateway."+order, nil, "x"), "$KV.gateway." + order},
		{"client", "inject a dead letter", publishTo("DEADLETTER.inventory-reserve", nil, "x"), "DEADLETTER.inventory-reserve"},
		{"client", "replay a dead letter", publishTo("deadletters.replay", nil, `{"sequence":1}`), "deadletters.replay"},
		{"client", "restock", publishTo("inventory.restock", nil, `{"sku":"SKU-1","quantity":1}`), "inventory.restock"},
		{"client", "delete the order stream", publishTo("$JS.API.STREAM.DELETE.ORDERS_0", nil, ""), "$JS.API.STREAM.DELETE.ORDERS_0"},
		{"client", "create a consumer to read events", publishTo("$JS.API.CONSUMER.CREATE.ORDERS_0", nil, "{}"), "$JS.API.CONSUMER.CREATE.ORDERS_0"},
		{"client", "read the order log directly", publishTo("$JS.API.DIRECT.GET.ORDERS_0", nil, "{}"), "$JS.API.DIRECT.GET.ORDERS_0"},
		{"client", "hijack orders.create", subscribeTo("orders.create", "q"), "orders.create"},
		{"client", "sniff every event", subscribeTo("ORDER.>", ""), "ORDER.>"},
		{"client", "sniff other clients' replies", subscribeTo("_INBOX.>", ""), "_INBOX.>"},
		{"client", "sniff the pods' replies", subscribeTo("_INBOX_orders.>", ""), "_INBOX_orders.>"},
		{"ops", "forge PaymentCharged", publishTo(charged, nil, ""), charged},
		{"ops", "delete the order stream", publishTo("$JS.API.STREAM.DELETE.ORDERS_0", nil, ""), "$JS.API.STREAM.DELETE.ORDERS_0"},
		{"inventory", "publish PaymentCharged", publishTo(charged, nil, ""), charged},
		{"inventory", "write the payments bucket", publishTo("$KV.payments."+order, nil, "x"), "$KV.payments." + order},
		{"inventory", "write the gateway bucket", publishTo("$KV.gateway."+order, nil, "x"), "$KV.gateway." + order},
		{"inventory", "delete the order stream", publishTo("$JS.API.STREAM.DELETE.ORDERS_0", nil, ""), "$JS.API.STREAM.DELETE.ORDERS_0"},
		{"inventory", "update a consumer", publishTo("$JS.API.CONSUMER.CREATE.ORDERS_0.payments-charge", nil, "{}"), "$JS.API.CONSUMER.CREATE.ORDERS_0.payments-charge"},
		{"payments", "write the stock bucket", publishTo("$KV.stock.sku.SKU-1", nil, "x"), "$KV.stock.sku.SKU-1"},
		{"payments", "publish StockSold", publishTo(orderlog.Subject(order, orderlog.StockSold), nil, ""), orderlog.Subject(order, orderlog.StockSold)},
		{"orders", "publish StockReserved", publishTo(orderlog.Subject(order, orderlog.StockReserved), nil, ""), orderlog.Subject(order, orderlog.StockReserved)},
		{"orders", "write the stock bucket", publishTo("$KV.stock.sku.SKU-1", nil, "x"), "$KV.stock.sku.SKU-1"},
		{"deadletters", "write the stock bucket", publishTo("$KV.stock.sku.SKU-1", nil, "x"), "$KV.stock.sku.SKU-1"},
		{"deadletters", "write a dead letter", publishTo("DEADLETTER.inventory-reserve", nil, "x"), "DEADLETTER.inventory-reserve"},
	}
}

// Every attack is refused by the server, and none of them changes the
// confirmed order, its payment or the stock.
func TestSecureModeRefusesAttacks(t *testing.T) {
	s := startSecure(t)
	securePods(t, s)
	ops, _ := s.connectAs(t, "ops")
	client, _ := s.connectAs(t, "client")
	sys := &testSystem{nc: client}
	(&testSystem{nc: ops}).restock(t, "SKU-1", 10)
	id := sys.create(t, order("SKU-1", 2, 1999))
	sys.awaitTerminal(t, id)
	stockBefore, payBefore := sys.stock(t, "SKU-1"), sys.payment(t, id)

	conns := map[string]*nats.Conn{}
	seen := map[string]*violations{}
	for _, a := range attacks(id) {
		if conns[a.role] == nil {
			conns[a.role], seen[a.role] = s.connectAs(t, a.role)
		}
	}
	for _, a := range attacks(id) {
		t.Run(a.role+"/"+a.what, func(t *testing.T) {
			err := a.do(conns[a.role])
			if err != nil && !errors.Is(err, nats.ErrPermissionViolation) {
				t.Fatalf("%v", err)
			}
			if err == nil && !seen[a.role].saw(a.subject) {
				t.Errorf("%s could %s: no permission violation for %q", a.role, a.what, a.subject)
			}
		})
	}

	o := sys.order(t, id)
	if o.GetOrder().GetStatus() != confirmed || len(o.GetEvents()) != 4 {
		t.Errorf("order after the attacks: %s, events %s", o.GetOrder().GetStatus(), eventTypes(o))
	}
	if st := sys.stock(t, "SKU-1"); st.GetAvailable() != stockBefore.GetAvailable() || st.GetSold() != stockBefore.GetSold() {
		t.Errorf("stock after the attacks %v, was %v", st, stockBefore)
	}
	if p := sys.payment(t, id); p.GetCaptures() != payBefore.GetCaptures() || p.GetRefunds() != 0 {
		t.Errorf("payment after the attacks %v, was %v", p, payBefore)
	}
}

// Dead letters cannot be weaponised: a letter that does not hold an order
// event of its own type is refused with a 400, a replay carries only the
// event's own headers, and a letter of an order that is still open is
// replayed, with the deadletters role's permissions.
func TestSecureReplay(t *testing.T) {
	s := startSecure(t)
	pods := securePods(t, s, func(c *config.Config) { c.PaymentLatency = 3 * time.Second })
	ops, _ := s.connectAs(t, "ops")
	client, _ := s.connectAs(t, "client")
	inventory, _ := s.connectAs(t, "inventory")
	admin, _ := s.connectAs(t, "admin")
	(&testSystem{nc: ops}).restock(t, "SKU-1", 10)
	sys := &testSystem{nc: client}
	id := sys.create(t, order("SKU-1", 1, 500))
	waitStatus(t, sys, id, ordersv1.OrderStatus_ORDER_STATUS_RESERVED) // the charge takes 3s
	// Every dead letter of an order's event cancels the order: with the
	// orders pod stopped, the letters below wait, and replay is seen alone.
	if err := pods["orders"].shutdown(); err != nil {
		t.Fatal(err)
	}

	// Only a runtime identity can write a dead letter; one that does, for
	// whatever reason, is the attacker here.
	js := must[jetstream.JetStream](t)(jetstream.New(inventory))
	reserved := must[[]byte](t)(proto.Marshal(&ordersv1.StockReserved{OrderId: id, CustomerId: "c-1", Amount: &ordersv1.Money{AmountMinor: 500, Currency: "USD"}}))
	letter := func(stream, subject, typ string, data []byte, extra ...*runtimev1.Header) uint64 {
		t.Helper()
		dl := &runtimev1.DeadLetter{Stream: stream, Subject: subject, Consumer: "inventory-reserve", Function: "inventory.reserve",
			Data: data, Headers: append([]*runtimev1.Header{{Name: "Event-Type", Value: typ}}, extra...)}
		ack, err := js.Publish(context.Background(), "DEADLETTER.inventory-reserve", must[[]byte](t)(proto.Marshal(dl)))
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	replay := func(seq uint64) (*runtimev1.ReplayDeadLetterResponse, error) {
		return runtimetest.Call[runtimev1.ReplayDeadLetterResponse](context.Background(), ops, "deadletters.replay",
			&runtimev1.ReplayDeadLetterRequest{Sequence: seq}, runtimetest.Request{})
	}

	for _, tt := range []struct {
		what string
		seq  uint64
	}{
		{"a KV write", letter("KV_stock", "$KV.stock.sku.SKU-1", "orders.v1.StockLevel", []byte("x"))},
		{"a request to a saga step", letter(orderStream(id), "payments.refund", "orders.v1.CancelRequested", nil)},
		{"an event whose type is not its subject's", letter(orderStream(id), orderlog.Subject(id, "payment_refunded"), "orders.v1.StockSold", nil)},
		{"an event that does not decode", letter(orderStream(id), orderlog.Subject(id, "stock_reserved"), "orders.v1.StockReserved", []byte{0xff, 0xff})},
		{"an unknown event", letter(orderStream(id), orderlog.Subject(id, "refund_everything"), "orders.v1.StockReserved", reserved)},
	} {
		if _, err := replay(tt.seq); runtimetest.Code(err) != 400 || !strings.Contains(err.Error(), "not replayable") {
			t.Errorf("replay of %s: %v, want 400 not replayable", tt.what, err)
		}
	}

	// A real event of the open order, with control headers smuggled in:
	// replayed, without them.
	seq := letter(orderStream(id), orderlog.Subject(id, "stock_reserved"), "orders.v1.StockReserved", reserved,
		&runtimev1.Header{Name: "Nats-Rollup", Value: "all"}, &runtimev1.Header{Name: "Nats-Expected-Stream", Value: "KV_stock"},
		&runtimev1.Header{Name: "Nats-TTL", Value: "1s"})
	rep, err := replay(seq)
	if err != nil || rep.GetReplayedSequence() == 0 {
		t.Fatalf("replay of an open order's event: %v, %v", rep, err)
	}
	raw, err := must[jetstream.Stream](t)(must[jetstream.JetStream](t)(jetstream.New(admin)).Stream(context.Background(), orderStream(id))).GetMsg(context.Background(), rep.GetReplayedSequence())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"Nats-Rollup", "Nats-TTL"} {
		if v := raw.Header.Get(name); v != "" {
			t.Errorf("replayed message carries %s: %s", name, v)
		}
	}
	if v := raw.Header.Get("Nats-Expected-Stream"); v != orderStream(id) {
		t.Errorf("replayed message expected stream %q, want the order's partition %s", v, orderStream(id))
	}
	// The duplicate StockReserved changes nothing: one capture, and the
	// units sold, which confirms the order...
	for deadline := time.Now().Add(15 * time.Second); sys.stock(t, "SKU-1").GetSold() != 1; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the order's units were never sold: %v", sys.stock(t, "SKU-1"))
		}
	}
	// ...which stays confirmed once the orders pod is back and compensates
	// the letters: too late, the order has ended.
	startSystemOn(t, &testSystem{sys: pods["inventory"]}, func(c *config.Config) {
		c.NATSUser, c.NATSPassword, c.Functions = "orders", s.passwords["orders"], []string{"orders"}
	})
	if got := sys.awaitTerminal(t, id).GetOrder(); got.GetStatus() != confirmed {
		t.Errorf("order after the replay: %s %s", got.GetStatus(), got.GetReason())
	}
	if p := sys.payment(t, id); p.GetCaptures() != 1 {
		t.Errorf("captures after the replay: %d", p.GetCaptures())
	}
}
