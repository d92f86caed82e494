package main

import (
	"fmt"
	"math"
	"path/filepath"
	"strings"
)

type report struct {
	Machine machineInfo
	Options options
	Modes   []modeResult
	Cluster *clusterResult
	Hot     *hotResult
	Disk    []fsyncRate
}

// disk is the measured fsync rate with files parallel files, or 0.
func (r report) disk(files int) float64 {
	for _, d := range r.Disk {
		if d.Files == files {
			return d.PerS
		}
	}
	return 0
}

// bestClients is the client count of the best row with fsync always (the
// sweep's largest without one): the sections compared with it use as many.
func (r report) bestClients() int {
	if m, ok := r.mode("always"); ok && m.Best.Clients > 0 {
		return m.Best.Clients
	}
	return r.Options.levels[len(r.Options.levels)-1]
}

func (r report) mode(name string) (modeResult, bool) {
	for _, m := range r.Modes {
		if m.Mode == name {
			return m, true
		}
	}
	return modeResult{}, false
}

func modeLabel(m modeResult) string {
	if m.SyncAlways {
		return "`sync_interval: always` (nats.conf)"
	}
	return "default fsync (every 2 min)"
}

// target is one of the targets with its measured ratio.
type target struct {
	what, mode, measured, want string
	met                        bool
}

