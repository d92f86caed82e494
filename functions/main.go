// Command functions is the orderflow function host: it serves the order,
// inventory and payment functions as NATS micro endpoints. With NATS_URL
// unset it embeds a JetStream server, so `go run ./functions` is the whole
// system; with NATS_URL set it joins that server, and more hosts scale out.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
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
	"github.com/orderflow/orderflow/runtime/config"
	"github.com/orderflow/orderflow/runtime/deadletter"
	"github.com/orderflow/orderflow/runtime/durable"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/health"
	"github.com/orderflow/orderflow/runtime/host"
	"github.com/orderflow/orderflow/runtime/middleware"
	"github.com/orderflow/orderflow/runtime/natsserver"
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
	deadLetters *durable.DeadLetters
	// ended learns of every order this host ends, for the saga metrics.
	ended orderlog.Observer
}

type registration struct {
	svc function.Service
	def function.Definition
}

// registry lists every function, one line each.
func registry(s stores) []registration {
	return []registration{
		{ordersService, createorder.New(s.log)},
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
		{deadletter.Service, deadletter.Replay(s.deadLetters)},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	cfg, err := config.Load()
	if err == nil {
		err = telemetry.FromEnv().Validate()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "orderflow:", err)
		os.Exit(2)
	}
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "orderflow:", err)
		os.Exit(1)
	}
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
	if tp == nil {
		tr, err := telemetry.Setup(ctx, telemetry.FromEnv(), "orderflow")
		if err != nil {
			return nil, err
		}
		sys.tracing, tp = &tr, tr.Provider
	}

	url := cfg.NATSURL
	var connOpts []nats.Option
	if url == "" {
		opts, err := natsserver.Load(cfg.NATSConf)
		if err != nil {
			return nil, err
		}
		if cfg.NATSStoreDir != "" {
			opts.StoreDir = cfg.NATSStoreDir
		}
		opts.NoLog = true
		if sys.srv, err = natsserver.Start(opts); err != nil {
			return nil, err
		}
		url = sys.srv.ClientURL()
		connOpts = append(connOpts, nats.InProcessServer(sys.srv))
		sys.log.Info("embedded NATS server started", "url", url, "store_dir", opts.StoreDir, "sync_always", opts.SyncAlways)
	}
	connOpts = append(connOpts,
		nats.Name("orderflow-functions"),
		// Reads of an order's history are short sync subscriptions; the 64k
		// default buffer made each of them a 512 KiB allocation.
		nats.SyncQueueLen(1024),
		nats.MaxReconnects(-1), // a pod outlives server restarts
		nats.ReconnectWait(250*time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				sys.log.Warn("NATS disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { sys.log.Info("NATS reconnected", "url", c.ConnectedUrl()) }),
	)
	if sys.nc, err = nats.Connect(url, connOpts...); err != nil {
		return nil, fmt.Errorf("connect %s: %w", url, err)
	}
	js, err := jetstream.New(sys.nc)
	if err != nil {
		return nil, err
	}
	st, err := openStores(ctx, js, cfg, tp, sys.log)
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
		health.Check{Name: "streams", Fn: func(ctx context.Context) error {
			return durable.Check(ctx, js, durable.EventStream, durable.DeadLetterStream,
				durable.BucketStream(inventory.Bucket), durable.BucketStream(payments.Bucket), durable.BucketStream(gateway.Bucket))
		}},
	)
	if cfg.HTTPAddr != "off" {
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return nil, fmt.Errorf("HTTP_ADDR %s: %w", cfg.HTTPAddr, err)
		}
		sys.httpAddr = ln.Addr().String()
		sys.http = &http.Server{Handler: sys.health, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := sys.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				sys.log.Error("HTTP server stopped", "error", err)
			}
		}()
	}
	sys.log.Info("orderflow serving", "functions", strings.Join(sys.host.Subjects(), ","), "nats", url,
		"http", sys.httpAddr, "workers", cfg.WorkerPoolSize)
	return sys, nil
}

// openStores declares the streams and buckets, waiting for JetStream when
// the server is not up yet: pods may start before it.
func openStores(ctx context.Context, js jetstream.JetStream, cfg config.Config, tp trace.TracerProvider, log *slog.Logger) (stores, error) {
	dc := durable.Config{Replicas: cfg.StreamReplicas, DuplicateWindow: cfg.DuplicateWindow, Tracing: tp}
	for wait := 250 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		st, err := tryOpenStores(ctx, js, dc, cfg)
		if err == nil {
			return st, nil
		}
		log.Warn("JetStream not ready, retrying", "error", err, "in", wait)
		select {
		case <-ctx.Done():
			return stores{}, fmt.Errorf("open streams: %w (last error: %w)", ctx.Err(), err)
		case <-time.After(wait):
		}
	}
}

func tryOpenStores(ctx context.Context, js jetstream.JetStream, dc durable.Config, cfg config.Config) (stores, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	log, err := durable.OpenLog(ctx, js, dc)
	if err != nil {
		return stores{}, err
	}
	buckets := map[string]*durable.Bucket{}
	for _, name := range []string{inventory.Bucket, payments.Bucket, gateway.Bucket} {
		if buckets[name], err = durable.OpenBucket(ctx, js, name, dc); err != nil {
			return stores{}, err
		}
	}
	dead, err := durable.OpenDeadLetters(ctx, js, dc)
	if err != nil {
		return stores{}, err
	}
	gw := gateway.New(buckets[gateway.Bucket], gateway.Config{
		MaxOrderMinor: cfg.PaymentMaxOrderMinor,
		FailureRate:   cfg.PaymentFailureRate,
		Latency:       cfg.PaymentLatency,
	})
	return stores{
		log:         log,
		stock:       inventory.New(buckets[inventory.Bucket]),
		payments:    payments.New(buckets[payments.Bucket], gw),
		deadLetters: dead,
	}, nil
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
	if s.nc != nil {
		s.nc.Close()
	}
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
	}
}
