package durable_test

import (
	"context"
	"testing"

	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/durable"
	"github.com/orderflow/orderflow/runtime/runtimetest"
	"github.com/orderflow/orderflow/runtime/state"
)

// BenchmarkModify is a KV compare-and-set update (read, change, write with
// the expected revision) on a server that fsyncs every write.
func BenchmarkModify(b *testing.B) {
	js := runtimetest.JetStream(b, runtimetest.Connect(b, runtimetest.StartNATS(b, runtimetest.WithSyncAlways())))
	bk, err := durable.OpenBucket(context.Background(), js, "bench", durable.Config{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := state.Modify(ctx, bk, "k", func(l *ordersv1.StockLevel) error { l.Available++; return nil }); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCommitBatch is a two-key atomic commit: a JetStream atomic batch,
// which an R1 file stream stages in a file store of its own.
func BenchmarkCommitBatch(b *testing.B) {
	js := runtimetest.JetStream(b, runtimetest.Connect(b, runtimetest.StartNATS(b, runtimetest.WithSyncAlways())))
	bk, err := durable.OpenBucket(context.Background(), js, "bench", durable.Config{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var ra, rb uint64
	b.ReportAllocs()
	for b.Loop() {
		if err := bk.Commit(ctx, state.Write{Key: "a", Value: &ordersv1.StockLevel{Available: 1}, Revision: ra}, state.Write{Key: "b", Value: &ordersv1.StockLevel{Available: 1}, Revision: rb}); err != nil {
			b.Fatal(err)
		}
		_, ra, _ = state.Get[ordersv1.StockLevel](ctx, bk, "a")
		_, rb, _ = state.Get[ordersv1.StockLevel](ctx, bk, "b")
	}
}

// BenchmarkAppend is one event appended to the log and acknowledged.
func BenchmarkAppend(b *testing.B) {
	js := runtimetest.JetStream(b, runtimetest.Connect(b, runtimetest.StartNATS(b, runtimetest.WithSyncAlways())))
	log, err := durable.OpenLog(context.Background(), js, durable.Config{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	ev := &ordersv1.StockSold{OrderId: "o-1"}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := log.Append(ctx, state.Event{Subject: "ORDER.o-1.stock_sold", Payload: ev}); err != nil {
			b.Fatal(err)
		}
	}
}
