package inventory

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/durable"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/runtimetest"
	"github.com/orderflow/orderflow/runtime/state"
)

func newTestStock(t *testing.T) (*Stock, *durable.Bucket) {
	t.Helper()
	js := runtimetest.JetStream(t, runtimetest.Connect(t, runtimetest.StartNATS(t)))
	b, err := durable.OpenBucket(context.Background(), js, Bucket, durable.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return New(b), b
}

func wantLevel(t *testing.T, st *Stock, sku string, available, reservedU, soldU int32) {
	t.Helper()
	l, err := st.Level(context.Background(), sku)
	if err != nil {
		t.Fatal(err)
	}
	if l.Available != available || l.Reserved != reservedU || l.Sold != soldU {
		t.Fatalf("%s: %d/%d/%d, want %d/%d/%d", sku, l.Available, l.Reserved, l.Sold, available, reservedU, soldU)
	}
}

// A late duplicate reserve that read no record (a server just restarted can
// answer so) finds the first hold already sold, so it places a hold again.
// Whoever meets that stray hold gives it back: the duplicate itself when it
// reads the record, a sale, or a release after a cancellation.
func TestStrayHoldsAreGivenBack(t *testing.T) {
	ctx := context.Background()
	st, b := newTestStock(t)
	if _, err := st.Restock(ctx, "A", 100, ""); err != nil {
		t.Fatal(err)
	}
	item := []*ordersv1.OrderItem{{Sku: "A", Quantity: 3}}
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
	wantLevel(t, st, "A", 94, 3, 3)
	if r, err := st.Reserve(ctx, "o-1", item); err != nil || r.Status != sold {
		t.Fatalf("late reserve = %v, %v", r, err)
	}
	wantLevel(t, st, "A", 97, 0, 3)

	// A sale that stopped halfway (SELLING, its line sold) meets it when it
	// is done again.
	if _, err := st.Reserve(ctx, "o-2", item); err != nil {
		t.Fatal(err)
	}
	r, rev, err := st.record(ctx, "o-2")
	if err != nil {
		t.Fatal(err)
	}
	r.Status = selling
	if _, err := b.Put(ctx, reservationKey("o-2"), r, rev); err != nil {
		t.Fatal(err)
	}
	key, _ := st.homeKey(ctx, "A", "o-2")
	if err := st.ledger(ctx, key, func(l *ordersv1.StockLevel, _ bool) error {
		h := l.Holds["o-2"]
		l.Reserved -= h.Quantity
		l.Sold += h.Quantity
		delete(l.Holds, "o-2")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	stray("o-2")
	if r, err := st.Sell(ctx, "o-2"); err != nil || r.Status != sold {
		t.Fatalf("sell = %v, %v", r, err)
	}
	wantLevel(t, st, "A", 94, 0, 6)

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
	wantLevel(t, st, "A", 94, 0, 6)
}

// An intent left by a step that stopped halfway is completed by the next
// step that meets it, line by line and once: a release that meets SELLING
// completes the sale first; a release from sold that stopped after one line
// does the rest, and no line twice.
func TestIntentsAreCompletedOnce(t *testing.T) {
	ctx := context.Background()
	st, b := newTestStock(t)
	for _, sku := range []string{"A", "B"} {
		if _, err := st.Restock(ctx, sku, 50, ""); err != nil {
			t.Fatal(err)
		}
	}
	lines := []*ordersv1.OrderItem{{Sku: "A", Quantity: 2}, {Sku: "B", Quantity: 3}}
	setStatus := func(id string, s ordersv1.ReservationStatus, fromSold bool) {
		t.Helper()
		r, rev, err := st.record(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		r.Status, r.FromSold = s, fromSold
		if _, err := b.Put(ctx, reservationKey(id), r, rev); err != nil {
			t.Fatal(err)
		}
	}

	// SELLING, nothing moved yet; a release comes.
	if _, err := st.Reserve(ctx, "o-1", lines); err != nil {
		t.Fatal(err)
	}
	setStatus("o-1", selling, false)
	if r, err := st.Release(ctx, "o-1", "cancelled"); err != nil || r.Status != released {
		t.Fatalf("release over SELLING = %v, %v", r, err)
	}
	wantLevel(t, st, "A", 50, 0, 0)
	wantLevel(t, st, "B", 50, 0, 0)

	// Sold, then a release from sold that did line A and stopped.
	if _, err := st.Reserve(ctx, "o-2", lines); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Sell(ctx, "o-2"); err != nil {
		t.Fatal(err)
	}
	setStatus("o-2", releasing, true)
	key, _ := st.homeKey(ctx, "A", "o-2")
	if err := st.ledger(ctx, key, func(l *ordersv1.StockLevel, _ bool) error {
		return takeBackSold(l, "o-2", lines[0], st.now())
	}); err != nil {
		t.Fatal(err)
	}
	wantLevel(t, st, "A", 50, 0, 0)
	wantLevel(t, st, "B", 47, 0, 3)
	for range 2 { // and once more: a repeat changes nothing
		if r, err := st.Release(ctx, "o-2", "cancelled"); err != nil || r.Status != released {
			t.Fatalf("release = %v, %v", r, err)
		}
		wantLevel(t, st, "A", 50, 0, 0)
		wantLevel(t, st, "B", 50, 0, 0)
	}
	// The RETURNED marks went with the release.
	noEntries := func() {
		t.Helper()
		for _, sku := range []string{"A", "B"} {
			ls, _ := Ledgers(ctx, st, sku)
			for _, l := range ls {
				if len(l.GetHolds()) != 0 {
					t.Errorf("%s: entries left after the release: %v", sku, l.GetHolds())
				}
			}
		}
	}
	noEntries()

	// A releaser that read RELEASING and was delayed until another had
	// ended the release and removed its marks takes nothing back again.
	if _, err := st.Reserve(ctx, "o-3", lines); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Sell(ctx, "o-3"); err != nil {
		t.Fatal(err)
	}
	setStatus("o-3", releasing, true)
	stale, staleRev, err := st.record(ctx, "o-3")
	if err != nil {
		t.Fatal(err)
	}
	if r, err := st.Release(ctx, "o-3", "cancelled"); err != nil || r.Status != released {
		t.Fatalf("release = %v, %v", r, err)
	}
	if r, err := st.completeRelease(ctx, "o-3", stale, staleRev); err != nil || r.Status != released {
		t.Fatalf("stale release = %v, %v; want the ended release", r, err)
	}
	wantLevel(t, st, "A", 50, 0, 0)
	wantLevel(t, st, "B", 50, 0, 0)
	noEntries()

	// Marks left by a releaser that stopped after RELEASED go with the
	// next delivery of the release.
	if _, err := st.Reserve(ctx, "o-4", lines); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Sell(ctx, "o-4"); err != nil {
		t.Fatal(err)
	}
	setStatus("o-4", releasing, true)
	for _, it := range lines {
		key, _ := st.homeKey(ctx, it.GetSku(), "o-4")
		if err := st.ledger(ctx, key, func(l *ordersv1.StockLevel, _ bool) error {
			return takeBackSold(l, "o-4", it, st.now())
		}); err != nil {
			t.Fatal(err)
		}
	}
	setStatus("o-4", released, true)
	if r, err := st.Release(ctx, "o-4", "cancelled"); err != nil || r.Status != released {
		t.Fatalf("release = %v, %v", r, err)
	}
	wantLevel(t, st, "A", 50, 0, 0)
	wantLevel(t, st, "B", 50, 0, 0)
	noEntries()
}

// A transfer interrupted after the giving ledger took the units (a crash)
// loses nothing: the units count as available meanwhile, and whoever meets
// it later credits them, once, even working from a read taken before the
// credit and after later transfers.
func TestInterruptedTransferIsCompleted(t *testing.T) {
	ctx := context.Background()
	st, _ := newTestStock(t)
	now := time.Unix(1_800_000_000, 0)
	st.now = func() time.Time { return now }
	if _, err := st.Restock(ctx, "A", 160, ""); err != nil {
		t.Fatal(err)
	}
	l, _ := st.layout(ctx, "A")
	// The first write of a transfer from ledger 0 to ledger 1, then a crash.
	if err := st.ledger(ctx, l.keys[0], func(lv *ordersv1.StockLevel, _ bool) error {
		lv.Available -= 5
		lv.TransferSeq = 1
		lv.TransfersOut = map[int32]*ordersv1.Transfer{1: {Seq: 1, Quantity: 5, StartedUnix: now.Unix()}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	wantLevel(t, st, "A", 160, 0, 0)
	now = now.Add(transferStale + time.Second)
	stale, err := st.ledgers(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // a second finisher working from the same read credits nothing
		if err := st.finishTransfers(ctx, l, stale, false); err != nil {
			t.Fatal(err)
		}
	}
	wantLevel(t, st, "A", 160, 0, 0)
	ls, _ := st.ledgers(ctx, l)
	if got := ls[0].GetTransfersOut(); len(got) != 0 || ls[1].GetAvailable() != 25 || ls[1].GetCredited()[0] != 1 {
		t.Errorf("after finishing: ledger 0 out %v, ledger 1 available %d credited %v, want none, 25 and {0: 1}", got, ls[1].GetAvailable(), ls[1].GetCredited())
	}

	// Two more transfers between the same ledgers, the second interrupted;
	// a finisher still holding the first read credits nothing of them.
	if moved, err := st.transfer(ctx, l, nil, 0, 1, 3); err != nil || moved != 3 {
		t.Fatalf("transfer = %d, %v; want 3", moved, err)
	}
	if err := st.ledger(ctx, l.keys[0], func(lv *ordersv1.StockLevel, _ bool) error {
		lv.Available -= 2
		lv.TransferSeq++
		lv.TransfersOut = map[int32]*ordersv1.Transfer{1: {Seq: lv.TransferSeq, Quantity: 2, StartedUnix: now.Unix()}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := st.finishTransfers(ctx, l, stale, false); err != nil {
		t.Fatal(err)
	}
	wantLevel(t, st, "A", 160, 0, 0)
	// A new transfer on the same pair completes the pending one first.
	if moved, err := st.transfer(ctx, l, nil, 0, 1, 1); err != nil || moved != 1 {
		t.Fatalf("transfer = %d, %v; want 1", moved, err)
	}
	wantLevel(t, st, "A", 160, 0, 0)
	ls, _ = st.ledgers(ctx, l)
	if ls[1].GetAvailable() != 31 || ls[1].GetCredited()[0] != 4 {
		t.Errorf("after four transfers: ledger 1 available %d credited %v, want 31 and {0: 4}", ls[1].GetAvailable(), ls[1].GetCredited())
	}
	// The last one is credited and left for the giver to forget in its
	// next transfer to ledger 1, which takes no extra write.
	if out := ls[0].GetTransfersOut(); len(out) > 1 || len(out) == 1 && out[1].GetSeq() != 4 {
		t.Errorf("ledger 0 out %v, want at most the credited transfer 4", out)
	}
	if moved, err := st.transfer(ctx, l, ls[1], 0, 1, 1); err != nil || moved != 1 {
		t.Fatalf("transfer = %d, %v; want 1", moved, err)
	}
	wantLevel(t, st, "A", 160, 0, 0)
	ls, _ = st.ledgers(ctx, l)
	if out := ls[0].GetTransfersOut(); len(out) != 1 || out[1].GetSeq() != 5 || ls[1].GetCredited()[0] != 5 {
		t.Errorf("ledger 0 out %v, ledger 1 credited %v; want transfer 5 credited", out, ls[1].GetCredited())
	}
}

// A SKU stocked before sub-ledgers keeps its single record "sku.<sku>",
// holds and tombstones included, and works as before.
func TestOldLayoutIsRead(t *testing.T) {
	ctx := context.Background()
	st, b := newTestStock(t)
	old := &ordersv1.StockLevel{Sku: "OLD", Available: 7, Reserved: 2, Sold: 1, Holds: map[string]*ordersv1.Hold{
		"o-1": {Quantity: 2, State: held, Attempt: "a-1"},
		"o-0": {Quantity: 1, State: tomb, ReleasedUnix: time.Now().Unix()},
	}}
	if _, err := b.Put(ctx, "sku.OLD", old, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put(ctx, reservationKey("o-1"), &ordersv1.Reservation{OrderId: "o-1", Status: reserved,
		Items: []*ordersv1.OrderItem{{Sku: "OLD", Quantity: 2}}, Attempts: map[string]string{"OLD": "a-1"}}, 0); err != nil {
		t.Fatal(err)
	}
	wantLevel(t, st, "OLD", 7, 2, 1)
	if _, err := st.Sell(ctx, "o-1"); err != nil {
		t.Fatal(err)
	}
	if r, err := st.Reserve(ctx, "o-2", []*ordersv1.OrderItem{{Sku: "OLD", Quantity: 3}}); err != nil || r.Status != reserved {
		t.Fatalf("reserve on the old layout = %v, %v", r, err)
	}
	wantLevel(t, st, "OLD", 4, 3, 3)
	if _, err := b.Get(ctx, "sku.OLD.0", &ordersv1.StockLevel{}); err == nil {
		t.Error("a SKU of the old layout got sub-ledgers")
	}
}

// 20,000 holds and cancellations through one SKU: every ledger stays
// small (its entries are the orders in flight, never the history), and
// the SKU still reserves and sells correctly afterwards.
func TestHotSKULedgersStayBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("20,000 orders")
	}
	ctx := context.Background()
	st, b := newTestStock(t)
	const orders, workers = 20_000, 32
	if _, err := st.Restock(ctx, "HOT", 100_000, ""); err != nil {
		t.Fatal(err)
	}
	next := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	maxSize := 0
	measure := func() {
		ls, err := Ledgers(ctx, st, "HOT")
		if err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, l := range ls {
			maxSize = max(maxSize, proto.Size(l))
		}
	}
	for range workers {
		wg.Go(func() {
			for i := range next {
				id := fmt.Sprintf("o-%d", i)
				if _, err := st.Reserve(ctx, id, []*ordersv1.OrderItem{{Sku: "HOT", Quantity: 1}}); err != nil {
					t.Error(err)
					return
				}
				if i%2 == 0 {
					_, err := st.Release(ctx, id, "cancelled")
					if err != nil {
						t.Error(err)
						return
					}
				} else if _, err := st.Sell(ctx, id); err != nil {
					t.Error(err)
					return
				}
				if i%1000 == 0 {
					measure()
				}
			}
		})
	}
	for i := range orders {
		next <- i
	}
	close(next)
	wg.Wait()
	measure()
	if maxSize > 4096 {
		t.Errorf("a ledger reached %d bytes, want at most 4 KiB", maxSize)
	}
	wantLevel(t, st, "HOT", 100_000-orders/2, 0, orders/2)
	// Still correct: a reserve, a sale and a release.
	if _, err := st.Reserve(ctx, "after", []*ordersv1.OrderItem{{Sku: "HOT", Quantity: 5}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Sell(ctx, "after"); err != nil {
		t.Fatal(err)
	}
	wantLevel(t, st, "HOT", 100_000-orders/2-5, 0, orders/2+5)
	var rec ordersv1.StockLevel
	if _, err := b.Get(ctx, "sku.HOT.0", &rec); err != nil || len(rec.GetHolds()) != 0 {
		t.Errorf("ledger 0 at rest: %d entries (%v)", len(rec.GetHolds()), err)
	}
	t.Logf("largest ledger seen: %d bytes", maxSize)
}

// The largest ledger the code can write fits in 4 KiB: 64-byte SKU and
// order ids, MaxHolds entries, every restock remembered, a transfer out to
// and a credit from every other ledger, every number at its widest (times
// in the year 2200).
func TestWorstCaseLedgerFits(t *testing.T) {
	at := time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	id := func(prefix string, n int) string { return fmt.Sprintf("%s%0*d", prefix, 64-len(prefix), n) }
	l := &ordersv1.StockLevel{
		Sku: id("S", 0), Available: math.MaxInt32, Reserved: math.MaxInt32, Sold: math.MaxInt32,
		Holds: map[string]*ordersv1.Hold{}, Restocks: map[string]int64{},
		TransfersOut: map[int32]*ordersv1.Transfer{}, Credited: map[int32]uint64{}, TransferSeq: math.MaxUint64,
	}
	for n := range MaxHolds {
		l.Holds[id("o", n)] = &ordersv1.Hold{Quantity: math.MaxInt32, State: returned, Attempt: newAttempt(), ReleasedUnix: at}
	}
	for n := range maxRestocks {
		l.Restocks[sha256Hex(fmt.Sprint(n))] = at
	}
	for n := range int32(SubLedgers - 1) {
		l.TransfersOut[n] = &ordersv1.Transfer{Seq: math.MaxUint64, Quantity: math.MaxInt32, StartedUnix: at}
		l.Credited[n] = math.MaxUint64
	}
	if got := proto.Size(l); got > 4096 {
		t.Errorf("worst-case ledger: %d bytes, want at most 4096 (lower MaxHolds)", got)
	} else {
		t.Logf("worst-case ledger: %d bytes", got)
	}
}

// A ledger with MaxHolds orders in flight makes the next reserve at it
// wait, not grow: it goes ahead as soon as one of them is sold.
func TestFullLedgerWaitsForRoom(t *testing.T) {
	ctx := context.Background()
	st, _ := newTestStock(t)
	if _, err := st.Restock(ctx, "A", 8000, ""); err != nil {
		t.Fatal(err)
	}
	l, _ := st.layout(ctx, "A")
	// Order ids that all live at ledger 0.
	var ids []string
	for n := 0; len(ids) < MaxHolds+1; n++ {
		if id := fmt.Sprintf("o-%d", n); l.home(id) == 0 {
			ids = append(ids, id)
		}
	}
	item := []*ordersv1.OrderItem{{Sku: "A", Quantity: 1}}
	for _, id := range ids[:MaxHolds] {
		if _, err := st.Reserve(ctx, id, item); err != nil {
			t.Fatal(err)
		}
	}
	// A call whose time runs out first fails as unavailable: the host
	// waits for room without spending the step's attempts.
	busy, cancelBusy := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err := st.Reserve(busy, ids[MaxHolds], item)
	cancelBusy()
	if !errors.Is(err, ErrLedgerFull) || !function.IsUnavailable(err) {
		t.Fatalf("reserve at a full ledger out of time: %v, want ErrLedgerFull and unavailable", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := st.Reserve(ctx, ids[MaxHolds], item)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("reserve at a full ledger returned at once: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := st.Sell(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reserve still waiting after a sale made room")
	}
	ls, _ := st.ledgers(ctx, l)
	if got := inFlight(ls[0]); got != MaxHolds {
		t.Errorf("ledger 0: %d orders in flight, want %d", got, MaxHolds)
	}
	wantLevel(t, st, "A", 8000-MaxHolds-1, MaxHolds, 1)

	// One that finds no room in time fails, transiently, holding nothing.
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	var extra string
	for n := 1_000_000; extra == ""; n++ {
		if id := fmt.Sprintf("o-%d", n); l.home(id) == 0 {
			extra = id
		}
	}
	if _, err := st.Reserve(short, extra, item); err == nil || function.IsPermanent(err) {
		t.Errorf("reserve at a full ledger with no time left = %v, want a transient error", err)
	}
	wantLevel(t, st, "A", 8000-MaxHolds-1, MaxHolds, 1)
}

// Stock exactly as large as the demand, taken by many orders at once from
// 8 ledgers that must lend to each other near the end: every order gets
// its unit (a rejection is final, so it never rests on units merely on the
// move), and only the next one is rejected.
func TestSellOutRejectsNoOneEarly(t *testing.T) {
	ctx := context.Background()
	st, _ := newTestStock(t)
	const units, workers = 1000, 64
	if _, err := st.Restock(ctx, "LAST", units, ""); err != nil {
		t.Fatal(err)
	}
	next := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var refused []string
	for range workers {
		wg.Go(func() {
			for i := range next {
				r, err := st.Reserve(ctx, fmt.Sprintf("o-%d", i), []*ordersv1.OrderItem{{Sku: "LAST", Quantity: 1}})
				if err != nil {
					t.Error(err)
					return
				}
				if r.Status != reserved {
					mu.Lock()
					refused = append(refused, r.Reason)
					mu.Unlock()
					continue
				}
				if _, err := st.Sell(ctx, r.OrderId); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for i := range units {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(refused) > 0 {
		t.Fatalf("%d of %d orders rejected with %d units: %v", len(refused), units, units, refused)
	}
	wantLevel(t, st, "LAST", 0, 0, units)
	if r, err := st.Reserve(ctx, "one-too-many", []*ordersv1.OrderItem{{Sku: "LAST", Quantity: 1}}); err != nil || r.Status != rejected {
		t.Errorf("order past the stock = %v, %v; want REJECTED", r, err)
	}
}

// When the only units left are on their way between ledgers (transfers
// not credited yet, too fresh to be taken for interrupted), an order still
// gets one: a rejection never rests on units merely on the move.
func TestUnitsInTransitAreNotShort(t *testing.T) {
	ctx := context.Background()
	st, _ := newTestStock(t)
	if _, err := st.Restock(ctx, "T", SubLedgers, ""); err != nil {
		t.Fatal(err)
	}
	l, _ := st.layout(ctx, "T")
	// Ledgers 1..7 each send their unit to ledger 0 and stop before the
	// credit.
	for n := 1; n < SubLedgers; n++ {
		if err := st.ledger(ctx, l.keys[n], func(lv *ordersv1.StockLevel, _ bool) error {
			lv.Available--
			lv.TransferSeq++
			lv.TransfersOut = map[int32]*ordersv1.Transfer{0: {Seq: lv.TransferSeq, Quantity: 1, StartedUnix: st.now().Unix()}}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	wantLevel(t, st, "T", SubLedgers, 0, 0)
	for n := range SubLedgers {
		r, err := st.Reserve(ctx, fmt.Sprintf("o-%d", n), []*ordersv1.OrderItem{{Sku: "T", Quantity: 1}})
		if err != nil || r.Status != reserved {
			t.Fatalf("order %d of %d units = %v, %v; want RESERVED", n+1, SubLedgers, r, err)
		}
	}
	wantLevel(t, st, "T", 0, SubLedgers, 0)
}

// faultyStore reads some keys as missing once (a read that lags) and
// fails some writes once, after or instead of storing them.
type faultyStore struct {
	state.Store
	mu        sync.Mutex
	stale     map[string]int
	failWrite map[string]int
}

var errInjected = errors.New("injected: no reply")

func (f *faultyStore) Get(ctx context.Context, key string, into proto.Message) (uint64, error) {
	f.mu.Lock()
	n := f.stale[key]
	f.stale[key] = max(n-1, 0)
	f.mu.Unlock()
	if n > 0 {
		return 0, fmt.Errorf("%s: %w", key, state.ErrNotFound)
	}
	return f.Store.Get(ctx, key, into)
}

func (f *faultyStore) Put(ctx context.Context, key string, value proto.Message, rev uint64) (uint64, error) {
	f.mu.Lock()
	n := f.failWrite[key]
	f.failWrite[key] = max(n-1, 0)
	f.mu.Unlock()
	if n > 0 {
		return 0, errInjected
	}
	return f.Store.Put(ctx, key, value, rev)
}

// A second delivery of an order's OrderCreated (a consumer whose leader
// changed redelivers what is in flight) reads no record, places a hold
// after the first delivery's hold was sold, and then fails before it reads
// the record: the first delivery acked the message, so nothing runs for
// the order again. The failed reserve settles at once: the stray goes
// back. (The container test found it: a confirmed order's unit left
// reserved for ever.)
func TestFailedDuplicateReserveGivesItsHoldBack(t *testing.T) {
	ctx := context.Background()
	st, b := newTestStock(t)
	if _, err := st.Restock(ctx, "A", 100, ""); err != nil {
		t.Fatal(err)
	}
	item := []*ordersv1.OrderItem{{Sku: "A", Quantity: 3}}
	if _, err := st.Reserve(ctx, "o-1", item); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Sell(ctx, "o-1"); err != nil {
		t.Fatal(err)
	}
	dup := New(&faultyStore{Store: b, stale: map[string]int{"order.o-1": 1}, failWrite: map[string]int{"order.o-1": 1}})
	if _, err := dup.Reserve(ctx, "o-1", item); !errors.Is(err, errInjected) {
		t.Fatalf("duplicate reserve: %v, want the injected failure", err)
	}
	wantLevel(t, st, "A", 97, 0, 3)
	if r, _, err := st.record(ctx, "o-1"); err != nil || r.GetStatus() != sold {
		t.Fatalf("record after the duplicate: %v, %v", r, err)
	}
}

// An entry left HELD after its order moved on (a sale that read the
// ledger without it, or a duplicate's stray whose every cleanup failed) is
// settled by the next writer of the ledger once it is tidyAge old: the
// missed line is sold, the stray given back. Orders in flight are left
// alone.
func TestLongHeldEntriesAreSettled(t *testing.T) {
	ctx := context.Background()
	st, b := newTestStock(t)
	clock := time.Now()
	st.now = func() time.Time { return clock }
	if _, err := st.Restock(ctx, "A", 100, ""); err != nil {
		t.Fatal(err)
	}
	item := []*ordersv1.OrderItem{{Sku: "A", Quantity: 3}}
	// o-1's sale reads its ledger as empty: the record says SOLD, the entry stays.
	if _, err := st.Reserve(ctx, "o-1", item); err != nil {
		t.Fatal(err)
	}
	home, err := st.homeKey(ctx, "A", "o-1")
	if err != nil {
		t.Fatal(err)
	}
	stale := New(&faultyStore{Store: b, stale: map[string]int{home: 1}, failWrite: map[string]int{}})
	if _, err := stale.Sell(ctx, "o-1"); err != nil {
		t.Fatal(err)
	}
	// o-2 is sold; a duplicate's stray for it appears afterwards.
	if _, err := st.Reserve(ctx, "o-2", item); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Sell(ctx, "o-2"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.hold(ctx, "o-2", item[0], "late"); err != nil {
		t.Fatal(err)
	}
	// o-3 is in flight, reserved.
	if _, err := st.Reserve(ctx, "o-3", item); err != nil {
		t.Fatal(err)
	}
	wantLevel(t, st, "A", 88, 9, 3)

	// Young entries are not checked.
	for i := range 20 {
		if _, err := st.Reserve(ctx, fmt.Sprintf("young-%d", i), []*ordersv1.OrderItem{{Sku: "A", Quantity: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	wantLevel(t, st, "A", 68, 29, 3)

	// Past tidyAge, every ledger's next writers settle its old entries.
	clock = clock.Add(tidyAge + time.Second)
	for i := range 200 {
		if _, err := st.Restock(ctx, "A", 1, fmt.Sprintf("k-%d", i)); err != nil {
			t.Fatal(err)
		}
		for n := range SubLedgers {
			key := fmt.Sprintf("sku.A.%d", n)
			_ = st.ledger(ctx, key, func(*ordersv1.StockLevel, bool) error { return state.ErrNoChange })
		}
	}
	// o-1's line sold (3 more sold), o-2's stray back; o-3 and the young
	// orders (in flight, 3 + 20 units) still reserved.
	wantLevel(t, st, "A", 68+200+3, 23, 6)
}
