// Command harness is `task bench`: it measures orderflow against raw NATS on
// the same machine in the same run, and writes BENCHMARKS.md with every
// figure, the ratios the project targets, a chart of throughput and p99
// against concurrency, and where the time goes.
//
// For each fsync mode (sync_interval: always, as nats.conf sets, and the
// server default) it starts a nats-server from nats.conf, runs `nats bench`
// (JetStream sync and async publish, an atomic batch of two, service
// request/reply), starts the function host against the server, and runs the
// load generator (go run ./bench) at rising concurrency, at half the best
// throughput, and on the request path.
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

type options struct {
	out, svg string
	levels   []int
	orders   int
	rawMsgs  int
	requests int
	workers  int
	skus     int
	profileS int
	// partitions is PARTITIONS of the host.
	partitions int
	modes      []string
	cluster    bool
	hot        bool
	churn      int
}

func main() {
	o := options{}
	var levels, modes string
	flag.StringVar(&o.out, "out", "BENCHMARKS.md", "report to write")
	flag.StringVar(&o.svg, "svg", "bench/throughput.svg", "chart to write")
	flag.StringVar(&levels, "clients", "1,4,16,32", "client counts of the concurrency sweep")
	flag.IntVar(&o.orders, "orders", 3000, "orders per sweep step")
	flag.IntVar(&o.rawMsgs, "raw-msgs", 20000, "messages per nats bench run")
	flag.IntVar(&o.requests, "requests", 40000, "requests of the request-path comparison")
	flag.IntVar(&o.workers, "workers", 32, "WORKER_POOL_SIZE of the host")
	flag.IntVar(&o.skus, "skus", 16, "SKUs the orders of the sweep spread over (the hot-SKU section compares one SKU with 256)")
	flag.IntVar(&o.partitions, "partitions", 4, "PARTITIONS of the function host (the cluster rows compare 8 with 1)")
	flag.IntVar(&o.profileS, "profile", 3, "seconds of host and server CPU profile taken at full load (0: none)")
	flag.StringVar(&modes, "modes", "always,default", "fsync modes to run: always (nats.conf) and default (2 min)")
	flag.BoolVar(&o.cluster, "cluster", true, "also measure a 3-node R3 cluster (deploy/cluster), with fsync always")
	flag.BoolVar(&o.hot, "hot", true, "also measure a hot SKU: a flash sale on one SKU, one SKU after --churn orders, rejected multi-line orders")
	flag.IntVar(&o.churn, "churn", 20000, "orders put through one SKU before it is compared with a fresh one")
	flag.Parse()
	for _, f := range strings.Split(levels, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fail(fmt.Errorf("--clients: %q", f))
		}
		o.levels = append(o.levels, n)
	}
	o.modes = strings.Split(modes, ",")
	if err := run(o); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "harness:", err)
	os.Exit(1)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// bins are the programs the harness runs, built from go.mod's versions.
type bins struct{ server, cli, host, load string }

func build(dir string) (bins, error) {
	b := bins{
		server: filepath.Join(dir, "nats-server"),
		cli:    filepath.Join(dir, "nats"),
		host:   filepath.Join(dir, "orderflow"),
		load:   filepath.Join(dir, "loadgen"),
	}
	for out, pkg := range map[string]string{
		b.server: "github.com/nats-io/nats-server/v2",
		b.cli:    "github.com/nats-io/natscli/nats",
		b.host:   "./functions",
		b.load:   "./bench",
	} {
		logf("go build %s", pkg)
		if msg, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
			return b, fmt.Errorf("go build %s: %v\n%s", pkg, err, msg)
		}
	}
	return b, nil
}

