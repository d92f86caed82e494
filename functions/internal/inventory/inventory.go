// Package inventory is the stock ledger shared by the inventory functions.
//
// Stock is conserved (restocked = available + reserved + sold) whatever
// crashes, and each order's reservation is applied, sold or released exactly
// once, with single-key compare-and-set writes only: an order's units of a
// SKU are an entry in that SKU's level record (see ordersv1.StockLevel), so
// moving them and recording that they moved is one write. The order's
// reservation record (its outcome and items) is written after its holds.
//
// The protocol, per order:
//   - reserve: hold each item (available to reserved, entry HELD), then
//     create the record RESERVED; or, when an item is short, create the
//     record REJECTED first and then give the holds back.
//   - sell: for each item, reserved to sold and the entry removed; then the
//     record SOLD.
//   - release: for each item, reserved (or, when the sale won a race with
//     the cancellation, sold) back to available, leaving a RELEASED entry;
//     then the record RELEASED.
//
// Whoever finds a record in a final state cleans up after the others: a
// duplicate or late reserve gives back the holds it placed. Each HELD entry
// names the reserve attempt that placed it and the record names the attempt
// it adopted, so a hold placed by a late duplicate after the first hold was
// sold (the entry was gone, so the duplicate could not tell) is recognised
// and given back by whoever meets it. RELEASED entries stay an hour
// (TombstoneTTL), so that a release running twice at once, one of them from
// a record read before the other finished, finds them and does nothing,
// instead of taking an item without an entry for a sold one.
package inventory

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/state"
)

// Bucket is the KV bucket of stock levels and reservations.
const Bucket = "stock"

// TombstoneTTL is how long a RELEASED entry is kept. It must outlast any
// single step by far; steps are bounded by REQUEST_TIMEOUT (seconds).
const TombstoneTTL = time.Hour

// ErrWrongState is returned when a reservation cannot take the requested
// step (selling a released reservation, say). It is permanent.
var ErrWrongState = fmt.Errorf("%w: reservation in wrong state", function.ErrConflict)

// Stock is the ledger on a state.Store.
type Stock struct {
	s   state.Store
	now func() time.Time
}

// New returns the ledger kept in s.
func New(s state.Store) *Stock { return &Stock{s: s, now: time.Now} }

func levelKey(sku string) string         { return "sku." + sku }
func reservationKey(order string) string { return "order." + order }

// IsOrderRecord reports whether key holds an order's reservation, which
// expires with the order (a SKU's level never does).
func IsOrderRecord(key string) bool { return strings.HasPrefix(key, "order.") }

const (
	reserved = ordersv1.ReservationStatus_RESERVATION_STATUS_RESERVED
	rejected = ordersv1.ReservationStatus_RESERVATION_STATUS_REJECTED
	released = ordersv1.ReservationStatus_RESERVATION_STATUS_RELEASED
	sold     = ordersv1.ReservationStatus_RESERVATION_STATUS_SOLD

	held        = ordersv1.HoldState_HOLD_STATE_HELD
	releasedOne = ordersv1.HoldState_HOLD_STATE_RELEASED
)

// Restocks are remembered this long, and this many at most per SKU, so
// that a retried restock with the same key adds once.
const (
	RestockWindow = 24 * time.Hour
	maxRestocks   = 64
)

