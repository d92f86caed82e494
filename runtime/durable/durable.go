// Package durable implements the state package on JetStream: buckets are KV
// buckets written with compare-and-set, and the event log is a stream with
// message-id deduplication. Reads see every acknowledged write, also on a
// replicated stream (see reads.go); a lost compare-and-set race is
// state.ErrConflict and an outage function.ErrUnavailable, whatever the
// server answered (errors.go). It also declares the streams and buckets
// orderflow needs, with replicas from config, and provisions them
// (provision.go).
package durable

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Names of the JetStream resources orderflow uses.
const (
	// EventStream holds the saga events, ORDER.<slot>.<order_id>.<event>,
	// in Config.Partitions streams ORDERS_<p> (EventStreamConfigs).
	EventStream = "ORDERS"
)

// Config sizes the resources.
type Config struct {
	// Replicas of every stream and bucket: 1 on a laptop, 3 on a cluster.
	Replicas int
	// DuplicateWindow is how long the event and dead-letter streams remember
	// message ids. It must outlast the longest retry horizon, or a late retry
	// publishes twice.
	DuplicateWindow time.Duration
	// Mode says whether opening a store may create its stream or bucket
	// (the zero value, CreateMissing) or only find it (Lookup). Opening
	// never changes an existing one; Ensure with Apply does.
	Mode Mode
	// Retention is how long an order's events, and the records kept under
	// its id, are kept after they are written; 0 keeps them forever.
	Retention time.Duration
	// Expiring says, per bucket, which keys are an order's records and
	// expire with Retention (the rest, a SKU's level say, never do).
	Expiring map[string]func(key string) bool
	// Writes, when set, learns whether each write was stored or refused
	// for lack of room, for readiness.
	Writes *Writes
	// Partitions splits the event stream, and the buckets named in
	// PartitionedBuckets, into that many streams and buckets, each its own
	// fsync queue and, on a cluster, its own Raft group (0: 1). A key or
	// subject's slot (partition.Slot) says which one holds it.
	Partitions         int
	PartitionedBuckets []string
	// Tracing gives publishes a producer span and puts its context in the
	// message headers (default: no tracing).
	Tracing trace.TracerProvider
}

func (c Config) tracer() trace.Tracer {
	tp := c.Tracing
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	return tp.Tracer("github.com/orderflow/orderflow/runtime/durable")
}

func (c Config) withDefaults() Config {
	if c.Replicas < 1 {
		c.Replicas = 1
	}
	if c.DuplicateWindow <= 0 {
		c.DuplicateWindow = time.Hour
	}
	return c
}

// EventStreamConfig is what every partition of the event stream shares;
// EventStreamConfigs names them and gives each its slots.
func EventStreamConfig(c Config) jetstream.StreamConfig {
	c = c.withDefaults()
	return jetstream.StreamConfig{
		Name:        EventStream,
		Description: "orderflow saga events",
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Replicas:    c.Replicas,
		Duplicates:  duplicates(c),
		MaxAge:      c.eventAge(),
		// Direct gets serve an order's history without a consumer.
		AllowDirect: true,
	}
}

// eventAge is how long an order's events are kept: Retention and a margin,
// so that they outlive the records kept under the order's id. An order id
// can be used again (a create repeated with its key) only once every event
// of the order is gone; a record of its earlier life still there then (a
// sold reservation, a capture) would be taken for the new order's. The
// servers expire KV records by TTL on a timer of about a second, so the
// margin is a few seconds at least.
func (c Config) eventAge() time.Duration {
	if c.Retention <= 0 {
		return 0
	}
	return c.Retention + min(max(c.Retention/10, 5*time.Second), time.Hour)
}

// duplicates is the event stream's duplicate window, which the server
// wants no longer than its max age.
func duplicates(c Config) time.Duration {
	if c.Retention > 0 && c.Retention < c.DuplicateWindow {
		return c.Retention
	}
	return c.DuplicateWindow
}

// keyTTL is how long a write under key of bucket lives: Retention for an
// order's records, 0 (for ever) for the rest.
func (c Config) keyTTL(bucket string) func(key string) time.Duration {
	expiring := c.Expiring[c.logicalBucket(bucket)]
	if c.Retention <= 0 || expiring == nil {
		return nil
	}
	return func(key string) time.Duration {
		if expiring(key) {
			return c.Retention
		}
		return 0
	}
}

// BucketConfig is the configuration of KV bucket name.
func BucketConfig(name string, c Config) jetstream.KeyValueConfig {
	c = c.withDefaults()
	return jetstream.KeyValueConfig{
		Bucket:   name,
		History:  1,
		Storage:  jetstream.FileStorage,
		Replicas: c.Replicas,
	}
}

// BucketStream is the name of the stream behind KV bucket name.
func BucketStream(name string) string { return "KV_" + name }
