// Package config reads the host's settings from environment variables into
// one struct. A bad value fails at start with a message naming the variable.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/orderflow/orderflow/runtime/partition"

	"github.com/orderflow/orderflow/runtime/retry"
)

// ErrInvalid marks a bad setting; the message names the variable.
var ErrInvalid = errors.New("invalid configuration")

// Config is every setting of a function host.
type Config struct {
	// NATSURL is the server to connect to; empty starts an embedded server.
	NATSURL string `envconfig:"NATS_URL"`
	// Credentials, as every NATS client takes them: a user and password, a
	// creds file (JWT and seed), an nkey seed file, and TLS files.
	NATSUser     string `envconfig:"NATS_USER"`
	NATSPassword string `envconfig:"NATS_PASSWORD"`
	NATSCreds    string `envconfig:"NATS_CREDS"`
	NATSNKey     string `envconfig:"NATS_NKEY"`
	NATSCA       string `envconfig:"NATS_CA"`
	NATSCert     string `envconfig:"NATS_CERT"`
	NATSKey      string `envconfig:"NATS_KEY"`
	// NATSInboxPrefix is where replies to this pod arrive; empty:
	// _INBOX_<role>, the only inbox its role's permissions allow.
	NATSInboxPrefix string `envconfig:"NATS_INBOX_PREFIX"`
	// PProf serves /debug/pprof on HTTP_ADDR when "on".
	PProf Switch `envconfig:"PPROF" default:"off"`
	// NATSConf is the embedded server's config file. Empty: nats.conf in the
	// working directory if there is one, else the same settings built in.
	NATSConf string `envconfig:"NATS_CONF"`
	// NATSStoreDir overrides the embedded server's JetStream store_dir.
	NATSStoreDir string `envconfig:"NATS_STORE_DIR"`

	// WorkerPoolSize is how many calls each endpoint runs at once.
	WorkerPoolSize int `envconfig:"WORKER_POOL_SIZE" default:"10"`
	// Functions this process hosts: service names ("orders") or endpoint
	// subjects ("orders.create"), comma separated. Empty: all.
	Functions []string `envconfig:"FUNCTIONS"`
	// HTTPAddr serves /healthz, /readyz, /metrics and /debug/pprof; "off"
	// disables it.
	HTTPAddr string `envconfig:"HTTP_ADDR" default:":8080"`

	// StreamReplicas of every stream and bucket.
	StreamReplicas int `envconfig:"STREAM_REPLICAS" default:"1"`
	// Partitions splits the order events and the stock ledgers into that
	// many streams and buckets. Fixed when the store is provisioned: a
	// process with another count refuses to start.
	Partitions int `envconfig:"PARTITIONS" default:"4"`
	// DuplicateWindow of the event stream; must outlast the retry horizon.
	DuplicateWindow time.Duration `envconfig:"EVENT_DUPLICATE_WINDOW" default:"1h"`

	// RequestTimeout bounds one call of a function.
	RequestTimeout time.Duration `envconfig:"REQUEST_TIMEOUT" default:"5s"`
	// MaxRequestBytes bounds a request body.
	MaxRequestBytes int `envconfig:"MAX_REQUEST_BYTES" default:"65536"`
	// DrainTimeout bounds the graceful drain on SIGTERM.
	DrainTimeout time.Duration `envconfig:"DRAIN_TIMEOUT" default:"8s"`

	// LogLevel: debug, info, warn or error.
	LogLevel slog.Level `envconfig:"LOG_LEVEL" default:"info"`

	// PaymentMaxOrderMinor: the gateway declines orders above it.
	PaymentMaxOrderMinor int64 `envconfig:"PAYMENT_MAX_ORDER_MINOR" default:"1000000"`
	// PaymentFailureRate: probability 0..1 of a transient gateway failure.
	PaymentFailureRate float64 `envconfig:"PAYMENT_FAILURE_RATE" default:"0"`
	// PaymentLatency: mean duration of a gateway call.
	PaymentLatency time.Duration `envconfig:"PAYMENT_LATENCY" default:"0s"`

	// RetryPolicy of functions that declare none, as
	// "attempts=5,initial=200ms,multiplier=2,max=10s,jitter=0.2".
	RetryPolicy string `envconfig:"RETRY_POLICY" default:"attempts=5,initial=200ms,multiplier=2,max=10s,jitter=0.2"`
	// RetryPolicies override one function's policy, whatever it declares:
	// from RETRY_POLICY_<SERVICE>_<FUNCTION> (RETRY_POLICY_PAYMENTS_CHARGE),
	// keyed by subject ("payments.charge"). Fields left out come from
	// RETRY_POLICY.
	RetryPolicies map[string]string `ignored:"true"`
	// AckWait: how long JetStream waits for a triggered message's ack
	// before redelivering it to another pod.
	AckWait time.Duration `envconfig:"ACK_WAIT" default:"30s"`
	// OutageHorizon: how long a step that finds JetStream unavailable (an
	// election, a restarting server) is retried in place without spending
	// its attempts. Each attempt may wait this long, so attempts times it,
	// plus the retry backoff, must stay inside EVENT_DUPLICATE_WINDOW.
	OutageHorizon time.Duration `envconfig:"OUTAGE_HORIZON" default:"2m"`
	// OrderRetention is how long an order's events and records are kept
	// (its dead letters too, once it has ended); 0 keeps them for ever.
	OrderRetention time.Duration `envconfig:"ORDER_RETENTION" default:"720h"`
	// MaxPendingOrders refuses creates (503) while this many orders are
	// created and not yet ended; 0: no limit.
	MaxPendingOrders int `envconfig:"MAX_PENDING_ORDERS" default:"0"`
	// CreateMissing lets a serving pod create the streams, buckets and
	// consumers it needs when they do not exist (it never changes existing
	// ones; `provision` does). false: only look them up, for pods whose
	// identity may not manage JetStream.
	CreateMissing bool `envconfig:"CREATE_MISSING" default:"true"`
}

