// Package restock is the inventory.restock function: add units of a SKU.
package restock

import (
	"context"

	"github.com/orderflow/orderflow/functions/internal/inventory"
	"github.com/orderflow/orderflow/functions/internal/validate"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
)

// New returns the inventory.restock function.
func New(stock *inventory.Stock) function.Definition {
	restock := func(ctx context.Context, req *ordersv1.RestockRequest) (*ordersv1.RestockResponse, error) {
		if err := validate.SKU("sku", req.GetSku()); err != nil {
			return nil, err
		}
		if q := req.GetQuantity(); q <= 0 || q > validate.MaxQuantity {
			return nil, function.Invalid("quantity", "must be 1..%d, got %d", validate.MaxQuantity, q)
		}
		key := function.CallFrom(ctx).Header.Get(validate.IdempotencyKeyHeader)
		if err := validate.IdempotencyKey(key); err != nil {
			return nil, err
		}
		l, err := stock.Restock(ctx, req.GetSku(), req.GetQuantity(), key)
		if err != nil {
			return nil, err
		}
		return &ordersv1.RestockResponse{Sku: l.GetSku(), Available: l.GetAvailable(), Reserved: l.GetReserved(), Sold: l.GetSold()}, nil
	}
	// Without a key a retry after a write whose reply was lost would add
	// twice, so the runtime never retries it; a caller retries with its
	// Idempotency-Key.
	return function.New("restock", restock,
		function.WithDescription("Add units of a SKU; replies with its new stock levels. Send an Idempotency-Key header to retry safely: a repeat within 24h adds once."),
		function.NotIdempotent(),
		function.ForOperators(),
		function.WritesBucket(inventory.Bucket))
}
