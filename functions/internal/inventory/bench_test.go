package inventory_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/orderflow/orderflow/functions/internal/inventory"
	"github.com/orderflow/orderflow/runtime/durable"
	"github.com/orderflow/orderflow/runtime/runtimetest"
)

// BenchmarkReserveSell is one order's stock effects, reserve then sell, on a
// server that fsyncs every write, by 8 clients over 16 SKUs.
var parallel = 1

func BenchmarkReserveSell(b *testing.B) {
	js := runtimetest.JetStream(b, runtimetest.Connect(b, runtimetest.StartNATS(b, runtimetest.WithSyncAlways())))
	bk, err := durable.OpenBucket(context.Background(), js, inventory.Bucket, durable.Config{})
	if err != nil {
		b.Fatal(err)
	}
	st := inventory.New(bk)
	ctx := context.Background()
	for i := range 16 {
		if _, err := st.Restock(ctx, fmt.Sprintf("S%d", i), 1_000_000, ""); err != nil {
			b.Fatal(err)
		}
	}
	var n atomic.Int64
	b.SetParallelism(parallel)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			id := fmt.Sprintf("o-%d", i)
			if _, err := st.Reserve(ctx, id, items(fmt.Sprintf("S%d", i%16), 1)); err != nil {
				b.Error(err)
				return
			}
			if _, err := st.Sell(ctx, id); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "orders/s")
}
