package durable

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// refusedCodes are the server's answers for a write it will not store:
// the stream's limits with DiscardNew (10077), the server's or the
// account's storage used up (10023, 10047, 10002).
var refusedCodes = []jetstream.ErrorCode{10077, 10023, 10047, 10002}

// IsRefused reports whether err is a write the server refused to store
// for lack of room: waiting does not help, freeing space or raising limits
// does.
func IsRefused(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && slices.Contains(refusedCodes, api.ErrorCode)
}

// Writes keeps, per stream, whether its last write was refused for lack of
// room, so that /readyz fails with the reason while a store is full, and
// passes again after the next write it takes.
type Writes struct {
	mu      sync.Mutex
	refused map[string]refusal
}

type refusal struct {
	at     time.Time
	reason string
}

// NewWrites returns an empty record.
func NewWrites() *Writes { return &Writes{refused: map[string]refusal{}} }

// done records the outcome of a write to stream.
func (w *Writes) done(stream string, err error) {
	if w == nil {
		return
	}
	switch {
	case err == nil:
		w.mu.Lock()
		delete(w.refused, stream)
		w.mu.Unlock()
	case IsRefused(err):
		w.mu.Lock()
		w.refused[stream] = refusal{at: time.Now(), reason: err.Error()}
		w.mu.Unlock()
	}
}

// Check reports the streams whose last write was refused, with why.
func (w *Writes) Check() error {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var names []string
	for s := range w.refused {
		names = append(names, s)
	}
	sort.Strings(names)
	var out []string
	for _, s := range names {
		r := w.refused[s]
		out = append(out, fmt.Sprintf("stream %s refuses writes since %s: %s", s, r.at.Format(time.RFC3339), r.reason))
	}
	if len(out) == 0 {
		return nil
	}
	return errors.New(strings.Join(out, "; "))
}
