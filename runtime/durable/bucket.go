package durable

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/orderflow/orderflow/runtime/state"
)

// Bucket is a state.Store on a JetStream KV bucket.
type Bucket struct {
	kv   jetstream.KeyValue
	name string
}

var _ state.Store = (*Bucket)(nil)

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

var marshal = proto.MarshalOptions{}

// Put implements state.Store: a KV create (rev 0) or update at rev.
func (b *Bucket) Put(ctx context.Context, key string, value proto.Message, rev uint64) error {
	data, err := marshal.Marshal(value)
	if err != nil {
		return fmt.Errorf("encode %s/%s: %w", b.name, key, err)
	}
	if rev == 0 {
		_, err = b.kv.Create(ctx, key, data)
	} else {
		_, err = b.kv.Update(ctx, key, data, rev)
	}
	if err != nil {
		return b.mapErr("put", key, err)
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
		return api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
	}
	return false
}
