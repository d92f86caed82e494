// Package orderlog is the order's event log: the subjects and types of
// the saga events, and the fold that turns an order's events into its
// current state. Orders are event-sourced: the ORDERS stream is their only
// record, so storing an order and publishing OrderCreated are one durable
// write, never two that a crash could split.
package orderlog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/deadletter"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/partition"
	"github.com/orderflow/orderflow/runtime/state"
)

// Event names: the last token of the subject ORDER.<slot>.<order_id>.<event>.
const (
	Created         = "created"
	StockReserved   = "stock_reserved"
	StockRejected   = "stock_rejected"
	PaymentCharged  = "payment_charged"
	PaymentDeclined = "payment_declined"
	StockReleased   = "stock_released"
	StockSold       = "stock_sold"
	CancelRequested = "cancel_requested"
	PaymentRefunded = "payment_refunded"
)

// Stream is the stream the order events live in: the runtime splits it
// into partitions (ORDERS_0, ORDERS_1, ...), each holding the events of the
// orders whose slot it owns. An order's slot is the hash of its id
// (partition.Slot), the subject's second token, so any reader finds its
// events from its id alone, whatever the partition count.
const Stream = "ORDERS"

// types are the payload of each event, by its name in the subject. An event
// whose Event-Type header names another type is not the order's: Fold
// ignores it, and it is never replayed.
var types = map[string]proto.Message{
	Created:         &ordersv1.OrderCreated{},
	StockReserved:   &ordersv1.StockReserved{},
	StockRejected:   &ordersv1.StockRejected{},
	PaymentCharged:  &ordersv1.PaymentCharged{},
	PaymentDeclined: &ordersv1.PaymentDeclined{},
	StockReleased:   &ordersv1.StockReleased{},
	StockSold:       &ordersv1.StockSold{},
	CancelRequested: &ordersv1.CancelRequested{},
	PaymentRefunded: &ordersv1.PaymentRefunded{},
}

// ErrForeignEvent marks a message on an order's subject that is not one of
// its events: an unknown event name, or a type that disagrees with it.
var ErrForeignEvent = errors.New("not an order event")

// CheckEvent reports whether a message on subject with type header typ is
// an order event: ORDER.<slot>.<order_id>.<event> on the order's own slot,
// with the event's own type.
func CheckEvent(subject, typ string) error {
	_, err := eventOf(subject, typ)
	return err
}

// eventOf is CheckEvent that also returns the event's name.
func eventOf(subject, typ string) (string, error) {
	id, event := split(subject)
	if id == "" {
		return "", fmt.Errorf("%w: subject %q is not ORDER.<slot>.<order_id>.<event> on the order's slot", ErrForeignEvent, subject)
	}
	want, ok := types[event]
	if !ok {
		return "", fmt.Errorf("%w: unknown event %q", ErrForeignEvent, event)
	}
	if name := string(want.ProtoReflect().Descriptor().FullName()); typ != name {
		return "", fmt.Errorf("%w: %s carries type %q, want %s", ErrForeignEvent, subject, typ, name)
	}
	return event, nil
}

// ReplayTarget is what a dead letter may be replayed as: an order event on
// its own subject, with its type, content type and trace context only, and
// only while its order, read from log, has not ended (replaying an event
// of an ended order would change nothing but its history).
func ReplayTarget(log state.Log) deadletter.Target {
	t := replayTarget
	t.Done = func(ctx context.Context, subject string) (bool, error) {
		st, err := Read(ctx, log, OrderID(subject))
		if errors.Is(err, function.ErrNotFound) {
			return true, nil // no such order: its events cannot be redone
		}
		if err != nil {
			return false, err
		}
		return IsTerminal(st.Order.GetStatus()), nil
	}
	return t
}

var replayTarget = deadletter.Target{
	Stream:  Stream,
	Subject: "ORDER.*.*.*",
	Headers: []string{durableEventType, "Content-Type", "traceparent", "tracestate"},
	Check: func(subject string, header map[string][]string, data []byte) error {
		typ := ""
		for k, v := range header {
			if strings.EqualFold(k, durableEventType) && len(v) > 0 {
				typ = v[0]
			}
		}
		event, err := eventOf(subject, typ)
		if err != nil {
			return err
		}
		if _, err := decode(event, state.Record{Subject: subject, Data: data}); err != nil {
			return fmt.Errorf("%w: %s does not decode as %s: %v", ErrForeignEvent, subject, typ, err)
		}
		return nil
	},
}

// durableEventType is the header that names an event's payload type.
const durableEventType = "Event-Type"

