package main

import (
	"io"
	"testing"
	"time"
)

// A terminal event can arrive before the create's reply: it must still be
// matched to its order, once.
func TestTrackerMatchesEarlyAndLateEnds(t *testing.T) {
	tr := newTracker()
	t0 := time.Now()
	tr.end("o-1", "confirmed", t0.Add(5*time.Millisecond)) // before the reply
	tr.placed(&order{id: "o-1", sent: t0})
	tr.placed(&order{id: "o-2", sent: t0})
	tr.end("o-2", "cancelled", t0.Add(10*time.Millisecond))
	tr.end("o-2", "cancelled", t0.Add(11*time.Millisecond)) // a duplicate delivery
	if tr.count() != 2 || tr.outcomes["confirmed"] != 1 || tr.outcomes["cancelled"] != 1 {
		t.Errorf("count %d, outcomes %v", tr.count(), tr.outcomes)
	}
	if got := tr.e2e.Max(); got < 9000 || got > 11000 {
		t.Errorf("max end-to-end %dµs, want about 10ms", got)
	}
	if orderOf("ORDER.17.o-9.stock_sold") != "o-9" || orderOf("nope") != "" {
		t.Error("orderOf")
	}
}

func TestFlags(t *testing.T) {
	o, err := parseFlags([]string{"--orders", "10", "--clients", "2", "--json", "--progress", "auto"}, io.Discard)
	if err != nil || o.orders != 10 || o.clients != 2 || !o.jsonOut || o.progress == "bar" {
		t.Errorf("parseFlags = %+v, %v", o, err)
	}
	for _, bad := range [][]string{{"--orders", "-1"}, {"--clients", "0"}, {"--lines", "0"}, {"--cancel-every", "-1"}, {"--rate", "-1"}, {"--progress", "fancy"}} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("parseFlags(%v) accepted", bad)
		}
	}
}
