#!/usr/bin/env bash
# A local 3-node JetStream cluster of the nats-server pinned in go.mod.
#
#   deploy/cluster/cluster.sh up       build nats-server into bin/, start n1..n3, wait for a meta leader
#   deploy/cluster/cluster.sh down     stop them (the stores stay in data/cluster/)
#   deploy/cluster/cluster.sh kill N   kill -9 node N (1..3), for chaos by hand
#   deploy/cluster/cluster.sh start N  start node N again
#   deploy/cluster/cluster.sh status   which nodes run
#
# Run from anywhere; paths are relative to the repository. Logs are in
# data/cluster/nN.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
run=data/cluster
bin=bin/nats-server
mkdir -p "$run"

pidof_node() { cat "$run/n$1.pid" 2>/dev/null || true; }
running() { local p; p=$(pidof_node "$1"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

start_node() {
  if running "$1"; then echo "n$1 already runs (pid $(pidof_node "$1"))"; return; fi
  nohup "$bin" -c "deploy/cluster/n$1.conf" >>"$run/n$1.log" 2>&1 &
  echo $! >"$run/n$1.pid"
  echo "n$1 started (pid $!), client port 422$(( $1 + 1 ))"
}

wait_ready() {
  for _ in $(seq 1 100); do
    if (exec 3<>/dev/tcp/127.0.0.1/8222) 2>/dev/null && curl_ok; then return 0; fi
    sleep 0.2
  done
  echo "the cluster did not elect a meta leader in 20s; see $run/n*.log" >&2
  return 1
}

# curl_ok asks n1..n3's monitoring port whether the cluster has a meta leader,
# without curl: bash's /dev/tcp speaks enough HTTP.
curl_ok() {
  local n port resp
  for n in 1 2 3; do
    port=822$(( n + 1 ))
    resp=$( (exec 3<>/dev/tcp/127.0.0.1/$port && printf 'GET /jsz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3 && cat <&3) 2>/dev/null || true)
    if grep -q '"leader": *"n[123]"' <<<"$resp"; then return 0; fi
  done
  return 1
}

case "${1:-}" in
up)
  for p in 4222 4223 4224 6222 6223 6224; do
    if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && ! running 1 && ! running 2 && ! running 3; then
      echo "port $p is taken: stop what uses it (another nats-server, or go run ./functions) first" >&2
      exit 1
    fi
  done
  if [ ! -x "$bin" ] || [ go.mod -nt "$bin" ]; then
    echo "building nats-server (version from go.mod) into $bin"
    go build -o "$bin" github.com/nats-io/nats-server/v2
  fi
  for n in 1 2 3; do start_node "$n"; done
  wait_ready
  echo "cluster up: NATS_URL=nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224"
  ;;
down)
  for n in 1 2 3; do
    if running "$n"; then kill "$(pidof_node "$n")"; fi
  done
  for n in 1 2 3; do
    for _ in $(seq 1 100); do running "$n" || break; sleep 0.1; done
    if running "$n"; then kill -9 "$(pidof_node "$n")"; fi
    rm -f "$run/n$n.pid"
    echo "n$n stopped"
  done
  ;;
kill)
  n=${2:?node 1..3}
  if running "$n"; then kill -9 "$(pidof_node "$n")"; echo "n$n killed"; fi
  rm -f "$run/n$n.pid"
  ;;
start)
  start_node "${2:?node 1..3}"
  ;;
status)
  for n in 1 2 3; do
    if running "$n"; then echo "n$n runs (pid $(pidof_node "$n"))"; else echo "n$n stopped"; fi
  done
  ;;
*)
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac
