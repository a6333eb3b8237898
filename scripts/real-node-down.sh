#!/usr/bin/env bash
# Removes the opt-in real node of scripts/real-node-up.sh: its pods (through the API
# server when it is up, so the kubelet tears down their sandboxes and CNI), the Node
# object, the kubelet, every container and shim of our containerd, containerd, the
# mounts under the real node's directory (rootfs overlays, netns, shm), the bridge
# studiorn0, the local registry and its storage, the kubelet's cgroups, the iptables
# chains that were absent before, the sysctls the kubelet rewrote, and the state
# directory. Idempotent. Leaves the control plane alone.
set -uo pipefail
# shellcheck source=scripts/lib-cluster.sh
source "$(dirname "$0")/lib-cluster.sh"
# shellcheck source=scripts/lib-real-node.sh
source "$(dirname "$0")/lib-real-node.sh"
[ "$(id -u)" = 0 ] || rn_die "needs root"
CP_BIN=${STUDIO_CP_BIN:-${STUDIO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/studio}/bin}
kubectl_() { "$CP_BIN/kubectl" --kubeconfig "$DIR/kubeconfig" --request-timeout=10s "$@"; }

rn_pid() {
  local f=$RN_DIR/run/$1.pid pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  kill -0 "$pid" 2>/dev/null || return 1
  [ "$(proc_state "$pid")" != Z ] || return 1
  [ "$(proc_start "$pid")" = "$(cat "$f.start" 2>/dev/null)" ] || return 1
  echo "$pid"
}

# 1. pods through the API server (the kubelet stops them and calls CNI DEL), the Node.
if [ -x "$CP_BIN/kubectl" ] && [ -f "$DIR/kubeconfig" ] && kubectl_ get node "$RN_NODE" >/dev/null 2>&1; then
  if rn_pid kubelet >/dev/null; then
    rn_log "deleting the pods on $RN_NODE"
    kubectl_ delete pods -A --field-selector "spec.nodeName=$RN_NODE" --grace-period=5 --wait=true --timeout=40s >/dev/null 2>&1 ||
      rn_log "  warning: not every pod on $RN_NODE was deleted in 40 s (removed below)"
  fi
  kubectl_ delete node "$RN_NODE" --wait=false >/dev/null 2>&1 || true
fi
# 2. kube-proxy (its nft tables are deleted in 8.), the kubelet.
if pid=$(rn_pid kube-proxy); then
  rn_log "stopping kube-proxy (pid $pid)"
  stop_pid "$pid" 10
fi
if pid=$(rn_pid kubelet); then
  rn_log "stopping kubelet (pid $pid)"
  stop_pid "$pid" 15
fi
# 3. containers, then containerd, then shims that outlived it.
if pid=$(rn_pid containerd); then
  for t in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true; done
  sleep 0.5
  for t in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$t" >/dev/null 2>&1 || true; done
  for c in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$c" >/dev/null 2>&1 || true; done
  rn_log "stopping containerd (pid $pid)"
  stop_pid "$pid" 15
fi
for p in $(pgrep -f containerd-shim || true); do
  if tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -qF -- "$RN_SOCK"; then
    rn_log "  killing containerd-shim pid $p"
    kill -KILL "$p" 2>/dev/null || true
  fi
done
# 4. anything left in the kubelet's cgroups (a container whose shim was killed).
for h in /sys/fs/cgroup/*/; do
  [ -d "$h$RN_CGROUP" ] || continue
  find "$h$RN_CGROUP" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u | while read -r p; do
    [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true
  done
done
sleep 0.3
# 5. mounts under the state dir (overlay rootfs, shm, netns bind mounts, kubelet volumes).
if [ -d "$RN_DIR" ]; then
  awk -v d="$RN_DIR/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || rn_log "  warning: could not unmount $m"
  done
fi
# 6. the bridge (veths of pods whose netns is gone are gone with it).
if ip link show "$RN_BRIDGE" >/dev/null 2>&1; then
  for link in $(ip -o link show master "$RN_BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    ip link delete "$link" 2>/dev/null || true
  done
  ip link delete "$RN_BRIDGE" 2>/dev/null || rn_log "  warning: could not delete bridge $RN_BRIDGE"
fi
# 7. cgroups, deepest first.
for h in /sys/fs/cgroup/*/; do
  [ -d "$h$RN_CGROUP" ] || continue
  find "$h$RN_CGROUP" -depth -type d -exec rmdir {} \; 2>/dev/null
  [ ! -d "$h$RN_CGROUP" ] || rn_log "  warning: could not remove cgroup $h$RN_CGROUP"
