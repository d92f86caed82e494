package durable

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderflow/orderflow/runtime/state"
)

// EventTypeHeader carries the full protobuf name of an event's payload, so a
// reader can decode any event without knowing its subject's convention.
const EventTypeHeader = "Event-Type"

// Log is a state.Log on a JetStream stream.
type Log struct {
	js     jetstream.JetStream
	stream string
	tracer trace.Tracer
}

var _ state.Log = (*Log)(nil)

// Append implements state.Log: it publishes with Nats-Msg-Id set to e.ID and
// returns after the stream's ack.
func (l *Log) Append(ctx context.Context, e state.Event) (uint64, bool, error) {
	data, err := marshal.Marshal(e.Payload)
	if err != nil {
		return 0, false, fmt.Errorf("encode %s: %w", e.Subject, err)
	}
	m := nats.NewMsg(e.Subject)
	m.Data = data
	m.Header.Set(EventTypeHeader, string(e.Payload.ProtoReflect().Descriptor().FullName()))
	m.Header.Set("Content-Type", "application/protobuf")
	ctx, span := startPublish(ctx, l.tracer, m, e.ID)
	var opts []jetstream.PublishOpt
	if e.ID != "" {
		opts = append(opts, jetstream.WithMsgID(e.ID))
	}
	if e.IfLast != nil {
		opts = append(opts, jetstream.WithExpectLastSequenceForSubject(e.IfLast.Sequence, e.IfLast.Filter))
	}
	ack, err := l.js.PublishMsg(ctx, m, opts...)
	if isConflict(err) {
		err = fmt.Errorf("publish %s: %w", e.Subject, state.ErrConflict)
	} else if err != nil {
		err = fmt.Errorf("publish %s: %w", e.Subject, err)
	}
	endPublish(span, ack, err)
	if err != nil {
		return 0, false, err
	}
	return ack.Sequence, ack.Duplicate, nil
}

// historyBatch bounds one read; an order has a handful of events.
const historyBatch = 1000

// Read implements state.Log with a direct batch get, which needs no consumer.
func (l *Log) Read(ctx context.Context, filter string) ([]state.Record, error) {
	it, err := jetstreamext.GetBatch(ctx, l.js, l.stream, historyBatch, jetstreamext.GetBatchSubject(filter))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", filter, err)
	}
	var out []state.Record
	for m, err := range it {
		if errors.Is(err, jetstreamext.ErrNoMessages) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", filter, err)
		}
		out = append(out, state.Record{
			Subject:  m.Subject,
			Sequence: m.Sequence,
			Time:     m.Time,
			Type:     m.Header.Get(EventTypeHeader),
			Data:     m.Data,
		})
	}
	return out, nil
}
