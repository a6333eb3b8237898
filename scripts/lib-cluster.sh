#!/usr/bin/env bash
# Shared settings and functions of scripts/cluster-up.sh and scripts/cluster-down.sh.
# Sourced, not run; its settings are used by the scripts that source it.
# shellcheck disable=SC2034
# Everything the local cluster creates is named here, so that
# cluster-down (and the stale-state clean-up of cluster-up) removes exactly that.

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${STUDIO_CLUSTER_DIR:-$repo/.cache/cluster}
TARGET_DIR=${STUDIO_TARGET_DIR:-$repo/target/debug}

# Network layout (see DESIGN.md section 6). Every address traffic goes to belongs to a
# network namespace created here or by the real node's CNI (scripts/lib-real-node.sh).
BRIDGE=studiobr0
BRIDGE_ADDR=10.213.0.1
CP_NETNS=studio-cp
CP_VETH_HOST=studio-cpv
CP_ADDR=10.213.0.2
NET_PREFIX=16
SERVICE_CIDR=10.214.0.0/16
SERVICE_API_IP=10.214.0.1
API_PORT=6443
API_URL="https://$CP_ADDR:$API_PORT"
# Names the STUDIO_CLUSTER_DIR of the cluster that owns the (machine-wide) network names.
OWNER_FILE=/run/studio-cluster.dir
# Components in start order; stopped in reverse order (after the real node). The
# provisioner (studio-provisioner) makes the PVs of the pods.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler provisioner)

log() { echo "[cluster] $*" >&2; }
die() {
  echo "[cluster] error: $*" >&2
  exit 1
}

pid_file() { echo "$DIR/run/$1.pid"; }

# component_pid NAME: prints the pid of a running component started by us, or fails.
component_pid() {
  local f pid
  f=$(pid_file "$1")
  [ -f "$f" ] || return 1
  pid=$(cat "$f" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # A zombie (dead, not yet reaped by whoever inherited it) is not running.
  [ "$(proc_state "$pid")" != Z ] || return 1
  # A recycled pid would belong to some other program: check the start marker we wrote.
  [ "$(proc_start "$pid")" = "$(cat "$f.start" 2>/dev/null)" ] || return 1
  echo "$pid"
}

# proc_start PID: the process's start time in clock ticks since boot (field 22 of stat).
proc_start() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  # shellcheck disable=SC2086
  set -- $stat
  echo "${20}"
}

# proc_state PID: the process's state letter (R, S, D, Z, ...).
proc_state() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  echo "${stat%% *}"
}

# stop_pid PID TIMEOUT_SECONDS: SIGTERM the process group (and the process), then SIGKILL
# whatever is still alive after the timeout. Waits until the process is gone.
stop_pid() {
  local pid=$1 timeout=$2 i
  kill -TERM -- "-$pid" 2>/dev/null || true
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < timeout * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    # A zombie child of ours counts as gone.
    [ "$(proc_state "$pid")" != Z ] || return 0
    sleep 0.1
  done
  log "  pid $pid ignored SIGTERM for ${timeout}s: SIGKILL"
  kill -KILL -- "-$pid" 2>/dev/null || true
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  log "  warning: pid $pid is still alive after SIGKILL"
}

# kill_netns_pids NETNS: kills every process that lives in the named network namespace.
kill_netns_pids() {
  local ns=$1 pids pid
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  [ -n "$pids" ] || return 0
  log "  killing processes left in netns $ns: $(echo "$pids" | tr '\n' ' ')"
  for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 30); do
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -n "$pids" ] || return 0
    sleep 0.1
  done
  for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 30); do
    [ -n "$(ip netns pids "$ns" 2>/dev/null || true)" ] || return 0
    sleep 0.1
  done
}

our_netns() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^studio-' || true; }

# teardown: stops everything the cluster started and removes its network objects.
# Idempotent; safe on a half-started or crashed cluster.
teardown() {
  local c pid ns link i
  # 0. the real node (scripts/real-node-up.sh: containerd, kubelet, kube-proxy, registry),
  # while the API server still answers.
  if [ -d "$DIR/real-node" ] || ip link show studiorn0 >/dev/null 2>&1; then
    "$repo/scripts/real-node-down.sh" || log "warning: scripts/real-node-down.sh failed"
  fi
  # 1. the control plane, newest first.
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    c=${COMPONENTS[$i]}
    if pid=$(component_pid "$c"); then
      log "stopping $c (pid $pid)"
      stop_pid "$pid" 5
    fi
    rm -f "$(pid_file "$c")" "$(pid_file "$c").start"
  done
  kill_netns_pids "$CP_NETNS"
  # 2. mounts left under the state dir.
  if [ -d "$DIR" ]; then
    awk -v d="$DIR/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
      log "  unmounting $m"
      umount -l "$m" 2>/dev/null || true
    done
  fi
  # 3. network namespaces (deleting one removes the veth ends inside it), veths, bridge.
  for ns in $(our_netns); do
    kill_netns_pids "$ns"
    ip netns delete "$ns" 2>/dev/null || log "  warning: could not delete netns $ns"
  done
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    for link in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
      ip link delete "$link" 2>/dev/null || true
    done
    ip link delete "$BRIDGE" 2>/dev/null || log "  warning: could not delete bridge $BRIDGE"
  fi
  ip link delete "$CP_VETH_HOST" 2>/dev/null || true
  [ "$(cat "$OWNER_FILE" 2>/dev/null || true)" != "$DIR" ] || rm -f "$OWNER_FILE"
  return 0
}

# leftovers: prints every object of ours that still exists (empty when clean).
leftovers() {
  local c pid ns
  for c in "${COMPONENTS[@]}"; do
    if pid=$(component_pid "$c"); then echo "process $c (pid $pid)"; fi
  done
  for ns in $(our_netns); do echo "netns $ns"; done
  ip link show "$BRIDGE" >/dev/null 2>&1 && echo "bridge $BRIDGE"
  ip link show "$CP_VETH_HOST" >/dev/null 2>&1 && echo "veth $CP_VETH_HOST"
  ip link show studiorn0 >/dev/null 2>&1 && echo "bridge studiorn0 (the real node)"
  pgrep -f -- "$DIR/real-node/" >/dev/null && echo "real node processes: $(pgrep -f -- "$DIR/real-node/" | tr '\n' ' ')"
  return 0
}
