#!/usr/bin/env bash
# Stops the local cluster started by scripts/cluster-up.sh: the real node first
# (scripts/real-node-down.sh: its pods, kubelet, kube-proxy, containerd, registry, CNI
# and nft state), then the provisioner and the control plane; removes the studio-*
# network namespaces, veths and the bridge. Idempotent. Keeps $STUDIO_CLUSTER_DIR (pki,
# logs, pod logs) for post-mortems; cluster-up starts from empty etcd and volumes.
set -euo pipefail
# shellcheck source=scripts/lib-cluster.sh
source "$(dirname "$0")/lib-cluster.sh"

[ "$(id -u)" = 0 ] || die "cluster-down needs root"
for tool in ip pgrep; do
  command -v "$tool" >/dev/null || die "missing tool '$tool' (apt-get install iproute2 procps)"
done

if [ -d "$DIR/run" ]; then
  exec 9>"$DIR/run/lock"
  flock -w 300 9 || die "another cluster-up/cluster-down holds $DIR/run/lock for more than 300 s"
fi

teardown
left=$(leftovers)
if [ -n "$left" ]; then
  echo "[cluster] error: could not remove:" >&2
  echo "$left" >&2
  exit 1
fi
log "cluster is down"
