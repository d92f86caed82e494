package host_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/durable"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/host"
	"github.com/orderflow/orderflow/runtime/middleware"
	"github.com/orderflow/orderflow/runtime/retry"
	"github.com/orderflow/orderflow/runtime/runtimetest"
)

var quick = retry.Policy{MaxAttempts: 3, Initial: 10 * time.Millisecond, Multiplier: 1, Max: 10 * time.Millisecond}

type triggerEnv struct {
	srv  *server.Server
	nc   *nats.Conn
	js   jetstream.JetStream
	dead *durable.DeadLetters
}

func newTriggerEnv(t *testing.T) *triggerEnv {
	t.Helper()
	srv := runtimetest.StartNATS(t)
	nc := runtimetest.Connect(t, srv)
	js := runtimetest.JetStream(t, nc)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EV", Subjects: []string{"EV.>"}}); err != nil {
		t.Fatal(err)
	}
	dead, err := durable.OpenDeadLetters(ctx, js, durable.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return &triggerEnv{srv: srv, nc: nc, js: js, dead: dead}
}

// startTriggered hosts a function whose trigger runs fn on EV.>.
func (env *triggerEnv) startTriggered(t *testing.T, fn func(context.Context, *ordersv1.StockSold) error, opts ...host.Option) *host.Host {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	opts = append([]host.Option{
		host.WithDeadLetters(env.dead),
		host.WithRetry(quick),
		host.WithAckWait(time.Second),
		host.WithMiddleware(middleware.Recover(log)),
	}, opts...)
	h, err := host.New(env.nc, opts...)
	if err != nil {
		t.Fatal(err)
	}
	def := function.New("get", lookup, function.On("EV", "EV.>", "ev-consumer", fn))
	if err := h.Add(testService, def); err != nil {
		t.Fatal(err)
	}
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Drain(context.Background()) })
	return h
}

func (env *triggerEnv) publish(t *testing.T, subject string, msg proto.Message) {
	t.Helper()
	data, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.js.Publish(context.Background(), subject, data); err != nil {
		t.Fatal(err)
	}
}

func (env *triggerEnv) waitIdle(t *testing.T) {
	t.Helper()
	waitFor(t, func() bool {
		c, err := env.js.Consumer(context.Background(), "EV", "ev-consumer")
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
}

func triggerStats(t *testing.T, nc *nats.Conn) host.TriggerStats {
	t.Helper()
	var d host.EndpointData
	if err := json.Unmarshal(stats(t, nc, testService.Name).Endpoints[0].Data, &d); err != nil {
		t.Fatal(err)
	}
	if d.Triggers["ev-consumer"] == nil {
		return host.TriggerStats{}
	}
	return *d.Triggers["ev-consumer"]
}

// attemptLog records the delivery attempt of every call.
type attemptLog struct {
	mu       sync.Mutex
	attempts []int
}

// record notes the call's attempt and returns how many calls there were.
func (a *attemptLog) record(ctx context.Context) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.attempts = append(a.attempts, function.CallFrom(ctx).Attempt)
	return len(a.attempts)
}

func (a *attemptLog) String() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return fmt.Sprint(a.attempts)
}

func TestTriggerRetriesThenSucceeds(t *testing.T) {
	env := newTriggerEnv(t)
	var log attemptLog
	env.startTriggered(t, func(ctx context.Context, ev *ordersv1.StockSold) error {
		if log.record(ctx) < 3 {
			return errors.New("flaky")
		}
		return nil
	})
	env.publish(t, "EV.o-1", &ordersv1.StockSold{OrderId: "o-1"})
	env.waitIdle(t)
	waitFor(t, func() bool { return triggerStats(t, env.nc).Acked == 1 })
	if log.String() != "[1 2 3]" {
		t.Errorf("attempts %v, want [1 2 3]", log.String())
	}
	if st := triggerStats(t, env.nc); st.Retries != 2 || st.DeadLetters != 0 || st.Messages != 3 {
		t.Errorf("stats %+v, want 2 retries then an ack", st)
	}
}

