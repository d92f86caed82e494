package function

import (
	"context"
	"errors"
	"fmt"
)

// Sentinel domain errors. They are permanent: the host replies with a 4xx
// micro error and never retries them. Any other error is transient.
var (
	// ErrInvalid marks bad input (400). Prefer Invalid, which names the field.
	ErrInvalid = errors.New("invalid input")
	// ErrNotFound marks an unknown order, SKU or payment (404).
	ErrNotFound = errors.New("not found")
	// ErrConflict marks a request that contradicts stored state (409).
	ErrConflict = errors.New("conflict")
)

// ErrUnavailable marks a failure that is not the function's: the store it
// needs cannot answer right now (a leader election, a restarting server, a
// lost quorum). It is transient (503), and the host retries it without
// spending the function's attempts, for as long as its outage horizon
// allows, so a failover never cancels an order.
var ErrUnavailable = errors.New("unavailable")

// ErrBusy marks a call refused to protect the system (an admission limit):
// 503, and not retried in process; the caller retries later.
var ErrBusy = errors.New("busy")

// IsUnavailable reports whether err is, or wraps, ErrUnavailable.
func IsUnavailable(err error) bool { return errors.Is(err, ErrUnavailable) }

// FieldError is bad input in one field. It wraps ErrInvalid.
type FieldError struct {
	// Field is the path of the field at fault, e.g. "items[0].quantity".
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Unwrap makes errors.Is(err, ErrInvalid) hold.
func (e *FieldError) Unwrap() error { return ErrInvalid }

// Invalid reports bad input in field.
func Invalid(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Code maps an error to the micro error code sent to the caller.
func Code(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrInvalid):
		return 400
	case errors.Is(err, ErrNotFound):
		return 404
	case errors.Is(err, ErrConflict):
		return 409
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrBusy):
		return 503
	case errors.Is(err, context.DeadlineExceeded):
		return 504
	default:
		return 500
	}
}

// IsPermanent reports whether retrying err cannot help.
func IsPermanent(err error) bool {
	c := Code(err)
	return c >= 400 && c < 500
}