func (r report) targets() []target {
	var ts []target
	if m, ok := r.mode("always"); ok && m.RawAsync.MsgsPerS > 0 {
		ratio := m.Best.ConfirmedPerS / m.RawAsync.MsgsPerS
		ts = append(ts, target{fmt.Sprintf("confirmed orders/s ÷ raw `js pub async` msgs/s (best of the sweep, %d SKUs)", r.Options.skus), "always",
			fmt.Sprintf("%.3f (%.0f ÷ %.0f)", ratio, m.Best.ConfirmedPerS, m.RawAsync.MsgsPerS), "≥ 0.5", ratio >= 0.5})
	}
	if m, ok := r.mode("always"); ok {
		if perS, writes := r.disk(r.Options.partitions), sumWrites(m); perS > 0 && writes > 0 {
			limit := perS / writes
			ratio := m.Best.ConfirmedPerS / limit
			ts = append(ts, target{fmt.Sprintf("confirmed orders/s ÷ (fsync/s over %d files, one per partition, ÷ %.2f writes per order)", r.Options.partitions, writes), "always",
				fmt.Sprintf("%.2f (%.0f ÷ %.0f)", ratio, m.Best.ConfirmedPerS, limit), "≥ 0.5", ratio >= 0.5})
		}
	}
	if m, ok := r.mode("default"); ok && m.RawAsync.MsgsPerS > 0 {
		ratio := m.Best.ConfirmedPerS / m.RawAsync.MsgsPerS
		ts = append(ts, target{"confirmed orders/s ÷ raw `js pub async` msgs/s", "default",
			fmt.Sprintf("%.3f (%.0f ÷ %.0f)", ratio, m.Best.ConfirmedPerS, m.RawAsync.MsgsPerS), "≥ 0.05", ratio >= 0.05})
		if us := cpuPerOrder(m.Best); us > 0 {
			ts = append(ts, target{fmt.Sprintf("CPU per confirmed order, server + host, at the best rate (before partitions: %.0f µs)", cpuBefore), "default",
				fmt.Sprintf("%.0f µs (%.2f of before)", us, us/cpuBefore), fmt.Sprintf("≤ %.0f µs (half)", cpuBefore/2), us <= cpuBefore/2})
		}
	}
	for _, m := range r.Modes {
		if m.RawSync.P99Ms > 0 {
			ratio := m.Half.CreateP99Ms / m.RawSync.P99Ms
			ts = append(ts, target{"`orders.create` p99 at half the best throughput ÷ raw `js pub sync` p99", m.Mode,
				fmt.Sprintf("%.2f (%.2fms ÷ %.2fms)", ratio, m.Half.CreateP99Ms, m.RawSync.P99Ms), "≤ 3", ratio <= 3})
		}
		if m.RawService.MsgsPerS > 0 {
			ratio := m.Requests.PerS / m.RawService.MsgsPerS
			ts = append(ts, target{"`inventory.get` req/s ÷ `nats bench service` req/s, 8 clients", m.Mode,
				fmt.Sprintf("%.2f (%.0f ÷ %.0f)", ratio, m.Requests.PerS, m.RawService.MsgsPerS), "≥ 0.8", ratio >= 0.8})
		}
		ts = append(ts, target{"host RSS under full load", m.Mode, fmt.Sprintf("%.0f MB", m.LoadRSSMB), "≤ 100 MB", m.LoadRSSMB > 0 && m.LoadRSSMB <= 100})
		ts = append(ts, target{"host RSS idle", m.Mode, fmt.Sprintf("%.0f MB", m.IdleRSSMB), "≤ 30 MB", m.IdleRSSMB > 0 && m.IdleRSSMB <= 30})
	}
	if c := r.Cluster; c != nil {
		if one := c.OnePartition.ConfirmedPerS; one > 0 {
			ratio := c.Load.ConfirmedPerS / one
			ts = append(ts, target{fmt.Sprintf("3-node R3 cluster: confirmed orders/s with PARTITIONS=%d ÷ PARTITIONS=1, %d clients", clusterPartitions, c.Load.Clients), "always",
				fmt.Sprintf("%.2f (%.0f ÷ %.0f)", ratio, c.Load.ConfirmedPerS, one), "≥ 2", ratio >= 2})
		}
		if m, ok := r.mode("always"); ok && m.Best.ConfirmedPerS > 0 {
			ratio := c.Load.ConfirmedPerS / m.Best.ConfirmedPerS
			ts = append(ts, target{fmt.Sprintf("R3 confirmed orders/s ÷ R1, %d clients", c.Load.Clients), "always",
				fmt.Sprintf("%.2f (%.0f ÷ %.0f)", ratio, c.Load.ConfirmedPerS, m.Best.ConfirmedPerS), "≥ 0.6", ratio >= 0.6})
		}
	}
	if h := r.Hot; h != nil {
		if h.Spread.ConfirmedPerS > 0 {
			ratio := h.Flash.ConfirmedPerS / h.Spread.ConfirmedPerS
			ts = append(ts, target{fmt.Sprintf("flash sale: confirmed orders/s on one SKU ÷ over %d SKUs, %d clients", spreadSKUs, h.Clients), "always",
				fmt.Sprintf("%.2f (%.0f ÷ %.0f)", ratio, h.Flash.ConfirmedPerS, h.Spread.ConfirmedPerS), "≥ 0.5", ratio >= 0.5})
		}
		if churned, fresh, ratio := h.churnRatio(); fresh > 0 {
			ts = append(ts, target{fmt.Sprintf("confirmed orders/s on a SKU after %d orders (half cancelled) ÷ on a fresh SKU", h.ChurnOrders), "always",
				fmt.Sprintf("%.2f (%.0f ÷ %.0f)", ratio, churned, fresh), "≥ 0.9", ratio >= 0.9})
		}
		biggest := max(h.Sizes.Ledger, h.Sizes.Order)
		ts = append(ts, target{"largest stock record written (SKU ledger / order reservation)", "always",
			fmt.Sprintf("%d B (%d / %d)", biggest, h.Sizes.Ledger, h.Sizes.Order), "≤ 4096 B", biggest > 0 && biggest <= 4096})
		ts = append(ts, target{fmt.Sprintf("stock writes per rejected %d-line order (last line unknown)", h.Lines), "always",
			fmt.Sprintf("%.2f", h.WritesPerRejected), fmt.Sprintf("≤ %d", h.Lines), h.Rejected.Rejected > 0 && h.WritesPerRejected <= float64(h.Lines)})
	}
	return ts
}

func yes(b bool) string {
	if b {
		return "met"
	}
	return "**not met**"
}

func (r report) summary() string {
	var b strings.Builder
	for _, t := range r.targets() {
		fmt.Fprintf(&b, "%-8s %-70s %-32s %-8s %s\n", t.mode, t.what, t.measured, t.want, yes(t.met))
	}
	return b.String()
}

