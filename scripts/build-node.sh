#!/usr/bin/env bash
# Builds what the opt-in real node needs (scripts/real-node-up.sh, docs/real-node.md):
#   kubelet, kube-proxy  from the Go module proxy, the same pinned Kubernetes release
#                        (tests/controlplane/versions.env) as the control plane, through
#                        the wrapper module tests/controlplane/node (its own go.mod, so
#                        the control plane's stamp and build are unchanged)
#   studio-pause         tests/realnode/pause.c, static; the sandbox image
#                        studio.local/pause:1 (OCI archive written by tests/realnode/oci-image.sh)
#   studio-busybox       Debian's busybox-static in an image studio.local/busybox:1 (if
#                        /bin/busybox is a static binary)
# into the cache outside the repository; rebuilt only when a pinned version or the
# wrapper's go.mod changes. Prints the bin directory on success.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cp_dir="$here/tests/controlplane"
rn_dir="$here/tests/realnode"
# shellcheck source=/dev/null
source "$cp_dir/versions.env"

command -v go >/dev/null || { echo "error: go is not installed (need Go >= 1.26)" >&2; exit 1; }
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0

cache=${STUDIO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/studio}
bin="$cache/bin"
images="$cache/images"
mkdir -p "$bin" "$images" "$cache/stamps"
log() { echo "[node] $*" >&2; }

key="$KUBERNETES_VERSION-$(cat "$cp_dir/node/go.mod" "$cp_dir/node/go.sum" | sha256sum | cut -c1-12)"
if [ "$(cat "$cache/stamps/node" 2>/dev/null)" != "$key" ] || [ ! -x "$bin/kubelet" ] || [ ! -x "$bin/kube-proxy" ]; then
  log "building kubelet and kube-proxy $KUBERNETES_VERSION (cold: see docs/real-node.md for the time)"
  v=${KUBERNETES_VERSION#v}; major=${v%%.*}; rest=${v#*.}; minor=${rest%%.*}
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  ld=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ld="$ld -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  # Module downloads are retried (a transient proxy failure once left k8s.io/kubernetes'
  # module half-extracted: "open .../pkg/probe/dialer_others.go: no such file or
  # directory"); `go mod download` verifies each zip against go.sum before extracting.
  # Binaries go to temporary names so a failed build never sits behind a fresh stamp.
  tries=3
  for try in $(seq 1 $tries); do
    start=$(date +%s)
    if (cd "$cp_dir/node" && go mod download &&
        for c in kubelet kube-proxy; do
          log "  $c"
          go build -trimpath -ldflags "-s -w $ld" -o "$bin/$c.tmp" "k8s.io/kubernetes/cmd/$c" || exit 1
        done); then
      break
    fi
    if [ "$try" -eq "$tries" ]; then
      rm -f "$bin/kubelet.tmp" "$bin/kube-proxy.tmp"
      log "error: building kubelet/kube-proxy $KUBERNETES_VERSION failed $tries times (see the go" \
          "messages above; is the Go module proxy ($(go env GOPROXY)) reachable? a module" \
          "left half-downloaded can be removed with 'go clean -modcache')"
      exit 1
    fi
    log "building kubelet/kube-proxy failed (try $try of $tries; a module download may have failed); retrying in $((try * 5)) s"
    sleep $((try * 5))
  done
  mv -f "$bin/kubelet.tmp" "$bin/kubelet"
  mv -f "$bin/kube-proxy.tmp" "$bin/kube-proxy"
  echo "$key" >"$cache/stamps/node"
  log "built kubelet and kube-proxy in $(($(date +%s) - start))s"
fi

# The pause (sandbox) image and a busybox test image, as OCI archives for `ctr import`.
img_key=$(cat "$rn_dir/pause.c" "$rn_dir/oci-image.sh" | sha256sum | cut -c1-12)
if [ "$(cat "$cache/stamps/node-images" 2>/dev/null)" != "$img_key" ] || [ ! -f "$images/pause.tar" ]; then
  command -v gcc >/dev/null || { log "error: gcc is needed for the pause image (apt-get install gcc libc6-dev)"; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/pause"
  gcc -static -Os -s -o "$tmp/pause/pause" "$rn_dir/pause.c"
  "$rn_dir/oci-image.sh" "$images/pause.tar" studio.local/pause:1 "$tmp/pause" '["/pause"]' >/dev/null
  rm -f "$images/busybox.tar"
  if [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; then
    mkdir -p "$tmp/busybox/bin" "$tmp/busybox/tmp" "$tmp/busybox/etc"
    cp /bin/busybox "$tmp/busybox/bin/busybox"
    for a in $(/bin/busybox --list); do
      [ "$a" = busybox ] || ln -s busybox "$tmp/busybox/bin/$a"
    done
    chmod 1777 "$tmp/busybox/tmp"
    "$rn_dir/oci-image.sh" "$images/busybox.tar" studio.local/busybox:1 "$tmp/busybox" null '["sh"]' >/dev/null
  else
    log "no static /bin/busybox (apt-get install busybox-static): skipping studio.local/busybox:1"
  fi
  echo "$img_key" >"$cache/stamps/node-images"
fi
echo "$bin"
