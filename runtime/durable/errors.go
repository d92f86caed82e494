package durable

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/state"
)

// IsConflict reports whether err is a lost compare-and-set race: a KV create
// that found the key taken, or an update or append whose expected last
// sequence had moved on. This is the one place that knows how the server
// says so: an R1 stream answers 10071 ("wrong last sequence: N"), a
// replicated one 10164 ("wrong last sequence") while another write to the
// subject is still in flight, and nats.go maps either to ErrKeyExists or
// ErrKeyRevisionMismatch for KV calls.
func IsConflict(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, state.ErrConflict) || errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var api *jetstream.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode {
		case jetstream.JSErrCodeStreamWrongLastSequence, jetstream.JSErrCodeStreamWrongLastSequenceConstant:
			return true
		}
	}
	return false
}

// IsUnavailable reports whether err means JetStream cannot answer right now:
// no responders or no reply (a stream or consumer between leaders, a
// restarting server), a connection that is reconnecting, or a 503 from the
// server (no quorum, JetStream starting). None of these is the caller's
// fault, and each heals by itself.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, function.ErrUnavailable) {
		return true
	}
	for _, e := range []error{
		context.DeadlineExceeded, nats.ErrTimeout, nats.ErrNoResponders, jetstream.ErrNoStreamResponse,
		nats.ErrConnectionReconnecting, nats.ErrDisconnected, nats.ErrStaleConnection, nats.ErrConnectionClosed,
		nats.ErrConnectionDraining,
		jetstream.ErrJetStreamNotEnabled, jetstream.ErrJetStreamNotEnabledForAccount,
		// A stream that is missing is waited for too: right after a restart
		// the server may not have recovered it yet, and an operator's delete
		// is re-created by the host or by provisioning (/readyz names it).
		jetstream.ErrStreamNotFound, jetstream.ErrBucketNotFound,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	var api *jetstream.APIError
	if errors.As(err, &api) {
		return api.Code == 503 || api.ErrorCode == jetstream.JSErrCodeStreamNotFound
	}
	return false
}

// classify wraps err from a JetStream call on what so that callers can tell
// a lost race (state.ErrConflict) and an outage (function.ErrUnavailable)
// from anything else.
func classify(what string, err error) error {
	switch {
	case err == nil:
		return nil
	case IsConflict(err):
		return fmt.Errorf("%s: %w: %w", what, state.ErrConflict, err)
	case IsUnavailable(err):
		return fmt.Errorf("%s: %w: %w", what, function.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}
