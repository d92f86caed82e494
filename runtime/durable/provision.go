package durable

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/runtime/function"
)

// Resources are the streams, KV buckets and durable consumers a set of
// functions needs.
type Resources struct {
	Streams   []jetstream.StreamConfig
	Buckets   []jetstream.KeyValueConfig
	Consumers []Consumer
	// Expiring are the buckets whose keys may carry a time to live: their
	// streams allow per-message TTLs.
	Expiring []string
}

// Consumer is a durable consumer on a stream.
type Consumer struct {
	Stream string
	Config jetstream.ConsumerConfig
}

// StreamNames lists every stream of r, a bucket's by its stream name.
func (r Resources) StreamNames() []string {
	var out []string
	for _, s := range r.Streams {
		out = append(out, s.Name)
	}
	for _, b := range r.Buckets {
		out = append(out, BucketStream(b.Bucket))
	}
	return out
}

// Mode is what a process may do to the resources it needs.
type Mode int

const (
	// CreateMissing creates what does not exist and never changes what
	// does: a serving pod must not rewrite an operator's configuration.
	CreateMissing Mode = iota
	// Lookup only finds resources; a missing one is an error that names it.
	// For pods whose identity may not manage JetStream.
	Lookup
	// Apply creates what is missing and updates what differs from its
	// declaration: `provision`. A limit an operator tightened (a shorter
	// max age) is kept.
	Apply
	// ApplyForce is Apply that also loosens limits: `provision --force`.
	ApplyForce
)

func (m Mode) String() string {
	switch m {
	case CreateMissing:
		return "create-missing"
	case Lookup:
		return "lookup"
	case Apply:
		return "apply"
	case ApplyForce:
		return "apply-force"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ErrMissing is returned in Lookup mode for a resource that does not exist.
var ErrMissing = errors.New("does not exist: run `orderflow provision`")

// Action is what Ensure did, or found, for one resource.
type Action struct {
	Kind string // "stream", "bucket" or "consumer"
	Name string
	// Did is "created", "updated" or "exists".
	Did string
	// Differs, for a resource left as it was, says how it differs from its
	// declaration ("replicas 1, declared 3").
	Differs string
}

func (a Action) String() string {
	s := a.Kind + " " + a.Name + " " + a.Did
	if a.Differs != "" {
		s += " (differs from its declaration: " + a.Differs + ")"
	}
	return s
}

// Ensure makes every resource of r exist as mode allows, streams and
// buckets first, then consumers, each kind concurrently. Creating instead
// of create-or-update matters on a fresh cluster: an update that reaches
// the meta leader while an identical create from another pod is in flight
// gets no reply, and every pod but one would wait out its timeout.
func Ensure(ctx context.Context, js jetstream.JetStream, r Resources, mode Mode) ([]Action, error) {
	var (
		mu      sync.Mutex
		actions []Action
		errs    []error
		wg      sync.WaitGroup
	)
	run := func(fn func() (Action, error)) {
		wg.Go(func() {
			a, err := fn()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			actions = append(actions, a)
		})
	}
	for _, cfg := range r.Streams {
		run(func() (Action, error) { return ensureStream(ctx, js, cfg, mode) })
	}
	for _, cfg := range r.Buckets {
		run(func() (Action, error) {
			return ensureBucket(ctx, js, cfg, slices.Contains(r.Expiring, cfg.Bucket), mode)
		})
	}
	wg.Wait()
	if len(errs) == 0 {
		for _, c := range r.Consumers {
			run(func() (Action, error) { return ensureConsumer(ctx, js, c, mode) })
		}
		wg.Wait()
	}
	slices.SortFunc(actions, func(a, b Action) int {
		if a.Kind != b.Kind {
			return kindOrder(a.Kind) - kindOrder(b.Kind)
		}
		return strings.Compare(a.Name, b.Name)
	})
	return actions, errors.Join(distinct(errs)...)
}

// distinct drops errors that say what an earlier one says: the partitions
// of one resource refused for one reason say it once.
func distinct(errs []error) []error {
	var out []error
	seen := map[string]bool{}
	for _, err := range errs {
		if !seen[err.Error()] {
			seen[err.Error()] = true
			out = append(out, err)
		}
	}
	return out
}

func kindOrder(k string) int { return slices.Index([]string{"stream", "bucket", "consumer"}, k) }

func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, mode Mode) (Action, error) {
	a := Action{Kind: "stream", Name: cfg.Name, Did: "exists"}
	var s jetstream.Stream
	lookup := func(ctx context.Context) (err error) { s, err = js.Stream(ctx, cfg.Name); return err }
	err := call(ctx, lookup)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if mode == Lookup {
			return a, fmt.Errorf("stream %s %w", cfg.Name, ErrMissing)
		}
		if err := refuseLegacy(ctx, js, "stream", cfg.Metadata); err != nil {
			return a, err
		}
		err = once(ctx, func(ctx context.Context) error { _, err := js.CreateStream(ctx, cfg); return err })
		if err == nil {
			a.Did = "created"
			return a, nil
		}
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) || IsUnavailable(err) {
			// Another pod created it first (maybe otherwise configured),
			// or the create is still being applied.
			err = call(ctx, lookup)
		}
	}
	if err != nil {
		return a, classify(false, "stream "+cfg.Name, err)
	}
	have := s.CachedInfo().Config
	if err := checkLayout("stream", cfg.Name, have.Metadata, cfg.Metadata); err != nil {
		return a, err
	}
	a.Differs = streamDiff(have, cfg)
	if a.Differs != "" && mode >= Apply {
		next, kept := owned(have, cfg, mode == ApplyForce)
		if streamDiff(have, next) != "" {
			if _, err := js.UpdateStream(ctx, next); err != nil {
				return a, classify(false, "update stream "+cfg.Name, err)
			}
			a.Did = "updated"
		}
		a.Differs = kept
	}
	return a, nil
}

