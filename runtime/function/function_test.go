package function_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
)

func TestChainOrder(t *testing.T) {
	var got []string
	mw := func(name string) function.Middleware {
		return func(next function.Handler) function.Handler {
			return func(ctx context.Context, req proto.Message) (proto.Message, error) {
				got = append(got, name+">")
				resp, err := next(ctx, req)
				got = append(got, "<"+name)
				return resp, err
			}
		}
	}
	h := function.Chain(func(context.Context, proto.Message) (proto.Message, error) {
		got = append(got, "handler")
		return nil, nil
	}, mw("a"), mw("b"))
	if _, err := h(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if want := "a> b> handler <b <a"; strings.Join(got, " ") != want {
		t.Errorf("call order %q, want %q", strings.Join(got, " "), want)
	}
}

func TestCode(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, 0},
		{function.Invalid("items[0].quantity", "must be positive"), 400},
		{fmt.Errorf("order x: %w", function.ErrNotFound), 404},
		{fmt.Errorf("key reused: %w", function.ErrConflict), 409},
		{fmt.Errorf("call: %w", context.DeadlineExceeded), 504},
		{errors.New("disk on fire"), 500},
	}
	for _, tt := range tests {
		if got := function.Code(tt.err); got != tt.want {
			t.Errorf("Code(%v) = %d, want %d", tt.err, got, tt.want)
		}
		if got, want := function.IsPermanent(tt.err), tt.want >= 400 && tt.want < 500; got != want {
			t.Errorf("IsPermanent(%v) = %v, want %v", tt.err, got, want)
		}
	}
}

func TestFieldErrorNamesTheField(t *testing.T) {
	err := function.Invalid("items[2].sku", "required")
	if got, want := err.Error(), "items[2].sku: required"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	var fe *function.FieldError
	if !errors.As(err, &fe) || fe.Field != "items[2].sku" {
		t.Errorf("errors.As FieldError = %v, field %q", fe, fe.Field)
	}
}

func TestNewDescribesTheContract(t *testing.T) {
	def := function.New("get", func(_ context.Context, req *ordersv1.GetStockRequest) (*ordersv1.GetStockResponse, error) {
		return &ordersv1.GetStockResponse{Sku: req.GetSku(), Available: 7}, nil
	}, function.WithDescription("levels"))
	if got, want := string(def.Request.FullName()), "orders.v1.GetStockRequest"; got != want {
		t.Errorf("Request = %s, want %s", got, want)
	}
	if got, want := string(def.Response.FullName()), "orders.v1.GetStockResponse"; got != want {
		t.Errorf("Response = %s, want %s", got, want)
	}
	if def.Description != "levels" {
		t.Errorf("Description = %q", def.Description)
	}
	req := def.NewRequest().(*ordersv1.GetStockRequest)
	req.Sku = "SKU-1"
	resp, err := def.Handler(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.(*ordersv1.GetStockResponse); got.GetSku() != "SKU-1" || got.GetAvailable() != 7 {
		t.Errorf("Handler = %v", got)
	}
	if _, err := def.Handler(context.Background(), &ordersv1.GetOrderRequest{}); err == nil {
		t.Error("Handler accepted a request of the wrong type")
	}
}

func TestCallFromContext(t *testing.T) {
	if got := function.CallFrom(context.Background()); got.Name() != "." {
		t.Errorf("CallFrom(empty) = %+v", got)
	}
	ctx := function.WithCall(context.Background(), function.Call{
		Service: "orders", Function: "create",
		Header: function.Header{"Idempotency-Key": {"k-1"}},
	})
	c := function.CallFrom(ctx)
	// Header names match in any letter case, as HTTP gateways may lower-case them.
	if c.Name() != "orders.create" || c.Header.Get("Idempotency-Key") != "k-1" || c.Header.Get("idempotency-key") != "k-1" || c.Header.Get("Other") != "" {
		t.Errorf("CallFrom = %+v", c)
	}
}
