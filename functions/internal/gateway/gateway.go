// Package gateway simulates a payment service provider, the one external
// system orderflow talks to. It behaves like a real one where it matters:
// calls take time, fail transiently (sometimes after the money moved, as when
// a reply is lost), take an idempotency key so a retry never captures twice,
// decline above a per-order limit, and keep their own ledger, separate from
// orderflow's records, which tests read to count captures and refunds.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/state"
)

// Bucket is the KV bucket of the gateway's ledger.
const Bucket = "gateway"

// ErrUnavailable is a transient gateway failure; the call may or may not
// have taken effect, and a retry with the same key is safe.
var ErrUnavailable = errors.New("payment gateway unavailable")

// Config shapes the simulation.
type Config struct {
	// MaxOrderMinor declines any capture above it (default 1000000).
	MaxOrderMinor int64
	// FailureRate is the probability, 0..1, that a call fails transiently.
	FailureRate float64
	// Latency is the mean duration of a call, spread ±50%.
	Latency time.Duration
	// Seed makes the failure sequence reproducible; 0 picks a random one.
	Seed uint64
}

// Gateway is the simulated provider.
type Gateway struct {
	ledger state.Store
	cfg    Config

	mu  sync.Mutex
	rnd *rand.Rand
}

// New returns a gateway keeping its ledger in ledger.
func New(ledger state.Store, cfg Config) *Gateway {
	if cfg.MaxOrderMinor <= 0 {
		cfg.MaxOrderMinor = 1_000_000
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	return &Gateway{ledger: ledger, cfg: cfg, rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// Result is the outcome of a capture the gateway processed.
type Result struct {
	Captured bool
	Reason   string // why it was declined
}

// Capture charges amount once per key. A repeat returns the first outcome;
// a repeat with another amount is a conflict, as with a real provider.
func (g *Gateway) Capture(ctx context.Context, key string, amount *ordersv1.Money) (Result, error) {
	failBefore, failAfter, err := g.call(ctx)
	if err != nil {
		return Result{}, err
	}
	if failBefore {
		return Result{}, fmt.Errorf("capture %s: %w", key, ErrUnavailable)
	}
	e, err := state.Modify(ctx, g.ledger, key, func(e *ordersv1.GatewayEntry, exists bool) error {
		switch {
		case exists && e.GetVoided() && e.GetCaptures() == 0:
			return state.ErrNoChange
		case exists && !proto.Equal(e.GetAmount(), amount):
			return fmt.Errorf("%w: idempotency key %s was used for %v, now %v", function.ErrConflict, key, e.GetAmount(), amount)
		case exists:
			return state.ErrNoChange // a repeat: the first outcome stands
		}
		e.IdempotencyKey, e.Amount = key, amount
		if amount.GetAmountMinor() > g.cfg.MaxOrderMinor {
			e.Declined, e.DeclineReason = true, fmt.Sprintf("amount %d exceeds the per-order limit %d", amount.GetAmountMinor(), g.cfg.MaxOrderMinor)
		} else {
			e.Captures = 1
		}
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	if failAfter {
		return Result{}, fmt.Errorf("capture %s: reply lost: %w", key, ErrUnavailable)
	}
	if e.GetVoided() && e.GetCaptures() == 0 {
		return Result{Reason: "voided: the charge was cancelled before capture"}, nil
	}
	return Result{Captured: e.GetCaptures() > 0, Reason: e.GetDeclineReason()}, nil
}

// Refund returns a capture made under key, once. Refunding a key with no
// capture voids it: a capture that arrives later is declined, so a refund and
// a capture racing each other never end with money kept.
// It returns the key's ledger entry after the refund.
func (g *Gateway) Refund(ctx context.Context, key string) (*ordersv1.GatewayEntry, error) {
	failBefore, failAfter, err := g.call(ctx)
	if err != nil {
		return nil, err
	}
	if failBefore {
		return nil, fmt.Errorf("refund %s: %w", key, ErrUnavailable)
	}
	e, err := state.Modify(ctx, g.ledger, key, func(e *ordersv1.GatewayEntry, _ bool) error {
		e.IdempotencyKey = key
		switch {
		case e.Captures > 0 && e.Refunds == 0:
			e.Refunds = 1
		case e.Captures == 0:
			e.Voided = true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if failAfter {
		return nil, fmt.Errorf("refund %s: reply lost: %w", key, ErrUnavailable)
	}
	return e, nil
}

// Entry returns the ledger entry for key; an unknown key is an empty entry.
func (g *Gateway) Entry(ctx context.Context, key string) (*ordersv1.GatewayEntry, error) {
	e, _, err := state.Get[ordersv1.GatewayEntry](ctx, g.ledger, key)
	if errors.Is(err, state.ErrNotFound) {
		return &ordersv1.GatewayEntry{IdempotencyKey: key}, nil
	}
	return e, err
}

// call waits out the simulated latency and draws whether this call fails
// before or after it takes effect.
func (g *Gateway) call(ctx context.Context) (failBefore, failAfter bool, err error) {
	g.mu.Lock()
	var d time.Duration
	if g.cfg.Latency > 0 {
		d = g.cfg.Latency/2 + time.Duration(g.rnd.Int64N(int64(g.cfg.Latency)+1))
	}
	fail := g.rnd.Float64() < g.cfg.FailureRate
	after := g.rnd.IntN(2) == 0
	g.mu.Unlock()
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return false, false, ctx.Err()
		}
	}
	return fail && !after, fail && after, nil
}
