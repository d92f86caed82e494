package durable_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/durable"
	"github.com/orderflow/orderflow/runtime/partition"
	"github.com/orderflow/orderflow/runtime/runtimetest"
	"github.com/orderflow/orderflow/runtime/state"
)

func partitioned(n int) durable.Config {
	return durable.Config{Partitions: n, PartitionedBuckets: []string{"stock"}}
}

// Each order's events land in the partition of its slot, and are read
// back from there; every partition gets some of 200 orders; a key of a
// partitioned bucket lives in its slot's partition only.
func TestPartitionsSpreadAndRead(t *testing.T) {
	ctx := context.Background()
	js := runtimetest.JetStream(t, runtimetest.Connect(t, runtimetest.StartNATS(t)))
	c := partitioned(4)
	log, err := durable.OpenLog(ctx, js, c)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		id := fmt.Sprintf("o-%d", i)
		if _, _, err := log.Append(ctx, state.Event{Subject: eventSubject(id, "created"), Once: true, Payload: &ordersv1.OrderCreated{}}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := log.Append(ctx, state.Event{Subject: eventSubject(id, "stock_sold"), Once: true, Payload: &ordersv1.StockSold{}}); err != nil {
			t.Fatal(err)
		}
	}
	for p, name := range c.Streams(durable.EventStream) {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info := s.CachedInfo()
		if info.State.Msgs == 0 {
			t.Errorf("partition %s holds nothing of 200 orders", name)
		}
		if got, want := info.Config.Metadata[durable.PartitionsKey], "4"; got != want {
			t.Errorf("%s metadata partitions = %q, want %q", name, got, want)
		}
		for i := range 200 {
			id := fmt.Sprintf("o-%d", i)
			if partition.Of(partition.Slot(id), 4) != p {
				continue
			}
			if _, err := s.GetLastMsgForSubject(ctx, eventSubject(id, "created")); err != nil {
				t.Fatalf("order %s (slot %d) not in its partition %s: %v", id, partition.Slot(id), name, err)
			}
		}
	}
	recs, err := log.Read(ctx, eventSubject("o-7", ">"))
	if err != nil || len(recs) != 2 {
		t.Fatalf("Read of one order = %d records, %v; want 2", len(recs), err)
	}
	if _, ok, err := log.Last(ctx, "ORDER.*.*.created"); err != nil || !ok {
		t.Errorf("Last over every partition = %v, %v; want one", ok, err)
	}

	stock, err := durable.OpenStore(ctx, js, "stock", c)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 64 {
		key := fmt.Sprintf("sku.S%d.%d", i/8, i%8)
		if _, err := stock.Put(ctx, key, level(key, int32(i)), 0); err != nil {
			t.Fatal(err)
		}
		got, _, err := state.Get[ordersv1.StockLevel](ctx, stock, key)
		if err != nil || got.GetAvailable() != int32(i) {
			t.Fatalf("Get %s = %v, %v", key, got, err)
		}
		home := partition.Of(partition.Slot(key), 4)
		for p, name := range c.Buckets("stock") {
			kv, err := js.KeyValue(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			_, err = kv.Get(ctx, key)
			if found := err == nil; found != (p == home) {
				t.Errorf("key %s in %s: %v, want found only in partition %d", key, name, err, home)
			}
		}
	}
}

// A process with another partition count than the store was provisioned
// with refuses it, in every mode, and says which count to set.
func TestPartitionCountMismatchIsRefused(t *testing.T) {
	ctx := context.Background()
	js := runtimetest.JetStream(t, runtimetest.Connect(t, runtimetest.StartNATS(t)))
	if _, err := durable.OpenLog(ctx, js, partitioned(4)); err != nil {
		t.Fatal(err)
	}
	if _, err := durable.OpenStore(ctx, js, "stock", partitioned(4)); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []durable.Mode{durable.CreateMissing, durable.Lookup, durable.Apply} {
		c := partitioned(8)
		c.Mode = mode
		res := durable.Resources{Streams: durable.EventStreamConfigs(c), Buckets: durable.BucketConfigs("stock", c)}
		_, err := durable.Ensure(ctx, js, res, mode)
		if !errors.Is(err, durable.ErrLayout) || !strings.Contains(err.Error(), "set PARTITIONS=4") {
			t.Errorf("%s with PARTITIONS=8 on a store of 4: %v, want ErrLayout saying to set PARTITIONS=4", mode, err)
		}
	}
	if _, err := durable.OpenLog(ctx, js, partitioned(2)); !errors.Is(err, durable.ErrLayout) {
		t.Errorf("OpenLog with 2 partitions on a store of 4: %v, want ErrLayout", err)
	}
	if _, err := durable.OpenStore(ctx, js, "stock", partitioned(8)); !errors.Is(err, durable.ErrLayout) {
		t.Errorf("OpenStore with 8 partitions on a store of 4: %v, want ErrLayout", err)
	}
	for _, name := range []string{"ORDERS_4", "KV_stock_4"} {
		if _, err := js.Stream(ctx, name); !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("stream %s after the refusals: %v, want none made", name, err)
		}
	}
}

// A store from before partitions (stream ORDERS on ORDER.>, bucket stock)
// is refused with a message saying what to do, and nothing is created
// beside it.
func TestLayoutBeforePartitionsIsRefused(t *testing.T) {
	ctx := context.Background()
	js := runtimetest.JetStream(t, runtimetest.Connect(t, runtimetest.StartNATS(t)))
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"ORDER.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "stock"}); err != nil {
		t.Fatal(err)
	}
	_, err := durable.OpenLog(ctx, js, partitioned(4))
	if !errors.Is(err, durable.ErrLayout) || !strings.Contains(err.Error(), "layout from before partitions") {
		t.Errorf("OpenLog on an old store: %v, want ErrLayout naming the old layout", err)
	}
	_, err = durable.OpenStore(ctx, js, "stock", partitioned(4))
	if !errors.Is(err, durable.ErrLayout) || !strings.Contains(err.Error(), "bucket stock") {
		t.Errorf("OpenStore on an old store: %v, want ErrLayout naming bucket stock", err)
	}
	names := js.StreamNames(ctx)
	var got []string
	for n := range names.Name() {
		got = append(got, n)
	}
	if len(got) != 2 {
		t.Errorf("streams after the refusal: %v, want only ORDERS and KV_stock", got)
	}
}
