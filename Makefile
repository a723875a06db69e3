# braid — the commands developers and CI run. `make test` is what CI runs.

CARGO ?= cargo
DOCKER ?= docker
# The one image (proxy, operator, injector, iptables); its tag defaults to the workspace
# version, the tag manifests/ deploys.
IMAGE ?= ghcr.io/braid-mesh/braid
TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)

.PHONY: all build test fmt fmt-check lint deps-check module-loops unit fuzz e2e e2e-cluster demo crds docs manifests-check images release bench bench-scale bench-limits help

all: build

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

build: ## Build every crate and binary (debug)
	$(CARGO) build --workspace --all-targets

# The checks one after another, each announced with its place in the run: the first run
# builds every crate twice (clippy, then the tests), about 15 minutes on 2 cores.
TEST_STEPS = fmt-check lint deps-check module-loops manifests-check unit e2e
test: ## What CI runs: formatting, clippy -D warnings, crate and module dependencies, manifests, unit/integration tests, e2e
	@n=0; for step in $(TEST_STEPS); do n=$$((n + 1)); \
		echo "━━ make test: $$n/$(words $(TEST_STEPS)) $$step ━━"; \
		$(MAKE) --no-print-directory $$step || exit 1; \
	done; echo "━━ make test: all $(words $(TEST_STEPS)) steps passed ━━"

fmt: ## Format the code
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint: ## Clippy with warnings as errors
	$(CARGO) clippy --workspace --all-targets -- -D warnings

deps-check: ## The operator and the injector depend on the contract (braid-api), never on the proxy
	scripts/deps-check

module-loops: ## Loops between a crate's top-level modules (the proxy's and the operator's must have none)
	scripts/module-loops proxy operator

unit: ## Unit and integration tests of every crate (no root needed; make test adds the checks and e2e)
	$(CARGO) test --workspace --exclude braid-e2e

# `make test` runs each property 256 times; this runs them FUZZ_CASES times, in release
# (a shrunk failing input is printed: make it a unit test next to the code it broke).
FUZZ_CASES ?= 20000
fuzz: ## Property tests of the parsers (HTTP/1.1 head, chunked, detection, config, annotations), FUZZ_CASES cases each
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release -p braid-proxy --lib props
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release -p braid-injector --lib props

# The e2e suite needs root (it runs through sudo when the caller is not root), iproute2,
# iptables, setpriv, tcpdump and openssl; a missing one fails it, naming the fix.
e2e: ## End-to-end tests: pods as network namespaces with real iptables (root, or sudo)
	scripts/e2e

# The demo needs root (network namespaces, iptables); it is built as the caller and run
# with sudo when the caller is not root.
# The demo builds only the four binaries it runs, in the release profile and with the
# packages make bench selects too (features are unified over the selected packages), so
# whichever runs first builds for the other.
DEMO_BINS = --bin braid-proxy --bin braid-operator --bin braidctl --bin braid-demo --bin braid-e2e-app
demo: ## A local mesh walked through steering, mTLS rollout, self-healing and access control (needs root)
	@echo "make demo: building the proxy, the operator and the demo (release; the first build takes about 8 min on 2 cores and 1 GB in target/, later ones seconds), then a run of under a minute"
	$(CARGO) build --release -p braid-proxy -p braid-operator -p braidctl -p braid-e2e $(DEMO_BINS)
	@if [ "$$(id -u)" = 0 ]; then target/release/braid-demo; \
	elif command -v sudo >/dev/null; then \
		echo "make demo: the demo needs root (network namespaces, iptables); running it with sudo"; \
		sudo target/release/braid-demo; \
	else target/release/braid-demo; fi

e2e-cluster: ## braid on a real cluster (kind, k3d or REGISTRY=...): injection, traffic, mTLS, steering
	scripts/e2e-cluster

crds: ## Regenerate manifests/crds/ (and the CRD reference) from the braid-crds types
	@echo "make crds: building and running crdgen (about 30 s the first time)"
	$(CARGO) run -q -p braid-crds --bin crdgen -- --out-dir manifests/crds
	$(CARGO) run -q -p braid-crds --bin crdgen -- --docs docs/crd-reference.md

docs: ## Regenerate the CRD reference (docs/crd-reference.md) and the metrics reference (docs/metrics.md)
	@echo "make docs: building and running crdgen and the metrics reference tests (about a minute the first time)"
	$(CARGO) run -q -p braid-crds --bin crdgen -- --docs docs/crd-reference.md
	BRAID_UPDATE_DOCS=1 $(CARGO) test -q -p braid-proxy -p braid-operator -p braid-injector --test metrics_reference

# Needs kubectl and Python (it installs kubernetes-validate into target/venv itself); a
# missing tool fails it, naming the fix. It also renders the release's install.yaml,
# validates it the same way and has `kubectl apply --dry-run=client` take it.
manifests-check: ## Render manifests/ and the release's install.yaml and validate them against Kubernetes 1.28's schemas (strict)
	scripts/manifests-check

images: ## Build the one image (three binaries, iptables): IMAGE, TAG default to ghcr.io/braid-mesh/braid:<workspace version>
	$(DOCKER) build --tag $(IMAGE):$(TAG) .

# BUILDER=docker|podman|buildah|rootfs picks the image builder (default: the first found);
# IMAGE and TAG as for images. scripts/release says what each step needs.
release: ## The install bundle in dist/braid-<version>/: install.yaml, the image as an archive (no docker daemon needed), checksums
	IMAGE=$(IMAGE) TAG=$(TAG) scripts/release

bench: ## Throughput, latency and memory: braid-proxy vs nginx, same machine, same run
	scripts/bench

# SCALE_ARGS: --services N --endpoints N --proxies N --routes N --healings N --policies N
# --changes N (braid-bench-scale --help); the defaults run in a few minutes on 2 cores.
SCALE_ARGS ?=
bench-scale: ## Config distribution at mesh scale: a generated mesh, the operator and real proxies; what a change and a restart cost
	$(CARGO) build --release -p braid-proxy -p braid-operator
	$(CARGO) build --release -p braid-e2e --bin braid-bench-scale
	mkdir -p target/bench
	target/release/braid-bench-scale $(SCALE_ARGS) | tee target/bench/scale.md

bench-limits: ## 10,000 idle and 2,000 slowloris connections against one proxy: RSS, when each is cut, a normal client's success
	scripts/bench-limits
