package host

import (
	"context"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the host's Prometheus collectors, labelled by function
// ("orders.create").
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight *prometheus.GaugeVec
	messages *prometheus.CounterVec
	msgTime  *prometheus.HistogramVec
	waiting  *prometheus.GaugeVec
	waits    *prometheus.CounterVec
}

// NewMetrics creates the collectors and registers them with reg (nil: not
// registered, for tests that do not scrape).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "orderflow", Name: "requests_total",
			Help: "Requests served per function, by micro status code (200 for success).",
		}, []string{"function", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "orderflow", Name: "request_duration_seconds",
			Help:    "Time from receiving a request to sending its reply.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"function"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "orderflow", Name: "requests_in_flight",
			Help: "Requests being processed now.",
		}, []string{"function"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "orderflow", Name: "messages_total",
			Help: "Triggered messages handled per function and consumer, by outcome: ack, retry (scheduled again) or dead_letter.",
		}, []string{"function", "consumer", "outcome"}),
		msgTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "orderflow", Name: "message_duration_seconds",
			Help:    "Time to handle one delivery of a triggered message.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"function", "consumer"}),
		waiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "orderflow", Name: "messages_waiting_on_jetstream",
			Help: "Triggered messages whose handler is waiting for JetStream to be available again (an election, a restarting server); they spend no attempt meanwhile.",
		}, []string{"function", "consumer"}),
		waits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "orderflow", Name: "jetstream_unavailable_retries_total",
			Help: "Handler calls repeated because JetStream was unavailable, without spending an attempt.",
		}, []string{"function", "consumer"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.inFlight, m.messages, m.msgTime, m.waiting, m.waits)
	}
	return m
}

// trigMetrics are one trigger's series, looked up once.
type trigMetrics struct {
	outcomes map[string]prometheus.Counter
	duration prometheus.Observer
	waiting  prometheus.Gauge
	waits    prometheus.Counter
}

func (m *Metrics) forTrigger(fn, consumer string) trigMetrics {
	t := trigMetrics{outcomes: map[string]prometheus.Counter{}, duration: m.msgTime.WithLabelValues(fn, consumer),
		waiting: m.waiting.WithLabelValues(fn, consumer), waits: m.waits.WithLabelValues(fn, consumer)}
	for _, o := range []string{"ack", "retry", "dead_letter"} {
		t.outcomes[o] = m.messages.WithLabelValues(fn, consumer, o)
	}
	return t
}

func (t trigMetrics) observe(d time.Duration, outcome string) {
	t.outcomes[outcome].Inc()
	t.duration.Observe(d.Seconds())
}

// fnMetrics are one function's series, looked up once; error codes, which
// vary, are looked up when they happen.
type fnMetrics struct {
	m        *Metrics
	fn       string
	ok       prometheus.Counter
	inFlight prometheus.Gauge
	duration prometheus.Observer
}

func (m *Metrics) forFunction(fn string) fnMetrics {
	return fnMetrics{m: m, fn: fn, ok: m.requests.WithLabelValues(fn, "200"),
		inFlight: m.inFlight.WithLabelValues(fn), duration: m.duration.WithLabelValues(fn)}
}

func (f fnMetrics) observe(d time.Duration, code string) {
	if code == "" {
		f.ok.Inc()
	} else {
		f.m.requests.WithLabelValues(f.fn, code).Inc()
	}
	f.duration.Observe(d.Seconds())
}

// Collector reports the state of every trigger's consumer when scraped:
// messages waiting, delivered but not acked, and redelivered. It asks the
// server, so the figures are the consumer's, shared by all pods.
func (h *Host) Collector() prometheus.Collector {
	return &consumerCollector{h: h,
		pending: prometheus.NewDesc("orderflow_consumer_pending_messages",
			"Messages in the stream not yet delivered to the consumer.", []string{"function", "stream", "consumer"}, nil),
		ackPending: prometheus.NewDesc("orderflow_consumer_ack_pending_messages",
			"Messages delivered and not yet acknowledged (in progress or waiting for a retry).", []string{"function", "stream", "consumer"}, nil),
		redelivered: prometheus.NewDesc("orderflow_consumer_redelivered_messages",
			"Messages delivered more than once and not yet acknowledged.", []string{"function", "stream", "consumer"}, nil),
		up: prometheus.NewDesc("orderflow_consumer_info_up",
			"1 when the consumer's state could be read at this scrape.", []string{"function", "stream", "consumer"}, nil),
	}
}

type consumerCollector struct {
	h                                    *Host
	pending, ackPending, redelivered, up *prometheus.Desc
}

func (c *consumerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.ackPending
	ch <- c.redelivered
	ch <- c.up
}

func (c *consumerCollector) Collect(ch chan<- prometheus.Metric) {
	c.h.mu.Lock()
	triggers := slices.Clone(c.h.triggers)
	c.h.mu.Unlock()
	for _, tr := range triggers {
		labels := []string{tr.e.subject, tr.t.Stream, tr.t.Durable}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		cons, err := c.h.js.Consumer(ctx, tr.t.Stream, tr.t.Durable)
		cancel()
		if err != nil {
			ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0, labels...)
			continue
		}
		info := cons.CachedInfo()
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1, labels...)
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(info.NumPending), labels...)
		ch <- prometheus.MustNewConstMetric(c.ackPending, prometheus.GaugeValue, float64(info.NumAckPending), labels...)
		ch <- prometheus.MustNewConstMetric(c.redelivered, prometheus.GaugeValue, float64(info.NumRedelivered), labels...)
	}
}
