package function

import (
	"context"
	"strings"
	"sync"
)

// Header carries message headers to a function without exposing the
// transport.
type Header map[string][]string

// Get returns the first value of key, or "". Keys match in any letter case,
// as HTTP headers do: gateways in front of NATS often lower-case them
// ("idempotency-key"). An exact match wins.
func (h Header) Get(key string) string {
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

// Call describes the invocation a handler is serving.
type Call struct {
	// Service and Function name the endpoint ("orders", "create").
	Service, Function string
	// Subject the message arrived on.
	Subject string
	// Header of the incoming message.
	Header Header
	// Attempt counts deliveries of a triggering message (1 on the first);
	// it is 1 for requests.
	Attempt int
	// Trigger is the durable consumer that delivered the message, or ""
	// for a request.
	Trigger string

	notes *notes
}

// notes are key-value annotations of a call, set by the function as it
// learns them (the order id it created, say) and read by the runtime for
// log lines and span attributes.
type notes struct {
	mu sync.Mutex
	kv []string
}

// Annotate records key=value on the call in ctx: the runtime puts it on the
// call's log lines and span. A key set twice keeps the last value.
func Annotate(ctx context.Context, key, value string) {
	n := CallFrom(ctx).notes
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for i := 0; i < len(n.kv); i += 2 {
		if n.kv[i] == key {
			n.kv[i+1] = value
			return
		}
	}
	n.kv = append(n.kv, key, value)
}

// Annotations returns the call's annotations as key, value pairs.
func Annotations(ctx context.Context) []string {
	n := CallFrom(ctx).notes
	if n == nil {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.kv...)
}

// Name is "<service>.<function>", the subject of the function's endpoint.
func (c Call) Name() string { return c.Service + "." + c.Function }

type callKey struct{}

// WithCall returns ctx carrying c; the host calls it for every message.
func WithCall(ctx context.Context, c Call) context.Context {
	if c.notes == nil {
		c.notes = &notes{}
	}
	return context.WithValue(ctx, callKey{}, c)
}

// CallFrom returns the call ctx carries, or a zero Call outside the host.
func CallFrom(ctx context.Context) Call {
	c, _ := ctx.Value(callKey{}).(Call)
	return c
}
