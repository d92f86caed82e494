// Package releasestock is the inventory.release function: give an order's
// units back when its payment is declined or refunded.
package releasestock

import (
	"context"
	"time"

	"github.com/orderflow/orderflow/functions/internal/inventory"
	"github.com/orderflow/orderflow/functions/internal/orderlog"
	"github.com/orderflow/orderflow/functions/internal/validate"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/retry"
	"github.com/orderflow/orderflow/runtime/state"
)

// Consumers of the events that end in a release.
const (
	DurableDeclined = "inventory-release-declined"
	DurableRefunded = "inventory-release-refunded"
)

// New returns the inventory.release function. It also runs on every
// PaymentDeclined and PaymentRefunded and publishes StockReleased to log,
// which cancels the order; obs (may be nil) learns of each order it cancels.
// It is compensation, which must happen, so it retries without limit.
func New(stock *inventory.Stock, log state.Log, obs orderlog.Observer) function.Definition {
	f := &releaser{stock: stock, log: log, obs: obs, now: time.Now}
	return function.Triggered("release",
		function.WithDescription("Give an order's units back to available; released once. Runs on PaymentDeclined and PaymentRefunded."),
		function.WithRetry(retry.Default.Forever()),
		function.On(orderlog.Stream, orderlog.On(orderlog.PaymentDeclined), DurableDeclined, func(ctx context.Context, ev *ordersv1.PaymentDeclined) error {
			return f.release(ctx, ev.GetOrderId(), "payment declined: "+ev.GetReason())
		}),
		function.On(orderlog.Stream, orderlog.On(orderlog.PaymentRefunded), DurableRefunded, func(ctx context.Context, ev *ordersv1.PaymentRefunded) error {
			return f.release(ctx, ev.GetOrderId(), ev.GetReason())
		}),
		function.Publishes(orderlog.Stream, orderlog.On(orderlog.StockReleased)),
		function.Reads(orderlog.Stream),
		function.WritesBucket(inventory.Bucket))
}

type releaser struct {
	stock *inventory.Stock
	log   state.Log
	obs   orderlog.Observer
	now   func() time.Time
}

// release gives the units back and, once they are back, says so: the order
// is CANCELLED by this event, so only after the release.
func (f *releaser) release(ctx context.Context, id, reason string) error {
	if err := validate.OrderID("order_id", id); err != nil {
		return err
	}
	r, err := f.stock.Release(ctx, id, reason)
	if err != nil {
		return err
	}
	if r.GetStatus() != ordersv1.ReservationStatus_RESERVATION_STATUS_RELEASED {
		return nil // rejected: nothing was held, and the order ends REJECTED
	}
	_, dup, err := f.log.Append(ctx, orderlog.Event(id, orderlog.StockReleased, &ordersv1.StockReleased{OrderId: id, Reason: r.GetReason()}))
	if err == nil && !dup {
		if st, rerr := orderlog.Read(ctx, f.log, id); rerr == nil {
			f.obs.Observe(ordersv1.OrderStatus_ORDER_STATUS_CANCELLED, st.Order.GetCreatedAt().AsTime(), f.now())
		}
	}
	return err
}
