// Command functions is the orderflow function host: it serves the order,
// inventory and payment functions as NATS micro endpoints. With NATS_URL
// unset it embeds a JetStream server, so `go run ./functions` is the whole
// system; with NATS_URL set it joins that server, and more hosts scale out.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderflow/orderflow/functions/cancelorder"
	"github.com/orderflow/orderflow/functions/chargepayment"
	"github.com/orderflow/orderflow/functions/createorder"
	"github.com/orderflow/orderflow/functions/getorder"
	"github.com/orderflow/orderflow/functions/getpayment"
	"github.com/orderflow/orderflow/functions/getstock"
	"github.com/orderflow/orderflow/functions/internal/gateway"
	"github.com/orderflow/orderflow/functions/internal/inventory"
	"github.com/orderflow/orderflow/functions/internal/orderlog"
	"github.com/orderflow/orderflow/functions/internal/payments"
	"github.com/orderflow/orderflow/functions/refundpayment"
	"github.com/orderflow/orderflow/functions/releasestock"
	"github.com/orderflow/orderflow/functions/reservestock"
	"github.com/orderflow/orderflow/functions/restock"
	"github.com/orderflow/orderflow/functions/sellstock"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/authz"
	"github.com/orderflow/orderflow/runtime/config"
	"github.com/orderflow/orderflow/runtime/deadletter"
	"github.com/orderflow/orderflow/runtime/durable"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/health"
	"github.com/orderflow/orderflow/runtime/host"
	"github.com/orderflow/orderflow/runtime/middleware"
	"github.com/orderflow/orderflow/runtime/natsserver"
	"github.com/orderflow/orderflow/runtime/state"
	"github.com/orderflow/orderflow/runtime/telemetry"
)

// The micro services, as `nats micro list` shows them.
var (
	ordersService = function.Service{Name: "orders", Version: "0.1.0",
		Description: "Order intake and order state, event-sourced on the ORDERS stream"}
	inventoryService = function.Service{Name: "inventory", Version: "0.1.0",
		Description: "Stock per SKU: restock, levels and all-or-nothing reservations"}
	paymentsService = function.Service{Name: "payments", Version: "0.1.0",
		Description: "Charges through the payment gateway, at most one capture per order"}
)

// stores are what the functions keep their state in.
type stores struct {
	log         *durable.Log
	stock       *inventory.Stock
	payments    *payments.Payments
	secrets     *durable.Bucket
	deadLetters *durable.DeadLetters
	// backlog counts the orders in flight, for MAX_PENDING_ORDERS.
	backlog    func(context.Context) (int, error)
	maxPending int
	// ended learns of every order this host ends, for the saga metrics.
	ended orderlog.Observer
}

// sagaConsumers are the consumers of the saga's steps on the order log: an
// order in flight waits in one of them.
var sagaConsumers = []string{reservestock.Durable, chargepayment.Durable, sellstock.Durable,
	refundpayment.Durable, releasestock.DurableDeclined, releasestock.DurableRefunded}

type registration struct {
	svc function.Service
	def function.Definition
}

// registry lists every function, one line each.
func registry(s stores) []registration {
	return []registration{
		{ordersService, createorder.New(s.log, s.secrets, createorder.Admission{Max: s.maxPending, Backlog: s.backlog, Consumers: sagaConsumers})},
		{ordersService, getorder.New(s.log)},
		{ordersService, cancelorder.New(s.log)},
		{inventoryService, restock.New(s.stock)},
		{inventoryService, getstock.New(s.stock)},
		{inventoryService, reservestock.New(s.stock, s.log, s.ended)},
		{inventoryService, sellstock.New(s.stock, s.log, s.ended)},
		{inventoryService, releasestock.New(s.stock, s.log, s.ended)},
		{paymentsService, chargepayment.New(s.payments, s.log)},
		{paymentsService, refundpayment.New(s.payments, s.log)},
		{paymentsService, getpayment.New(s.payments)},
		{deadletter.Service, deadletter.List(s.deadLetters)},
		{deadletter.Service, deadletter.Replay(s.deadLetters, orderlog.ReplayTarget(s.log))},
	}
}

