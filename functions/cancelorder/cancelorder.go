// Package cancelorder is the orders.cancel function: request the
// cancellation of an order that is not terminal yet. It is also how the saga
// compensates a step that failed for good: it runs on every dead letter of an
// order's event and cancels that order, which refunds any capture, releases
// the stock and ends the order CANCELLED with the failure as the reason.
package cancelorder

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/orderflow/orderflow/functions/internal/orderlog"
	"github.com/orderflow/orderflow/functions/internal/validate"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	runtimev1 "github.com/orderflow/orderflow/proto/gen/runtime/v1"
	"github.com/orderflow/orderflow/runtime/deadletter"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/retry"
	"github.com/orderflow/orderflow/runtime/state"
)

// Durable is the consumer of dead letters.
const Durable = "orders-compensate"

// ErrTerminal is returned for an order that has already ended.
var ErrTerminal = fmt.Errorf("%w: order already ended", function.ErrConflict)

// New returns the orders.cancel function, appending to log.
func New(log state.Log) function.Definition {
	f := &canceller{log: log}
	return function.New("cancel", f.request,
		function.WithDescription("Cancel an order that has not ended: its capture is refunded, its stock released, and it ends CANCELLED. Runs on dead letters to compensate a failed step."),
		function.WithRetry(retry.Default.Forever()),
		function.On(deadletter.Stream, deadletter.Subjects, Durable, f.onDeadLetter),
		function.Publishes(orderlog.Stream, orderlog.On(orderlog.CancelRequested)),
		function.Reads(orderlog.Stream))
}

type canceller struct{ log state.Log }

func (f *canceller) request(ctx context.Context, req *ordersv1.CancelOrderRequest) (*ordersv1.CancelOrderResponse, error) {
	if err := validate.OrderID("order_id", req.GetOrderId()); err != nil {
		return nil, err
	}
	reason := req.GetReason()
	if err := validate.Reason("reason", reason); err != nil {
		return nil, err
	}
	if reason == "" {
		reason = "cancelled on request"
	}
	st, err := f.cancel(ctx, req.GetOrderId(), reason)
	if err != nil {
		return nil, err
	}
	return &ordersv1.CancelOrderResponse{OrderId: req.GetOrderId(), Status: st.Order.GetStatus()}, nil
}

// onDeadLetter compensates an order whose step failed for good. Replaying a
// dead letter of an order that already ended changes nothing.
func (f *canceller) onDeadLetter(ctx context.Context, dl *runtimev1.DeadLetter) error {
	id := orderlog.OrderID(dl.GetSubject())
	if id == "" || validate.OrderID("order_id", id) != nil {
		return nil // not an order's event: nothing to compensate
	}
	function.Annotate(ctx, "order_id", id)
	reason := fmt.Sprintf("%s gave up after %d attempts: %s", dl.GetFunction(), dl.GetAttempts(), dl.GetError())
	reason = validate.TruncateReason(reason)
	_, err := f.cancel(ctx, id, reason)
	if errors.Is(err, function.ErrConflict) {
		return nil // ended already: nothing to compensate
	}
	return err // not found is retried a few times by the runtime
}

// cancel appends CancelRequested unless the order ended or is already being
// cancelled; the append never crosses a confirmation (orderlog.AppendWhen).
func (f *canceller) cancel(ctx context.Context, id, reason string) (*orderlog.State, error) {
	st, _, err := orderlog.AppendWhen(ctx, f.log, id, func(st *orderlog.State) (string, proto.Message, error) {
		switch {
		case orderlog.IsTerminal(st.Order.GetStatus()):
			return "", nil, fmt.Errorf("order %s is %s: %w", id, st.Order.GetStatus(), ErrTerminal)
		case st.CancelRequested:
			return "", nil, nil
		}
		return orderlog.CancelRequested, &ordersv1.CancelRequested{OrderId: id, Reason: reason}, nil
	})
	return st, err
}
