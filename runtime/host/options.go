package host

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/orderflow/orderflow/runtime/function"
)

type options struct {
	workers    int
	maxBody    int
	log        *slog.Logger
	middleware []function.Middleware
	metrics    *Metrics
}

func defaults() options {
	return options{
		workers: 10,
		maxBody: 64 << 10,
		log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		metrics: NewMetrics(nil),
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
