// Package chargepayment is the payments.charge function: capture an order's
// amount through the gateway, at most once per order.
package chargepayment

import (
	"context"

	"github.com/orderflow/orderflow/functions/internal/payments"
	"github.com/orderflow/orderflow/functions/internal/validate"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
)

// New returns the payments.charge function.
func New(p *payments.Payments) function.Definition {
	return function.New("charge", func(ctx context.Context, req *ordersv1.ChargePaymentRequest) (*ordersv1.ChargePaymentResponse, error) {
		if err := Validate(req); err != nil {
			return nil, err
		}
		rec, err := p.Charge(ctx, req.GetOrderId(), req.GetCustomerId(), req.GetAmount())
		if err != nil {
			return nil, err
		}
		return &ordersv1.ChargePaymentResponse{OrderId: rec.GetOrderId(), Status: rec.GetStatus(), Reason: rec.GetReason()}, nil
	}, function.WithDescription("Charge an order through the payment gateway; keyed by order id, so a repeat never captures twice."))
}

// Validate checks a charge request.
func Validate(req *ordersv1.ChargePaymentRequest) error {
	if err := validate.OrderID("order_id", req.GetOrderId()); err != nil {
		return err
	}
	if err := validate.CustomerID("customer_id", req.GetCustomerId()); err != nil {
		return err
	}
	if req.GetAmount() == nil {
		return function.Invalid("amount", "required")
	}
	if a := req.GetAmount().GetAmountMinor(); a < 0 {
		return function.Invalid("amount.amount_minor", "must not be negative, got %d", a)
	}
	return validate.Currency("amount.currency", req.GetAmount().GetCurrency())
}
