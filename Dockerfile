# orderflow's images, FROM scratch: the function host (target `orderflow`)
# and a nats-server of the version go.mod pins (target `nats-server`, for
# local use and tests; a real deployment uses the official `nats` image).
#
# The final images are made from dist/: static binaries and a CA bundle.
# Two ways to fill it, one layout:
#   - with no registry (this machine, CI): `task image` (deploy/image.sh)
#     fills dist/ with `go build` and builds the targets; the stages below
#     the final ones are never reached (the classic builder stops at the
#     target, BuildKit builds only what the target needs);
#   - with a registry: the `build` stage (FROM golang) makes the same dist/,
#     taken out with BuildKit (`docker build --target dist-out -o dist .`),
#     then the same targets.
# Either way the CA certificates are deploy/cacerts's PEM bundle of
# golang.org/x/crypto/x509roots: one source.

FROM scratch AS dist
COPY dist/ /dist/

# The function host: non-root, any subset of functions (FUNCTIONS), pointed
# at a NATS cluster (NATS_URL); without NATS_URL it embeds a JetStream
# server with its store in /data, the one path it writes.
FROM scratch AS orderflow
COPY --from=dist /dist/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=dist /dist/orderflow /orderflow
COPY --from=dist --chown=65532:65532 /dist/data /data
COPY nats.conf /nats.conf
USER 65532:65532
ENV HTTP_ADDR=:8080 NATS_CONF=/nats.conf NATS_STORE_DIR=/data
EXPOSE 8080 4222
ENTRYPOINT ["/orderflow"]

# nats-server, with /orderflow for its health check (`orderflow probe
# http://127.0.0.1:8222/healthz`): a scratch image has no shell or curl.
FROM scratch AS nats-server
COPY --from=dist /dist/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=dist /dist/nats-server /nats-server
COPY --from=dist /dist/orderflow /orderflow
COPY --from=dist --chown=65532:65532 /dist/data /data
USER 65532:65532
EXPOSE 4222 6222 8222
ENTRYPOINT ["/nats-server"]

# For builders with a registry: dist/ made in a golang container.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
COPY deploy/go.mod deploy/go.sum deploy/
RUN go mod download && cd deploy && go mod download
COPY . .
RUN mkdir -p /dist/data \
 && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /dist/orderflow ./functions \
 && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /dist/nats-server github.com/nats-io/nats-server/v2 \
 && cd deploy && go run ./cacerts > /dist/ca-certificates.crt

FROM scratch AS dist-out
COPY --from=build /dist/ /
