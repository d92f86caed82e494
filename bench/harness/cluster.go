package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
)

// clusterResult is what the harness measures on a 3-node R3 cluster.
type clusterResult struct {
	RawSync  natsBench
	RawAsync natsBench
	// Load runs as many clients as the R1 row it is compared with, with
	// clusterPartitions partitions; OnePartition the same load on a store
	// of one partition, for what partitions give on a cluster.
	Load         loadResult
	OnePartition loadResult
	// Stall is a create probe while the leader of ORDERS is killed.
	Stall stallResult
}

// stallResult is what a leader kill under load did to requests.
type stallResult struct {
	Killed      string  // node killed, and what it led
	Down        float64 // seconds it stayed down
	ElectionS   float64 // kill to a new leader of ORDERS
	MaxCreateS  float64 // longest create, first send to reply, retried with its key
	Creates     int     // creates the probe placed during the run
	SlowCreates int     // creates that took over a second
	Load        loadResult
}

// node is one nats-server process of the bench cluster.
type node struct {
	name, conf, url, monitor string
	cmd                      *exec.Cmd
}

func (n *node) start(bin string) error {
	n.cmd = exec.Command(bin, "-c", n.conf)
	if err := n.cmd.Start(); err != nil {
		return err
	}
	return waitNATS(n.url)
}

func (n *node) kill() {
	if n.cmd != nil && n.cmd.Process != nil {
		_ = n.cmd.Process.Signal(syscall.SIGKILL)
		_ = n.cmd.Wait()
	}
}

var (
	topPortRE   = regexp.MustCompile(`^port: \d+`)
	routePortRE = regexp.MustCompile(`^(\s+)port: \d+`)
	routeRE     = regexp.MustCompile(`nats://127\.0\.0\.1:622(\d)`)
)

// clusterConfs writes deploy/cluster's node configs with this run's ports
// and stores, so that what is measured is what `task cluster:up` starts.
func clusterConfs(dir string) ([]*node, error) {
	acc, err := os.ReadFile("deploy/cluster/accounts.conf")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "accounts.conf"), acc, 0o644); err != nil {
		return nil, err
	}
	var client, route, mon [3]int
	for i := range 3 {
		for _, p := range []*int{&client[i], &route[i], &mon[i]} {
			if *p, err = freePort(); err != nil {
				return nil, err
			}
		}
	}
	var nodes []*node
	for i := range 3 {
		name := fmt.Sprintf("n%d", i+1)
		src, err := os.ReadFile(filepath.Join("deploy/cluster", name+".conf"))
		if err != nil {
			return nil, err
		}
		var out []string
		for _, line := range strings.Split(string(src), "\n") {
			switch t := strings.TrimSpace(line); {
			case topPortRE.MatchString(line):
				line = fmt.Sprintf("port: %d", client[i])
			case strings.HasPrefix(line, "http:"):
				line = fmt.Sprintf("http: 127.0.0.1:%d", mon[i])
			case strings.HasPrefix(t, "store_dir:"):
				line = fmt.Sprintf("  store_dir: %q", filepath.Join(dir, name))
			case routePortRE.MatchString(line):
				line = fmt.Sprintf("  port: %d", route[i])
			case routeRE.MatchString(line):
				j, _ := strconv.Atoi(routeRE.FindStringSubmatch(line)[1])
				line = fmt.Sprintf("    nats://127.0.0.1:%d", route[j-2])
			}
			out = append(out, line)
		}
		conf := filepath.Join(dir, name+".conf")
		if err := os.WriteFile(conf, []byte(strings.Join(out, "\n")), 0o644); err != nil {
			return nil, err
		}
		nodes = append(nodes, &node{name: name, conf: conf, url: fmt.Sprintf("nats://127.0.0.1:%d", client[i]), monitor: fmt.Sprintf("http://127.0.0.1:%d", mon[i])})
	}
	return nodes, nil
}

