package createorder_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/orderflow/orderflow/functions/createorder"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
)

func TestValidateTotals(t *testing.T) {
	tests := []struct {
		items []*ordersv1.OrderItem
		want  int64
	}{
		{[]*ordersv1.OrderItem{{Sku: "A", Quantity: 2, UnitPriceMinor: 1999}}, 3998},
		{[]*ordersv1.OrderItem{{Sku: "A", Quantity: 1, UnitPriceMinor: 0}, {Sku: "B", Quantity: 3, UnitPriceMinor: 5}}, 15},
		{[]*ordersv1.OrderItem{{Sku: "A", Quantity: 1, UnitPriceMinor: math.MaxInt64}}, math.MaxInt64},
	}
	for _, tt := range tests {
		got, err := createorder.Validate(&ordersv1.CreateOrderRequest{CustomerId: "c", Currency: "EUR", Items: tt.items})
		if err != nil || got != tt.want {
			t.Errorf("Validate(%v) = %d, %v; want %d", tt.items, got, err, tt.want)
		}
	}
	_, err := createorder.Validate(&ordersv1.CreateOrderRequest{CustomerId: "c", Currency: "EUR", Items: []*ordersv1.OrderItem{
		{Sku: "A", Quantity: 1, UnitPriceMinor: math.MaxInt64}, {Sku: "B", Quantity: 1, UnitPriceMinor: 1},
	}})
	if function.Code(err) != 400 {
		t.Errorf("a total past int64 = %v, want 400", err)
	}
}

func ExampleValidate() {
	_, err := createorder.Validate(&ordersv1.CreateOrderRequest{
		CustomerId: "c-1",
		Currency:   "USD",
		Items:      []*ordersv1.OrderItem{{Sku: "SKU-1", Quantity: 0, UnitPriceMinor: 1999}},
	})
	fmt.Println(function.Code(err), err)
	// Output: 400 items[0].quantity: must be 1..1000000, got 0
}
