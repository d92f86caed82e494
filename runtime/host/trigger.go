package host

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	runtimev1 "github.com/orderflow/orderflow/proto/gen/runtime/v1"
	"github.com/orderflow/orderflow/runtime/durable"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/retry"
	"github.com/orderflow/orderflow/runtime/telemetry"
)

// DeadLetterSink stores messages that failed for good.
type DeadLetterSink interface {
	Put(ctx context.Context, dl *runtimev1.DeadLetter) error
}

// trigger runs one function.Trigger: a durable pull consumer whose messages
// are handled by up to the endpoint's worker count at once.
type trigger struct {
	e       *endpoint
	t       function.Trigger
	handler function.Handler
	policy  retry.Policy
	ackWait time.Duration
	// batch is how many messages one pull asks for.
	batch   int
	dead    DeadLetterSink
	log     *slog.Logger
	metrics trigMetrics
	// outage bounds how long a message is retried in place while
	// JetStream is unavailable; provision says whether bind may create the
	// consumer.
	outage    time.Duration
	provision durable.Mode
	outageLog *telemetry.Limiter

	mu   sync.Mutex
	iter jetstream.MessagesContext
	stop bool
	quit chan struct{} // closed by drain: stop waiting out an outage
	done chan struct{} // closed when the consume loop has returned
}

// consumerConfig is the durable consumer of a trigger. Redelivery is driven
// by the host (NakWithDelay with the function's backoff, Term after the last
// attempt), so the server never gives up on a message by itself.
func (tr *trigger) consumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       tr.t.Durable,
		Description:   "orderflow " + tr.e.subject + " on " + tr.t.Subject,
		FilterSubject: tr.t.Subject,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       tr.ackWait,
		MaxDeliver:    -1,
		MaxAckPending: 1000,
	}
}

func (tr *trigger) spec() durable.Consumer {
	return durable.Consumer{Stream: tr.t.Stream, Config: tr.consumerConfig()}
}

// bind finds the trigger's consumer, creating it when it is missing and the
// host may, within 10s: a consumer that cannot be bound then is bound by
// the consume loop later. An existing consumer is used as it is, so an
// operator's change (or one by `provision`) is never reverted by a pod
// starting.
func (tr *trigger) bind(ctx context.Context, js jetstream.JetStream) (jetstream.Consumer, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	mode := durable.CreateMissing
	if tr.provision == durable.Lookup {
		mode = durable.Lookup
	}
	c, a, err := durable.EnsureConsumer(ctx, js, tr.spec(), mode)
	if err != nil {
		return nil, err
	}
	if a.Differs != "" {
		tr.log.Warn("consumer differs from its declaration; `provision` updates it", "consumer", a.Name, "differs", a.Differs)
	}
	return c, nil
}

// run consumes until drained. When the consumer goes away under it (a server
// that lost its state, an operator's delete), it binds again.
func (tr *trigger) run(js jetstream.JetStream, c jetstream.Consumer, wg *sync.WaitGroup) {
	defer close(tr.done)
	for wait := 250 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		if c != nil {
			if tr.consume(c, wg) {
				return
			}
		}
		time.Sleep(wait)
		if tr.stopped() {
			return
		}
		var err error
		c, err = tr.bind(context.Background(), js)
		if err != nil {
			tr.log.Warn("binding consumer failed, retrying", "consumer", tr.t.Durable, "error", err, "in", wait)
		}
	}
}

func (tr *trigger) consuming() bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.iter != nil && !tr.stop
}

func (tr *trigger) stopped() bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.stop
}

// consume reads messages until the iterator ends; it reports whether that
// was a drain (true) or a failure to recover from (false).
func (tr *trigger) consume(c jetstream.Consumer, wg *sync.WaitGroup) bool {
	// Pulls expire after 5s (heartbeats every 2.5s) instead of 30s: when a
	// consumer's leader dies with this pod's pull requests, the pod notices
	// within seconds and pulls from the new leader, instead of idling for up
	// to a minute while the messages wait.
	it, err := c.Messages(jetstream.PullMaxMessages(tr.batch), jetstream.PullExpiry(pullExpiry))
	if err != nil {
		tr.log.Warn("consume failed", "consumer", tr.t.Durable, "error", err)
		return tr.stopped()
	}
	tr.mu.Lock()
	if tr.stop {
		tr.mu.Unlock()
		it.Stop()
		return true
	}
	tr.iter = it
	tr.mu.Unlock()
	for {
		msg, err := it.Next()
		if err != nil {
			if tr.stopped() {
				return true
			}
			tr.log.Warn("consumer stopped, binding again", "consumer", tr.t.Durable, "error", err)
			it.Stop()
			tr.mu.Lock()
			tr.iter = nil
			tr.mu.Unlock()
			return false
		}
		tr.e.slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-tr.e.slots; wg.Done() }()
			tr.handle(msg)
		}()
	}
}

