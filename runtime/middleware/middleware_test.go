package middleware_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/middleware"
	"github.com/orderflow/orderflow/runtime/telemetry"
)

func TestRecover(t *testing.T) {
	var buf bytes.Buffer
	h := middleware.Recover(slog.New(slog.NewTextHandler(&buf, nil)))(func(context.Context, proto.Message) (proto.Message, error) {
		panic("bug")
	})
	_, err := h(context.Background(), nil)
	if !errors.Is(err, middleware.ErrPanic) || function.Code(err) != 500 {
		t.Errorf("Recover = %v, want ErrPanic (500)", err)
	}
	if !strings.Contains(buf.String(), "stack") {
		t.Errorf("panic logged without a stack: %s", buf.String())
	}
}

func TestTimeout(t *testing.T) {
	h := middleware.Timeout(20 * time.Millisecond)(func(ctx context.Context, _ proto.Message) (proto.Message, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	start := time.Now()
	_, err := h(context.Background(), nil)
	if !errors.Is(err, context.DeadlineExceeded) || function.Code(err) != 504 {
		t.Errorf("Timeout = %v, want DeadlineExceeded (504)", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Error("Timeout did not bound the call")
	}
}

func TestLoggingLevels(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{nil, ""}, // debug, below the handler's level
		{function.Invalid("sku", "required"), "level=INFO msg=\"call rejected\""},
		{errors.New("disk on fire"), "level=ERROR msg=\"call failed\""},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		h := middleware.Logging(slog.New(telemetry.LogHandler(slog.NewTextHandler(&buf, nil))))(func(context.Context, proto.Message) (proto.Message, error) {
			return nil, tt.err
		})
		ctx := function.WithCall(context.Background(), function.Call{Service: "orders", Function: "create"})
		function.Annotate(ctx, "order_id", "o-1")
		if _, err := h(ctx, nil); err != tt.err {
			t.Errorf("Logging changed the error: %v", err)
		}
		if tt.want == "" && buf.Len() != 0 || !strings.Contains(buf.String(), tt.want) {
			t.Errorf("error %v logged %q, want %q", tt.err, buf.String(), tt.want)
		}
		if tt.want != "" && (!strings.Contains(buf.String(), "function=orders.create") || !strings.Contains(buf.String(), "order_id=o-1")) {
			t.Errorf("log line lacks the function: %s", buf.String())
		}
	}
}

// The same failure over and over is logged once per window, whatever order
// it is about; a different failure is logged at once.
func TestLoggingBoundsRepeats(t *testing.T) {
	var buf bytes.Buffer
	n := 0
	h := middleware.Logging(slog.New(slog.NewTextHandler(&buf, nil)))(func(context.Context, proto.Message) (proto.Message, error) {
		n++
		if n == 50 {
			return nil, errors.New("publish ORDER.o-50.created: disk on fire")
		}
		return nil, fmt.Errorf("publish ORDER.o-%d.created: maximum bytes exceeded", n)
	})
	ctx := function.WithCall(context.Background(), function.Call{Service: "orders", Function: "create"})
	for range 100 {
		_, _ = h(ctx, nil)
	}
	if lines := strings.Count(buf.String(), "call failed"); lines != 2 {
		t.Errorf("100 failures of two kinds logged %d lines, want 2:\n%s", lines, buf.String())
	}
}
