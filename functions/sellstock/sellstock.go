// Package sellstock is the inventory.sell function: move an order's reserved
// units to sold once its payment is captured.
package sellstock

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/orderflow/orderflow/functions/internal/inventory"
	"github.com/orderflow/orderflow/functions/internal/orderlog"
	"github.com/orderflow/orderflow/functions/internal/validate"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/state"
)

// Durable is the consumer of PaymentCharged events.
const Durable = "inventory-sell"

// New returns the inventory.sell function. It also runs on every
// PaymentCharged and publishes StockSold to log, which confirms the order;
// obs (may be nil) learns of each order it confirms.
func New(stock *inventory.Stock, log state.Log, obs orderlog.Observer) function.Definition {
	f := &seller{stock: stock, log: log, obs: obs, now: time.Now}
	return function.Triggered("sell",
		function.WithDescription("Move an order's reserved units to sold; keyed by order id, so a repeat changes nothing. Runs on PaymentCharged."),
		function.On(orderlog.Stream, orderlog.On(orderlog.PaymentCharged), Durable, f.onCharged),
		function.Publishes(orderlog.Stream, orderlog.On(orderlog.StockSold)),
		function.Reads(orderlog.Stream),
		function.WritesBucket(inventory.Bucket))
}

type seller struct {
	stock *inventory.Stock
	log   state.Log
	obs   orderlog.Observer
	now   func() time.Time
}

// onCharged sells a paid order's units and confirms the order with
// StockSold, unless its cancellation was requested first: then the release
// that follows takes the units back. StockSold is appended only if the
// order's log has not moved since it was read, so it never crosses a
// CancelRequested.
func (f *seller) onCharged(ctx context.Context, ev *ordersv1.PaymentCharged) error {
	id := ev.GetOrderId()
	if err := validate.OrderID("order_id", id); err != nil {
		return err
	}
	_, err := f.stock.Sell(ctx, id)
	if errors.Is(err, inventory.ErrWrongState) {
		return nil // released: a cancellation got here first and refunds
	}
	if err != nil {
		return err
	}
	st, stored, err := orderlog.AppendWhen(ctx, f.log, id, func(st *orderlog.State) (string, proto.Message, error) {
		if st.CancelRequested || orderlog.IsTerminal(st.Order.GetStatus()) {
			return "", nil, nil
		}
		return orderlog.StockSold, &ordersv1.StockSold{OrderId: id}, nil
	})
	if stored {
		f.obs.Observe(ordersv1.OrderStatus_ORDER_STATUS_CONFIRMED, st.Order.GetCreatedAt().AsTime(), f.now())
	}
	return err
}
