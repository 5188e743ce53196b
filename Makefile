# gpufed: the two commands of README.md are `make demo` (run) and `make test` (tests).
# Everything expensive is cached outside the repository, under $(GPUFED_CACHE).

SHELL := /bin/bash
GPUFED_CACHE ?= $(HOME)/.cache/gpufed
export GPUFED_CACHE
CARGO ?= cargo

.PHONY: help deps k8s crds crds-check fmt fmt-check lint test test-unit e2e-up e2e-down e2e-status demo bench bench-placement sim ci

help:
	@echo "make demo        bring up a hub + 3 provider control planes and show gpufed on them"
	@echo "make test        build what the tests need (cached) and run the whole suite"
	@echo "make crds        regenerate crds/*.yaml from the Rust types"
	@echo "make lint        cargo fmt --check, clippy -D warnings, CRD drift check"
	@echo "make bench       run the benchmarks recorded in BENCHMARKS.md"
	@echo "make sim         placement simulator: policies side by side on a synthetic trace"
	@echo "make e2e-up / e2e-down   start / stop the local federation"

## Install what the machine lacks and build the real control plane (cached).
deps: k8s

k8s:
	scripts/build-k8s.sh

## CRDs are generated from the Rust types; CI fails when the committed YAML differs.
crds:
	$(CARGO) run -q -p gpufed-api --bin crdgen -- crds/

crds-check: crds
	@git diff --exit-code -- crds/ || { echo "crds/*.yaml is stale: run 'make crds' and commit"; exit 1; }

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint: fmt-check crds-check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## The whole suite: unit, property, manifest and e2e tests against real API servers.
test: deps
	$(CARGO) test --workspace --all-targets

test-unit:
	$(CARGO) test --workspace --exclude gpufed-e2e --all-targets

e2e-up: deps
	$(CARGO) run -q -p gpufed-e2e --bin gpufed-e2e -- up

e2e-down:
	$(CARGO) run -q -p gpufed-e2e --bin gpufed-e2e -- down

e2e-status:
	$(CARGO) run -q -p gpufed-e2e --bin gpufed-e2e -- status

demo: deps
	scripts/demo.sh

bench: bench-placement
	$(CARGO) bench -p gpufed-settlement
	$(CARGO) bench -p gpufed-device-plugin

bench-placement:
	$(CARGO) bench -p gpufed-placement --bench place

## The placement simulator: ours vs first-fit vs spread on one seeded trace (CSV + SVG).
sim:
	$(CARGO) run --release -p gpufed-placement --bin gpufed-sim -- --seed 7 --out sim-out

## What CI runs (.ci/run).
ci: lint test