func (r report) markdown(svg string) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# Benchmarks\n\n")
	w("Written by `task bench` (`go run ./bench/harness`) on %s. Every figure below comes from one run on one machine: orderflow and raw NATS (`nats bench`) measured side by side against the same `nats-server`, so the ratios hold where absolute numbers drift.\n\n", r.Machine.Date)
	w("Machine: %s, %d cores, %s, %s. Server: nats-server from `go.mod`, started from `nats.conf` (store on local disk). Host: `go run ./functions` with `NATS_URL` set, `WORKER_POOL_SIZE=%d`. Orders spread over %d SKUs, one line each; every order confirms.\n\n",
		r.Machine.CPU, r.Machine.Cores, r.Machine.Kernel, r.Machine.Go, r.Options.workers, r.Options.skus)

	w("## Targets\n\n| target | fsync mode | measured | target | |\n|---|---|---|---|---|\n")
	for _, t := range r.targets() {
		w("| %s | %s | %s | %s | %s |\n", t.what, t.mode, t.measured, t.want, yes(t.met))
	}

	if len(r.Disk) > 0 {
		w("\n## The disk\n\nA small Go probe (`bench/harness/fsync.go`) appends 128 bytes and fsyncs, in a loop, in each of N files at once for %s, on the disk the servers' stores are on, before anything else runs. nats-server with `sync_interval: always` fsyncs an R1 stream's messages one at a time, so one stream is one such file; the rate over several files is what the streams can reach together.\n\n| files written in parallel | fsyncs/s, all files |\n|---|---|\n", r.Disk[0].Length)
		for _, d := range r.Disk {
			w("| %d | %.0f |\n", d.Files, d.PerS)
		}
	}

	w("\n## Raw NATS\n\n| fsync mode | benchmark | msgs/s | p99 |\n|---|---|---|---|\n")
	for _, m := range r.Modes {
		for _, nb := range []struct {
			name string
			nb   natsBench
		}{{"JetStream sync publish, 1 client", m.RawSync}, {"JetStream async publish, 1 client", m.RawAsync},
			{"JetStream atomic batch of 2, 1 client (msgs/s; batches/s is half)", m.RawAtomic2}, {"service request/reply, 8 clients", m.RawService}} {
			w("| %s | %s (`%s`) | %.0f | %.2fms |\n", modeLabel(m), nb.name, nb.nb.Args, nb.nb.MsgsPerS, nb.nb.P99Ms)
		}
	}

	w("\n## orderflow\n\n")
	w("![throughput and p99 against concurrency](%s)\n\n", filepath.ToSlash(svg))
	w("| fsync mode | clients | rate | orders | confirmed/s | created/s | create p50 | create p99 | create p99.9 | end-to-end p50 | end-to-end p99 | CPU: server / host (of one core) | machine idle / iowait |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, m := range r.Modes {
		rows := append(append([]loadResult(nil), m.Sweep...), m.Half)
		for i, l := range rows {
			rate := "max"
			if i == len(rows)-1 {
				rate = fmt.Sprintf("%.0f/s (half the best)", l.TargetRate)
			}
			cpu, idle := "", ""
			if l.CPU.ServerPct > 0 {
				cpu = fmt.Sprintf("%.0f%% / %.0f%%", l.CPU.ServerPct, l.CPU.HostPct)
				idle = fmt.Sprintf("%.0f%% / %.0f%%", l.CPU.IdlePct, l.CPU.IOWaitPct)
			}
			w("| %s | %d | %s | %d | %.1f | %.1f | %.2fms | %.2fms | %.2fms | %.1fms | %.1fms | %s | %s |\n", modeLabel(m), l.Clients, rate, l.Orders,
				l.ConfirmedPerS, l.CreatedPerS, l.CreateP50Ms, l.CreateP99Ms, l.CreateP999Ms, l.E2EP50Ms, l.E2EP99Ms, cpu, idle)
		}
	}
	w("\nRequest path (`go run ./bench --requests %d --clients 8`: `inventory.get`, each client on its own connection, as `nats bench service request` does):\n\n", r.Options.requests)
	w("| fsync mode | req/s | p50 | p99 |\n|---|---|---|---|\n")
	for _, m := range r.Modes {
		w("| %s | %.0f | %.2fms | %.2fms |\n", modeLabel(m), m.Requests.PerS, m.Requests.P50Ms, m.Requests.P99Ms)
	}

	if h := r.Hot; h != nil {
		w("%s", r.hotSection(*h))
	}
	if c := r.Cluster; c != nil {
		w("%s", r.clusterSection(*c))
	}

	w("\n## What bounds each target\n\n")
	w("%s", r.analysis())
	w("\n## Where the time goes\n\n")
	for _, m := range r.Modes {
		w("### %s\n\n", modeLabel(m))
		w("Durable writes per confirmed order, by stream (last-sequence delta over the sweep ÷ confirmed orders):\n\n| stream | writes per order |\n|---|---|\n")
		total := 0.0
		for _, s := range []string{"ORDERS", "KV_stock", "KV_payments", "KV_gateway", "DEADLETTERS"} {
			w("| %s | %.2f |\n", s, m.WritesPer[s])
			total += m.WritesPer[s]
		}
		w("| **total** | **%.2f** |\n\n", total)
		w("Mean time per call or message over the whole run, slowest first (from the host's `/metrics`):\n\n| function (consumer) | calls | mean |\n|---|---|---|\n")
		for _, s := range m.Steps {
			w("| %s | %.0f | %.2fms |\n", s.Consumer, s.Count, s.AvgMs)
		}
		if m.Profile != "" {
			w("\nHost CPU profile at %d clients (`go tool pprof -top`):\n\n```\n%s```\n", r.Options.levels[len(r.Options.levels)-1], trimProfile(m.Profile))
		}
		if m.ServerProfile != "" {
			w("\nnats-server CPU profile over the same seconds (its `prof_port`, `go tool pprof -top`):\n\n```\n%s```\n", trimProfile(m.ServerProfile))
		}
		w("\n")
	}
	return b.String()
}

