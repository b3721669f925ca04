# Gateway image: the static `meshplane-gateway` binary (grpc-gateway v2 REST bridge) on a
# distroless nonroot base. Build from the repository root:
#
#   docker build -f deploy/docker/gateway.Dockerfile -t ghcr.io/meshplane/meshplane-gateway:0.1.0 .
#
# Bases are pinned by exact tag. For a release, pin digests as well, resolved once with
#   docker buildx imagetools inspect golang:1.26.8-bookworm
#   docker buildx imagetools inspect gcr.io/distroless/static-debian12:nonroot
# and passed as --build-arg GO_IMAGE=...@sha256:<digest> / RUNTIME_IMAGE=...@sha256:<digest>.
# RUNTIME_IMAGE=scratch also works (no CA bundle then: --upstream-tls needs
# MESHPLANE_GATEWAY_UPSTREAM_CA_FILE). deploy/docker/verify-local.sh builds without any registry.
ARG GO_IMAGE=golang:1.26.8-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

# ---------------------------------------------------------------- build
FROM ${GO_IMAGE} AS build
ENV CGO_ENABLED=0 \
    GOFLAGS=-buildvcs=false
WORKDIR /src
# Module downloads first, cached until a go.mod/go.sum changes. The gateway module replaces
# github.com/meshplane/meshplane/generated/go with ../generated/go.
COPY generated/go/go.mod generated/go/go.sum generated/go/
COPY gateway/go.mod gateway/go.sum gateway/
RUN cd gateway && go mod download
COPY generated/go/ generated/go/
COPY gateway/ gateway/
# go:embed cannot reach outside the module: put the OpenAPI spec where apidocs embeds it
# (what `go generate ./internal/apidocs` does).
COPY generated/openapi/meshplane.swagger.json gateway/internal/apidocs/meshplane.swagger.json
RUN cd gateway \
 && go build -trimpath -ldflags "-s -w" -o /out/meshplane-gateway . \
 && /out/meshplane-gateway --help >/dev/null 2>&1

# ---------------------------------------------------------------- runtime
FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="meshplane-gateway" \
      org.opencontainers.image.description="Meshplane REST gateway (grpc-gateway v2)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/meshplane/meshplane" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/meshplane-gateway /usr/local/bin/meshplane-gateway
# distroless "nonroot" (65532); numeric so it also holds on scratch and for runAsNonRoot checks.
USER 65532:65532
ENV MESHPLANE_GATEWAY_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/meshplane-gateway"]
