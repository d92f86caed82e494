// Package reservestock is the inventory.reserve function: hold every item of
// an order, or none.
package reservestock

import (
	"context"
	"time"

	"github.com/orderflow/orderflow/functions/internal/inventory"
	"github.com/orderflow/orderflow/functions/internal/orderlog"
	"github.com/orderflow/orderflow/functions/internal/validate"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/state"
)

// Durable is the consumer of OrderCreated events.
const Durable = "inventory-reserve"

// New returns the inventory.reserve function. It also runs on every
// OrderCreated and publishes StockReserved or StockRejected (which rejects
// the order) to log; obs (may be nil) learns of each order it rejects.
func New(stock *inventory.Stock, log state.Log, obs orderlog.Observer) function.Definition {
	f := &reserver{stock: stock, log: log, obs: obs, now: time.Now}
	return function.Triggered("reserve",
		function.WithDescription("Reserve the items of an order, all or nothing; keyed by order id, so a repeat returns the first outcome. Runs on OrderCreated."),
		function.On(orderlog.Stream, orderlog.On(orderlog.Created), Durable, f.onCreated),
		function.Publishes(orderlog.Stream, orderlog.On(orderlog.StockReserved), orderlog.On(orderlog.StockRejected)),
		function.WritesBucket(inventory.Bucket))
}

type reserver struct {
	stock *inventory.Stock
	log   state.Log
	obs   orderlog.Observer
	now   func() time.Time
}

// onCreated reserves a new order's stock and tells the saga how it went. A
// redelivery finds the reservation made and publishes the same event again,
// which the stream drops as a duplicate.
func (f *reserver) onCreated(ctx context.Context, ev *ordersv1.OrderCreated) error {
	o := ev.GetOrder()
	function.Annotate(ctx, "order_id", o.GetOrderId())
	if err := Validate(&ordersv1.ReserveStockRequest{OrderId: o.GetOrderId(), Items: o.GetItems()}); err != nil {
		return err
	}
	r, err := f.stock.Reserve(ctx, o.GetOrderId(), o.GetItems())
	if err != nil {
		return err
	}
	var e state.Event
	switch r.GetStatus() {
	case ordersv1.ReservationStatus_RESERVATION_STATUS_RESERVED:
		e = orderlog.Event(o.GetOrderId(), orderlog.StockReserved, &ordersv1.StockReserved{
			OrderId:    o.GetOrderId(),
			CustomerId: o.GetCustomerId(),
			Amount:     &ordersv1.Money{AmountMinor: o.GetTotalMinor(), Currency: o.GetCurrency()},
		})
	case ordersv1.ReservationStatus_RESERVATION_STATUS_REJECTED:
		e = orderlog.Event(o.GetOrderId(), orderlog.StockRejected, &ordersv1.StockRejected{OrderId: o.GetOrderId(), Reason: r.GetReason()})
	default:
		return nil // released or sold: a cancellation got here first
	}
	_, dup, err := f.log.Append(ctx, e)
	if err == nil && !dup && r.GetStatus() == ordersv1.ReservationStatus_RESERVATION_STATUS_REJECTED {
		f.obs.Observe(ordersv1.OrderStatus_ORDER_STATUS_REJECTED, o.GetCreatedAt().AsTime(), f.now())
	}
	return err
}

// Validate checks a reservation request.
func Validate(req *ordersv1.ReserveStockRequest) error {
	if err := validate.OrderID("order_id", req.GetOrderId()); err != nil {
		return err
	}
	return validate.Items("items", req.GetItems())
}
