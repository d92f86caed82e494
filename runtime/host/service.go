package host

import (
	"encoding/json"
	"maps"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// service is one micro service: an identity, endpoints and their stats.
type service struct {
	info      micro.ServiceIdentity
	desc      string
	started   time.Time
	endpoints []*endpoint
}

func (s *service) verbHandler(v micro.Verb) nats.MsgHandler {
	return func(m *nats.Msg) {
		var resp any
		switch v {
		case micro.PingVerb:
			resp = micro.Ping{ServiceIdentity: s.identity(), Type: micro.PingResponseType}
		case micro.InfoVerb:
			resp = s.Info()
		case micro.StatsVerb:
			resp = s.Stats()
		}
		data, err := json.Marshal(resp)
		if err != nil {
			return
		}
		_ = m.Respond(data)
	}
}

func (s *service) identity() micro.ServiceIdentity {
	id := s.info
	id.Metadata = maps.Clone(s.info.Metadata)
	return id
}

// Info is what `nats micro info` shows.
func (s *service) Info() micro.Info {
	eps := make([]micro.EndpointInfo, 0, len(s.endpoints))
	for _, e := range s.endpoints {
		eps = append(eps, micro.EndpointInfo{
			Name:       e.def.Name,
			Subject:    e.subject,
			QueueGroup: QueueGroup,
			Metadata:   e.metadata(),
		})
	}
	return micro.Info{ServiceIdentity: s.identity(), Type: micro.InfoResponseType, Description: s.desc, Endpoints: eps}
}

// Stats is what `nats micro stats` shows.
func (s *service) Stats() micro.Stats {
	st := micro.Stats{ServiceIdentity: s.identity(), Type: micro.StatsResponseType, Started: s.started}
	for _, e := range s.endpoints {
		es := e.snapshot()
		st.Endpoints = append(st.Endpoints, &es)
	}
	return st
}

// endpointStats is micro.EndpointStats (requests only) behind a lock, plus
// what micro's own stats cannot report: calls in flight and, per trigger,
// the messages handled, retried and dead-lettered.
type endpointStats struct {
	mu sync.Mutex
	micro.EndpointStats
	inFlight int
	triggers map[string]*TriggerStats
}

// TriggerStats count one trigger's messages; they appear in the endpoint's
// data in `nats micro stats`.
type TriggerStats struct {
	// Messages handled to an outcome, each delivery counted.
	Messages int `json:"messages"`
	// Acked: handled successfully.
	Acked int `json:"acked"`
	// Retries: deliveries that failed and were scheduled again.
	Retries int `json:"retries"`
	// DeadLetters: messages given up on and stored as dead letters.
	DeadLetters int `json:"dead_letters"`
	// ProcessingTime: total time spent on messages.
	ProcessingTime time.Duration `json:"processing_time"`
}

// EndpointData is the data of an endpoint in `nats micro stats`.
type EndpointData struct {
	InFlight int                      `json:"in_flight"`
	Workers  int                      `json:"workers"`
	Triggers map[string]*TriggerStats `json:"triggers,omitempty"`
}

func (e *endpoint) snapshot() micro.EndpointStats {
	e.stats.mu.Lock()
	defer e.stats.mu.Unlock()
	out := e.stats.EndpointStats
	d := EndpointData{InFlight: e.stats.inFlight, Workers: cap(e.slots)}
	if len(e.stats.triggers) > 0 {
		d.Triggers = make(map[string]*TriggerStats, len(e.stats.triggers))
		for k, v := range e.stats.triggers {
			c := *v
			d.Triggers[k] = &c
		}
	}
	out.Data, _ = json.Marshal(d)
	return out
}

func (e *endpoint) endTrigger(durable string, elapsed time.Duration, outcome string) {
	e.stats.mu.Lock()
	defer e.stats.mu.Unlock()
	e.stats.inFlight--
	if e.stats.triggers == nil {
		e.stats.triggers = map[string]*TriggerStats{}
	}
	ts := e.stats.triggers[durable]
	if ts == nil {
		ts = &TriggerStats{}
		e.stats.triggers[durable] = ts
	}
	ts.Messages++
	ts.ProcessingTime += elapsed
	switch outcome {
	case "ack":
		ts.Acked++
	case "retry":
		ts.Retries++
	case "dead_letter":
		ts.DeadLetters++
	}
}

func (e *endpoint) begin() {
	e.stats.mu.Lock()
	e.stats.inFlight++
	e.stats.mu.Unlock()
}

func (e *endpoint) end(elapsed time.Duration, code, desc string) {
	e.stats.mu.Lock()
	defer e.stats.mu.Unlock()
	s := &e.stats.EndpointStats
	e.stats.inFlight--
	s.NumRequests++
	s.ProcessingTime += elapsed
	s.AverageProcessingTime = s.ProcessingTime / time.Duration(s.NumRequests)
	if code != "" {
		s.NumErrors++
		s.LastError = code + ":" + desc
	}
}