// runCluster measures the R3 rows: raw publish on an R3 stream, orderflow
// at clients clients with STREAM_REPLICAS=3, and the stall of creates while
// the leader of ORDERS is killed with SIGKILL and restarted.
func runCluster(o options, b bins, dir string, clients int) (clusterResult, error) {
	var res clusterResult
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	nodes, err := clusterConfs(dir)
	if err != nil {
		return res, err
	}
	defer func() {
		for _, n := range nodes {
			n.kill()
		}
	}()
	logf("[r3] three nats-servers from deploy/cluster")
	for _, n := range nodes {
		if err := n.start(b.server); err != nil {
			return res, err
		}
	}
	for _, n := range nodes {
		if err := waitHTTP(n.monitor + "/healthz"); err != nil {
			return res, err
		}
	}
	var urls []string
	for _, n := range nodes {
		urls = append(urls, n.url)
	}
	url := strings.Join(urls, ",")

	cli := natsCLI(b, url, dir)
	logf("[r3] nats bench js pub sync/async, R3 stream")
	if res.RawSync, err = benchCLI(cli, "bench", "js", "pub", "sync", "--create", "--replicas", "3", "--purge", "--clients", "1", "--msgs", strconv.Itoa(o.rawMsgs/4), "--no-progress", "js.bench"); err != nil {
		return res, err
	}
	if res.RawAsync, err = benchCLI(cli, "bench", "js", "pub", "async", "--purge", "--clients", "1", "--msgs", strconv.Itoa(o.rawMsgs), "--no-progress", "js.bench"); err != nil {
		return res, err
	}
	_, _ = cli("stream", "rm", "-f", "benchstream")

	gen := loadGen(b, url, o.skus)
	load := func(args ...string) (loadResult, error) {
		var r loadResult
		out, err := gen(args...)
		if err != nil {
			return r, err
		}
		return r, json.Unmarshal(out, &r)
	}
	// One partition first, on a store of its own, then the store is
	// removed (a store keeps the count it was provisioned with).
	logf("[r3] function host, STREAM_REPLICAS=3, PARTITIONS=1, WORKER_POOL_SIZE=%d", o.workers)
	host, _, err := startHost(b, url, o.workers, "LOG_LEVEL=error", "STREAM_REPLICAS=3", "PARTITIONS=1")
	if err != nil {
		return res, err
	}
	logf("[r3] %d orders, %d clients, one partition", o.orders, clients)
	cpu := startCPU(0, host.Process.Pid)
	res.OnePartition, err = load("--orders", strconv.Itoa(o.orders), "--clients", strconv.Itoa(clients), "--run", fmt.Sprintf("r3-p1-c%d", clients))
	res.OnePartition.CPU = cpu.stop()
	stopProcess(host)
	if err != nil {
		return res, err
	}
	logf("[r3]   %.1f confirmed/s, create p99 %.2fms", res.OnePartition.ConfirmedPerS, res.OnePartition.CreateP99Ms)
	if err := removeStreams(url); err != nil {
		return res, err
	}

	logf("[r3] function host, STREAM_REPLICAS=3, PARTITIONS=%d, WORKER_POOL_SIZE=%d", clusterPartitions, o.workers)
	host, _, err = startHost(b, url, o.workers, "LOG_LEVEL=error", "STREAM_REPLICAS=3", fmt.Sprintf("PARTITIONS=%d", clusterPartitions))
	if err != nil {
		return res, err
	}
	defer stopProcess(host)
	logf("[r3] %d orders, %d clients, %d partitions", o.orders, clients, clusterPartitions)
	cpu = startCPU(0, host.Process.Pid)
	if res.Load, err = load("--orders", strconv.Itoa(o.orders), "--clients", strconv.Itoa(clients), "--run", fmt.Sprintf("r3-c%d", clients)); err != nil {
		return res, err
	}
	res.Load.CPU = cpu.stop()
	logf("[r3]   %.1f confirmed/s, create p99 %.2fms", res.Load.ConfirmedPerS, res.Load.CreateP99Ms)

	res.Stall, err = stall(nodes, b.server, url, load, res.Load.ConfirmedPerS/2)
	return res, err
}

// clusterPartitions is the partition count of the cluster's main rows.
const clusterPartitions = 8

