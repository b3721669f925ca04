#!/usr/bin/env bash
# Build and smoke-test both images where no image registry is reachable (Docker Hub, gcr.io).
#
# It makes the base images from Debian packages instead of pulling them:
#   meshplane-local/python:3.11-bookworm  debootstrap'd bookworm + python3 (3.11), venv, passwd
#   meshplane-local/golang:<go version>   the same rootfs + this machine's Go toolchain
# and builds the unchanged Dockerfiles with --build-arg PYTHON_IMAGE / GO_IMAGE and
# RUNTIME_IMAGE=scratch (distroless is a registry image too). Then it runs the images as the chart
# does: read-only root filesystem, non-root uid, a tmpfs for /tmp.
#
# The host's CA bundle is copied into the local base images, so builds also work behind a
# TLS-inspecting proxy. Needs root, a running Docker engine (e.g. dockerd --iptables=false --ip6tables=false
# --bridge=none --storage-driver=vfs), debootstrap, and PyPI / the Go module proxy for the builds
# (builds use --network=host, as a bridge-less dockerd has no other network).
#
# Usage: deploy/docker/verify-local.sh [--rootfs DIR] [--tag TAG]
set -euo pipefail
cd "$(dirname "$0")/../.."

ROOTFS=${ROOTFS:-/tmp/meshplane-rootfs}
TAG=${TAG:-dev}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
while [ $# -gt 0 ]; do
  case $1 in
    --rootfs) ROOTFS=$2; shift 2 ;;
    --tag) TAG=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

step() { printf '\n==== %s\n' "$*"; }
GO_VERSION=$(go env GOVERSION)
PY_BASE=meshplane-local/python:3.11-bookworm
GO_BASE=meshplane-local/golang:${GO_VERSION#go}
CP_IMAGE=meshplane-local/meshplane:$TAG
GW_IMAGE=meshplane-local/meshplane-gateway:$TAG

docker info >/dev/null 2>&1 || { echo "no Docker engine reachable (start dockerd first)" >&2; exit 1; }

if ! docker image inspect "$PY_BASE" >/dev/null 2>&1 || ! docker image inspect "$GO_BASE" >/dev/null 2>&1; then
  if [ ! -x "$ROOTFS/usr/bin/python3" ]; then
    step "debootstrap bookworm into $ROOTFS"
    debootstrap --variant=minbase --include=python3,python3-venv,passwd,ca-certificates \
      bookworm "$ROOTFS" "$MIRROR"
  fi
  # Trust what this machine trusts (e.g. a TLS-inspecting egress proxy's CA), so pip and go
  # inside the builds reach PyPI and the module proxy as the host does. Local images only.
  cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
  step "docker import $PY_BASE"
  tar -C "$ROOTFS" --exclude=./proc --exclude=./sys --exclude=./dev -c . \
    | docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' - "$PY_BASE"
  step "docker import $GO_BASE (rootfs + $(go env GOROOT))"
  build=$(mktemp -d)
  trap 'rm -rf "$build"' EXIT
  mkdir -p "$build/usr/local"
  cp -a "$(go env GOROOT)" "$build/usr/local/go"
  { tar -C "$ROOTFS" --exclude=./proc --exclude=./sys --exclude=./dev -cf - . ; } >"$build/base.tar"
  tar -C "$build" -rf "$build/base.tar" ./usr/local/go
  docker import \
    --change 'ENV PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV GOTOOLCHAIN=local' "$build/base.tar" "$GO_BASE"
fi

step "docker build $CP_IMAGE"
docker build --network=host -f deploy/docker/controlplane.Dockerfile \
  --build-arg PYTHON_IMAGE="$PY_BASE" -t "$CP_IMAGE" .
step "docker build $GW_IMAGE"
docker build --network=host -f deploy/docker/gateway.Dockerfile \
  --build-arg GO_IMAGE="$GO_BASE" --build-arg RUNTIME_IMAGE=scratch -t "$GW_IMAGE" .

run_like_chart() { # image uid args...
  local image=$1 uid=$2; shift 2
  docker run --rm --network=none --read-only --tmpfs /tmp --user "$uid:$uid" \
    --cap-drop=ALL --security-opt=no-new-privileges "$image" "$@"
}

step "smoke tests (read-only rootfs, non-root, no capabilities)"
echo "control plane user: $(docker image inspect -f '{{.Config.User}} entrypoint={{json .Config.Entrypoint}} cmd={{json .Config.Cmd}}' "$CP_IMAGE")"
echo "gateway user:       $(docker image inspect -f '{{.Config.User}} entrypoint={{json .Config.Entrypoint}}' "$GW_IMAGE")"
run_like_chart "$CP_IMAGE" 10001 --help
run_like_chart "$CP_IMAGE" 10001 db --help
run_like_chart "$GW_IMAGE" 65532 --help
HELM=${HELM:-.tools/bin/helm}
if [ -x "$HELM" ] && command -v nsenter >/dev/null && command -v curl >/dev/null; then
  step "gateway with exactly the env the chart renders (no network but loopback)"
  env_file=$(mktemp)
  "$HELM" template meshplane deploy/helm/meshplane --show-only templates/gateway-configmap.yaml \
    | sed -n 's/^  \(MESHPLANE_[A-Z0-9_]*\): "\{0,1\}\([^"]*\)"\{0,1\}$/\1=\2/p' >"$env_file"
  cid=$(docker run -d --network=none --read-only --tmpfs /tmp --user 65532:65532 --cap-drop=ALL \
    --security-opt=no-new-privileges --env-file "$env_file" "$GW_IMAGE")
  pid=$(docker inspect -f '{{.State.Pid}}' "$cid")
  code() { nsenter -t "$pid" -n curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://127.0.0.1:8080$1" || true; }
  for _ in $(seq 50); do [ "$(code /healthz)" = 200 ] && break; sleep 0.2; done
  result="healthz=$(code /healthz) readyz=$(code /readyz) openapi=$(code /openapi.json) docs=$(code /docs/)"
  docker stop -t 15 "$cid" >/dev/null
  stopped=$(docker logs "$cid" 2>&1 | grep -c '"gateway stopped"' || true)
  docker rm "$cid" >/dev/null; rm -f "$env_file"
  echo "$result (readyz is 503 without a control plane); clean stop on SIGTERM: $stopped"
  [ "$result" = "healthz=200 readyz=503 openapi=200 docs=200" ] && [ "$stopped" = 1 ] \
    || { echo "gateway did not behave as expected" >&2; exit 1; }
fi

echo "image sizes:"
docker image ls --format '  {{.Repository}}:{{.Tag}} {{.Size}}' | grep meshplane-local/meshplane
echo "verify-local: images built and answered --help"
