// Package validate checks the fields the functions share. Every failure is a
// function.FieldError naming the field, so the caller gets a 400 that says
// what to fix.
package validate

import (
	"regexp"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/currency"

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

// Currency checks an upper-case ISO-4217 code.
func Currency(field, code string) error {
	if code == "" {
		return function.Invalid(field, "required (ISO-4217 code such as \"USD\")")
	}
	if u, err := currency.ParseISO(code); err != nil || u.String() != code {
		return function.Invalid(field, "%q is not an upper-case ISO-4217 code", code)
	}
	return nil
}

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

// MaxCustomerID bounds a customer id in bytes.
const MaxCustomerID = 128

// CustomerID checks a customer id.
func CustomerID(field, id string) error { return Text(field, id, MaxCustomerID) }
