// Package host serves function Definitions as NATS micro endpoints.
//
// It speaks the micro protocol (PING, INFO and STATS on $SRV.>, errors in the
// Nats-Service-Error headers) with nats.go micro's own wire types, so the
// stock `nats micro` commands discover and inspect it. It does not use
// micro.AddService: micro calls a handler serially per subscription and
// computes stats after the handler returns, so a host that dispatched to a
// worker pool from a micro handler would report wrong error counts and
// processing times. Here each endpoint runs up to WorkerPoolSize calls at
// once and records stats when a call really ends.
package host

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"

	"github.com/orderflow/orderflow/runtime/durable"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/middleware"
	"github.com/orderflow/orderflow/runtime/retry"
	"github.com/orderflow/orderflow/runtime/telemetry"
)

// QueueGroup is the queue group every endpoint subscribes in, as in micro, so
// pods serving the same function share its requests.
const QueueGroup = micro.DefaultQueueGroup

// Errors returned by the host.
var (
	// ErrConfig marks a host or registration that cannot work.
	ErrConfig = errors.New("host config")
	// ErrStarted is returned by Add after Start.
	ErrStarted = errors.New("host already started")
)

// Host serves functions on one NATS connection.
type Host struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	opts options

	mu       sync.Mutex
	services []*service
	started  bool
	verbSubs []*nats.Subscription
	triggers []*trigger
	// consuming is set once the triggers' consume loops run.
	consuming bool
	wg        sync.WaitGroup // calls and messages in flight
	outageLog *telemetry.Limiter
}

// New returns a Host on nc, which the caller owns and closes after Drain.
func New(nc *nats.Conn, opts ...Option) (*Host, error) {
	if nc == nil {
		return nil, fmt.Errorf("%w: nil connection", ErrConfig)
	}
	o := defaults()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	return &Host{nc: nc, js: js, opts: o, outageLog: telemetry.NewLimiter(5 * time.Second)}, nil
}