// checkURLs checks a NATS_URL list: each entry a nats, tls, ws or wss URL
// with a host (a scheme-less host:port is taken as nats://, as nats.go does).
func checkURLs(list string) error {
	if list == "" {
		return nil
	}
	for _, raw := range strings.Split(list, ",") {
		raw = strings.TrimSpace(raw)
		if !strings.Contains(raw, "://") {
			raw = "nats://" + raw
		}
		u, err := url.Parse(raw)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // the URL it quotes would show the password
			}
			return fmt.Errorf("%q is not a URL: %v", redactURL(raw), err)
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("%q: scheme %q, want nats, tls, ws or wss", redactURL(raw), u.Scheme)
		}
		if u.Hostname() == "" {
			return fmt.Errorf("%q has no host", redactURL(raw))
		}
		if p := u.Port(); p != "" {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				return fmt.Errorf("%q: port %q is not 1..65535", redactURL(raw), p)
			}
		}
	}
	return nil
}

// redactURL hides credentials in a URL that may not even parse.
func redactURL(s string) string {
	if at := strings.LastIndex(s, "@"); at >= 0 {
		if i := strings.Index(s, "://"); i >= 0 && i < at {
			return s[:i+3] + "xxxxx" + s[at:]
		}
		return "xxxxx" + s[at:]
	}
	return s
}

// span is the longest a message can be retried under p: its backoff, plus
// an outage ridden out at every attempt.
func (c Config) span(p retry.Policy) time.Duration {
	if p.MaxAttempts == 0 {
		return 0 // retried forever: compensation, which must happen
	}
	return p.Horizon() + time.Duration(p.MaxAttempts)*c.OutageHorizon
}

// Switch is an on/off setting: on, off, true, false, 1 or 0.
type Switch bool

// Decode implements envconfig.Decoder.
func (s *Switch) Decode(v string) error {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "on", "true", "1", "yes":
		*s = true
	case "off", "false", "0", "no", "":
		*s = false
	default:
		return fmt.Errorf("want on or off, got %q", v)
	}
	return nil
}

// Default is the policy RETRY_POLICY describes.
func (c Config) Default() retry.Policy {
	p, _ := retry.Parse(c.RetryPolicy, retry.Default)
	return p
}

// Policies returns the per-function overrides, keyed by subject.
func (c Config) Policies() map[string]retry.Policy {
	out := map[string]retry.Policy{}
	for fn, s := range c.RetryPolicies {
		p, err := retry.Parse(s, c.Default())
		if err == nil {
			out[fn] = p
		}
	}
	return out
}

const retryPrefix = "RETRY_POLICY_"

// RetryVar is the variable that overrides fn's ("payments.charge") policy.
func RetryVar(fn string) string {
	return retryPrefix + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(fn))
}

func retryOverrides(environ []string) map[string]string {
	out := map[string]string{}
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		if rest, ok := strings.CutPrefix(k, retryPrefix); ok && rest != "" {
			// RETRY_POLICY_PAYMENTS_CHARGE -> payments.charge
			svc, fn, _ := strings.Cut(strings.ToLower(rest), "_")
			out[svc+"."+fn] = v
		}
	}
	return out
}