// pullExpiry is how long one pull request waits on the server.
const pullExpiry = 5 * time.Second

// drain stops pulling; messages already delivered to this pod are handled.
func (tr *trigger) drain() {
	tr.mu.Lock()
	if !tr.stop {
		close(tr.quit)
	}
	tr.stop = true
	it := tr.iter
	tr.mu.Unlock()
	if it != nil {
		it.Drain()
	}
}

// handle runs the function on one message and settles it: Ack on success,
// NakWithDelay while attempts remain for a transient error, and otherwise a
// dead letter followed by Term. A message is never dropped: if the dead
// letter cannot be stored, it is retried later. All of it happens in a
// consumer span whose parent is the span that published the message.
func (tr *trigger) handle(msg jetstream.Msg) {
	start := time.Now()
	tr.e.begin()
	attempt := 1
	var streamSeq uint64
	if meta, err := msg.Metadata(); err == nil {
		attempt, streamSeq = int(meta.NumDelivered), meta.Sequence.Stream
	}

	ctx := context.Background()
	var span trace.Span
	if tr.e.tracer != nil {
		ctx, span = tr.e.tracer.Start(telemetry.Extract(ctx, msg.Headers()), tr.e.subject+" process "+tr.t.Subject, trace.WithSpanKind(trace.SpanKindConsumer))
		if span.IsRecording() {
			span.SetAttributes(
				messagingSystem,
				semconv.MessagingOperationTypeProcess,
				semconv.MessagingDestinationName(msg.Subject()),
				semconv.MessagingDestinationTemplate(tr.t.Subject),
				semconv.MessagingConsumerGroupName(tr.t.Durable),
				attrDeliveryAttempt.Int(attempt),
				attrStreamSequence.Int64(int64(streamSeq)),
				attribute.String("orderflow.function", tr.e.subject),
			)
			if id := msg.Headers().Get(jetstream.MsgIDHeader); id != "" {
				span.SetAttributes(semconv.MessagingMessageID(id))
			}
		}
	}
	ctx = function.WithCall(ctx, function.Call{
		Service:  tr.e.svc.info.Name,
		Function: tr.e.def.Name,
		Subject:  msg.Subject(),
		Header:   function.Header(msg.Headers()),
		Attempt:  attempt,
		Trigger:  tr.t.Durable,
	})

	stopProgress := tr.keepInProgress(msg)
	err := tr.call(ctx, msg)
	err, outage := tr.rideOut(ctx, msg, err)
	stopProgress()

	outcome := "ack"
	switch {
	case err == nil:
		if aerr := tr.ack(msg); aerr != nil {
			tr.log.WarnContext(ctx, "ack failed; the message will be redelivered", "error", aerr)
		}
	case outage:
		// Draining while JetStream is out: another pod takes the message
		// soon after. Never a dead letter for an outage.
		outcome = "retry"
		_ = msg.NakWithDelay(tr.policy.Backoff(1))
	case (!function.IsPermanent(err) || notYetFound(err, attempt)) && !tr.policy.Exhausted(attempt):
		outcome = "retry"
		if nerr := msg.NakWithDelay(tr.policy.Backoff(attempt)); nerr != nil {
			tr.log.WarnContext(ctx, "nak failed; the message will be redelivered after the ack wait", "error", nerr)
		}
	default:
		outcome = "dead_letter"
		if derr := tr.deadLetter(ctx, msg, streamSeq, attempt, err); derr != nil {
			outcome = "retry"
			tr.log.ErrorContext(ctx, "dead letter not stored; retrying the message", "error", derr)
			_ = msg.NakWithDelay(tr.policy.Backoff(attempt))
		} else {
			_ = msg.TermWithReason(truncate(err.Error(), 256))
			tr.log.ErrorContext(ctx, "message dead-lettered", "subject", msg.Subject(), "error", err)
		}
	}
	if span != nil {
		endSpan(ctx, span, err, outcome)
	}
	elapsed := time.Since(start)
	tr.e.endTrigger(tr.t.Durable, elapsed, outcome)
	tr.metrics.observe(elapsed, outcome)
}

