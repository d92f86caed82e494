package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
)

// hotResult is what the harness measures of the stock ledger under a hot
// SKU: the ledger targets of the hot-SKU issue.
type hotResult struct {
	Clients int
	// Spread and Flash are the same load over 256 SKUs and over one.
	Spread, Flash loadResult
	// Churn puts ChurnOrders orders through one SKU, every other one
	// cancelled; Churned and Fresh then run the same load on that SKU and
	// on one never used (each twice, interleaved, and summed).
	ChurnOrders    int
	Churn          loadResult
	Churned, Fresh []loadResult
	// Rejected is multi-line orders whose last line is a SKU never
	// stocked; WritesPerRejected is the stock bucket's writes per rejected
	// order, the SKUs' restock taken out.
	Lines             int
	Rejected          loadResult
	WritesPerRejected float64
	// Sizes is the largest record written to the stock bucket during all
	// of the above, by kind of key.
	Sizes sizes
}

func (h hotResult) churnRatio() (churned, fresh, ratio float64) {
	for _, r := range h.Churned {
		churned += r.ConfirmedPerS
	}
	for _, r := range h.Fresh {
		fresh += r.ConfirmedPerS
	}
	churned /= float64(max(len(h.Churned), 1))
	fresh /= float64(max(len(h.Fresh), 1))
	if fresh > 0 {
		ratio = churned / fresh
	}
	return churned, fresh, ratio
}

// sizes is the largest value written under each kind of stock key: a
// SKU's ledgers (sku.<sku>.<n>) and orders' reservations (order.<id>).
type sizes struct {
	Ledger, Order   int
	LedgerKey       string
	Writes, Ledgers int
}

// sizeRecorder keeps sizes from every write it sees.
type sizeRecorder struct {
	mu sync.Mutex
	s  sizes
}

func (r *sizeRecorder) record(m *nats.Msg) {
	// $KV.stock_<p>.<key>
	_, key, _ := strings.Cut(strings.TrimPrefix(m.Subject, "$KV."), ".")
	r.mu.Lock()
	defer r.mu.Unlock()
	r.s.Writes++
	switch {
	case strings.HasPrefix(key, "sku."):
		r.s.Ledgers++
		if len(m.Data) > r.s.Ledger {
			r.s.Ledger, r.s.LedgerKey = len(m.Data), key
		}
	default:
		r.s.Order = max(r.s.Order, len(m.Data))
	}
}

func (r *sizeRecorder) sizes() sizes {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.s
}

// runHot measures the hot-SKU rows on a server of its own (nats.conf,
// fsync always) with one host, clients at a time.
func runHot(o options, b bins, dir string, clients int) (hotResult, error) {
	res := hotResult{Clients: clients, ChurnOrders: o.churn, Lines: 3}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	srv, url, err := startServer(b, dir, "hot", true)
	if err != nil {
		return res, err
	}
	defer stopProcess(srv)
	host, _, err := startHost(b, url, o.workers, "LOG_LEVEL=warn", fmt.Sprintf("PARTITIONS=%d", o.partitions))
	if err != nil {
		return res, err
	}
	defer stopProcess(host)

	// Every value written to the stock bucket passes here: a KV put is a
	// publish on $KV.stock.<key>.
	nc, err := nats.Connect(url)
	if err != nil {
		return res, err
	}
	defer nc.Close()
	var sz sizeRecorder
	sub, err := nc.Subscribe("$KV.*.>", func(m *nats.Msg) {
		if strings.HasPrefix(m.Subject, "$KV.stock_") {
			sz.record(m)
		}
	})
	if err != nil {
		return res, err
	}
	_ = sub.SetPendingLimits(-1, -1)

	load := func(name string, skus int, args ...string) (loadResult, error) {
		logf("[hot] %s: %s", name, strings.Join(args, " "))
		out, err := loadGen(b, url, skus)(append(args, "--clients", strconv.Itoa(clients), "--run", "hot-"+name)...)
		if err != nil {
			return loadResult{}, err
		}
		var r loadResult
		if err := json.Unmarshal(out, &r); err != nil {
			return r, err
		}
		logf("[hot]   %.1f confirmed/s, %d confirmed, %d rejected, %d cancelled, %d failed, %d unfinished", r.ConfirmedPerS, r.Confirmed, r.Rejected, r.Cancelled, r.Failed, r.Unfinished)
		if r.Failed > 0 || r.Unfinished > 0 {
			return r, fmt.Errorf("%s: %d orders failed, %d unfinished", name, r.Failed, r.Unfinished)
		}
		return r, nil
	}
	orders := strconv.Itoa(o.orders)
	if res.Spread, err = load("spread", spreadSKUs, "--orders", orders, "--sku-prefix", "SPREAD"); err != nil {
		return res, err
	}
	if res.Flash, err = load("flash", 1, "--orders", orders, "--sku-prefix", "FLASH"); err != nil {
		return res, err
	}
	if res.Churn, err = load("churn", 1, "--orders", strconv.Itoa(o.churn), "--sku-prefix", "CHURN", "--cancel-every", "2"); err != nil {
		return res, err
	}
	for i := range 2 {
		r, err := load(fmt.Sprintf("churned-%d", i), 1, "--orders", orders, "--sku-prefix", "CHURN")
		if err != nil {
			return res, err
		}
		res.Churned = append(res.Churned, r)
		if r, err = load(fmt.Sprintf("fresh-%d", i), 1, "--orders", orders, "--sku-prefix", fmt.Sprintf("FRESH%d", i)); err != nil {
			return res, err
		}
		res.Fresh = append(res.Fresh, r)
	}

	// A rejected order's writes: the same SKUs stocked alone first, then
	// with the orders, and the difference taken.
	seqs := func() (uint64, error) {
		s, err := streamSeqs(url)
		return s["KV_stock"], err
	}
	s0, err := seqs()
	if err != nil {
		return res, err
	}
	if _, err := load("restock-only", 2, "--orders", "0", "--sku-prefix", "REJECT-STOCK"); err != nil {
		return res, err
	}
	s1, err := seqs()
	if err != nil {
		return res, err
	}
	if res.Rejected, err = load("rejected", 2, "--orders", strconv.Itoa(o.orders/3), "--sku-prefix", "REJECT", "--lines", strconv.Itoa(res.Lines), "--unknown-last"); err != nil {
		return res, err
	}
	s2, err := seqs()
	if err != nil {
		return res, err
	}
	if res.Rejected.Rejected > 0 {
		res.WritesPerRejected = float64(int64(s2-s1)-int64(s1-s0)) / float64(res.Rejected.Rejected)
	}
	if err := nc.Flush(); err != nil {
		return res, err
	}
	res.Sizes = sz.sizes()
	return res, nil
}