func run(o options) error {
	tmp, err := os.MkdirTemp("", "orderflow-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	b, err := build(tmp)
	if err != nil {
		return err
	}
	rep := report{Machine: machine(), Options: o}
	// The disk's own limit first, while nothing else runs: one file, the
	// streams an order writes (ORDERS, KV_stock, KV_gateway), and more.
	if rep.Disk, err = probeDisk(tmp, slices.Compact(slices.Sorted(slices.Values([]int{1, o.partitions, 8, 32})))); err != nil {
		return err
	}
	for _, mode := range o.modes {
		m, err := runMode(o, b, filepath.Join(tmp, mode), mode)
		if err != nil {
			return fmt.Errorf("mode %s: %w", mode, err)
		}
		rep.Modes = append(rep.Modes, m)
	}
	if o.hot {
		h, err := runHot(o, b, filepath.Join(tmp, "hot"), rep.bestClients())
		if err != nil {
			return fmt.Errorf("hot SKU: %w", err)
		}
		rep.Hot = &h
	}
	if o.cluster {
		// As many clients as the best R1 row with fsync always, to compare.
		c, err := runCluster(o, b, filepath.Join(tmp, "r3"), rep.bestClients())
		if err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
		rep.Cluster = &c
	}
	if err := os.MkdirAll(filepath.Dir(o.svg), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(o.svg, []byte(chart(rep)), 0o644); err != nil {
		return err
	}
	md := rep.markdown(o.svg)
	if err := os.WriteFile(o.out, []byte(md), 0o644); err != nil {
		return err
	}
	logf("wrote %s and %s", o.out, o.svg)
	fmt.Print(rep.summary())
	return nil
}

// modeResult is everything measured with one fsync mode.
type modeResult struct {
	Mode       string
	SyncAlways bool
	RawSync    natsBench
	RawAsync   natsBench
	RawAtomic2 natsBench
	RawService natsBench
	Sweep      []loadResult
	Best       loadResult
	Half       loadResult
	Requests   requestResult
	IdleRSSMB  float64
	LoadRSSMB  float64
	Steps      []stepTime
	WritesPer  map[string]float64
	Profile    string
	// ServerProfile is the server's, taken at the same time.
	ServerProfile string
}

// cpuUse is where the machine's time went during a run.
type cpuUse struct {
	ServerPct, HostPct float64 // of one core
	IdlePct, IOWaitPct float64 // of the whole machine
}

type loadResult struct {
	CPU           cpuUse  `json:"-"`
	Orders        int     `json:"orders"`
	Failed        int     `json:"failed"`
	Confirmed     int     `json:"confirmed"`
	Rejected      int     `json:"rejected"`
	Cancelled     int     `json:"cancelled"`
	Unfinished    int     `json:"unfinished"`
	Clients       int     `json:"clients"`
	TargetRate    float64 `json:"target_rate"`
	ConfirmedPerS float64 `json:"confirmed_per_s"`
	CreatedPerS   float64 `json:"created_per_s"`
	CreateP50Ms   float64 `json:"create_p50_ms"`
	CreateP99Ms   float64 `json:"create_p99_ms"`
	CreateP999Ms  float64 `json:"create_p999_ms"`
	E2EP50Ms      float64 `json:"e2e_p50_ms"`
	E2EP99Ms      float64 `json:"e2e_p99_ms"`
}

type requestResult struct {
	Requests int     `json:"requests"`
	Clients  int     `json:"clients"`
	PerS     float64 `json:"requests_per_s"`
	P50Ms    float64 `json:"p50_ms"`
	P99Ms    float64 `json:"p99_ms"`
}

type stepTime struct {
	Consumer string
	Count    float64
	AvgMs    float64
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// serverConf is nats.conf with the store and port of this run, and a
// profiling port (prof, 0: none); the default fsync mode drops the
// sync_interval line.
func serverConf(dir string, port, prof int, always bool) (string, error) {
	src, err := os.ReadFile("nats.conf")
	if err != nil {
		return "", fmt.Errorf("nats.conf: %w", err)
	}
	var out []string
	for _, line := range strings.Split(string(src), "\n") {
		t := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(t, "port:"):
			line = fmt.Sprintf("port: %d", port)
		case strings.HasPrefix(t, "http:"):
			continue // no monitoring port: nothing to collide with
		case strings.HasPrefix(t, "store_dir:"):
			line = fmt.Sprintf("  store_dir: %q", filepath.Join(dir, "data"))
		case strings.HasPrefix(t, "sync_interval:") && !always:
			continue
		}
		out = append(out, line)
	}
	if prof > 0 {
		out = append(out, fmt.Sprintf("prof_port: %d", prof))
	}
	conf := filepath.Join(dir, "nats.conf")
	return conf, os.WriteFile(conf, []byte(strings.Join(out, "\n")), 0o644)
}

// startServer starts a nats-server from nats.conf with its store in dir
// and waits until it answers; label names it in the log. It serves CPU
// profiles at the address serverProfs keeps for its URL.
func startServer(b bins, dir, label string, syncAlways bool) (*exec.Cmd, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	prof, err := freePort()
	if err != nil {
		return nil, "", err
	}
	conf, err := serverConf(dir, port, prof, syncAlways)
	if err != nil {
		return nil, "", err
	}
	serverProfs.Store(fmt.Sprintf("nats://127.0.0.1:%d", port), fmt.Sprintf("http://127.0.0.1:%d", prof))
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	logf("[%s] nats-server -c %s", label, conf)
	srv := exec.Command(b.server, "-c", conf)
	if err := srv.Start(); err != nil {
		return nil, "", err
	}
	if err := waitNATS(url); err != nil {
		stopProcess(srv)
		return nil, "", err
	}
	return srv, url, nil
}

// serverProfs maps a server URL startServer started to its profiling
// address (nats-server's prof_port).
var serverProfs sync.Map

// stopProcess ends a process the harness started and waits for it.
func stopProcess(cmd *exec.Cmd) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
}

func runMode(o options, b bins, dir, mode string) (modeResult, error) {
	res := modeResult{Mode: mode, SyncAlways: mode == "always", WritesPer: map[string]float64{}}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	srv, url, err := startServer(b, dir, mode, res.SyncAlways)
	if err != nil {
		return res, err
	}
	defer stopProcess(srv)

	cli := natsCLI(b, url, dir)
	msgs := strconv.Itoa(o.rawMsgs)
	logf("[%s] nats bench js pub sync/async", mode)
	if res.RawSync, err = benchCLI(cli, "bench", "js", "pub", "sync", "--create", "--purge", "--clients", "1", "--msgs", strconv.Itoa(o.rawMsgs/4), "--no-progress", "js.bench"); err != nil {
		return res, err
	}
	if res.RawAsync, err = benchCLI(cli, "bench", "js", "pub", "async", "--purge", "--clients", "1", "--msgs", msgs, "--no-progress", "js.bench"); err != nil {
		return res, err
	}
	if _, err := cli("stream", "add", "atomicbench", "--subjects", "ab.>", "--storage", "file", "--defaults", "--allow-batch"); err != nil {
		return res, err
	}
	if res.RawAtomic2, err = benchCLI(cli, "bench", "js", "pub", "atomic", "--stream", "atomicbench", "--batch", "2", "--clients", "1", "--msgs", strconv.Itoa(o.rawMsgs/10), "--no-progress", "ab.x"); err != nil {
		return res, err
	}
	for _, s := range []string{"benchstream", "atomicbench"} {
		_, _ = cli("stream", "rm", "-f", s)
	}
	logf("[%s] nats bench service, 8 clients", mode)
	serve := exec.Command(b.cli, "--server", url, "--no-context", "bench", "service", "serve", "--clients", "2", "--no-progress", "bench.svc")
	serve.Env = append(os.Environ(), "HOME="+dir)
	if err := serve.Start(); err != nil {
		return res, err
	}
	time.Sleep(500 * time.Millisecond)
	res.RawService, err = benchCLI(cli, "bench", "service", "request", "--clients", "8", "--msgs", strconv.Itoa(o.requests), "--no-progress", "bench.svc")
	_ = serve.Process.Kill()
	_ = serve.Wait()
	if err != nil {
		return res, err
	}

	logf("[%s] function host, WORKER_POOL_SIZE=%d", mode, o.workers)
	host, metricsURL, err := startHost(b, url, o.workers, "LOG_LEVEL=warn", "PPROF=on", fmt.Sprintf("PARTITIONS=%d", o.partitions))
	if err != nil {
		return res, err
	}
	defer stopProcess(host)
	time.Sleep(2 * time.Second)
	res.IdleRSSMB = rssMB(host.Process.Pid)

	load := loadGen(b, url, o.skus)
	logf("[%s] request path: inventory.get, 8 clients", mode)
	out, err := load("--requests", strconv.Itoa(o.requests), "--clients", "8")
	if err != nil {
		return res, fmt.Errorf("load generator: %w", err)
	}
	if err := json.Unmarshal(out, &res.Requests); err != nil {
		return res, err
	}

	seqs0, err := streamSeqs(url)
	if err != nil {
		return res, err
	}
	var confirmedTotal int
	peak := newPeak(host.Process.Pid)
	for _, c := range o.levels {
		logf("[%s] %d orders, %d clients, as fast as possible", mode, o.orders, c)
		var prof, sprof chan string
		if c == o.levels[len(o.levels)-1] && o.profileS > 0 {
			prof, sprof = make(chan string, 1), make(chan string, 1)
			go func() { prof <- cpuProfile(metricsURL, o.profileS, filepath.Join(dir, "host.pprof")) }()
			base, _ := serverProfs.Load(url)
			go func() { sprof <- cpuProfile(base.(string), o.profileS, filepath.Join(dir, "server.pprof")) }()
		}
		cpu := startCPU(srv.Process.Pid, host.Process.Pid)
		out, err := load("--orders", strconv.Itoa(o.orders), "--clients", strconv.Itoa(c), "--run", fmt.Sprintf("%s-c%d", mode, c))
		if err != nil {
			return res, fmt.Errorf("load generator: %w", err)
		}
		var r loadResult
		if err := json.Unmarshal(out, &r); err != nil {
			return res, err
		}
		r.CPU = cpu.stop()
		logf("[%s]   %.1f confirmed/s, create p99 %.2fms", mode, r.ConfirmedPerS, r.CreateP99Ms)
		res.Sweep = append(res.Sweep, r)
		confirmedTotal += r.Confirmed
		if r.ConfirmedPerS > res.Best.ConfirmedPerS {
			res.Best = r
		}
		if prof != nil {
			res.Profile, res.ServerProfile = <-prof, <-sprof
		}
	}
	res.LoadRSSMB = peak.stop()
	seqs1, err := streamSeqs(url)
	if err != nil {
		return res, err
	}
	for s, n := range seqs1 {
		if confirmedTotal > 0 {
			res.WritesPer[s] = float64(n-seqs0[s]) / float64(confirmedTotal)
		}
	}
	res.Steps, err = stepTimes(metricsURL)
	if err != nil {
		return res, err
	}

	rate := res.Best.ConfirmedPerS / 2
	n := max(int(rate*15), 200)
	logf("[%s] half the best throughput: %.0f orders/s, %d orders", mode, rate, n)
	out, err = load("--orders", strconv.Itoa(n), "--clients", "32", "--rate", fmt.Sprintf("%.1f", rate), "--run", mode+"-half")
	if err != nil {
		return res, fmt.Errorf("load generator: %w", err)
	}
	if err := json.Unmarshal(out, &res.Half); err != nil {
		return res, err
	}
	return res, nil
}

// natsCLI runs the pinned nats CLI against url, its home in dir.
func natsCLI(b bins, url, dir string) func(args ...string) (string, error) {
	return func(args ...string) (string, error) {
		cmd := exec.Command(b.cli, append([]string{"--server", url, "--no-context"}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("nats %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
}

// startHost starts the function host against url with env added, and
// waits until it is ready. It returns the process and its HTTP base URL.
func startHost(b bins, url string, workers int, env ...string) (*exec.Cmd, string, error) {
	httpPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	host := exec.Command(b.host)
	host.Env = append(append(os.Environ(), "NATS_URL="+url, fmt.Sprintf("HTTP_ADDR=127.0.0.1:%d", httpPort),
		fmt.Sprintf("WORKER_POOL_SIZE=%d", workers)), env...)
	host.Stdout, host.Stderr = os.Stderr, os.Stderr
	if err := host.Start(); err != nil {
		return nil, "", err
	}
	if err := waitHTTP(base + "/readyz"); err != nil {
		_ = host.Process.Kill()
		_ = host.Wait()
		return nil, "", err
	}
	return host, base, nil
}

// loadGen runs the load generator against url and returns its JSON.
func loadGen(b bins, url string, skus int) func(args ...string) ([]byte, error) {
	return func(args ...string) ([]byte, error) {
		cmd := exec.Command(b.load, append([]string{"--server", url, "--json", "--progress", "off", "--skus", strconv.Itoa(skus)}, args...)...)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("load generator: %w", err)
		}
		return out, nil
	}
}

func waitNATS(url string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		nc, err := nats.Connect(url)
		if err == nil {
			nc.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nats-server at %s: %w", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitHTTP(url string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready", url)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// natsBench is one `nats bench` result.
type natsBench struct {
	MsgsPerS float64
	P99Ms    float64
	Args     string
}

var (
	rateRE = regexp.MustCompile(`stats: ([\d,]+) msgs/sec`)
	p99RE  = regexp.MustCompile(`P99:? ([\d,.]+)(us|ms|s)\b`)
)

// parseBench reads the aggregate line of `nats bench` output (or the only
// stats line when there is one client).
func parseBench(out string) (natsBench, error) {
	var nb natsBench
	m := rateRE.FindAllStringSubmatch(out, -1)
	if len(m) == 0 {
		return nb, fmt.Errorf("no msgs/sec in nats bench output:\n%s", out)
	}
	agg := m[len(m)-1]
	nb.MsgsPerS, _ = strconv.ParseFloat(strings.ReplaceAll(agg[1], ",", ""), 64)
	if p := p99RE.FindAllStringSubmatch(out, -1); len(p) > 0 {
		last := p[len(p)-1]
		v, _ := strconv.ParseFloat(strings.ReplaceAll(last[1], ",", ""), 64)
		switch last[2] {
		case "us":
			v /= 1000
		case "s":
			v *= 1000
		}
		nb.P99Ms = v
	}
	return nb, nil
}

func benchCLI(cli func(...string) (string, error), args ...string) (natsBench, error) {
	out, err := cli(args...)
	if err != nil {
		return natsBench{}, err
	}
	nb, err := parseBench(out)
	nb.Args = "nats " + strings.Join(args, " ")
	return nb, err
}

// streamSeqs is the last sequence of each stream: how many writes it took.
func streamSeqs(url string) (map[string]uint64, error) {
	nc, err := nats.Connect(url)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[string]uint64{}
	streams := js.ListStreams(ctx)
	for info := range streams.Info() {
		out[logicalStream(info.Config.Name)] += info.State.LastSeq
	}
	return out, streams.Err()
}

// logicalStream names the partitions of a stream by the stream they split
// (ORDERS_3 is ORDERS), and any other stream by its name.
func logicalStream(name string) string {
	if i := strings.LastIndexByte(name, '_'); i > 0 {
		if _, err := strconv.Atoi(name[i+1:]); err == nil && (name[:i] == "ORDERS" || name[:i] == "KV_stock") {
			return name[:i]
		}
	}
	return name
}

// stepTimes reads the mean time each saga step took from /metrics.
func stepTimes(base string) ([]stepTime, error) {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	sums, counts := map[string]float64{}, map[string]float64{}
	re := regexp.MustCompile(`^orderflow_(message|request)_duration_seconds_(sum|count)\{(?:consumer="([^"]+)",)?function="([^"]+)"\} ([0-9.e+-]+)$`)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		m := re.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		key := m[4]
		if m[3] != "" {
			key = m[4] + " (" + m[3] + ")"
		}
		v, _ := strconv.ParseFloat(m[5], 64)
		if m[2] == "sum" {
			sums[key] = v
		} else {
			counts[key] = v
		}
	}
	var out []stepTime
	for k, n := range counts {
		if n >= 100 {
			out = append(out, stepTime{Consumer: k, Count: n, AvgMs: 1000 * sums[k] / n})
		}
	}
	slices.SortFunc(out, func(a, b stepTime) int { return cmp.Compare(b.AvgMs, a.AvgMs) })
	return out, sc.Err()
}

// cpuProfile takes a CPU profile of the process serving pprof at base,
// keeps it at path and returns its top entries.
func cpuProfile(base string, seconds int, path string) string {
	time.Sleep(500 * time.Millisecond) // let the load ramp up
	resp, err := http.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, seconds))
	if err != nil {
		return "profile failed: " + err.Error()
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return err.Error()
	}
	_, _ = f.ReadFrom(resp.Body)
	f.Close()
	out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=20", path).CombinedOutput()
	if err != nil {
		return "pprof failed: " + err.Error()
	}
	return string(out)
}

// rssMB is the resident memory of pid.
func rssMB(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// peak samples a process's RSS until stopped and keeps the highest.
type peak struct {
	mu   sync.Mutex
	max  float64
	done chan struct{}
}

func newPeak(pid int) *peak {
	p := &peak{done: make(chan struct{})}
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.done:
				return
			case <-t.C:
				v := rssMB(pid)
				p.mu.Lock()
				p.max = max(p.max, v)
				p.mu.Unlock()
			}
		}
	}()
	return p
}

