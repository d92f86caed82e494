package durable

import (
	"context"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderflow/orderflow/runtime/telemetry"
)

// template names a subject without its high-cardinality tokens, for span
// names: ORDER.<slot>.<id>.created is ORDER.*.*.created.
func template(subject string) string {
	first, last := strings.IndexByte(subject, '.'), strings.LastIndexByte(subject, '.')
	if first < 0 || first == last {
		return subject
	}
	return subject[:first] + strings.Repeat(".*", strings.Count(subject[first:last], ".")) + subject[last:]
}

// startPublish opens a producer span for m and writes its context into m's
// headers, so the consumer's span continues the trace, even after the
// message has waited in the stream or been redelivered. Attributes are set
// only when the span records: with tracing off this is the propagation
// alone.
func startPublish(ctx context.Context, tracer trace.Tracer, m *nats.Msg, msgID string) (context.Context, trace.Span) {
	tmpl := template(m.Subject)
	ctx, span := tracer.Start(ctx, tmpl+" publish", trace.WithSpanKind(trace.SpanKindProducer))
	if span.IsRecording() {
		span.SetAttributes(
			semconv.MessagingSystemKey.String("nats"),
			semconv.MessagingOperationTypeSend,
			semconv.MessagingOperationName("publish"),
			semconv.MessagingDestinationName(m.Subject),
			semconv.MessagingDestinationTemplate(tmpl),
			semconv.MessagingMessageBodySize(len(m.Data)),
		)
		if msgID != "" {
			span.SetAttributes(semconv.MessagingMessageID(msgID))
		}
	}
	telemetry.Inject(ctx, m.Header)
	return ctx, span
}

func endPublish(span trace.Span, ack *jetstream.PubAck, err error) {
	if span.IsRecording() {
		if ack != nil {
			span.SetAttributes(attribute.Int64("messaging.nats.stream.sequence", int64(ack.Sequence)), attribute.Bool("messaging.nats.duplicate", ack.Duplicate))
		}
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
	}
	span.End()
}