// On is the subject filter of one event across all orders, for triggers.
func On(event string) string { return "ORDER.*.*." + event }

// OrderID returns the order id of an event subject, or "" for a subject
// that is not an order event on its order's slot.
func OrderID(subject string) string {
	id, _ := split(subject)
	return id
}

// split returns the order id and event name of subject, or "" for a
// subject that is not ORDER.<slot>.<order_id>.<event> on the order's slot.
func split(subject string) (id, event string) {
	parts := strings.Split(subject, ".")
	if len(parts) != 4 || parts[0] != "ORDER" || parts[2] == "" || parts[1] != partition.Token(parts[2]) {
		return "", ""
	}
	return parts[2], parts[3]
}

// Subject is where an order's event is published.
func Subject(orderID, event string) string { return prefix(orderID) + event }

// Filter matches every event of one order.
func Filter(orderID string) string { return prefix(orderID) + ">" }

// prefix is "ORDER.<slot>.<order_id>.".
func prefix(orderID string) string {
	return "ORDER." + partition.Token(orderID) + "." + orderID + "."
}

// Event builds the log entry for an order's event. Each event happens once
// per order: a repeat (a redelivered step) finds it stored and is a
// duplicate. This rests on the subject, which only the event's owner may
// publish on, and not on a message id, which is stream-wide and could be
// taken first by anyone who may publish to the stream.
func Event(orderID, event string, payload proto.Message) state.Event {
	return state.Event{Subject: Subject(orderID, event), Once: true, Payload: payload}
}

// IsTerminal reports whether s never changes again.
func IsTerminal(s ordersv1.OrderStatus) bool {
	switch s {
	case ordersv1.OrderStatus_ORDER_STATUS_CONFIRMED,
		ordersv1.OrderStatus_ORDER_STATUS_REJECTED,
		ordersv1.OrderStatus_ORDER_STATUS_CANCELLED:
		return true
	}
	return false
}

// State is an order as its log tells it: the folded order, its history,
// and the saga facts the next steps decide on.
type State struct {
	Order  *ordersv1.Order
	Events []*ordersv1.OrderEvent
	// LastSequence is the stream sequence of the order's last event, for
	// appending with optimistic concurrency (see Append).
	LastSequence uint64

	// CancelRequested is set when a cancellation was requested while the
	// order was not terminal; CancelReason says why.
	CancelRequested bool
	CancelReason    string
}

// Read returns the order's state. An order without events is
// function.ErrNotFound.
func Read(ctx context.Context, log state.Log, orderID string) (*State, error) {
	recs, err := log.Read(ctx, Filter(orderID))
	if err != nil {
		return nil, err
	}
	st, err := Fold(recs)
	if errors.Is(err, function.ErrNotFound) {
		return nil, fmt.Errorf("order %s: %w", orderID, function.ErrNotFound)
	}
	return st, err
}

// ErrNotReadable is returned by ReadExisting when an order known to exist
// (an event of it is in hand) reads as missing, as a server that has just
// restarted can answer. It is transient: retry.
var ErrNotReadable = errors.New("order log not readable yet")

// ReadExisting is Read for an order that exists: a step holding one of its
// events, say. Missing is then a transient condition, never a 404.
func ReadExisting(ctx context.Context, log state.Log, orderID string) (*State, error) {
	st, err := Read(ctx, log, orderID)
	if errors.Is(err, function.ErrNotFound) {
		return nil, fmt.Errorf("order %s: %w", orderID, ErrNotReadable)
	}
	return st, err
}

// Decide is the rule of a decision taken on an order's log: the event to
// append given the order's state, or "" for none.
type Decide func(st *State) (event string, payload proto.Message, err error)

// AppendWhen reads the order's log, lets decide choose an event and appends
// it only if no other event of the order was stored since the read, so two
// decisions taken on the log (StockSold, which confirms, and
// CancelRequested) cannot cross. When another event came first it reads and
// decides again. It returns the state decided on, and whether the event was
// stored now (not by an earlier attempt).
func AppendWhen(ctx context.Context, log state.Log, orderID string, decide Decide) (*State, bool, error) {
	for attempt := 1; ; attempt++ {
		st, err := Read(ctx, log, orderID)
		if err != nil {
			return nil, false, err
		}
		event, payload, err := decide(st)
		if err != nil || event == "" {
			return st, false, err
		}
		e := Event(orderID, event, payload)
		e.Once, e.IfLast = false, &state.Last{Filter: Filter(orderID), Sequence: st.LastSequence}
		_, dup, err := log.Append(ctx, e)
		if again, err := state.Again(ctx, attempt, err); again {
			continue
		} else if err != nil {
			return nil, false, err
		}
		return st, !dup, nil
	}
}