func trimProfile(p string) string {
	lines := strings.Split(p, "\n")
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") {
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

// chart draws confirmed orders/s and create p99 against clients, one line
// per fsync mode, as a small self-contained SVG.
func chart(r report) string {
	const W, H, pad = 720, 300, 50
	panel := func(x0 int, title string, val func(loadResult) float64) string {
		pw := W/2 - pad - 10
		ph := H - 2*pad
		maxY, maxX := 0.0, 1.0
		for _, m := range r.Modes {
			for _, l := range m.Sweep {
				maxY = math.Max(maxY, val(l))
				maxX = math.Max(maxX, float64(l.Clients))
			}
		}
		if maxY == 0 {
			maxY = 1
		}
		maxY *= 1.1
		xpos := func(c int) float64 { return float64(x0+pad) + math.Log2(float64(c))/math.Log2(maxX)*float64(pw) }
		ypos := func(v float64) float64 { return float64(H-pad) - v/maxY*float64(ph) }
		var b strings.Builder
		fmt.Fprintf(&b, `<text x="%d" y="20" font-size="14" font-family="sans-serif">%s</text>`, x0+pad, title)
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#444"/>`, x0+pad, H-pad, x0+pad+pw, H-pad)
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#444"/>`, x0+pad, pad, x0+pad, H-pad)
		for i := 0; i <= 4; i++ {
			v := maxY * float64(i) / 4
			fmt.Fprintf(&b, `<text x="%d" y="%.0f" font-size="10" text-anchor="end" font-family="sans-serif">%.0f</text>`, x0+pad-4, ypos(v)+3, v)
		}
		for _, l := range r.Modes[0].Sweep {
			fmt.Fprintf(&b, `<text x="%.0f" y="%d" font-size="10" text-anchor="middle" font-family="sans-serif">%d</text>`, xpos(l.Clients), H-pad+14, l.Clients)
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" text-anchor="middle" font-family="sans-serif">clients</text>`, x0+pad+pw/2, H-pad+30)
		colors := []string{"#1f77b4", "#d62728"}
		for i, m := range r.Modes {
			var pts []string
			for _, l := range m.Sweep {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", xpos(l.Clients), ypos(val(l))))
			}
			c := colors[i%len(colors)]
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`, c, strings.Join(pts, " "))
			for _, p := range pts {
				xy := strings.Split(p, ",")
				fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="3" fill="%s"/>`, xy[0], xy[1], c)
			}
			fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" fill="%s" font-family="sans-serif">fsync %s</text>`, x0+pad+10, pad+14*(i+1), c, m.Mode)
		}
		return b.String()
	}
	return fmt.Sprintf(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d"><rect width="100%%" height="100%%" fill="white"/>%s%s</svg>`+"\n",
		W, H, W, H,
		panel(0, "confirmed orders/s", func(l loadResult) float64 { return l.ConfirmedPerS }),
		panel(W/2, "orders.create p99 (ms)", func(l loadResult) float64 { return l.CreateP99Ms }))
}

