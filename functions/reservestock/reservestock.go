// Package reservestock is the inventory.reserve function: hold every item of
// an order, or none.
package reservestock

import (
	"context"
	"fmt"

	"github.com/orderflow/orderflow/functions/internal/inventory"
	"github.com/orderflow/orderflow/functions/internal/validate"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
)

// MaxItems bounds the items of one reservation.
const MaxItems = 100

// New returns the inventory.reserve function.
func New(stock *inventory.Stock) function.Definition {
	return function.New("reserve", func(ctx context.Context, req *ordersv1.ReserveStockRequest) (*ordersv1.ReserveStockResponse, error) {
		if err := Validate(req); err != nil {
			return nil, err
		}
		r, err := stock.Reserve(ctx, req.GetOrderId(), req.GetItems())
		if err != nil {
			return nil, err
		}
		return &ordersv1.ReserveStockResponse{OrderId: r.GetOrderId(), Status: r.GetStatus(), Reason: r.GetReason()}, nil
	}, function.WithDescription("Reserve the items of an order, all or nothing; keyed by order id, so a repeat returns the first outcome."))
}

// Validate checks a reservation request.
func Validate(req *ordersv1.ReserveStockRequest) error {
	if err := validate.OrderID("order_id", req.GetOrderId()); err != nil {
		return err
	}
	items := req.GetItems()
	if len(items) == 0 {
		return function.Invalid("items", "at least one item is required")
	}
	if len(items) > MaxItems {
		return function.Invalid("items", "at most %d items, got %d", MaxItems, len(items))
	}
	seen := make(map[string]bool, len(items))
	for i, it := range items {
		f := fmt.Sprintf("items[%d]", i)
		if err := validate.SKU(f+".sku", it.GetSku()); err != nil {
			return err
		}
		if seen[it.GetSku()] {
			return function.Invalid(f+".sku", "%q appears twice", it.GetSku())
		}
		seen[it.GetSku()] = true
		if it.GetQuantity() <= 0 {
			return function.Invalid(f+".quantity", "must be positive, got %d", it.GetQuantity())
		}
	}
	return nil
}