// callWait bounds one management request. On a fresh cluster, a create
// that reaches the meta leader while an identical one from another pod is
// in flight gets no reply, though the resource is created, and the info of
// a stream still being placed is not answered either: rather than wait out
// the caller's whole deadline, give up on the request soon and ask again.
const callWait = 2 * time.Second

// call runs fn with a deadline of callWait, again while it finds JetStream
// unavailable and ctx allows. "Not found" is an answer here, not an outage.
func call(ctx context.Context, fn func(context.Context) error) error {
	for {
		err := once(ctx, fn)
		if !IsUnavailable(err) || notFound(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func notFound(err error) bool {
	return errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrConsumerNotFound)
}

// once runs fn with a deadline of callWait.
func once(ctx context.Context, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, callWait)
	defer cancel()
	return fn(ctx)
}

// owned is the existing configuration have with the settings orderflow
// declares taken from want, so that an update changes those and nothing an
// operator set (other limits, compression, placement, metadata, ...). The
// declared max age replaces a longer one, but replaces a shorter one, set
// by an operator, only with force; kept says so.
func owned(have, want jetstream.StreamConfig, force bool) (next jetstream.StreamConfig, kept string) {
	next = have
	next.Description, next.Subjects, next.Replicas, next.AllowDirect = want.Description, want.Subjects, want.Replicas, want.AllowDirect
	next.AllowMsgTTL = next.AllowMsgTTL || want.AllowMsgTTL // once on, a stream's TTLs cannot be turned off
	if want.Duplicates > 0 {
		next.Duplicates = want.Duplicates
	}
	if looser(want.MaxAge, have.MaxAge) && !force {
		kept = fmt.Sprintf("kept the tighter max age %s (declared %s): `provision --force` loosens it", have.MaxAge, age(want.MaxAge))
	} else {
		next.MaxAge = want.MaxAge
	}
	return next, kept
}

// looser reports whether limit a (0: none) is looser than b.
func looser(a, b time.Duration) bool { return b > 0 && (a == 0 || a > b) }

func age(d time.Duration) string {
	if d == 0 {
		return "none"
	}
	return d.String()
}

// streamDiff says how have differs from want in what orderflow declares.
func streamDiff(have, want jetstream.StreamConfig) string {
	var d []string
	if have.Replicas != want.Replicas {
		d = append(d, fmt.Sprintf("replicas %d, declared %d", have.Replicas, want.Replicas))
	}
	if !slices.Equal(have.Subjects, want.Subjects) {
		d = append(d, fmt.Sprintf("subjects %v, declared %v", have.Subjects, want.Subjects))
	}
	if want.Duplicates > 0 && have.Duplicates != want.Duplicates {
		d = append(d, fmt.Sprintf("duplicate window %s, declared %s", have.Duplicates, want.Duplicates))
	}
	if have.AllowDirect != want.AllowDirect {
		d = append(d, fmt.Sprintf("allow direct %t, declared %t", have.AllowDirect, want.AllowDirect))
	}
	if have.MaxAge != want.MaxAge {
		d = append(d, fmt.Sprintf("max age %s, declared %s", age(have.MaxAge), age(want.MaxAge)))
	}
	if want.AllowMsgTTL && !have.AllowMsgTTL {
		d = append(d, "per-message TTLs off, declared on")
	}
	return strings.Join(d, "; ")
}

func ensureBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig, ttls bool, mode Mode) (Action, error) {
	a := Action{Kind: "bucket", Name: cfg.Bucket, Did: "exists"}
	var st jetstream.KeyValueStatus
	lookup := func(ctx context.Context) error {
		kv, err := js.KeyValue(ctx, cfg.Bucket)
		if err == nil {
			st, err = kv.Status(ctx)
		}
		return err
	}
	err := call(ctx, lookup)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		if mode == Lookup {
			return a, fmt.Errorf("bucket %s %w", cfg.Bucket, ErrMissing)
		}
		if err := refuseLegacy(ctx, js, "bucket", cfg.Metadata); err != nil {
			return a, err
		}
		err = once(ctx, func(ctx context.Context) error { _, err := js.CreateKeyValue(ctx, cfg); return err })
		if err == nil && ttls {
			// KV buckets are made without per-message TTLs (with them,
			// nats.go would also leave a marker per expired key).
			err = call(ctx, lookup)
			if err == nil {
				backing := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config
				backing.AllowMsgTTL = true
				err = once(ctx, func(ctx context.Context) error { _, err := js.UpdateStream(ctx, backing); return err })
			}
		}
		if err == nil {
			a.Did = "created"
			return a, nil
		}
		if errors.Is(err, jetstream.ErrBucketExists) || IsUnavailable(err) {
			err = call(ctx, lookup)
		}
	}
	if err != nil {
		return a, classify(false, "bucket "+cfg.Bucket, err)
	}
	have := st.Config()
	backing := jetstream.StreamConfig{}
	if kvs, ok := st.(*jetstream.KeyValueBucketStatus); ok {
		backing = kvs.StreamInfo().Config
	}
	if err := checkLayout("bucket", cfg.Bucket, backing.Metadata, cfg.Metadata); err != nil {
		return a, err
	}
	var d []string
	if have.Replicas != cfg.Replicas {
		d = append(d, fmt.Sprintf("replicas %d, declared %d", have.Replicas, cfg.Replicas))
	}
	if have.History != cfg.History {
		d = append(d, fmt.Sprintf("history %d, declared %d", have.History, cfg.History))
	}
	if ttls && !backing.AllowMsgTTL {
		d = append(d, "per-message TTLs off, declared on (its orders' records do not expire)")
	}
	a.Differs = strings.Join(d, "; ")
	if a.Differs != "" && mode >= Apply {
		// The bucket's own stream, changed only where orderflow declares:
		// UpdateKeyValue would rebuild it from a KeyValueConfig and drop
		// what an operator set.
		if backing.Name == "" {
			return a, fmt.Errorf("update bucket %s: its stream's configuration is unknown", cfg.Bucket)
		}
		backing.Replicas, backing.MaxMsgsPerSubject = cfg.Replicas, int64(cfg.History)
		backing.AllowMsgTTL = backing.AllowMsgTTL || ttls
		if _, err := js.UpdateStream(ctx, backing); err != nil {
			return a, classify(false, "update bucket "+cfg.Bucket, err)
		}
		a.Did, a.Differs = "updated", ""
	}
	return a, nil
}