// ack acknowledges msg. While the host drains, it waits for the server to
// confirm (an ack is otherwise fire-and-forget), so that when Drain returns
// every message it handled is acked, not in flight to the server.
func (tr *trigger) ack(msg jetstream.Msg) error {
	if !tr.stopped() {
		return msg.Ack()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return msg.DoubleAck(ctx)
}

// call decodes the event and runs the handler, telling the server the
// message is in progress while it runs so AckWait never fires mid-call.
func (tr *trigger) call(ctx context.Context, msg jetstream.Msg) error {
	ev := tr.t.NewEvent()
	if err := proto.Unmarshal(msg.Data(), ev); err != nil {
		return function.Invalid("body", "cannot decode %s: %v", tr.t.Event.FullName(), err)
	}
	annotateOrderID(ctx, ev)
	_, err := tr.handler(ctx, ev)
	return err
}

// rideOut calls the handler again, with backoff, while it fails because
// JetStream is unavailable, for up to the outage horizon: an election or a
// restarting server is not the function's failure, so it must not spend
// the function's attempts (the server counts deliveries, so the wait
// happens here, with the message kept in progress). outage reports that
// the host is draining with the outage not over; after the horizon the
// error counts as the function's own.
func (tr *trigger) rideOut(ctx context.Context, msg jetstream.Msg, err error) (_ error, outage bool) {
	if !function.IsUnavailable(err) || tr.outage <= 0 {
		return err, false
	}
	tr.metrics.waiting.Inc()
	defer tr.metrics.waiting.Dec()
	start := time.Now()
	for wait := 100 * time.Millisecond; function.IsUnavailable(err); wait = min(2*wait, 2*time.Second) {
		waited := time.Since(start)
		if waited >= tr.outage {
			return err, false
		}
		if tr.outageLog.Allow() {
			tr.log.WarnContext(ctx, "JetStream unavailable; waiting without spending attempts",
				"consumer", tr.t.Durable, "waited", waited.Round(time.Millisecond), "horizon", tr.outage, "error", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-tr.quit:
			t.Stop()
			return err, true
		}
		tr.metrics.waits.Inc()
		err = tr.call(ctx, msg)
	}
	return err, false
}

// keepInProgress tells the server every AckWait/3 that msg is still being
// handled, and returns the function that stops it. A timer that re-arms
// itself: nothing runs for the common handler that finishes sooner.
func (tr *trigger) keepInProgress(msg jetstream.Msg) (stop func()) {
	var mu sync.Mutex
	stopped := false
	every := tr.ackWait / 3
	var t *time.Timer
	mu.Lock()
	t = time.AfterFunc(every, func() {
		_ = msg.InProgress()
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			t.Reset(every)
		}
	})
	mu.Unlock()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
	}
}

func (tr *trigger) deadLetter(ctx context.Context, msg jetstream.Msg, streamSeq uint64, attempt int, cause error) error {
	dl := &runtimev1.DeadLetter{
		Subject:        msg.Subject(),
		Stream:         tr.t.Stream,
		StreamSequence: streamSeq,
		Consumer:       tr.t.Durable,
		Function:       tr.e.subject,
		Error:          cause.Error(),
		Code:           int32(function.Code(cause)),
		Attempts:       uint64(attempt),
		FailedAt:       timestamppb.Now(),
		Data:           msg.Data(),
	}
	for name, values := range msg.Headers() {
		for _, v := range values {
			dl.Headers = append(dl.Headers, &runtimev1.Header{Name: name, Value: v})
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return tr.dead.Put(ctx, dl)
}

// notFoundDeliveries is how many deliveries a triggered message whose
// handler says "not found" gets before that is taken as final. A message is
// about something that exists (its event was published after it), and right
// after a server restart a read can still answer "not found"; retrying it a
// few times with backoff costs little, while a dead letter costs an order.
const notFoundDeliveries = 5

func notYetFound(err error, attempt int) bool {
	return function.Code(err) == 404 && attempt < notFoundDeliveries
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
