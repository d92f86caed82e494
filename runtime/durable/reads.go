package durable

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
)

// reads reads one stream consistently: what a decision rests on is asked of
// the stream's leader, on every stream, R1 or R3. (Deciding per stream
// from its replica count would leave a window, while an operator scales a
// stream up, in which direct gets reach new replicas still catching up.)
type reads struct {
	js     jetstream.JetStream
	stream string
	prefix string
}

func newReads(ctx context.Context, js jetstream.JetStream, stream string) (*reads, error) {
	c := startCall(ctx)
	_, err := js.Stream(c.ctx, stream)
	if err = c.done("stream "+stream, err); err != nil {
		return nil, err
	}
	return &reads{js: js, stream: stream, prefix: apiPrefix(js)}, nil
}

// leaderGet asks the stream's leader for one message.
func (r *reads) leaderGet(ctx context.Context, req msgGetRequest) (*jetstream.RawStreamMsg, error) {
	return leaderGet(ctx, r.js, r.prefix, r.stream, req)
}
