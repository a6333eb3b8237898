#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, helm
# (and the test tools studio-health, tests/health, prometheus/promtool,
# scripts/build-prometheus.sh, the cert-manager controller, scripts/build-cert-manager.sh,
# and the S3 server versitygw, scripts/build-versitygw.sh)
# from the Go module proxy into a cache outside the repository. Each binary set is keyed
# by its pinned version, so a rebuild happens only when tests/controlplane/versions.env
# changes. Prints the bin directory on success.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cp_dir="$here/tests/controlplane"
# shellcheck source=/dev/null
source "$cp_dir/versions.env"

command -v go >/dev/null || { echo "error: go is not installed (need Go >= 1.26)" >&2; exit 1; }
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0

cache=${STUDIO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/studio}
bin="$cache/bin"
mkdir -p "$bin" "$cache/stamps"
log() { echo "[controlplane] $*" >&2; }

# stamp NAME VERSION: true when NAME was already built at VERSION with the same wrapper.
stamp_key() { echo "$2-$(cat "$cp_dir/$1/go.mod" 2>/dev/null | sha256sum | cut -c1-12)"; }
fresh() { [ -f "$cache/stamps/$1" ] && [ "$(cat "$cache/stamps/$1")" = "$(stamp_key "$1" "$2")" ]; }
mark() { stamp_key "$1" "$2" >"$cache/stamps/$1"; }

if ! fresh etcd "$ETCD_VERSION" || [ ! -x "$bin/etcd" ]; then
  log "building etcd $ETCD_VERSION"
  (cd "$cp_dir/etcd" && go build -trimpath -o "$bin/etcd" go.etcd.io/etcd/server/v3)
  mark etcd "$ETCD_VERSION"
fi

if ! fresh kubernetes "$KUBERNETES_VERSION" || [ ! -x "$bin/kube-apiserver" ]; then
  log "building kubernetes $KUBERNETES_VERSION (cold build takes a while on 2 cores)"
  v=${KUBERNETES_VERSION#v}; major=${v%%.*}; rest=${v#*.}; minor=${rest%%.*}
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  ld=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ld="$ld -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  (cd "$cp_dir/kubernetes" && for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
     log "  $c"
     go build -trimpath -ldflags "-s -w $ld" -o "$bin/$c" "k8s.io/kubernetes/cmd/$c"
   done)
  mark kubernetes "$KUBERNETES_VERSION"
fi

if ! fresh helm "$HELM_VERSION" || [ ! -x "$bin/helm" ]; then
  log "building helm $HELM_VERSION"
  (cd "$cp_dir/helm" && go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" -o "$bin/helm" helm.sh/helm/v3/cmd/helm)
  mark helm "$HELM_VERSION"
fi

# The GitOps health checker of the e2e suite (kstatus + the shipped Argo CD Lua check).
health_dir="$here/tests/health"
health_key=$(cat "$health_dir/go.mod" "$health_dir/go.sum" "$health_dir/main.go" | sha256sum | cut -c1-12)
if [ ! -x "$bin/studio-health" ] || [ "$(cat "$cache/stamps/health" 2>/dev/null)" != "$health_key" ]; then
  log "building studio-health (kstatus + Argo CD health)"
  (cd "$health_dir" && go build -trimpath -o "$bin/studio-health" .)
  echo "$health_key" >"$cache/stamps/health"
fi

# Prometheus (server + promtool) for the monitoring suite and the alert-rule tests.
STUDIO_CACHE="$cache" "$here/scripts/build-prometheus.sh" >/dev/null
# versitygw (a real S3 server) for the backup tests (tests/harness/src/s3.rs).
STUDIO_CACHE="$cache" "$here/scripts/build-versitygw.sh" >/dev/null
# The cert-manager controller and its CRDs for the certificates suite.
STUDIO_CACHE="$cache" "$here/scripts/build-cert-manager.sh" >/dev/null
echo "$bin"
