#!/usr/bin/env bash
# task image: the static binaries and the CA bundle into dist/, then the
# function host and nats-server images FROM scratch (Dockerfile, DIST=local:
# no registry needed). ORDERFLOW_IMAGE and NATS_IMAGE name them.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf dist && mkdir -p dist/data
export CGO_ENABLED=0
go build -trimpath -ldflags="-s -w" -o dist/orderflow ./functions
go build -trimpath -ldflags="-s -w" -o dist/nats-server github.com/nats-io/nats-server/v2
(cd deploy && go run ./cacerts) > dist/ca-certificates.crt
# The classic builder: it stops at the target, before the golang stage.
DOCKER_BUILDKIT=0 docker build -q --target orderflow -t "${ORDERFLOW_IMAGE:-orderflow:dev}" .
DOCKER_BUILDKIT=0 docker build -q --target nats-server -t "${NATS_IMAGE:-orderflow-nats:dev}" .
