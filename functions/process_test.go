package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/functions/internal/orderlog"
	"github.com/orderflow/orderflow/runtime/authz"
	"github.com/orderflow/orderflow/runtime/runtimetest"
)

// These tests run the host as users do: the built binary in its own process,
// driven with the stock nats CLI (pinned in go.mod as a tool).

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds the host, the nats CLI and nats-server once per test run.
// A missing tool fails the test; it never skips.
func binaries(t *testing.T) (host, natsCLI string) {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "orderflow-bin")
		if buildErr != nil {
			return
		}
		for _, b := range [][]string{
			{"build", "-o", filepath.Join(binDir, "orderflow"), "."},
			{"build", "-o", filepath.Join(binDir, "nats"), "github.com/nats-io/natscli/nats"},
			{"build", "-o", filepath.Join(binDir, "nats-server"), "github.com/nats-io/nats-server/v2"},
		} {
			out, err := exec.Command("go", b...).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("go %s: %v\n%s", strings.Join(b, " "), err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "orderflow"), filepath.Join(binDir, "nats")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// proc is a running host binary.
type proc struct {
	cmd      *exec.Cmd
	out      *lockedBuffer
	done     chan error
	natsURL  string
	httpAddr string
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startBinary runs the host in dir with env and waits for its
// "orderflow serving" log line.
func startBinary(t *testing.T, dir string, env ...string) *proc {
	t.Helper()
	bin, _ := binaries(t)
	p := &proc{out: &lockedBuffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command(bin)
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), append([]string{"HTTP_ADDR=127.0.0.1:0", "LOG_LEVEL=info"}, env...)...)
	pr, pw := io.Pipe()
	p.cmd.Stdout = pw
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait(); pw.Close() }()
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(p.out, line)
			var l struct{ Msg, NATS, HTTP string }
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "orderflow serving" {
				p.natsURL, p.httpAddr = l.NATS, l.HTTP
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case err := <-p.done:
		t.Fatalf("host exited before serving: %v\n%s", err, p.out)
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		t.Fatalf("host not serving after 30s:\n%s", p.out)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// stop sends SIGTERM and returns the exit code and how long the drain took.
func (p *proc) stop(t *testing.T) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), time.Since(start)
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, time.Since(start)
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		t.Fatalf("host still running 15s after SIGTERM:\n%s", p.out)
		return -1, 0
	}
}

// cli runs the nats CLI against url and returns its combined output.
func cli(t *testing.T, url string, args ...string) string {
	t.Helper()
	_, natsCLI := binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, natsCLI, append([]string{"--server", url, "--no-context"}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "NO_COLOR=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nats %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// checkTour walks the README's tour with the nats CLI.
func checkTour(t *testing.T, p *proc) (orderID string) {
	t.Helper()
	var services []struct {
		Name, Version, Description string
	}
	if err := json.Unmarshal([]byte(cli(t, p.natsURL, "micro", "list", "--json")), &services); err != nil {
		t.Fatal(err)
	}
	versions := map[string]string{}
	for _, s := range services {
		versions[s.Name] = s.Version
	}
	for _, want := range []string{"orders", "inventory", "payments"} {
		if versions[want] == "" {
			t.Errorf("nats micro list lacks %s with a version: %+v", want, services)
		}
	}

	var info struct {
		Info struct {
			Endpoints []struct {
				Name, Subject string
				Metadata      map[string]string
			}
		}
	}
	if err := json.Unmarshal([]byte(cli(t, p.natsURL, "micro", "info", "orders", "--json")), &info); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range info.Info.Endpoints {
		if e.Subject == "orders.create" {
			found = e.Metadata["request"] == "orders.v1.CreateOrderRequest" && e.Metadata["response"] == "orders.v1.CreateOrderResponse" && e.Metadata["description"] != ""
		}
	}
	if !found {
		t.Errorf("nats micro info orders: no orders.create with its contract in metadata: %+v", info)
	}

	if out := cli(t, p.natsURL, "req", "inventory.restock", `{"sku":"SKU-1","quantity":10}`); !strings.Contains(out, `"available":10`) {
		t.Errorf("restock: %s", out)
	}
	out := cli(t, p.natsURL, "req", "orders.create", `{"customer_id":"c-1","currency":"USD","items":[{"sku":"SKU-1","quantity":2,"unit_price_minor":1999}]}`)
	var created struct{ OrderID, Status string }
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "{") {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil {
				created.OrderID, _ = m["order_id"].(string)
				created.Status, _ = m["status"].(string)
			}
		}
	}
	if created.OrderID == "" || created.Status != "ORDER_STATUS_PENDING" {
		t.Fatalf("orders.create: %s", out)
	}
	if out := cli(t, p.natsURL, "req", "orders.get", `{"order_id":"`+created.OrderID+`"}`); !strings.Contains(out, `"total_minor":"3998"`) || !strings.Contains(out, "OrderCreated") {
		t.Errorf("orders.get: %s", out)
	}
	out = cli(t, p.natsURL, "req", "orders.create", `{"customer_id":"c-1","currency":"USD","items":[{"sku":"SKU-1","quantity":0,"unit_price_minor":1999}]}`)
	if !strings.Contains(out, "Nats-Service-Error-Code: 400") || !strings.Contains(out, "items[0].quantity") {
		t.Errorf("bad create: %s", out)
	}
	out = cli(t, p.natsURL, "micro", "stats", "orders", "--json")
	if !strings.Contains(out, `"num_errors": 1`) {
		t.Errorf("micro stats after one bad request: %s", out)
	}

	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get("http://" + p.httpAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET %s: %d", path, resp.StatusCode)
		}
	}
	return created.OrderID
}

