#!/usr/bin/env bash
# Installs the host tools the local cluster needs from Debian's packages, if missing.
set -euo pipefail
need=()
command -v openssl >/dev/null || need+=(openssl)
command -v ip >/dev/null || need+=(iproute2)
for t in flock setsid unshare nsenter; do command -v $t >/dev/null || { need+=(util-linux); break; }; done
command -v pgrep >/dev/null || need+=(procps)
command -v curl >/dev/null || need+=(curl)
# The real node (scripts/real-node-up.sh): containerd, runc, the CNI plugins, nft for
# kube-proxy's nftables mode, iptables for the kubelet; gcc and a static busybox for the
# pause and test images (scripts/build-node.sh).
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v nft >/dev/null || need+=(nftables)
command -v iptables >/dev/null || need+=(iptables)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
{ [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || need+=(busybox-static)
# make images (scripts/build-images.sh, scripts/registry-up.sh)
command -v buildah >/dev/null || need+=(buildah)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v jq >/dev/null || need+=(jq)
command -v go >/dev/null || { echo "error: Go >= 1.26 is required (https://go.dev/dl)" >&2; exit 1; }
command -v cargo >/dev/null || { echo "error: Rust (cargo) is required (https://rustup.rs)" >&2; exit 1; }
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "error: missing ${need[*]}; install them (needs root)" >&2; exit 1; fi
  echo "installing ${need[*]}" >&2
  for try in 1 2 3; do
    if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; then
      exit 0
    fi
    [ "$try" = 3 ] || { echo "apt-get failed (try $try of 3); retrying in $((try * 5)) s" >&2; sleep $((try * 5)); }
  done
  echo "error: installing ${need[*]} failed 3 times (is the Debian mirror reachable? see apt-get's messages above)" >&2
  exit 1
fi