func ensureConsumer(ctx context.Context, js jetstream.JetStream, c Consumer, mode Mode) (Action, error) {
	_, a, err := EnsureConsumer(ctx, js, c, mode)
	return a, err
}

// EnsureConsumer is Ensure for one consumer, which it returns.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, c Consumer, mode Mode) (jetstream.Consumer, Action, error) {
	a := Action{Kind: "consumer", Name: c.Stream + "/" + c.Config.Durable, Did: "exists"}
	var cons jetstream.Consumer
	lookup := func(ctx context.Context) (err error) {
		cons, err = js.Consumer(ctx, c.Stream, c.Config.Durable)
		return err
	}
	err := call(ctx, lookup)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		if mode == Lookup {
			return nil, a, fmt.Errorf("consumer %s %w", a.Name, ErrMissing)
		}
		err = once(ctx, func(ctx context.Context) (err error) {
			cons, err = js.CreateConsumer(ctx, c.Stream, c.Config)
			return err
		})
		if err == nil {
			a.Did = "created"
			return cons, a, nil
		}
		if errors.Is(err, jetstream.ErrConsumerExists) || IsUnavailable(err) {
			err = call(ctx, lookup)
		}
	}
	if err != nil {
		return nil, a, classify(false, "consumer "+a.Name, err)
	}
	have := cons.CachedInfo().Config
	a.Differs = ConsumerDiff(have, c.Config)
	if a.Differs != "" && mode >= Apply {
		// Only what orderflow declares changes.
		have.Description, have.FilterSubject, have.AckWait, have.MaxAckPending, have.MaxDeliver =
			c.Config.Description, c.Config.FilterSubject, c.Config.AckWait, c.Config.MaxAckPending, c.Config.MaxDeliver
		if cons, err = js.UpdateConsumer(ctx, c.Stream, have); err != nil {
			return nil, a, classify(false, "update consumer "+a.Name, err)
		}
		a.Did, a.Differs = "updated", ""
	}
	return cons, a, nil
}