// Fold applies events oldest first. Status only moves forward along the saga
// (PENDING, RESERVED, PAID, then one terminal state: StockSold confirms,
// StockRejected rejects, StockReleased cancels) and a terminal state is never
// left, whatever arrives after it.
func Fold(recs []state.Record) (*State, error) {
	st := &State{Events: make([]*ordersv1.OrderEvent, 0, len(recs))}
	for _, r := range recs {
		// The last sequence counts every message under the order's
		// subjects, as the server's expected-sequence check does.
		if r.Sequence > st.LastSequence {
			st.LastSequence = r.Sequence
		}
		event, err := eventOf(r.Subject, r.Type)
		if err != nil {
			continue // not the order's event: whoever wrote it, it is not history
		}
		msg, err := decode(event, r)
		if err != nil {
			continue // a payload that does not decode is not history either
		}
		ev := &ordersv1.OrderEvent{
			Type:     string(msg.ProtoReflect().Descriptor().Name()),
			Subject:  r.Subject,
			Sequence: r.Sequence,
			Time:     timestamppb.New(r.Time),
		}
		if created, ok := msg.(*ordersv1.OrderCreated); ok && st.Order == nil {
			st.Order = proto.Clone(created.GetOrder()).(*ordersv1.Order)
			st.Order.Status = ordersv1.OrderStatus_ORDER_STATUS_PENDING
		}
		if st.Order == nil {
			continue // events before OrderCreated cannot be placed; ignore them
		}
		st.apply(msg, ev)
		st.Order.UpdatedAt = timestamppb.New(r.Time)
		st.Events = append(st.Events, ev)
	}
	if st.Order == nil {
		return nil, function.ErrNotFound
	}
	return st, nil
}

func (st *State) apply(msg proto.Message, ev *ordersv1.OrderEvent) {
	o := st.Order
	to := o.Status
	switch m := msg.(type) {
	case *ordersv1.StockReserved:
		to = ordersv1.OrderStatus_ORDER_STATUS_RESERVED
	case *ordersv1.PaymentCharged:
		to = ordersv1.OrderStatus_ORDER_STATUS_PAID
	case *ordersv1.PaymentDeclined:
		ev.Reason = m.GetReason()
	case *ordersv1.PaymentRefunded:
		ev.Reason = m.GetReason()
	case *ordersv1.CancelRequested:
		ev.Reason = m.GetReason()
		if !st.CancelRequested && !IsTerminal(o.Status) {
			st.CancelRequested, st.CancelReason = true, m.GetReason()
		}
	case *ordersv1.StockRejected:
		ev.Reason, to = m.GetReason(), ordersv1.OrderStatus_ORDER_STATUS_REJECTED
	case *ordersv1.StockSold:
		// Appended only while no cancellation is requested; a StockSold after
		// one (which the append check prevents) would not confirm.
		if !st.CancelRequested {
			to = ordersv1.OrderStatus_ORDER_STATUS_CONFIRMED
		}
	case *ordersv1.StockReleased:
		ev.Reason, to = m.GetReason(), ordersv1.OrderStatus_ORDER_STATUS_CANCELLED
		// A requested cancellation is the cause, whichever release came
		// first (a charge the refund voided is declined and releases too).
		if st.CancelRequested || ev.Reason == "" {
			ev.Reason = st.CancelReason
		}
	}
	if IsTerminal(o.Status) || to <= o.Status && !IsTerminal(to) {
		return
	}
	o.Status = to
	if IsTerminal(to) {
		o.Reason = ev.Reason
	}
}

// Observer learns of every order a function ends: its terminal status and
// how long it took from creation. The saga's metrics hang here.
type Observer func(status ordersv1.OrderStatus, sinceCreated time.Duration)

// Observe tells o, if there is one, that an order created at created ended
// with status now.
func (o Observer) Observe(status ordersv1.OrderStatus, created, now time.Time) {
	if o != nil {
		o(status, now.Sub(created))
	}
}

// decode decodes an event that CheckEvent accepted.
func decode(event string, r state.Record) (proto.Message, error) {
	msg := types[event].ProtoReflect().New().Interface()
	if err := proto.Unmarshal(r.Data, msg); err != nil {
		return nil, fmt.Errorf("event %s #%d: %w", r.Subject, r.Sequence, err)
	}
	return msg, nil
}
