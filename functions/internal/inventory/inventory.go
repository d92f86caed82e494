// Package inventory is the stock ledger shared by the inventory functions.
//
// Stock is conserved (restocked = available + reserved + sold) whatever
// crashes, and each order's reservation is applied, sold or released exactly
// once, with single-key compare-and-set writes only.
//
// A SKU's stock is split over SubLedgers ledgers (sku.<sku>.<n>); an
// order's units of the SKU live in one of them, its home, as an entry that
// names the order, so that moving them and recording that they moved is
// one write, and orders of one SKU spread over the ledgers (see ledgers.go).
// An entry lives only while its order is in flight: a ledger holds the
// orders in flight at its home, never a SKU's history, so its size and the
// cost of a step stay the same however many orders went before. At most
// MaxHolds orders are in flight at a ledger; a reserve past that waits for
// room, so a record stays under 4 KiB whatever the load.
//
// The order's reservation record (order.<id>) says where the order stands
// and serialises what may touch its units: the step that moves them first
// moves the record (compare-and-set) into an intent, SELLING or RELEASING,
// that no other step can take over from it except by completing the same
// intent. Within an intent every line is idempotent: an entry that is gone
// was done (nothing else could have removed it), and a release that takes
// sold units back marks the line RETURNED until it ends; a releaser that
// finds neither entry nor mark reads the record again before it takes the
// line back (the marks go only after the record says RELEASED).
//
// The protocol, per order:
//   - reserve: hold each line at its home (available to reserved, entry
//     HELD), then create the record RESERVED; or, when a line is short,
//     create the record REJECTED and give back what was held. A multi-line
//     order is checked line by line first, so one that is short writes only
//     its record.
//   - sell: RESERVED to SELLING; each line reserved to sold, entry gone;
//     SELLING to SOLD.
//   - release: RESERVED (or SOLD) to RELEASING; each line back to
//     available, from reserved (entry gone) or from sold (entry RETURNED);
//     RELEASING to RELEASED; the RETURNED marks go. A release that meets
//     SELLING completes the sale first.
//
// Each HELD entry names the reserve attempt that placed it and the record
// names the attempt it adopted, so a hold placed by a late duplicate
// (which read no record yet) is recognised and given back by whoever meets
// it: the duplicate itself, a later step of the order, or a repeat.
package inventory

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/state"
)

// Bucket is the KV bucket of stock levels and reservations.
const Bucket = "stock"

// legacyTombstoneTTL is how long a RELEASED entry of the old layout is
// kept; none are written any more.
const legacyTombstoneTTL = time.Hour

// ErrWrongState is returned when a reservation cannot take the requested
// step (selling a released reservation, say). It is permanent.
var ErrWrongState = fmt.Errorf("%w: reservation in wrong state", function.ErrConflict)

// Stock is the ledger on a state.Store.
type Stock struct {
	s       state.Store
	now     func() time.Time
	layouts layouts
	// tidied is when each long-held entry (order@ledger) was last checked.
	tidyMu sync.Mutex
	tidied map[string]time.Time
}

// New returns the ledger kept in s.
func New(s state.Store) *Stock {
	return &Stock{s: s, now: time.Now, layouts: layouts{known: map[string]layout{}}, tidied: map[string]time.Time{}}
}

func reservationKey(order string) string { return "order." + order }

// IsOrderRecord reports whether key holds an order's reservation, which
// expires with the order (a SKU's ledgers never do).
func IsOrderRecord(key string) bool { return strings.HasPrefix(key, "order.") }

const (
	reserved  = ordersv1.ReservationStatus_RESERVATION_STATUS_RESERVED
	rejected  = ordersv1.ReservationStatus_RESERVATION_STATUS_REJECTED
	released  = ordersv1.ReservationStatus_RESERVATION_STATUS_RELEASED
	sold      = ordersv1.ReservationStatus_RESERVATION_STATUS_SOLD
	selling   = ordersv1.ReservationStatus_RESERVATION_STATUS_SELLING
	releasing = ordersv1.ReservationStatus_RESERVATION_STATUS_RELEASING

	held     = ordersv1.HoldState_HOLD_STATE_HELD
	tomb     = ordersv1.HoldState_HOLD_STATE_RELEASED // old layout
	returned = ordersv1.HoldState_HOLD_STATE_RETURNED
)

