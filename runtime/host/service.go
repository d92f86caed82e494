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

// endpointStats is micro.EndpointStats behind a lock, plus the live count of
// calls in flight, which micro's own stats cannot report.
type endpointStats struct {
	mu sync.Mutex
	micro.EndpointStats
	inFlight int
}

func (e *endpoint) snapshot() micro.EndpointStats {
	e.stats.mu.Lock()
	defer e.stats.mu.Unlock()
	out := e.stats.EndpointStats
	data, _ := json.Marshal(struct {
		InFlight int `json:"in_flight"`
		Workers  int `json:"workers"`
	}{e.stats.inFlight, cap(e.slots)})
	out.Data = data
	return out
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
