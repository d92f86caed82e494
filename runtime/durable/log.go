package durable

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/state"
)

// EventTypeHeader carries the full protobuf name of an event's payload, so a
// reader can decode any event without knowing its subject's convention.
const EventTypeHeader = "Event-Type"

// Log is a state.Log on the partitions of the event stream. A subject's
// second token is its slot, which names the partition that holds it:
// appends are routed there by the server, reads by the Log.
type Log struct {
	js     jetstream.JetStream
	tracer trace.Tracer
	// reads reads each partition, by partition number.
	reads  []*reads
	writes *Writes
}

var _ state.Log = (*Log)(nil)

// OpenLog binds the event stream's partitions, creating them first if
// c.Mode allows.
func OpenLog(ctx context.Context, js jetstream.JetStream, c Config) (*Log, error) {
	if _, err := Ensure(ctx, js, Resources{Streams: EventStreamConfigs(c)}, c.Mode.open()); err != nil {
		return nil, err
	}
	l := &Log{js: js, tracer: c.tracer(), writes: c.Writes}
	for _, name := range c.Streams(EventStream) {
		r, err := newReads(ctx, js, name)
		if err != nil {
			return nil, err
		}
		l.reads = append(l.reads, r)
	}
	return l, nil
}

// partition is the reads of the partition holding subject (or filter),
// nil for a filter whose slot is a wildcard.
func (l *Log) partition(subject string) *reads {
	if p := eventPartition(subject, len(l.reads)); p >= 0 {
		return l.reads[p]
	}
	return nil
}

// Append implements state.Log: it publishes with Nats-Msg-Id set to e.ID (if
// any), with the expected-sequence check of e.Once or e.IfLast, and
// returns after the stream's ack. A moved log under e.IfLast is
// state.ErrConflict, whatever code the server answered with.
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
	switch {
	case e.Once && e.IfLast != nil:
		return 0, false, fmt.Errorf("publish %s: an event is either Once or IfLast", e.Subject)
	case e.Once:
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(0))
	case e.IfLast != nil:
		opts = append(opts, jetstream.WithExpectLastSequenceForSubject(e.IfLast.Sequence, e.IfLast.Filter))
	}
	r := l.partition(e.Subject)
	if r == nil {
		return 0, false, fmt.Errorf("publish %s: not an event subject with a slot", e.Subject)
	}
	// The partition is named, so a subject no partition holds is refused
	// instead of landing in whatever stream claims it.
	opts = append(opts, jetstream.WithExpectStream(r.stream))
	c := startCall(ctx)
	ack, err := l.js.PublishMsg(c.ctx, m, opts...)
	err = c.done("publish "+e.Subject, err)
	if !errors.Is(err, state.ErrConflict) {
		l.writes.done(r.stream, err)
	}
	if e.Once && errors.Is(err, state.ErrConflict) {
		endPublish(span, ack, nil)
		return 0, true, nil // stored before: by an earlier attempt
	}
	endPublish(span, ack, err)
	if err != nil {
		return 0, false, err
	}
	return ack.Sequence, ack.Duplicate, nil
}

// historyBatch bounds one read; an order has a handful of events.
const historyBatch = 1000

// Read implements state.Log. It sees every event acknowledged before it:
// the stream leader names the order's last event first, and the direct
// batch get (which any replica may answer) is used only if it reaches that
// event; else the events are read from the leader one by one.
func (l *Log) Read(ctx context.Context, filter string) ([]state.Record, error) {
	r := l.partition(filter)
	if r == nil {
		return nil, fmt.Errorf("read %s: the filter names no slot", filter)
	}
	c := startCall(ctx)
	last, err := r.leaderGet(c.ctx, msgGetRequest{LastFor: filter})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		c.cancel()
		return nil, nil
	}
	if err = c.done("read "+filter, err); err != nil {
		return nil, err
	}
	c = startCall(ctx)
	recs, err := l.readDirect(c.ctx, r.stream, filter)
	if err = c.done("read "+filter, err); function.IsUnavailable(err) {
		// No answer in time: JetStream is slow or between leaders, which
		// the leader's slow path would only wait out again, starting with
		// the caller's time spent (and so taken for the caller's fault).
		return nil, err
	}
	if err == nil && len(recs) > 0 && recs[len(recs)-1].Sequence >= last.Sequence {
		return recs, nil
	}
	c = startCall(ctx)
	recs, err = readLeader(c.ctx, r, filter)
	return recs, c.done("read "+filter, err)
}

// Last implements state.Log, from the stream leader. A filter whose slot is
// a wildcard is asked of every partition, and any match is returned (the
// sequences of two partitions do not compare).
func (l *Log) Last(ctx context.Context, filter string) (state.Record, bool, error) {
	parts := l.reads
	if r := l.partition(filter); r != nil {
		parts = []*reads{r}
	}
	for _, r := range parts {
		c := startCall(ctx)
		m, err := r.leaderGet(c.ctx, msgGetRequest{LastFor: filter})
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			c.cancel()
			continue
		}
		if err = c.done("last of "+filter, err); err != nil {
			return state.Record{}, false, err
		}
		return record(m), true, nil
	}
	return state.Record{}, false, nil
}

// readDirect reads the last message of every subject matching filter, in
// stream order, with one direct multi-last get. An order's events are each
// stored once on a subject of their own, so that is all of them; and the
// server finds them through its subject index, where a batch get from the
// stream's first sequence scans message blocks, at a cost that grew with
// the stream (30% of the CPU of a loaded system was that scan).
func (l *Log) readDirect(ctx context.Context, stream, filter string) ([]state.Record, error) {
	it, err := jetstreamext.GetLastMsgsFor(ctx, l.js, stream, []string{filter}, jetstreamext.GetLastMsgsBatchSize(historyBatch))
	if err != nil {
		return nil, err
	}
	var out []state.Record
	for m, err := range it {
		if errors.Is(err, jetstreamext.ErrNoMessages) {
			break
		}
		if err != nil {
			return nil, err
		}
		out = append(out, record(m))
	}
	slices.SortFunc(out, func(a, b state.Record) int { return cmp.Compare(a.Sequence, b.Sequence) })
	return out, nil
}

// readLeader reads the matching events from the stream leader, one request
// each: the slow path, for a replica that lags.
func readLeader(ctx context.Context, r *reads, filter string) ([]state.Record, error) {
	var out []state.Record
	for seq := uint64(1); len(out) < historyBatch; {
		m, err := r.leaderGet(ctx, msgGetRequest{NextFor: filter, Seq: seq})
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, err
		}
		out = append(out, record(m))
		seq = m.Sequence + 1
	}
	return out, nil
}

func record(m *jetstream.RawStreamMsg) state.Record {
	return state.Record{
		Subject:  m.Subject,
		Sequence: m.Sequence,
		Time:     m.Time,
		Type:     m.Header.Get(EventTypeHeader),
		Data:     m.Data,
	}
}
