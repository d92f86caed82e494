// Package inventory is the stock ledger shared by the inventory functions.
// Stock levels and reservations live in one bucket so that a reservation and
// the levels it changes are committed together, all or nothing: stock is
// conserved (restocked = available + reserved + sold) whatever crashes, and
// a reservation keyed by order id is applied, released or sold exactly once.
package inventory

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"google.golang.org/protobuf/proto"

	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/state"
)

// Bucket is the KV bucket of stock levels and reservations.
const Bucket = "stock"

// ErrWrongState is returned when a reservation cannot take the requested
// step (selling a released reservation, say). It is permanent.
var ErrWrongState = fmt.Errorf("%w: reservation in wrong state", function.ErrConflict)

// Stock is the ledger on a state.Store.
type Stock struct{ s state.Store }

// New returns the ledger kept in s.
func New(s state.Store) *Stock { return &Stock{s: s} }

func levelKey(sku string) string         { return "sku." + sku }
func reservationKey(order string) string { return "order." + order }

// Restock adds quantity units of sku.
func (st *Stock) Restock(ctx context.Context, sku string, quantity int32) (*ordersv1.StockLevel, error) {
	return state.Modify(ctx, st.s, levelKey(sku), func(l *ordersv1.StockLevel) error {
		l.Sku = sku
		if int64(l.Available)+int64(l.Reserved)+int64(l.Sold)+int64(quantity) > math.MaxInt32 {
			return function.Invalid("quantity", "stock of %s would exceed %d units", sku, math.MaxInt32)
		}
		l.Available += quantity
		return nil
	})
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
	r, _, err := state.Get[ordersv1.Reservation](ctx, st.s, reservationKey(orderID))
	if errors.Is(err, state.ErrNotFound) {
		return nil, fmt.Errorf("reservation %s: %w", orderID, function.ErrNotFound)
	}
	return r, err
}

// Reserve holds every item for the order, or none when one is short. The
// outcome is recorded under the order id; a repeat returns it unchanged, so
// a redelivered request never reserves twice and a rejection stays a
// rejection even if stock arrives later.
func (st *Stock) Reserve(ctx context.Context, orderID string, items []*ordersv1.OrderItem) (*ordersv1.Reservation, error) {
	return st.step(ctx, orderID, func(r *ordersv1.Reservation, found bool, levels map[string]*ordersv1.StockLevel) (bool, error) {
		if found {
			return false, nil
		}
		r.OrderId, r.Items = orderID, items
		for _, it := range items {
			l := levels[it.GetSku()]
			if l == nil {
				r.Status, r.Reason = ordersv1.ReservationStatus_RESERVATION_STATUS_REJECTED, fmt.Sprintf("unknown SKU %s", it.GetSku())
				return true, nil
			}
			if l.Available < it.GetQuantity() {
				r.Status = ordersv1.ReservationStatus_RESERVATION_STATUS_REJECTED
				r.Reason = fmt.Sprintf("insufficient stock for %s: %d available, %d requested", it.GetSku(), l.Available, it.GetQuantity())
				return true, nil
			}
		}
		for _, it := range items {
			l := levels[it.GetSku()]
			l.Available -= it.GetQuantity()
			l.Reserved += it.GetQuantity()
		}
		r.Status = ordersv1.ReservationStatus_RESERVATION_STATUS_RESERVED
		return true, nil
	}, itemsSKUs(items))
}

// Release gives a reservation's units back to available, from reserved or,
// when the sale won a race with a cancellation, from sold. Releasing an order
// that never reserved records the release, so a late reserve for it is a
// no-op; releasing twice changes nothing.
func (st *Stock) Release(ctx context.Context, orderID, reason string) (*ordersv1.Reservation, error) {
	return st.settle(ctx, orderID, reason, ordersv1.ReservationStatus_RESERVATION_STATUS_RELEASED)
}

// Sell moves a reservation's units from reserved to sold.
func (st *Stock) Sell(ctx context.Context, orderID string) (*ordersv1.Reservation, error) {
	return st.settle(ctx, orderID, "", ordersv1.ReservationStatus_RESERVATION_STATUS_SOLD)
}

