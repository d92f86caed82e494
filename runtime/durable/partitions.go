package durable

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/runtime/partition"
)

// Partitioned resources carry their layout in their metadata: the count
// they were provisioned with, which every process must share, and the
// resource they are a partition of.
const (
	PartitionsKey  = "orderflow_partitions"
	PartitionOfKey = "orderflow_partition_of"
)

// ErrLayout refuses a store whose layout this process cannot use: another
// partition count, or the layout from before partitions. Its message says
// what to do.
var ErrLayout = errors.New("store layout")

// parts is the partition count, 1 when unset.
func (c Config) parts() int { return max(c.Partitions, 1) }

// partitionedBucket reports whether the KV bucket name (a logical name)
// is split into partitions.
func (c Config) partitionedBucket(name string) bool {
	for _, b := range c.PartitionedBuckets {
		if b == name {
			return true
		}
	}
	return false
}

// Streams lists the streams behind the logical stream name: the event
// stream's partitions, or name itself.
func (c Config) Streams(name string) []string {
	if name == EventStream {
		return partition.Names(name, c.parts())
	}
	return []string{name}
}

// Buckets lists the KV buckets behind the logical bucket name.
func (c Config) Buckets(name string) []string {
	if c.partitionedBucket(name) {
		return partition.Names(name, c.parts())
	}
	return []string{name}
}

// logicalBucket is the bucket that physical bucket name is a partition of,
// or name itself.
func (c Config) logicalBucket(name string) string {
	if i := strings.LastIndexByte(name, '_'); i > 0 {
		if _, err := strconv.Atoi(name[i+1:]); err == nil && c.partitionedBucket(name[:i]) {
			return name[:i]
		}
	}
	return name
}

// eventPartition is the partition, of n, of the event stream that holds
// subject (or filter) ORDER.<slot>.…, or -1 when its slot token is not a
// slot (a wildcard, another subject).
func eventPartition(subject string, n int) int {
	tok, _, _ := strings.Cut(subject[strings.IndexByte(subject, '.')+1:], ".")
	slot, err := strconv.Atoi(tok)
	if err != nil || slot < 0 || slot >= partition.Slots {
		return -1
	}
	return partition.Of(slot, n)
}

// layoutMetadata is the metadata of partition p of name.
func (c Config) layoutMetadata(name string) map[string]string {
	return map[string]string{PartitionsKey: strconv.Itoa(c.parts()), PartitionOfKey: name}
}

// EventStreamConfigs are the partitions of the event stream: ORDERS_<p>
// holds ORDER.<slot>.<order_id>.<event> for the slots p owns. Four-token
// subjects never overlap the three-token ORDER.<order_id>.<event> of a
// store from before partitions, so the refusal below can name it.
func EventStreamConfigs(c Config) []jetstream.StreamConfig {
	n := c.parts()
	out := make([]jetstream.StreamConfig, n)
	for p := range n {
		cfg := EventStreamConfig(c)
		cfg.Name = partition.Name(EventStream, p)
		cfg.Subjects = nil
		for _, s := range partition.SlotsOf(p, n) {
			cfg.Subjects = append(cfg.Subjects, fmt.Sprintf("ORDER.%d.*.*", s))
		}
		cfg.Description = fmt.Sprintf("orderflow saga events, ORDER.<slot>.<order_id>.<event>: partition %d of %d (slots ≡ %d mod %d)", p, n, p, n)
		cfg.Metadata = c.layoutMetadata(EventStream)
		out[p] = cfg
	}
	return out
}

// BucketConfigs are the KV buckets behind logical bucket name: its
// partitions, whose keys are spread by partition.Slot, or the bucket.
func BucketConfigs(name string, c Config) []jetstream.KeyValueConfig {
	if !c.partitionedBucket(name) {
		return []jetstream.KeyValueConfig{BucketConfig(name, c)}
	}
	var out []jetstream.KeyValueConfig
	for p, phys := range c.Buckets(name) {
		cfg := BucketConfig(phys, c)
		cfg.Description = fmt.Sprintf("orderflow %s: partition %d of %d (keys whose slot ≡ %d mod %d)", name, p, c.parts(), p, c.parts())
		cfg.Metadata = c.layoutMetadata(name)
		out = append(out, cfg)
	}
	return out
}

// checkLayout refuses a partition provisioned with another partition
// count than want declares.
func checkLayout(kind, name string, have, want map[string]string) error {
	w, ok := want[PartitionsKey]
	if !ok {
		return nil
	}
	if h := have[PartitionsKey]; h != w {
		if h == "" {
			h = "unknown"
		}
		return fmt.Errorf("%w: %s %s was provisioned with PARTITIONS=%s and this process has PARTITIONS=%s: set PARTITIONS=%s. "+
			"The count is fixed when a store is provisioned; to change it, start on a new store (every order's events and records stay in the partition they were written to)",
			ErrLayout, kind, name, h, w, h)
	}
	return nil
}

// refuseLegacy refuses to create a partition beside partitions of another
// count, or beside the unpartitioned
// resource of a store from before partitions (stream ORDERS with
// ORDER.<order_id>.<event>, or bucket stock), which this version cannot
// read: serving it as empty would lose its orders and stock.
func refuseLegacy(ctx context.Context, js jetstream.JetStream, kind string, meta map[string]string) error {
	of := meta[PartitionOfKey]
	if of == "" {
		return nil
	}
	legacy := of
	if kind == "bucket" {
		legacy = BucketStream(of)
	}
	// Partition 0 exists in every layout: another count shows there
	// before anything is created beside it.
	first := partition.Name(legacy, 0)
	var s jetstream.Stream
	err := call(ctx, func(ctx context.Context) (err error) { s, err = js.Stream(ctx, first); return err })
	switch {
	case err == nil:
		if err := checkLayout(kind, partition.Name(of, 0), s.CachedInfo().Config.Metadata, meta); err != nil {
			return err
		}
	case !errors.Is(err, jetstream.ErrStreamNotFound):
		return classify(false, "stream "+first, err)
	}
	err = call(ctx, func(ctx context.Context) error { _, err := js.Stream(ctx, legacy); return err })
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return nil
	case err != nil:
		return classify(false, "stream "+legacy, err)
	}
	return fmt.Errorf("%w: %s %s holds data in the layout from before partitions, which this version does not read. "+
		"Finish its orders with the version that wrote them (orders in flight: `nats consumer report ORDERS`), note the stock levels "+
		"(`nats kv ls stock`), then move the store away (the data directory of `go run ./functions`) or remove stream ORDERS and bucket stock, "+
		"start this version on the empty store and restock",
		ErrLayout, kind, of)
}
