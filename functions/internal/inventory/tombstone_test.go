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
	if _, err := st.Restock(ctx, "A", 10); err != nil {
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
	if _, err := st.Restock(ctx, "A", 1); err != nil {
		t.Fatal(err)
	}
	if entries() != 1 {
		t.Error("tombstone dropped before its time")
	}
	now = now.Add(2 * time.Minute)
	if _, err := st.Restock(ctx, "A", 1); err != nil {
		t.Fatal(err)
	}
	if entries() != 0 {
		t.Error("tombstone kept after its time")
	}
}