// Restock adds quantity units of sku. With a key (the caller's
// Idempotency-Key) a repeat within RestockWindow adds nothing and returns
// the levels as they are; without one every call adds.
func (st *Stock) Restock(ctx context.Context, sku string, quantity int32, key string) (*ordersv1.StockLevel, error) {
	id := ""
	if key != "" {
		sum := sha256.Sum256([]byte(key))
		id = hex.EncodeToString(sum[:16])
	}
	var out *ordersv1.StockLevel
	err := st.level(ctx, sku, func(l *ordersv1.StockLevel, _ bool) error {
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
		l.Sku = sku
		if int64(l.Available)+int64(l.Reserved)+int64(l.Sold)+int64(quantity) > math.MaxInt32 {
			return function.Invalid("quantity", "stock of %s would exceed %d units", sku, math.MaxInt32)
		}
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

// Level returns the stock of sku; a SKU never restocked is ErrNotFound.
func (st *Stock) Level(ctx context.Context, sku string) (*ordersv1.StockLevel, error) {
	l, _, err := state.Get[ordersv1.StockLevel](ctx, st.s, levelKey(sku))
	if errors.Is(err, state.ErrNotFound) {
		return nil, fmt.Errorf("sku %s: %w", sku, function.ErrNotFound)
	}
	return l, err
}

// Reservation returns the reservation of an order, or ErrNotFound.
func (st *Stock) Reservation(ctx context.Context, orderID string) (*ordersv1.Reservation, error) {
	r, _, err := st.record(ctx, orderID)
	if errors.Is(err, state.ErrNotFound) {
		return nil, fmt.Errorf("reservation %s: %w", orderID, function.ErrNotFound)
	}
	return r, err
}

func (st *Stock) record(ctx context.Context, orderID string) (*ordersv1.Reservation, uint64, error) {
	return state.Get[ordersv1.Reservation](ctx, st.s, reservationKey(orderID))
}

// errShort stops a hold: not enough units, or no such SKU.
type errShort struct {
	reason  string
	unknown bool
}

func (e errShort) Error() string { return e.reason }

// errReleasing stops a hold or a sale: a release of the order is underway.
var errReleasing = errors.New("release underway")

// level applies fn to sku's level with compare-and-set; fn returns
// state.ErrNoChange to skip the write. Tombstones past their time are
// dropped on the way, with a write that happens anyway.
func (st *Stock) level(ctx context.Context, sku string, fn func(l *ordersv1.StockLevel, exists bool) error) error {
	_, err := state.Modify(ctx, st.s, levelKey(sku), func(l *ordersv1.StockLevel, exists bool) error {
		pruned := false
		for id, h := range l.Holds {
			if h.State == releasedOne && st.now().Sub(time.Unix(h.ReleasedUnix, 0)) > TombstoneTTL {
				delete(l.Holds, id)
				pruned = true
			}
		}
		err := fn(l, exists)
		if pruned && errors.Is(err, state.ErrNoChange) {
			return nil
		}
		return err
	})
	return err
}

// Reserve holds every item for the order, or none when one is short. The
// outcome is recorded under the order id; a repeat returns it unchanged, so
// a redelivered request never reserves twice and a rejection stays a
// rejection even if stock arrives later.
func (st *Stock) Reserve(ctx context.Context, orderID string, items []*ordersv1.OrderItem) (*ordersv1.Reservation, error) {
	items = sortedItems(items)
	attempt := newAttempt()
	for try := 1; ; try++ {
		r, _, err := st.record(ctx, orderID)
		switch {
		case err == nil && (r.Status == reserved || r.Status == sold):
			// Another attempt recorded first: give back holds of ours it
			// did not adopt, and any a crashed late attempt left.
			return r, st.dropStrays(ctx, orderID, r)
		case err == nil:
			// Rejected or released: give back any hold a reserve that lost the
			// race placed, and report the outcome.
			return r, st.cleanup(ctx, orderID, items)
		case !errors.Is(err, state.ErrNotFound):
			return nil, err
		}

		r = &ordersv1.Reservation{OrderId: orderID, Items: items, Status: reserved, Attempts: map[string]string{}}
		for _, it := range items {
			owner, err := st.hold(ctx, orderID, it, attempt)
			var short errShort
			switch {
			case errors.As(err, &short):
				r.Status, r.Reason = rejected, short.reason
			case errors.Is(err, errReleasing):
				r.Status = released // a record appeared meanwhile; read it
			case err != nil:
				return nil, err
			}
			if r.Status != reserved {
				break
			}
			r.Attempts[it.GetSku()] = owner
		}
		if r.Status == released {
			continue
		}
		// The record decides: RESERVED only if all items are held, and a
		// REJECTED record is written before the holds go back, so a
		// duplicate reserve can never record RESERVED over a hold given back.
		err = st.s.Put(ctx, reservationKey(orderID), r, 0)
		if again, err := state.Again(ctx, try, err); again {
			continue // another writer recorded first: act on its record
		} else if err != nil {
			return nil, err
		}
		if r.Status == rejected {
			return r, st.cleanup(ctx, orderID, items)
		}
		return r, nil
	}
}

// newAttempt names one reserve attempt.
func newAttempt() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// hold moves an item's units from available to reserved under an entry for
// the order. An entry already there means the hold is in place; owner is
// the attempt that placed it.
func (st *Stock) hold(ctx context.Context, orderID string, it *ordersv1.OrderItem, attempt string) (owner string, err error) {
	for try := 1; ; try++ {
		owner, err = st.holdOnce(ctx, orderID, it, attempt)
		var short errShort
		// A SKU that reads as missing right after a server restart may not
		// be missing: read once more before rejecting an order for it.
		if try == 1 && errors.As(err, &short) && short.unknown {
			if err := sleep(ctx, 20*time.Millisecond); err != nil {
				return "", err
			}
			continue
		}
		return owner, err
	}
}

func (st *Stock) holdOnce(ctx context.Context, orderID string, it *ordersv1.OrderItem, attempt string) (owner string, err error) {
	err = st.level(ctx, it.GetSku(), func(l *ordersv1.StockLevel, exists bool) error {
		owner = ""
		if h, ok := l.Holds[orderID]; ok {
			if h.State == releasedOne {
				return errReleasing
			}
			owner = h.Attempt
			return state.ErrNoChange
		}
		if !exists {
			return errShort{reason: fmt.Sprintf("unknown SKU %s", it.GetSku()), unknown: true}
		}
		if l.Available < it.GetQuantity() {
			return errShort{reason: fmt.Sprintf("insufficient stock for %s: %d available, %d requested", it.GetSku(), l.Available, it.GetQuantity())}
		}
		l.Available -= it.GetQuantity()
		l.Reserved += it.GetQuantity()
		if l.Holds == nil {
			l.Holds = map[string]*ordersv1.Hold{}
		}
		l.Holds[orderID] = &ordersv1.Hold{Quantity: it.GetQuantity(), State: held, Attempt: attempt}
		owner = attempt
		return nil
	})
	return owner, err
}

// stray reports whether h is a hold that r did not adopt: placed by a late
// duplicate reserve after the adopted hold was sold.
func stray(h *ordersv1.Hold, r *ordersv1.Reservation, sku string) bool {
	return h.State == held && h.Attempt != r.GetAttempts()[sku]
}

// dropStrays gives back the holds of a reserved or sold order that its
// record did not adopt.
func (st *Stock) dropStrays(ctx context.Context, orderID string, r *ordersv1.Reservation) error {
	for _, it := range r.GetItems() {
		err := st.level(ctx, it.GetSku(), func(l *ordersv1.StockLevel, _ bool) error {
			h, ok := l.Holds[orderID]
			if !ok || !stray(h, r, it.GetSku()) {
				return state.ErrNoChange
			}
			l.Reserved -= h.Quantity
			l.Available += h.Quantity
			delete(l.Holds, orderID)
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// cleanup gives back the order's HELD units, leaving tombstones, for an
// order whose record is final (rejected, released).
func (st *Stock) cleanup(ctx context.Context, orderID string, items []*ordersv1.OrderItem) error {
	for _, it := range items {
		err := st.level(ctx, it.GetSku(), func(l *ordersv1.StockLevel, _ bool) error {
			h, ok := l.Holds[orderID]
			if !ok || h.State != held {
				return state.ErrNoChange
			}
			l.Reserved -= h.Quantity
			l.Available += h.Quantity
			l.Holds[orderID] = st.tombstone(h.Quantity)
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Sell moves a reservation's units from reserved to sold.
func (st *Stock) Sell(ctx context.Context, orderID string) (*ordersv1.Reservation, error) {
	for attempt := 1; ; attempt++ {
		r, rev, err := st.record(ctx, orderID)
		if errors.Is(err, state.ErrNotFound) {
			return nil, fmt.Errorf("reservation %s: %w", orderID, function.ErrNotFound)
		}
		if err != nil {
			return nil, err
		}
		switch r.Status {
		case sold:
			return r, st.dropStrays(ctx, orderID, r)
		case reserved:
		default:
			return r, fmt.Errorf("%w: order %s is %s, cannot be sold", ErrWrongState, orderID, r.Status)
		}
		for _, it := range r.GetItems() {
			err := st.level(ctx, it.GetSku(), func(l *ordersv1.StockLevel, _ bool) error {
				h, ok := l.Holds[orderID]
				switch {
				case !ok:
					return state.ErrNoChange // sold already
				case h.State == releasedOne:
					return errReleasing
				case stray(h, r, it.GetSku()):
					// A late duplicate's hold: ours was sold already.
					l.Reserved -= h.Quantity
					l.Available += h.Quantity
				default:
					l.Reserved -= h.Quantity
					l.Sold += h.Quantity
				}
				delete(l.Holds, orderID)
				return nil
			})
			if errors.Is(err, errReleasing) {
				return r, fmt.Errorf("%w: order %s is being released", ErrWrongState, orderID)
			}
			if err != nil {
				return nil, err
			}
		}
		r.Status = sold
		err = st.s.Put(ctx, reservationKey(orderID), r, rev)
		if again, err := state.Again(ctx, attempt, err); again {
			continue // released meanwhile: the next read says so
		} else if err != nil {
			return nil, err
		}
		return r, nil
	}
}

// Release gives a reservation's units back to available, from reserved or,
// when the sale won a race with a cancellation, from sold. Releasing an order
// that never reserved records the release, so a late reserve for it gives
// its holds back; releasing twice changes nothing.
func (st *Stock) Release(ctx context.Context, orderID, reason string) (*ordersv1.Reservation, error) {
	for attempt := 1; ; attempt++ {
		r, rev, err := st.record(ctx, orderID)
		if errors.Is(err, state.ErrNotFound) {
			r = &ordersv1.Reservation{OrderId: orderID, Status: released, Reason: reason}
			err = st.s.Put(ctx, reservationKey(orderID), r, 0)
			if again, err := state.Again(ctx, attempt, err); again {
				continue
			} else if err != nil {
				return nil, err
			}
			return r, nil
		}
		if err != nil {
			return nil, err
		}
		if r.Status == released || r.Status == rejected {
			return r, st.cleanup(ctx, orderID, r.GetItems())
		}
		// Reserved or sold: every item was held when the record was written,
		// so an item without its adopted hold was sold.
		for _, it := range r.GetItems() {
			err := st.level(ctx, it.GetSku(), func(l *ordersv1.StockLevel, _ bool) error {
				h, ok := l.Holds[orderID]
				q := it.GetQuantity()
				switch {
				case ok && h.State == releasedOne:
					return state.ErrNoChange
				case ok && !stray(h, r, it.GetSku()):
					l.Reserved -= h.Quantity
				default:
					if ok { // a late duplicate's hold: give it back too
						l.Reserved -= h.Quantity
						l.Available += h.Quantity
					}
					if l.Sold < q {
						// The ledger is corrupt; never paper over it.
						return fmt.Errorf("order %s: %s holds fewer sold units than the reservation", orderID, it.GetSku())
					}
					l.Sold -= q
				}
				l.Available += q
				if l.Holds == nil {
					l.Holds = map[string]*ordersv1.Hold{}
				}
				l.Holds[orderID] = st.tombstone(q)
				return nil
			})
			if err != nil {
				return nil, err
			}
		}
		r.Status, r.Reason = released, reason
		err = st.s.Put(ctx, reservationKey(orderID), r, rev)
		if again, err := state.Again(ctx, attempt, err); again {
			continue // sold meanwhile: do it again from the new record
		} else if err != nil {
			return nil, err
		}
		return r, nil
	}
}

func (st *Stock) tombstone(q int32) *ordersv1.Hold {
	return &ordersv1.Hold{Quantity: q, State: releasedOne, ReleasedUnix: st.now().Unix()}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func sortedItems(items []*ordersv1.OrderItem) []*ordersv1.OrderItem {
	out := slices.Clone(items)
	slices.SortFunc(out, func(a, b *ordersv1.OrderItem) int { return strings.Compare(a.GetSku(), b.GetSku()) })
	return out
}
