#!/usr/bin/env bash
# Installs kubectl-studio the way krew users will: builds krew (tests/krew, pinned,
# from the Go module proxy, cached), packages the debug build with
# scripts/krew-package.sh, runs `krew install --manifest --archive` into a scratch
# KREW_ROOT (which validates the manifest and the sha256), and runs the installed
# plugin.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0
cache=${STUDIO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/studio}
mkdir -p "$cache/bin" "$cache/stamps"
key=$(cat "$here/tests/krew/go.mod" "$here/tests/krew/go.sum" | sha256sum | cut -c1-12)
if [ ! -x "$cache/bin/krew" ] || [ "$(cat "$cache/stamps/krew" 2>/dev/null)" != "$key" ]; then
  echo "[krew] building krew" >&2
  (cd "$here/tests/krew" && go build -trimpath -o "$cache/bin/krew" sigs.k8s.io/krew/cmd/krew)
  echo "$key" >"$cache/stamps/krew"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
manifest=$(DIST="$work/dist" "$here/scripts/krew-package.sh" "$here/target/debug/kubectl-studio")
KREW_ROOT="$work/root" "$cache/bin/krew" install --manifest="$manifest" \
  --archive="$work/dist/kubectl-studio_linux_amd64.tar.gz" >"$work/install.log" 2>&1 \
  || { cat "$work/install.log" >&2; echo "[krew] FAIL: krew install" >&2; exit 1; }
# The sha256 is checked: a manifest that does not match the archive is refused.
sha=$(sed -n 's/.*sha256: "\([0-9a-f]*\)".*/\1/p' "$manifest")
bad=$(printf '%s' "$sha" | tr '0-9a-f' '1-9a-f0')
sed "s/$sha/$bad/" "$manifest" >"$work/bad.yaml"
if KREW_ROOT="$work/root2" "$cache/bin/krew" install --manifest="$work/bad.yaml" \
  --archive="$work/dist/kubectl-studio_linux_amd64.tar.gz" >"$work/bad.log" 2>&1; then
  echo "[krew] FAIL: krew accepted an archive whose sha256 does not match the manifest" >&2; exit 1
fi
grep -qi "checksum\|sha256" "$work/bad.log" || { cat "$work/bad.log" >&2; echo "[krew] FAIL: refused for another reason" >&2; exit 1; }
out=$("$work/root/bin/kubectl-studio" --help)
grep -q "report" <<<"$out" || { echo "[krew] FAIL: the installed plugin does not run: $out" >&2; exit 1; }
echo "[krew] krew install --manifest --archive: ok; kubectl-studio runs from \$KREW_ROOT/bin" >&2
