// Package validate checks the fields the functions share. Every failure is a
// function.FieldError naming the field, so the caller gets a 400 that says
// what to fix.
package validate

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/currency"

	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
)

// tokenRE is what may go into a subject token or a KV key: no '.', '*', '>'
// or spaces, which would address other records.
var tokenRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func token(field, s string) error {
	if s == "" {
		return function.Invalid(field, "required")
	}
	if !tokenRE.MatchString(s) {
		return function.Invalid(field, "must be 1-64 letters, digits, '-' or '_', got %q", s)
	}
	return nil
}

// SKU checks a stock keeping unit, which becomes part of a KV key.
func SKU(field, sku string) error { return token(field, sku) }

// OrderID checks an order id, which becomes part of a subject.
func OrderID(field, id string) error { return token(field, id) }

// Currency checks an upper-case ISO-4217 code of a currency one can pay in:
// zero-decimal ones such as JPY included, the X-codes for precious metals
// (XAU, XAG, XPT, XPD), testing (XTS), no currency (XXX), units of account
// and the like not.
func Currency(field, code string) error {
	if code == "" {
		return function.Invalid(field, "required (ISO-4217 code such as \"USD\")")
	}
	if u, err := currency.ParseISO(code); err != nil || u.String() != code {
		return function.Invalid(field, "%q is not an upper-case ISO-4217 code", code)
	}
	if code[0] == 'X' && !tender[code] {
		return function.Invalid(field, "%q is not a currency orders are paid in (precious metal, test, fund or no-currency code)", code)
	}
	return nil
}

// tender are the ISO-4217 X-codes that are money one pays in: the CFA and
// CFP francs and the East Caribbean dollar.
var tender = map[string]bool{"XAF": true, "XOF": true, "XPF": true, "XCD": true, "XCG": true}

// Text checks a required, printable UTF-8 string of at most max bytes.
func Text(field, s string, max int) error {
	if s == "" {
		return function.Invalid(field, "required")
	}
	if len(s) > max {
		return function.Invalid(field, "at most %d bytes, got %d", max, len(s))
	}
	if !utf8.ValidString(s) {
		return function.Invalid(field, "must be valid UTF-8")
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return function.Invalid(field, "must be printable, found %U", r)
		}
	}
	return nil
}

// IdempotencyKeyHeader lets a client retry a call that changes something
// (orders.create, inventory.restock) safely: a repeat with the same key
// does it once.
const IdempotencyKeyHeader = "Idempotency-Key"

// maxIdempotencyKey bounds the key in bytes.
const maxIdempotencyKey = 255

// IdempotencyKey checks an optional Idempotency-Key header value.
func IdempotencyKey(key string) error {
	if key == "" {
		return nil
	}
	return Text("header "+IdempotencyKeyHeader, key, maxIdempotencyKey)
}

// MaxCustomerID bounds a customer id in bytes.
const MaxCustomerID = 128

// CustomerID checks a customer id.
func CustomerID(field, id string) error { return Text(field, id, MaxCustomerID) }

// Limits shared by the functions.
const (
	// MaxItems bounds the lines of one order.
	MaxItems = 100
	// MaxQuantity bounds one line's units, and one restock.
	MaxQuantity = 1_000_000
	// MaxReason bounds a caller's reason, in bytes.
	MaxReason = 512
)

// Items checks an order's lines: at least one, at most MaxItems, each a
// valid SKU appearing once with 1..MaxQuantity units. Field names are built
// only for the line at fault.
func Items(field string, items []*ordersv1.OrderItem) error {
	if len(items) == 0 {
		return function.Invalid(field, "at least one item is required")
	}
	if len(items) > MaxItems {
		return function.Invalid(field, "at most %d items, got %d", MaxItems, len(items))
	}
	line := func(i int, name string) string { return fmt.Sprintf("%s[%d].%s", field, i, name) }
	seen := make(map[string]int, len(items))
	for i, it := range items {
		if !tokenRE.MatchString(it.GetSku()) {
			return SKU(line(i, "sku"), it.GetSku())
		}
		if j, dup := seen[it.GetSku()]; dup {
			return function.Invalid(line(i, "sku"), "%q already in %s[%d]; put the quantity on one line", it.GetSku(), field, j)
		}
		seen[it.GetSku()] = i
		if q := it.GetQuantity(); q <= 0 || q > MaxQuantity {
			return function.Invalid(line(i, "quantity"), "must be 1..%d, got %d", MaxQuantity, q)
		}
	}
	return nil
}

// Reason checks an optional free-text reason: printable text like every
// other field (a reason is shown to people; control characters could
// rewrite their terminal).
func Reason(field, s string) error {
	if s == "" {
		return nil
	}
	return Text(field, s, MaxReason)
}

// TruncateReason cuts s to MaxReason bytes without splitting a character.
func TruncateReason(s string) string {
	if len(s) <= MaxReason {
		return s
	}
	return strings.ToValidUTF8(s[:MaxReason], "")
}
