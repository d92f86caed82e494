// Package retry is the retry policy of a function: how many attempts, and
// how long to wait before each, with exponential backoff and jitter.
package retry

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// ErrInvalid marks a policy that cannot work.
var ErrInvalid = errors.New("invalid retry policy")

// Policy says how a failing call is retried.
type Policy struct {
	// MaxAttempts bounds the attempts, the first included; 0 retries forever.
	MaxAttempts int
	// Initial is the wait before the second attempt.
	Initial time.Duration
	// Multiplier grows the wait after each attempt.
	Multiplier float64
	// Max caps the wait.
	Max time.Duration
	// Jitter spreads each wait by ±Jitter (0..1) of itself, so pods that
	// failed together do not retry together.
	Jitter float64
}

// Default is the policy of a function that declares none.
var Default = Policy{MaxAttempts: 5, Initial: 200 * time.Millisecond, Multiplier: 2, Max: 10 * time.Second, Jitter: 0.2}

// Forever keeps the backoff of p but never gives up: for compensation and
// bookkeeping steps, which must eventually happen.
func (p Policy) Forever() Policy { p.MaxAttempts = 0; return p }

// Exhausted reports whether attempt (1-based) was the last one allowed.
func (p Policy) Exhausted(attempt int) bool {
	return p.MaxAttempts > 0 && attempt >= p.MaxAttempts
}

// Backoff is the wait after attempt (1-based) failed.
func (p Policy) Backoff(attempt int) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := float64(p.Initial) * math.Pow(p.Multiplier, float64(attempt-1))
	if max := float64(p.Max); p.Max > 0 && d > max {
		d = max
	}
	if p.Jitter > 0 {
		d += d * p.Jitter * (2*rand.Float64() - 1)
	}
	return time.Duration(d)
}

// Horizon is the longest a message can keep being retried: the sum of the
// waits, or 0 when the policy retries forever.
func (p Policy) Horizon() time.Duration {
	if p.MaxAttempts == 0 {
		return 0
	}
	var total time.Duration
	for a := 1; a < p.MaxAttempts; a++ {
		q := p
		q.Jitter = 0
		total += time.Duration(float64(q.Backoff(a)) * (1 + p.Jitter))
	}
	return total
}

// Validate checks the policy.
func (p Policy) Validate() error {
	switch {
	case math.IsNaN(p.Multiplier) || math.IsInf(p.Multiplier, 0):
		return fmt.Errorf("%w: multiplier must be a number, got %g", ErrInvalid, p.Multiplier)
	case math.IsNaN(p.Jitter) || math.IsInf(p.Jitter, 0):
		return fmt.Errorf("%w: jitter must be a number, got %g", ErrInvalid, p.Jitter)
	case p.MaxAttempts < 0:
		return fmt.Errorf("%w: attempts must not be negative, got %d", ErrInvalid, p.MaxAttempts)
	case p.Initial <= 0:
		return fmt.Errorf("%w: initial interval must be positive, got %s", ErrInvalid, p.Initial)
	case p.Multiplier < 1:
		return fmt.Errorf("%w: multiplier must be at least 1, got %g", ErrInvalid, p.Multiplier)
	case p.Max < p.Initial:
		return fmt.Errorf("%w: max interval %s is below the initial %s", ErrInvalid, p.Max, p.Initial)
	case p.Jitter < 0 || p.Jitter > 1:
		return fmt.Errorf("%w: jitter must be 0..1, got %g", ErrInvalid, p.Jitter)
	}
	return nil
}

// String renders the policy in the form Parse reads.
func (p Policy) String() string {
	return fmt.Sprintf("attempts=%d,initial=%s,multiplier=%g,max=%s,jitter=%g", p.MaxAttempts, p.Initial, p.Multiplier, p.Max, p.Jitter)
}

// Parse reads "attempts=5,initial=200ms,multiplier=2,max=10s,jitter=0.2"
// over base: fields left out keep base's values.
func Parse(s string, base Policy) (Policy, error) {
	p := base
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return p, fmt.Errorf("%w: %q is not key=value", ErrInvalid, kv)
		}
		var err error
		switch k {
		case "attempts":
			p.MaxAttempts, err = strconv.Atoi(v)
		case "initial":
			p.Initial, err = time.ParseDuration(v)
		case "multiplier":
			p.Multiplier, err = strconv.ParseFloat(v, 64)
		case "max":
			p.Max, err = time.ParseDuration(v)
		case "jitter":
			p.Jitter, err = strconv.ParseFloat(v, 64)
		default:
			return p, fmt.Errorf("%w: unknown key %q (attempts, initial, multiplier, max, jitter)", ErrInvalid, k)
		}
		if err != nil {
			return p, fmt.Errorf("%w: %s: %v", ErrInvalid, k, err)
		}
	}
	return p, p.Validate()
}
