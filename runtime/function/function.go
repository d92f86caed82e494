// Package function is the API a business function is written against: a
// typed func(ctx, *Req) (*Resp, error) on generated protobuf messages, wrapped
// into a Definition the host can serve. It knows nothing of NATS.
package function

import (
	"context"
	"fmt"
	"regexp"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/orderflow/orderflow/runtime/retry"
)

// Handler is the type-erased form of a function that the host dispatches to
// and middleware wraps.
type Handler func(ctx context.Context, req proto.Message) (proto.Message, error)

// Middleware wraps a Handler with behaviour that every call gets.
type Middleware func(Handler) Handler

// Chain wraps h in mw; the first middleware is the outermost, so
// Chain(h, Recover, Timeout) recovers panics raised by Timeout as well.
func Chain(h Handler, mw ...Middleware) Handler {
	for i := len(mw) - 1; i >= 0; i-- {
		h = mw[i](h)
	}
	return h
}

// Message is satisfied by *T when T is a generated protobuf message; it lets
// New allocate requests without reflection.
type Message[T any] interface {
	*T
	proto.Message
}

// Func is a typed business function.
type Func[Req, Resp any, PReq Message[Req], PResp Message[Resp]] func(ctx context.Context, req PReq) (PResp, error)

// Definition describes one function to the host: its endpoint name within its
// service, what it does, its contract and its handler.
type Definition struct {
	// Name is the endpoint name; the subject is "<service>.<name>".
	Name string
	// Description says what the function does; it is shown by nats micro info.
	Description string
	// Request and Response describe the contract.
	Request, Response protoreflect.MessageDescriptor
	// NewRequest allocates an empty request to decode into.
	NewRequest func() proto.Message
	// Handler runs the function.
	Handler Handler
	// Middleware wraps this function only, inside the host's own chain.
	Middleware []Middleware
	// Triggers run the function on JetStream messages too.
	Triggers []Trigger
	// Retry is the function's retry policy; nil takes the host's default.
	// Config may override it per function.
	Retry *retry.Policy
	// NotIdempotent says a repeat of a call does the work again, so the
	// runtime must never retry it, whatever the config says.
	NotIdempotent bool
	// ForOperators marks an endpoint for operators (restock, dead letters),
	// not for every client.
	ForOperators bool
	// Uses is what the function touches besides its endpoint and triggers:
	// the runtime provisions it, and grants it (and nothing else) to the
	// function's identity.
	Uses Uses
}

// Uses declares the JetStream resources a function touches.
type Uses struct {
	// Publishes are the subjects it appends to, by stream.
	Publishes []Publish
	// Reads are streams whose messages it reads (an event log).
	Reads []string
	// Deletes are streams it deletes single messages from.
	Deletes []string
	// Watches are consumers whose state it reads (a backlog), by stream.
	Watches []Watch
	// Buckets are the KV buckets it reads, and writes if Write is set.
	Buckets []BucketUse
}

// Publish is a stream and the subjects (patterns) a function appends to it.
type Publish struct {
	Stream   string
	Subjects []string
}

// BucketUse is a KV bucket a function reads, and maybe writes.
type BucketUse struct {
	Name  string
	Write bool
}

// Publishes declares that the function appends messages on subjects (which
// may be patterns such as "ORDER.*.stock_reserved") to stream.
func Publishes(stream string, subjects ...string) Option {
	return func(d *Definition) {
		d.Uses.Publishes = append(d.Uses.Publishes, Publish{Stream: stream, Subjects: subjects})
	}
}

// Reads declares that the function reads the messages of stream.
func Reads(stream string) Option {
	return func(d *Definition) { d.Uses.Reads = append(d.Uses.Reads, stream) }
}

// Watch is a stream and consumers of it whose state a function reads.
type Watch struct {
	Stream    string
	Consumers []string
}

// WatchesConsumers declares that the function reads the state of consumers
// of stream (their backlog), which it does not consume from.
func WatchesConsumers(stream string, consumers ...string) Option {
	return func(d *Definition) {
		d.Uses.Watches = append(d.Uses.Watches, Watch{Stream: stream, Consumers: consumers})
	}
}

// DeletesFrom declares that the function deletes messages from stream.
func DeletesFrom(stream string) Option {
	return func(d *Definition) { d.Uses.Deletes = append(d.Uses.Deletes, stream) }
}

// ReadsBucket declares that the function reads KV bucket name.
func ReadsBucket(name string) Option {
	return func(d *Definition) { d.Uses.Buckets = append(d.Uses.Buckets, BucketUse{Name: name}) }
}

