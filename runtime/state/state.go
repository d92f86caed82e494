// Package state is the transport-free view of durable state that functions
// are written against: key-value buckets of protobuf records with optimistic
// concurrency, and an append-only event log. The runtime's durable package
// implements it on JetStream.
package state

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"google.golang.org/protobuf/proto"
)

// Sentinel errors of a Store.
var (
	// ErrNotFound: no record under the key.
	ErrNotFound = errors.New("record not found")
	// ErrConflict: a record changed since it was read (revision mismatch),
	// or a create found the key taken.
	ErrConflict = errors.New("record changed concurrently")
	// ErrNoChange, returned by a Modify function, ends it without a write.
	ErrNoChange = errors.New("no change")
)

// Store is a bucket of protobuf records. Every write names the revision it
// expects, so concurrent writers never overwrite each other blindly.
type Store interface {
	// Get decodes the record under key into into and returns its revision.
	Get(ctx context.Context, key string, into proto.Message) (rev uint64, err error)
	// Put writes value under key only if the key is still at rev (0: the key
	// must not exist), and returns the key's new revision; otherwise it
	// returns ErrConflict.
	Put(ctx context.Context, key string, value proto.Message, rev uint64) (uint64, error)
}

// Message is satisfied by *T when T is a generated protobuf message.
type Message[T any] interface {
	*T
	proto.Message
}

// Get returns the record under key as a new P.
func Get[T any, P Message[T]](ctx context.Context, s Store, key string) (P, uint64, error) {
	var v P = new(T)
	rev, err := s.Get(ctx, key, v)
	if err != nil {
		return nil, 0, err
	}
	return v, rev, nil
}

// MaxAttempts bounds a compare-and-set loop; contention beyond it is
// returned as ErrConflict, which callers treat as transient.
const MaxAttempts = 100

// Backoff waits a little before the next compare-and-set attempt: a random
// spread that grows with the attempt, so writers that collided do not
// collide again in lockstep. It returns ctx's error if ctx ends first.
func Backoff(ctx context.Context, attempt int) error {
	d := time.Duration(rand.Int64N(int64(min(attempt, 20))*int64(time.Millisecond) + 1))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Modify reads the record under key (a new P if there is none, exists
// false), lets fn change it and writes it back with compare-and-set, trying
// again when another writer got there first. fn returning ErrNoChange ends
// it without a write and Modify returns the record as read; any other error
// from fn aborts without writing.
func Modify[T any, P Message[T]](ctx context.Context, s Store, key string, fn func(v P, exists bool) error) (P, error) {
	for attempt := 1; ; attempt++ {
		v, rev, err := Get[T, P](ctx, s, key)
		exists := err == nil
		if errors.Is(err, ErrNotFound) {
			v, rev, err = new(T), 0, nil
		}
		if err != nil {
			return nil, err
		}
		if err := fn(v, exists); errors.Is(err, ErrNoChange) {
			return v, nil
		} else if err != nil {
			return nil, err
		}
		_, err = s.Put(ctx, key, v, rev)
		if again, err := Again(ctx, attempt, err); again {
			continue
		} else if err != nil {
			return nil, fmt.Errorf("modify %s: %w", key, err)
		}
		return v, nil
	}
}

// Again reports whether a compare-and-set that failed with err should be
// tried again: a conflict while attempts are left, after a short wait. It
// returns err when not (nil for a write that succeeded).
func Again(ctx context.Context, attempt int, err error) (bool, error) {
	if !errors.Is(err, ErrConflict) || attempt >= MaxAttempts {
		return false, err
	}
	if werr := Backoff(ctx, attempt); werr != nil {
		return false, werr
	}
	return true, nil
}

// Event is a message for the event log.
type Event struct {
	// Subject carries the order id: ORDER.<order_id>.<event>.
	Subject string
	// ID makes publishing idempotent: the log keeps one event per ID
	// within its duplicate window. Message ids are stream-wide and anyone
	// who may publish to the stream can take one first, so the saga's
	// events use Once instead.
	ID string
	// Once stores the event only if its subject holds none yet; a repeat is
	// reported as a duplicate. Only who may publish on the subject can
	// stand in its way.
	Once    bool
	Payload proto.Message
	// IfLast, when set, stores the event only if the log has not moved on:
	// optimistic concurrency over a subject filter, e.g. all of one order's
	// events. A mismatch is ErrConflict.
	IfLast *Last
}

// Last is the expected last event among the subjects matching Filter.
type Last struct {
	Filter string
	// Sequence of that event; 0 expects none.
	Sequence uint64
}

// Record is an event read back from the log.
type Record struct {
	Subject  string
	Sequence uint64
	Time     time.Time
	// Type is the full protobuf name of the payload ("orders.v1.OrderCreated").
	Type string
	Data []byte
}

// Log is an append-only, durable event log.
type Log interface {
	// Append stores e and returns once it is durable. A repeat of an ID, or
	// of a Once event, is not stored again; duplicate reports that.
	Append(ctx context.Context, e Event) (seq uint64, duplicate bool, err error)
	// Read returns the events whose subject matches filter, oldest first.
	Read(ctx context.Context, filter string) ([]Record, error)
	// Last returns the newest event whose subject matches filter; found is
	// false when there is none.
	Last(ctx context.Context, filter string) (rec Record, found bool, err error)
}
