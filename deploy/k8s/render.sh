#!/usr/bin/env bash
# Renders what deploy/k8s/base vendors, from this checkout:
#   base/nats.yaml  the official NATS Helm chart with nats/values.yaml
#                   (CHART: a checkout of the chart, helm/charts/nats of
#                   github.com/nats-io/k8s; helm from the Go module proxy)
#   base/auth.conf  `orderflow authz`, the roles' permissions
# CI checks both are up to date with the code (deploy module tests).
set -euo pipefail
cd "$(dirname "$0")"
PARTITIONS="${PARTITIONS:-4}"
(cd ../.. && PARTITIONS="$PARTITIONS" go run ./functions authz) > base/auth.conf
if [ -n "${CHART:-}" ]; then
  HELM="${HELM:-go run helm.sh/helm/v3/cmd/helm@v3.22.0}"
  {
    echo "# Rendered by deploy/k8s/render.sh: the official NATS Helm chart $(sed -n 's/^version: //p' "$CHART/Chart.yaml") with nats/values.yaml. Do not edit."
    $HELM template nats "$CHART" --namespace orderflow -f nats/values.yaml
  } > base/nats.yaml
fi
