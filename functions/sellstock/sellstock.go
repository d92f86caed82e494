// Package sellstock is the inventory.sell function: move an order's reserved
// units to sold once its payment is captured.
package sellstock

import (
	"context"
	"errors"

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
// PaymentCharged and publishes StockSold to log.
func New(stock *inventory.Stock, log state.Log) function.Definition {
	f := &seller{stock: stock, log: log}
	return function.New("sell", f.request,
		function.WithDescription("Move an order's reserved units to sold; keyed by order id, so a repeat changes nothing. Runs on PaymentCharged."),
		function.On(orderlog.Stream, orderlog.On(orderlog.PaymentCharged), Durable, f.onCharged))
}

type seller struct {
	stock *inventory.Stock
	log   state.Log
}

func (f *seller) request(ctx context.Context, req *ordersv1.SellStockRequest) (*ordersv1.SellStockResponse, error) {
	if err := validate.OrderID("order_id", req.GetOrderId()); err != nil {
		return nil, err
	}
	r, err := f.stock.Sell(ctx, req.GetOrderId())
	if err != nil {
		return nil, err
	}
	return &ordersv1.SellStockResponse{OrderId: req.GetOrderId(), Status: r.GetStatus()}, nil
}

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
	_, _, err = f.log.Append(ctx, orderlog.Event(id, orderlog.StockSold, &ordersv1.StockSold{OrderId: id}))
	return err
}
