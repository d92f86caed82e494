// Command bench is orderflow's load generator. It drives a running system
// at NATS_URL: restocks its SKUs, places orders with N concurrent clients (as
// fast as they go, or at a fixed rate), waits for every order to end, and
// reports throughput and latency percentiles from HDR histograms.
//
//	go run ./bench --orders 5000 --clients 16
//	go run ./bench --rate 500 --duration 30s --json
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"golang.org/x/term"
)

// options are the flags.
type options struct {
	server   string
	orders   int
	duration time.Duration
	clients  int
	rate     float64
	skus     int
	qty      int
	// prefix names the SKUs, <prefix>-<n>; lines is the lines per order,
	// the last one of a SKU never stocked with unknownLast; every
	// cancelEvery-th order is cancelled right after it is placed.
	prefix      string
	lines       int
	unknownLast bool
	cancelEvery int
	timeout     time.Duration
	jsonOut     bool
	progress    string
	runID       string
	// requests, when set, measures request/reply on inventory.get instead
	// of placing orders: that many requests.
	requests int
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := options{}
	def := os.Getenv("NATS_URL")
	if def == "" {
		def = "nats://127.0.0.1:4222"
	}
	fs.StringVar(&o.server, "server", def, "NATS server URL: $NATS_URL when set")
	fs.IntVar(&o.orders, "orders", 2000, "orders to place (with --duration: at most); 0 only stocks the SKUs")
	fs.DurationVar(&o.duration, "duration", 0, "place orders for this long instead of a fixed count")
	fs.IntVar(&o.clients, "clients", 8, "concurrent clients placing orders")
	fs.Float64Var(&o.rate, "rate", 0, "orders per second across all clients; 0 is as fast as they go")
	fs.IntVar(&o.skus, "skus", 16, "SKUs to spread the orders over")
	fs.IntVar(&o.qty, "qty", 1, "units per order line")
	fs.StringVar(&o.prefix, "sku-prefix", "BENCH", "SKU names are <prefix>-<n>")
	fs.IntVar(&o.lines, "lines", 1, "lines per order, each of another SKU")
	fs.BoolVar(&o.unknownLast, "unknown-last", false, "make each order's last line a SKU never stocked, so every order is rejected")
	fs.IntVar(&o.cancelEvery, "cancel-every", 0, "cancel every n-th order right after it is placed (0: none)")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "how long to wait for the last order to end")
	fs.BoolVar(&o.jsonOut, "json", false, "print one JSON object with the results, nothing else")
	fs.StringVar(&o.progress, "progress", "auto", "progress display: auto (a bar on a terminal), bar, lines or off")
	fs.StringVar(&o.runID, "run", "", "run id, part of each Idempotency-Key (default: a timestamp)")
	fs.IntVar(&o.requests, "requests", 0, "instead of orders, send this many inventory.get requests (request path only)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case o.orders < 0:
		return o, errors.New("--orders must not be negative")
	case o.clients < 1:
		return o, errors.New("--clients must be positive")
	case o.rate < 0:
		return o, errors.New("--rate must not be negative")
	case o.skus < 1 || o.qty < 1 || o.lines < 1:
		return o, errors.New("--skus, --qty and --lines must be positive")
	case o.cancelEvery < 0:
		return o, errors.New("--cancel-every must not be negative")
	}
	switch o.progress {
	case "auto":
		o.progress = "lines"
		if term.IsTerminal(int(os.Stderr.Fd())) {
			o.progress = "bar"
		}
	case "bar", "lines", "off":
	default:
		return o, fmt.Errorf("--progress %q: want auto, bar, lines or off", o.progress)
	}
	if o.jsonOut && o.progress == "bar" {
		o.progress = "off"
	}
	if o.runID == "" {
		o.runID = time.Now().UTC().Format("20060102T150405.000")
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if o.requests > 0 {
		r, err := runRequests(ctx, o)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		if o.jsonOut {
			_ = json.NewEncoder(os.Stdout).Encode(r)
		} else {
			fmt.Printf("inventory.get  %d requests by %d clients: %.0f req/s, p50 %s p99 %s\n", r.Requests, r.Clients, r.PerS, ms(r.P50Ms), ms(r.P99Ms))
		}
		return
	}
	res, err := run(ctx, o, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if o.jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(res)
		return
	}
	res.print(os.Stdout)
}

// Result is what a run measured; --json prints it.
type Result struct {
	Orders        int     `json:"orders"`
	Failed        int     `json:"failed"`
	Confirmed     int     `json:"confirmed"`
	Rejected      int     `json:"rejected"`
	Cancelled     int     `json:"cancelled"`
	Unfinished    int     `json:"unfinished"`
	Clients       int     `json:"clients"`
	TargetRate    float64 `json:"target_rate"`
	DurationS     float64 `json:"duration_s"`
	CreatedPerS   float64 `json:"created_per_s"`
	ConfirmedPerS float64 `json:"confirmed_per_s"`
	CreateP50Ms   float64 `json:"create_p50_ms"`
	CreateP90Ms   float64 `json:"create_p90_ms"`
	CreateP99Ms   float64 `json:"create_p99_ms"`
	CreateP999Ms  float64 `json:"create_p999_ms"`
	CreateMaxMs   float64 `json:"create_max_ms"`
	E2EP50Ms      float64 `json:"e2e_p50_ms"`
	E2EP90Ms      float64 `json:"e2e_p90_ms"`
	E2EP99Ms      float64 `json:"e2e_p99_ms"`
	E2EP999Ms     float64 `json:"e2e_p999_ms"`
	E2EMaxMs      float64 `json:"e2e_max_ms"`
}

func (r Result) print(w io.Writer) {
	rate := "as fast as possible"
	if r.TargetRate > 0 {
		rate = fmt.Sprintf("%.0f/s target", r.TargetRate)
	}
	fmt.Fprintf(w, "orders      %d placed (%d failed) by %d clients, %s, in %.2fs\n", r.Orders, r.Failed, r.Clients, rate, r.DurationS)
	fmt.Fprintf(w, "outcomes    %d confirmed, %d rejected, %d cancelled, %d unfinished\n", r.Confirmed, r.Rejected, r.Cancelled, r.Unfinished)
	fmt.Fprintf(w, "throughput  %.1f created/s, %.1f confirmed/s\n", r.CreatedPerS, r.ConfirmedPerS)
	fmt.Fprintf(w, "create      p50 %s  p90 %s  p99 %s  p99.9 %s  max %s\n", ms(r.CreateP50Ms), ms(r.CreateP90Ms), ms(r.CreateP99Ms), ms(r.CreateP999Ms), ms(r.CreateMaxMs))
	fmt.Fprintf(w, "end to end  p50 %s  p90 %s  p99 %s  p99.9 %s  max %s\n", ms(r.E2EP50Ms), ms(r.E2EP90Ms), ms(r.E2EP99Ms), ms(r.E2EP999Ms), ms(r.E2EMaxMs))
}

func ms(v float64) string {
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".") + "ms"
}

var stderrWriter io.Writer = os.Stderr
