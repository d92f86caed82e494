package durable

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// reads knows how to read one stream consistently: from its leader when it
// is replicated, with a direct get when it is not. Its replica count is
// looked up again now and then, so a stream an operator scales up is read
// from its leader without a restart.
type reads struct {
	js     jetstream.JetStream
	stream string
	prefix string

	replicated atomic.Bool
	checked    atomic.Int64 // unix nanoseconds of the last lookup
	looking    atomic.Bool
}

// recheck is how often the replica count is looked up again.
const recheck = 30 * time.Second

func newReads(ctx context.Context, js jetstream.JetStream, stream string) (*reads, error) {
	r := &reads{js: js, stream: stream, prefix: apiPrefix(js)}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, classify("stream "+stream, err)
	}
	r.replicated.Store(s.CachedInfo().Config.Replicas > 1)
	r.checked.Store(time.Now().UnixNano())
	return r, nil
}

// fromLeader reports whether reads must go to the leader.
func (r *reads) fromLeader(ctx context.Context) bool {
	if time.Since(time.Unix(0, r.checked.Load())) > recheck && r.looking.CompareAndSwap(false, true) {
		go func() {
			defer r.looking.Store(false)
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if s, err := r.js.Stream(ctx, r.stream); err == nil {
				r.replicated.Store(s.CachedInfo().Config.Replicas > 1)
				r.checked.Store(time.Now().UnixNano())
			}
		}()
	}
	return r.replicated.Load()
}

func (r *reads) leaderGet(ctx context.Context, req msgGetRequest) (*jetstream.RawStreamMsg, error) {
	return leaderGet(ctx, r.js, r.prefix, r.stream, req)
}
