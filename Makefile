# Meshplane — one-command build. `make run` starts the mesh, `make test` runs every test.
# Every tool is pinned here and installed into the repo (.venv, .tools, node_modules).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TOOLS  := $(CURDIR)/.tools/bin
BUF    := node_modules/.bin/buf
export PATH := $(TOOLS):$(CURDIR)/$(VENV)/bin:$(PATH)
export GOFLAGS := -buildvcs=false

# Pinned code generators (Go plugins by module version; buf and ts-proto in package.json;
# grpcio-tools in pyproject.toml).
PROTOC_GEN_GO_VERSION      := v1.36.11
PROTOC_GEN_GO_GRPC_VERSION := v1.6.1
GRPC_GATEWAY_VERSION       := v2.32.0
GO_TOOLS_STAMP := .tools/go-tools-$(PROTOC_GEN_GO_VERSION)-$(PROTOC_GEN_GO_GRPC_VERSION)-$(GRPC_GATEWAY_VERSION)

PROTO_FILES := $(sort $(shell find proto -name '*.proto'))

.PHONY: help
help: ## Show the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-14s %s\n", $$1, $$2}'

# ---------------------------------------------------------------- installs
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	@# npm ci rejects this lockfile (the registry omits some of buf's platform packages), so install from it.
	npm install --no-audit --no-fund --loglevel=error
	touch $@

$(GO_TOOLS_STAMP):
	mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(TOOLS) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	GOBIN=$(TOOLS) go install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@$(GRPC_GATEWAY_VERSION)
	GOBIN=$(TOOLS) go install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@$(GRPC_GATEWAY_VERSION)
	touch $@

.PHONY: venv node tools
venv: $(VENV)/.installed ## Create the Python venv and install the project (editable) with dev tools
node: node_modules/.installed ## Install the npm toolchain (buf, ts-proto, TypeScript)
tools: venv node $(GO_TOOLS_STAMP) ## Install every code generator

# ---------------------------------------------------------------- codegen
.PHONY: gen gen-check
gen: tools ## Regenerate generated/ (Python, Go, grpc-gateway, OpenAPI, TypeScript) from proto/
	rm -rf generated/python/meshplane generated/go/meshplane generated/openapi generated/ts
	$(BUF) generate
	mkdir -p generated/python
	$(PY) -m grpc_tools.protoc -Iproto -Ithird_party \
	  --python_out=generated/python --pyi_out=generated/python --grpc_python_out=generated/python \
	  $(PROTO_FILES)
	for d in generated/python/meshplane generated/python/meshplane/v1; do : > $$d/__init__.py; done
	: > generated/python/meshplane/py.typed
	cd generated/go && go mod tidy

gen-check: gen ## Fail if generated/ differs from what proto/ generates
	@if [ -n "$$(git status --porcelain -- generated)" ]; then \
	  echo "generated/ is out of date with proto/ — run 'make gen' and commit:"; \
	  git status --porcelain -- generated; git --no-pager diff --stat -- generated; exit 1; \
	fi
	@echo "gen-check: generated/ is up to date"

# ---------------------------------------------------------------- quality
.PHONY: lint fmt buf-lint buf-breaking
buf-lint: node ## buf lint (STANDARD) on proto/
	$(BUF) lint

buf-breaking: node ## buf breaking against origin/main (or main) when it has protos
	@base=$$(git rev-parse --verify -q origin/main || git rev-parse --verify -q main || true); \
	if [ -n "$$base" ] && git cat-file -e "$$base:proto/meshplane/v1" 2>/dev/null; then \
	  $(BUF) breaking --against ".git#ref=$$base" && echo "buf breaking: no breaking change against $$base"; \
	else echo "buf breaking: no protos on main yet, nothing to compare"; fi

lint: venv buf-lint ## ruff, mypy (strict), buf lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: venv ## Format Python code
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# ---------------------------------------------------------------- run & test
.PHONY: test run
test: venv node ## Run every test (Python, interop, Go, TypeScript)
	$(VENV)/bin/pytest

run: venv ## Start the mesh with demo agents (and the REST gateway: built when Go is installed)
	@if command -v go >/dev/null 2>&1; then \
	  $(MAKE) --no-print-directory gateway-build || echo "the REST gateway did not build: meshplane up uses an earlier build if there is one"; \
	else echo "Go not found: starting without the REST gateway"; fi
	$(VENV)/bin/meshplane up --demo