func TestBinaryWithEmbeddedServer(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	conf := fmt.Sprintf("port: %d\nhost: 127.0.0.1\njetstream { store_dir: \"./data\", sync_interval: always }\n", port)
	if err := os.WriteFile(filepath.Join(dir, "nats.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startBinary(t, dir)
	if want := fmt.Sprintf("nats://127.0.0.1:%d", port); p.natsURL != want {
		t.Errorf("embedded server at %s, want %s from nats.conf in the working directory", p.natsURL, want)
	}
	id := checkTour(t, p)

	code, took := p.stop(t)
	if code != 0 || took > 10*time.Second {
		t.Errorf("SIGTERM: exit %d after %v, want 0 within 10s\n%s", code, took, p.out)
	}
	if !strings.Contains(p.out.String(), `"msg":"stopped"`) {
		t.Errorf("no drain in the log:\n%s", p.out)
	}

	// The store is in ./data of the working directory, and the order is
	// still there after a restart.
	if _, err := os.Stat(filepath.Join(dir, "data", "jetstream")); err != nil {
		t.Errorf("JetStream store not in ./data: %v", err)
	}
	p = startBinary(t, dir)
	if out := cli(t, p.natsURL, "req", "orders.get", `{"order_id":"`+id+`"}`); !strings.Contains(out, id) {
		t.Errorf("order lost across a restart: %s", out)
	}
	if code, _ := p.stop(t); code != 0 {
		t.Errorf("second SIGTERM: exit %d", code)
	}
}

func TestBinaryWithExternalServer(t *testing.T) {
	store, port := t.TempDir(), freePort(t)
	srv := runtimetest.StartNATS(t, runtimetest.WithStoreDir(store), runtimetest.WithPort(port))
	p := startBinary(t, t.TempDir(), "NATS_URL="+srv.ClientURL())
	if p.natsURL != srv.ClientURL() {
		t.Errorf("host uses %s, want NATS_URL %s", p.natsURL, srv.ClientURL())
	}
	checkTour(t, p)

	// A server outage: the host reconnects by itself and serves again.
	srv.Shutdown()
	srv.WaitForShutdown()
	runtimetest.StartNATS(t, runtimetest.WithStoreDir(store), runtimetest.WithPort(port))
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, natsCLI := binaries(t)
		out, err := exec.Command(natsCLI, "--server", srv.ClientURL(), "--no-context", "req", "inventory.get", `{"sku":"SKU-1"}`).CombinedOutput()
		if err == nil && strings.Contains(string(out), `"sold":2`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("host did not serve again after the server came back: %s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code, took := p.stop(t); code != 0 || took > 10*time.Second {
		t.Errorf("SIGTERM: exit %d after %v", code, took)
	}
}

// Every configuration that cannot work exits 2, at once, naming the
// variable: found by parsing, by the registry, by taking the HTTP port, or
// only once a server answered (replicas on a server that is not a cluster).
func TestBinaryRejectsBadConfig(t *testing.T) {
	bin, _ := binaries(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	single := runtimetest.StartNATS(t)
	for _, tt := range []struct{ env, name string }{
		{"WORKER_POOL_SIZE=zero", "WORKER_POOL_SIZE"},
		{"WORKER_POOL_SIZE=0", "WORKER_POOL_SIZE"},
		{"FUNCTIONS=orders.nope", "FUNCTIONS"},
		{"RETRY_POLICY_ORDERS_NOPE=attempts=2", "RETRY_POLICY_ORDERS_NOPE"},
		{"PAYMENT_FAILURE_RATE=2", "PAYMENT_FAILURE_RATE"},
		{"PAYMENT_FAILURE_RATE=NaN", "PAYMENT_FAILURE_RATE"},
		{"NATS_URL=nats://u:pw@host:notaport", "NATS_URL"},
		{"HTTP_ADDR=" + busy.Addr().String(), "HTTP_ADDR"},
		{"STREAM_REPLICAS=3", "STREAM_REPLICAS"},
	} {
		cmd := exec.Command(bin)
		cmd.Dir = t.TempDir()
		cmd.Env = append(os.Environ(), "NATS_URL="+single.ClientURL(), "HTTP_ADDR=off", tt.env)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("%s: exit %v, want 2\n%s", tt.env, err, out)
		}
		if !strings.Contains(string(out), tt.name) {
			t.Errorf("%s: output does not name %s:\n%s", tt.env, tt.name, out)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("%s: took %s to fail", tt.env, took)
		}
	}
}

// httpGet returns the status and body of a GET.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// `orderflow provision` creates every stream, bucket and consumer and
// updates what differs from its declaration; serving pods only look them up
// (CREATE_MISSING=false) and never revert an operator's change; a stream
// that disappears makes /readyz fail and name it until it is back.
func TestProvision(t *testing.T) {
	ctx := context.Background()
	srv := runtimetest.StartNATS(t)
	js := runtimetest.JetStream(t, runtimetest.Connect(t, srv))
	bin, _ := binaries(t)
	provision := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"provision"}, args...)...)
		cmd.Env = append(os.Environ(), "NATS_URL="+srv.ClientURL())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("provision: %v\n%s", err, out)
		}
		return string(out)
	}

	out := provision()
	for _, want := range []string{"stream ORDERS_0 created", "stream ORDERS_3 created", "stream DEADLETTERS created", "bucket stock_0 created",
		"bucket stock_3 created", "consumer ORDERS_0/inventory-reserve created", "consumer ORDERS_3/inventory-reserve created",
		"consumer DEADLETTERS/orders-compensate created", "provisioned 5 streams, 7 buckets, 25 consumers with 1 replicas"} {
		if !strings.Contains(out, want) {
			t.Errorf("provision output lacks %q:\n%s", want, out)
		}
	}
	if out := provision(); !strings.Contains(out, "stream ORDERS_0 exists") || strings.Contains(out, "created") {
		t.Errorf("a second provision changed something:\n%s", out)
	}

	// An operator's changes.
	s, err := js.Stream(ctx, "ORDERS_0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.MaxAge = 240 * time.Hour // tighter than the declared ORDER_RETENTION, 720h
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	c, err := js.Consumer(ctx, "ORDERS_0", "inventory-reserve")
	if err != nil {
		t.Fatal(err)
	}
	ccfg := c.CachedInfo().Config
	ccfg.AckWait = 45 * time.Second
	if _, err := js.UpdateConsumer(ctx, "ORDERS_0", ccfg); err != nil {
		t.Fatal(err)
	}

	p := startBinary(t, t.TempDir(), "NATS_URL="+srv.ClientURL(), "CREATE_MISSING=false")
	checkTour(t, p)
	if !strings.Contains(p.out.String(), "differs from its declaration") {
		t.Errorf("the host did not say the consumer differs:\n%s", p.out)
	}
	kept := func(wantAckWait time.Duration) {
		t.Helper()
		s, _ := js.Stream(ctx, "ORDERS_0")
		c, _ := js.Consumer(ctx, "ORDERS_0", "inventory-reserve")
		if got := s.CachedInfo().Config.MaxAge; got != 240*time.Hour {
			t.Errorf("ORDERS_0 max age %s, want the operator's 240h", got)
		}
		if got := c.CachedInfo().Config.AckWait; got != wantAckWait {
			t.Errorf("inventory-reserve ack wait %s, want %s", got, wantAckWait)
		}
	}
	kept(45 * time.Second)

	// Provisioning applies the declarations, keeping the operator's tighter
	// retention; --force loosens it back to the declared one.
	if out := provision(); !strings.Contains(out, "consumer ORDERS_0/inventory-reserve updated") || !strings.Contains(out, "kept the tighter max age 240h0m0s") {
		t.Errorf("provision did not update the consumer, or not keep the tighter limit:\n%s", out)
	}
	kept(30 * time.Second)
	if out := provision("--force"); !strings.Contains(out, "stream ORDERS_0 updated") {
		t.Errorf("provision --force did not loosen the limit:\n%s", out)
	}
	if got := must[jetstream.Stream](t)(js.Stream(ctx, "ORDERS_0")).CachedInfo().Config.MaxAge; got != 721*time.Hour {
		t.Errorf("ORDERS_0 max age after --force: %s, want 721h (ORDER_RETENTION and the hour by which events outlive records)", got)
	}

	// A stream deleted under a pod that may not create it: /readyz names
	// it until provisioning puts it back, and the pod binds again.
	if err := js.DeleteStream(ctx, "DEADLETTERS"); err != nil {
		t.Fatal(err)
	}
	if code, body := httpGet(t, "http://"+p.httpAddr+"/readyz"); code != 503 || !strings.Contains(body, "DEADLETTERS") {
		t.Errorf("/readyz with DEADLETTERS gone: %d %s", code, body)
	}
	provision()
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := httpGet(t, "http://"+p.httpAddr+"/readyz")
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz after provisioning again: %d %s", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, _ := p.stop(t); code != 0 {
		t.Errorf("SIGTERM: exit %d", code)
	}
}