func TestTriggerDeadLetters(t *testing.T) {
	tests := []struct {
		name         string
		err          error
		body         []byte
		wantAttempts uint64
		wantCode     int32
	}{
		{"exhausted", errors.New("always down"), nil, 3, 500},
		{"permanent", function.Invalid("order_id", "bad"), nil, 1, 400},
		// "Not found" is retried a few deliveries (here until the policy's
		// three attempts are spent) before it is taken as final.
		{"not found", fmt.Errorf("order o-1: %w", function.ErrNotFound), nil, 3, 404},
		{"undecodable", nil, []byte("\xff\xff"), 1, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newTriggerEnv(t)
			env.startTriggered(t, func(context.Context, *ordersv1.StockSold) error { return tt.err })
			if tt.body != nil {
				if _, err := env.js.Publish(context.Background(), "EV.o-1", tt.body, jetstream.WithMsgID("m-1")); err != nil {
					t.Fatal(err)
				}
			} else {
				env.publish(t, "EV.o-1", &ordersv1.StockSold{OrderId: "o-1"})
			}
			env.waitIdle(t)
			var dls []string
			waitFor(t, func() bool {
				got, err := env.dead.List(context.Background(), 0, 10)
				if err != nil || len(got) != 1 {
					return false
				}
				dl := got[0]
				if dl.GetAttempts() != tt.wantAttempts || dl.GetCode() != tt.wantCode || dl.GetSubject() != "EV.o-1" ||
					dl.GetConsumer() != "ev-consumer" || dl.GetFunction() != "stock.get" || dl.GetStreamSequence() != 1 || dl.GetError() == "" {
					dls = append(dls, dl.String())
					return false
				}
				return true
			})
			if st := triggerStats(t, env.nc); st.DeadLetters != 1 {
				t.Errorf("stats %+v, want one dead letter; saw %v", st, dls)
			}
		})
	}
}

// Two hosts share one durable consumer: each message is handled once.
func TestTriggerSharedByHosts(t *testing.T) {
	env := newTriggerEnv(t)
	var mu sync.Mutex
	seen := map[string]int{}
	fn := func(_ context.Context, ev *ordersv1.StockSold) error {
		mu.Lock()
		seen[ev.GetOrderId()]++
		mu.Unlock()
		time.Sleep(time.Millisecond)
		return nil
	}
	env.startTriggered(t, fn)
	env2 := &triggerEnv{srv: env.srv, nc: runtimetest.Connect(t, env.srv), js: env.js, dead: env.dead}
	env2.startTriggered(t, fn)
	const n = 200
	for i := range n {
		env.publish(t, fmt.Sprintf("EV.o-%d", i), &ordersv1.StockSold{OrderId: fmt.Sprint(i)})
	}
	env.waitIdle(t)
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != n {
		t.Errorf("%d messages handled, want %d", len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Errorf("message %s handled %d times", id, c)
		}
	}
}

func TestTriggerDrainFinishesMessages(t *testing.T) {
	env := newTriggerEnv(t)
	release := make(chan struct{})
	var started, finished atomic.Int32
	h := env.startTriggered(t, func(context.Context, *ordersv1.StockSold) error {
		started.Add(1)
		<-release
		finished.Add(1)
		return nil
	})
	env.publish(t, "EV.o-1", &ordersv1.StockSold{OrderId: "o-1"})
	waitFor(t, func() bool { return started.Load() == 1 })
	drained := make(chan error, 1)
	go func() { drained <- h.Drain(context.Background()) }()
	time.Sleep(50 * time.Millisecond)
	close(release)
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	if finished.Load() != 1 {
		t.Error("drain returned before the message was handled")
	}
	c, _ := env.js.Consumer(context.Background(), "EV", "ev-consumer")
	if info, err := c.Info(context.Background()); err != nil || info.NumAckPending != 0 {
		t.Errorf("after drain: %+v, %v; want the message acked", info, err)
	}
}

// A handler that runs longer than AckWait tells the server it is still at
// work, so the message is not delivered again meanwhile.
func TestTriggerSlowHandlerIsNotRedelivered(t *testing.T) {
	env := newTriggerEnv(t)
	var calls atomic.Int32
	env.startTriggered(t, func(context.Context, *ordersv1.StockSold) error {
		calls.Add(1)
		time.Sleep(2500 * time.Millisecond) // AckWait is 1s here
		return nil
	})
	env.publish(t, "EV.o-1", &ordersv1.StockSold{OrderId: "o-1"})
	env.waitIdle(t)
	waitFor(t, func() bool { return triggerStats(t, env.nc).Acked == 1 })
	if n := calls.Load(); n != 1 {
		t.Errorf("handler ran %d times, want once", n)
	}
}

