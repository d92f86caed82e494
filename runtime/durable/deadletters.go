package durable

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	runtimev1 "github.com/orderflow/orderflow/proto/gen/runtime/v1"
	"github.com/orderflow/orderflow/runtime/deadletter"
	"github.com/orderflow/orderflow/runtime/partition"
	"github.com/orderflow/orderflow/runtime/state"
)

// The dead-letter stream: messages that failed for good, with the reason.
const (
	DeadLetterStream   = deadletter.Stream
	DeadLetterSubjects = deadletter.Subjects
)

// ErrNotFound is returned for a dead letter that is not (or no longer) there.
var ErrNotFound = state.ErrNotFound

// DeadLetterStreamConfig is the configuration of the dead-letter stream.
func DeadLetterStreamConfig(c Config) jetstream.StreamConfig {
	c = c.withDefaults()
	return jetstream.StreamConfig{
		Name:        DeadLetterStream,
		Description: "orderflow dead letters, DEADLETTER.<consumer>: messages that failed for good, with the reason",
		Subjects:    []string{DeadLetterSubjects},
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
		Duplicates:  c.DuplicateWindow,
		AllowDirect: true,
	}
}

// DeadLetterSubject is where consumer's dead letters are stored.
func DeadLetterSubject(consumer string) string { return "DEADLETTER." + consumer }

// DeadLetters is the dead-letter stream.
type DeadLetters struct {
	js     jetstream.JetStream
	stream string
	tracer trace.Tracer
	writes *Writes
	cfg    Config
}

// OpenDeadLetters binds the dead-letter stream, creating it first if
// c.Mode allows.
func OpenDeadLetters(ctx context.Context, js jetstream.JetStream, c Config) (*DeadLetters, error) {
	if _, err := Ensure(ctx, js, Resources{Streams: []jetstream.StreamConfig{DeadLetterStreamConfig(c)}}, c.Mode.open()); err != nil {
		return nil, err
	}
	return &DeadLetters{js: js, stream: DeadLetterStream, tracer: c.tracer(), writes: c.Writes, cfg: c}, nil
}

// Put stores a dead letter on DEADLETTER.<consumer>. Its message id is the
// original message's stream position, so a pod that dies between storing the
// dead letter and terminating the original stores it once.
func (d *DeadLetters) Put(ctx context.Context, dl *runtimev1.DeadLetter) error {
	data, err := marshal.Marshal(dl)
	if err != nil {
		return err
	}
	m := nats.NewMsg(DeadLetterSubject(dl.GetConsumer()))
	m.Data = data
	m.Header.Set("Content-Type", "application/protobuf")
	m.Header.Set(EventTypeHeader, string(dl.ProtoReflect().Descriptor().FullName()))
	id := fmt.Sprintf("%s/%d/%s", dl.GetStream(), dl.GetStreamSequence(), dl.GetConsumer())
	ctx, span := startPublish(ctx, d.tracer, m, id)
	c := startCall(ctx)
	ack, err := d.js.PublishMsg(c.ctx, m, jetstream.WithMsgID(id))
	err = c.done("dead letter "+id, err)
	d.writes.done(d.stream, err)
	endPublish(span, ack, err)
	return err
}

// List returns up to limit dead letters after sequence after, oldest first.
func (d *DeadLetters) List(ctx context.Context, after uint64, limit int) ([]*runtimev1.DeadLetter, error) {
	it, err := jetstreamext.GetBatch(ctx, d.js, d.stream, limit, jetstreamext.GetBatchSeq(after+1))
	if err != nil {
		return nil, err
	}
	var out []*runtimev1.DeadLetter
	for m, err := range it {
		if errors.Is(err, jetstreamext.ErrNoMessages) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("list dead letters: %w", err)
		}
		dl, err := decodeDeadLetter(m)
		if err != nil {
			return nil, err
		}
		out = append(out, dl)
	}
	return out, nil
}

func decodeDeadLetter(m *jetstream.RawStreamMsg) (*runtimev1.DeadLetter, error) {
	dl := &runtimev1.DeadLetter{}
	if err := proto.Unmarshal(m.Data, dl); err != nil {
		return nil, fmt.Errorf("dead letter %d: %w", m.Sequence, err)
	}
	dl.Sequence = m.Sequence
	return dl, nil
}