// The secure mode as the README has it, with the binaries: `orderflow
// authz` into auth.conf, a nats-server started from deploy/nats/secure.conf
// with the passwords in its environment, `orderflow provision` as admin,
// one pod per service role, and the nats CLI as client and ops.
func TestSecureModeWithBinaries(t *testing.T) {
	bin, natsCLI := binaries(t)
	dir := t.TempDir()
	env := []string{}
	pw := map[string]string{}
	for _, r := range roles(testConfig("")) {
		pw[r.Name] = "secret-" + r.Name
		env = append(env, authz.PasswordVar(r.Name)+"="+pw[r.Name])
	}
	out, err := exec.Command(bin, "authz").Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "auth.conf"), out, 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("../deploy/nats/secure.conf")
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	var conf []string
	for _, line := range strings.Split(string(src), "\n") {
		switch {
		case strings.HasPrefix(line, "port:"):
			line = fmt.Sprintf("port: %d", port)
		case strings.HasPrefix(line, "http:"):
			line = "" // no monitoring port to collide with
		case strings.Contains(line, "store_dir:"):
			line = fmt.Sprintf("  store_dir: %q", filepath.Join(dir, "js"))
		}
		conf = append(conf, line)
	}
	if err := os.WriteFile(filepath.Join(dir, "secure.conf"), []byte(strings.Join(conf, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := &serverProc{conf: filepath.Join(dir, "secure.conf"), url: fmt.Sprintf("nats://127.0.0.1:%d", port)}
	srv.env = env
	srv.startAs(t, "admin", pw["admin"])
	t.Cleanup(srv.kill)

	prov := exec.Command(bin, "provision")
	prov.Env = append(os.Environ(), "NATS_URL="+srv.url, "NATS_USER=admin", "NATS_PASSWORD="+pw["admin"])
	if out, err := prov.CombinedOutput(); err != nil {
		t.Fatalf("provision as admin: %v\n%s", err, out)
	}
	for _, role := range []string{"orders", "inventory", "payments", "deadletters"} {
		startBinary(t, t.TempDir(), "NATS_URL="+srv.url, "FUNCTIONS="+role, "NATS_USER="+role, "NATS_PASSWORD="+pw[role], "CREATE_MISSING=false")
	}
	as := func(role string, args ...string) (string, error) {
		cmd := exec.Command(natsCLI, append([]string{"--server", srv.url, "--no-context", "--user", role, "--password", pw[role],
			"--inbox-prefix", authz.Inbox(role), "--timeout", "3s"}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "NO_COLOR=1")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := as("ops", "req", "inventory.restock", `{"sku":"SKU-1","quantity":10}`); err != nil || !strings.Contains(out, `"available":10`) {
		t.Fatalf("restock as ops: %v\n%s", err, out)
	}
	out2, err := as("client", "req", "orders.create", `{"customer_id":"c-1","currency":"USD","items":[{"sku":"SKU-1","quantity":2,"unit_price_minor":1999}]}`)
	if err != nil {
		t.Fatalf("create as client: %v\n%s", err, out2)
	}
	var created struct {
		OrderID string `json:"order_id"`
	}
	if err := json.Unmarshal([]byte(out2[strings.Index(out2, "{"):]), &created); err != nil {
		t.Fatalf("create reply %q: %v", out2, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := as("client", "req", "orders.get", `{"order_id":"`+created.OrderID+`"}`)
		if err == nil && strings.Contains(out, "ORDER_STATUS_CONFIRMED") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("order not confirmed: %v\n%s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, attack := range [][]string{
		{"req", "payments.refund", `{"order_id":"` + created.OrderID + `"}`},
		{"req", "inventory.restock", `{"sku":"SKU-1","quantity":10}`},
		{"pub", orderlog.Subject(created.OrderID, orderlog.PaymentRefunded), "x"},
		{"stream", "rm", "ORDERS_0", "-f"},
	} {
		// The CLI reports a refused publish and may still exit 0.
		if out, err := as("client", attack...); !strings.Contains(strings.ToLower(out), "permission") {
			t.Errorf("client: nats %s was not refused for permissions (%v):\n%s", strings.Join(attack, " "), err, out)
		}
	}
	if out, err := as("client", "req", "orders.get", `{"order_id":"`+created.OrderID+`"}`); err != nil || !strings.Contains(out, "ORDER_STATUS_CONFIRMED") {
		t.Errorf("order after the attacks: %v\n%s", err, out)
	}
}
