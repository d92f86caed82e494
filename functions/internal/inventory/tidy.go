package inventory

import (
	"context"
	"time"

	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/state"
)

// A HELD entry outlives its order only by a mishap no single step can see:
// a duplicate reserve that placed a hold after the order was sold and then
// stopped for good (its message acked by the other delivery), or a sale
// that read a ledger without the entry (a read answered during a leader
// change). The container test met the first and, once, a stray it could
// not tell apart. So whoever writes a ledger also checks its entries held
// for longer than tidyAge against their orders' records and settles those
// whose order has moved on: a stray goes back to available, a line a sale
// missed goes to sold. An order still in flight is left alone.
const tidyAge = 30 * time.Second

// heldEntry is an entry of a ledger held since before tidyAge.
type heldEntry struct {
	orderID string
	hold    *ordersv1.Hold
	sku     string
}

// oldHolds appends to out the HELD entries of l placed before tidyAge ago
// (or at an unknown time).
func oldHolds(l *ordersv1.StockLevel, now time.Time, out []heldEntry) []heldEntry {
	for id, h := range l.GetHolds() {
		if h.GetState() == held && now.Sub(time.Unix(h.GetHeldUnix(), 0)) > tidyAge {
			out = append(out, heldEntry{orderID: id, hold: h, sku: l.GetSku()})
		}
	}
	return out
}

// tidy settles, best effort, one long-held entry of the ledger under key
// not checked within tidyAge.
func (st *Stock) tidy(ctx context.Context, key string, old []heldEntry) {
	if len(old) == 0 {
		return
	}
	now := st.now()
	var e *heldEntry
	st.tidyMu.Lock()
	for i := range old {
		k := old[i].orderID + "@" + key
		if now.Sub(st.tidied[k]) > tidyAge {
			st.tidied[k], e = now, &old[i]
			break
		}
	}
	if len(st.tidied) > 4096 {
		for k, at := range st.tidied {
			if now.Sub(at) > tidyAge {
				delete(st.tidied, k)
			}
		}
	}
	st.tidyMu.Unlock()
	if e == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleWait)
	defer cancel()
	r, _, err := st.record(ctx, e.orderID)
	if err != nil {
		return // no record (a reserve in progress) or no answer: later
	}
	_, _ = state.Modify(ctx, st.s, key, func(l *ordersv1.StockLevel, _ bool) error {
		h, ok := l.Holds[e.orderID]
		if !ok || h.State != held || h.Attempt != e.hold.GetAttempt() {
			return state.ErrNoChange
		}
		return settleEntry(l, e.orderID, h, r, e.sku)
	})
}

// settleEntry applies to a HELD entry what its order's record r says of
// it: nothing while the order holds it (RESERVED, SELLING, RELEASING), a
// stray or an entry of a rejected or released order goes back, a line of
// a SOLD order that the sale missed is sold.
func settleEntry(l *ordersv1.StockLevel, orderID string, h *ordersv1.Hold, r *ordersv1.Reservation, sku string) error {
	switch {
	case r.Status == rejected || r.Status == released:
		giveBack(l, orderID, h)
	case r.Status == releasing:
		return state.ErrNoChange
	case stray(h, r, sku):
		giveBack(l, orderID, h)
	case r.Status == sold && lineOf(r, sku):
		l.Reserved -= h.Quantity
		l.Sold += h.Quantity
		delete(l.Holds, orderID)
	default:
		return state.ErrNoChange
	}
	return nil
}

// lineOf reports whether r has a line of sku.
func lineOf(r *ordersv1.Reservation, sku string) bool {
	for _, it := range r.GetItems() {
		if it.GetSku() == sku {
			return true
		}
	}
	return false
}
