package durable

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

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

// opTimeout bounds one JetStream call. A healthy server answers in
// milliseconds; one that has not answered by then is between leaders or
// down, and the call is reported unavailable while the caller's own
// deadline still has time left to act on that.
const opTimeout = 2 * time.Second

// jsCall is one JetStream call made for a caller. A call the caller starts
// with its context already ended is starved: its timeout is the caller's
// (a function slower than its deadline), not an outage. Any other timeout
// is JetStream not answering, even when the caller's deadline is the one
// that fired: an outage eats the caller's time before it shows.
type jsCall struct {
	ctx     context.Context // the caller's, bounded by opTimeout
	cancel  context.CancelFunc
	starved bool
}

func startCall(ctx context.Context) jsCall {
	c := jsCall{starved: ctx.Err() != nil}
	c.ctx, c.cancel = context.WithTimeout(ctx, opTimeout)
	return c
}

// done ends the call and classifies its error.
func (c jsCall) done(what string, err error) error {
	c.cancel()
	return classify(c.starved, what, err)
}

// unavailableCodes are the API errors that mean "not right now": no
// quorum (10008), an expected-sequence check the new leader cannot answer
// yet (10163), JetStream starting (10076, 10039), and a retry that meets
// the first attempt with the same message id still in flight (10158).
var unavailableCodes = []jetstream.ErrorCode{10008, 10163, 10076, 10039, 10158}

// IsUnavailable reports whether err means JetStream cannot answer right now:
// no responders or no reply in time (a stream or consumer between leaders,
// a restarting server), a connection that is reconnecting, or one of the
// server's "not right now" errors. None of these is the caller's fault, and
// each heals by itself. Other 503s (a full store, an account without
// JetStream) do not heal by waiting and are not included.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, function.ErrUnavailable) {
		return true
	}
	for _, e := range []error{
		context.DeadlineExceeded, nats.ErrTimeout, nats.ErrNoResponders, jetstream.ErrNoStreamResponse,
		nats.ErrConnectionReconnecting, nats.ErrDisconnected, nats.ErrStaleConnection,
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
		return slices.Contains(unavailableCodes, api.ErrorCode) || api.ErrorCode == jetstream.JSErrCodeStreamNotFound
	}
	return false
}

// classify wraps err from a JetStream call on what, so that callers can
// tell a lost race (state.ErrConflict) and an outage (function.ErrUnavailable)
// from anything else. A timeout of a starved call is the caller's (it ran
// out of time, JetStream did not) and stays what it is.
func classify(starved bool, what string, err error) error {
	switch {
	case err == nil:
		return nil
	case IsConflict(err):
		return fmt.Errorf("%s: %w: %w", what, state.ErrConflict, err)
	case starved && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)):
		return fmt.Errorf("%s: %w", what, err)
	case IsUnavailable(err):
		return fmt.Errorf("%s: %w: %w", what, function.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}