// ConsumerDiff says how have differs from want in what orderflow declares.
func ConsumerDiff(have, want jetstream.ConsumerConfig) string {
	var d []string
	if have.FilterSubject != want.FilterSubject {
		d = append(d, fmt.Sprintf("filter %q, declared %q", have.FilterSubject, want.FilterSubject))
	}
	if have.AckWait != want.AckWait {
		d = append(d, fmt.Sprintf("ack wait %s, declared %s", have.AckWait, want.AckWait))
	}
	if want.MaxAckPending > 0 && have.MaxAckPending != want.MaxAckPending {
		d = append(d, fmt.Sprintf("max ack pending %d, declared %d", have.MaxAckPending, want.MaxAckPending))
	}
	if want.MaxDeliver != 0 && have.MaxDeliver != want.MaxDeliver {
		d = append(d, fmt.Sprintf("max deliver %d, declared %d", have.MaxDeliver, want.MaxDeliver))
	}
	if want.Replicas > 0 && have.Replicas != want.Replicas {
		d = append(d, fmt.Sprintf("replicas %d, declared %d", have.Replicas, want.Replicas))
	}
	return strings.Join(d, "; ")
}

// Check reports, for readiness probes, every stream of r that is missing,
// by name.
func Check(ctx context.Context, js jetstream.JetStream, r Resources) error {
	var errs []error
	for _, name := range r.StreamNames() {
		if _, err := js.Stream(ctx, name); err != nil {
			errs = append(errs, fmt.Errorf("stream %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// open is the mode a store is opened with: it may create what is missing
// unless the mode is Lookup, and never updates (that is Ensure's, with
// Apply).
func (m Mode) open() Mode {
	if m == Lookup {
		return Lookup
	}
	return CreateMissing
}

// Expiring are the buckets of r whose keys expire under c.
func (c Config) ExpiringBuckets(r Resources) []string {
	var out []string
	for _, b := range r.Buckets {
		if c.keyTTL(b.Bucket) != nil {
			out = append(out, b.Bucket)
		}
	}
	return out
}

// ErrUnknownStream is returned for a declaration naming a stream this
// package does not define.
var ErrUnknownStream = errors.New("unknown stream")

// ForFunctions is what defs declare they touch, as streams and buckets
// configured by c: the streams of their triggers, of what they publish and
// read, the dead-letter stream when any has a trigger (the runtime writes
// its dead letters), and their buckets. Consumers are the host's to
// declare (they carry its ack wait).
func ForFunctions(defs []function.Definition, c Config) (Resources, error) {
	streams := map[string]bool{}
	buckets := map[string]bool{}
	for _, d := range defs {
		for _, t := range d.Triggers {
			streams[t.Stream] = true
			streams[DeadLetterStream] = true
		}
		for _, p := range d.Uses.Publishes {
			streams[p.Stream] = true
		}
		for _, s := range append(slices.Clone(d.Uses.Reads), d.Uses.Deletes...) {
			streams[s] = true
		}
		for _, b := range d.Uses.Buckets {
			buckets[b.Name] = true
		}
	}
	var r Resources
	for _, name := range slices.Sorted(maps.Keys(streams)) {
		switch name {
		case EventStream:
			r.Streams = append(r.Streams, EventStreamConfigs(c)...)
		case DeadLetterStream:
			r.Streams = append(r.Streams, DeadLetterStreamConfig(c))
		default:
			return r, fmt.Errorf("%w %q", ErrUnknownStream, name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(buckets)) {
		r.Buckets = append(r.Buckets, BucketConfigs(name, c)...)
	}
	r.Expiring = c.ExpiringBuckets(r)
	return r, nil
}

// HasStream reports whether r declares stream name, or a partition of it.
func (r Resources) HasStream(name string) bool {
	return slices.ContainsFunc(r.Streams, func(s jetstream.StreamConfig) bool { return s.Name == name || s.Metadata[PartitionOfKey] == name })
}

// HasBucket reports whether r declares KV bucket name, or a partition of
// it.
func (r Resources) HasBucket(name string) bool {
	return slices.ContainsFunc(r.Buckets, func(b jetstream.KeyValueConfig) bool { return b.Bucket == name || b.Metadata[PartitionOfKey] == name })
}