// hotSection is the hot-SKU part of the report.
func (r report) hotSection(h hotResult) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("\n## A hot SKU\n\n")
	w("A server of its own from `nats.conf` (`sync_interval: always`) and one host; every run below places orders with %d clients as fast as they go (`go run ./bench --clients %d`), one line of one unit each unless said.\n\n", h.Clients, h.Clients)
	w("| run | orders | confirmed/s | confirmed / rejected / cancelled | create p99 | end-to-end p99 |\n|---|---|---|---|---|---|\n")
	row := func(name string, l loadResult) {
		w("| %s | %d | %.1f | %d / %d / %d | %.2fms | %.1fms |\n", name, l.Orders, l.ConfirmedPerS, l.Confirmed, l.Rejected, l.Cancelled, l.CreateP99Ms, l.E2EP99Ms)
	}
	row(fmt.Sprintf("spread over %d SKUs (`--skus %d`)", spreadSKUs, spreadSKUs), h.Spread)
	row("flash sale: all on one SKU (`--skus 1`)", h.Flash)
	row("churn: one SKU, every other order cancelled right after it is placed (`--cancel-every 2`)", h.Churn)
	for i := range h.Churned {
		row(fmt.Sprintf("the churned SKU afterwards (%d)", i+1), h.Churned[i])
		if i < len(h.Fresh) {
			row(fmt.Sprintf("a fresh SKU (%d)", i+1), h.Fresh[i])
		}
	}
	row(fmt.Sprintf("%d lines, the last a SKU never stocked (`--lines %d --unknown-last`)", h.Lines, h.Lines), h.Rejected)
	w("\nRecords written to the stock bucket during these runs: %d (%d of them to SKU ledgers). Largest ledger: %d bytes (`%s`); largest order reservation: %d bytes. A rejected %d-line order wrote %.2f records (its reservation record, `REJECTED`; the short line is found by reading every line's ledgers before any hold).\n",
		h.Sizes.Writes, h.Sizes.Ledgers, h.Sizes.Ledger, h.Sizes.LedgerKey, h.Sizes.Order, h.Lines, h.WritesPerRejected)
	w("\nWhy a hot SKU keeps up: its stock is split over 8 ledgers and each order's units live in one of them (a hash of the order id), so the orders of one SKU compare-and-set 8 records, not one; a ledger that runs short borrows from the others. A ledger holds only the orders in flight at it (an entry from reserve until the sale or release), never the SKU's history, so a step costs the same after 20,000 orders as after none.\n")
	return b.String()
}

// spreadSKUs is how many SKUs the flash sale is compared with.
const spreadSKUs = 256