// Restocks are remembered this long, and this many at most per ledger, so
// that a retried restock with the same key adds once.
const (
	RestockWindow = 24 * time.Hour
	maxRestocks   = 16
)

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
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

// errReleaseEnded stops a releaser that read the record before another
// releaser ended the release.
var errReleaseEnded = errors.New("release ended")

// errReleasing stops a hold: the order's release is underway or done.
var errReleasing = errors.New("release underway")

// ErrLedgerFull is returned by a reserve that waited fullWait (or as long
// as its call may) for room at a ledger holding MaxHolds orders. It is
// function.ErrUnavailable too: the host retries it in place without
// spending attempts, as it rides out an outage.
var ErrLedgerFull = errors.New("stock ledger full of orders in flight")

// MaxHolds bounds the orders in flight at one ledger, so that a record
// stays under 4 KiB whatever the load (ledger_test.go checks the worst
// case: 64-byte SKU and order ids, every map full). A SKU has 8 ledgers:
// 232 orders can hold its units at once; a reserve past that waits for a
// sale or a release to make room, with its message kept in progress.
// Waiting cannot deadlock: an order holds its lines in SKU order, so a
// chain of waiting reserves ends at a ledger whose orders are all reserved
// and move on to be sold or released.
const MaxHolds = 29

// fullWait is how long a reserve waits for room at a full ledger before it
// fails (transient) and is retried by the trigger's policy.
const fullWait = 30 * time.Second

