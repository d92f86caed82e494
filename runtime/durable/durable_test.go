package durable_test

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/durable"
	"github.com/orderflow/orderflow/runtime/runtimetest"
	"github.com/orderflow/orderflow/runtime/state"
)

func openBucket(t *testing.T) *durable.Bucket {
	t.Helper()
	js := runtimetest.JetStream(t, runtimetest.Connect(t, runtimetest.StartNATS(t)))
	b, err := durable.OpenBucket(context.Background(), js, "test", durable.Config{})
	if err != nil {
		t.Fatal(err)
	}
	// Opening again, as every pod does at start, changes nothing.
	if _, err := durable.OpenBucket(context.Background(), js, "test", durable.Config{}); err != nil {
		t.Fatalf("second open: %v", err)
	}
	return b
}

func level(sku string, available int32) *ordersv1.StockLevel {
	return &ordersv1.StockLevel{Sku: sku, Available: available}
}

func TestBucketCompareAndSet(t *testing.T) {
	ctx := context.Background()
	b := openBucket(t)

	if _, _, err := state.Get[ordersv1.StockLevel](ctx, b, "a"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("Get of a missing key = %v, want ErrNotFound", err)
	}
	if _, err := b.Put(ctx, "a", level("a", 1), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put(ctx, "a", level("a", 2), 0); !errors.Is(err, state.ErrConflict) {
		t.Errorf("second create = %v, want ErrConflict", err)
	}
	got, rev, err := state.Get[ordersv1.StockLevel](ctx, b, "a")
	if err != nil || got.GetAvailable() != 1 {
		t.Fatalf("Get = %v, %v", got, err)
	}
	if _, err := b.Put(ctx, "a", level("a", 3), rev); err != nil {
		t.Fatalf("update at the current revision: %v", err)
	}
	if _, err := b.Put(ctx, "a", level("a", 4), rev); !errors.Is(err, state.ErrConflict) {
		t.Errorf("update at a stale revision = %v, want ErrConflict", err)
	}

	// A Modify that decides on no change returns the record and writes
	// nothing.
	_, before, _ := state.Get[ordersv1.StockLevel](ctx, b, "a")
	got, err = state.Modify(ctx, b, "a", func(l *ordersv1.StockLevel, exists bool) error {
		if !exists {
			t.Error("Modify says an existing key does not exist")
		}
		return state.ErrNoChange
	})
	_, after, _ := state.Get[ordersv1.StockLevel](ctx, b, "a")
	if err != nil || got.GetAvailable() != 3 || after != before {
		t.Errorf("no-change Modify = %v, %v; revision %d -> %d", got, err, before, after)
	}
}

func TestModifyRetriesOnConflict(t *testing.T) {
	ctx := context.Background()
	b := openBucket(t)
	const writers, each = 8, 10
	errs := make(chan error, writers)
	for range writers {
		go func() {
			for range each {
				if _, err := state.Modify(ctx, b, "n", func(l *ordersv1.StockLevel, _ bool) error { l.Available++; return nil }); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	got, _, _ := state.Get[ordersv1.StockLevel](ctx, b, "n")
	if got.GetAvailable() != writers*each {
		t.Errorf("after %d concurrent increments the count is %d", writers*each, got.GetAvailable())
	}
}

func TestLogAppendIsIdempotent(t *testing.T) {
	ctx := context.Background()
	js := runtimetest.JetStream(t, runtimetest.Connect(t, runtimetest.StartNATS(t)))
	log, err := durable.OpenLog(ctx, js, durable.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ev := state.Event{Subject: eventSubject("o-1", "created"), ID: "o-1/created", Payload: &ordersv1.OrderCreated{Order: &ordersv1.Order{OrderId: "o-1"}}}
	seq, dup, err := log.Append(ctx, ev)
	if err != nil || dup {
		t.Fatalf("first append: seq %d dup %v err %v", seq, dup, err)
	}
	seq2, dup, err := log.Append(ctx, ev)
	if err != nil || !dup || seq2 != seq {
		t.Errorf("repeat append: seq %d dup %v err %v, want seq %d dup true", seq2, dup, err, seq)
	}
	if _, _, err := log.Append(ctx, state.Event{Subject: eventSubject("o-1", "stock_sold"), ID: "o-1/stock_sold", Payload: &ordersv1.StockSold{OrderId: "o-1"}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := log.Append(ctx, state.Event{Subject: eventSubject("o-2", "created"), ID: "o-2/created", Payload: &ordersv1.OrderCreated{}}); err != nil {
		t.Fatal(err)
	}

	recs, err := log.Read(ctx, eventSubject("o-1", ">"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, r.Subject+" "+r.Type)
	}
	want := []string{eventSubject("o-1", "created") + " orders.v1.OrderCreated", eventSubject("o-1", "stock_sold") + " orders.v1.StockSold"}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("Read = %q, want %q", got, want)
	}
	var created ordersv1.OrderCreated
	if err := proto.Unmarshal(recs[0].Data, &created); err != nil || created.GetOrder().GetOrderId() != "o-1" {
		t.Errorf("payload = %v (%v)", &created, err)
	}
	if recs, err := log.Read(ctx, eventSubject("none", ">")); err != nil || len(recs) != 0 {
		t.Errorf("Read of an unknown order = %v, %v; want nothing", recs, err)
	}
}