// Replay publishes dead letter seq's message again on its original subject,
// if t allows it, with only the headers t names, then deletes the dead
// letter. If handling fails again, the message comes back as a new dead
// letter.
func (d *DeadLetters) Replay(ctx context.Context, seq uint64, t deadletter.Target) (*runtimev1.ReplayDeadLetterResponse, error) {
	s, err := d.js.Stream(ctx, d.stream)
	if err != nil {
		return nil, classify(false, "stream "+d.stream, err)
	}
	raw, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("dead letter %d: %w", seq, ErrNotFound)
	}
	if err != nil {
		return nil, classify(false, fmt.Sprintf("dead letter %d", seq), err)
	}
	dl, err := decodeDeadLetter(raw)
	if err != nil {
		return nil, err
	}
	hdr := nats.Header{}
	for _, h := range dl.GetHeaders() {
		if slices.ContainsFunc(t.Headers, func(n string) bool { return strings.EqualFold(n, h.GetName()) }) {
			hdr.Add(h.GetName(), h.GetValue())
		}
	}
	from, to := d.origin(dl, t)
	if err := t.Allows(from, dl.GetSubject(), hdr, dl.GetData()); err != nil {
		return nil, fmt.Errorf("dead letter %d: %w", seq, err)
	}
	if t.Done != nil {
		done, err := t.Done(ctx, dl.GetSubject())
		if err != nil {
			return nil, err
		}
		if done { // nothing left to redo: drop the letter, publish nothing
			if err := d.delete(ctx, s, seq); err != nil {
				return nil, err
			}
			return &runtimev1.ReplayDeadLetterResponse{Sequence: seq, Subject: dl.GetSubject()}, nil
		}
	}
	m := nats.NewMsg(dl.GetSubject())
	m.Data, m.Header = dl.GetData(), hdr
	// A fresh id: the original one would be dropped as a duplicate, while a
	// repeat of this replay is still dropped.
	m.Header.Set(jetstream.MsgIDHeader, "replay/"+d.stream+"/"+strconv.FormatUint(seq, 10))
	m.Header.Set("Orderflow-Replayed-From", strconv.FormatUint(seq, 10))
	// The message must land in the target stream and nowhere else.
	ack, err := d.js.PublishMsg(ctx, m, jetstream.WithExpectStream(to))
	if err != nil {
		return nil, classify(false, fmt.Sprintf("replay %d to %s", seq, dl.GetSubject()), err)
	}
	if err := d.delete(ctx, s, seq); err != nil {
		return nil, err
	}
	return &runtimev1.ReplayDeadLetterResponse{Sequence: seq, Subject: dl.GetSubject(), ReplayedSequence: ack.Sequence}, nil
}

func (d *DeadLetters) delete(ctx context.Context, s jetstream.Stream, seq uint64) error {
	if err := s.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return classify(false, fmt.Sprintf("delete dead letter %d", seq), err)
	}
	return nil
}

// Sweep deletes the dead letters that failed more than age ago and that t
// says there is nothing left to do for (their order ended, or never
// existed), or that are not t's to replay at all, oldest first; a letter
// of an order still open is kept, however old. It returns how many went.
func (d *DeadLetters) Sweep(ctx context.Context, age time.Duration, t deadletter.Target) (int, error) {
	s, err := d.js.Stream(ctx, d.stream)
	if err != nil {
		return 0, classify(false, "stream "+d.stream, err)
	}
	cutoff := time.Now().Add(-age)
	swept := 0
	for after := uint64(0); ; {
		dls, err := d.List(ctx, after, 100)
		if err != nil || len(dls) == 0 {
			return swept, err
		}
		for _, dl := range dls {
			if dl.GetFailedAt().AsTime().After(cutoff) {
				return swept, nil // the rest are younger
			}
			after = dl.GetSequence()
			hdr := nats.Header{}
			for _, h := range dl.GetHeaders() {
				hdr.Add(h.GetName(), h.GetValue())
			}
			from, _ := d.origin(dl, t)
			gone := t.Allows(from, dl.GetSubject(), hdr, dl.GetData()) != nil
			if !gone && t.Done != nil {
				if gone, err = t.Done(ctx, dl.GetSubject()); err != nil {
					return swept, err
				}
			}
			if !gone {
				continue // its order is open: kept until it ends
			}
			if err := d.delete(ctx, s, dl.GetSequence()); err != nil {
				return swept, err
			}
			swept++
		}
	}
}

// origin is the stream dl's message came from as t names streams (the
// event stream, for a message of the partition its subject belongs to),
// and the stream a replay must land in: the subject's partition.
func (d *DeadLetters) origin(dl *runtimev1.DeadLetter, t deadletter.Target) (from, to string) {
	to = t.Stream
	if t.Stream == EventStream {
		if p := eventPartition(dl.GetSubject(), d.cfg.parts()); p >= 0 {
			to = partition.Name(EventStream, p)
		}
	}
	if from = dl.GetStream(); from == to {
		from = t.Stream
	}
	return from, to
}
