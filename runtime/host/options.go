package host

import (
	"fmt"
	"io"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/orderflow/orderflow/runtime/durable"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/retry"
)

type options struct {
	workers    int
	maxBody    int
	log        *slog.Logger
	middleware []function.Middleware
	metrics    *Metrics
	dead       DeadLetterSink
	retry      retry.Policy
	retryFor   map[string]retry.Policy
	ackWait    time.Duration
	tracer     trace.Tracer
	outage     time.Duration
	provision  durable.Mode
	streams    func(string) []string
}

func defaults() options {
	return options{
		workers: 10,
		maxBody: 64 << 10,
		log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		metrics: NewMetrics(nil),
		retry:   retry.Default,
		ackWait: 30 * time.Second,
		tracer:  noop.NewTracerProvider().Tracer(""),
		streams: durable.Config{}.Streams,
		outage:  2 * time.Minute,
	}
}

// WithoutTracing skips tracing on the hot path altogether: no context is
// extracted and no span started, not even a no-op one. It exists to measure
// what tracing costs (BenchmarkRequest).
func WithoutTracing() Option {
	return func(o *options) error {
		o.tracer = nil
		return nil
	}
}

// WithTracerProvider makes the host trace every request (a server span) and
// every triggered message (a consumer span), continuing the W3C trace
// context found in the message headers.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) error {
		if tp != nil {
			o.tracer = tp.Tracer("github.com/orderflow/orderflow/runtime/host")
		}
		return nil
	}
}

// WithDeadLetters stores messages that failed for good in sink; a host with
// triggers needs one.
func WithDeadLetters(sink DeadLetterSink) Option {
	return func(o *options) error {
		o.dead = sink
		return nil
	}
}

// WithRetry sets the retry policy of functions that declare none.
func WithRetry(p retry.Policy) Option {
	return func(o *options) error {
		if err := p.Validate(); err != nil {
			return fmt.Errorf("%w: %w", ErrConfig, err)
		}
		o.retry = p
		return nil
	}
}

// WithRetryFor overrides the retry policy of one function ("payments.charge"),
// whatever the function declares.
func WithRetryFor(function string, p retry.Policy) Option {
	return func(o *options) error {
		if err := p.Validate(); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrConfig, function, err)
		}
		if o.retryFor == nil {
			o.retryFor = map[string]retry.Policy{}
		}
		o.retryFor[function] = p
		return nil
	}
}

// WithAckWait sets how long the server waits for a trigger's ack before it
// redelivers (default 30s). Handlers that run longer report progress, so it
// only matters when a pod dies mid-message.
func WithAckWait(d time.Duration) Option {
	return func(o *options) error {
		if d < 300*time.Millisecond {
			return fmt.Errorf("%w: ack wait must be at least 300ms, got %s", ErrConfig, d)
		}
		o.ackWait = d
		return nil
	}
}

// WithOutageHorizon sets how long a triggered message whose handler finds
// JetStream unavailable (function.ErrUnavailable: a leader election, a
// restarting server, a lost quorum) is retried in place, without spending
// an attempt of its function, before the failure counts as the function's
// own (default 2m). It must stay inside the event stream's duplicate
// window; the host's config checks that.
func WithOutageHorizon(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("%w: outage horizon must not be negative, got %s", ErrConfig, d)
		}
		o.outage = d
		return nil
	}
}

// WithProvisioning says what the host may do about a trigger's durable
// consumer: create it when it is missing (durable.CreateMissing, the
// default) or only find it (durable.Lookup: it waits, with /readyz failing,
// until `provision` creates it). An existing consumer is never changed;
// one that differs from its declaration is logged.
func WithProvisioning(m durable.Mode) Option {
	return func(o *options) error {
		o.provision = m
		return nil
	}
}

// WithStreams says which streams are behind a stream a trigger names: the
// partitions of a partitioned stream (durable.Config.Streams). A trigger
// consumes each of them through a consumer of the same durable name, all
// sharing the function's workers.
func WithStreams(fn func(stream string) []string) Option {
	return func(o *options) error {
		if fn == nil {
			return fmt.Errorf("%w: WithStreams needs a function", ErrConfig)
		}
		o.streams = fn
		return nil
	}
}

// Option configures a Host.
type Option func(*options) error

// WithWorkers sets how many calls each endpoint runs at once (default 10).
func WithWorkers(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("%w: workers must be at least 1, got %d", ErrConfig, n)
		}
		o.workers = n
		return nil
	}
}

// WithMaxBody bounds request bodies in bytes (default 64 KiB); larger
// requests get a 400.
func WithMaxBody(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("%w: max body must be positive, got %d", ErrConfig, n)
		}
		o.maxBody = n
		return nil
	}
}

// WithLogger sets the logger for host events.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l != nil {
			o.log = l
		}
		return nil
	}
}

// WithMiddleware wraps every function; the first is outermost.
func WithMiddleware(mw ...function.Middleware) Option {
	return func(o *options) error {
		o.middleware = append(o.middleware, mw...)
		return nil
	}
}

// WithMetrics records request metrics into m.
func WithMetrics(m *Metrics) Option {
	return func(o *options) error {
		if m != nil {
			o.metrics = m
		}
		return nil
	}
}
