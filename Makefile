# Studio developer entry points. `make demo` and `make test` are the two set-up commands;
# both work on a fresh machine (they build what they need first).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
REPO := $(CURDIR)
export STUDIO_CLUSTER_DIR ?= $(REPO)/.cache/cluster
export STUDIO_TARGET_DIR ?= $(REPO)/target/debug
CARGO ?= cargo

.PHONY: help deps controlplane bins images cluster-up cluster-down kubeconfig lint crd-check chart-check test unit e2e demo bench bench-real-node fmt

help:
	@echo "make demo          build everything, start the local cluster, run the demo"
	@echo "make test          lint + every test (unit, integration, end-to-end)"
	@echo "make cluster-up    start the local Kubernetes (control plane, provisioner, real node)"
	@echo "make cluster-down  stop it and remove everything it created"
	@echo "make -s kubeconfig print the admin kubeconfig path"
	@echo "make images        build the studio-node/studio-operator images (buildah, no Docker) and"
	@echo "                   push them to the local registry 127.0.0.1:5050 (docs/real-node.md)"

# Host tools the local cluster needs (Debian packages); a no-op when present.
deps:
	@scripts/install-deps.sh

# The control plane, and the real node's kubelet, kube-proxy and pause image.
controlplane: deps
	@scripts/build-controlplane.sh >/dev/null
	@scripts/build-node.sh >/dev/null

bins:
	$(CARGO) build --workspace --bins

# The images from the Dockerfile's runtime stages, without a container engine: release
# binaries, a distroless-like base from Debian packages, buildah; pushed to the local
# registry (started if needed); the digests in $(STUDIO_CLUSTER_DIR)/images.env.
images: deps
	@CARGO=$(CARGO) scripts/build-images.sh

cluster-up: controlplane bins
	@STUDIO_CP_BIN=$$(scripts/build-controlplane.sh) scripts/cluster-up.sh

cluster-down:
	@scripts/cluster-down.sh

kubeconfig:
	@echo $(STUDIO_CLUSTER_DIR)/kubeconfig

fmt:
	$(CARGO) fmt --all

lint: crd-check chart-check
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The committed CRD YAML (one file per CRD) must match what the API types generate, and
# the chart's crds/ must hold the same files.
crd-check:
	@rm -rf target/crd-generated && mkdir -p target/crd-generated
	@$(CARGO) run -q -p studio-operator --bin crdgen -- --dir target/crd-generated >/dev/null
	@diff -ru deploy/crds target/crd-generated \
	  || { echo "deploy/crds/ drifted: run 'cargo run -p studio-operator --bin crdgen -- --dir deploy/crds'" >&2; exit 1; }
	@diff -ru deploy/crds charts/studio-operator/crds \
	  || { echo "charts/studio-operator/crds/ differs from deploy/crds/: cp deploy/crds/*.yaml charts/studio-operator/crds/" >&2; exit 1; }

# The Helm chart: lint, template snapshot, values schema; the alert rules with
# promtool (built from the Go module proxy on first use).
chart-check:
	@scripts/test-chart.sh
	@scripts/test-alerts.sh

# The node's backup tests run a real S3 server (versitygw, built from the Go module proxy).
unit:
	@scripts/build-versitygw.sh >/dev/null
	$(CARGO) test --workspace --exclude studio-e2e
	@scripts/test-krew.sh

# End-to-end suites share one local cluster; the harness starts it if none is up.
# The teardown suite takes that cluster down and checks nothing is left: it runs last.
E2E_THREADS ?= 2
# The local cluster (with its real node and registry) comes up first so that the images
# can be pushed; the real-node suite runs them.
e2e: controlplane bins
	@export STUDIO_CP_BIN=$$(scripts/build-controlplane.sh); \
	  scripts/cluster-up.sh >/dev/null; CARGO=$(CARGO) scripts/build-images.sh >/dev/null; \
	  rc=0; $(CARGO) test --no-fail-fast -p studio-e2e -- --test-threads=$(E2E_THREADS) || rc=$$?; \
	  $(CARGO) test -p studio-e2e --test teardown || rc=$$?; \
	  scripts/cluster-down.sh >/dev/null || true; exit $$rc

test: lint unit e2e

bench:
	$(CARGO) run --release -p studio-node --bin studio-bench

# Failover, pod deletion and switchover on the real node, BENCH_RUNS (20) each, writes
# through the -primary ClusterIP (tests/e2e/tests/real_node_bench.rs).
bench-real-node: controlplane bins
	@export STUDIO_CP_BIN=$$(scripts/build-controlplane.sh); \
	  scripts/cluster-up.sh >/dev/null; CARGO=$(CARGO) scripts/build-images.sh >/dev/null; \
	  $(CARGO) test -p studio-e2e --test real_node_bench -- --nocapture

demo: cluster-up
	@CARGO=$(CARGO) scripts/build-images.sh >/dev/null
	@scripts/demo.sh
