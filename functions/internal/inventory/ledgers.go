package inventory

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"strconv"
	"sync"
	"time"

	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/state"
)

// SubLedgers is how many ledgers a SKU's stock is split over. Each order's
// units of a SKU live in one of them, its home (a hash of the order id), so
// orders of one SKU compare-and-set different records and a hot SKU does
// not serialise on one key; a home that runs short borrows units from the
// others (a transfer). Changing it would move homes: it is part of the
// stored layout.
const SubLedgers = 8

// transferStale is how old a transfer must be before whoever meets it
// completes it: one that old was interrupted (a crash between its writes).
const transferStale = 5 * time.Second

// layout is how a SKU's stock is kept: in SubLedgers ledgers, or, for a SKU
// stocked before sub-ledgers existed, in its single record "sku.<sku>".
type layout struct {
	keys []string
}

func (l layout) home(orderID string) int {
	if len(l.keys) == 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(orderID))
	return int(h.Sum32() % uint32(len(l.keys)))
}

func ledgerKey(sku string, n int) string { return "sku." + sku + "." + strconv.Itoa(n) }
func legacyKey(sku string) string        { return "sku." + sku }

// layouts remembers which SKUs use the old single record. A SKU never
// moves to it: the old key is never written for a new SKU, so once a SKU
// is seen without it, that holds for good.
type layouts struct {
	mu    sync.Mutex
	known map[string]layout
}

func (st *Stock) layout(ctx context.Context, sku string) (layout, error) {
	st.layouts.mu.Lock()
	l, ok := st.layouts.known[sku]
	st.layouts.mu.Unlock()
	if ok {
		return l, nil
	}
	_, _, err := state.Get[ordersv1.StockLevel](ctx, st.s, legacyKey(sku))
	switch {
	case err == nil:
		l = layout{keys: []string{legacyKey(sku)}}
	case errors.Is(err, state.ErrNotFound):
		l = layout{keys: make([]string, SubLedgers)}
		for n := range l.keys {
			l.keys[n] = ledgerKey(sku, n)
		}
	default:
		return layout{}, err
	}
	st.layouts.mu.Lock()
	st.layouts.known[sku] = l
	st.layouts.mu.Unlock()
	return l, nil
}

