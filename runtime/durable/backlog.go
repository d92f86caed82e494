package durable

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Backlog counts the messages consumers of a stream have not finished:
// waiting to be delivered, or delivered and not yet acked. For a saga whose
// every step is a consumer, that is about the number of instances still in
// flight (one may be counted twice while two of its steps run at once).
// The count is at most a second old: it is a guard, not a ledger.
type Backlog struct {
	js        jetstream.JetStream
	streams   []string
	consumers []string

	mu    sync.Mutex
	at    time.Time
	count int
}

// NewBacklog counts over consumers of streams (each consumer on every one
// of them: the partitions of a stream).
func NewBacklog(js jetstream.JetStream, streams []string, consumers ...string) *Backlog {
	return &Backlog{js: js, streams: streams, consumers: consumers}
}

// Count returns the backlog, asking the server at most once a second.
func (b *Backlog) Count(ctx context.Context) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if time.Since(b.at) < time.Second {
		return b.count, nil
	}
	n := 0
	for _, stream := range b.streams {
		for _, name := range b.consumers {
			c := startCall(ctx)
			cons, err := b.js.Consumer(c.ctx, stream, name)
			if err == nil {
				var info *jetstream.ConsumerInfo
				info, err = cons.Info(c.ctx)
				if err == nil {
					n += int(info.NumPending) + info.NumAckPending
				}
			}
			if err = c.done("backlog of "+stream+"/"+name, err); err != nil {
				return 0, err
			}
		}
	}
	b.at, b.count = time.Now(), n
	return n, nil
}
