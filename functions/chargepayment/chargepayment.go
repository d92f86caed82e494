// Package chargepayment is the payments.charge function: capture an order's
// amount through the gateway, at most once per order.
package chargepayment

import (
	"context"

	"github.com/orderflow/orderflow/functions/internal/gateway"
	"github.com/orderflow/orderflow/functions/internal/orderlog"
	"github.com/orderflow/orderflow/functions/internal/payments"
	"github.com/orderflow/orderflow/functions/internal/validate"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/state"
)

// Durable is the consumer of StockReserved events.
const Durable = "payments-charge"

// New returns the payments.charge function. It also runs on every
// StockReserved and publishes PaymentCharged or PaymentDeclined to log.
func New(p *payments.Payments, log state.Log) function.Definition {
	f := &charger{p: p, log: log}
	return function.Triggered("charge",
		function.WithDescription("Charge an order through the payment gateway; keyed by order id, so a repeat never captures twice. Runs on StockReserved."),
		function.On(orderlog.Stream, orderlog.On(orderlog.StockReserved), Durable, f.onReserved),
		function.Publishes(orderlog.Stream, orderlog.On(orderlog.PaymentCharged), orderlog.On(orderlog.PaymentDeclined)),
		function.WritesBucket(payments.Bucket),
		function.WritesBucket(gateway.Bucket))
}

type charger struct {
	p   *payments.Payments
	log state.Log
}

// onReserved charges an order whose stock is held. A gateway failure is
// returned as a transient error: the message comes back with backoff and
// the retry uses the same idempotency key.
func (f *charger) onReserved(ctx context.Context, ev *ordersv1.StockReserved) error {
	req := &ordersv1.ChargePaymentRequest{OrderId: ev.GetOrderId(), CustomerId: ev.GetCustomerId(), Amount: ev.GetAmount()}
	if err := Validate(req); err != nil {
		return err
	}
	rec, err := f.p.Charge(ctx, req.GetOrderId(), req.GetCustomerId(), req.GetAmount())
	if err != nil {
		return err
	}
	id := ev.GetOrderId()
	switch rec.GetStatus() {
	case ordersv1.PaymentStatus_PAYMENT_STATUS_CHARGED:
		_, _, err = f.log.Append(ctx, orderlog.Event(id, orderlog.PaymentCharged, &ordersv1.PaymentCharged{OrderId: id, Amount: rec.GetAmount()}))
	case ordersv1.PaymentStatus_PAYMENT_STATUS_DECLINED:
		_, _, err = f.log.Append(ctx, orderlog.Event(id, orderlog.PaymentDeclined, &ordersv1.PaymentDeclined{OrderId: id, Reason: rec.GetReason()}))
	}
	return err // refunded or voided: a cancellation got here first
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
