#!/usr/bin/env bash
# The compose stack (deploy/compose.yaml), for docker-compose v1.
#   deploy/compose.sh up     passwords (deploy/.env, made once), permissions
#                            (deploy/compose/auth.conf, from `orderflow authz`),
#                            then the stack; returns when every pod is healthy
#   deploy/compose.sh down   removes containers, network and volumes
#   deploy/compose.sh ps | logs | <any docker-compose command>
# COMPOSE_PROJECT_NAME (default orderflow), NATS_PORT_1..3 (4222..4224),
# ORDERFLOW_IMAGE and NATS_IMAGE (task image's) and PARTITIONS (4) may be set,
# and the pods' settings (PAYMENT_FAILURE_RATE, RETRY_POLICY, LOG_LEVEL, ...):
#   PAYMENT_FAILURE_RATE=0.05 PAYMENT_LATENCY=20ms deploy/compose.sh up
set -euo pipefail
cd "$(dirname "$0")"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-orderflow}"
compose() { docker-compose -f compose.yaml "$@"; }

roles=(orders inventory payments deadletters functions client ops admin)

case "${1:-}" in
up)
  shift
  if [ ! -f .env ]; then
    (
      umask 077
      for r in "${roles[@]}"; do
        printf 'ORDERFLOW_%s_PASSWORD=%s\n' "${r^^}" "$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
      done > .env
    )
  fi
  # The permissions follow the functions' declarations and the partition
  # count: made from the code of this checkout, every time.
  (cd .. && PARTITIONS="${PARTITIONS:-4}" go run ./functions authz) > compose/auth.conf
  # The pods' settings, from this environment: only what is set.
  env | grep -E '^(PAYMENT_[A-Z_]+|RETRY_POLICY[A-Z_]*|ACK_WAIT|REQUEST_TIMEOUT|DRAIN_TIMEOUT|OUTAGE_HORIZON|ORDER_RETENTION|MAX_PENDING_ORDERS|WORKER_POOL_SIZE|LOG_LEVEL|OTEL_[A-Z_]+)=' > compose/pods.env || true
  # Read by the servers' user in the containers; neither holds a secret.
  chmod 0644 compose/auth.conf compose/pods.env
  compose up -d --remove-orphans "$@"
  deadline=$((SECONDS + ${UP_TIMEOUT:-180}))
  while :; do
    waiting=""
    for id in $(compose ps -q); do
      state=$(docker inspect --format '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id")
      case "$state" in
      *provision*" exited "*) ;;
      *" running healthy") ;;
      *) waiting="$waiting ${state%% *}" ;;
      esac
    done
    [ -z "$waiting" ] && break
    if [ $SECONDS -ge $deadline ]; then
      echo "not healthy after ${UP_TIMEOUT:-180}s:$waiting" >&2
      compose ps >&2
      exit 1
    fi
    sleep 2
  done
  compose ps
  ;;
down)
  compose down -v --remove-orphans --timeout 20
  ;;
"")
  sed -n '2,10p' "$0" >&2
  exit 2
  ;;
*)
  compose "$@"
  ;;
esac
