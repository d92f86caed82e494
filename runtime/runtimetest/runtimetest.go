// Package runtimetest starts real NATS servers and calls functions over them,
// as net/http/httptest does for HTTP. Tests never mock NATS.
package runtimetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Option adjusts the server options before start.
type Option func(*server.Options)

// WithSyncAlways makes JetStream fsync every write, as nats.conf does.
func WithSyncAlways() Option { return func(o *server.Options) { o.SyncAlways = true } }

// WithStoreDir keeps JetStream's files in dir, so a restarted server finds them.
func WithStoreDir(dir string) Option { return func(o *server.Options) { o.StoreDir = dir } }

// WithPort listens on port instead of a random one.
func WithPort(port int) Option { return func(o *server.Options) { o.Port = port } }

// StartNATS runs a JetStream server on a random port with its store in a
// temp dir, and shuts it down when the test ends.
func StartNATS(t testing.TB, opts ...Option) *server.Server {
	t.Helper()
	o := &server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	}
	for _, opt := range opts {
		opt(o)
	}
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// Connect opens a client connection closed at the end of the test.
func Connect(t testing.TB, s *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// JetStream returns a JetStream context on nc.
func JetStream(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return js
}

// ServiceError is a micro error reply.
type ServiceError struct {
	Code        int
	Description string
}

func (e *ServiceError) Error() string { return strconv.Itoa(e.Code) + ": " + e.Description }

// Code returns the micro error code of err, or 0 when err is not a
// ServiceError.
func Code(err error) int {
	var se *ServiceError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// Encoding of a Call.
type Encoding int

const (
	// Protobuf sends and expects binary protobuf.
	Protobuf Encoding = iota
	// JSON sends and expects protojson, as the nats CLI would.
	JSON
)

// Request is one call's options.
type Request struct {
	Encoding Encoding
	Header   nats.Header
	Timeout  time.Duration
}

// Call sends req to subject and decodes the reply into a new Resp. A micro
// error reply is returned as *ServiceError.
func Call[Resp any, P interface {
	*Resp
	proto.Message
}](ctx context.Context, nc *nats.Conn, subject string, req proto.Message, r Request) (P, error) {
	var data []byte
	var err error
	if r.Encoding == JSON {
		data, err = protojson.Marshal(req)
	} else {
		data, err = proto.Marshal(req)
	}
	if err != nil {
		return nil, err
	}
	return CallRaw[Resp, P](ctx, nc, subject, data, r)
}

// CallRaw sends a raw body, for tests of malformed input.
func CallRaw[Resp any, P interface {
	*Resp
	proto.Message
}](ctx context.Context, nc *nats.Conn, subject string, body []byte, r Request) (P, error) {
	if r.Timeout == 0 {
		r.Timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	m := nats.NewMsg(subject)
	m.Data = body
	for k, v := range r.Header {
		m.Header[k] = v
	}
	reply, err := nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		return nil, fmt.Errorf("request %s: %w", subject, err)
	}
	if code := reply.Header.Get(micro.ErrorCodeHeader); code != "" {
		n, _ := strconv.Atoi(code)
		return nil, &ServiceError{Code: n, Description: reply.Header.Get(micro.ErrorHeader)}
	}
	var out P = new(Resp)
	if r.Encoding == JSON {
		err = protojson.Unmarshal(reply.Data, out)
	} else {
		err = proto.Unmarshal(reply.Data, out)
	}
	if err != nil {
		return nil, fmt.Errorf("decode %s reply %q: %w", subject, reply.Data, err)
	}
	return out, nil
}

// Stats gathers the STATS replies of every instance of service, waiting up
// to 500ms after the last one for more.
func Stats(t testing.TB, nc *nats.Conn, service string) []micro.Stats {
	t.Helper()
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest("$SRV.STATS."+service, inbox, nil); err != nil {
		t.Fatal(err)
	}
	var out []micro.Stats
	for {
		m, err := sub.NextMsg(500 * time.Millisecond)
		if err != nil {
			if len(out) == 0 {
				t.Fatalf("no STATS reply from %s", service)
			}
			return out
		}
		var st micro.Stats
		if err := json.Unmarshal(m.Data, &st); err != nil {
			t.Fatal(err)
		}
		out = append(out, st)
	}
}

// Cluster is a JetStream cluster of embedded servers on loopback, for
// tests of what orderflow promises on R3: each server has its own store
// and ports, and can be stopped and started again on the same store.
type Cluster struct {
	t       testing.TB
	opts    []*server.Options
	Servers []*server.Server
}

// StartCluster runs an n-node JetStream cluster and waits until it has a
// meta leader. It is shut down when the test ends.
func StartCluster(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	c := &Cluster{t: t, opts: make([]*server.Options, n), Servers: make([]*server.Server, n)}
	clientPorts, routePorts := FreePorts(t, n), FreePorts(t, n)
	var routes []*url.URL
	for _, p := range routePorts {
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)})
	}
	for i := range n {
		o := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       clientPorts[i],
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoLog:      true,
			NoSigs:     true,
			Cluster:    server.ClusterOpts{Name: "orderflow-test", Host: "127.0.0.1", Port: routePorts[i]},
			Routes:     routes,
		}
		for _, opt := range opts {
			opt(o)
		}
		c.opts[i] = o
	}
	for i := range n {
		c.Start(i)
	}
	t.Cleanup(func() {
		for i := range c.Servers {
			c.Stop(i)
		}
	})
	c.WaitMetaLeader()
	return c
}