done
# 8. iptables chains and sysctls, as they were before real-node-up.
if [ -f "$RN_DIR/prestate" ]; then
  while read -r kind a b c; do
    case $kind in
      chain)
        "$a" -w 5 -t "$b" -S "$c" >/dev/null 2>&1 || continue
        # rules that jump to the chain, then the chain itself (only chains we created)
        "$a" -w 5 -t "$b" -S 2>/dev/null | grep -E -- "-j $c( |\$)" | sed 's/^-A /-D /' | while read -r rule; do
          # shellcheck disable=SC2086
          "$a" -w 5 -t "$b" $rule 2>/dev/null || true
        done
        "$a" -w 5 -t "$b" -F "$c" 2>/dev/null && "$a" -w 5 -t "$b" -X "$c" 2>/dev/null ||
          rn_log "  warning: could not delete $a -t $b chain $c"
        ;;
      sysctl)
        [ "$(cat "/proc/sys/$a")" = "$b" ] || { echo "$b" >"/proc/sys/$a" 2>/dev/null || rn_log "  warning: could not restore $a=$b"; }
        ;;
      nft)
        nft list table "$a" "$b" >/dev/null 2>&1 || continue
        nft delete table "$a" "$b" 2>/dev/null || rn_log "  warning: could not delete nft table $a $b"
        ;;
      dir)
        [ -d "$a" ] && rm -rf --one-file-system "$a" 2>/dev/null
        ;;
    esac
  done <"$RN_DIR/prestate"
fi
# 8b. what real-node-up changed on the control plane's network (when it is still up).
if ip link show "$BRIDGE" >/dev/null 2>&1; then
  echo 0 >"/proc/sys/net/ipv4/conf/$BRIDGE/forwarding" 2>/dev/null || true
fi
ip netns exec "$CP_NETNS" ip route del "$RN_SUBNET" 2>/dev/null || true
# 9. the local registry (scripts/registry-up.sh) and its storage.
"$repo/scripts/registry-down.sh" || rn_log "  warning: the local registry was not stopped cleanly"
# 10. the state directory.
if [ -d "$RN_DIR" ]; then
  if awk -v d="$RN_DIR/" 'index($2, d) == 1' /proc/self/mounts | grep -q .; then
    rn_log "  warning: mounts remain under $RN_DIR: keeping it"
  else
    rm -rf --one-file-system "$RN_DIR"
  fi
fi
# What is left (empty when clean).
left=""
pgrep -f -- "$RN_SOCK" >/dev/null && left="$left processes($(pgrep -f -- "$RN_SOCK" | tr '\n' ' '))"
pgrep -f -- "docker-registry serve $RN_REGISTRY_DIR/" >/dev/null && left="$left registry($(pgrep -f -- "docker-registry serve $RN_REGISTRY_DIR/" | tr '\n' ' '))"
ip link show "$RN_BRIDGE" >/dev/null 2>&1 && left="$left bridge:$RN_BRIDGE"
ls -d /sys/fs/cgroup/*/"$RN_CGROUP" >/dev/null 2>&1 && left="$left cgroups"
[ -d "$RN_DIR" ] && left="$left dir:$RN_DIR"
if [ -n "$left" ]; then
  rn_log "left behind:$left"
  exit 1
fi
rn_log "real node removed"
