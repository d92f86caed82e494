package inventory_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/orderflow/orderflow/functions/internal/inventory"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/durable"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/runtimetest"
)

const (
	reserved = ordersv1.ReservationStatus_RESERVATION_STATUS_RESERVED
	rejected = ordersv1.ReservationStatus_RESERVATION_STATUS_REJECTED
	released = ordersv1.ReservationStatus_RESERVATION_STATUS_RELEASED
	sold     = ordersv1.ReservationStatus_RESERVATION_STATUS_SOLD
)

func newStock(t *testing.T) *inventory.Stock {
	t.Helper()
	js := runtimetest.JetStream(t, runtimetest.Connect(t, runtimetest.StartNATS(t)))
	b, err := durable.OpenBucket(context.Background(), js, inventory.Bucket, durable.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return inventory.New(b)
}

func items(kv ...any) []*ordersv1.OrderItem {
	var out []*ordersv1.OrderItem
	for i := 0; i < len(kv); i += 2 {
		out = append(out, &ordersv1.OrderItem{Sku: kv[i].(string), Quantity: int32(kv[i+1].(int))})
	}
	return out
}

type levels struct{ available, reserved, sold int32 }

func checkLevel(t *testing.T, st *inventory.Stock, sku string, want levels) {
	t.Helper()
	l, err := st.Level(context.Background(), sku)
	if err != nil {
		t.Fatal(err)
	}
	if got := (levels{l.Available, l.Reserved, l.Sold}); got != want {
		t.Errorf("%s: got %+v, want %+v", sku, got, want)
	}
	// reserved is exactly the held entries, ledger by ledger.
	ls, err := inventory.Ledgers(context.Background(), st, sku)
	if err != nil {
		t.Fatal(err)
	}
	for n, lv := range ls {
		var inHolds int32
		for _, h := range lv.GetHolds() {
			if h.State == ordersv1.HoldState_HOLD_STATE_HELD {
				inHolds += h.Quantity
			}
		}
		if inHolds != lv.GetReserved() {
			t.Errorf("%s ledger %d: reserved %d, but the held entries sum to %d", sku, n, lv.GetReserved(), inHolds)
		}
	}
}

func TestReserveSellRelease(t *testing.T) {
	ctx := context.Background()
	st := newStock(t)
	mustRestock(t, st, "A", 10)
	mustRestock(t, st, "B", 1)

	r, err := st.Reserve(ctx, "o-1", items("A", 3, "B", 1))
	if err != nil || r.Status != reserved {
		t.Fatalf("Reserve = %v, %v", r, err)
	}
	checkLevel(t, st, "A", levels{7, 3, 0})
	checkLevel(t, st, "B", levels{0, 1, 0})

	// A repeat (a redelivered message) changes nothing.
	if r, err := st.Reserve(ctx, "o-1", items("A", 3, "B", 1)); err != nil || r.Status != reserved {
		t.Fatalf("repeat Reserve = %v, %v", r, err)
	}
	checkLevel(t, st, "A", levels{7, 3, 0})

	// All or nothing: B is short, so A is not touched either.
	r, err = st.Reserve(ctx, "o-2", items("A", 1, "B", 1))
	if err != nil || r.Status != rejected || r.Reason == "" {
		t.Fatalf("short Reserve = %v, %v; want rejected with a reason", r, err)
	}
	checkLevel(t, st, "A", levels{7, 3, 0})
	// A rejection stays one, even after a restock.
	mustRestock(t, st, "B", 5)
	if r, _ := st.Reserve(ctx, "o-2", items("A", 1, "B", 1)); r.Status != rejected {
		t.Errorf("repeat of a rejected Reserve = %v", r.Status)
	}

	if r, err := st.Sell(ctx, "o-1"); err != nil || r.Status != sold {
		t.Fatalf("Sell = %v, %v", r, err)
	}
	checkLevel(t, st, "A", levels{7, 0, 3})
	checkLevel(t, st, "B", levels{5, 0, 1})
	if r, err := st.Sell(ctx, "o-1"); err != nil || r.Status != sold {
		t.Fatalf("repeat Sell = %v, %v", r, err)
	}
	checkLevel(t, st, "A", levels{7, 0, 3})
	// A cancellation that lost the race to the sale takes the units back.
	if r, err := st.Release(ctx, "o-1", "cancelled"); err != nil || r.Status != released {
		t.Fatalf("Release of a sold order = %v, %v", r, err)
	}
	checkLevel(t, st, "A", levels{10, 0, 0})
	checkLevel(t, st, "B", levels{6, 0, 0})
	if _, err := st.Sell(ctx, "o-1"); !errors.Is(err, inventory.ErrWrongState) {
		t.Errorf("Sell of a released order = %v, want ErrWrongState", err)
	}

	if _, err := st.Reserve(ctx, "o-3", items("A", 2)); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if r, err := st.Release(ctx, "o-3", "payment declined"); err != nil || r.Status != released {
			t.Fatalf("Release = %v, %v", r, err)
		}
	}
	checkLevel(t, st, "A", levels{10, 0, 0})
	if _, err := st.Sell(ctx, "o-3"); !errors.Is(err, inventory.ErrWrongState) {
		t.Errorf("Sell of a released order = %v, want ErrWrongState", err)
	}
}

func TestReleaseBeforeReserveWins(t *testing.T) {
	ctx := context.Background()
	st := newStock(t)
	mustRestock(t, st, "A", 5)
	// A compensation that overtakes the reservation records the release, so
	// the late reservation holds nothing.
	if r, err := st.Release(ctx, "o-1", "cancelled"); err != nil || r.Status != released {
		t.Fatalf("Release = %v, %v", r, err)
	}
	if r, err := st.Reserve(ctx, "o-1", items("A", 2)); err != nil || r.Status != released {
		t.Fatalf("late Reserve = %v, %v; want the release to stand", r, err)
	}
	checkLevel(t, st, "A", levels{5, 0, 0})
}

