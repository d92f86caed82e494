package middleware_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/middleware"
	"github.com/orderflow/orderflow/runtime/retry"
)

// BenchmarkChain is the host's request chain around a function that does
// nothing: what every call pays for logging, recovery, retry and timeout.
func BenchmarkChain(b *testing.B) {
	log := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	resp := &ordersv1.GetStockResponse{}
	noop := func(context.Context, proto.Message) (proto.Message, error) { return resp, nil }
	ctx := function.WithCall(context.Background(), function.Call{Service: "inventory", Function: "get"})
	req := &ordersv1.GetStockRequest{Sku: "SKU-1"}
	for _, bc := range []struct {
		name string
		mw   []function.Middleware
	}{
		{"none", nil},
		{"recover+retry", []function.Middleware{middleware.Recover(log), middleware.Retry(retry.Default)}},
		{"logging+recover+timeout+retry", []function.Middleware{middleware.Logging(log), middleware.Recover(log), middleware.Timeout(5 * time.Second), middleware.Retry(retry.Default)}},
	} {
		h := function.Chain(noop, bc.mw...)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := h(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
