package host

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderflow/orderflow/runtime/codec"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/telemetry"
)

// endpoint is one function served on "<service>.<name>".
type endpoint struct {
	svc     *service
	def     function.Definition
	subject string
	handler function.Handler
	slots   chan struct{}
	sub     *nats.Subscription
	metrics fnMetrics
	tracer  trace.Tracer
	log     *slog.Logger
	limit   int

	stats endpointStats
}

// metadata names the contract, for `nats micro info`.
// A function that runs only on its triggers says so, with the events it
// consumes, in place of a contract.
func (e *endpoint) metadata() map[string]string {
	if !e.def.Serves() {
		var on, events []string
		for _, t := range e.def.Triggers {
			on = append(on, t.Stream+" "+t.Subject)
			events = append(events, string(t.Event.FullName()))
		}
		return map[string]string{
			"description": e.def.Description,
			"triggers":    strings.Join(on, ", "),
			"events":      strings.Join(events, ", "),
			"requests":    "none: runs only on its triggers",
		}
	}
	return map[string]string{
		"description":  e.def.Description,
		"request":      string(e.def.Request.FullName()),
		"response":     string(e.def.Response.FullName()),
		"content_type": "application/json, application/protobuf",
	}
}

var errNilResponse = errors.New("function returned no response")

// serve runs one request to the end: decode, call, encode, reply, record,
// inside a server span that continues the caller's trace context.
func (e *endpoint) serve(m *nats.Msg) {
	start := time.Now()
	e.begin()
	e.metrics.inFlight.Inc()

	ctx := context.Background()
	var span trace.Span
	if e.tracer != nil {
		ctx, span = e.tracer.Start(telemetry.Extract(ctx, m.Header), e.subject, trace.WithSpanKind(trace.SpanKindServer))
		if span.IsRecording() { // attributes cost allocations; skip them when not sampled
			span.SetAttributes(
				messagingSystem,
				semconv.MessagingOperationTypeProcess,
				semconv.MessagingDestinationName(m.Subject),
				semconv.MessagingConsumerGroupName(QueueGroup),
				attribute.String("orderflow.function", e.subject),
			)
		}
	}
	ctx = function.WithCall(ctx, function.Call{
		Service:  e.svc.info.Name,
		Function: e.def.Name,
		Subject:  m.Subject,
		Header:   function.Header(m.Header),
		Attempt:  1,
	})
	enc := codec.Detect(m.Header.Get("Content-Type"), m.Data)
	body, err := e.call(ctx, m, enc)

	var code, desc string
	reply := &nats.Msg{Header: nats.Header{}}
	if err != nil {
		code, desc = strconv.Itoa(function.Code(err)), sanitizeHeader(err.Error())
		reply.Header.Set(micro.ErrorCodeHeader, code)
		reply.Header.Set(micro.ErrorHeader, desc)
	} else {
		reply.Header.Set("Content-Type", enc.ContentType())
		reply.Data = body
	}
	if span != nil {
		endSpan(ctx, span, err, "")
	}
	// Record before replying, so a caller that asks for stats right after
	// its reply sees its call counted.
	elapsed := time.Since(start)
	e.end(elapsed, code, desc)
	e.metrics.inFlight.Dec()
	e.metrics.observe(elapsed, code)

	if m.Reply != "" {
		if rerr := m.RespondMsg(reply); rerr != nil {
			e.log.WarnContext(ctx, "reply failed", "error", rerr)
		}
	}
}

func (e *endpoint) call(ctx context.Context, m *nats.Msg, enc codec.Encoding) ([]byte, error) {
	if err := codec.Limit(m.Data, e.limit); err != nil {
		return nil, err
	}
	if err := codec.LimitHeaders(m.Header); err != nil {
		return nil, err
	}
	req := e.def.NewRequest()
	if err := codec.Decode(enc, m.Data, req); err != nil {
		return nil, err
	}
	annotateOrderID(ctx, req)
	resp, err := e.handler(ctx, req)
	if err != nil {
		return nil, err
	}
	if resp == nil || !resp.ProtoReflect().IsValid() {
		return nil, errNilResponse
	}
	return codec.Encode(enc, resp)
}
