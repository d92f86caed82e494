package inventory

import (
	"context"
	"testing"
	"time"

	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/durable"
	"github.com/orderflow/orderflow/runtime/runtimetest"
)

// Released entries are dropped with the first write to their level after
// TombstoneTTL, and not before.
func TestTombstonesExpire(t *testing.T) {
	ctx := context.Background()
	js := runtimetest.JetStream(t, runtimetest.Connect(t, runtimetest.StartNATS(t)))
	b, err := durable.OpenBucket(ctx, js, Bucket, durable.Config{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	st := &Stock{s: b, now: func() time.Time { return now }}
	if _, err := st.Restock(ctx, "A", 10, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Reserve(ctx, "o-1", []*ordersv1.OrderItem{{Sku: "A", Quantity: 2}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Release(ctx, "o-1", "cancelled"); err != nil {
		t.Fatal(err)
	}
	entries := func() int {
		l, err := st.Level(ctx, "A")
		if err != nil {
			t.Fatal(err)
		}
		return len(l.Holds)
	}
	if entries() != 1 {
		t.Fatal("release left no tombstone")
	}
	now = now.Add(TombstoneTTL - time.Minute)
	if _, err := st.Restock(ctx, "A", 1, ""); err != nil {
		t.Fatal(err)
	}
	if entries() != 1 {
		t.Error("tombstone dropped before its time")
	}
	now = now.Add(2 * time.Minute)
	if _, err := st.Restock(ctx, "A", 1, ""); err != nil {
		t.Fatal(err)
	}
	if entries() != 0 {
		t.Error("tombstone kept after its time")
	}
}

// A late duplicate reserve that read no record (a server just restarted can
// answer so) finds the first hold already sold, so it places a hold again.
// Whoever meets that stray hold gives it back: the duplicate itself when it
// reads the record, a sale, or a release after a cancellation.
func TestStrayHoldsAreGivenBack(t *testing.T) {
	ctx := context.Background()
	js := runtimetest.JetStream(t, runtimetest.Connect(t, runtimetest.StartNATS(t)))
	b, err := durable.OpenBucket(ctx, js, Bucket, durable.Config{})
	if err != nil {
		t.Fatal(err)
	}
	st := New(b)
	if _, err := st.Restock(ctx, "A", 100, ""); err != nil {
		t.Fatal(err)
	}
	item := []*ordersv1.OrderItem{{Sku: "A", Quantity: 3}}
	want := func(available, reservedU, soldU int32) {
		t.Helper()
		l, err := st.Level(ctx, "A")
		if err != nil {
			t.Fatal(err)
		}
		if l.Available != available || l.Reserved != reservedU || l.Sold != soldU {
			t.Fatalf("A: %d/%d/%d, want %d/%d/%d", l.Available, l.Reserved, l.Sold, available, reservedU, soldU)
		}
	}
	stray := func(id string) {
		t.Helper()
		if _, err := st.hold(ctx, id, item[0], "late"); err != nil {
			t.Fatal(err)
		}
	}

	// The duplicate continues and reads the record: it gives its hold back.
	if _, err := st.Reserve(ctx, "o-1", item); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Sell(ctx, "o-1"); err != nil {
		t.Fatal(err)
	}
	stray("o-1")
	want(94, 3, 3)
	if r, err := st.Reserve(ctx, "o-1", item); err != nil || r.Status != sold {
		t.Fatalf("late reserve = %v, %v", r, err)
	}
	want(97, 0, 3)

	// A sale still under way meets it.
	if _, err := st.Reserve(ctx, "o-2", item); err != nil {
		t.Fatal(err)
	}
	l, _ := st.Level(ctx, "A")
	l.Reserved -= 3
	l.Sold += 3
	delete(l.Holds, "o-2") // the sale's first write, as if it then crashed
	rev, err := b.Get(ctx, "sku.A", &ordersv1.StockLevel{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "sku.A", l, rev); err != nil {
		t.Fatal(err)
	}
	stray("o-2")
	if _, err := st.Sell(ctx, "o-2"); err != nil {
		t.Fatal(err)
	}
	want(94, 0, 6)

	// A release after a cancellation meets it: the stray goes back, and so
	// do the sold units.
	if _, err := st.Reserve(ctx, "o-3", item); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Sell(ctx, "o-3"); err != nil {
		t.Fatal(err)
	}
	stray("o-3")
	if r, err := st.Release(ctx, "o-3", "cancelled"); err != nil || r.Status != released {
		t.Fatalf("release = %v, %v", r, err)
	}
	want(94, 0, 6)
}
