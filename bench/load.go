package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/jedib0t/go-pretty/v6/progress"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"google.golang.org/protobuf/proto"

	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
)

// order is one placed order's timeline.
type order struct {
	id      string
	created time.Time // reply received
	sent    time.Time
}

// tracker matches terminal events to placed orders.
type tracker struct {
	mu        sync.Mutex
	byID      map[string]*order
	early     map[string]ended // terminal events seen before their create reply
	e2e       *hdrhistogram.Histogram
	outcomes  map[string]int
	done      int
	lastEnded time.Time
}

type ended struct {
	status string
	at     time.Time
}

func newTracker() *tracker {
	return &tracker{
		byID:     map[string]*order{},
		early:    map[string]ended{},
		e2e:      hdrhistogram.New(1, int64(10*time.Minute/time.Microsecond), 3),
		outcomes: map[string]int{},
	}
}

// orderOf is the order id of an event subject, ORDER.<slot>.<id>.<event>.
func orderOf(subject string) string {
	parts := strings.Split(subject, ".")
	if len(parts) != 4 {
		return ""
	}
	return parts[2]
}

// end records that an order ended.
func (t *tracker) end(id, status string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	o, ok := t.byID[id]
	if !ok {
		t.early[id] = ended{status, at}
		return
	}
	t.finish(o, status, at)
}

func (t *tracker) finish(o *order, status string, at time.Time) {
	delete(t.byID, o.id)
	t.outcomes[status]++
	t.done++
	_ = t.e2e.RecordValue(int64(at.Sub(o.sent) / time.Microsecond))
	if at.After(t.lastEnded) {
		t.lastEnded = at
	}
}

func (t *tracker) placed(o *order) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.early[o.id]; ok {
		delete(t.early, o.id)
		t.finish(o, e.status, e.at)
		return
	}
	t.byID[o.id] = o
}

func (t *tracker) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.done
}

func run(ctx context.Context, o options, log io.Writer) (Result, error) {
	stderrWriter = log
	nc, err := nats.Connect(o.server, nats.Name("orderflow-bench"), nats.MaxReconnects(-1))
	if err != nil {
		return Result{}, fmt.Errorf("connect %s: %w", o.server, err)
	}
	defer nc.Close()

	tr := newTracker()
	// The events that end an order: StockSold confirms it, StockRejected
	// rejects it, StockReleased cancels it.
	for ev, status := range map[string]string{"stock_sold": "confirmed", "stock_rejected": "rejected", "stock_released": "cancelled"} {
		sub, err := nc.Subscribe("ORDER.*.*."+ev, func(m *nats.Msg) { tr.end(orderOf(m.Subject), status, time.Now()) })
		if err != nil {
			return Result{}, err
		}
		defer sub.Unsubscribe()
		_ = sub.SetPendingLimits(-1, -1)
	}

	skus := make([]string, o.skus)
	perSKU := int32(math.Ceil(float64(o.orders*o.qty*o.lines)/float64(o.skus))) + 1
	for i := range skus {
		skus[i] = fmt.Sprintf("%s-%d", o.prefix, i)
		if err := restock(ctx, nc, skus[i], perSKU, o.runID); err != nil {
			return Result{}, fmt.Errorf("restock: %w", err)
		}
	}
	if err := nc.Flush(); err != nil {
		return Result{}, err
	}
	if o.orders == 0 {
		return Result{}, nil // stock only
	}

	created := hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)
	var createdMu sync.Mutex
	var failed, placed atomic.Int64

	prog := newProgress(o)
	work := make(chan int, o.clients)
	go func() {
		defer close(work)
		var tick <-chan time.Time
		if o.rate > 0 {
			t := time.NewTicker(time.Duration(float64(time.Second) / o.rate))
			defer t.Stop()
			tick = t.C
		}
		var deadline <-chan time.Time
		if o.duration > 0 {
			deadline = time.After(o.duration)
		}
		for i := 0; i < o.orders; i++ {
			if tick != nil {
				select {
				case <-tick:
				case <-ctx.Done():
					return
				}
			}
			select {
			case work <- i:
			case <-deadline:
				return
			case <-ctx.Done():
				return
			}
		}
	}()

	start := time.Now()
	var wg sync.WaitGroup
	for range o.clients {
		wg.Go(func() {
			for i := range work {
				req := &ordersv1.CreateOrderRequest{
					CustomerId: fmt.Sprintf("bench-%d", i%1000),
					Currency:   "USD",
				}
				for l := range o.lines {
					sku := skus[(i+l)%len(skus)]
					if l == o.lines-1 && o.unknownLast {
						sku = o.prefix + "-NEVER-STOCKED"
					}
					if slices.ContainsFunc(req.Items, func(it *ordersv1.OrderItem) bool { return it.GetSku() == sku }) {
						break // fewer SKUs than lines
					}
					req.Items = append(req.Items, &ordersv1.OrderItem{Sku: sku, Quantity: int32(o.qty), UnitPriceMinor: 999})
				}
				hdr := nats.Header{"Idempotency-Key": []string{fmt.Sprintf("%s-%d", o.runID, i)}}
				resp := &ordersv1.CreateOrderResponse{}
				sent := time.Now()
				if err := request(ctx, nc, "orders.create", req, resp, hdr); err != nil {
					failed.Add(1)
					continue
				}
				now := time.Now()
				createdMu.Lock()
				_ = created.RecordValue(int64(now.Sub(sent) / time.Microsecond))
				createdMu.Unlock()
				placed.Add(1)
				tr.placed(&order{id: resp.GetOrderId(), sent: sent, created: now})
				prog.created(1)
				if o.cancelEvery > 0 && i%o.cancelEvery == 0 {
					_ = request(ctx, nc, "orders.cancel", &ordersv1.CancelOrderRequest{OrderId: resp.GetOrderId(), Reason: "bench"}, &ordersv1.CancelOrderResponse{}, nil)
				}
			}
		})
	}
	wg.Wait()
	placedAt := time.Now()

	// Wait for every placed order to end.
	deadline := time.Now().Add(o.timeout)
	for {
		done := tr.count()
		prog.ended(done)
		if done >= int(placed.Load()) || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	prog.stop()

	tr.mu.Lock()
	defer tr.mu.Unlock()
	end := tr.lastEnded
	if end.IsZero() {
		end = placedAt
	}
	elapsed := end.Sub(start).Seconds()
	msOf := func(h *hdrhistogram.Histogram, q float64) float64 { return float64(h.ValueAtQuantile(q)) / 1000 }
	return Result{
		Orders:        int(placed.Load()),
		Failed:        int(failed.Load()),
		Confirmed:     tr.outcomes["confirmed"],
		Rejected:      tr.outcomes["rejected"],
		Cancelled:     tr.outcomes["cancelled"],
		Unfinished:    int(placed.Load()) - tr.done,
		Clients:       o.clients,
		TargetRate:    o.rate,
		DurationS:     elapsed,
		CreatedPerS:   float64(placed.Load()) / placedAt.Sub(start).Seconds(),
		ConfirmedPerS: float64(tr.outcomes["confirmed"]) / elapsed,
		CreateP50Ms:   msOf(created, 50),
		CreateP90Ms:   msOf(created, 90),
		CreateP99Ms:   msOf(created, 99),
		CreateP999Ms:  msOf(created, 99.9),
		CreateMaxMs:   float64(created.Max()) / 1000,
		E2EP50Ms:      msOf(tr.e2e, 50),
		E2EP90Ms:      msOf(tr.e2e, 90),
		E2EP99Ms:      msOf(tr.e2e, 99),
		E2EP999Ms:     msOf(tr.e2e, 99.9),
		E2EMaxMs:      float64(tr.e2e.Max()) / 1000,
	}, nil
}

