package telemetry

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/orderflow/orderflow/runtime/function"
)

// LogHandler adds to every record logged with a context the trace and span
// ids, the function and the call's annotations (order_id, ...), so each line
// about a request or message can be found from its trace and back.
func LogHandler(next slog.Handler) slog.Handler { return &logHandler{next: next} }

type logHandler struct{ next slog.Handler }

func (h *logHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	if c := function.CallFrom(ctx); c.Function != "" {
		r.AddAttrs(slog.String("function", c.Name()))
		if c.Trigger != "" {
			r.AddAttrs(slog.String("consumer", c.Trigger), slog.Int("attempt", c.Attempt))
		}
	}
	kv := function.Annotations(ctx)
	for i := 0; i+1 < len(kv); i += 2 {
		r.AddAttrs(slog.String(kv[i], kv[i+1]))
	}
	return h.next.Handle(ctx, r)
}

func (h *logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &logHandler{next: h.next.WithAttrs(attrs)}
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	return &logHandler{next: h.next.WithGroup(name)}
}

// Limiter lets one event through per interval: for log lines that a lasting
// condition (an outage) would otherwise repeat for every message.
type Limiter struct {
	every time.Duration
	mu    sync.Mutex
	last  time.Time
}

// NewLimiter lets one event through every d.
func NewLimiter(d time.Duration) *Limiter { return &Limiter{every: d} }

// Allow reports whether an event may pass now.
func (l *Limiter) Allow() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := time.Now(); now.Sub(l.last) >= l.every {
		l.last = now
		return true
	}
	return false
}