// analysis explains each target's measured ratio with the figures of this
// run: the experiments that show what bounds it.
func (r report) analysis() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	def, hasDef := r.mode("default")
	if m, ok := r.mode("always"); ok {
		total := sumWrites(m)
		limit := r.disk(r.Options.partitions) / total
		w("**Durable throughput (fsync always).** An order costs %.2f durable writes (table below) over %d partitions of the order log and of the stock, and the gateway's ledger. The disk is not what bounds it any more: the probe's %.0f fsyncs/s over %d files allow %.0f orders/s at that many writes, and the best rate, %.0f orders/s, used %.0f%% of a core in the server and %.0f%% in the host, with the machine %.0f%% idle and %.0f%% in I/O wait: the %d cores are. ",
			total, r.Options.partitions, r.disk(r.Options.partitions), r.Options.partitions, limit, m.Best.ConfirmedPerS, m.Best.CPU.ServerPct, m.Best.CPU.HostPct, m.Best.CPU.IdlePct, m.Best.CPU.IOWaitPct, r.Machine.Cores)
		if hasDef {
			w("The experiment that shows it is the default-fsync run beside it: with no fsync at all the same code reaches %.0f orders/s, so fsyncs cost the always mode %.0f%% of its rate and CPU the rest. ", def.Best.ConfirmedPerS, 100*(1-m.Best.ConfirmedPerS/def.Best.ConfirmedPerS))
		}
		w("The target, half of raw async publishing on one stream (%.0f orders/s), would need %.0f µs of CPU per order on these cores even with nothing else running, against %.0f µs measured in this mode (the server's share mostly system time in write and fsync calls: its profile below); every order is a request, three triggered steps, their %.0f writes and about a dozen reads, each a round trip that both processes parse, where a raw async publisher sends one message and reads one ack. Partitions took the always rate from 707 to about 790 orders/s here (16 SKUs, 32 clients); the rest is CPU.\n\n",
			m.RawAsync.MsgsPerS/2, float64(r.Machine.Cores)*1e6/(m.RawAsync.MsgsPerS/2), cpuPerOrder(m.Best), total)
	}
	if hasDef {
		us := cpuPerOrder(def.Best)
		w("**CPU per order and default-fsync throughput.** Measured: %.0f µs per confirmed order (server %.0f%% and host %.0f%% of a core at %.0f orders/s), against %.0f µs before partitions. The profiles below show where it goes. The largest cut came from a profile: reading an order's history with a direct batch get from the stream's first sequence made the server scan its message blocks for the order's subjects (`msgBlock.firstMatching` under `LoadNextMsg`, 28%% of all CPU in a 10,000-order run, growing with the stream), where a multi-last direct get finds them through the subject index; that alone took a run with the embedded server from 1,120 to 730 µs per order and from 1,370 to 2,260 orders/s. What is left is spread thin: the JSON of JetStream's message-get API on both sides (about 7%%), protobuf, the KV compare-and-set round trips (reserve 2, sell 3), and the Go runtime's allocation and GC in both processes. Raw async publishing is memory speed without fsync (%.0f msgs/s), so 0.05 of it is %.0f orders/s, %.0f µs per order on %d cores.\n\n",
			us, def.Best.CPU.ServerPct, def.Best.CPU.HostPct, def.Best.ConfirmedPerS, cpuBefore, def.RawAsync.MsgsPerS, def.RawAsync.MsgsPerS*0.05, float64(r.Machine.Cores)*1e6/(def.RawAsync.MsgsPerS*0.05), r.Machine.Cores)
	}
	for _, m := range r.Modes {
		w("**`orders.create` p99 (%s).** At half the best rate the create's one write shares the cores and its partition's stream with the saga's writes: %.2fms p50 and %.2fms p99, against %.2fms p99 for a lone synchronous publisher with nothing else on the server. The create itself is one publish; its tail is the scheduler's.\n\n", m.Mode, m.Half.CreateP50Ms, m.Half.CreateP99Ms, m.RawSync.P99Ms)
	}
	if c := r.Cluster; c != nil {
		w("**Partitions on the cluster.** The three nodes here share one machine's %d cores, and every partition is a Raft group, as is every consumer of an R3 stream (6 per partition of the order log): PARTITIONS=%d runs %d stream groups and %d consumer groups where PARTITIONS=1 runs 2 and 6. With the machine %.0f%% idle at PARTITIONS=1 and %.0f%% at PARTITIONS=%d, the extra groups' heartbeats and elections cost more than the parallel fsync queues gain: %.0f against %.0f orders/s. What partitions buy on a cluster is leaders on every node, which needs a node per machine; this harness cannot show that.\n\n",
			r.Machine.Cores, clusterPartitions, 2*clusterPartitions, 6*clusterPartitions, c.OnePartition.CPU.IdlePct, c.Load.CPU.IdlePct, clusterPartitions, c.Load.ConfirmedPerS, c.OnePartition.ConfirmedPerS)
	}
	if len(r.Modes) > 0 {
		m := r.Modes[0]
		w("**Request path.** `inventory.get` is two round trips where `nats bench service` is one: client to host, then host to JetStream for the stock level. Since a SKU's stock is split over 8 ledgers (see A hot SKU), that second trip is 8 leader reads (`$JS.API.STREAM.MSG.GET`, in parallel), each a JetStream API request the server answers one by one: measured %.2fms p50. A direct batch get would be one request, but direct gets are also answered by replicas (the stale reads the cluster issue removed), and the leader's message-get API takes no batch. The host itself is cheap: `BenchmarkRequest` (host, no state read, 8 clients, in process) serves about 75,000 req/s, tracing off within 2%% of tracing removed. A host-side cache of the stock levels fed by a KV watch would remove the second trip, at the cost of the guarantee that `inventory.get` agrees with an order `orders.get` already reports ended; this version keeps the guarantee.\n\n", m.Requests.P50Ms)
	}
	w("**Memory.** Idle RSS is the Go runtime, the NATS client, OpenTelemetry and the protobuf registries, and a pull subscription per consumer (6 per partition); under load it grows with the in-flight messages (the partitions of a step together pull about `WORKER_POOL_SIZE` messages).\n")
	return b.String()
}

