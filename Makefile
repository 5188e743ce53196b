# gpufed: the two commands of README.md are `make demo` (run) and `make test` (tests).
# Everything expensive is cached outside the repository, under $(GPUFED_CACHE).

SHELL := /bin/bash
GPUFED_CACHE ?= $(HOME)/.cache/gpufed
export GPUFED_CACHE
CARGO ?= cargo

.PHONY: help deps k8s solana ptxas crds crds-check fmt fmt-check lint test test-unit e2e-up e2e-down e2e-status demo bench bench-placement sim ci kubectl-plugin

help:
	@echo "make demo        bring up a hub + 3 provider control planes and show gpufed on them"
	@echo "make test        build what the tests need (cached) and run the whole suite"
	@echo "make crds        regenerate crds/*.yaml from the Rust types"
	@echo "make lint        cargo fmt --check, clippy -D warnings, CRD drift check"
	@echo "make bench       run the benchmarks recorded in BENCHMARKS.md"
	@echo "make sim         placement simulator: policies side by side on a synthetic trace"
	@echo "make e2e-up / e2e-down   start / stop the local federation"
	@echo "make kubectl-plugin  install kubectl-gpufed into ~/.cargo/bin (kubectl gpufed ...)"

## Install what the machine lacks and build the real control plane and the Solana test
## validator (both cached under $(GPUFED_CACHE)).
deps: k8s helm lua solana

k8s:
	scripts/build-k8s.sh

solana:
	@scripts/install-solana.sh >/dev/null

## NVIDIA's PTX assembler (from a pip wheel, cached): cuda/tests/ptxas.rs checks the
## challenge kernels with it on machines without a GPU.
ptxas:
	@scripts/install-ptxas.sh >/dev/null

## CRDs are generated from the Rust types; CI fails when the committed YAML differs (the
## unit test crd::tests::committed_yaml_matches_the_types, inside `make test`, so CI builds
## no separate crdgen binary; crds-check is the same check for `make lint`).
crds:
	$(CARGO) run -q -p gpufed-api --bin crdgen -- crds/

crds-check: crds
	@git diff --exit-code -- crds/ || { echo "crds/*.yaml is stale: run 'make crds' and commit"; exit 1; }

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint: fmt-check crds-check chart-lint
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## The whole suite: unit, property, manifest and e2e tests against real API servers. The
## tests are compiled, and every test that does not start the Solana test validator is run,
## before the validator is built or waited for (.ci/run builds it in the background on an
## empty cache, where this saves the minutes its build outlasts the test build). The e2e
## tests that start it are found by what they use: the chain fixture or Validator::start.
## Benchmarks are not tests: `make bench` runs them (clippy still builds them).
## Every invocation builds the same selection (the whole workspace, all test targets), so
## that features unify as in the build and nothing is compiled twice; scripts/test-lanes.sh
## then runs the chosen binaries (GPUFED_TEST_SKIP / GPUFED_TEST_ONLY).
CHAIN_TESTS := $(basename $(notdir $(shell grep -lE 'mod chainsupport|Validator::start' e2e/tests/*.rs)))
## Test binaries run in parallel lanes (scripts/test-lanes.sh, $$GPUFED_TEST_JOBS, default 2):
## the e2e tests mostly wait on real control planes. Those that start a validator run one
## at a time: each validator keeps polling threads busy (niced, e2e/src/validator/spin.rs),
## and two at a time took as long in all (≈11.5 min, against 12 one at a time, 2026-12-04).
test: k8s helm lua ptxas
	GPUFED_TEST_SKIP="$(CHAIN_TESTS)" scripts/test-lanes.sh --lib --bins --tests
	@scripts/install-solana.sh >/dev/null
	GPUFED_TEST_JOBS=1 GPUFED_TEST_ONLY="$(CHAIN_TESTS)" scripts/test-lanes.sh --lib --bins --tests

test-unit: ptxas
	$(CARGO) test --workspace --exclude gpufed-e2e --lib --bins --tests

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

## The kubectl plugin (docs/kubectl.md): `kubectl gpufed ...` once ~/.cargo/bin is on PATH.
kubectl-plugin:
	$(CARGO) install --locked --path kubectl-gpufed

## What CI runs (.ci/run).
ci: lint test

## --- Helm charts (charts/, docs/install.md) ------------------------------------------
## helm 3.17 is cached in $(GPUFED_CACHE)/bin/helm by scripts/install-helm.sh.
HELM ?= $(GPUFED_CACHE)/bin/helm
CHARTS := charts/gpufed-crds charts/gpufed charts/gpufed-provider
CHART_CRDS := charts/gpufed-crds/templates

.PHONY: helm chart-crds chart-crds-check chart-lint

helm:
	@scripts/install-helm.sh >/dev/null

## The CRD chart's templates are crds/*.yaml with helm.sh/resource-policy: keep (so
## `helm uninstall` never deletes the CRDs and with them every custom resource).
chart-crds:
	@mkdir -p $(CHART_CRDS)
	@rm -f $(CHART_CRDS)/gpufed.io_*.yaml
	@for f in crds/gpufed.io_*.yaml; do \
	  sed -e '1s|^# Generated by `make crds`.*|# Generated by `make chart-crds` from crds/ (itself generated by `make crds`). Do not edit.|' \
	      -e 's|^metadata:$$|metadata:\n  annotations:\n    helm.sh/resource-policy: keep|' \
	      "$$f" >$(CHART_CRDS)/$$(basename "$$f"); \
	done

## From the committed crds/ (whose drift from the types the test above catches).
chart-crds-check: chart-crds
	@git diff --exit-code -- $(CHART_CRDS) && test -z "$$(git status --porcelain -- $(CHART_CRDS))" || \
	  { echo "$(CHART_CRDS) is stale: run 'make crds chart-crds' and commit"; exit 1; }

## helm lint --strict and helm template for every chart (default values and the CI values).
chart-lint: helm chart-crds-check
	@set -e; for c in $(CHARTS); do \
	  $(HELM) lint --strict $$c; \
	  $(HELM) template t $$c >/dev/null; \
	  for v in $$c/ci/*-values.yaml; do [ -f "$$v" ] || continue; \
	    $(HELM) lint --strict $$c -f $$v; $(HELM) template t $$c -f $$v >/dev/null; done; \
	done
	@echo "charts: lint --strict and template OK"

## lua5.4 (Debian) runs the Argo CD health checks in e2e/tests/charts.rs; without it that
## test checks only the kstatus half.
.PHONY: lua
lua:
	@command -v lua5.4 >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q lua5.4 >/dev/null || { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q lua5.4 >/dev/null; }; }