// Load reads the environment.
func Load() (Config, error) {
	var c Config
	c.RetryPolicies = retryOverrides(os.Environ())
	if err := envconfig.Process("", &c); err != nil {
		var pe *envconfig.ParseError
		if errors.As(err, &pe) {
			return c, fmt.Errorf("%w: %s=%q: cannot parse as %s", ErrInvalid, pe.KeyName, pe.Value, pe.TypeName)
		}
		return c, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return c, c.Validate()
}

// Validate checks ranges that parsing alone cannot.
func (c Config) Validate() error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalid, name, fmt.Sprintf(format, args...)))
	}
	if c.WorkerPoolSize < 1 || c.WorkerPoolSize > 10000 {
		bad("WORKER_POOL_SIZE", "must be 1..10000, got %d", c.WorkerPoolSize)
	}
	if err := partition.Check(c.Partitions); err != nil {
		bad("PARTITIONS", "%v", err)
	}
	if c.StreamReplicas < 1 || c.StreamReplicas > 5 {
		bad("STREAM_REPLICAS", "must be 1..5, got %d", c.StreamReplicas)
	}
	if c.DuplicateWindow < time.Second {
		bad("EVENT_DUPLICATE_WINDOW", "must be at least 1s, got %s", c.DuplicateWindow)
	}
	if c.RequestTimeout <= 0 {
		bad("REQUEST_TIMEOUT", "must be positive, got %s", c.RequestTimeout)
	}
	if c.MaxRequestBytes < 1 {
		bad("MAX_REQUEST_BYTES", "must be positive, got %d", c.MaxRequestBytes)
	}
	if c.DrainTimeout <= 0 {
		bad("DRAIN_TIMEOUT", "must be positive, got %s", c.DrainTimeout)
	}
	if (c.NATSCert == "") != (c.NATSKey == "") {
		bad("NATS_CERT", "NATS_CERT and NATS_KEY go together (a client certificate and its key)")
	}
	if c.NATSCreds != "" && (c.NATSNKey != "" || c.NATSUser != "") {
		bad("NATS_CREDS", "choose one of NATS_CREDS, NATS_NKEY and NATS_USER")
	}
	if c.NATSNKey != "" && c.NATSUser != "" {
		bad("NATS_NKEY", "choose one of NATS_NKEY and NATS_USER")
	}
	if (c.NATSUser == "") != (c.NATSPassword == "") {
		bad("NATS_PASSWORD", "NATS_USER and NATS_PASSWORD go together")
	}
	for name, file := range map[string]string{"NATS_CREDS": c.NATSCreds, "NATS_NKEY": c.NATSNKey, "NATS_CA": c.NATSCA, "NATS_CERT": c.NATSCert, "NATS_KEY": c.NATSKey} {
		if file == "" {
			continue
		}
		if _, err := os.Stat(file); err != nil {
			bad(name, "%v", err)
		}
	}
	if err := checkURLs(c.NATSURL); err != nil {
		bad("NATS_URL", "%v", err)
	}
	if c.HTTPAddr != "off" {
		if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			bad("HTTP_ADDR", "%q is not host:port (or \"off\")", c.HTTPAddr)
		}
	}
	if c.PaymentMaxOrderMinor < 1 {
		bad("PAYMENT_MAX_ORDER_MINOR", "must be at least 1, got %d", c.PaymentMaxOrderMinor)
	}
	if math.IsNaN(c.PaymentFailureRate) || c.PaymentFailureRate < 0 || c.PaymentFailureRate > 1 {
		bad("PAYMENT_FAILURE_RATE", "must be a probability 0..1, got %g", c.PaymentFailureRate)
	}
	if c.PaymentLatency < 0 {
		bad("PAYMENT_LATENCY", "must not be negative, got %s", c.PaymentLatency)
	}
	if c.AckWait < time.Second || c.AckWait <= c.RequestTimeout {
		bad("ACK_WAIT", "must be at least 1s and above REQUEST_TIMEOUT (%s), got %s", c.RequestTimeout, c.AckWait)
	}
	def, err := retry.Parse(c.RetryPolicy, retry.Default)
	if err != nil {
		bad("RETRY_POLICY", "%v", err)
	}
	if c.OrderRetention < 0 {
		bad("ORDER_RETENTION", "must not be negative (0: for ever), got %s", c.OrderRetention)
	}
	if c.MaxPendingOrders < 0 {
		bad("MAX_PENDING_ORDERS", "must not be negative (0: no limit), got %d", c.MaxPendingOrders)
	}
	if c.OutageHorizon < 0 {
		bad("OUTAGE_HORIZON", "must not be negative, got %s", c.OutageHorizon)
	}
	for fn, s := range c.RetryPolicies {
		p, err := retry.Parse(s, def)
		if err != nil {
			bad(RetryVar(fn), "%v", err)
			continue
		}
		if h := c.span(p); h >= c.DuplicateWindow {
			bad(RetryVar(fn), "retries span %s with OUTAGE_HORIZON %s per attempt, beyond EVENT_DUPLICATE_WINDOW %s: a late retry could publish an event twice", h, c.OutageHorizon, c.DuplicateWindow)
		}
	}
	if h := c.span(def); err == nil && h >= c.DuplicateWindow {
		bad("RETRY_POLICY", "retries span %s with OUTAGE_HORIZON %s per attempt, beyond EVENT_DUPLICATE_WINDOW %s: a late retry could publish an event twice", h, c.OutageHorizon, c.DuplicateWindow)
	}
	return errors.Join(errs...)
}
