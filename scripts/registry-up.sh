#!/usr/bin/env bash
# Starts the local image registry of the real node (issue 10, part 2): Debian's
# docker-registry (distribution 2.8) on 127.0.0.1:5050 (RN_REGISTRY in
# scripts/lib-real-node.sh), plain HTTP, no auth, listening on loopback only. Storage under
# $STUDIO_CLUSTER_DIR/real-node/registry/data, log in real-node/logs/registry.log.
# Idempotent (a no-op when it already runs). Started by scripts/real-node-up.sh and by
# scripts/build-images.sh; stopped (and its storage removed) by scripts/registry-down.sh,
# which scripts/real-node-down.sh calls. See docs/real-node.md.
set -euo pipefail
# shellcheck source=scripts/lib-cluster.sh
source "$(dirname "$0")/lib-cluster.sh"
# shellcheck source=scripts/lib-real-node.sh
source "$(dirname "$0")/lib-real-node.sh"
reg_log() { echo "[registry] $*" >&2; }
reg_die() {
  echo "[registry] error: $*" >&2
  exit 1
}
command -v docker-registry >/dev/null || reg_die "missing 'docker-registry' (apt-get install -y docker-registry, or scripts/install-deps.sh)"
pidf=$RN_DIR/run/registry.pid
running() {
  local pid
  [ -f "$pidf" ] || return 1
  pid=$(cat "$pidf")
  kill -0 "$pid" 2>/dev/null || return 1
  [ "$(proc_state "$pid")" != Z ] || return 1
  [ "$(proc_start "$pid")" = "$(cat "$pidf.start" 2>/dev/null)" ] || return 1
  echo "$pid"
}
ping_() { curl -sf --noproxy "*" --max-time 2 "http://$RN_REGISTRY/v2/" >/dev/null; }
if pid=$(running); then
  ping_ || reg_die "registry pid $pid runs but http://$RN_REGISTRY/v2/ does not answer (log: $RN_DIR/logs/registry.log)"
  exit 0
fi
if ping_ || (exec 3<>"/dev/tcp/127.0.0.1/$RN_REGISTRY_PORT") 2>/dev/null; then
  reg_die "something else listens on $RN_REGISTRY (not our registry: no pid file $pidf); stop it or change RN_REGISTRY_PORT in scripts/lib-real-node.sh"
fi
mkdir -p "$RN_REGISTRY_DIR/data" "$RN_DIR/run" "$RN_DIR/logs"
cat >"$RN_REGISTRY_DIR/config.yml" <<YAML
version: 0.1
log:
  level: info
  formatter: text
  accesslog: {disabled: true}
storage:
  filesystem: {rootdirectory: $RN_REGISTRY_DIR/data}
  delete: {enabled: true}
  cache: {blobdescriptor: inmemory}
http:
  addr: $RN_REGISTRY
  # Only used to sign upload state between requests of one push; this registry lives as
  # long as the real node.
  secret: studio-local-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
  headers:
    X-Content-Type-Options: [nosniff]
YAML
rm -f "$pidf" "$pidf.start"
# shellcheck disable=SC2016
setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidf" docker-registry serve "$RN_REGISTRY_DIR/config.yml" \
  </dev/null >>"$RN_DIR/logs/registry.log" 2>&1 9>&- &
for ((i = 0; i < 200; i++)); do [ -s "$pidf" ] && break; sleep 0.05; done
[ -s "$pidf" ] || reg_die "docker-registry did not start"
proc_start "$(cat "$pidf")" >"$pidf.start"
for ((i = 0; i < 100; i++)); do
  ping_ && break
  running >/dev/null || { tail -n 20 "$RN_DIR/logs/registry.log" >&2; reg_die "docker-registry exited (log above: $RN_DIR/logs/registry.log)"; }
  sleep 0.1
done
ping_ || reg_die "docker-registry did not answer on http://$RN_REGISTRY/v2/ within 10 s (log: $RN_DIR/logs/registry.log)"
reg_log "registry $(docker-registry --version | awk '{print $3}') on http://$RN_REGISTRY (pid $(cat "$pidf"), storage $RN_REGISTRY_DIR/data)"
