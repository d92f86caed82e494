package host_test

import (
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/protobuf/proto"

	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/host"
	"github.com/orderflow/orderflow/runtime/runtimetest"
)

// BenchmarkRequest is the request path through the host (decode, middleware,
// function, encode, reply) over a real server, 4 clients per core, with
// tracing compiled out, off (the default: a no-op provider) and always on
// (the SDK sampling every span, exported to nowhere in batches).
func BenchmarkRequest(b *testing.B) {
	always := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	b.Cleanup(func() { _ = always.Shutdown(b.Context()) })
	for _, bc := range []struct {
		name string
		opt  host.Option
	}{
		{"tracing=removed", host.WithoutTracing()},
		{"tracing=none", host.WithTracerProvider(nil)},
		{"tracing=always_on", host.WithTracerProvider(always)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			nc := runtimetest.Connect(b, runtimetest.StartNATS(b))
			startHost(b, nc, []function.Definition{function.New("get", lookup)}, host.WithWorkers(8), bc.opt)
			data, _ := proto.Marshal(&ordersv1.GetStockRequest{Sku: "SKU-1"})
			b.SetParallelism(4) // 4 clients per core: 8 on this 2-core machine
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := nc.Request("stock.get", data, 5*time.Second); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
	}
}
