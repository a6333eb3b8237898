#!/usr/bin/env bash
# Stops the local image registry of scripts/registry-up.sh and removes its storage
# (idempotent). scripts/real-node-down.sh calls it.
set -uo pipefail
# shellcheck source=scripts/lib-cluster.sh
source "$(dirname "$0")/lib-cluster.sh"
# shellcheck source=scripts/lib-real-node.sh
source "$(dirname "$0")/lib-real-node.sh"
pidf=$RN_DIR/run/registry.pid
if [ -f "$pidf" ]; then
  pid=$(cat "$pidf")
  if kill -0 "$pid" 2>/dev/null && [ "$(proc_start "$pid")" = "$(cat "$pidf.start" 2>/dev/null)" ]; then
    echo "[registry] stopping docker-registry (pid $pid)" >&2
    stop_pid "$pid" 10
  fi
  rm -f "$pidf" "$pidf.start"
fi
rm -rf --one-file-system "$RN_REGISTRY_DIR"
if pgrep -f -- "docker-registry serve $RN_REGISTRY_DIR/config.yml" >/dev/null; then
  echo "[registry] left behind: docker-registry $(pgrep -f -- "docker-registry serve $RN_REGISTRY_DIR/config.yml" | tr '\n' ' ')" >&2
  exit 1
fi
