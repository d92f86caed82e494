// Package deadletter is the "deadletters" micro service every host serves:
// list the messages that failed for good, and replay one on its original
// subject once the cause is fixed.
package deadletter

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"

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
	// Replay publishes dead letter seq's message again, if t allows it.
	Replay(ctx context.Context, seq uint64, t Target) (*runtimev1.ReplayDeadLetterResponse, error)
}

// Target is what a replay may publish: a dead letter is replayed only if
// it came from Stream on a subject matching Subject, and only with the
// headers named in Headers (never a Nats-* control header of the stored
// letter, which anyone who could write a dead letter could have set).
type Target struct {
	Stream string
	// Subject is a pattern with * and > wildcards ("ORDER.*.*").
	Subject string
	Headers []string
	// Check, when set, vets the message itself (its type agrees with its
	// subject, say); an error refuses the replay with a 400.
	Check func(subject string, header map[string][]string, data []byte) error
	// Done, when set, says whether replaying the message could still
	// change anything (an event of an order that has ended cannot): a
	// replay it answers true for removes the dead letter and publishes
	// nothing.
	Done func(ctx context.Context, subject string) (bool, error)
}

// ErrNotReplayable refuses a replay the target does not allow (400).
var ErrNotReplayable = fmt.Errorf("%w: not replayable", function.ErrInvalid)

// Allows reports why t refuses a message from stream on subject, or nil.
func (t Target) Allows(stream, subject string, header map[string][]string, data []byte) error {
	if stream != t.Stream || !SubjectMatches(t.Subject, subject) {
		return fmt.Errorf("%w: its message came from %s on %q; only messages of %s on %s are replayed", ErrNotReplayable, stream, subject, t.Stream, t.Subject)
	}
	if t.Check != nil {
		if err := t.Check(subject, header, data); err != nil {
			return fmt.Errorf("%w: %w", ErrNotReplayable, err)
		}
	}
	return nil
}

// SubjectMatches reports whether subject matches pattern, where a * token
// matches any one token and a final > one or more.
func SubjectMatches(pattern, subject string) bool {
	pt, st := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, p := range pt {
		switch {
		case p == ">" && i == len(pt)-1:
			return len(st) > i
		case i >= len(st):
			return false
		case p != "*" && p != st[i]:
			return false
		case st[i] == "":
			return false
		}
	}
	return len(pt) == len(st)
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
		if after := req.GetAfterSequence(); after > math.MaxInt64 {
			return nil, function.Invalid("after_sequence", "must be at most %d, got %d", int64(math.MaxInt64), after)
		}
		dls, err := s.List(ctx, req.GetAfterSequence(), limit)
		if err != nil {
			return nil, err
		}
		return &runtimev1.ListDeadLettersResponse{DeadLetters: dls}, nil
	}, function.WithDescription("Dead letters, oldest first: original subject, consumer, error, attempts and the message."),
		function.Reads(Stream),
		function.ForOperators())
}

// Replay returns the deadletters.replay function, which replays only what
// t allows.
func Replay(s Store, t Target) function.Definition {
	return function.New("replay", func(ctx context.Context, req *runtimev1.ReplayDeadLetterRequest) (*runtimev1.ReplayDeadLetterResponse, error) {
		if req.GetSequence() == 0 {
			return nil, function.Invalid("sequence", "required: the dead letter's sequence from deadletters.list")
		}
		resp, err := s.Replay(ctx, req.GetSequence(), t)
		if errors.Is(err, state.ErrNotFound) {
			return nil, fmt.Errorf("dead letter %d: %w", req.GetSequence(), function.ErrNotFound)
		}
		return resp, err
	}, function.WithDescription("Publish a dead letter's message again on its original subject, then remove it from the dead-letter stream. Only events of the order log are replayed, and only while their order has not ended."),
		function.Reads(Stream),
		function.DeletesFrom(Stream),
		function.ForOperators(),
		function.Reads(t.Stream),
		function.Publishes(t.Stream, t.Subject))
}
