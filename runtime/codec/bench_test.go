package codec_test

import (
	"testing"

	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/codec"
)

var benchOrder = &ordersv1.CreateOrderRequest{
	CustomerId: "c-1",
	Currency:   "USD",
	Items:      []*ordersv1.OrderItem{{Sku: "SKU-1", Quantity: 2, UnitPriceMinor: 1999}, {Sku: "SKU-2", Quantity: 1, UnitPriceMinor: 500}},
}

func BenchmarkDecode(b *testing.B) {
	for _, enc := range []codec.Encoding{codec.Protobuf, codec.JSON} {
		data, err := codec.Encode(enc, benchOrder)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(enc.String(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := codec.Decode(codec.Detect("", data), data, &ordersv1.CreateOrderRequest{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkEncode(b *testing.B) {
	resp := &ordersv1.GetStockResponse{Sku: "SKU-1", Available: 10}
	for _, enc := range []codec.Encoding{codec.Protobuf, codec.JSON} {
		b.Run(enc.String(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := codec.Encode(enc, resp); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDetect(b *testing.B) {
	data := []byte(`  {"sku":"SKU-1"}`)
	b.ReportAllocs()
	for b.Loop() {
		if codec.Detect("", data) != codec.JSON {
			b.Fatal("not JSON")
		}
	}
}
