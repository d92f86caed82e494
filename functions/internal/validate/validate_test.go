package validate_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/orderflow/orderflow/functions/internal/validate"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
)

func item(sku string, q int32) *ordersv1.OrderItem { return &ordersv1.OrderItem{Sku: sku, Quantity: q} }

func TestItems(t *testing.T) {
	many := make([]*ordersv1.OrderItem, validate.MaxItems+1)
	for i := range many {
		many[i] = item(strings.Repeat("x", i%60+1), 1)
	}
	tests := []struct {
		items []*ordersv1.OrderItem
		field string // "" for valid
	}{
		{[]*ordersv1.OrderItem{item("A", 1), item("B", validate.MaxQuantity)}, ""},
		{nil, "items"},
		{many, "items"},
		{[]*ordersv1.OrderItem{item("", 1)}, "items[0].sku"},
		{[]*ordersv1.OrderItem{item("A", 1), item("A.*", 1)}, "items[1].sku"},
		{[]*ordersv1.OrderItem{item("A", 1), item("A", 2)}, "items[1].sku"},
		{[]*ordersv1.OrderItem{item("A", 0)}, "items[0].quantity"},
		{[]*ordersv1.OrderItem{item("A", validate.MaxQuantity+1)}, "items[0].quantity"},
	}
	for _, tt := range tests {
		err := validate.Items("items", tt.items)
		var fe *function.FieldError
		switch {
		case tt.field == "" && err != nil:
			t.Errorf("Items(%v) = %v, want nil", tt.items, err)
		case tt.field != "" && (err == nil || !asField(err, &fe) || fe.Field != tt.field):
			t.Errorf("Items(%v) = %v, want an error on %s", tt.items, err, tt.field)
		}
	}
}

func asField(err error, fe **function.FieldError) bool {
	f, ok := err.(*function.FieldError)
	*fe = f
	return ok
}

func TestReason(t *testing.T) {
	if err := validate.Reason("reason", strings.Repeat("x", validate.MaxReason)); err != nil {
		t.Errorf("Reason at the limit: %v", err)
	}
	if err := validate.Reason("reason", ""); err != nil {
		t.Errorf("an empty reason: %v", err)
	}
	for _, bad := range []string{strings.Repeat("x", validate.MaxReason+1), "\xff", "\u001b[2Jgone", "tab\there", "line\nbreak"} {
		if err := validate.Reason("reason", bad); function.Code(err) != 400 {
			t.Errorf("Reason(%q) = %v, want a 400", bad, err)
		}
	}
	long := strings.Repeat("x", validate.MaxReason-1) + "é" // é straddles the limit
	if got := validate.TruncateReason(long); len(got) > validate.MaxReason || !utf8.ValidString(got) {
		t.Errorf("TruncateReason gave %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
}

func TestCurrency(t *testing.T) {
	for _, ok := range []string{"USD", "EUR", "JPY", "KWD", "XAF", "XOF", "XCD"} {
		if err := validate.Currency("currency", ok); err != nil {
			t.Errorf("Currency(%s) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "usd", "US", "ABC", "XXX", "XAU", "XAG", "XPT", "XPD", "XTS", "XDR", "XBA"} {
		if err := validate.Currency("currency", bad); function.Code(err) != 400 || !strings.Contains(err.Error(), "currency") {
			t.Errorf("Currency(%q) = %v, want a 400 naming the field", bad, err)
		}
	}
}
