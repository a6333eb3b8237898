#!/usr/bin/env bash
# Builds Prometheus' `promtool` (rule checks and rule unit tests, scripts/test-alerts.sh)
# and `prometheus` itself (the real server the monitoring e2e suite scrapes the cluster
# with) from the Go module proxy, pinned in tests/promtool/go.mod + go.sum, into the
# cache bin directory of scripts/build-controlplane.sh; once per go.mod+go.sum.
# Prints the bin directory.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
mod="$here/tests/promtool"

command -v go >/dev/null || { echo "error: go is not installed (need Go >= 1.26)" >&2; exit 1; }
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0

cache=${STUDIO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/studio}
bin="$cache/bin"
mkdir -p "$bin" "$cache/stamps"
log() { echo "[prometheus] $*" >&2; }

# The Prometheus module is tagged v0.3XX.Y for Prometheus 3.XX.Y.
modver=$(cd "$mod" && go list -m -f '{{.Version}}' github.com/prometheus/prometheus)
promver=$(echo "$modver" | sed -E 's/^v0\.3([0-9]{2})\.([0-9]+).*/3.\1.\2/; s/^3\.0([0-9])\./3.\1./')
key="$modver-$(cat "$mod/go.mod" "$mod/go.sum" | sha256sum | cut -c1-12)"
if [ -x "$bin/promtool" ] && [ -x "$bin/prometheus" ] \
   && [ "$(cat "$cache/stamps/prometheus" 2>/dev/null)" = "$key" ]; then
  echo "$bin"
  exit 0
fi
log "building promtool and prometheus $promver ($modver; a cold build takes several minutes on 2 cores)"
start=$(date +%s)
ldflags="-s -w -X github.com/prometheus/common/version.Version=$promver -X github.com/prometheus/common/version.Branch=$modver"
# remove_all_sd leaves out the cloud service-discovery plugins (AWS, Azure, GCE, ...);
# the server keeps Kubernetes SD (enable_kubernetes_sd), which the e2e suite uses. The
# web UI's assets are not embedded (no builtinassets tag): the API is all we query.
# Module downloads are retried once: a transient proxy failure must not fail the run.
build() {
  local out=$1 pkg=$2 tags=$3
  (cd "$mod" && go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$bin/$out" "$pkg") && return 0
  log "building $out failed; retrying once (a module download may have failed)"
  (cd "$mod" && go mod download && go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$bin/$out" "$pkg")
}
build promtool github.com/prometheus/prometheus/cmd/promtool remove_all_sd
build prometheus github.com/prometheus/prometheus/cmd/prometheus "remove_all_sd enable_kubernetes_sd"
echo "$key" >"$cache/stamps/prometheus"
log "built in $(( $(date +%s) - start ))s"
echo "$bin"