// ledger applies fn to the ledger under key with compare-and-set; fn
// returns state.ErrNoChange to skip the write. Marks past their time are
// dropped on the way, with a write that happens anyway.
func (st *Stock) ledger(ctx context.Context, key string, fn func(l *ordersv1.StockLevel, exists bool) error) error {
	var old []heldEntry
	_, err := state.Modify(ctx, st.s, key, func(l *ordersv1.StockLevel, exists bool) error {
		now := st.now()
		old = oldHolds(l, now, old[:0])
		pruned := false
		for id, h := range l.Holds {
			if h.State == tomb && now.Sub(time.Unix(h.ReleasedUnix, 0)) > legacyTombstoneTTL {
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
	if err == nil {
		st.tidy(ctx, key, old)
	}
	return err
}

// homeKey is the ledger of sku where orderID's units live.
func (st *Stock) homeKey(ctx context.Context, sku, orderID string) (string, error) {
	l, err := st.layout(ctx, sku)
	if err != nil {
		return "", err
	}
	return l.keys[l.home(orderID)], nil
}

// Reserve holds every item for the order, or none when one is short. The
// outcome is recorded under the order id; a repeat returns it unchanged, so
// a redelivered request never reserves twice and a rejection stays a
// rejection even if stock arrives later.
//
// A reserve that fails may have placed a hold all the same (its write
// stored, its reply lost). When the message is redelivered, the next
// reserve adopts it; but when another delivery of the same message (a
// consumer leader that changed while the first ran) already ended the
// order, nothing would come back for it: so a failed reserve settles at
// once, giving back a hold that the order's record does not adopt.
func (st *Stock) Reserve(ctx context.Context, orderID string, items []*ordersv1.OrderItem) (*ordersv1.Reservation, error) {
	var holding bool
	r, err := st.reserve(ctx, orderID, items, &holding)
	if err != nil && holding {
		st.settle(ctx, orderID, items)
	}
	return r, err
}

// settleWait bounds the settling of a failed reserve.
const settleWait = 5 * time.Second

// settle gives back what a failed reserve may have left beside a record
// that was written without it. Best effort: with no record yet, a hold
// left is adopted by the next reserve of the order.
func (st *Stock) settle(ctx context.Context, orderID string, items []*ordersv1.OrderItem) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleWait)
	defer cancel()
	r, _, err := st.record(ctx, orderID)
	if err != nil {
		return
	}
	switch r.Status {
	case reserved, selling, sold:
		_ = st.dropStrays(ctx, orderID, r)
	case rejected, released:
		_ = st.cleanup(ctx, orderID, sortedItems(items))
	}
}

// reserve is Reserve; it sets *holding once it has tried to place a hold.
func (st *Stock) reserve(ctx context.Context, orderID string, items []*ordersv1.OrderItem, holding *bool) (*ordersv1.Reservation, error) {
	items = sortedItems(items)
	attempt := newAttempt()
	for try := 1; ; try++ {
		r, _, err := st.record(ctx, orderID)
		switch {
		case err == nil && (r.Status == reserved || r.Status == sold || r.Status == selling):
			// Another attempt recorded first: give back holds of ours it
			// did not adopt, and any a crashed late attempt left.
			return r, st.dropStrays(ctx, orderID, r)
		case err == nil && r.Status == releasing:
			return r, nil // its release gives back what is held
		case err == nil:
			// Rejected or released: give back any hold a reserve that lost the
			// race placed, and report the outcome.
			return r, st.cleanup(ctx, orderID, items)
		case !errors.Is(err, state.ErrNotFound):
			return nil, err
		}

		r = &ordersv1.Reservation{OrderId: orderID, Items: items, Status: reserved, Attempts: map[string]string{}}
		// A multi-line order that is short somewhere is found by reading,
		// and rejected with its record alone, instead of holding lines
		// only to give them back.
		if len(items) > 1 {
			if short, err := st.short(ctx, items); err != nil {
				return nil, err
			} else if short != nil {
				r.Status, r.Reason = rejected, short.reason
			}
		}
		for _, it := range items {
			if r.Status != reserved {
				break
			}
			*holding = true
			owner, err := st.hold(ctx, orderID, it, attempt)
			var short errShort
			switch {
			case errors.As(err, &short):
				r.Status, r.Reason = rejected, short.reason
			case errors.Is(err, errReleasing):
				r.Status = releasing // a record appeared meanwhile; read it
			case err != nil:
				return nil, err
			default:
				r.Attempts[it.GetSku()] = owner
			}
		}
		if r.Status == releasing {
			continue
		}
		// The record decides: RESERVED only if all items are held, and a
		// REJECTED record is written before the holds go back, so a
		// duplicate reserve can never record RESERVED over a hold given back.
		_, err = st.s.Put(ctx, reservationKey(orderID), r, 0)
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

// short returns the first line whose SKU has fewer units than it asks, all
// ledgers together, or nil.
func (st *Stock) short(ctx context.Context, items []*ordersv1.OrderItem) (*errShort, error) {
	for _, it := range items {
		l, err := st.Level(ctx, it.GetSku())
		if errors.Is(err, function.ErrNotFound) {
			return &errShort{reason: fmt.Sprintf("unknown SKU %s", it.GetSku()), unknown: true}, nil
		}
		if err != nil {
			return nil, err
		}
		if l.GetAvailable() < it.GetQuantity() {
			return &errShort{reason: fmt.Sprintf("insufficient stock for %s: %d available, %d requested", it.GetSku(), l.GetAvailable(), it.GetQuantity())}, nil
		}
	}
	return nil, nil
}

// hold moves an item's units from available to reserved under an entry for
// the order at its home, borrowing units from the SKU's other ledgers when
// the home is short. An entry already there means the hold is in place;
// owner is the attempt that placed it.
func (st *Stock) hold(ctx context.Context, orderID string, it *ordersv1.OrderItem, attempt string) (owner string, err error) {
	l, err := st.layout(ctx, it.GetSku())
	if err != nil {
		return "", err
	}
	home := l.home(orderID)
	var full *backoff
	for try := 1; ; try++ {
		var avail int32
		var exists bool
		owner, avail, exists, err = st.holdOnce(ctx, l.keys[home], len(l.keys) > 1, orderID, it, attempt)
		if errors.Is(err, ErrLedgerFull) {
			if full == nil {
				full = newBackoff(fullWait)
			}
			if werr := full.wait(ctx); werr != nil {
				// Back-pressure, not a failure: the host waits for room
				// without spending the step's attempts (a payable order
				// cancelled because its SKU was busy was the container
				// test's finding).
				return "", fmt.Errorf("%s ledger %d: %w for %s: %w", it.GetSku(), home, err, time.Since(full.start).Round(time.Millisecond), function.ErrUnavailable)
			}
			try--
			continue
		}
		var short errShort
		if !errors.As(err, &short) {
			return owner, err
		}
		// The home is short (or not written yet): borrow from the SKU's
		// other ledgers, if they have the units, and try again.
		enough, berr := st.borrow(ctx, it.GetSku(), l, home, it.GetQuantity()-avail)
		if berr != nil {
			return "", berr
		}
		if !enough {
			// A rejection is final, so it rests on the whole SKU read
			// afresh: a SKU that reads as missing right after a server
			// restart gets another look, and units that are on the move
			// or were taken from under the borrow are tried again.
			sum, lerr := st.Level(ctx, it.GetSku())
			switch {
			case errors.Is(lerr, function.ErrNotFound) && !exists && try == 1:
			case errors.Is(lerr, function.ErrNotFound):
				return "", errShort{reason: fmt.Sprintf("unknown SKU %s", it.GetSku()), unknown: true}
			case lerr != nil:
				return "", lerr
			case sum.GetAvailable() < it.GetQuantity():
				return "", errShort{reason: fmt.Sprintf("insufficient stock for %s: %d available, %d requested", it.GetSku(), sum.GetAvailable(), it.GetQuantity())}
			}
			if err := sleep(ctx, time.Duration(1+mathrand.IntN(10*try))*time.Millisecond); err != nil {
				return "", err
			}
		}
		if try >= maxHoldTries {
			// Enough units in all, never at hand: others keep taking
			// them. Not a rejection; the reserve is retried.
			return "", fmt.Errorf("%s: %d tries to hold %d units that others kept taking", it.GetSku(), try, it.GetQuantity())
		}
	}
}

// maxHoldTries bounds the rounds of borrowing a hold makes before it gives
// up for now.
const maxHoldTries = 20

// inFlight counts the entries of orders in flight at l (tombstones of the
// old layout are not: they go by age).
func inFlight(l *ordersv1.StockLevel) int {
	n := 0
	for _, h := range l.GetHolds() {
		if h.GetState() != tomb {
			n++
		}
	}
	return n
}

// holdOnce places the hold at key; capped applies MaxHolds (to sub-ledgers:
// a SKU's single record of the old layout has no room to spare elsewhere).
func (st *Stock) holdOnce(ctx context.Context, key string, capped bool, orderID string, it *ordersv1.OrderItem, attempt string) (owner string, avail int32, exists bool, err error) {
	err = st.ledger(ctx, key, func(l *ordersv1.StockLevel, ok bool) error {
		owner, exists, avail = "", ok, l.GetAvailable()
		if h, found := l.Holds[orderID]; found {
			if h.State != held {
				return errReleasing
			}
			owner = h.Attempt
			return state.ErrNoChange
		}
		if l.Available < it.GetQuantity() {
			return errShort{reason: fmt.Sprintf("insufficient stock for %s", it.GetSku())}
		}
		if capped && inFlight(l) >= MaxHolds {
			return ErrLedgerFull
		}
		l.Sku = it.GetSku()
		l.Available -= it.GetQuantity()
		l.Reserved += it.GetQuantity()
		if l.Holds == nil {
			l.Holds = map[string]*ordersv1.Hold{}
		}
		l.Holds[orderID] = &ordersv1.Hold{Quantity: it.GetQuantity(), State: held, Attempt: attempt, HeldUnix: st.now().Unix()}
		owner = attempt
		return nil
	})
	return owner, avail, exists, err
}

// stray reports whether h is a hold that r did not adopt: placed by a late
// duplicate reserve.
func stray(h *ordersv1.Hold, r *ordersv1.Reservation, sku string) bool {
	return h.State == held && h.Attempt != r.GetAttempts()[sku]
}

// giveBack moves a HELD entry's units back to available and removes it.
func giveBack(l *ordersv1.StockLevel, orderID string, h *ordersv1.Hold) {
	l.Reserved -= h.Quantity
	l.Available += h.Quantity
	delete(l.Holds, orderID)
}

// eachLine applies fn, with compare-and-set, to the home ledger of each of
// the order's lines in turn.
func (st *Stock) eachLine(ctx context.Context, orderID string, items []*ordersv1.OrderItem, fn func(l *ordersv1.StockLevel, it *ordersv1.OrderItem) error) error {
	for _, it := range items {
		key, err := st.homeKey(ctx, it.GetSku(), orderID)
		if err != nil {
			return err
		}
		if err := st.ledger(ctx, key, func(l *ordersv1.StockLevel, _ bool) error { return fn(l, it) }); err != nil {
			return err
		}
	}
	return nil
}

// dropStrays gives back the holds of a reserved or sold order that its
// record did not adopt.
func (st *Stock) dropStrays(ctx context.Context, orderID string, r *ordersv1.Reservation) error {
	return st.eachLine(ctx, orderID, r.GetItems(), func(l *ordersv1.StockLevel, it *ordersv1.OrderItem) error {
		h, ok := l.Holds[orderID]
		if !ok || !stray(h, r, it.GetSku()) {
			return state.ErrNoChange
		}
		giveBack(l, orderID, h)
		return nil
	})
}

// cleanup gives back the order's HELD units for an order whose record is
// final without them (rejected, released): a reserve that lost the race
// placed them.
func (st *Stock) cleanup(ctx context.Context, orderID string, items []*ordersv1.OrderItem) error {
	return st.eachLine(ctx, orderID, items, func(l *ordersv1.StockLevel, _ *ordersv1.OrderItem) error {
		h, ok := l.Holds[orderID]
		switch {
		case ok && h.State == held:
			giveBack(l, orderID, h)
		case ok && h.State == returned:
			// The release from sold has ended: the marks have done their
			// work (also those of a releaser that stopped before removing
			// them).
			delete(l.Holds, orderID)
		default:
			return state.ErrNoChange
		}
		return nil
	})
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
			r.Status = selling
			rev, err = st.s.Put(ctx, reservationKey(orderID), r, rev)
			if again, err := state.Again(ctx, attempt, err); again {
				continue // released meanwhile, or another seller: read again
			} else if err != nil {
				return nil, err
			}
		case selling: // a seller stopped halfway: take over
		default:
			return r, fmt.Errorf("%w: order %s is %s, cannot be sold", ErrWrongState, orderID, r.Status)
		}
		r, err = st.completeSale(ctx, orderID, r, rev)
		if again, err := state.Again(ctx, attempt, err); again {
			continue // another seller finished first: the next read says so
		} else if err != nil {
			return nil, err
		}
		return r, nil
	}
}

// completeSale moves every line of a SELLING reservation (at revision rev)
// to sold and records SOLD. A line whose entry is gone was sold already:
// nothing else could have taken it while the record says SELLING.
func (st *Stock) completeSale(ctx context.Context, orderID string, r *ordersv1.Reservation, rev uint64) (*ordersv1.Reservation, error) {
	err := st.eachLine(ctx, orderID, r.GetItems(), func(l *ordersv1.StockLevel, it *ordersv1.OrderItem) error {
		h, ok := l.Holds[orderID]
		switch {
		case !ok || h.State != held:
			return state.ErrNoChange // sold already
		case stray(h, r, it.GetSku()):
			giveBack(l, orderID, h) // a late duplicate's: ours was sold already
			return nil
		}
		l.Reserved -= h.Quantity
		l.Sold += h.Quantity
		delete(l.Holds, orderID)
		return nil
	})
	if err != nil {
		return nil, err
	}
	r.Status = sold
	if _, err := st.s.Put(ctx, reservationKey(orderID), r, rev); err != nil {
		return nil, err
	}
	return r, nil
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
			_, err = st.s.Put(ctx, reservationKey(orderID), r, 0)
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
		switch r.Status {
		case released, rejected:
			return r, st.cleanup(ctx, orderID, r.GetItems())
		case selling:
			// A sale is under way: complete it, then take the units back.
			_, err = st.completeSale(ctx, orderID, r, rev)
			if again, err := state.Again(ctx, attempt, err); again || err == nil {
				continue
			} else {
				return nil, err
			}
		case reserved, sold:
			r.FromSold, r.Status, r.Reason = r.Status == sold, releasing, reason
			rev, err = st.s.Put(ctx, reservationKey(orderID), r, rev)
			if again, err := state.Again(ctx, attempt, err); again {
				continue // sold or released meanwhile: decide again
			} else if err != nil {
				return nil, err
			}
		case releasing: // a releaser stopped halfway: take over
		default:
			return nil, fmt.Errorf("order %s: reservation in unknown state %s", orderID, r.Status)
		}
		r, err = st.completeRelease(ctx, orderID, r, rev)
		if again, err := state.Again(ctx, attempt, err); again {
			continue // another releaser finished first
		} else if err != nil {
			return nil, err
		}
		return r, nil
	}
}

// completeRelease gives every line of a RELEASING reservation (at
// revision rev) back and records RELEASED. From reserved, a line whose entry
// is gone was given back already; from sold, a line given back is marked
// RETURNED until the release ends.
func (st *Stock) completeRelease(ctx context.Context, orderID string, r *ordersv1.Reservation, rev uint64) (*ordersv1.Reservation, error) {
	err := st.eachLine(ctx, orderID, r.GetItems(), func(l *ordersv1.StockLevel, it *ordersv1.OrderItem) error {
		h, ok := l.Holds[orderID]
		changed := false
		if ok && stray(h, r, it.GetSku()) { // a late duplicate's hold: give it back too
			giveBack(l, orderID, h)
			ok, changed = false, true
		}
		switch {
		case !r.GetFromSold() && ok && h.State == held:
			giveBack(l, orderID, h)
			return nil
		case !r.GetFromSold(), ok && (h.State == returned || h.State == tomb):
			if changed {
				return nil
			}
			return state.ErrNoChange // done already
		case ok:
			// From sold, every adopted hold was sold: a HELD one left is a
			// ledger that lies; never paper over it.
			return fmt.Errorf("order %s: %s still holds units of a sold reservation", orderID, it.GetSku())
		}
		// No entry, from sold: the line is not taken back yet, unless the
		// release has ended since r was read and its marks are gone. The
		// record read after this ledger read tells which; a mark removed
		// in between changes the ledger and fails this compare-and-set.
		cur, _, err := st.record(ctx, orderID)
		if err != nil {
			return err
		}
		if cur.Status != releasing {
			return errReleaseEnded
		}
		return takeBackSold(l, orderID, it, st.now())
	})
	if errors.Is(err, errReleaseEnded) {
		cur, _, err := st.record(ctx, orderID)
		return cur, err
	}
	if err != nil {
		return nil, err
	}
	r.Status = released
	if _, err := st.s.Put(ctx, reservationKey(orderID), r, rev); err != nil {
		return nil, err
	}
	if r.GetFromSold() {
		return r, st.cleanup(ctx, orderID, r.GetItems())
	}
	return r, nil
}

// takeBackSold moves a sold line back to available and marks it RETURNED.
func takeBackSold(l *ordersv1.StockLevel, orderID string, it *ordersv1.OrderItem, now time.Time) error {
	q := it.GetQuantity()
	if l.Sold < q {
		// The ledger is corrupt; never paper over it.
		return fmt.Errorf("order %s: %s holds fewer sold units than the reservation", orderID, it.GetSku())
	}
	l.Sold -= q
	l.Available += q
	if l.Holds == nil {
		l.Holds = map[string]*ordersv1.Hold{}
	}
	l.Holds[orderID] = &ordersv1.Hold{Quantity: q, State: returned, ReleasedUnix: now.Unix()}
	return nil
}

// backoff waits 5ms, then twice as long each time up to 250ms, until its
// time is up.
type backoff struct {
	next            time.Duration
	start, deadline time.Time
}

func newBackoff(limit time.Duration) *backoff {
	now := time.Now()
	return &backoff{next: 5 * time.Millisecond, start: now, deadline: now.Add(limit)}
}

// wait sleeps the next step, or fails when the time is up or ctx ends.
func (b *backoff) wait(ctx context.Context) error {
	if !time.Now().Before(b.deadline) {
		return context.DeadlineExceeded
	}
	if err := sleep(ctx, b.next); err != nil {
		return err
	}
	b.next = min(2*b.next, 250*time.Millisecond)
	return nil
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
