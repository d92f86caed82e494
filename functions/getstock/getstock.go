// Package getstock is the inventory.get function: stock levels of a SKU.
package getstock

import (
	"context"

	"github.com/orderflow/orderflow/functions/internal/inventory"
	"github.com/orderflow/orderflow/functions/internal/validate"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
)

// New returns the inventory.get function.
func New(stock *inventory.Stock) function.Definition {
	get := func(ctx context.Context, req *ordersv1.GetStockRequest) (*ordersv1.GetStockResponse, error) {
		if err := validate.SKU("sku", req.GetSku()); err != nil {
			return nil, err
		}
		l, err := stock.Level(ctx, req.GetSku())
		if err != nil {
			return nil, err
		}
		return &ordersv1.GetStockResponse{Sku: l.GetSku(), Available: l.GetAvailable(), Reserved: l.GetReserved(), Sold: l.GetSold()}, nil
	}
	return function.New("get", get, function.WithDescription("Stock levels of a SKU: available, reserved and sold units."),
		function.ReadsBucket(inventory.Bucket))
}
