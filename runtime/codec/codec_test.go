package codec_test

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/codec"
	"github.com/orderflow/orderflow/runtime/function"
)

func TestDetect(t *testing.T) {
	tests := []struct {
		name        string
		contentType string
		body        string
		want        codec.Encoding
	}{
		{"object", "", `{"sku":"a"}`, codec.JSON},
		{"leading space", "", " \n\t{}", codec.JSON},
		{"content type", "application/json", ``, codec.JSON},
		{"content type with charset", "Application/JSON; charset=utf-8", `x`, codec.JSON},
		{"binary", "", "\x0a\x01a", codec.Protobuf},
		{"empty", "", "", codec.Protobuf},
		{"json array is not an object", "", `[1]`, codec.Protobuf},
		{"protobuf content type wins over nothing", "application/protobuf", "\x0a\x01a", codec.Protobuf},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := codec.Detect(tt.contentType, []byte(tt.body)); got != tt.want {
				t.Errorf("Detect(%q, %q) = %v, want %v", tt.contentType, tt.body, got, tt.want)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	want := &ordersv1.CreateOrderRequest{
		CustomerId: "c-1",
		Currency:   "USD",
		Items:      []*ordersv1.OrderItem{{Sku: "SKU-1", Quantity: 2, UnitPriceMinor: 1999}},
	}
	for _, enc := range []codec.Encoding{codec.JSON, codec.Protobuf} {
		t.Run(enc.String(), func(t *testing.T) {
			data, err := codec.Encode(enc, want)
			if err != nil {
				t.Fatal(err)
			}
			if got := codec.Detect("", data); got != enc {
				t.Errorf("Detect(Encode(%v)) = %v", enc, got)
			}
			got := &ordersv1.CreateOrderRequest{}
			if err := codec.Decode(enc, data, got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, want) {
				t.Errorf("round trip: got %v, want %v", got, want)
			}
		})
	}
}

func TestJSONUsesProtoNamesAndShowsZeroValues(t *testing.T) {
	data, err := codec.Encode(codec.JSON, &ordersv1.GetStockResponse{Sku: "SKU-1", Available: 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"sku"`, `"available":3`, `"reserved":0`, `"sold":0`} {
		if got := strings.ReplaceAll(string(data), " ", ""); !strings.Contains(got, want) {
			t.Errorf("JSON %s lacks %s", data, want)
		}
	}
	data, err = codec.Encode(codec.JSON, &ordersv1.CreateOrderRequest{CustomerId: "c"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"customer_id"`) {
		t.Errorf("JSON %s does not use the proto field name customer_id", data)
	}
}

func TestDecodeRejects(t *testing.T) {
	tests := []struct {
		name      string
		enc       codec.Encoding
		body      string
		wantInMsg string
	}{
		{"unknown JSON field", codec.JSON, `{"customer_id":"c","colour":"red"}`, "colour"},
		{"wrong JSON type", codec.JSON, `{"items":[{"quantity":"two"}]}`, "quantity"},
		{"truncated JSON", codec.JSON, `{"customer_id":`, "body"},
		{"float money", codec.JSON, `{"items":[{"unit_price_minor":19.99}]}`, "unit_price_minor"},
		{"garbage", codec.Protobuf, "garbage", "body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := codec.Decode(tt.enc, []byte(tt.body), &ordersv1.CreateOrderRequest{})
			if !errors.Is(err, function.ErrInvalid) {
				t.Fatalf("Decode(%q) = %v, want ErrInvalid", tt.body, err)
			}
			if got := function.Code(err); got != 400 {
				t.Errorf("code = %d, want 400", got)
			}
			if !strings.Contains(err.Error(), tt.wantInMsg) {
				t.Errorf("error %q does not mention %q", err, tt.wantInMsg)
			}
		})
	}
}

func TestLimit(t *testing.T) {
	if err := codec.Limit(make([]byte, 10), 10); err != nil {
		t.Errorf("Limit at the limit: %v", err)
	}
	err := codec.Limit(make([]byte, 11), 10)
	if function.Code(err) != 400 || !strings.Contains(err.Error(), "body") {
		t.Errorf("Limit over the limit = %v, want a 400 naming body", err)
	}
}

// FuzzDecode feeds arbitrary bodies to the request decoder: it must never
// panic, every failure must be a 400, and whatever it accepts must survive a
// re-encode in the same encoding unchanged.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"customer_id":"c-1","currency":"USD","items":[{"sku":"SKU-1","quantity":2,"unit_price_minor":1999}]}`), "")
	f.Add([]byte("\x0a\x03c-1\x12\x03USD"), "")
	f.Add([]byte(`{"items":[{"quantity":-1}]}`), "application/json")
	f.Add([]byte("garbage"), "")
	f.Add([]byte(`{"customer_id":"\u0000"}`), "")
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		enc := codec.Detect(contentType, body)
		msg := &ordersv1.CreateOrderRequest{}
		if err := codec.Decode(enc, body, msg); err != nil {
			if function.Code(err) != 400 {
				t.Fatalf("Decode error %v has code %d, want 400", err, function.Code(err))
			}
			return
		}
		data, err := codec.Encode(enc, msg)
		if err != nil {
			t.Fatalf("Encode after Decode: %v", err)
		}
		again := &ordersv1.CreateOrderRequest{}
		if err := codec.Decode(enc, data, again); err != nil {
			t.Fatalf("Decode(Encode(x)): %v", err)
		}
		if !proto.Equal(msg, again) {
			t.Fatalf("re-encode changed the message: %v != %v", msg, again)
		}
	})
}