func sumWrites(m modeResult) float64 {
	t := 0.0
	for _, v := range m.WritesPer {
		t += v
	}
	return t
}

// clusterSection is the R3 part of the report: the same measurements on a
// 3-node cluster of deploy/cluster's nodes, next to R1 from this run.
func (r report) clusterSection(c clusterResult) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("\n## On a 3-node cluster (R3)\n\n")
	w("Three nats-servers started from `deploy/cluster/n1..n3.conf` (the configs `task cluster:up` uses; `sync_interval: always`) on this same machine, so the three share its %d cores and its one disk; one host with `STREAM_REPLICAS=3` and the three URLs. A real cluster has a machine per node; this understates it.\n\n", r.Machine.Cores)
	w("| | R1 (fsync always) | R3 | R3 ÷ R1 |\n|---|---|---|---|\n")
	if m, ok := r.mode("always"); ok {
		ratio := func(a, b float64) string {
			if b == 0 {
				return ""
			}
			return fmt.Sprintf("%.2f", a/b)
		}
		w("| raw `js pub sync`, 1 client (msgs/s) | %.0f | %.0f | %s |\n", m.RawSync.MsgsPerS, c.RawSync.MsgsPerS, ratio(c.RawSync.MsgsPerS, m.RawSync.MsgsPerS))
		w("| raw `js pub sync` p99 | %.2fms | %.2fms | %s |\n", m.RawSync.P99Ms, c.RawSync.P99Ms, ratio(c.RawSync.P99Ms, m.RawSync.P99Ms))
		w("| raw `js pub async`, 1 client (msgs/s) | %.0f | %.0f | %s |\n", m.RawAsync.MsgsPerS, c.RawAsync.MsgsPerS, ratio(c.RawAsync.MsgsPerS, m.RawAsync.MsgsPerS))
		w("| orderflow confirmed orders/s, %d clients (target R3 ≥ 0.6 × R1) | %.0f | %.0f | %s |\n", c.Load.Clients, m.Best.ConfirmedPerS, c.Load.ConfirmedPerS, ratio(c.Load.ConfirmedPerS, m.Best.ConfirmedPerS))
		w("| orderflow confirmed orders/s, %d clients, R3 with PARTITIONS=1 (R1 column: PARTITIONS=%d) | %.0f | %.0f | %s |\n", c.OnePartition.Clients, r.Options.partitions, m.Best.ConfirmedPerS, c.OnePartition.ConfirmedPerS, ratio(c.OnePartition.ConfirmedPerS, m.Best.ConfirmedPerS))
		w("| machine idle during the load (R3: PARTITIONS=%d / 1) | %.0f%% | %.0f%% / %.0f%% | |\n", clusterPartitions, m.Best.CPU.IdlePct, c.Load.CPU.IdlePct, c.OnePartition.CPU.IdlePct)
		w("| `orders.create` p99, %d clients | %.2fms | %.2fms | %s |\n", c.Load.Clients, m.Best.CreateP99Ms, c.Load.CreateP99Ms, ratio(c.Load.CreateP99Ms, m.Best.CreateP99Ms))
		w("| end-to-end p99, %d clients | %.1fms | %.1fms | %s |\n", c.Load.Clients, m.Best.E2EP99Ms, c.Load.E2EP99Ms, ratio(c.Load.E2EP99Ms, m.Best.E2EP99Ms))
	}
	w("\nRaw async publish is faster on R3 than on R1 here: a replicated stream's writes go through its Raft log, which is fsynced once per batch of appended entries, while an R1 stream with `sync_interval: always` fsyncs every message on its own. orderflow's steps publish one message at a time and wait for each ack, so they see the R3 sync latency instead.\n")
	st := c.Stall
	w("\n**A leader killed under load.** With %.0f orders/s placed by 8 clients for 25 s, the leader of `ORDERS`, %s, was killed with SIGKILL, kept down %.0f s and started again, while a probe placed one order after another, each retried with its `Idempotency-Key` until acknowledged, as a careful client does.\n\n", st.Load.TargetRate, st.Killed, st.Down)
	w("| measured | |\n|---|---|\n")
	w("| kill to a new leader of `ORDERS` | %.1f s |\n", st.ElectionS)
	w("| longest `orders.create`, first send to acknowledgement | %.1f s |\n", st.MaxCreateS)
	w("| probe creates / over 1 s | %d / %d |\n", st.Creates, st.SlowCreates)
	w("| the load's orders: placed, confirmed, failed, unfinished | %d, %d, %d, %d |\n", st.Load.Orders, st.Load.Confirmed, st.Load.Failed, st.Load.Unfinished)
	w("| the load's create p99 / end-to-end p99 | %.0fms / %.0fms |\n", st.Load.CreateP99Ms, st.Load.E2EP99Ms)
	return b.String()
}

// cpuBefore is the CPU per confirmed order, server + host, at the best
// rate with the default fsync before partitions: 84% + 69% of a core at
// 1,130 orders/s in the BENCHMARKS.md of commit 6acddc1, this machine.
const cpuBefore = 1354.0

// cpuPerOrder is the CPU the server and the host spent per confirmed
// order during l, in µs, or 0 when not measured.
func cpuPerOrder(l loadResult) float64 {
	if l.ConfirmedPerS <= 0 || l.CPU.ServerPct <= 0 {
		return 0
	}
	return (l.CPU.ServerPct + l.CPU.HostPct) / 100 * 1e6 / l.ConfirmedPerS
}
