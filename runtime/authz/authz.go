// Package authz derives least-privilege NATS permissions from what the
// functions declare: the subjects they serve, the events they consume and
// publish, the streams they read and the buckets they read and write. One
// role per service, "functions" for all-in-one pods, "client" for the
// public endpoints, "ops" for the operators' endpoints and "admin" for
// provisioning. Config renders them as a nats-server configuration
// fragment whose passwords come from the environment.
package authz

import (
	"fmt"
	"slices"
	"strings"

	"github.com/orderflow/orderflow/runtime/function"
)

// Function is a function as its service hosts it.
type Function struct {
	Service string
	Def     function.Definition
}

// Subject returns the function's endpoint subject.
func (f Function) Subject() string { return f.Service + "." + f.Def.Name }

// Role is one NATS user's permissions.
type Role struct {
	Name      string
	Publish   []string
	Subscribe []string
	// Responses lets it reply to the requests it receives.
	Responses bool
}

// Settings are the conventions the permissions follow.
type Settings struct {
	// APIPrefix of JetStream, "$JS.API".
	APIPrefix string
	// QueueGroup the endpoints subscribe in.
	QueueGroup string
	// DeadLetterStream holds the dead letters, DeadLetterSubject(consumer)
	// is where a consumer's go.
	DeadLetterStream  string
	DeadLetterSubject func(consumer string) string
	// BucketStream names the stream behind a KV bucket.
	BucketStream func(bucket string) string
	// Streams and Buckets list what is behind a stream or bucket a
	// function names: its partitions, or itself when they are nil.
	Streams, Buckets func(name string) []string
}

func (s Settings) streams(name string) []string {
	if s.Streams == nil {
		return []string{name}
	}
	return s.Streams(name)
}

func (s Settings) buckets(name string) []string {
	if s.Buckets == nil {
		return []string{name}
	}
	return s.Buckets(name)
}

// Inbox is the inbox prefix of role: its replies arrive there, and only
// there may it subscribe for them, so no role reads another's replies.
func Inbox(role string) string { return "_INBOX_" + role }

// Roles are the roles of fns: one per service, then functions, client, ops
// and admin.
func Roles(fns []Function, s Settings) []Role {
	var services []string
	for _, f := range fns {
		if !slices.Contains(services, f.Service) {
			services = append(services, f.Service)
		}
	}
	var roles []Role
	for _, svc := range services {
		roles = append(roles, For(svc, filter(fns, func(f Function) bool { return f.Service == svc }), s))
	}
	roles = append(roles, For("functions", fns, s))
	roles = append(roles, caller("client", filter(fns, func(f Function) bool { return f.Def.Serves() && !f.Def.ForOperators }), s))
	roles = append(roles, caller("ops", filter(fns, func(f Function) bool { return f.Def.Serves() && f.Def.ForOperators }), s))
	roles = append(roles, Role{
		Name:      "admin",
		Publish:   []string{s.APIPrefix + ".>"},
		Subscribe: []string{Inbox("admin") + ".>"},
	})
	return roles
}

func filter(fns []Function, keep func(Function) bool) []Function {
	var out []Function
	for _, f := range fns {
		if keep(f) {
			out = append(out, f)
		}
	}
	return out
}

