#!/usr/bin/env bash
# Builds versitygw (the Versity S3 Gateway: a real S3 server with a POSIX backend, for
# the backup tests; tests/harness/src/s3.rs runs it) from the Go module proxy, pinned in
# tests/versitygw/go.mod + go.sum, into the cache bin directory of
# scripts/build-controlplane.sh; once per go.mod+go.sum. Prints the bin directory.
# A cold build (module downloads included) takes about 70 s on 2 cores.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
mod="$here/tests/versitygw"

command -v go >/dev/null || { echo "error: go is not installed (need Go >= 1.26)" >&2; exit 1; }
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0

cache=${STUDIO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/studio}
bin="$cache/bin"
mkdir -p "$bin" "$cache/stamps"
log() { echo "[versitygw] $*" >&2; }

# Read from go.mod itself: no module graph (and no network) needed to check the stamp.
modver=$(awk '$1 == "github.com/versity/versitygw" { print $2 }' "$mod/go.mod")
[ -n "$modver" ] || { echo "error: $mod/go.mod does not require github.com/versity/versitygw" >&2; exit 1; }
key="$modver-$(cat "$mod/go.mod" "$mod/go.sum" | sha256sum | cut -c1-12)"
if [ -x "$bin/versitygw" ] && [ "$(cat "$cache/stamps/versitygw" 2>/dev/null)" = "$key" ]; then
  echo "$bin"
  exit 0
fi
log "building versitygw $modver (a cold build takes about 70 s on 2 cores)"
start=$(date +%s)
ldflags="-s -w -X main.Version=$modver -X main.Build=$modver -X main.BuildTime=module-proxy"
# Module downloads are retried: a transient proxy failure must not fail the run. The
# build goes to a temporary name so that a failed build never leaves a half-written
# binary behind a stale stamp.
tries=3
for try in $(seq 1 $tries); do
  if (cd "$mod" && go build -trimpath -ldflags "$ldflags" -o "$bin/versitygw.tmp" \
        github.com/versity/versitygw/cmd/versitygw); then
    break
  fi
  if [ "$try" -eq "$tries" ]; then
    rm -f "$bin/versitygw.tmp"
    log "error: building versitygw $modver failed $tries times (see the go messages above;" \
        "is the Go module proxy ($(go env GOPROXY)) reachable?)"
    exit 1
  fi
  log "building versitygw failed (try $try of $tries; a module download may have failed); retrying in $((try * 5)) s"
  sleep $((try * 5))
done
mv -f "$bin/versitygw.tmp" "$bin/versitygw"
echo "$key" >"$cache/stamps/versitygw"
log "built in $(( $(date +%s) - start ))s"
echo "$bin"
