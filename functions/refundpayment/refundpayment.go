// Package refundpayment is the payments.refund function: settle the payment
// side of a cancellation.
package refundpayment

import (
	"context"

	"github.com/orderflow/orderflow/functions/internal/gateway"
	"github.com/orderflow/orderflow/functions/internal/orderlog"
	"github.com/orderflow/orderflow/functions/internal/payments"
	"github.com/orderflow/orderflow/functions/internal/validate"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/retry"
	"github.com/orderflow/orderflow/runtime/state"
)

// Durable is the consumer of CancelRequested events.
const Durable = "payments-refund"

// New returns the payments.refund function. It also runs on every
// CancelRequested and publishes PaymentRefunded to log. It is compensation,
// which must happen, so it retries without limit.
func New(p *payments.Payments, log state.Log) function.Definition {
	f := &refunder{p: p, log: log}
	return function.Triggered("refund",
		function.WithDescription("Refund an order's capture, or void its charge if nothing was captured; refunded once. Runs on CancelRequested."),
		function.WithRetry(retry.Default.Forever()),
		function.On(orderlog.Stream, orderlog.On(orderlog.CancelRequested), Durable, f.onCancel),
		function.Publishes(orderlog.Stream, orderlog.On(orderlog.PaymentRefunded)),
		function.WritesBucket(payments.Bucket),
		function.WritesBucket(gateway.Bucket))
}

type refunder struct {
	p   *payments.Payments
	log state.Log
}

func (f *refunder) onCancel(ctx context.Context, ev *ordersv1.CancelRequested) error {
	id := ev.GetOrderId()
	if err := validate.OrderID("order_id", id); err != nil {
		return err
	}
	_, refunded, err := f.p.Refund(ctx, id, ev.GetReason())
	if err != nil {
		return err
	}
	_, _, err = f.log.Append(ctx, orderlog.Event(id, orderlog.PaymentRefunded, &ordersv1.PaymentRefunded{OrderId: id, Refunded: refunded, Reason: ev.GetReason()}))
	return err
}
