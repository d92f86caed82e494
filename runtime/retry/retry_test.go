package retry_test

import (
	"errors"
	"testing"
	"time"

	"github.com/orderflow/orderflow/runtime/retry"
)

func TestBackoff(t *testing.T) {
	p := retry.Policy{MaxAttempts: 5, Initial: 100 * time.Millisecond, Multiplier: 2, Max: 500 * time.Millisecond}
	want := []time.Duration{100, 200, 400, 500, 500}
	for i, w := range want {
		if got := p.Backoff(i + 1); got != w*time.Millisecond {
			t.Errorf("Backoff(%d) = %v, want %v", i+1, got, w*time.Millisecond)
		}
	}
	p.Jitter = 0.5
	for range 100 {
		if d := p.Backoff(1); d < 50*time.Millisecond || d > 150*time.Millisecond {
			t.Fatalf("jittered backoff %v outside ±50%% of 100ms", d)
		}
	}
}

func TestExhausted(t *testing.T) {
	p := retry.Policy{MaxAttempts: 3}
	for attempt, want := range map[int]bool{1: false, 2: false, 3: true, 4: true} {
		if got := p.Exhausted(attempt); got != want {
			t.Errorf("Exhausted(%d) = %v, want %v", attempt, got, want)
		}
	}
	if p.Forever().Exhausted(1000) {
		t.Error("Forever gave up")
	}
}

func TestParse(t *testing.T) {
	got, err := retry.Parse("attempts=8, initial=50ms,max=2s", retry.Default)
	if err != nil {
		t.Fatal(err)
	}
	want := retry.Default
	want.MaxAttempts, want.Initial, want.Max = 8, 50*time.Millisecond, 2*time.Second
	if got != want {
		t.Errorf("Parse = %+v, want %+v", got, want)
	}
	if again, err := retry.Parse(got.String(), retry.Policy{}); err != nil || again != got {
		t.Errorf("Parse(String()) = %+v, %v", again, err)
	}
	for _, bad := range []string{"attempts=-1", "initial=0s", "multiplier=0.5", "max=1ms", "jitter=2", "colour=red", "attempts", "initial=soon"} {
		if _, err := retry.Parse(bad, retry.Default); !errors.Is(err, retry.ErrInvalid) {
			t.Errorf("Parse(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestHorizon(t *testing.T) {
	p := retry.Policy{MaxAttempts: 4, Initial: time.Second, Multiplier: 2, Max: time.Minute}
	if got, want := p.Horizon(), 7*time.Second; got != want {
		t.Errorf("Horizon = %v, want %v", got, want)
	}
	if p.Forever().Horizon() != 0 {
		t.Error("a policy that retries forever has a horizon")
	}
}
