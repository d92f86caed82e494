package durable

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/state"
)

// The classification, case by case. The same errors are met for real on an
// R3 cluster in cluster_test.go; this table pins down the rules.
func TestClassify(t *testing.T) {
	api := func(code jetstream.ErrorCode, status int) error {
		return fmt.Errorf("nats: %w", &jetstream.APIError{ErrorCode: code, Code: status, Description: "x"})
	}
	const live, ended = false, true // whether the caller starved the call
	tests := []struct {
		name string
		ctx  bool
		err  error
		want string // "conflict", "unavailable" or "other"
	}{
		{"wrong last sequence, R1", live, api(10071, 400), "conflict"},
		{"wrong last sequence, R3 in flight", live, api(10164, 400), "conflict"},
		{"KV create found the key", live, jetstream.ErrKeyExists, "conflict"},
		{"KV update at a stale revision", live, fmt.Errorf("x: %w", jetstream.ErrKeyRevisionMismatch), "conflict"},
		{"conflict even when the caller ran out of time", ended, api(10164, 400), "conflict"},
		{"no quorum", live, api(10008, 503), "unavailable"},
		{"expected sequence not ready on a new leader", live, api(10163, 503), "unavailable"},
		{"JetStream starting", live, api(10039, 503), "unavailable"},
		{"retry meets its first attempt in flight", live, api(10158, 409), "unavailable"},
		{"no responders", live, nats.ErrNoResponders, "unavailable"},
		{"no reply from the stream", live, jetstream.ErrNoStreamResponse, "unavailable"},
		{"the call's own timer fired", live, context.DeadlineExceeded, "unavailable"},
		{"reconnecting", live, nats.ErrConnectionReconnecting, "unavailable"},
		{"stream not found while a server recovers", live, jetstream.ErrStreamNotFound, "unavailable"},
		{"the caller's own deadline passed", ended, context.DeadlineExceeded, "other"},
		{"the caller gave up", ended, context.Canceled, "other"},
		{"no reply even to a starved call is an outage", ended, nats.ErrNoResponders, "unavailable"},
		{"store full: waiting does not heal it", live, api(10077, 503), "other"},
		{"insufficient resources", live, api(10023, 503), "other"},
		{"account without JetStream", live, api(10035, 503), "other"},
		{"connection closed: the host is stopping", live, nats.ErrConnectionClosed, "other"},
		{"anything else", live, errors.New("boom"), "other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := classify(tt.ctx, "op", tt.err)
			got := "other"
			switch {
			case errors.Is(err, state.ErrConflict):
				got = "conflict"
			case errors.Is(err, function.ErrUnavailable):
				got = "unavailable"
			}
			if got != tt.want {
				t.Errorf("classify(%v) = %v: %s, want %s", tt.err, err, got, tt.want)
			}
			if !errors.Is(err, tt.err) {
				t.Errorf("classify lost the cause: %v does not wrap %v", err, tt.err)
			}
			if got == "unavailable" && function.Code(err) != 503 {
				t.Errorf("code %d, want 503", function.Code(err))
			}
		})
	}
	if classify(live, "op", nil) != nil {
		t.Error("classify(nil) is not nil")
	}
}

// A call the caller starts with its context ended is starved: its timeout
// is the caller's.
func TestStartCallStarved(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if c := startCall(ctx); c.starved {
		t.Error("a call with a minute left is starved")
	}
	ended, cancel2 := context.WithTimeout(context.Background(), -time.Second)
	defer cancel2()
	if c := startCall(ended); !c.starved {
		t.Error("a call on an ended context is not starved")
	}
	if c := startCall(context.Background()); c.starved {
		t.Error("a call without a deadline is starved")
	}
}
