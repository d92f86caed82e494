package durable

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
	"google.golang.org/protobuf/proto"

	"github.com/orderflow/orderflow/runtime/state"
)

// Bucket is a state.Store on a JetStream KV bucket.
type Bucket struct {
	js   jetstream.JetStream
	kv   jetstream.KeyValue
	name string
}

var _ state.Store = (*Bucket)(nil)

// Name is the bucket name.
func (b *Bucket) Name() string { return b.name }

// Stream is the name of the stream behind the bucket.
func (b *Bucket) Stream() string { return "KV_" + b.name }

// Get implements state.Store.
func (b *Bucket) Get(ctx context.Context, key string, into proto.Message) (uint64, error) {
	e, err := b.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, fmt.Errorf("%s/%s: %w", b.name, key, state.ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("get %s/%s: %w", b.name, key, err)
	}
	if err := proto.Unmarshal(e.Value(), into); err != nil {
		return 0, fmt.Errorf("decode %s/%s: %w", b.name, key, err)
	}
	return e.Revision(), nil
}

var marshal = proto.MarshalOptions{Deterministic: true}

// Commit implements state.Store. One write is a KV create or update; more
// are one atomic batch in which every message carries the revision its key
// must still have, so the batch is a multi-key compare-and-set.
func (b *Bucket) Commit(ctx context.Context, writes ...state.Write) error {
	switch len(writes) {
	case 0:
		return nil
	case 1:
		return b.put(ctx, writes[0])
	}
	msgs := make([]*nats.Msg, len(writes))
	for i, w := range writes {
		data, err := marshal.Marshal(w.Value)
		if err != nil {
			return fmt.Errorf("encode %s/%s: %w", b.name, w.Key, err)
		}
		m := nats.NewMsg("$KV." + b.name + "." + w.Key)
		m.Data = data
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(w.Revision, 10))
		msgs[i] = m
	}
	_, err := jetstreamext.PublishMsgBatch(ctx, b.js, msgs, jetstreamext.BatchFlowControl{AckFirst: false})
	if err != nil {
		return b.mapErr("commit", writes[0].Key, err)
	}
	return nil
}

func (b *Bucket) put(ctx context.Context, w state.Write) error {
	data, err := marshal.Marshal(w.Value)
	if err != nil {
		return fmt.Errorf("encode %s/%s: %w", b.name, w.Key, err)
	}
	if w.Revision == 0 {
		_, err = b.kv.Create(ctx, w.Key, data)
	} else {
		_, err = b.kv.Update(ctx, w.Key, data, w.Revision)
	}
	if err != nil {
		return b.mapErr("put", w.Key, err)
	}
	return nil
}

func (b *Bucket) mapErr(op, key string, err error) error {
	if isConflict(err) {
		return fmt.Errorf("%s %s/%s: %w", op, b.name, key, state.ErrConflict)
	}
	return fmt.Errorf("%s %s/%s: %w", op, b.name, key, err)
}

// isConflict reports a failed expected-revision check.
func isConflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var api *jetstream.APIError
	if errors.As(err, &api) {
		// 10071: wrong last sequence: N; 10164: wrong last sequence.
		return api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || api.ErrorCode == 10164
	}
	return false
}
