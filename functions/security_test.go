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

	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
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
	for _, r := range roles() {
		pw := "pw-" + r.Name + "-" + fmt.Sprint(time.Now().UnixNano())
		s.passwords[r.Name] = pw
		t.Setenv(authz.PasswordVar(r.Name), pw)
	}
	if err := os.WriteFile(filepath.Join(dir, "auth.conf"), []byte(authz.Config(roles(), "")), 0o600); err != nil {
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
func securePods(t *testing.T, s *secureServer, mutate ...func(*config.Config)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := provision(ctx, s.as("admin", mutate...), &out); err != nil {
		t.Fatalf("provision as admin: %v\n%s", err, out.String())
	}
	for _, role := range []string{"orders", "inventory", "payments", "deadletters"} {
		cfg := s.as(role, append(mutate, func(c *config.Config) { c.Functions = []string{role} })...)
		sys, err := start(ctx, cfg, io.Discard, nil)
		if err != nil {
			t.Fatalf("pod %s: %v", role, err)
		}
		t.Cleanup(func() { _ = sys.shutdown() })
		if err := sys.host.Ready(); err != nil {
			t.Fatalf("pod %s not ready: %v", role, err)
		}
	}
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
