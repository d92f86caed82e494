package durable

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/orderflow/orderflow/runtime/partition"
	"github.com/orderflow/orderflow/runtime/state"
)

// Bucket is a state.Store on a JetStream KV bucket.
type Bucket struct {
	kv   jetstream.KeyValue
	name string
	// subjects is "$KV.<name>.", the prefix of every key's subject.
	subjects string
	reads    *reads
	writes   *Writes
	js       jetstream.JetStream
	// ttl is how long a write under a key lives (nil or 0: for ever).
	ttl func(key string) time.Duration
}

var _ state.Store = (*Bucket)(nil)

// OpenBucket binds KV bucket name, creating it first if c.Mode allows.
func OpenBucket(ctx context.Context, js jetstream.JetStream, name string, c Config) (*Bucket, error) {
	cfg := BucketConfig(name, c)
	if logical := c.logicalBucket(name); logical != name {
		for _, pc := range BucketConfigs(logical, c) {
			if pc.Bucket == name {
				cfg = pc
			}
		}
	}
	res := Resources{Buckets: []jetstream.KeyValueConfig{cfg}}
	res.Expiring = c.ExpiringBuckets(res)
	if _, err := Ensure(ctx, js, res, c.Mode.open()); err != nil {
		return nil, err
	}
	call := startCall(ctx)
	kv, err := js.KeyValue(call.ctx, name)
	if err = call.done("bucket "+name, err); err != nil {
		return nil, err
	}
	r, err := newReads(ctx, js, BucketStream(name))
	if err != nil {
		return nil, err
	}
	b := &Bucket{kv: kv, name: name, subjects: "$KV." + name + ".", reads: r, writes: c.Writes, js: js}
	if ttl := c.keyTTL(name); ttl != nil {
		// A store made before records expired has TTLs off until
		// `provision` turns them on: until then its records are kept.
		call := startCall(ctx)
		s, err := js.Stream(call.ctx, BucketStream(name))
		if err = call.done("stream "+BucketStream(name), err); err != nil {
			return nil, err
		}
		if s.CachedInfo().Config.AllowMsgTTL {
			b.ttl = ttl
		}
	}
	return b, nil
}

// Get implements state.Store. It reads from the stream leader, so it sees
// every write acknowledged before it.
func (b *Bucket) Get(ctx context.Context, key string, into proto.Message) (uint64, error) {
	c := startCall(ctx)
	m, err := b.reads.leaderGet(c.ctx, msgGetRequest{LastFor: b.subjects + key})
	if err == nil && deleted(m.Header) {
		err = jetstream.ErrMsgNotFound
	}
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		c.cancel()
		return 0, fmt.Errorf("%s/%s: %w", b.name, key, state.ErrNotFound)
	}
	if err = c.done("get "+b.name+"/"+key, err); err != nil {
		return 0, err
	}
	if err := proto.Unmarshal(m.Data, into); err != nil {
		return 0, fmt.Errorf("decode %s/%s: %w", b.name, key, err)
	}
	return m.Sequence, nil
}

// deleted reports a KV delete or purge, or a marker the server left where
// a key expired or was removed: the key has no value, as nats.go's KV Get
// says too.
func deleted(h nats.Header) bool {
	switch h.Get("KV-Operation") {
	case "DEL", "PURGE":
		return true
	}
	return h.Get(jetstream.MarkerReasonHeader) != ""
}

var marshal = proto.MarshalOptions{}

func (b *Bucket) keyTTL(key string) time.Duration {
	if b.ttl == nil {
		return 0
	}
	return b.ttl(key)
}

// Put implements state.Store: a KV create (rev 0) or update at rev. A lost
// race is state.ErrConflict, whatever code the server answered with.
func (b *Bucket) Put(ctx context.Context, key string, value proto.Message, rev uint64) (uint64, error) {
	data, err := marshal.Marshal(value)
	if err != nil {
		return 0, fmt.Errorf("encode %s/%s: %w", b.name, key, err)
	}
	c := startCall(ctx)
	var next uint64
	switch ttl := b.keyTTL(key); {
	case ttl > 0:
		// A record that expires: the expected-revision check of a KV
		// update, with a time to live. An expired record leaves nothing
		// behind, so a create (rev 0) after it works.
		m := nats.NewMsg(b.subjects + key)
		m.Data = data
		var ack *jetstream.PubAck
		if ack, err = b.js.PublishMsg(c.ctx, m, jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(ttl)); err == nil {
			next = ack.Sequence
		}
	case rev == 0:
		next, err = b.kv.Create(c.ctx, key, data)
	default:
		next, err = b.kv.Update(c.ctx, key, data, rev)
	}
	err = c.done("put "+b.name+"/"+key, err)
	if !errors.Is(err, state.ErrConflict) {
		b.writes.done(BucketStream(b.name), err)
	}
	return next, err
}

// Buckets is a state.Store on the partitions of a KV bucket: a key lives in
// the partition of its slot (partition.Slot), so the keys of a hot SKU's
// ledgers, say, spread over partitions like those of many SKUs.
type Buckets struct {
	parts []*Bucket
}

var _ state.Store = (*Buckets)(nil)

// OpenStore opens the store behind logical bucket name: its partitions
// when c partitions it, else the one bucket.
func OpenStore(ctx context.Context, js jetstream.JetStream, name string, c Config) (state.Store, error) {
	if !c.partitionedBucket(name) {
		return OpenBucket(ctx, js, name, c)
	}
	res := Resources{Buckets: BucketConfigs(name, c)}
	res.Expiring = c.ExpiringBuckets(res)
	if _, err := Ensure(ctx, js, res, c.Mode.open()); err != nil {
		return nil, err
	}
	c.Mode = Lookup // ensured above, the partitions all at once
	bs := &Buckets{}
	for _, phys := range c.Buckets(name) {
		b, err := OpenBucket(ctx, js, phys, c)
		if err != nil {
			return nil, err
		}
		bs.parts = append(bs.parts, b)
	}
	return bs, nil
}

func (bs *Buckets) part(key string) *Bucket {
	return bs.parts[partition.Of(partition.Slot(key), len(bs.parts))]
}

// Get implements state.Store.
func (bs *Buckets) Get(ctx context.Context, key string, into proto.Message) (uint64, error) {
	return bs.part(key).Get(ctx, key, into)
}

// Put implements state.Store.
func (bs *Buckets) Put(ctx context.Context, key string, value proto.Message, rev uint64) (uint64, error) {
	return bs.part(key).Put(ctx, key, value, rev)
}
