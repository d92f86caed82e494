// Package restock is the inventory.restock function: add units of a SKU.
package restock

import (
	"context"

	"github.com/orderflow/orderflow/functions/internal/inventory"
	"github.com/orderflow/orderflow/functions/internal/validate"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/retry"
)

// MaxQuantity bounds one restock.
const MaxQuantity = 1_000_000

// New returns the inventory.restock function.
func New(stock *inventory.Stock) function.Definition {
	restock := func(ctx context.Context, req *ordersv1.RestockRequest) (*ordersv1.RestockResponse, error) {
		if err := validate.SKU("sku", req.GetSku()); err != nil {
			return nil, err
		}
		if q := req.GetQuantity(); q <= 0 || q > MaxQuantity {
			return nil, function.Invalid("quantity", "must be 1..%d, got %d", MaxQuantity, q)
		}
		l, err := stock.Restock(ctx, req.GetSku(), req.GetQuantity())
		if err != nil {
			return nil, err
		}
		return &ordersv1.RestockResponse{Sku: l.GetSku(), Available: l.GetAvailable(), Reserved: l.GetReserved(), Sold: l.GetSold()}, nil
	}
	// A restock is not idempotent (it carries no id), so the runtime must not
	// retry it: a retry after a write whose reply was lost would add twice.
	once := retry.Default
	once.MaxAttempts = 1
	return function.New("restock", restock,
		function.WithDescription("Add units of a SKU; replies with its new stock levels. Not retried: a caller that lost the reply checks inventory.get first."),
		function.WithRetry(once))
}