func (p *peak) stop() float64 {
	close(p.done)
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.max
}

// cpuSampler measures CPU time of the server and host and the machine's
// idle and I/O wait between start and stop.
type cpuSampler struct {
	server, host int
	s0, h0       float64
	t0           []float64
	at           time.Time
}

func procCPU(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	k, _ := strconv.ParseFloat(f[12], 64)
	return (u + k) / 100 // clock ticks; USER_HZ is 100 on Linux
}

func machineCPU() []float64 {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil
	}
	line, _, _ := strings.Cut(string(data), "\n")
	var out []float64
	for _, f := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseFloat(f, 64)
		out = append(out, v)
	}
	return out
}

func startCPU(server, host int) *cpuSampler {
	return &cpuSampler{server: server, host: host, s0: procCPU(server), h0: procCPU(host), t0: machineCPU(), at: time.Now()}
}

func (c *cpuSampler) stop() cpuUse {
	secs := time.Since(c.at).Seconds()
	u := cpuUse{
		ServerPct: 100 * (procCPU(c.server) - c.s0) / secs,
		HostPct:   100 * (procCPU(c.host) - c.h0) / secs,
	}
	t1 := machineCPU()
	if len(t1) >= 5 && len(c.t0) >= 5 {
		var total float64
		for i := range t1 {
			total += t1[i] - c.t0[i]
		}
		if total > 0 {
			u.IdlePct = 100 * (t1[3] - c.t0[3]) / total
			u.IOWaitPct = 100 * (t1[4] - c.t0[4]) / total
		}
	}
	return u
}

type machineInfo struct {
	CPU, Kernel, Go, Date string
	Cores                 int
}

func machine() machineInfo {
	m := machineInfo{Cores: runtime.NumCPU(), Go: runtime.Version(), Date: time.Now().UTC().Format("2006-01-02 15:04 UTC")}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if rest, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(rest), ":"))
				break
			}
		}
	}
	if out, err := exec.Command("uname", "-sr").Output(); err == nil {
		m.Kernel = string(bytes.TrimSpace(out))
	}
	return m
}
