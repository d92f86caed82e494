// Package payments keeps the payment record of each order and charges and
// refunds through the gateway, keyed by order id so that an order is captured
// at most once however often a charge is retried or redelivered.
package payments

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/orderflow/orderflow/functions/internal/gateway"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/state"
)

// Bucket is the KV bucket of payment records.
const Bucket = "payments"

// Payments is the payment ledger of orderflow.
type Payments struct {
	s  state.Store
	gw *gateway.Gateway
}

// New returns the ledger kept in s, charging through gw.
func New(s state.Store, gw *gateway.Gateway) *Payments { return &Payments{s: s, gw: gw} }

// errSettled stops a Modify when the record already has its outcome.
var errSettled = errors.New("payment settled")

func settled(p *ordersv1.Payment) bool {
	return p.GetStatus() != ordersv1.PaymentStatus_PAYMENT_STATUS_UNSPECIFIED
}

// Charge captures amount for the order once. A repeat returns the recorded
// outcome. The gateway's ledger is the record of a charge that succeeds at
// once, so that path writes nothing here; a gateway failure is counted as an
// attempt in this ledger and returned as a transient error, and the next
// call retries with the same key and records its outcome with the count.
func (p *Payments) Charge(ctx context.Context, orderID, customerID string, amount *ordersv1.Money) (*ordersv1.Payment, error) {
	check := func(r *ordersv1.Payment) error {
		if r.GetAmount() != nil && !proto.Equal(r.GetAmount(), amount) {
			return fmt.Errorf("%w: order %s is being charged %v, not %v", function.ErrConflict, orderID, r.GetAmount(), amount)
		}
		if settled(r) {
			return errSettled
		}
		return nil
	}
	prior, _, err := state.Get[ordersv1.Payment](ctx, p.s, orderID)
	switch {
	case err == nil:
		if err := check(prior); errors.Is(err, errSettled) {
			return prior, nil
		} else if err != nil {
			return nil, err
		}
	case errors.Is(err, state.ErrNotFound):
		prior = nil
	default:
		return nil, err
	}
	res, gerr := p.gw.Capture(ctx, orderID, amount)
	if gerr == nil && prior == nil {
		return outcome(&ordersv1.Payment{OrderId: orderID, CustomerId: customerID, Amount: amount, Attempts: 1}, res), nil
	}
	rec, err := state.Modify(ctx, p.s, orderID, func(r *ordersv1.Payment, _ bool) error {
		if err := check(r); err != nil {
			return err
		}
		if r.GetAmount() == nil { // new, or voided before any charge
			r.OrderId, r.CustomerId, r.Amount = orderID, customerID, amount
		}
		r.Attempts++
		if gerr == nil {
			outcome(r, res)
		}
		return nil
	})
	switch {
	case gerr != nil:
		return nil, errors.Join(gerr, err)
	case errors.Is(err, errSettled):
		return p.record(ctx, orderID)
	}
	return rec, err
}

func outcome(r *ordersv1.Payment, res gateway.Result) *ordersv1.Payment {
	if res.Captured {
		r.Status = ordersv1.PaymentStatus_PAYMENT_STATUS_CHARGED
	} else {
		r.Status, r.Reason = ordersv1.PaymentStatus_PAYMENT_STATUS_DECLINED, res.Reason
	}
	return r
}

// Refund returns the order's capture, if the gateway recorded one, even when
// this ledger never learned of it (a crash after the capture, before the
// record). Without a capture it voids the charge, so a charge still in flight
// is declined. Refunding twice refunds once.
func (p *Payments) Refund(ctx context.Context, orderID, reason string) (*ordersv1.Payment, bool, error) {
	e, err := p.gw.Refund(ctx, orderID)
	if err != nil {
		return nil, false, err
	}
	refunded := e.GetRefunds() > 0
	rec, err := state.Modify(ctx, p.s, orderID, func(r *ordersv1.Payment, _ bool) error {
		if r.GetOrderId() == "" {
			r.OrderId, r.Amount, r.Attempts = orderID, e.GetAmount(), gatewayAttempts(e)
		}
		switch {
		case refunded:
			r.Status, r.Reason = ordersv1.PaymentStatus_PAYMENT_STATUS_REFUNDED, reason
		case e.GetDeclined():
			r.Status, r.Reason = ordersv1.PaymentStatus_PAYMENT_STATUS_DECLINED, e.GetDeclineReason()
		case r.Status != ordersv1.PaymentStatus_PAYMENT_STATUS_DECLINED:
			r.Status, r.Reason = ordersv1.PaymentStatus_PAYMENT_STATUS_VOIDED, reason
		}
		return nil
	})
	return rec, refunded, err
}

// gatewayAttempts is what the gateway's ledger says of the calls for a
// charge this ledger has no record of: one that captured or was declined.
func gatewayAttempts(e *ordersv1.GatewayEntry) int32 {
	if e.GetCaptures() > 0 || e.GetDeclined() {
		return 1
	}
	return 0
}

func (p *Payments) record(ctx context.Context, orderID string) (*ordersv1.Payment, error) {
	r, _, err := state.Get[ordersv1.Payment](ctx, p.s, orderID)
	if errors.Is(err, state.ErrNotFound) {
		return nil, fmt.Errorf("payment %s: %w", orderID, function.ErrNotFound)
	}
	return r, err
}

// Get reports the order's payment with the capture and refund counts of the
// gateway's own ledger. A charge that succeeded at once has no record here;
// the gateway's ledger tells it.
func (p *Payments) Get(ctx context.Context, orderID string) (*ordersv1.GetPaymentResponse, error) {
	r, _, err := state.Get[ordersv1.Payment](ctx, p.s, orderID)
	if err != nil && !errors.Is(err, state.ErrNotFound) {
		return nil, err
	}
	e, err := p.gw.Entry(ctx, orderID)
	if err != nil {
		return nil, err
	}
	if r == nil {
		if e.GetCaptures() == 0 && !e.GetDeclined() && !e.GetVoided() {
			return nil, fmt.Errorf("payment %s: %w", orderID, function.ErrNotFound)
		}
		r = &ordersv1.Payment{OrderId: orderID, Amount: e.GetAmount(), Attempts: gatewayAttempts(e)}
		switch {
		case e.GetRefunds() > 0:
			r.Status = ordersv1.PaymentStatus_PAYMENT_STATUS_REFUNDED
		case e.GetCaptures() > 0:
			r.Status = ordersv1.PaymentStatus_PAYMENT_STATUS_CHARGED
		case e.GetDeclined():
			r.Status = ordersv1.PaymentStatus_PAYMENT_STATUS_DECLINED
		default:
			r.Status = ordersv1.PaymentStatus_PAYMENT_STATUS_VOIDED
		}
	}
	return &ordersv1.GetPaymentResponse{
		OrderId:     orderID,
		Status:      r.GetStatus(),
		AmountMinor: r.GetAmount().GetAmountMinor(),
		Currency:    r.GetAmount().GetCurrency(),
		Attempts:    r.GetAttempts(),
		Captures:    e.GetCaptures(),
		Refunds:     e.GetRefunds(),
	}, nil
}