const usage = `usage: orderflow [command]
  serve                   run the functions (the default)
  provision [--force]     create or update every stream, bucket and consumer, then exit
  authz [--account NAME]  print the nats-server permissions of every role, for include
  consumers               print the durable consumers of the functions FUNCTIONS selects,
                          one "stream consumer function" line each (for autoscalers)
  probe [URL]             exit 0 if URL (default http://127.0.0.1:8080/readyz) answers 200:
                          a health check for images without a shell (nats-server's /healthz too)
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	cmd, args := "serve", []string(nil)
	if len(os.Args) > 1 {
		cmd, args = os.Args[1], os.Args[2:]
	}
	if cmd == "probe" {
		url := "http://127.0.0.1:8080/readyz"
		if len(args) > 0 {
			url = args[0]
		}
		if err := probe(ctx, url); err != nil {
			fmt.Fprintln(os.Stderr, "orderflow probe:", err)
			os.Exit(1)
		}
		return
	}
	if cmd != "serve" && cmd != "provision" && cmd != "authz" && cmd != "consumers" {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cfg, err := config.Load()
	if err == nil && cmd == "consumers" {
		err = printConsumers(os.Stdout, cfg)
		if err == nil {
			return
		}
	}
	if err == nil && cmd == "authz" {
		fs := flag.NewFlagSet("authz", flag.ExitOnError)
		account := fs.String("account", "", "put the users in this JetStream-enabled account instead of the global one")
		_ = fs.Parse(args)
		fmt.Print(authz.Config(roles(cfg), *account))
		return
	}
	if err == nil {
		err = telemetry.FromEnv().Validate()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "orderflow:", err)
		os.Exit(2)
	}
	if cmd == "provision" {
		fs := flag.NewFlagSet("provision", flag.ExitOnError)
		force := fs.Bool("force", false, "also loosen limits an operator tightened (a shorter max age)")
		_ = fs.Parse(args)
		err = provision(ctx, cfg, os.Stdout, *force)
	} else {
		err = run(ctx, cfg, os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "orderflow:", err)
		// One exit code for every configuration that cannot work, found at
		// start or only once a server answered (2); anything else is 1.
		if errors.Is(err, config.ErrInvalid) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// printConsumers writes the durable consumers the functions FUNCTIONS
// selects consume from, as provision creates them: each trigger's durable
// on every partition of its stream.
func printConsumers(out io.Writer, cfg config.Config) error {
	regs, err := selectFunctions(registry(stores{}), cfg.Functions)
	if err != nil {
		return err
	}
	for _, r := range regs {
		for _, t := range r.def.Triggers {
			for _, stream := range storeConfig(cfg).Streams(t.Stream) {
				fmt.Fprintf(out, "%s %s %s.%s\n", stream, t.Durable, r.svc.Name, r.def.Name)
			}
		}
	}
	return nil
}

// probe asks url once, within 3s, and fails unless it answers 200.
func probe(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// roles are the identities of the registry's functions, with their
// permissions on the streams and buckets cfg lays out.
func roles(cfg config.Config) []authz.Role {
	var fns []authz.Function
	for _, r := range registry(stores{}) {
		fns = append(fns, authz.Function{Service: r.svc.Name, Def: r.def})
	}
	return authz.Roles(fns, authz.Settings{
		APIPrefix:         strings.TrimSuffix(jetstream.DefaultAPIPrefix, "."),
		QueueGroup:        host.QueueGroup,
		DeadLetterStream:  durable.DeadLetterStream,
		DeadLetterSubject: durable.DeadLetterSubject,
		BucketStream:      durable.BucketStream,
		Streams:           storeConfig(cfg).Streams,
		Buckets:           storeConfig(cfg).Buckets,
	})
}

// run serves until ctx ends, then drains.
func run(ctx context.Context, cfg config.Config, out io.Writer) error {
	sys, err := start(ctx, cfg, out, nil)
	if err != nil {
		return err
	}
	<-ctx.Done()
	return sys.shutdown()
}

// provision creates or updates every stream, bucket and consumer the
// functions FUNCTIONS selects need, as declared, and reports what it did.
// Serving pods then only look them up (CREATE_MISSING=false) or create
// what is missing, and never change what exists.
func provision(ctx context.Context, cfg config.Config, out io.Writer, force bool) error {
	if err := checkNames(cfg); err != nil {
		return err
	}
	if cfg.NATSURL == "" {
		return fmt.Errorf("%w: provision needs NATS_URL, the server to provision (the embedded server of `orderflow` provisions itself)", config.ErrInvalid)
	}
	sys := &system{cfg: cfg, log: newLogger(cfg, os.Stderr)}
	defer sys.close()
	js, err := sys.connect("admin")
	if err != nil {
		return err
	}
	h, err := host.New(sys.nc, host.WithAckWait(cfg.AckWait), host.WithStreams(storeConfig(cfg).Streams))
	if err != nil {
		return err
	}
	regs, err := selectFunctions(registry(stores{}), cfg.Functions)
	if err != nil {
		return err
	}
	for _, r := range regs {
		if err := h.Add(r.svc, r.def); err != nil {
			return err
		}
	}
	res, err := declared(regs, cfg)
	if err != nil {
		return err
	}
	res.Consumers = h.Resources().Consumers
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	mode := durable.Apply
	if force {
		mode = durable.ApplyForce
	}
	actions, err := durable.Ensure(ctx, js, res, mode)
	for _, a := range actions {
		fmt.Fprintln(out, a)
	}
	if err != nil {
		return fmt.Errorf("provision: %w", err)
	}
	fmt.Fprintf(out, "provisioned %d streams, %d buckets, %d consumers with %d replicas\n",
		len(res.Streams), len(res.Buckets), len(res.Consumers), cfg.StreamReplicas)
	return nil
}

// system is a running host and what it owns.
type system struct {
	cfg config.Config
	log *slog.Logger
	srv *server.Server // nil when NATS_URL is set
	nc  *nats.Conn
	// tracing is flushed on shutdown when the system set it up itself.
	tracing *telemetry.Tracing
	host    *host.Host
	health  *health.Handler
	http    *http.Server
	// url is the server the system connected to.
	url string
	// httpListener is HTTP_ADDR, taken at start.
	httpListener net.Listener
	// dialErr is why the last attempt to reach NATS failed.
	dialErr atomic.Value
	// stopBackground ends keepResources.
	stopBackground context.CancelFunc
	// httpAddr is where /healthz listens, once started.
	httpAddr string
}

// newLogger logs JSON, or text on a terminal, with the trace, span,
// function and order of the call on every line logged with its context.
func newLogger(cfg config.Config, out io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	var h slog.Handler = slog.NewJSONHandler(out, opts)
	if f, ok := out.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			h = slog.NewTextHandler(out, opts)
		}
	}
	return slog.New(telemetry.LogHandler(h))
}

// start brings the system up. tp traces it; nil sets tracing up from the
// OTEL_* variables (off unless OTEL_TRACES_EXPORTER says otherwise).
func start(ctx context.Context, cfg config.Config, out io.Writer, tp trace.TracerProvider) (_ *system, err error) {
	// Check FUNCTIONS and retry overrides before waiting on any server: a
	// typo fails at once.
	if err := checkNames(cfg); err != nil {
		return nil, err
	}
	sys := &system{cfg: cfg, log: newLogger(cfg, out)}
	defer func() {
		if err != nil {
			sys.close()
		}
	}()
	// The HTTP port is taken first: a busy one is a configuration error to
	// report at once, not after the consumers are bound.
	var ln net.Listener
	if cfg.HTTPAddr != "off" {
		if ln, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return nil, fmt.Errorf("%w: HTTP_ADDR %s: %w", config.ErrInvalid, cfg.HTTPAddr, err)
		}
		sys.httpListener = ln
	}
	if tp == nil {
		tr, err := telemetry.Setup(ctx, telemetry.FromEnv(), "orderflow")
		if err != nil {
			return nil, err
		}
		sys.tracing, tp = &tr, tr.Provider
	}

	// What the hosted functions declare decides what is provisioned and
	// opened: a pod of one role touches only its own streams and buckets.
	selected, err := selectFunctions(registry(stores{}), cfg.Functions)
	if err != nil {
		return nil, err
	}
	js, err := sys.connect(roleOf(selected))
	if err != nil {
		return nil, err
	}
	res, err := declared(selected, cfg)
	if err != nil {
		return nil, err
	}
	writes := durable.NewWrites()
	st, err := openStores(ctx, js, cfg, res, tp, sys.log, sys.lastDialError, writes)
	if err != nil {
		return nil, err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	st.ended = newSagaMetrics(reg)
	hostOpts := []host.Option{
		host.WithWorkers(cfg.WorkerPoolSize),
		host.WithMaxBody(cfg.MaxRequestBytes),
		host.WithLogger(sys.log),
		host.WithMetrics(host.NewMetrics(reg)),
		host.WithDeadLetters(st.deadLetters),
		host.WithRetry(cfg.Default()),
		host.WithAckWait(cfg.AckWait),
		host.WithOutageHorizon(cfg.OutageHorizon),
		host.WithProvisioning(provisioning(cfg)),
		host.WithStreams(storeConfig(cfg).Streams),
		host.WithTracerProvider(tp),
		host.WithMiddleware(
			middleware.Logging(sys.log),
			middleware.Recover(sys.log),
			middleware.Timeout(cfg.RequestTimeout),
		),
	}
	for fn, p := range cfg.Policies() {
		hostOpts = append(hostOpts, host.WithRetryFor(fn, p))
	}
	if sys.host, err = host.New(sys.nc, hostOpts...); err != nil {
		return nil, err
	}
	reg.MustRegister(sys.host.Collector())
	regs, err := selectFunctions(registry(st), cfg.Functions)
	if err != nil {
		return nil, err
	}
	for _, r := range regs {
		if err := sys.host.Add(r.svc, r.def); err != nil {
			return nil, err
		}
	}
	if err := sys.host.Start(ctx); err != nil {
		return nil, err
	}

	sys.health = health.New(reg,
		health.Check{Name: "nats", Fn: func(context.Context) error {
			if !sys.nc.IsConnected() {
				return fmt.Errorf("not connected (%s)", sys.nc.Status())
			}
			return nil
		}},
		health.Check{Name: "jetstream", Fn: func(ctx context.Context) error {
			_, err := js.AccountInfo(ctx)
			return err
		}},
		health.Check{Name: "functions", Fn: func(context.Context) error { return sys.host.Ready() }},
		health.Check{Name: "streams", Fn: func(ctx context.Context) error { return durable.Check(ctx, js, res) }},
		health.Check{Name: "writes", Fn: func(context.Context) error { return writes.Check() }},
	)
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	sys.stopBackground = cancel
	if cfg.CreateMissing {
		go keepResources(bg, js, res, sys.log)
	}
	if cfg.OrderRetention > 0 && slices.ContainsFunc(regs, func(r registration) bool { return r.svc == deadletter.Service && r.def.Name == "replay" }) {
		go sweepDeadLetters(bg, st.deadLetters, orderlog.ReplayTarget(st.log), cfg.OrderRetention, sys.log)
	}
	if cfg.PProf {
		sys.health.ServeProfiles()
	}
	if ln != nil {
		sys.httpAddr = ln.Addr().String()
		sys.http = &http.Server{Handler: sys.health, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := sys.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				sys.log.Error("HTTP server stopped", "error", err)
			}
		}()
	}
	sys.log.Info("orderflow serving", "functions", strings.Join(sys.host.Subjects(), ","), "nats", redact(sys.url),
		"http", sys.httpAddr, "workers", cfg.WorkerPoolSize)
	return sys, nil
}

// connect starts the embedded server when NATS_URL is empty, and connects.
// role is the identity this process acts as, whose inbox it uses: the
// service when it hosts one service's functions, "functions" for more,
// "admin" for provisioning.
func (s *system) connect(role string) (jetstream.JetStream, error) {
	s.url = s.cfg.NATSURL
	connOpts, err := credentials(s.cfg)
	if err != nil {
		return nil, err
	}
	inbox := s.cfg.NATSInboxPrefix
	if inbox == "" {
		inbox = authz.Inbox(role)
	}
	connOpts = append(connOpts, nats.CustomInboxPrefix(inbox))
	if s.url == "" {
		opts, err := natsserver.Load(s.cfg.NATSConf)
		if err != nil {
			return nil, err
		}
		if s.cfg.NATSStoreDir != "" {
			opts.StoreDir = s.cfg.NATSStoreDir
		}
		opts.NoLog = true
		if s.srv, err = natsserver.Start(opts); err != nil {
			return nil, err
		}
		s.url = s.srv.ClientURL()
		connOpts = append(connOpts, nats.InProcessServer(s.srv))
		s.log.Info("embedded NATS server started: an open dev server, no credentials; see README Security for the secure mode",
			"url", s.url, "store_dir", opts.StoreDir, "sync_always", opts.SyncAlways)
	}
	connOpts = append(connOpts,
		nats.Name("orderflow-functions"),
		// Reads of an order's history are short sync subscriptions; the 64k
		// default buffer made each of them a 512 KiB allocation.
		nats.SyncQueueLen(1024),
		nats.MaxReconnects(-1), // a pod outlives server restarts
		// A server cut off from the pod (a network partition, a node gone
		// without closing its connections) is noticed in 10-15s, not the
		// default two pings of two minutes, and the pod moves to another.
		nats.PingInterval(5*time.Second),
		nats.MaxPingsOutstanding(2),
		nats.ReconnectWait(250*time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				s.log.Warn("NATS disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { s.log.Info("NATS reconnected", "url", redact(c.ConnectedUrl())) }),
		// Why the server cannot be reached, for the log of a pod waiting.
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				s.dialErr.Store(err.Error())
			}
		}),
	)
	if s.nc, err = nats.Connect(s.url, connOpts...); err != nil {
		return nil, fmt.Errorf("connect %s: %w", redact(s.url), err)
	}
	return jetstream.New(s.nc)
}

// credentials are the connection options for NATS_USER/NATS_PASSWORD,
// NATS_CREDS, NATS_NKEY and NATS_CA/NATS_CERT/NATS_KEY.
func credentials(cfg config.Config) ([]nats.Option, error) {
	var opts []nats.Option
	if cfg.NATSUser != "" {
		opts = append(opts, nats.UserInfo(cfg.NATSUser, cfg.NATSPassword))
	}
	if cfg.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(cfg.NATSCreds))
	}
	if cfg.NATSNKey != "" {
		o, err := nats.NkeyOptionFromSeed(cfg.NATSNKey)
		if err != nil {
			return nil, fmt.Errorf("%w: NATS_NKEY: %v", config.ErrInvalid, err)
		}
		opts = append(opts, o)
	}
	if cfg.NATSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.NATSCA))
	}
	if cfg.NATSCert != "" {
		opts = append(opts, nats.ClientCert(cfg.NATSCert, cfg.NATSKey))
	}
	return opts, nil
}

// redact hides the password of every URL in a NATS_URL list, and a user
// without one, which NATS takes for a token.
func redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.User == nil {
			continue
		}
		if _, ok := u.User.Password(); !ok {
			u.User = url.User("xxxxx")
		}
		parts[i] = u.Redacted()
	}
	return strings.Join(parts, ",")
}

// roleOf is the identity a pod hosting regs acts as.
func roleOf(regs []registration) string {
	role := ""
	for _, r := range regs {
		if role != "" && role != r.svc.Name {
			return "functions"
		}
		role = r.svc.Name
	}
	if role == "" || len(regs) == len(registry(stores{})) {
		return "functions"
	}
	return role
}

// storeConfig sizes the streams and buckets from config.
func storeConfig(cfg config.Config) durable.Config {
	return durable.Config{Replicas: cfg.StreamReplicas, DuplicateWindow: cfg.DuplicateWindow, Mode: provisioning(cfg),
		Retention: cfg.OrderRetention, Expiring: orderRecords,
		Partitions: cfg.Partitions, PartitionedBuckets: []string{inventory.Bucket}}
}

// orderRecords are, per bucket, the keys that hold an order's records and
// expire with it: a reservation, a payment, a gateway entry.
var orderRecords = map[string]func(key string) bool{
	inventory.Bucket: inventory.IsOrderRecord,
	payments.Bucket:  func(string) bool { return true },
	gateway.Bucket:   func(string) bool { return true },
}

// provisioning is what a serving pod may do to missing resources.
func provisioning(cfg config.Config) durable.Mode {
	if cfg.CreateMissing {
		return durable.CreateMissing
	}
	return durable.Lookup
}

// declared is what the registrations' functions declare they touch.
func declared(regs []registration, cfg config.Config) (durable.Resources, error) {
	defs := make([]function.Definition, len(regs))
	for i, r := range regs {
		defs[i] = r.def
	}
	return durable.ForFunctions(defs, storeConfig(cfg))
}

// openStores finds (or, if allowed, creates) the streams and buckets and
// opens the stores on them, waiting for JetStream when the server is not
// up yet: pods may start before it.
func openStores(ctx context.Context, js jetstream.JetStream, cfg config.Config, res durable.Resources, tp trace.TracerProvider, log *slog.Logger, dialErr func() string, writes *durable.Writes) (stores, error) {
	for wait := 250 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		var st stores
		var err error
		if nc := js.Conn(); nc.IsConnected() {
			st, err = tryOpenStores(ctx, js, cfg, res, tp, log, writes)
		} else {
			err = fmt.Errorf("not connected to NATS (%s): %s", nc.Status(), dialErr())
		}
		if err == nil {
			return st, nil
		}
		if errors.Is(err, durable.ErrLayout) { // waiting would not change it
			return stores{}, fmt.Errorf("%w: %w", config.ErrInvalid, err)
		}
		var api *jetstream.APIError
		if errors.As(err, &api) && api.ErrorCode == 10074 { // replicas > 1 without a cluster
			return stores{}, fmt.Errorf("%w: STREAM_REPLICAS=%d: the server at NATS_URL is not a JetStream cluster, which replicas need; set STREAM_REPLICAS=1 or join a cluster: %w",
				config.ErrInvalid, cfg.StreamReplicas, err)
		}
		if nc := js.Conn(); !nc.IsConnected() {
			log.Warn("NATS not reachable; waiting for it", "nats_url", redact(urlOrEmbedded(cfg)), "cause", err.Error(), "in", wait)
		} else {
			log.Warn("JetStream not ready, retrying", "error", err, "in", wait)
		}
		select {
		case <-ctx.Done():
			return stores{}, fmt.Errorf("open streams: %w (last error: %w)", ctx.Err(), err)
		case <-time.After(wait):
		}
	}
}

func tryOpenStores(ctx context.Context, js jetstream.JetStream, cfg config.Config, res durable.Resources, tp trace.TracerProvider, log *slog.Logger, writes *durable.Writes) (stores, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	actions, err := durable.Ensure(ctx, js, res, provisioning(cfg))
	if err != nil {
		return stores{}, err
	}
	logActions(log, actions, false)
	dc := storeConfig(cfg)
	dc.Mode, dc.Tracing, dc.Writes = durable.Lookup, tp, writes // ensured above
	var st stores
	if res.HasStream(durable.EventStream) {
		if st.log, err = durable.OpenLog(ctx, js, dc); err != nil {
			return stores{}, err
		}
	}
	if res.HasStream(durable.DeadLetterStream) {
		if st.deadLetters, err = durable.OpenDeadLetters(ctx, js, dc); err != nil {
			return stores{}, err
		}
	}
	bucket := func(name string) (*durable.Bucket, error) {
		if !res.HasBucket(name) {
			return nil, nil // no function here touches it
		}
		return durable.OpenBucket(ctx, js, name, dc)
	}
	var stock state.Store
	if res.HasBucket(inventory.Bucket) {
		if stock, err = durable.OpenStore(ctx, js, inventory.Bucket, dc); err != nil {
			return stores{}, err
		}
	}
	pay, err := bucket(payments.Bucket)
	if err != nil {
		return stores{}, err
	}
	ledger, err := bucket(gateway.Bucket)
	if err != nil {
		return stores{}, err
	}
	if st.secrets, err = bucket(createorder.SecretsBucket); err != nil {
		return stores{}, err
	}
	gw := gateway.New(ledger, gateway.Config{
		MaxOrderMinor: cfg.PaymentMaxOrderMinor,
		FailureRate:   cfg.PaymentFailureRate,
		Latency:       cfg.PaymentLatency,
	})
	st.stock, st.payments = inventory.New(stock), payments.New(pay, gw)
	st.maxPending, st.backlog = cfg.MaxPendingOrders, durable.NewBacklog(js, dc.Streams(durable.EventStream), sagaConsumers...).Count
	return st, nil
}

// urlOrEmbedded names the server a pod connects to, for logs.
func urlOrEmbedded(cfg config.Config) string {
	if cfg.NATSURL == "" {
		return "(embedded)"
	}
	return cfg.NATSURL
}

// lastDialError is why the last attempt to reach NATS failed, if one did.
func (s *system) lastDialError() string {
	if e, ok := s.dialErr.Load().(string); ok {
		return e
	}
	return "no answer yet"
}

// logActions logs what Ensure created and what differs from its
// declaration; recreated says the resources existed before.
func logActions(log *slog.Logger, actions []durable.Action, recreated bool) {
	for _, a := range actions {
		switch {
		case a.Did == "created" && recreated:
			log.Warn(a.Kind+" was missing and has been re-created", "name", a.Name)
		case a.Did == "created":
			log.Info(a.Kind+" created", "name", a.Name)
		case a.Differs != "" && !recreated:
			log.Warn(a.Kind+" differs from its declaration; run `orderflow provision` to update it", "name", a.Name, "differs", a.Differs)
		}
	}
}

// sweepDeadLetters deletes, now and then, the dead letters older than the
// retention whose order has ended; those of open orders stay.
func sweepDeadLetters(ctx context.Context, d *durable.DeadLetters, t deadletter.Target, retention time.Duration, log *slog.Logger) {
	every := min(max(retention/4, time.Second), time.Hour)
	failures := telemetry.NewLimiter(time.Hour)
	for {
		n, err := d.Sweep(ctx, retention, t)
		if n > 0 {
			log.Info("dead letters of ended orders expired", "count", n, "older_than", retention)
		}
		if err != nil && ctx.Err() == nil && failures.Allow() {
			log.Warn("sweeping dead letters failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// keepEvery is how often keepResources looks.
var keepEvery = 5 * time.Second

// keepResources re-creates a stream or bucket that disappears while the
// host runs (an operator's delete, a store lost), until ctx ends. The
// triggers bind their consumers again by themselves.
func keepResources(ctx context.Context, js jetstream.JetStream, res durable.Resources, log *slog.Logger) {
	t := time.NewTicker(keepEvery)
	defer t.Stop()
	failures := telemetry.NewLimiter(time.Minute)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		actions, err := durable.Ensure(cctx, js, res, durable.CreateMissing)
		cancel()
		logActions(log, actions, true)
		if err != nil && ctx.Err() == nil && failures.Allow() {
			log.Warn("checking streams and buckets failed", "error", err)
		}
	}
}

// newSagaMetrics registers the saga's metrics and returns the observer that
// feeds them.
func newSagaMetrics(reg prometheus.Registerer) orderlog.Observer {
	ended := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "orderflow", Name: "orders_ended_total",
		Help: "Orders this host brought to a terminal status, by status.",
	}, []string{"status"})
	took := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "orderflow", Name: "order_duration_seconds",
		Help:    "Time from an order's creation to its terminal status, end to end through the saga.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"status"})
	reg.MustRegister(ended, took)
	return func(status ordersv1.OrderStatus, d time.Duration) {
		name := strings.TrimPrefix(status.String(), "ORDER_STATUS_")
		ended.WithLabelValues(name).Inc()
		took.WithLabelValues(name).Observe(d.Seconds())
	}
}

// checkNames checks the function names in FUNCTIONS and in the
// RETRY_POLICY_<SERVICE>_<FUNCTION> overrides against the registry.
func checkNames(cfg config.Config) error {
	all := registry(stores{})
	if _, err := selectFunctions(all, cfg.Functions); err != nil {
		return err
	}
	for fn := range cfg.RetryPolicies {
		if !slices.ContainsFunc(all, func(r registration) bool { return r.svc.Name+"."+r.def.Name == fn }) {
			return fmt.Errorf("%w: %s: no function %s", config.ErrInvalid, config.RetryVar(fn), fn)
		}
	}
	return nil
}

// selectFunctions keeps the registrations FUNCTIONS names, in registry
// order: a service name takes all its functions, a subject one function.
// Empty keeps all; a name that matches nothing is an error.
func selectFunctions(all []registration, names []string) ([]registration, error) {
	if len(names) == 0 {
		return all, nil
	}
	matches := func(n string, r registration) bool { return n == r.svc.Name || n == r.svc.Name+"."+r.def.Name }
	var known []string
	for _, r := range all {
		known = append(known, r.svc.Name+"."+r.def.Name)
	}
	for _, n := range names {
		if !slices.ContainsFunc(all, func(r registration) bool { return matches(strings.TrimSpace(n), r) }) {
			return nil, fmt.Errorf("%w: FUNCTIONS: unknown function %q (known: %s, or a service name)", config.ErrInvalid, n, strings.Join(known, ", "))
		}
	}
	var out []registration
	for _, r := range all {
		if slices.ContainsFunc(names, func(n string) bool { return matches(strings.TrimSpace(n), r) }) {
			out = append(out, r)
		}
	}
	return out, nil
}

// shutdown drains within cfg.DrainTimeout: stop taking requests, finish
// in-flight ones, then close the connection and the embedded server.
func (s *system) shutdown() error {
	s.log.Info("draining")
	if s.health != nil {
		s.health.Draining()
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
	defer cancel()
	var errs []error
	if s.host != nil {
		if err := s.host.Drain(ctx); err != nil {
			errs = append(errs, fmt.Errorf("drain functions: %w", err))
		}
	}
	if s.http != nil {
		if err := s.http.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("HTTP shutdown: %w", err))
		}
	}
	if s.tracing != nil {
		if err := s.tracing.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("flush traces: %w", err))
		}
	}
	s.close()
	s.log.Info("stopped")
	return errors.Join(errs...)
}

// close releases the connection and the embedded server.
func (s *system) close() {
	if s.httpListener != nil && s.http == nil {
		s.httpListener.Close() // taken, never served: start failed
	}
	if s.stopBackground != nil {
		s.stopBackground()
	}
	if s.nc != nil {
		s.nc.Close()
	}
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
	}
}
