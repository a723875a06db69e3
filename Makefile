# braid — the commands developers and CI run. `make test` is what CI runs.

CARGO ?= cargo

.PHONY: all build test fmt fmt-check lint unit crds help

all: build

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

build: ## Build every crate and binary (debug)
	$(CARGO) build --workspace --all-targets

test: fmt-check lint unit ## What CI runs: formatting, clippy -D warnings, all tests (incl. stale-CRD check)

fmt: ## Format the code
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint: ## Clippy with warnings as errors
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace

crds: ## Regenerate manifests/crds/ from the braid-crds types
	$(CARGO) run -q -p braid-crds --bin crdgen -- --out-dir manifests/crds