var semverRE = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$`)
var serviceNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Add registers a function under a service. The service is created on its
// first function; later functions must name the same version.
func (h *Host) Add(svc function.Service, def function.Definition) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.started {
		return ErrStarted
	}
	if !serviceNameRE.MatchString(svc.Name) {
		return fmt.Errorf("%w: service name %q", ErrConfig, svc.Name)
	}
	if !semverRE.MatchString(svc.Version) {
		return fmt.Errorf("%w: service %s: version %q is not SemVer", ErrConfig, svc.Name, svc.Version)
	}
	if (def.Handler == nil) != (def.NewRequest == nil) || def.Handler == nil && len(def.Triggers) == 0 {
		return fmt.Errorf("%w: %s.%s: definition has no handler", ErrConfig, svc.Name, def.Name)
	}
	s := h.service(svc)
	if s.info.Version != svc.Version {
		return fmt.Errorf("%w: service %s registered with versions %s and %s", ErrConfig, svc.Name, s.info.Version, svc.Version)
	}
	subject := svc.Name + "." + def.Name
	for _, e := range s.endpoints {
		if e.def.Name == def.Name {
			return fmt.Errorf("%w: %s registered twice", ErrConfig, subject)
		}
	}
	policy := h.opts.retry
	if def.Retry != nil {
		policy = *def.Retry
	}
	if p, ok := h.opts.retryFor[subject]; ok {
		policy = p
	}
	if def.NotIdempotent {
		if len(def.Triggers) > 0 {
			return fmt.Errorf("%w: %s is not idempotent and cannot run on messages, which are redelivered", ErrConfig, subject)
		}
		policy.MaxAttempts = 1 // whatever the config says
	}
	// Requests retry in process, within their deadline; triggered messages
	// retry by redelivery, so their chain has no Retry.
	reqChain := append(append(slices.Clone(h.opts.middleware), middleware.Retry(policy)), def.Middleware...)
	msgChain := append(slices.Clone(h.opts.middleware), def.Middleware...)
	e := &endpoint{
		svc:     s,
		def:     def,
		subject: subject,
		handler: chainIf(def.Handler, reqChain),
		slots:   make(chan struct{}, h.opts.workers),
		metrics: h.opts.metrics.forFunction(subject),
		tracer:  h.opts.tracer,
		log:     h.opts.log,
		limit:   h.opts.maxBody,
	}
	e.stats.Name, e.stats.Subject, e.stats.QueueGroup = def.Name, subject, QueueGroup
	for _, t := range def.Triggers {
		if t.Stream == "" || t.Subject == "" || t.Durable == "" || t.Handler == nil {
			return fmt.Errorf("%w: %s: trigger needs a stream, subject, durable name and handler", ErrConfig, subject)
		}
		for _, other := range h.triggers {
			if other.t.Durable == t.Durable {
				return fmt.Errorf("%w: %s: consumer %s is used twice", ErrConfig, subject, t.Durable)
			}
		}
		streams := h.opts.streams(t.Stream)
		for _, stream := range streams {
			t := t
			t.Stream = stream
			tr := h.newTrigger(e, t, msgChain, policy, subject)
			// The partitions share the workers: together they hold about
			// as many messages as the workers can take, so none waits in
			// this pod long enough for its ack wait to run out.
			tr.batch = max(1, cap(e.slots)/len(streams))
			h.triggers = append(h.triggers, tr)
		}
	}
	s.endpoints = append(s.endpoints, e)
	return nil
}

// newTrigger is the trigger of t, a trigger on one stream, for e.
func (h *Host) newTrigger(e *endpoint, t function.Trigger, msgChain []function.Middleware, policy retry.Policy, subject string) *trigger {
	return &trigger{
		e:         e,
		t:         t,
		handler:   function.Chain(t.Handler, msgChain...),
		policy:    policy,
		ackWait:   h.opts.ackWait,
		dead:      h.opts.dead,
		log:       h.opts.log,
		metrics:   h.opts.metrics.forTrigger(subject, t.Durable),
		outage:    h.opts.outage,
		provision: h.opts.provision,
		outageLog: h.outageLog,
		quit:      make(chan struct{}),
		done:      make(chan struct{}),
	}
}

// chainIf chains h with mw, or is nil for a function without a handler.
func chainIf(h function.Handler, mw []function.Middleware) function.Handler {
	if h == nil {
		return nil
	}
	return function.Chain(h, mw...)
}

func (h *Host) service(svc function.Service) *service {
	for _, s := range h.services {
		if s.info.Name == svc.Name {
			return s
		}
	}
	s := &service{
		info: micro.ServiceIdentity{Name: svc.Name, ID: nuid.Next(), Version: svc.Version, Metadata: map[string]string{}},
		desc: svc.Description,
	}
	h.services = append(h.services, s)
	return s
}

// Subjects lists the endpoint subjects registered so far, in order.
func (h *Host) Subjects() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, s := range h.services {
		for _, e := range s.endpoints {
			out = append(out, e.subject)
		}
	}
	return out
}

// Resources are the durable consumers of the registered triggers, as
// `provision` creates them.
func (h *Host) Resources() durable.Resources {
	h.mu.Lock()
	defer h.mu.Unlock()
	var r durable.Resources
	for _, tr := range h.triggers {
		r.Consumers = append(r.Consumers, tr.spec())
	}
	return r
}

// Start binds every trigger's consumer, then subscribes every endpoint and
// the discovery verbs. It returns once the server has the subscriptions, so a
// request sent after Start is served.
func (h *Host) Start(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.started {
		return ErrStarted
	}
	h.started = true
	if len(h.triggers) > 0 && h.opts.dead == nil {
		return fmt.Errorf("%w: functions with triggers need a dead-letter sink (WithDeadLetters)", ErrConfig)
	}
	// Bound concurrently: on a fresh R3 cluster each create takes a
	// round of consensus.
	consumers := make([]jetstream.Consumer, len(h.triggers))
	errs := make([]error, len(h.triggers))
	var bound sync.WaitGroup
	for i, tr := range h.triggers {
		bound.Go(func() { consumers[i], errs[i] = tr.bind(ctx, h.js) })
	}
	bound.Wait()
	for i, err := range errs {
		// A consumer that cannot be bound yet (JetStream starting, not
		// provisioned) is bound by its consume loop later; /readyz says
		// which until then.
		if err != nil && !function.IsUnavailable(err) && !errors.Is(err, durable.ErrMissing) {
			return err
		}
		if err != nil {
			h.opts.log.Warn("consumer not bound yet; retrying", "consumer", h.triggers[i].t.Durable, "error", err)
		}
	}
	for i, tr := range h.triggers {
		go tr.run(h.js, consumers[i], &h.wg)
	}
	h.consuming = true
	for _, s := range h.services {
		s.started = time.Now().UTC()
		for _, e := range s.endpoints {
			if !e.def.Serves() {
				continue // runs on its triggers only: nothing to call
			}
			sub, err := h.nc.QueueSubscribe(e.subject, QueueGroup, func(m *nats.Msg) { h.dispatch(e, m) })
			if err != nil {
				return fmt.Errorf("subscribe %s: %w", e.subject, err)
			}
			e.sub = sub
		}
		for _, v := range []micro.Verb{micro.PingVerb, micro.InfoVerb, micro.StatsVerb} {
			for _, subj := range verbSubjects(v, s.info.Name, s.info.ID) {
				sub, err := h.nc.Subscribe(subj, s.verbHandler(v))
				if err != nil {
					return fmt.Errorf("subscribe %s: %w", subj, err)
				}
				h.verbSubs = append(h.verbSubs, sub)
			}
		}
	}
	return h.nc.Flush()
}

// dispatch runs on the subscription's delivery goroutine: it waits for a free
// worker slot, which is the backpressure, and hands the message over.
func (h *Host) dispatch(e *endpoint, m *nats.Msg) {
	e.slots <- struct{}{}
	h.wg.Add(1)
	go func() {
		defer func() { <-e.slots; h.wg.Done() }()
		e.serve(m)
	}()
}

// Drain stops taking requests, lets queued and in-flight calls finish and
// reply, and removes the services from discovery. Other pods in the queue
// group take the requests that arrive meanwhile. It returns ctx.Err() if calls
// are still running when ctx ends.
func (h *Host) Drain(ctx context.Context) error {
	h.mu.Lock()
	var subs []*nats.Subscription
	for _, s := range h.services {
		for _, e := range s.endpoints {
			if e.sub != nil {
				subs = append(subs, e.sub)
			}
		}
	}
	subs = append(subs, h.verbSubs...)
	var triggers []*trigger
	if h.consuming {
		triggers = slices.Clone(h.triggers)
	}
	h.mu.Unlock()

	for _, tr := range triggers {
		tr.drain()
	}
	var errs []error
	closed := make([]<-chan nats.SubStatus, 0, len(subs))
	for _, sub := range subs {
		ch := sub.StatusChanged(nats.SubscriptionClosed)
		if err := sub.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
			errs = append(errs, fmt.Errorf("drain %s: %w", sub.Subject, err))
			continue
		}
		closed = append(closed, ch)
	}
	for _, ch := range closed {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for _, tr := range triggers {
		select {
		case <-tr.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return errors.Join(errs...)
}

// Ready reports whether the host serves: started, every endpoint subscribed
// and every trigger consuming. For readiness probes.
func (h *Host) Ready() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.started || !h.consuming && len(h.triggers) > 0 {
		return errors.New("not started")
	}
	var errs []error
	for _, tr := range h.triggers {
		if !tr.consuming() {
			errs = append(errs, fmt.Errorf("consumer %s not bound", tr.t.Durable))
		}
	}
	return errors.Join(errs...)
}

func verbSubjects(v micro.Verb, name, id string) []string {
	out := make([]string, 0, 3)
	for _, kv := range [][2]string{{"", ""}, {name, ""}, {name, id}} {
		s, err := micro.ControlSubject(v, kv[0], kv[1])
		if err == nil {
			out = append(out, s)
		}
	}
	return out
}

// sanitizeHeader keeps a header value on one line.
func sanitizeHeader(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
}