// ledgers reads every ledger of a SKU at once; a ledger not written yet is
// nil.
func (st *Stock) ledgers(ctx context.Context, l layout) ([]*ordersv1.StockLevel, error) {
	out := make([]*ordersv1.StockLevel, len(l.keys))
	errs := make([]error, len(l.keys))
	var wg sync.WaitGroup
	for n, key := range l.keys {
		wg.Go(func() {
			v, _, err := state.Get[ordersv1.StockLevel](ctx, st.s, key)
			if errors.Is(err, state.ErrNotFound) {
				err = nil
			}
			out[n], errs[n] = v, err
		})
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// total sums a SKU's ledgers into one level: available includes units in a
// transfer not yet credited, so restocked = available + reserved + sold
// holds at every moment. exists is false for a SKU never stocked.
func total(sku string, ls []*ordersv1.StockLevel) (sum *ordersv1.StockLevel, exists bool) {
	sum = &ordersv1.StockLevel{Sku: sku}
	for _, l := range ls {
		if l == nil {
			continue
		}
		exists = true
		sum.Available += l.GetAvailable()
		sum.Reserved += l.GetReserved()
		sum.Sold += l.GetSold()
	}
	for from, l := range ls {
		for to, t := range l.GetTransfersOut() {
			if int(to) >= len(ls) || ls[to].GetCredited()[int32(from)] < t.GetSeq() {
				sum.Available += t.GetQuantity() // on its way, not credited yet
			}
		}
	}
	return sum, exists
}

// Level returns the stock of sku, all its ledgers together; a SKU never
// restocked is ErrNotFound.
func (st *Stock) Level(ctx context.Context, sku string) (*ordersv1.StockLevel, error) {
	l, err := st.layout(ctx, sku)
	if err != nil {
		return nil, err
	}
	ls, err := st.ledgers(ctx, l)
	if err != nil {
		return nil, err
	}
	sum, exists := total(sku, ls)
	if !exists {
		return nil, fmt.Errorf("sku %s: %w", sku, function.ErrNotFound)
	}
	return sum, nil
}

// Restock adds quantity units of sku, spread over its ledgers. With a key
// (the caller's Idempotency-Key) a repeat within RestockWindow adds nothing;
// each ledger remembers the key, so a repeat after a crash halfway adds
// only what is missing. Without one every call adds.
func (st *Stock) Restock(ctx context.Context, sku string, quantity int32, key string) (*ordersv1.StockLevel, error) {
	l, err := st.layout(ctx, sku)
	if err != nil {
		return nil, err
	}
	id := ""
	if key != "" {
		id = sha256Hex(key)
	}
	ls, err := st.ledgers(ctx, l)
	if err != nil {
		return nil, err
	}
	if sum, _ := total(sku, ls); int64(sum.Available)+int64(sum.Reserved)+int64(sum.Sold)+int64(quantity) > maxUnits {
		return nil, function.Invalid("quantity", "stock of %s would exceed %d units", sku, maxUnits)
	}
	n := uint32(len(l.keys))
	// Spread evenly, the remainder from a ledger that depends on the key (a
	// repeat spreads the same way) or, without one, on the moment, so that
	// small restocks do not all land in the first ledgers.
	seed := id
	if seed == "" {
		seed = strconv.FormatInt(st.now().UnixNano(), 10)
	}
	start := fnvOf(sku + "/" + seed)
	for i, k := range l.keys {
		share := quantity / int32(n)
		if (uint32(i)+n-start%n)%n < uint32(quantity)%n {
			share++
		}
		if share == 0 {
			continue
		}
		if _, err := st.restockLedger(ctx, sku, k, share, id); err != nil {
			return nil, err
		}
	}
	// The reply is the SKU's level after the restock, every ledger counted.
	if ls, err = st.ledgers(ctx, l); err != nil {
		return nil, err
	}
	sum, _ := total(sku, ls)
	return sum, nil
}

// maxUnits bounds a SKU's stock, all ledgers together.
const maxUnits = math.MaxInt32

func (st *Stock) restockLedger(ctx context.Context, sku, key string, quantity int32, id string) (*ordersv1.StockLevel, error) {
	var out *ordersv1.StockLevel
	err := st.ledger(ctx, key, func(l *ordersv1.StockLevel, _ bool) error {
		out = l
		now := st.now()
		for k, at := range l.Restocks {
			if now.Sub(time.Unix(at, 0)) > RestockWindow {
				delete(l.Restocks, k)
			}
		}
		if _, done := l.Restocks[id]; id != "" && done {
			return state.ErrNoChange
		}
		if int64(l.Available)+int64(l.Reserved)+int64(l.Sold)+int64(quantity) > maxUnits {
			return function.Invalid("quantity", "stock of %s would exceed %d units", sku, maxUnits)
		}
		l.Sku = sku
		l.Available += quantity
		if id != "" {
			if l.Restocks == nil {
				l.Restocks = map[string]int64{}
			}
			for len(l.Restocks) >= maxRestocks { // drop the oldest
				oldest := ""
				for k, at := range l.Restocks {
					if oldest == "" || at < l.Restocks[oldest] {
						oldest = k
					}
				}
				delete(l.Restocks, oldest)
			}
			l.Restocks[id] = now.Unix()
		}
		return nil
	})
	return out, err
}

// borrow moves units into ledger to of a SKU from the others, at least
// need if they have them, and reports whether they had enough. A transfer
// is two writes: the giving ledger takes the units and records the
// transfer under its next sequence, and the receiving one credits them
// (once: it keeps the last sequence it credited from each giver). The
// giver forgets the transfer in its next transfer to the same ledger, once
// it has seen the credit; a transfer not credited after transferStale is
// finished by whoever meets it, so a crash between the writes loses
// nothing.
func (st *Stock) borrow(ctx context.Context, sku string, l layout, to int, need int32) (bool, error) {
	ls, err := st.ledgers(ctx, l)
	if err != nil {
		return false, err
	}
	if err := st.finishTransfers(ctx, l, ls, false); err != nil {
		return false, err
	}
	sum, _ := total(sku, ls)
	if sum.Available < need {
		return false, nil
	}
	forced := false
	for need > 0 {
		donor := -1
		for n, lv := range ls {
			if n != to && lv != nil && lv.GetAvailable() > 0 && (donor < 0 || lv.GetAvailable() > ls[donor].GetAvailable()) {
				donor = n
			}
		}
		if donor < 0 && !forced {
			// Nothing at hand: units on their way between other ledgers
			// are credited now (a credit is safe at any time), then read.
			forced = true
			if err := st.finishTransfers(ctx, l, ls, true); err != nil {
				return false, err
			}
			if ls, err = st.ledgers(ctx, l); err != nil {
				return false, err
			}
			continue
		}
		if donor < 0 {
			return false, nil // taken meanwhile
		}
		// Half of what the donor has, at least what is needed: the next
		// orders at this home will not have to borrow at once.
		n := max(need, ls[donor].GetAvailable()/2)
		moved, err := st.transfer(ctx, l, ls[to], donor, to, n)
		if err != nil {
			return false, err
		}
		need -= moved
		ls[donor] = nil // read again if needed
		if need > 0 {
			if ls, err = st.ledgers(ctx, l); err != nil {
				return false, err
			}
		}
	}
	return true, nil
}

// transfer moves up to n units from ledger from to ledger to and returns
// how many it moved; receiver is ledger to as read before (or nil). A
// transfer between the two still pending is completed first, or, when
// receiver shows its credit, forgotten in the same write: one at a time
// per pair keeps the credits in order.
func (st *Stock) transfer(ctx context.Context, l layout, receiver *ordersv1.StockLevel, from, to int, n int32) (int32, error) {
	for range 3 {
		var started, pending *ordersv1.Transfer
		err := st.ledger(ctx, l.keys[from], func(lv *ordersv1.StockLevel, _ bool) error {
			started, pending = nil, lv.GetTransfersOut()[int32(to)]
			if pending != nil && credited(receiver, from, pending) {
				// Credits only grow: what an earlier read shows
				// credited stays credited.
				delete(lv.TransfersOut, int32(to))
				pending = nil
			}
			moved := min(n, lv.GetAvailable())
			if pending != nil || moved <= 0 {
				return state.ErrNoChange
			}
			lv.Available -= moved
			lv.TransferSeq++
			started = &ordersv1.Transfer{Seq: lv.TransferSeq, Quantity: moved, StartedUnix: st.now().Unix()}
			if lv.TransfersOut == nil {
				lv.TransfersOut = map[int32]*ordersv1.Transfer{}
			}
			lv.TransfersOut[int32(to)] = started
			return nil
		})
		switch {
		case err != nil:
			return 0, err
		case started != nil:
			return started.Quantity, st.credit(ctx, l, from, to, started)
		case pending == nil:
			return 0, nil // nothing to give
		}
		if err := st.complete(ctx, l, from, to, pending); err != nil {
			return 0, err
		}
	}
	return 0, nil
}

// credited reports whether receiver has credited transfer t from ledger
// from.
func credited(receiver *ordersv1.StockLevel, from int, t *ordersv1.Transfer) bool {
	return receiver.GetCredited()[int32(from)] >= t.GetSeq()
}

// complete credits transfer t from ledger from in ledger to, unless it
// was credited already, and removes it from ledger from.
func (st *Stock) complete(ctx context.Context, l layout, from, to int, t *ordersv1.Transfer) error {
	if err := st.credit(ctx, l, from, to, t); err != nil {
		return err
	}
	return st.ledger(ctx, l.keys[from], func(lv *ordersv1.StockLevel, _ bool) error {
		if lv.GetTransfersOut()[int32(to)].GetSeq() != t.GetSeq() {
			return state.ErrNoChange
		}
		delete(lv.TransfersOut, int32(to))
		return nil
	})
}

// credit credits transfer t from ledger from in ledger to, unless it was
// credited already.
func (st *Stock) credit(ctx context.Context, l layout, from, to int, t *ordersv1.Transfer) error {
	return st.ledger(ctx, l.keys[to], func(lv *ordersv1.StockLevel, _ bool) error {
		if lv.GetCredited()[int32(from)] >= t.GetSeq() {
			return state.ErrNoChange
		}
		lv.Available += t.GetQuantity()
		if lv.Credited == nil {
			lv.Credited = map[int32]uint64{}
		}
		lv.Credited[int32(from)] = t.GetSeq()
		return nil
	})
}

// finishTransfers completes the interrupted transfers among ls: those
// not credited yet (a credited one is forgotten by the giver's next
// transfer to the same ledger), older than transferStale unless all.
func (st *Stock) finishTransfers(ctx context.Context, l layout, ls []*ordersv1.StockLevel, all bool) error {
	now := st.now()
	for from, lv := range ls {
		for to, t := range lv.GetTransfersOut() {
			if !all && now.Sub(time.Unix(t.GetStartedUnix(), 0)) < transferStale || int(to) >= len(l.keys) || credited(ls[to], from, t) {
				continue
			}
			if err := st.complete(ctx, l, from, int(to), t); err != nil {
				return err
			}
		}
	}
	return nil
}

func newAttempt() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func fnvOf(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return h.Sum32()
}