// WritesBucket declares that the function reads and writes KV bucket name.
func WritesBucket(name string) Option {
	return func(d *Definition) { d.Uses.Buckets = append(d.Uses.Buckets, BucketUse{Name: name, Write: true}) }
}

// Serves reports whether the function answers requests; a function that
// runs only on its triggers has no request endpoint anyone could call.
func (d Definition) Serves() bool { return d.Handler != nil }

// Trigger runs an event handler of a function on the messages of a stream
// that match Subject, through a durable consumer that every pod hosting the
// function shares, so each message is handled by one pod.
type Trigger struct {
	// Stream holds the messages; Subject filters them ("ORDER.*.created").
	Stream, Subject string
	// Durable names the consumer ("inventory-reserve").
	Durable string
	// Event describes the message payload; NewEvent allocates one.
	Event    protoreflect.MessageDescriptor
	NewEvent func() proto.Message
	// Handler runs on each message; it returns a nil response.
	Handler Handler
}

// On makes fn run for every message on subject in stream, through the
// durable consumer named durable. An error from fn is retried with the
// function's policy (permanent errors are not) and, when the attempts are
// spent, the message goes to the dead-letter stream.
func On[E any, PE Message[E]](stream, subject, durable string, fn func(context.Context, PE) error) Option {
	var zero PE = new(E)
	return func(d *Definition) {
		d.Triggers = append(d.Triggers, Trigger{
			Stream:   stream,
			Subject:  subject,
			Durable:  durable,
			Event:    zero.ProtoReflect().Descriptor(),
			NewEvent: func() proto.Message { return PE(new(E)) },
			Handler: func(ctx context.Context, ev proto.Message) (proto.Message, error) {
				in, ok := ev.(PE)
				if !ok {
					return nil, fmt.Errorf("trigger %s: event is %T, want %T", durable, ev, zero)
				}
				return nil, fn(ctx, in)
			},
		})
	}
}

// NotIdempotent marks a function whose repeat does the work again: the
// runtime never retries it, and it cannot have triggers (a redelivered
// message would repeat it).
func NotIdempotent() Option { return func(d *Definition) { d.NotIdempotent = true } }

// ForOperators marks the function's endpoint as an operator's tool: the
// client identity may not call it, the ops identity may.
func ForOperators() Option { return func(d *Definition) { d.ForOperators = true } }

// WithRetry sets the function's retry policy.
func WithRetry(p retry.Policy) Option { return func(d *Definition) { d.Retry = &p } }

// Option configures a Definition.
type Option func(*Definition)

// WithDescription sets the description shown in service discovery.
func WithDescription(s string) Option { return func(d *Definition) { d.Description = s } }

// WithMiddleware adds middleware to this function only.
func WithMiddleware(mw ...Middleware) Option {
	return func(d *Definition) { d.Middleware = append(d.Middleware, mw...) }
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)

// Triggered is a function that runs only on its triggers (On): a saga step
// nobody may call. It is a function all the same: hosted by FUNCTIONS,
// retried by its policy, and listed with its trigger statistics in its
// service's `nats micro info` and `stats`, but it subscribes to no request
// subject.
func Triggered(name string, opts ...Option) Definition {
	if !nameRE.MatchString(name) {
		panic(fmt.Sprintf("function: invalid name %q", name))
	}
	d := Definition{Name: name}
	for _, o := range opts {
		o(&d)
	}
	if len(d.Triggers) == 0 {
		panic(fmt.Sprintf("function: %s runs on triggers but declares none", name))
	}
	return d
}

// New wraps a typed function into a Definition. Name must be a lower-case
// token ("create"); it panics otherwise, since names are constants in code.
func New[Req, Resp any, PReq Message[Req], PResp Message[Resp]](name string, fn func(context.Context, PReq) (PResp, error), opts ...Option) Definition {
	if !nameRE.MatchString(name) {
		panic(fmt.Sprintf("function: invalid name %q", name))
	}
	var zeroReq PReq = new(Req)
	var zeroResp PResp = new(Resp)
	d := Definition{
		Name:       name,
		Request:    zeroReq.ProtoReflect().Descriptor(),
		Response:   zeroResp.ProtoReflect().Descriptor(),
		NewRequest: func() proto.Message { return PReq(new(Req)) },
		Handler: func(ctx context.Context, req proto.Message) (proto.Message, error) {
			in, ok := req.(PReq)
			if !ok {
				return nil, fmt.Errorf("function %s: request is %T, want %T", name, req, zeroReq)
			}
			out, err := fn(ctx, in)
			if err != nil {
				return nil, err
			}
			return out, nil
		},
	}
	for _, o := range opts {
		o(&d)
	}
	return d
}

// Service groups functions under one micro service name ("orders").
type Service struct {
	Name        string
	Version     string
	Description string
}
