package durable_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/durable"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/runtimetest"
	"github.com/orderflow/orderflow/runtime/state"
)

// countingStore counts the lost races a Store reports, and how the server
// said so.
type countingStore struct {
	state.Store
	conflicts, code10164 atomic.Int64
}

func (c *countingStore) Put(ctx context.Context, key string, v proto.Message, rev uint64) (uint64, error) {
	next, err := c.Store.Put(ctx, key, v, rev)
	if errors.Is(err, state.ErrConflict) {
		c.conflicts.Add(1)
		var api *jetstream.APIError
		if errors.As(err, &api) && api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant {
			c.code10164.Add(1)
		}
	}
	return next, err
}

func r3(t *testing.T) (*runtimetest.Cluster, jetstream.JetStream) {
	t.Helper()
	// Every write fsynced, as nats.conf has it: followers then lag as they
	// do on real disks.
	c := runtimetest.StartCluster(t, 3, runtimetest.WithSyncAlways())
	return c, runtimetest.JetStream(t, c.Connect())
}

// On a replicated bucket, concurrent compare-and-set writers on one key
// lose races that the server reports with either code; every one must be
// recognised, so that every increment lands exactly once and none fails.
func TestR3CompareAndSetConflicts(t *testing.T) {
	ctx := context.Background()
	_, js := r3(t)
	b, err := durable.OpenBucket(ctx, js, "r3cas", durable.Config{Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	store := &countingStore{Store: b}
	const writers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for range writers {
		wg.Go(func() {
			for range each {
				_, err := state.Modify(ctx, store, "n", func(l *ordersv1.StockLevel, _ bool) error {
					l.Available++
					return nil
				})
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("increment failed: %v", err)
	}
	got, _, err := state.Get[ordersv1.StockLevel](ctx, b, "n")
	if err != nil {
		t.Fatal(err)
	}
	if want := int32(writers * each); got.GetAvailable() != want {
		t.Errorf("counter = %d, want %d", got.GetAvailable(), want)
	}
	if store.conflicts.Load() == 0 {
		t.Errorf("no race was lost: the test did not exercise conflicts")
	}
	t.Logf("%d conflicts recognised, %d of them answered 10164", store.conflicts.Load(), store.code10164.Load())
}

// Appends with an expected last sequence over a subject filter, as the
// order log's decisions make them, race the same way.
func TestR3ExpectedSequenceConflicts(t *testing.T) {
	ctx := context.Background()
	_, js := r3(t)
	log, err := durable.OpenLog(ctx, js, durable.Config{Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 6, 15
	var wg sync.WaitGroup
	var conflicts atomic.Int64
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				e := state.Event{
					Subject: eventSubject("race", fmt.Sprintf("w%d-%d", w, i)),
					ID:      fmt.Sprintf("race/w%d-%d", w, i),
					Payload: &ordersv1.CancelRequested{OrderId: "race"},
				}
				for attempt := 1; ; attempt++ {
					recs, err := log.Read(ctx, eventSubject("race", ">"))
					if err != nil {
						errs <- err
						break
					}
					last := uint64(0)
					if len(recs) > 0 {
						last = recs[len(recs)-1].Sequence
					}
					e.IfLast = &state.Last{Filter: eventSubject("race", ">"), Sequence: last}
					_, _, err = log.Append(ctx, e)
					if errors.Is(err, state.ErrConflict) {
						conflicts.Add(1)
					}
					if again, err := state.Again(ctx, attempt, err); again {
						continue
					} else if err != nil {
						errs <- err
					}
					break
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("append failed: %v", err)
	}
	recs, err := log.Read(ctx, eventSubject("race", ">"))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != writers*each {
		t.Errorf("log holds %d events, want %d", len(recs), writers*each)
	}
	if conflicts.Load() == 0 {
		t.Errorf("no race was lost: the test did not exercise conflicts")
	}
	t.Logf("%d conflicts recognised", conflicts.Load())
}

// A read after an acknowledged write sees it, on a replicated bucket and
// log, also right after a follower restarts and catches up: the reads a
// decision rests on never come from a replica that lags. The reader is
// connected to that follower, whose own replica would answer its direct
// gets (a queue group prefers local subscribers).
func TestR3ReadsSeeAcknowledgedWrites(t *testing.T) {
	ctx := context.Background()
	c, js := r3(t)
	if _, err := durable.OpenBucket(ctx, js, "r3read", durable.Config{Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := durable.OpenLog(ctx, js, durable.Config{Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	leader := c.StreamLeader(durable.BucketStream("r3read"))
	follower := (leader + 1) % 3
	if c.StreamLeader(durable.Config{}.Streams(durable.EventStream)[0]) == follower {
		follower = (leader + 2) % 3
	}
	onFollower := runtimetest.JetStream(t, runtimetest.Connect(t, c.Servers[follower]))
	b, err := durable.OpenBucket(ctx, onFollower, "r3read", durable.Config{Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	log, err := durable.OpenLog(ctx, onFollower, durable.Config{Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	rev := uint64(0)
	check := func(round string, n int) {
		t.Helper()
		stale := 0
		for i := range n {
			v := int32(i + 1)
			if _, err := b.Put(ctx, "k", level("k", v), rev); err != nil {
				t.Fatalf("%s: put %d at the revision last read: %v", round, i, err)
			}
			got, r, err := state.Get[ordersv1.StockLevel](ctx, b, "k")
			if err != nil {
				t.Fatalf("%s: get %d: %v", round, i, err)
			}
			if got.GetAvailable() != v {
				stale++
			} else {
				rev = r
			}
			seq, _, err := log.Append(ctx, state.Event{Subject: eventSubject(round, fmt.Sprint(i)), Payload: &ordersv1.CancelRequested{}})
			if err != nil {
				t.Fatalf("%s: append %d: %v", round, i, err)
			}
			recs, err := log.Read(ctx, eventSubject(round, ">"))
			if err != nil {
				t.Fatalf("%s: read %d: %v", round, i, err)
			}
			if len(recs) == 0 || recs[len(recs)-1].Sequence < seq {
				stale++
			}
		}
		if stale > 0 {
			t.Errorf("%s: %d of %d reads missed an acknowledged write", round, stale, 2*n)
		}
	}
	check("steady", 100)

	// The follower misses writes while it is down, then catches up while
	// the reads go on.
	onLeader := runtimetest.JetStream(t, runtimetest.Connect(t, c.Servers[leader]))
	writer, err := durable.OpenBucket(ctx, onLeader, "r3read", durable.Config{Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	wlog, err := durable.OpenLog(ctx, onLeader, durable.Config{Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	c.Stop(follower)
	for i := range 1000 {
		if _, err := writer.Put(ctx, "k", level("k", int32(1000+i)), rev); err != nil {
			t.Fatalf("put while a follower is down: %v", err)
		}
		if _, _, err := wlog.Append(ctx, state.Event{Subject: eventSubject("down", fmt.Sprint(i)), Payload: &ordersv1.CancelRequested{}}); err != nil {
			t.Fatalf("append while a follower is down: %v", err)
		}
		rev++ // one message per put in the bucket's stream
	}
	c.Start(follower)
	_, rev, err = state.Get[ordersv1.StockLevel](ctx, writer, "k")
	if err != nil {
		t.Fatal(err)
	}
	check("restarted", 150)
}

// Losing quorum is an outage, not a failure of the caller: the error says
// unavailable (503), and writes work again once a quorum is back.
func TestR3LostQuorumIsUnavailable(t *testing.T) {
	ctx := context.Background()
	c, _ := r3(t)
	nc := c.Connect()
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	b, err := durable.OpenBucket(ctx, js, "r3quorum", durable.Config{Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put(ctx, "k", level("k", 1), 0); err != nil {
		t.Fatal(err)
	}
	// Keep the server the client is connected to; stop the other two.
	var keep int
	for i, s := range c.Servers {
		if s.ClientURL() == nc.ConnectedUrl() {
			keep = i
		}
	}
	for i := range c.Servers {
		if i != keep {
			c.Stop(i)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = b.Put(wctx, "k", level("k", 2), 1)
	cancel()
	if !function.IsUnavailable(err) || function.Code(err) != 503 {
		t.Errorf("put without quorum = %v (code %d), want unavailable (503)", err, function.Code(err))
	}
	// A read may still be answered by the leader, which has not noticed yet
	// that it lost its quorum; nothing can have been committed meanwhile.
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	got, _, err := state.Get[ordersv1.StockLevel](rctx, b, "k")
	cancel()
	if err == nil && got.GetAvailable() != 1 || err != nil && !function.IsUnavailable(err) {
		t.Errorf("get without quorum = %v, %v; want the last committed value or unavailable", got, err)
	}
	for i := range c.Servers {
		if i != keep {
			c.Start(i)
		}
	}
	// The write that timed out may yet be committed once the quorum is back
	// (unavailable means "maybe"): read again before writing, as Modify does.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, rev, err := state.Get[ordersv1.StockLevel](ctx, b, "k")
		if err == nil {
			if _, err = b.Put(ctx, "k", level("k", 3), rev); err == nil {
				break
			}
		}
		if !function.IsUnavailable(err) && !errors.Is(err, state.ErrConflict) || time.Now().After(deadline) {
			t.Fatalf("after quorum is back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