// request sends a protobuf request and decodes the reply; a micro error
// reply is an error.
// restock adds units of sku as a careful client does: with an
// Idempotency-Key, asked again while the answer is "not right now" (a
// 503, or no answer: a leader election), so it adds exactly once.
func restock(ctx context.Context, nc *nats.Conn, sku string, quantity int32, runID string) error {
	hdr := nats.Header{"Idempotency-Key": []string{runID + "-restock-" + sku}}
	deadline := time.Now().Add(time.Minute)
	for {
		err := request(ctx, nc, "inventory.restock", &ordersv1.RestockRequest{Sku: sku, Quantity: quantity}, &ordersv1.RestockResponse{}, hdr)
		transient := err != nil && (strings.Contains(err.Error(), ": 503 ") || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders))
		if !transient || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func request(ctx context.Context, nc *nats.Conn, subject string, req, resp proto.Message, hdr nats.Header) error {
	data, err := proto.Marshal(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m := &nats.Msg{Subject: subject, Data: data, Header: hdr}
	reply, err := nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		return err
	}
	if err := serviceError(subject, reply); err != nil {
		return err
	}
	return proto.Unmarshal(reply.Data, resp)
}

// serviceError is the micro error a reply carries, if any.
func serviceError(subject string, reply *nats.Msg) error {
	if code := reply.Header.Get(micro.ErrorCodeHeader); code != "" {
		return fmt.Errorf("%s: %s %s", subject, code, reply.Header.Get(micro.ErrorHeader))
	}
	return nil
}

// display shows progress: a bar on a terminal, a line every two seconds
// otherwise.
type display struct {
	mode             string
	pw               progress.Writer
	createdT, endedT *progress.Tracker
	n                atomic.Int64
	last             atomic.Int64 // unix nanos of the last progress line
	total            int
}

func newProgress(o options) *display {
	d := &display{mode: o.progress, total: o.orders}
	d.last.Store(time.Now().UnixNano())
	if d.mode == "bar" {
		d.pw = progress.NewWriter()
		d.pw.SetOutputWriter(stderrWriter)
		d.pw.SetUpdateFrequency(100 * time.Millisecond)
		d.pw.SetTrackerLength(30)
		d.pw.Style().Visibility.ETA = true
		d.pw.Style().Visibility.Speed = true
		d.createdT = &progress.Tracker{Message: "created", Total: int64(o.orders), Units: progress.UnitsDefault}
		d.endedT = &progress.Tracker{Message: "ended  ", Total: int64(o.orders), Units: progress.UnitsDefault}
		d.pw.AppendTrackers([]*progress.Tracker{d.createdT, d.endedT})
		go d.pw.Render()
	}
	return d
}

func (d *display) created(n int) {
	c := d.n.Add(int64(n))
	switch d.mode {
	case "bar":
		d.createdT.Increment(int64(n))
	case "lines":
		now, last := time.Now().UnixNano(), d.last.Load()
		if now-last > int64(2*time.Second) && d.last.CompareAndSwap(last, now) {
			fmt.Fprintf(stderrWriter, "%s created %d/%d\n", time.Now().Format("15:04:05"), c, d.total)
		}
	}
}

func (d *display) ended(done int) {
	if d.mode == "bar" {
		d.endedT.SetValue(int64(done))
	}
}

func (d *display) stop() {
	if d.mode == "bar" {
		d.createdT.MarkAsDone()
		d.endedT.MarkAsDone()
		time.Sleep(150 * time.Millisecond)
		d.pw.Stop()
	}
}
