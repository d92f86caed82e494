// Package middleware holds the function.Middleware every function gets:
// panic recovery, a deadline, a log line per failed call, and retries of
// transient failures on the request path.
package middleware

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/retry"
)

// ErrPanic wraps a panic raised by a handler; it is transient (500).
var ErrPanic = errors.New("handler panicked")

// Recover turns a panic in the handler into an error, so one bad message
// cannot take down a pod that serves many.
func Recover(log *slog.Logger) function.Middleware {
	return func(next function.Handler) function.Handler {
		return func(ctx context.Context, req proto.Message) (resp proto.Message, err error) {
			defer func() {
				if r := recover(); r != nil {
					log.ErrorContext(ctx, "handler panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
					resp, err = nil, fmt.Errorf("%w: %v", ErrPanic, r)
				}
			}()
			return next(ctx, req)
		}
	}
}

// Timeout bounds each call to d, within any deadline the caller already set.
func Timeout(d time.Duration) function.Middleware {
	return func(next function.Handler) function.Handler {
		if d <= 0 {
			return next
		}
		return func(ctx context.Context, req proto.Message) (proto.Message, error) {
			ctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			return next(ctx, req)
		}
	}
}

// Logging logs every failed call with its code, and successful ones and
// calls that found JetStream unavailable at debug level, with the subject
// and duration. The logger's handler adds the function, trace and order
// (telemetry.LogHandler).
func Logging(log *slog.Logger) function.Middleware {
	repeats := newRepeats(10 * time.Second)
	return func(next function.Handler) function.Handler {
		return func(ctx context.Context, req proto.Message) (proto.Message, error) {
			start := time.Now()
			resp, err := next(ctx, req)
			level := slog.LevelDebug
			msg := "call ok"
			switch code := function.Code(err); {
			case err == nil:
			case function.IsUnavailable(err):
				// Not the function's failure; the host says so once in a
				// while for a whole outage, not once per call.
				msg = "call unavailable"
			case code < 500:
				level, msg = slog.LevelInfo, "call rejected"
			default:
				level, msg = slog.LevelError, "call failed"
			}
			// Checked first: building the line's attributes is what costs.
			if !log.Enabled(ctx, level) {
				return resp, err
			}
			attrs := []slog.Attr{slog.String("subject", function.CallFrom(ctx).Subject), slog.Duration("duration", time.Since(start))}
			if err != nil {
				// The same failure over and over (a full store, a broken
				// dependency) is logged once per window, with a count.
				first, skipped := repeats.allow(function.CallFrom(ctx).Name(), function.Code(err), err)
				if !first {
					return resp, err
				}
				attrs = append(attrs, slog.Int("code", function.Code(err)), slog.String("error", err.Error()))
				if skipped > 0 {
					attrs = append(attrs, slog.Int("repeats_not_logged", skipped))
				}
			}
			log.LogAttrs(ctx, level, msg, attrs...)
			return resp, err
		}
	}
}

// Retry retries a call that failed with a transient error, with p's backoff,
// while attempts remain and the deadline allows the next wait. Permanent
// errors (4xx) are never retried. A failure because JetStream is unavailable
// (function.ErrUnavailable) spends no attempt: it is retried until the
// deadline, so a request rides out a short failover. A policy of one
// attempt (a function that is not idempotent) never retries. It is for the
// request path; triggered messages are retried by redelivery instead, which
// survives a pod's death.
func Retry(p retry.Policy) function.Middleware {
	return func(next function.Handler) function.Handler {
		return func(ctx context.Context, req proto.Message) (proto.Message, error) {
			for attempt, tries := 1, 1; ; tries++ {
				resp, err := next(ctx, req)
				if err == nil || function.IsPermanent(err) || errors.Is(err, function.ErrBusy) || ctx.Err() != nil || p.MaxAttempts == 1 {
					return resp, err
				}
				// Without a deadline nothing would bound an outage's
				// retries: then an outage counts as an attempt too.
				if _, bounded := ctx.Deadline(); !function.IsUnavailable(err) || !bounded {
					if p.Exhausted(attempt) {
						return resp, err
					}
					attempt++
				}
				wait := p.Backoff(tries)
				if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
					return resp, err
				}
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return resp, err
				}
			}
		}
	}
}

// repeats lets one failure of a kind through per window: the kind is the
// function, the code and the innermost part of the error's text (the part
// after the last ": ", which carries no order id).
type repeats struct {
	window time.Duration
	mu     sync.Mutex
	seen   map[string]*repeat
}

type repeat struct {
	last    time.Time
	skipped int
}

func newRepeats(window time.Duration) *repeats {
	return &repeats{window: window, seen: map[string]*repeat{}}
}

func (r *repeats) allow(fn string, code int, err error) (bool, int) {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	key := fmt.Sprintf("%s %d %s", fn, code, msg)
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	e := r.seen[key]
	if e == nil {
		if len(r.seen) > 1000 { // bounded: forget old kinds
			clear(r.seen)
		}
		r.seen[key] = &repeat{last: now}
		return true, 0
	}
	if now.Sub(e.last) < r.window {
		e.skipped++
		return false, 0
	}
	skipped := e.skipped
	e.last, e.skipped = now, 0
	return true, skipped
}
