# The function host as a container: one image, any subset of functions
# (FUNCTIONS), pointed at a NATS cluster (NATS_URL).
#   docker build -t orderflow .
#   docker run --rm -e NATS_URL=nats://nats:4222 -p 8080:8080 orderflow
# Without NATS_URL it embeds a JetStream server (store in /data).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/orderflow ./functions \
 && mkdir -p /out/data

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/
COPY --from=build /out/orderflow /orderflow
COPY --from=build --chown=65532:65532 /out/data /data
COPY nats.conf /nats.conf
USER 65532:65532
ENV HTTP_ADDR=:8080 NATS_CONF=/nats.conf NATS_STORE_DIR=/data
EXPOSE 8080 4222
ENTRYPOINT ["/orderflow"]
