// Package telemetry sets up OpenTelemetry tracing from the standard OTEL_*
// variables and carries W3C trace context in NATS headers, so one order is
// one trace across requests, JetStream messages and redeliveries.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// ErrConfig marks a bad OTEL_* setting; the message names the variable.
var ErrConfig = errors.New("invalid telemetry configuration")

// Propagator is W3C trace context (traceparent, tracestate).
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

// Config is the part of the OTEL_* variables orderflow reads itself; the SDK
// and the OTLP exporters read the rest (OTEL_SERVICE_NAME,
// OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_ENDPOINT, ...).
type Config struct {
	// Exporter is OTEL_TRACES_EXPORTER: stdout, otlp or none (default).
	Exporter string
	// Protocol is OTEL_EXPORTER_OTLP_PROTOCOL (or its _TRACES_ form):
	// grpc or http/protobuf (default, as the specification says).
	Protocol string
	// Sampler and SamplerArg are OTEL_TRACES_SAMPLER and its _ARG; checked
	// here, applied by the SDK.
	Sampler, SamplerArg string
	// Stdout receives the stdout exporter's spans.
	Stdout io.Writer
}

// FromEnv reads the Config from the environment.
func FromEnv() Config {
	proto := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	return Config{
		Exporter:   os.Getenv("OTEL_TRACES_EXPORTER"),
		Protocol:   proto,
		Sampler:    os.Getenv("OTEL_TRACES_SAMPLER"),
		SamplerArg: os.Getenv("OTEL_TRACES_SAMPLER_ARG"),
		Stdout:     os.Stdout,
	}
}

// Validate checks the settings, naming the variable at fault.
func (c Config) Validate() error {
	switch c.Exporter {
	case "", "none", "stdout", "otlp":
	default:
		return fmt.Errorf("%w: OTEL_TRACES_EXPORTER=%q: want stdout, otlp or none", ErrConfig, c.Exporter)
	}
	switch c.Protocol {
	case "", "grpc", "http/protobuf":
	default:
		return fmt.Errorf("%w: OTEL_EXPORTER_OTLP_PROTOCOL=%q: want grpc or http/protobuf", ErrConfig, c.Protocol)
	}
	switch c.Sampler {
	case "", "always_on", "always_off", "parentbased_always_on", "parentbased_always_off":
	case "traceidratio", "parentbased_traceidratio":
		if c.SamplerArg != "" {
			if r, err := strconv.ParseFloat(c.SamplerArg, 64); err != nil || r < 0 || r > 1 {
				return fmt.Errorf("%w: OTEL_TRACES_SAMPLER_ARG=%q: want a ratio 0..1", ErrConfig, c.SamplerArg)
			}
		}
	default:
		return fmt.Errorf("%w: OTEL_TRACES_SAMPLER=%q: want always_on, always_off, traceidratio or their parentbased_ forms", ErrConfig, c.Sampler)
	}
	return nil
}

// Tracing is the tracer provider of a process and how to flush it.
type Tracing struct {
	Provider trace.TracerProvider
	// Shutdown flushes spans not yet exported and stops the exporter.
	Shutdown func(context.Context) error
}

// Setup builds the tracer provider. With the exporter "none" it is a no-op
// provider: spans cost next to nothing and nothing is exported.
func Setup(ctx context.Context, c Config, service string) (Tracing, error) {
	if err := c.Validate(); err != nil {
		return Tracing{}, err
	}
	off := Tracing{Provider: noop.NewTracerProvider(), Shutdown: func(context.Context) error { return nil }}
	var exp sdktrace.SpanExporter
	var err error
	switch c.Exporter {
	case "", "none":
		return off, nil
	case "stdout":
		w := c.Stdout
		if w == nil {
			w = os.Stdout
		}
		exp, err = stdouttrace.New(stdouttrace.WithWriter(w), stdouttrace.WithPrettyPrint())
	case "otlp":
		if c.Protocol == "grpc" {
			exp, err = otlptracegrpc.New(ctx)
		} else {
			exp, err = otlptracehttp.New(ctx)
		}
	}
	if err != nil {
		return Tracing{}, fmt.Errorf("trace exporter %s: %w", c.Exporter, err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(serviceName(service))))
	if err != nil {
		return Tracing{}, err
	}
	// Detected last, so OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win.
	if env, err := resource.New(ctx, resource.WithFromEnv()); err == nil {
		res, _ = resource.Merge(res, env)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(time.Second)), sdktrace.WithResource(res))
	return Tracing{Provider: tp, Shutdown: tp.Shutdown}, nil
}

func serviceName(def string) string {
	if s := os.Getenv("OTEL_SERVICE_NAME"); s != "" {
		return s
	}
	return def
}

// HeaderCarrier lets the propagator read and write NATS headers. It writes
// lowercase keys, as W3C asks (traceparent), and reads any case, since NATS
// headers are case-sensitive and other clients write Traceparent.
type HeaderCarrier nats.Header

var _ propagation.TextMapCarrier = HeaderCarrier{}

// Get returns the first value of key in any case.
func (h HeaderCarrier) Get(key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	for k, v := range h {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

// Set stores value under the lowercase key, replacing any other casing.
func (h HeaderCarrier) Set(key, value string) {
	lk := strings.ToLower(key)
	for k := range h {
		if k != lk && strings.EqualFold(k, key) {
			delete(h, k)
		}
	}
	h[lk] = []string{value}
}

// Keys lists the header names.
func (h HeaderCarrier) Keys() []string {
	out := make([]string, 0, len(h))
	for k := range h {
		out = append(out, k)
	}
	return out
}

// Inject writes ctx's span context into h.
func Inject(ctx context.Context, h nats.Header) {
	if h != nil {
		Propagator.Inject(ctx, HeaderCarrier(h))
	}
}

// Extract returns ctx with the span context found in h, if any.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if h == nil {
		return ctx
	}
	return Propagator.Extract(ctx, HeaderCarrier(h))
}