// A release that overtakes a reserve still in flight: whatever the order,
// no unit stays held and stock is conserved.
func TestReleaseRacesReserve(t *testing.T) {
	ctx := context.Background()
	st := newStock(t)
	mustRestock(t, st, "A", 1000)
	mustRestock(t, st, "B", 1000)
	for i := range 30 {
		id := fmt.Sprintf("o-%d", i)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = st.Reserve(ctx, id, items("A", 1, "B", 2))
		}()
		if _, err := st.Release(ctx, id, "cancelled"); err != nil {
			t.Fatal(err)
		}
		<-done
		// A reserve delivered again after both must change nothing either.
		if r, err := st.Reserve(ctx, id, items("A", 1, "B", 2)); err != nil || r.Status != released {
			t.Fatalf("%s: reserve after release = %v, %v", id, r, err)
		}
	}
	checkLevel(t, st, "A", levels{1000, 0, 0})
	checkLevel(t, st, "B", levels{1000, 0, 0})
}

// Two releases of one order at once (a redelivery while the first still
// runs): the units come back once.
func TestConcurrentReleases(t *testing.T) {
	ctx := context.Background()
	st := newStock(t)
	mustRestock(t, st, "A", 100)
	for i := range 20 {
		id := fmt.Sprintf("o-%d", i)
		if _, err := st.Reserve(ctx, id, items("A", 2)); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if _, err := st.Sell(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() {
				if _, err := st.Release(ctx, id, "cancelled"); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	checkLevel(t, st, "A", levels{100, 0, 0})
}

// A release racing a sale: the units end back in available either way.
func TestReleaseRacesSell(t *testing.T) {
	ctx := context.Background()
	st := newStock(t)
	mustRestock(t, st, "A", 1000)
	mustRestock(t, st, "B", 1000)
	for i := range 30 {
		id := fmt.Sprintf("o-%d", i)
		if _, err := st.Reserve(ctx, id, items("A", 1, "B", 2)); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = st.Sell(ctx, id)
		}()
		if _, err := st.Release(ctx, id, "cancelled"); err != nil {
			t.Fatal(err)
		}
		<-done
		if r, _ := st.Reservation(ctx, id); r.Status != released {
			t.Fatalf("%s ended %s, want released", id, r.Status)
		}
	}
	checkLevel(t, st, "A", levels{1000, 0, 0})
	checkLevel(t, st, "B", levels{1000, 0, 0})
}

func TestUnknownSKU(t *testing.T) {
	ctx := context.Background()
	st := newStock(t)
	if _, err := st.Level(ctx, "nope"); !errors.Is(err, function.ErrNotFound) {
		t.Errorf("Level(unknown) = %v, want ErrNotFound", err)
	}
	r, err := st.Reserve(ctx, "o-1", items("nope", 1))
	if err != nil || r.Status != rejected {
		t.Errorf("Reserve(unknown SKU) = %v, %v; want rejected", r, err)
	}
}

// Many orders race for little stock: stock is conserved, never negative, and
// exactly as many orders win as there are units.
func TestConcurrentReservationsConserveStock(t *testing.T) {
	ctx := context.Background()
	st := newStock(t)
	const units, orders = 20, 60
	mustRestock(t, st, "HOT", units)
	mustRestock(t, st, "COLD", orders)

	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for i := range orders {
		wg.Go(func() {
			r, err := st.Reserve(ctx, fmt.Sprintf("o-%d", i), items("COLD", 1, "HOT", 1))
			if err != nil {
				t.Errorf("order %d: %v", i, err)
				return
			}
			if r.Status == reserved {
				mu.Lock()
				won++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if won != units {
		t.Errorf("%d orders reserved, want %d", won, units)
	}
	checkLevel(t, st, "HOT", levels{0, units, 0})
	checkLevel(t, st, "COLD", levels{orders - units, units, 0})
}

func TestRestockBounds(t *testing.T) {
	st := newStock(t)
	mustRestock(t, st, "A", 1<<30)
	if _, err := st.Restock(context.Background(), "A", 1<<30, ""); function.Code(err) != 400 {
		t.Errorf("Restock past int32 = %v, want a 400", err)
	}
}

func mustRestock(t *testing.T, st *inventory.Stock, sku string, n int32) {
	t.Helper()
	if _, err := st.Restock(context.Background(), sku, n, ""); err != nil {
		t.Fatal(err)
	}
}

// A restock with a key adds once, however often it is repeated; without a
// key every call adds. Keys are remembered a day, at most 64 per SKU.
func TestRestockWithAKeyAddsOnce(t *testing.T) {
	st := newStock(t)
	ctx := context.Background()
	for range 3 {
		if _, err := st.Restock(ctx, "A", 10, "r-1"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Restock(ctx, "A", 5, "r-2"); err != nil {
		t.Fatal(err)
	}
	mustRestock(t, st, "A", 1)
	mustRestock(t, st, "A", 1)
	l, err := st.Level(ctx, "A")
	if err != nil {
		t.Fatal(err)
	}
	if l.GetAvailable() != 17 {
		t.Errorf("available %d, want 10 + 5 + 1 + 1", l.GetAvailable())
	}
	for i := range 100 {
		if _, err := st.Restock(ctx, "A", 1, fmt.Sprintf("k-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if l, _ := st.Level(ctx, "A"); len(l.GetRestocks()) > 64 || l.GetAvailable() != 117 {
		t.Errorf("%d keys kept, %d available; want at most 64 and 117", len(l.GetRestocks()), l.GetAvailable())
	}
}
