// Package createorder is the orders.create function: validate an order,
// assign its id and publish OrderCreated, replying only after JetStream has
// stored it.
package createorder

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderflow/orderflow/functions/internal/orderlog"
	"github.com/orderflow/orderflow/functions/internal/validate"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/state"
)

// IdempotencyKeyHeader lets a client retry a create safely.
const IdempotencyKeyHeader = validate.IdempotencyKeyHeader

// Admission bounds the saga's backlog: while more than Max orders are
// created and not yet ended, creates are refused with a 503 and a hint to
// retry, instead of piling up orders whose end-to-end time grows without
// bound.
type Admission struct {
	// Max orders in flight; 0: no limit.
	Max int
	// Backlog counts the orders in flight: the unfinished messages of the
	// saga's Consumers on the order log.
	Backlog   func(context.Context) (int, error)
	Consumers []string
}

// New returns the orders.create function, appending to log; ids keyed by
// an Idempotency-Key are derived with the secret kept in secrets.
func New(log state.Log, secrets state.Store, adm Admission) function.Definition {
	c := &creator{log: log, now: time.Now, ids: &ids{secrets: secrets, log: log, now: time.Now}, adm: adm}
	return function.New("create", c.create,
		function.WithDescription("Validate an order, assign its id and publish OrderCreated; replies after the JetStream ack. Send an Idempotency-Key header to retry safely."),
		function.Publishes(orderlog.Stream, orderlog.On(orderlog.Created)),
		function.Reads(orderlog.Stream),
		function.WritesBucket(SecretsBucket),
		function.WatchesConsumers(orderlog.Stream, adm.Consumers...))
}

type creator struct {
	log state.Log
	now func() time.Time
	ids *ids
	adm Admission
}

func (c *creator) create(ctx context.Context, req *ordersv1.CreateOrderRequest) (*ordersv1.CreateOrderResponse, error) {
	total, err := Validate(req)
	if err != nil {
		return nil, err
	}
	if err := c.admit(ctx); err != nil {
		return nil, err
	}
	key := function.CallFrom(ctx).Header.Get(IdempotencyKeyHeader)
	if err := validate.IdempotencyKey(key); err != nil {
		return nil, err
	}

	var id string
	if key != "" {
		// The id follows from the key, so a retry whose first reply was lost
		// finds the first order.
		var legacy string
		if id, legacy, err = c.ids.forKey(ctx, req.GetCustomerId(), key); err != nil {
			return nil, err
		}
		if legacy != "" {
			if st, err := orderlog.Read(ctx, c.log, legacy); err == nil {
				return replay(st.Order, req, key)
			} else if !errors.Is(err, function.ErrNotFound) {
				return nil, err
			}
		}
	} else {
		u, err := uuid.NewV7()
		if err != nil {
			return nil, fmt.Errorf("order id: %w", err)
		}
		id = u.String()
	}

	function.Annotate(ctx, "order_id", id)
	order := &ordersv1.Order{
		OrderId:        id,
		CustomerId:     req.GetCustomerId(),
		Currency:       req.GetCurrency(),
		Items:          req.GetItems(),
		TotalMinor:     total,
		Status:         ordersv1.OrderStatus_ORDER_STATUS_PENDING,
		IdempotencyKey: key,
		CreatedAt:      timestamppb.New(c.now()),
	}
	// One write, no read first: expecting no earlier event of the order
	// catches a repeat, whenever it comes, and the first order is the answer.
	e := orderlog.Event(id, orderlog.Created, &ordersv1.OrderCreated{Order: order})
	e.Once, e.IfLast = false, &state.Last{Filter: orderlog.Filter(id)}
	_, dup, err := c.log.Append(ctx, e)
	if dup || errors.Is(err, state.ErrConflict) {
		st, err := orderlog.ReadExisting(ctx, c.log, id)
		if err != nil {
			return nil, err
		}
		return replay(st.Order, req, key)
	}
	if err != nil {
		return nil, err
	}
	return &ordersv1.CreateOrderResponse{OrderId: id, Status: order.Status}, nil
}

// admit refuses a create while the backlog is at its limit. A retry with
// the same Idempotency-Key later is safe.
func (c *creator) admit(ctx context.Context) error {
	if c.adm.Max <= 0 || c.adm.Backlog == nil {
		return nil
	}
	n, err := c.adm.Backlog(ctx)
	if err != nil {
		return err
	}
	if n >= c.adm.Max {
		return fmt.Errorf("%w: %d orders in flight, the limit is %d: retry in a second (with the same Idempotency-Key)", function.ErrBusy, n, c.adm.Max)
	}
	return nil
}

// replay answers a repeated key with the first order, unless the request
// differs from it: reusing a key for another order is a client bug.
func replay(o *ordersv1.Order, req *ordersv1.CreateOrderRequest, key string) (*ordersv1.CreateOrderResponse, error) {
	same := o.GetCustomerId() == req.GetCustomerId() && o.GetCurrency() == req.GetCurrency() &&
		len(o.GetItems()) == len(req.GetItems())
	for i := 0; same && i < len(o.GetItems()); i++ {
		same = proto.Equal(o.GetItems()[i], req.GetItems()[i])
	}
	if !same {
		return nil, fmt.Errorf("%w: %s %q was already used for order %s with different contents", function.ErrConflict, IdempotencyKeyHeader, key, o.GetOrderId())
	}
	return &ordersv1.CreateOrderResponse{OrderId: o.GetOrderId(), Status: o.GetStatus()}, nil
}

// Validate checks a create request field by field and returns the order
// total. The first fault found is reported, naming its field.
func Validate(req *ordersv1.CreateOrderRequest) (int64, error) {
	if err := validate.CustomerID("customer_id", req.GetCustomerId()); err != nil {
		return 0, err
	}
	if err := validate.Currency("currency", req.GetCurrency()); err != nil {
		return 0, err
	}
	if err := validate.Items("items", req.GetItems()); err != nil {
		return 0, err
	}
	var total int64
	for i, it := range req.GetItems() {
		if p := it.GetUnitPriceMinor(); p < 0 {
			return 0, function.Invalid(fmt.Sprintf("items[%d].unit_price_minor", i), "must not be negative, got %d", p)
		}
		hi, line := bits.Mul64(uint64(it.GetQuantity()), uint64(it.GetUnitPriceMinor()))
		if hi != 0 || line > math.MaxInt64 || total > math.MaxInt64-int64(line) {
			return 0, function.Invalid(fmt.Sprintf("items[%d].unit_price_minor", i), "order total overflows")
		}
		total += int64(line)
	}
	return total, nil
}
