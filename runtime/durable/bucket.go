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
	// subjects is "$KV.<name>.", the prefix of every key's subject.
	subjects string
	reads    *reads
}

var _ state.Store = (*Bucket)(nil)

// OpenBucket binds KV bucket name, creating it first if c.Mode allows.
func OpenBucket(ctx context.Context, js jetstream.JetStream, name string, c Config) (*Bucket, error) {
	if _, err := Ensure(ctx, js, Resources{Buckets: []jetstream.KeyValueConfig{BucketConfig(name, c)}}, c.Mode.open()); err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, name)
	if err != nil {
		return nil, classify("bucket "+name, err)
	}
	r, err := newReads(ctx, js, BucketStream(name))
	if err != nil {
		return nil, err
	}
	return &Bucket{kv: kv, name: name, subjects: "$KV." + name + ".", reads: r}, nil
}

// Get implements state.Store. It reads from the stream leader when the
// bucket is replicated, so it sees every write acknowledged before it.
func (b *Bucket) Get(ctx context.Context, key string, into proto.Message) (uint64, error) {
	data, rev, err := b.get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, fmt.Errorf("%s/%s: %w", b.name, key, state.ErrNotFound)
	}
	if err != nil {
		return 0, classify("get "+b.name+"/"+key, err)
	}
	if err := proto.Unmarshal(data, into); err != nil {
		return 0, fmt.Errorf("decode %s/%s: %w", b.name, key, err)
	}
	return rev, nil
}

func (b *Bucket) get(ctx context.Context, key string) ([]byte, uint64, error) {
	if !b.reads.fromLeader(ctx) {
		e, err := b.kv.Get(ctx, key)
		if err != nil {
			return nil, 0, err
		}
		return e.Value(), e.Revision(), nil
	}
	m, err := b.reads.leaderGet(ctx, msgGetRequest{LastFor: b.subjects + key})
	if err != nil {
		return nil, 0, err
	}
	switch m.Header.Get(kvOperationHeader) {
	case "DEL", "PURGE":
		return nil, 0, jetstream.ErrKeyNotFound
	}
	return m.Data, m.Sequence, nil
}

// kvOperationHeader marks a KV delete or purge.
const kvOperationHeader = "KV-Operation"

var marshal = proto.MarshalOptions{}

// Put implements state.Store: a KV create (rev 0) or update at rev. A lost
// race is state.ErrConflict, whatever code the server answered with.
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
	return classify("put "+b.name+"/"+key, err)
}
