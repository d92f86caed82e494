// Package settleorder is the orders.settle function: write an order's
// terminal status once its stock effect is done.
package settleorder

import (
	"context"
	"errors"
	"time"

	"github.com/orderflow/orderflow/functions/internal/orderlog"
	"github.com/orderflow/orderflow/functions/internal/validate"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/retry"
	"github.com/orderflow/orderflow/runtime/state"
)

// Consumers of the events that end an order.
const (
	DurableSold     = "orders-settle-sold"
	DurableRejected = "orders-settle-rejected"
	DurableReleased = "orders-settle-released"
)

// Observer learns of every order this function ends: its terminal status and
// how long it took from creation. Metrics hang here.
type Observer func(status ordersv1.OrderStatus, sinceCreated time.Duration)

// New returns the orders.settle function, appending to log and telling obs
// (which may be nil) of each order it ends. It runs on StockSold,
// StockRejected and StockReleased; recording the end of an order must
// happen, so it retries without limit.
func New(log state.Log, obs Observer) function.Definition {
	if obs == nil {
		obs = func(ordersv1.OrderStatus, time.Duration) {}
	}
	f := &settler{log: log, obs: obs, now: time.Now}
	return function.New("settle", f.request,
		function.WithDescription("Write an order's terminal status once its stock effect is done: CONFIRMED after the sale, REJECTED, or CANCELLED after the release. Idempotent."),
		function.WithRetry(retry.Default.Forever()),
		function.On(orderlog.Stream, orderlog.On(orderlog.StockSold), DurableSold, func(ctx context.Context, ev *ordersv1.StockSold) error {
			return f.trigger(ctx, ev.GetOrderId())
		}),
		function.On(orderlog.Stream, orderlog.On(orderlog.StockRejected), DurableRejected, func(ctx context.Context, ev *ordersv1.StockRejected) error {
			return f.trigger(ctx, ev.GetOrderId())
		}),
		function.On(orderlog.Stream, orderlog.On(orderlog.StockReleased), DurableReleased, func(ctx context.Context, ev *ordersv1.StockReleased) error {
			return f.trigger(ctx, ev.GetOrderId())
		}))
}

type settler struct {
	log state.Log
	obs Observer
	now func() time.Time
}

func (f *settler) request(ctx context.Context, req *ordersv1.SettleOrderRequest) (*ordersv1.SettleOrderResponse, error) {
	if err := validate.OrderID("order_id", req.GetOrderId()); err != nil {
		return nil, err
	}
	st, err := f.settle(ctx, req.GetOrderId())
	if err != nil {
		return nil, err
	}
	return &ordersv1.SettleOrderResponse{OrderId: req.GetOrderId(), Status: st.Order.GetStatus()}, nil
}

func (f *settler) trigger(ctx context.Context, id string) error {
	if err := validate.OrderID("order_id", id); err != nil {
		return err
	}
	_, err := f.settle(ctx, id)
	if errors.Is(err, function.ErrNotFound) {
		return nil
	}
	return err
}

// settle appends the order's terminal event when it is ready for one. The
// append expects the log unchanged since it was read, so a confirmation
// cannot cross a cancellation request; all three terminal events share one
// message id, so the stream keeps at most one of them.
func (f *settler) settle(ctx context.Context, id string) (*orderlog.State, error) {
	for attempt := 1; ; attempt++ {
		st, err := orderlog.Read(ctx, f.log, id)
		if err != nil {
			return nil, err
		}
		event, payload := st.Outcome()
		if event == "" || attempt >= state.MaxAttempts {
			return st, nil
		}
		dup, err := orderlog.Append(ctx, f.log, st, event, payload)
		if err == nil && !dup {
			status := map[string]ordersv1.OrderStatus{
				orderlog.Confirmed: ordersv1.OrderStatus_ORDER_STATUS_CONFIRMED,
				orderlog.Rejected:  ordersv1.OrderStatus_ORDER_STATUS_REJECTED,
				orderlog.Cancelled: ordersv1.OrderStatus_ORDER_STATUS_CANCELLED,
			}[event]
			f.obs(status, f.now().Sub(st.Order.GetCreatedAt().AsTime()))
		}
		if errors.Is(err, state.ErrConflict) {
			err = state.Backoff(ctx, attempt) // another event came first: decide again
		}
		if err != nil {
			return nil, err
		}
	}
}