// FreePorts returns n TCP ports free on loopback right now.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	var out []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

// Start starts server i (again), on its store.
func (c *Cluster) Start(i int) {
	c.t.Helper()
	s, err := server.NewServer(c.opts[i].Clone())
	if err != nil {
		c.t.Fatalf("nats server %d: %v", i, err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		c.t.Fatalf("nats server %d not ready", i)
	}
	c.Servers[i] = s
}

// Stop shuts server i down.
func (c *Cluster) Stop(i int) {
	if s := c.Servers[i]; s != nil {
		s.Shutdown()
		s.WaitForShutdown()
		c.Servers[i] = nil
	}
}

// URLs is every server's client URL, comma separated, as NATS_URL takes it.
func (c *Cluster) URLs() string {
	var out []string
	for _, o := range c.opts {
		out = append(out, fmt.Sprintf("nats://127.0.0.1:%d", o.Port))
	}
	return strings.Join(out, ",")
}

// Connect opens a client connection to any server of the cluster.
func (c *Cluster) Connect() *nats.Conn {
	c.t.Helper()
	nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		c.t.Fatalf("connect: %v", err)
	}
	c.t.Cleanup(nc.Close)
	return nc
}

// WaitMetaLeader waits until the running servers have a meta leader that
// can place assets on every one of them (it has their current stats).
func (c *Cluster) WaitMetaLeader() {
	c.t.Helper()
	running := 0
	for _, s := range c.Servers {
		if s != nil {
			running++
		}
	}
	c.waitFor("a meta leader that knows every server", func() int {
		for i, s := range c.Servers {
			if s != nil && s.JetStreamIsLeader() && len(s.JetStreamClusterPeers()) >= running {
				return i
			}
		}
		return -1
	})
}

// StreamLeader returns the index of the server leading stream in the
// global account, waiting for one to be elected.
func (c *Cluster) StreamLeader(stream string) int {
	c.t.Helper()
	return c.waitFor("a leader of stream "+stream, func() int {
		for i, s := range c.Servers {
			if s != nil && s.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
				return i
			}
		}
		return -1
	})
}

// MetaLeader returns the index of the meta leader.
func (c *Cluster) MetaLeader() int {
	c.t.Helper()
	return c.waitFor("a meta leader", func() int {
		for i, s := range c.Servers {
			if s != nil && s.JetStreamIsLeader() {
				return i
			}
		}
		return -1
	})
}

func (c *Cluster) waitFor(what string, find func() int) int {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if i := find(); i >= 0 {
			return i
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("cluster has no %s after 30s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
