#!/usr/bin/env bash
# Installs the host tools the local cluster needs from Debian's packages, if missing.
set -euo pipefail
need=()
command -v openssl >/dev/null || need+=(openssl)
command -v ip >/dev/null || need+=(iproute2)
for t in flock setsid unshare nsenter; do command -v $t >/dev/null || { need+=(util-linux); break; }; done
command -v pgrep >/dev/null || need+=(procps)
command -v curl >/dev/null || need+=(curl)
# make images (scripts/build-images.sh, scripts/registry-up.sh)
command -v buildah >/dev/null || need+=(buildah)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v jq >/dev/null || need+=(jq)
command -v go >/dev/null || { echo "error: Go >= 1.26 is required (https://go.dev/dl)" >&2; exit 1; }
command -v cargo >/dev/null || { echo "error: Rust (cargo) is required (https://rustup.rs)" >&2; exit 1; }
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "error: missing ${need[*]}; install them (needs root)" >&2; exit 1; fi
  echo "installing ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
