package durable_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

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
		if _, err := state.Modify(ctx, bk, "k", func(l *ordersv1.StockLevel, _ bool) error { l.Available++; return nil }); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAtomicBatch is a JetStream atomic batch of two messages, which
// a multi-key commit would be. An R1 file stream stages every batch in a
// file store of its own: compare with BenchmarkModify, which is why the
// stock ledger writes one key at a time.
func BenchmarkAtomicBatch(b *testing.B) {
	nc := runtimetest.Connect(b, runtimetest.StartNATS(b, runtimetest.WithSyncAlways()))
	js := runtimetest.JetStream(b, nc)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "B", Subjects: []string{"b.>"}, AllowAtomicPublish: true}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		msgs := []*nats.Msg{nats.NewMsg("b.a"), nats.NewMsg("b.b")}
		if _, err := jetstreamext.PublishMsgBatch(ctx, js, msgs, jetstreamext.BatchFlowControl{}); err != nil {
			b.Fatal(err)
		}
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
		if _, _, err := log.Append(ctx, state.Event{Subject: eventSubject("o-1", "stock_sold"), Payload: ev}); err != nil {
			b.Fatal(err)
		}
	}
}