// An outage (function.ErrUnavailable) is not the function's failure: the
// message is retried in place, kept in progress, for longer than its
// attempts would last, and acked once JetStream answers again; it spends no
// attempt and is never dead-lettered.
func TestTriggerRidesOutAnOutage(t *testing.T) {
	env := newTriggerEnv(t)
	var log attemptLog
	reg := prometheus.NewRegistry()
	env.startTriggered(t, func(ctx context.Context, ev *ordersv1.StockSold) error {
		if log.record(ctx) <= 5 { // quick allows 3 attempts
			return fmt.Errorf("publish: %w: no response from stream", function.ErrUnavailable)
		}
		return nil
	}, host.WithOutageHorizon(time.Minute), host.WithMetrics(host.NewMetrics(reg)))
	env.publish(t, "EV.o-1", &ordersv1.StockSold{OrderId: "o-1"})
	env.waitIdle(t)
	waitFor(t, func() bool { return triggerStats(t, env.nc).Acked == 1 })
	if log.String() != "[1 1 1 1 1 1]" {
		t.Errorf("attempts %v, want six calls of the first delivery", log.String())
	}
	if st := triggerStats(t, env.nc); st.DeadLetters != 0 || st.Retries != 0 {
		t.Errorf("stats %+v, want an ack with no retry and no dead letter", st)
	}
	if got := counter(t, reg, "orderflow_jetstream_unavailable_retries_total"); got != 5 {
		t.Errorf("orderflow_jetstream_unavailable_retries_total = %v, want 5", got)
	}
	if got := counter(t, reg, "orderflow_messages_waiting_on_jetstream"); got != 0 {
		t.Errorf("orderflow_messages_waiting_on_jetstream = %v after the outage, want 0", got)
	}
}

// counter sums the samples of a counter or gauge family in reg.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// Past the outage horizon the failure counts as the function's own: the
// attempts are spent and the message is dead-lettered as any other.
func TestTriggerOutageHorizon(t *testing.T) {
	env := newTriggerEnv(t)
	var calls atomic.Int32
	env.startTriggered(t, func(ctx context.Context, ev *ordersv1.StockSold) error {
		calls.Add(1)
		return fmt.Errorf("publish: %w", function.ErrUnavailable)
	}, host.WithOutageHorizon(150*time.Millisecond))
	env.publish(t, "EV.o-1", &ordersv1.StockSold{OrderId: "o-1"})
	waitFor(t, func() bool { return triggerStats(t, env.nc).DeadLetters == 1 })
	if st := triggerStats(t, env.nc); st.Retries != 2 || calls.Load() < 6 {
		t.Errorf("stats %+v after %d calls, want 3 attempts of several calls each, then a dead letter", st, calls.Load())
	}
}

// A pod drained during an outage stops waiting at once and hands the
// message back (a NAK, no dead letter): another pod takes it when
// JetStream answers again. The handback is a redelivery, so it counts as
// a delivery attempt.
func TestTriggerDrainDuringAnOutage(t *testing.T) {
	env := newTriggerEnv(t)
	reg := prometheus.NewRegistry()
	a := env.startTriggered(t, func(ctx context.Context, ev *ordersv1.StockSold) error {
		return fmt.Errorf("publish: %w", function.ErrUnavailable)
	}, host.WithOutageHorizon(time.Minute), host.WithMetrics(host.NewMetrics(reg)))
	env.publish(t, "EV.o-1", &ordersv1.StockSold{OrderId: "o-1"})
	waitFor(t, func() bool { return counter(t, reg, "orderflow_messages_waiting_on_jetstream") == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := a.Drain(ctx); err != nil {
		t.Fatalf("drain: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("drain took %s while waiting out an outage, want it to stop waiting", took)
	}

	var log attemptLog
	env.startTriggered(t, func(ctx context.Context, ev *ordersv1.StockSold) error {
		log.record(ctx)
		return nil
	})
	env.waitIdle(t)
	if log.String() != "[2]" {
		t.Errorf("attempts on the second pod %v, want the second delivery", log.String())
	}
	if n, err := env.dead.List(context.Background(), 0, 10); err != nil || len(n) != 0 {
		t.Errorf("dead letters %v, %v; want none for an outage", n, err)
	}
}
