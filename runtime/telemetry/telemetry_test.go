package telemetry_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/telemetry"
)

const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestCarrierWritesLowercaseReadsAnyCase(t *testing.T) {
	for _, key := range []string{"traceparent", "Traceparent", "TRACEPARENT"} {
		h := nats.Header{}
		h[key] = []string{traceparent}
		ctx := telemetry.Extract(context.Background(), h)
		sc := trace.SpanContextFromContext(ctx)
		if !sc.IsValid() || sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
			t.Errorf("header %q: extracted %v", key, sc)
		}
		out := nats.Header{"Traceparent": []string{"stale"}}
		telemetry.Inject(ctx, out)
		if got := out.Get("traceparent"); got != traceparent {
			t.Errorf("injected traceparent %q, want %q", got, traceparent)
		}
		if _, stale := out["Traceparent"]; stale {
			t.Error("injection left another casing of traceparent behind")
		}
	}
}

func TestValidateNamesTheVariable(t *testing.T) {
	tests := []struct {
		c    telemetry.Config
		want string
	}{
		{telemetry.Config{Exporter: "jaeger"}, "OTEL_TRACES_EXPORTER"},
		{telemetry.Config{Exporter: "otlp", Protocol: "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{telemetry.Config{Sampler: "sometimes"}, "OTEL_TRACES_SAMPLER"},
		{telemetry.Config{Sampler: "traceidratio", SamplerArg: "2"}, "OTEL_TRACES_SAMPLER_ARG"},
	}
	for _, tt := range tests {
		err := tt.c.Validate()
		if !errors.Is(err, telemetry.ErrConfig) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", tt.c, err, tt.want)
		}
	}
	for _, ok := range []telemetry.Config{{}, {Exporter: "none"}, {Exporter: "stdout", Sampler: "always_on"}, {Exporter: "otlp", Protocol: "grpc", Sampler: "parentbased_traceidratio", SamplerArg: "0.1"}} {
		if err := ok.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", ok, err)
		}
	}
}

func TestStdoutExporterPrintsSpans(t *testing.T) {
	var buf bytes.Buffer
	tr, err := telemetry.Setup(context.Background(), telemetry.Config{Exporter: "stdout", Sampler: "always_on", Stdout: &buf}, "test")
	if err != nil {
		t.Fatal(err)
	}
	_, span := tr.Provider.Tracer("t").Start(context.Background(), "orders.create")
	span.End()
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"Name": "orders.create"`) {
		t.Errorf("stdout exporter printed %q", buf.String())
	}
}

func TestNoneIsANoopProvider(t *testing.T) {
	tr, err := telemetry.Setup(context.Background(), telemetry.Config{}, "test")
	if err != nil {
		t.Fatal(err)
	}
	_, span := tr.Provider.Tracer("t").Start(context.Background(), "x")
	if span.IsRecording() {
		t.Error("tracing is on by default")
	}
}

func TestLogHandlerAddsTraceAndCall(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(telemetry.LogHandler(slog.NewJSONHandler(&buf, nil)))
	ctx := telemetry.Extract(context.Background(), nats.Header{"traceparent": []string{traceparent}})
	ctx = function.WithCall(ctx, function.Call{Service: "payments", Function: "charge", Trigger: "payments-charge", Attempt: 2})
	function.Annotate(ctx, "order_id", "o-1")
	log.InfoContext(ctx, "charged")
	for _, want := range []string{`"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"`, `"span_id":"00f067aa0ba902b7"`, `"function":"payments.charge"`, `"order_id":"o-1"`, `"consumer":"payments-charge"`, `"attempt":2`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("log line %s lacks %s", buf.String(), want)
		}
	}
}
