package function

import "context"

// Header carries message headers to a function without exposing the
// transport. Keys are matched exactly, as NATS does.
type Header map[string][]string

// Get returns the first value of key, or "".
func (h Header) Get(key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
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
}

// Name is "<service>.<function>", the subject of the function's endpoint.
func (c Call) Name() string { return c.Service + "." + c.Function }

type callKey struct{}

// WithCall returns ctx carrying c; the host calls it for every message.
func WithCall(ctx context.Context, c Call) context.Context {
	return context.WithValue(ctx, callKey{}, c)
}

// CallFrom returns the call ctx carries, or a zero Call outside the host.
func CallFrom(ctx context.Context) Call {
	c, _ := ctx.Value(callKey{}).(Call)
	return c
}
