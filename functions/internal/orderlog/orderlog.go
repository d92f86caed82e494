// Package orderlog is the order's event log: the subjects and message ids of
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

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/timestamppb"

	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/state"
)

// Event names: the last token of the subject ORDER.<order_id>.<event>.
const (
	Created         = "created"
	StockReserved   = "stock_reserved"
	StockRejected   = "stock_rejected"
	PaymentCharged  = "payment_charged"
	PaymentDeclined = "payment_declined"
	StockReleased   = "stock_released"
	StockSold       = "stock_sold"
	Confirmed       = "confirmed"
	Rejected        = "rejected"
	Cancelled       = "cancelled"
)

// terminalID is the message id shared by the three terminal events, so the
// stream's deduplication keeps at most one of them per order.
const terminalID = "terminal"

// Subject is where an order's event is published.
func Subject(orderID, event string) string { return "ORDER." + orderID + "." + event }

// Filter matches every event of one order.
func Filter(orderID string) string { return "ORDER." + orderID + ".>" }

// EventID is the deterministic Nats-Msg-Id of an order's event.
func EventID(orderID, event string) string {
	switch event {
	case Confirmed, Rejected, Cancelled:
		event = terminalID
	}
	return orderID + "/" + event
}

// Event builds the log entry for an order's event.
func Event(orderID, event string, payload proto.Message) state.Event {
	return state.Event{Subject: Subject(orderID, event), ID: EventID(orderID, event), Payload: payload}
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

// Read returns the order's current state and history. An order without
// events is function.ErrNotFound.
func Read(ctx context.Context, log state.Log, orderID string) (*ordersv1.Order, []*ordersv1.OrderEvent, error) {
	recs, err := log.Read(ctx, Filter(orderID))
	if err != nil {
		return nil, nil, err
	}
	o, hist, err := Fold(recs)
	if errors.Is(err, function.ErrNotFound) {
		return nil, nil, fmt.Errorf("order %s: %w", orderID, function.ErrNotFound)
	}
	return o, hist, err
}

// Fold applies events oldest first. Status only moves forward along the saga
// (PENDING, RESERVED, PAID, then one terminal state) and a terminal state is
// never left, whatever arrives after it.
func Fold(recs []state.Record) (*ordersv1.Order, []*ordersv1.OrderEvent, error) {
	var o *ordersv1.Order
	hist := make([]*ordersv1.OrderEvent, 0, len(recs))
	for _, r := range recs {
		msg, err := decode(r)
		if err != nil {
			return nil, nil, err
		}
		ev := &ordersv1.OrderEvent{
			Type:     string(msg.ProtoReflect().Descriptor().Name()),
			Subject:  r.Subject,
			Sequence: r.Sequence,
			Time:     timestamppb.New(r.Time),
		}
		if created, ok := msg.(*ordersv1.OrderCreated); ok && o == nil {
			o = proto.Clone(created.GetOrder()).(*ordersv1.Order)
			o.Status = ordersv1.OrderStatus_ORDER_STATUS_PENDING
		}
		if o == nil {
			continue // events before OrderCreated cannot be placed; ignore them
		}
		apply(o, msg, ev)
		o.UpdatedAt = timestamppb.New(r.Time)
		hist = append(hist, ev)
	}
	if o == nil {
		return nil, nil, function.ErrNotFound
	}
	return o, hist, nil
}

func apply(o *ordersv1.Order, msg proto.Message, ev *ordersv1.OrderEvent) {
	to := o.Status
	switch m := msg.(type) {
	case *ordersv1.StockReserved:
		to = ordersv1.OrderStatus_ORDER_STATUS_RESERVED
	case *ordersv1.PaymentCharged:
		to = ordersv1.OrderStatus_ORDER_STATUS_PAID
	case *ordersv1.StockRejected:
		ev.Reason = m.GetReason()
	case *ordersv1.PaymentDeclined:
		ev.Reason = m.GetReason()
	case *ordersv1.StockReleased:
		ev.Reason = m.GetReason()
	case *ordersv1.OrderConfirmed:
		to = ordersv1.OrderStatus_ORDER_STATUS_CONFIRMED
	case *ordersv1.OrderRejected:
		ev.Reason, to = m.GetReason(), ordersv1.OrderStatus_ORDER_STATUS_REJECTED
	case *ordersv1.OrderCancelled:
		ev.Reason, to = m.GetReason(), ordersv1.OrderStatus_ORDER_STATUS_CANCELLED
	}
	if IsTerminal(o.Status) || to <= o.Status && !IsTerminal(to) {
		return
	}
	o.Status = to
	if IsTerminal(to) {
		o.Reason = ev.Reason
	}
}

func decode(r state.Record) (proto.Message, error) {
	name := r.Type
	if name == "" {
		return nil, fmt.Errorf("event %s #%d: no %s header", r.Subject, r.Sequence, "Event-Type")
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(name))
	if err != nil || !strings.HasPrefix(name, "orders.v1.") {
		return nil, fmt.Errorf("event %s #%d: unknown type %q", r.Subject, r.Sequence, name)
	}
	msg := mt.New().Interface()
	if err := proto.Unmarshal(r.Data, msg); err != nil {
		return nil, fmt.Errorf("event %s #%d: %w", r.Subject, r.Sequence, err)
	}
	return msg, nil
}