// removeStreams deletes every stream on the server at url.
func removeStreams(url string) error {
	nc, err := nats.Connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	names := js.StreamNames(ctx)
	var all []string
	for n := range names.Name() {
		all = append(all, n)
	}
	if err := names.Err(); err != nil {
		return err
	}
	for _, n := range all {
		if err := js.DeleteStream(ctx, n); err != nil {
			return fmt.Errorf("remove stream %s: %w", n, err)
		}
	}
	return nil
}

// stall kills the leader of ORDERS with SIGKILL under a load at rate
// orders/s, keeps it down 5s and starts it again, while a probe places one
// order after another, each retried with its Idempotency-Key until it is
// acknowledged, as a careful client does. It reports how long the longest
// create took and how long the stream went without a leader.
func stall(nodes []*node, server, url string, load func(...string) (loadResult, error), rate float64) (stallResult, error) {
	const down = 5 * time.Second
	res := stallResult{Down: down.Seconds()}
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		return res, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return res, err
	}
	if err := request(nc, "inventory.restock", &ordersv1.RestockRequest{Sku: "STALL", Quantity: 1_000_000}, &ordersv1.RestockResponse{}, nil); err != nil {
		return res, err
	}
	leader := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s, err := js.Stream(ctx, "ORDERS_0")
		if err != nil || s.CachedInfo().Cluster == nil {
			return ""
		}
		return s.CachedInfo().Cluster.Leader
	}

	var wg sync.WaitGroup
	var loadErr error
	wg.Go(func() {
		logf("[r3] leader kill under %.0f orders/s for 25s", rate)
		res.Load, loadErr = load("--duration", "25s", "--clients", "8", "--rate", fmt.Sprintf("%.1f", rate), "--run", "r3-stall")
	})
	quit := make(chan struct{})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-quit:
				return
			default:
			}
			req := &ordersv1.CreateOrderRequest{CustomerId: "stall", Currency: "USD",
				Items: []*ordersv1.OrderItem{{Sku: "STALL", Quantity: 1, UnitPriceMinor: 100}}}
			hdr := nats.Header{"Idempotency-Key": []string{fmt.Sprintf("stall-%d", i)}}
			start := time.Now()
			for request(nc, "orders.create", req, &ordersv1.CreateOrderResponse{}, hdr) != nil {
				time.Sleep(50 * time.Millisecond)
			}
			took := time.Since(start)
			res.Creates++
			res.MaxCreateS = max(res.MaxCreateS, took.Seconds())
			if took > time.Second {
				res.SlowCreates++
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	time.Sleep(5 * time.Second)
	victim := leader()
	var killed *node
	for _, n := range nodes {
		if n.name == victim {
			killed = n
		}
	}
	if killed == nil {
		close(quit)
		wg.Wait()
		return res, fmt.Errorf("no leader of ORDERS to kill")
	}
	res.Killed = victim
	logf("[r3] kill -9 %s", res.Killed)
	killed.kill()
	at := time.Now()
	for l := leader(); l == "" || l == victim; l = leader() {
		if time.Since(at) > time.Minute {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	res.ElectionS = time.Since(at).Seconds()
	time.Sleep(down - time.Since(at))
	if err := killed.start(server); err != nil {
		close(quit)
		wg.Wait()
		return res, err
	}
	time.Sleep(10 * time.Second)
	close(quit)
	wg.Wait()
	logf("[r3]   new leader after %.1fs, longest create %.1fs", res.ElectionS, res.MaxCreateS)
	return res, loadErr
}

// request sends a protobuf request and decodes the reply; a micro error is
// an error.
func request(nc *nats.Conn, subject string, in, out proto.Message, hdr nats.Header) error {
	data, err := proto.Marshal(in)
	if err != nil {
		return err
	}
	m := nats.NewMsg(subject)
	m.Data = data
	for k, v := range hdr {
		m.Header[k] = v
	}
	reply, err := nc.RequestMsg(m, 5*time.Second)
	if err != nil {
		return err
	}
	if code := reply.Header.Get("Nats-Service-Error-Code"); code != "" {
		return fmt.Errorf("%s: %s %s", subject, code, reply.Header.Get("Nats-Service-Error"))
	}
	return proto.Unmarshal(reply.Data, out)
}