// For is the role named name that hosts fns: exactly what their
// declarations need, and nothing to manage streams or consumers with.
func For(name string, fns []Function, s Settings) Role {
	r := Role{Name: name, Responses: true}
	pub, sub := set{}, set{}
	api := s.APIPrefix + "."
	sub.add(Inbox(name) + ".>")
	pub.add(api + "INFO") // readiness: JetStream reachable
	stream := func(name string) {
		for _, st := range s.streams(name) {
			pub.add(api + "STREAM.INFO." + st)
		}
	}
	reads := func(names ...string) {
		for _, st := range names {
			pub.add(api+"STREAM.INFO."+st, api+"STREAM.MSG.GET."+st, api+"DIRECT.GET."+st, api+"DIRECT.GET."+st+".>")
		}
	}
	for _, f := range fns {
		svc := f.Service
		sub.add("$SRV.PING", "$SRV.INFO", "$SRV.STATS", "$SRV.*."+svc, "$SRV.*."+svc+".*")
		if f.Def.Serves() {
			sub.add(f.Subject() + " " + s.QueueGroup)
		}
		for _, t := range f.Def.Triggers {
			stream(s.DeadLetterStream)
			pub.add(s.DeadLetterSubject(t.Durable))
			for _, st := range s.streams(t.Stream) {
				pub.add(
					api+"STREAM.INFO."+st,
					api+"CONSUMER.INFO."+st+"."+t.Durable,
					api+"CONSUMER.MSG.NEXT."+st+"."+t.Durable,
					"$JS.ACK."+st+"."+t.Durable+".>",
				)
			}
		}
		for _, p := range f.Def.Uses.Publishes {
			stream(p.Stream)
			pub.add(p.Subjects...)
		}
		for _, st := range f.Def.Uses.Reads {
			reads(s.streams(st)...)
		}
		for _, w := range f.Def.Uses.Watches {
			for _, st := range s.streams(w.Stream) {
				for _, c := range w.Consumers {
					pub.add(api + "CONSUMER.INFO." + st + "." + c)
				}
			}
		}
		for _, st := range f.Def.Uses.Deletes {
			stream(st)
			for _, st := range s.streams(st) {
				pub.add(api + "STREAM.MSG.DELETE." + st)
			}
		}
		for _, b := range f.Def.Uses.Buckets {
			for _, name := range s.buckets(b.Name) {
				reads(s.BucketStream(name))
				if b.Write {
					pub.add("$KV." + name + ".>")
				}
			}
		}
	}
	r.Publish, r.Subscribe = pub.sorted(), sub.sorted()
	return r
}

// caller is a role that calls fns and discovers services: it publishes
// their request subjects and $SRV queries and reads replies in its inbox.
func caller(name string, fns []Function, s Settings) Role {
	pub := set{}
	pub.add("$SRV.>")
	for _, f := range fns {
		pub.add(f.Subject())
	}
	return Role{Name: name, Publish: pub.sorted(), Subscribe: []string{Inbox(name) + ".>"}}
}

type set map[string]bool

func (s set) add(v ...string) {
	for _, x := range v {
		s[x] = true
	}
}

func (s set) sorted() []string {
	out := make([]string, 0, len(s))
	for x := range s {
		out = append(out, x)
	}
	slices.Sort(out)
	return out
}

// PasswordVar is the environment variable nats-server reads role's
// password from.
func PasswordVar(role string) string {
	return "ORDERFLOW_" + strings.ToUpper(role) + "_PASSWORD"
}

// Config renders roles as a nats-server configuration fragment for
// `include`: an authorization block with one user per role, or, with
// account set, an accounts block holding them in that JetStream-enabled
// account. The fragment holds no secret: nats-server reads each password
// from PasswordVar(role) in its environment, and refuses to start without
// it.
func Config(roles []Role, account string) string {
	var b strings.Builder
	w := func(indent int, format string, args ...any) {
		b.WriteString(strings.Repeat("  ", indent))
		fmt.Fprintf(&b, format, args...)
		b.WriteByte('\n')
	}
	w(0, "# orderflow identities, generated by `orderflow authz` from the functions' declarations: do not edit.")
	w(0, "# nats-server reads each password from ORDERFLOW_<ROLE>_PASSWORD in its environment.")
	in := 1
	if account != "" {
		w(0, "accounts {")
		w(1, "%s {", account)
		w(2, "jetstream: enabled")
		in = 2
	} else {
		w(0, "authorization {")
	}
	w(in, "users = [")
	for _, r := range roles {
		w(in+1, "{")
		w(in+2, "user: %q", r.Name)
		w(in+2, "password: $%s", PasswordVar(r.Name))
		w(in+2, "permissions: {")
		w(in+3, "publish: { allow: %s }", list(r.Publish))
		w(in+3, "subscribe: { allow: %s }", list(r.Subscribe))
		if r.Responses {
			w(in+3, "allow_responses: true")
		}
		w(in+2, "}")
		w(in+1, "}")
	}
	w(in, "]")
	if account != "" {
		w(1, "}")
	}
	w(0, "}")
	return b.String()
}

func list(v []string) string {
	q := make([]string, len(v))
	for i, s := range v {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