# ---------------------------------------------------------------- REST gateway (Go)
# go:embed cannot reach outside the gateway module, so the generated OpenAPI spec is copied
# into it (gitignored) before every build, vet or test.
GATEWAY_SPEC := gateway/internal/apidocs/meshplane.swagger.json

.PHONY: gateway-spec gateway-build gateway-test
gateway-spec:
	@cmp -s generated/openapi/meshplane.swagger.json $(GATEWAY_SPEC) || cp generated/openapi/meshplane.swagger.json $(GATEWAY_SPEC)

gateway-build: gateway-spec ## Build the gateway (REST bridge, gRPC ingress) and the bench's Go load generator into .tools/bin
	mkdir -p $(TOOLS)
	cd gateway && go build -trimpath -o $(TOOLS)/meshplane-gateway . && go build -trimpath -o $(TOOLS)/meshplane-loadgen ./cmd/meshplane-loadgen

gateway-test: gateway-spec ## go vet and go test the gateway and the load generator
	cd gateway && go vet ./... && go test ./...

# ---------------------------------------------------------------- helm chart & images
# helm is built from its Go module at a pinned version (its release downloads are not reachable);
# the ldflags mirror helm's own Makefile so `helm version` and .Capabilities.KubeVersion match the
# released binary. k8svalidate (tools/k8svalidate, pinned by its go.mod/go.sum) validates the
# rendered manifests offline with the API server's own create validation.
HELM_VERSION   := v3.22.0
HELM_K8S_MINOR := 37
HELM           := $(TOOLS)/helm
HELM_STAMP     := .tools/helm-$(HELM_VERSION)
K8SVALIDATE    := $(TOOLS)/k8svalidate
HELM_PKG       := helm.sh/helm/v3
IMAGE_REGISTRY ?= ghcr.io/meshplane
IMAGE_TAG      ?= $(shell sed -n 's/^appVersion: *"*\([^"]*\)"*$$/\1/p' deploy/helm/meshplane/Chart.yaml)
DOCKER         ?= docker
DOCKER_BUILD_ARGS ?=

HELM_LDFLAGS   := -w -s -X $(HELM_PKG)/internal/version.version=$(HELM_VERSION) \
  -X $(HELM_PKG)/internal/version.gitTreeState=clean \
  -X $(HELM_PKG)/pkg/lint/rules.k8sVersionMajor=1 -X $(HELM_PKG)/pkg/lint/rules.k8sVersionMinor=$(HELM_K8S_MINOR) \
  -X $(HELM_PKG)/pkg/chartutil.k8sVersionMajor=1 -X $(HELM_PKG)/pkg/chartutil.k8sVersionMinor=$(HELM_K8S_MINOR)

$(HELM_STAMP):
	mkdir -p $(TOOLS)
	CGO_ENABLED=0 GOBIN=$(TOOLS) go install -trimpath -ldflags '$(HELM_LDFLAGS)' $(HELM_PKG)/cmd/helm@$(HELM_VERSION)
	touch $@

$(K8SVALIDATE): $(wildcard tools/k8svalidate/*.go) tools/k8svalidate/go.mod tools/k8svalidate/go.sum
	mkdir -p $(TOOLS)
	cd tools/k8svalidate && go build -trimpath -o $(K8SVALIDATE) .

.PHONY: helm-tools helm-check docker-build
helm-tools: $(HELM_STAMP) $(K8SVALIDATE) ## Install the pinned helm and the offline manifest validator
helm-check: helm-tools ## helm lint/template (default, HA, minimal), offline k8s validation, bad values rejected
	HELM=$(HELM) K8SVALIDATE=$(K8SVALIDATE) deploy/helm/check.sh

docker-build: ## Build the control-plane and gateway images (needs a running Docker engine)
	$(DOCKER) build -f deploy/docker/controlplane.Dockerfile -t $(IMAGE_REGISTRY)/meshplane:$(IMAGE_TAG) $(DOCKER_BUILD_ARGS) .
	$(DOCKER) build -f deploy/docker/gateway.Dockerfile -t $(IMAGE_REGISTRY)/meshplane-gateway:$(IMAGE_TAG) $(DOCKER_BUILD_ARGS) .

.PHONY: clean
clean: ## Remove installed tools and caches
	rm -rf $(VENV) .tools node_modules .pytest_cache .mypy_cache .ruff_cache
