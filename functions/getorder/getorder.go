// Package getorder is the orders.get function: an order's current state and
// its event history, folded from the ORDERS stream.
package getorder

import (
	"context"

	"github.com/orderflow/orderflow/functions/internal/orderlog"
	"github.com/orderflow/orderflow/functions/internal/validate"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/state"
)

// New returns the orders.get function, reading log.
func New(log state.Log) function.Definition {
	get := func(ctx context.Context, req *ordersv1.GetOrderRequest) (*ordersv1.GetOrderResponse, error) {
		if err := validate.OrderID("order_id", req.GetOrderId()); err != nil {
			return nil, err
		}
		st, err := orderlog.Read(ctx, log, req.GetOrderId())
		if err != nil {
			return nil, err
		}
		return &ordersv1.GetOrderResponse{Order: st.Order, Events: st.Events}, nil
	}
	return function.New("get", get, function.WithDescription("An order's current state and its event history."),
		function.Reads(orderlog.Stream))
}
