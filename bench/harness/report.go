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
		ts = append(ts, target{"confirmed orders/s ÷ raw `js pub async` msgs/s", "always",
			fmt.Sprintf("%.3f (%.0f ÷ %.0f)", ratio, m.Best.ConfirmedPerS, m.RawAsync.MsgsPerS), "≥ 0.25", ratio >= 0.25})
	}
	if m, ok := r.mode("default"); ok && m.RawAsync.MsgsPerS > 0 {
		ratio := m.Best.ConfirmedPerS / m.RawAsync.MsgsPerS
		ts = append(ts, target{"confirmed orders/s ÷ raw `js pub async` msgs/s", "default",
			fmt.Sprintf("%.3f (%.0f ÷ %.0f)", ratio, m.Best.ConfirmedPerS, m.RawAsync.MsgsPerS), "≥ 0.05", ratio >= 0.05})
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
	w("| fsync mode | clients | rate | orders | confirmed/s | created/s | create p50 | create p99 | create p99.9 | end-to-end p50 | end-to-end p99 |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, m := range r.Modes {
		rows := append(append([]loadResult(nil), m.Sweep...), m.Half)
		for i, l := range rows {
			rate := "max"
			if i == len(rows)-1 {
				rate = fmt.Sprintf("%.0f/s (half the best)", l.TargetRate)
			}
			w("| %s | %d | %s | %d | %.1f | %.1f | %.2fms | %.2fms | %.2fms | %.1fms | %.1fms |\n", modeLabel(m), l.Clients, rate, l.Orders,
				l.ConfirmedPerS, l.CreatedPerS, l.CreateP50Ms, l.CreateP99Ms, l.CreateP999Ms, l.E2EP50Ms, l.E2EP99Ms)
		}
	}
	w("\nRequest path (`go run ./bench --requests %d --clients 8`: `inventory.get`, each client on its own connection, as `nats bench service request` does):\n\n", r.Options.requests)
	w("| fsync mode | req/s | p50 | p99 |\n|---|---|---|---|\n")
	for _, m := range r.Modes {
		w("| %s | %.0f | %.2fms | %.2fms |\n", modeLabel(m), m.Requests.PerS, m.Requests.P50Ms, m.Requests.P99Ms)
	}

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
