#!/usr/bin/env bash
# Builds the cert-manager controller (tests/certmanager: cert-manager's own controllers
# for Issuers, Certificates and CertificateRequests, pinned in tests/certmanager/go.mod +
# go.sum) from the Go module proxy into the cache bin directory of
# scripts/build-controlplane.sh, and copies the release's CRDs (deploy/crds of the same
# module) next to it as cert-manager-crds.yaml; once per go.mod+go.sum+main.go.
# The certificates e2e suite runs it as a host process against the local cluster.
# Prints the bin directory.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
mod="$here/tests/certmanager"

command -v go >/dev/null || { echo "error: go is not installed (need Go >= 1.26)" >&2; exit 1; }
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0

cache=${STUDIO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/studio}
bin="$cache/bin"
mkdir -p "$bin" "$cache/stamps"
log() { echo "[cert-manager] $*" >&2; }

modver=$(cd "$mod" && go list -m -f '{{.Version}}' github.com/cert-manager/cert-manager)
key="$modver-$(cat "$mod/go.mod" "$mod/go.sum" "$mod/main.go" | sha256sum | cut -c1-12)"
if [ -x "$bin/cert-manager-controller" ] && [ -s "$bin/cert-manager-crds.yaml" ] \
   && [ "$(cat "$cache/stamps/cert-manager" 2>/dev/null)" = "$key" ]; then
  echo "$bin"
  exit 0
fi
log "building the cert-manager controller $modver (a cold build takes a few minutes on 2 cores)"
start=$(date +%s)
ldflags="-s -w -X github.com/cert-manager/cert-manager/pkg/util.AppVersion=$modver"
# Module downloads are retried once: a transient proxy failure must not fail the run.
build() {
  (cd "$mod" && go build -trimpath -ldflags "$ldflags" -o "$bin/cert-manager-controller" .) && return 0
  log "building failed; retrying once after 'go mod download' (a module download may have failed)"
  (cd "$mod" && go mod download && go build -trimpath -ldflags "$ldflags" -o "$bin/cert-manager-controller" .) \
    || { log "error: cannot build the cert-manager controller from tests/certmanager (see above)"; exit 1; }
}
build
src=$(cd "$mod" && go list -m -f '{{.Dir}}' github.com/cert-manager/cert-manager)
[ -n "$src" ] && [ -d "$src/deploy/crds" ] \
  || { log "error: the cert-manager module has no deploy/crds (module directory: '$src')"; exit 1; }
tmp=$(mktemp "$bin/.cert-manager-crds.XXXXXX")
for f in "$src"/deploy/crds/*.yaml; do
  # Each file starts with its own '---'.
  cat "$f" >>"$tmp"
  echo >>"$tmp"
done
grep -q "name: certificates.cert-manager.io" "$tmp" \
  || { rm -f "$tmp"; log "error: no Certificate CRD in $src/deploy/crds"; exit 1; }
chmod 644 "$tmp"
mv "$tmp" "$bin/cert-manager-crds.yaml"
echo "$key" >"$cache/stamps/cert-manager"
log "built in $(( $(date +%s) - start ))s"
echo "$bin"
