// Package durable implements the state package on JetStream: buckets are KV
// buckets written with compare-and-set, and the event log is a stream with
// message-id deduplication and direct batch gets. It also declares the
// streams and buckets orderflow needs, with replicas from config.
package durable

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Names of the JetStream resources orderflow uses.
const (
	// EventStream holds the saga events, ORDER.<order_id>.<event>.
	EventStream = "ORDERS"
	// EventSubjects is the subject space of EventStream.
	EventSubjects = "ORDER.>"
)

// Config sizes the resources.
type Config struct {
	// Replicas of every stream and bucket: 1 on a laptop, 3 on a cluster.
	Replicas int
	// DuplicateWindow is how long the event and dead-letter streams remember
	// message ids. It must outlast the longest retry horizon, or a late retry
	// publishes twice.
	DuplicateWindow time.Duration
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

// EventStreamConfig is the configuration of the event stream.
func EventStreamConfig(c Config) jetstream.StreamConfig {
	c = c.withDefaults()
	return jetstream.StreamConfig{
		Name:        EventStream,
		Description: "orderflow saga events, ORDER.<order_id>.<event>",
		Subjects:    []string{EventSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Replicas:    c.Replicas,
		Duplicates:  c.DuplicateWindow,
		// Direct gets serve an order's history without a consumer.
		AllowDirect: true,
	}
}

// OpenLog creates or updates the event stream and returns its log.
func OpenLog(ctx context.Context, js jetstream.JetStream, c Config) (*Log, error) {
	if _, err := js.CreateOrUpdateStream(ctx, EventStreamConfig(c)); err != nil {
		return nil, fmt.Errorf("stream %s: %w", EventStream, err)
	}
	return &Log{js: js, stream: EventStream, tracer: c.tracer()}, nil
}

// OpenBucket creates or updates the KV bucket name.
func OpenBucket(ctx context.Context, js jetstream.JetStream, name string, c Config) (*Bucket, error) {
	c = c.withDefaults()
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:   name,
		History:  1,
		Storage:  jetstream.FileStorage,
		Replicas: c.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", name, err)
	}
	return &Bucket{kv: kv, name: name}, nil
}

// BucketStream is the name of the stream behind KV bucket name.
func BucketStream(name string) string { return "KV_" + name }

// Check reports whether the named streams exist, for readiness probes.
func Check(ctx context.Context, js jetstream.JetStream, streams ...string) error {
	var errs []error
	for _, s := range streams {
		if _, err := js.Stream(ctx, s); err != nil {
			errs = append(errs, fmt.Errorf("stream %s: %w", s, err))
		}
	}
	return errors.Join(errs...)
}
