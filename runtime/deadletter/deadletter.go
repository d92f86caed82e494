// Package deadletter is the "deadletters" micro service every host serves:
// list the messages that failed for good, and replay one on its original
// subject once the cause is fixed.
package deadletter

import (
	"context"
	"errors"
	"fmt"

	runtimev1 "github.com/orderflow/orderflow/proto/gen/runtime/v1"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/state"
)

// The dead-letter stream and its subjects, DEADLETTER.<consumer>.
const (
	Stream   = "DEADLETTERS"
	Subjects = "DEADLETTER.>"
)

// Service is the micro service the functions are registered under.
var Service = function.Service{Name: "deadletters", Version: "0.1.0",
	Description: "Messages that failed for good, with the reason: list and replay"}

// Store is where dead letters are kept.
type Store interface {
	List(ctx context.Context, after uint64, limit int) ([]*runtimev1.DeadLetter, error)
	Replay(ctx context.Context, seq uint64) (*runtimev1.ReplayDeadLetterResponse, error)
}

// Limits of one list.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// List returns the deadletters.list function.
func List(s Store) function.Definition {
	return function.New("list", func(ctx context.Context, req *runtimev1.ListDeadLettersRequest) (*runtimev1.ListDeadLettersResponse, error) {
		limit := int(req.GetLimit())
		switch {
		case limit < 0 || limit > MaxLimit:
			return nil, function.Invalid("limit", "must be 0..%d, got %d", MaxLimit, limit)
		case limit == 0:
			limit = DefaultLimit
		}
		dls, err := s.List(ctx, req.GetAfterSequence(), limit)
		if err != nil {
			return nil, err
		}
		return &runtimev1.ListDeadLettersResponse{DeadLetters: dls}, nil
	}, function.WithDescription("Dead letters, oldest first: original subject, consumer, error, attempts and the message."))
}

// Replay returns the deadletters.replay function.
func Replay(s Store) function.Definition {
	return function.New("replay", func(ctx context.Context, req *runtimev1.ReplayDeadLetterRequest) (*runtimev1.ReplayDeadLetterResponse, error) {
		if req.GetSequence() == 0 {
			return nil, function.Invalid("sequence", "required: the dead letter's sequence from deadletters.list")
		}
		resp, err := s.Replay(ctx, req.GetSequence())
		if errors.Is(err, state.ErrNotFound) {
			return nil, fmt.Errorf("dead letter %d: %w", req.GetSequence(), function.ErrNotFound)
		}
		return resp, err
	}, function.WithDescription("Publish a dead letter's message again on its original subject, then remove it from the dead-letter stream."))
}
