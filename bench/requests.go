package main

import (
	"context"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
)

// RequestResult is the request-path measurement (--requests).
type RequestResult struct {
	Requests int     `json:"requests"`
	Clients  int     `json:"clients"`
	PerS     float64 `json:"requests_per_s"`
	P50Ms    float64 `json:"p50_ms"`
	P99Ms    float64 `json:"p99_ms"`
}

// runRequests sends inventory.get from o.clients clients, each on its own
// connection and waiting for each reply, as `nats bench service request`
// does, so the two compare.
func runRequests(ctx context.Context, o options) (RequestResult, error) {
	setup, err := nats.Connect(o.server)
	if err != nil {
		return RequestResult{}, err
	}
	defer setup.Close()
	if err := request(ctx, setup, "inventory.restock", &ordersv1.RestockRequest{Sku: "BENCH-GET", Quantity: 1}, &ordersv1.RestockResponse{}, nil); err != nil {
		return RequestResult{}, err
	}
	data, _ := proto.Marshal(&ordersv1.GetStockRequest{Sku: "BENCH-GET"})
	per := o.requests / o.clients
	hist := hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, o.clients)
	conns := make([]*nats.Conn, o.clients)
	for i := range conns {
		if conns[i], err = nats.Connect(o.server); err != nil {
			return RequestResult{}, err
		}
		defer conns[i].Close()
	}
	start := time.Now()
	for _, nc := range conns {
		wg.Go(func() {
			local := hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)
			for range per {
				t := time.Now()
				m, err := nc.Request("inventory.get", data, 5*time.Second)
				if err == nil {
					err = serviceError("inventory.get", m)
				}
				if err != nil {
					errs <- err
					return
				}
				_ = local.RecordValue(int64(time.Since(t) / time.Microsecond))
			}
			mu.Lock()
			hist.Merge(local)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return RequestResult{}, err
	}
	n := per * o.clients
	return RequestResult{
		Requests: n,
		Clients:  o.clients,
		PerS:     float64(n) / elapsed.Seconds(),
		P50Ms:    float64(hist.ValueAtQuantile(50)) / 1000,
		P99Ms:    float64(hist.ValueAtQuantile(99)) / 1000,
	}, nil
}