func (st *Stock) settle(ctx context.Context, orderID, reason string, to ordersv1.ReservationStatus) (*ordersv1.Reservation, error) {
	var skus []string
	if r, err := st.Reservation(ctx, orderID); err == nil {
		skus = itemsSKUs(r.GetItems())
	} else if !errors.Is(err, function.ErrNotFound) {
		return nil, err
	}
	return st.step(ctx, orderID, func(r *ordersv1.Reservation, found bool, levels map[string]*ordersv1.StockLevel) (bool, error) {
		switch {
		case !found && to == ordersv1.ReservationStatus_RESERVATION_STATUS_RELEASED:
			r.OrderId, r.Status, r.Reason = orderID, to, reason
			return true, nil
		case !found:
			return false, fmt.Errorf("%w: order %s has no reservation to sell", ErrWrongState, orderID)
		case r.Status == to, r.Status == ordersv1.ReservationStatus_RESERVATION_STATUS_REJECTED:
			return false, nil
		case r.Status == ordersv1.ReservationStatus_RESERVATION_STATUS_SOLD && to == ordersv1.ReservationStatus_RESERVATION_STATUS_RELEASED:
			// A cancellation that lost the race to the sale: the units come
			// back from sold, as a return does.
		case r.Status != ordersv1.ReservationStatus_RESERVATION_STATUS_RESERVED:
			return false, fmt.Errorf("%w: order %s is %s, cannot become %s", ErrWrongState, orderID, r.Status, to)
		}
		from := r.Status
		for _, it := range r.GetItems() {
			l := levels[it.GetSku()]
			q := it.GetQuantity()
			held := &l.Reserved
			if l != nil && from == ordersv1.ReservationStatus_RESERVATION_STATUS_SOLD {
				held = &l.Sold
			}
			if l == nil || *held < q {
				// The ledger is corrupt; never paper over it.
				return false, fmt.Errorf("order %s: %s holds fewer units than the reservation", orderID, it.GetSku())
			}
			*held -= q
			if to == ordersv1.ReservationStatus_RESERVATION_STATUS_SOLD {
				l.Sold += q
			} else {
				l.Available += q
			}
		}
		r.Status, r.Reason = to, reason
		return true, nil
	}, skus)
}

// step reads an order's reservation and the levels of skus, lets fn decide,
// and commits the reservation and every level it changed in one atomic
// write, retrying from the top when another writer got there first.
func (st *Stock) step(ctx context.Context, orderID string, fn func(r *ordersv1.Reservation, found bool, levels map[string]*ordersv1.StockLevel) (write bool, err error), skus []string) (*ordersv1.Reservation, error) {
	for attempt := 0; ; attempt++ {
		r, rrev, err := state.Get[ordersv1.Reservation](ctx, st.s, reservationKey(orderID))
		found := err == nil
		if errors.Is(err, state.ErrNotFound) {
			r, err = &ordersv1.Reservation{}, nil
		}
		if err != nil {
			return nil, err
		}
		if found && len(skus) == 0 {
			skus = itemsSKUs(r.GetItems())
		}
		levels := make(map[string]*ordersv1.StockLevel, len(skus))
		revs := make(map[string]uint64, len(skus))
		for _, sku := range skus {
			l, rev, err := state.Get[ordersv1.StockLevel](ctx, st.s, levelKey(sku))
			if errors.Is(err, state.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			levels[sku], revs[sku] = l, rev
		}
		before := make(map[string]*ordersv1.StockLevel, len(levels))
		for sku, l := range levels {
			before[sku] = proto.Clone(l).(*ordersv1.StockLevel)
		}
		write, err := fn(r, found, levels)
		if err != nil || !write {
			return r, err
		}
		writes := []state.Write{{Key: reservationKey(orderID), Value: r, Revision: rrev}}
		for _, sku := range skus {
			if l := levels[sku]; l != nil && !proto.Equal(l, before[sku]) {
				writes = append(writes, state.Write{Key: levelKey(sku), Value: l, Revision: revs[sku]})
			}
		}
		err = st.s.Commit(ctx, writes...)
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, state.ErrConflict) || attempt+1 >= state.MaxAttempts {
			return nil, err
		}
		if err := state.Backoff(ctx, attempt+1); err != nil {
			return nil, err
		}
	}
}

func itemsSKUs(items []*ordersv1.OrderItem) []string {
	skus := make([]string, 0, len(items))
	for _, it := range items {
		skus = append(skus, it.GetSku())
	}
	slices.Sort(skus)
	return slices.Compact(skus)
}
