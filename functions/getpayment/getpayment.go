// Package getpayment is the payments.get function: an order's payment, with
// the captures and refunds counted in the gateway's own ledger.
package getpayment

import (
	"context"

	"github.com/orderflow/orderflow/functions/internal/gateway"
	"github.com/orderflow/orderflow/functions/internal/payments"
	"github.com/orderflow/orderflow/functions/internal/validate"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
)

// New returns the payments.get function.
func New(p *payments.Payments) function.Definition {
	return function.New("get", func(ctx context.Context, req *ordersv1.GetPaymentRequest) (*ordersv1.GetPaymentResponse, error) {
		if err := validate.OrderID("order_id", req.GetOrderId()); err != nil {
			return nil, err
		}
		return p.Get(ctx, req.GetOrderId())
	}, function.WithDescription("An order's payment: status, amount, gateway attempts, and captures and refunds from the gateway's ledger."),
		function.ReadsBucket(payments.Bucket), function.ReadsBucket(gateway.Bucket))
}
