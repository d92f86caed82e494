//go:build docker

package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/runtime/authz"
)

// The compose stack of deploy/compose.yaml (images built by
// deploy/image.sh, three nats-server containers in the secure mode, pods
// per role) under a careful client's load from this process, while a nats
// container is killed with SIGKILL and restarted, a pod is killed, a nats
// node is cut off from the others for 10s and healed, and a saga step is
// scaled from 1 to 3 pods. Then every invariant of the design must hold.
// Run by .ci/run with -tags docker; without Docker it fails.
func TestContainers(t *testing.T) {
	for _, tool := range []string{"docker", "docker-compose"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed by the container test (-tags docker): %v", tool, err)
		}
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	project := fmt.Sprintf("oftest%d", rand.IntN(1_000_000))
	ports := []int{freePort(t), freePort(t), freePort(t)}
	env := append(os.Environ(),
		"COMPOSE_PROJECT_NAME="+project,
		"ORDERFLOW_IMAGE=orderflow:test", "NATS_IMAGE=orderflow-nats:test",
		fmt.Sprintf("NATS_PORT_1=%d", ports[0]), fmt.Sprintf("NATS_PORT_2=%d", ports[1]), fmt.Sprintf("NATS_PORT_3=%d", ports[2]),
		"LOG_LEVEL=warn",
	)
	// The fault tests' settings: a flaky gateway whose charge retries
	// outlast its failures, every other step with attempts far shorter than
	// an outage, short ack waits.
	env = append(env, faultSettings()...)
	run := func(timeout time.Duration, name string, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir, cmd.Env = repo, env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	sh := func(timeout time.Duration, name string, args ...string) string {
		t.Helper()
		out, err := run(timeout, name, args...)
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return out
	}
	compose := func(args ...string) string {
		t.Helper()
		return sh(3*time.Minute, "deploy/compose.sh", args...)
	}

	sh(10*time.Minute, "deploy/image.sh")
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := run(time.Minute, "deploy/compose.sh", "logs", "--no-color", "--timestamps")
			path := filepath.Join(repo, "bin", project+".log")
			_ = os.MkdirAll(filepath.Dir(path), 0o755)
			if err := os.WriteFile(path, []byte(logs), 0o644); err == nil {
				t.Logf("container logs kept in %s", path)
			}
		}
		if out, err := run(3*time.Minute, "deploy/compose.sh", "down"); err != nil {
			t.Errorf("down: %v\n%s", err, out)
		}
	})
	start := time.Now()
	compose("up")
	t.Logf("stack healthy in %s", time.Since(start).Round(time.Second))

	pw := passwords(t, filepath.Join(repo, "deploy", ".env"))
	var urls []string
	for _, p := range ports {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	url := strings.Join(urls, ",")
	as := func(role string) []nats.Option {
		return []nats.Option{nats.UserInfo(role, pw[role]), nats.CustomInboxPrefix(authz.Inbox(role))}
	}
	connect := func(role string) *nats.Conn {
		t.Helper()
		nc, err := nats.Connect(url, append(as(role), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	ops, admin := connect("ops"), connect("admin")

	container := func(service string, n int) string { return fmt.Sprintf("%s_%s_%d", project, service, n) }
	network := project + "_default"
	// At least 400 orders, and orders placed until the faults are over (at
	// most 3000), so every fault happens under load.
	const orders = 400
	// A careful client: it retries with its key (faultLoad), and pings its
	// server every 2s, so a server cut off from it is left within seconds.
	l := newFaultLoad(t, url, map[string]int32{"A": 2000, "B": 20}, func(l *faultLoad) {
		l.connect = append(as("client"), nats.PingInterval(2*time.Second), nats.MaxPingsOutstanding(2))
		l.ops = ops
	})
	start = time.Now()
	ids := l.run(8, orders, 3000, 10*time.Millisecond, func() {
		waitCount(&l.acked, orders/5)
		t.Log("kill -9 nats-2, and start it again")
		sh(time.Minute, "docker", "kill", "-s", "KILL", container("nats-2", 1))
		time.Sleep(2 * time.Second)
		sh(time.Minute, "docker", "start", container("nats-2", 1))

		waitCount(&l.acked, 2*orders/5)
		t.Log("kill -9 a payments pod, and start it again")
		sh(time.Minute, "docker", "kill", "-s", "KILL", container("payments", 1))
		time.Sleep(2 * time.Second)
		sh(time.Minute, "docker", "start", container("payments", 1))

		waitCount(&l.acked, 3*orders/5)
		t.Log("cut nats-3 off the others for 10s")
		sh(time.Minute, "docker", "network", "disconnect", network, container("nats-3", 1))
		time.Sleep(10 * time.Second)
		sh(time.Minute, "docker", "network", "connect", "--alias", "nats-3", network, container("nats-3", 1))

		waitCount(&l.acked, 4*orders/5)
		t.Log("scale inventory.reserve from 1 pod to 3")
		compose("up", "--no-recreate", "--scale", "reserve=3")
	})
	t.Logf("%d orders placed in %s; the longest create, first send to acknowledgement (retried with its key): %s",
		len(ids), time.Since(start).Round(time.Second), time.Duration(l.slowest.Load()).Round(time.Millisecond))
	if n := strings.Count(compose("ps", "-q", "reserve"), "\n"); n != 3 {
		t.Errorf("reserve pods after scaling: %d, want 3", n)
	}
	l.verify(&testSystem{nc: admin, js: must[jetstream.JetStream](t)(jetstream.New(admin))})
}

// passwords reads the roles' passwords deploy/compose.sh wrote.
func passwords(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pw := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if role, found := strings.CutSuffix(strings.TrimPrefix(k, "ORDERFLOW_"), "_PASSWORD"); ok && found {
			pw[strings.ToLower(role)] = v
		}
	}
	return pw
}
