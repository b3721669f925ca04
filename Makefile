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
	  $(BUF) breaking --against ".git#ref=$$base"; \
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

run: venv ## Start the mesh with demo agents
	$(VENV)/bin/meshplane up --demo

.PHONY: clean
clean: ## Remove installed tools and caches
	rm -rf $(VENV) .tools node_modules .pytest_cache .mypy_cache .ruff_cache
