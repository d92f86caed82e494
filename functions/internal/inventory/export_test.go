package inventory

import (
	"context"

	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
)

// Ledgers returns every ledger of sku as stored, for tests that look inside.
func Ledgers(ctx context.Context, st *Stock, sku string) ([]*ordersv1.StockLevel, error) {
	l, err := st.layout(ctx, sku)
	if err != nil {
		return nil, err
	}
	return st.ledgers(ctx, l)
}
