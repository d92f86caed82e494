package payments_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/orderflow/orderflow/functions/internal/gateway"
	"github.com/orderflow/orderflow/functions/internal/payments"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/durable"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/runtimetest"
)

const (
	charged  = ordersv1.PaymentStatus_PAYMENT_STATUS_CHARGED
	declined = ordersv1.PaymentStatus_PAYMENT_STATUS_DECLINED
	refunded = ordersv1.PaymentStatus_PAYMENT_STATUS_REFUNDED
	voided   = ordersv1.PaymentStatus_PAYMENT_STATUS_VOIDED
)

type buckets struct{ payments, ledger *durable.Bucket }

func openBuckets(t *testing.T) buckets {
	t.Helper()
	js := runtimetest.JetStream(t, runtimetest.Connect(t, runtimetest.StartNATS(t)))
	open := func(name string) *durable.Bucket {
		b, err := durable.OpenBucket(context.Background(), js, name, durable.Config{})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return buckets{payments: open(payments.Bucket), ledger: open(gateway.Bucket)}
}

func setup(t *testing.T, cfg gateway.Config) (*payments.Payments, *gateway.Gateway) {
	t.Helper()
	b := openBuckets(t)
	gw := gateway.New(b.ledger, cfg)
	return payments.New(b.payments, gw), gw
}

func usd(n int64) *ordersv1.Money { return &ordersv1.Money{AmountMinor: n, Currency: "USD"} }

func TestChargeOnce(t *testing.T) {
	ctx := context.Background()
	p, _ := setup(t, gateway.Config{})
	for range 3 {
		rec, err := p.Charge(ctx, "o-1", "c-1", usd(3998))
		if err != nil || rec.Status != charged {
			t.Fatalf("Charge = %v, %v", rec, err)
		}
	}
	got, err := p.Get(ctx, "o-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != charged || got.Captures != 1 || got.Refunds != 0 || got.Attempts != 1 || got.AmountMinor != 3998 || got.Currency != "USD" {
		t.Errorf("Get = %v; want charged once, in one attempt", got)
	}
	if _, err := p.Charge(ctx, "o-1", "c-1", usd(1)); !errors.Is(err, function.ErrConflict) {
		t.Errorf("charging another amount = %v, want ErrConflict", err)
	}
}

func TestDeclineAboveLimit(t *testing.T) {
	ctx := context.Background()
	p, _ := setup(t, gateway.Config{MaxOrderMinor: 1000})
	rec, err := p.Charge(ctx, "o-1", "c-1", usd(1001))
	if err != nil || rec.Status != declined || rec.Reason == "" {
		t.Fatalf("Charge above the limit = %v, %v; want declined with a reason", rec, err)
	}
	got, _ := p.Get(ctx, "o-1")
	if got.Captures != 0 {
		t.Errorf("a declined charge was captured: %v", got)
	}
	if rec, err := p.Charge(ctx, "o-2", "c-1", usd(1000)); err != nil || rec.Status != charged {
		t.Errorf("Charge at the limit = %v, %v", rec, err)
	}
}

// With every call failing, charges report a transient error, and some of
// those failures happen after the gateway moved the money (a lost reply).
// Once the gateway recovers, the retry under the same key settles the order
// with exactly one capture, and every call was counted as an attempt.
func TestTransientFailuresThenRecovery(t *testing.T) {
	ctx := context.Background()
	b := openBuckets(t)
	failing := payments.New(b.payments, gateway.New(b.ledger, gateway.Config{FailureRate: 1, Seed: 7}))
	const failures = 6
	for range failures {
		if _, err := failing.Charge(ctx, "o-1", "c-1", usd(500)); !errors.Is(err, gateway.ErrUnavailable) {
			t.Fatalf("Charge through a failing gateway = %v, want ErrUnavailable", err)
		}
	}
	healthy := payments.New(b.payments, gateway.New(b.ledger, gateway.Config{}))
	rec, err := healthy.Charge(ctx, "o-1", "c-1", usd(500))
	if err != nil || rec.Status != charged {
		t.Fatalf("Charge after recovery = %v, %v", rec, err)
	}
	got, err := healthy.Get(ctx, "o-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Captures != 1 || got.Attempts != failures+1 {
		t.Errorf("Get = %v; want 1 capture in %d attempts", got, failures+1)
	}
}

func TestRefund(t *testing.T) {
	ctx := context.Background()
	p, _ := setup(t, gateway.Config{})
	if _, err := p.Charge(ctx, "o-1", "c-1", usd(100)); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		rec, ok, err := p.Refund(ctx, "o-1", "cancelled")
		if err != nil || rec.Status != refunded || !ok {
			t.Fatalf("Refund = %v, %v, %v", rec, ok, err)
		}
	}
	got, _ := p.Get(ctx, "o-1")
	if got.Captures != 1 || got.Refunds != 1 {
		t.Errorf("after two refunds: %v; want one capture, one refund", got)
	}
	// Refunding an order that was never charged refunds nothing and voids
	// it: the charge that comes late is declined, so nothing is kept.
	rec, ok, err := p.Refund(ctx, "o-2", "cancelled")
	if err != nil || ok || rec.Status != voided {
		t.Fatalf("Refund of an uncharged order = %v, %v, %v", rec, ok, err)
	}
	if rec, err := p.Charge(ctx, "o-2", "c-1", usd(100)); err != nil || rec.Status == charged {
		t.Errorf("Charge after a void = %v, %v; want no capture", rec, err)
	}
	if got, _ := p.Get(ctx, "o-2"); got.Captures != 0 {
		t.Errorf("voided order captured: %v", got)
	}
}

// A refund racing a charge of the same order: whichever wins at the gateway,
// the order keeps no money.
func TestRefundRacesCharge(t *testing.T) {
	ctx := context.Background()
	p, _ := setup(t, gateway.Config{Latency: 2 * time.Millisecond})
	for i := range 20 {
		id := fmt.Sprintf("o-%d", i)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = p.Charge(ctx, id, "c-1", usd(100))
		}()
		if _, _, err := p.Refund(ctx, id, "cancelled"); err != nil {
			t.Fatal(err)
		}
		<-done
		got, err := p.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got.Captures-got.Refunds != 0 {
			t.Errorf("%s: %d captures, %d refunds after a refund raced the charge", id, got.Captures, got.Refunds)
		}
	}
}

func TestGetUnknown(t *testing.T) {
	p, _ := setup(t, gateway.Config{})
	if _, err := p.Get(context.Background(), "nope"); !errors.Is(err, function.ErrNotFound) {
		t.Errorf("Get(unknown) = %v, want ErrNotFound", err)
	}
}
