package host

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/orderflow/orderflow/runtime/function"
)

// messagingSystem is messaging.system=nats; the semantic conventions have
// no constant for NATS yet.
var messagingSystem = semconv.MessagingSystemKey.String("nats")

// Attributes of our own, in the system-specific namespace the conventions
// use for such things (compare messaging.gcp_pubsub.message.delivery_attempt).
const (
	attrDeliveryAttempt = attribute.Key("messaging.nats.message.delivery_attempt")
	attrStreamSequence  = attribute.Key("messaging.nats.stream.sequence")
	attrOutcome         = attribute.Key("orderflow.outcome")
	attrCode            = attribute.Key("orderflow.code")
)

// annotateOrderID records the order a message is about when its top-level
// order_id field says so, so every function's logs and spans carry it
// without each function having to.
func annotateOrderID(ctx context.Context, msg proto.Message) {
	m := msg.ProtoReflect()
	f := m.Descriptor().Fields().ByName("order_id")
	if f == nil || f.Kind() != protoreflect.StringKind {
		return
	}
	if id := m.Get(f).String(); id != "" {
		function.Annotate(ctx, "order_id", id)
	}
}

// endSpan records the call's annotations, code and outcome on span and ends it.
func endSpan(ctx context.Context, span trace.Span, err error, outcome string) {
	if !span.IsRecording() {
		span.End()
		return
	}
	kv := function.Annotations(ctx)
	for i := 0; i+1 < len(kv); i += 2 {
		span.SetAttributes(attribute.String("orderflow."+kv[i], kv[i+1]))
	}
	if outcome == "" {
		outcome = "ok"
		if err != nil {
			outcome = "error"
		}
	}
	code := function.Code(err)
	if code == 0 {
		code = 200
	}
	span.SetAttributes(attrOutcome.String(outcome), attrCode.Int(code))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
