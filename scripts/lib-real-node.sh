#!/usr/bin/env bash
# Shared settings of scripts/real-node-up.sh and scripts/real-node-down.sh (the opt-in
# real node: containerd + runc + CNI + the upstream kubelet; docs/real-node.md).
# Sourced after scripts/lib-cluster.sh. Everything the real node creates is named here.
# shellcheck disable=SC2034
# Another API server with the same layout under STUDIO_CLUSTER_DIR (pki/ca.*, kubeconfig),
# e.g. a private control plane on 127.0.0.1 while the shared cluster is in use.
API_URL=${STUDIO_REAL_NODE_API_URL:-$API_URL}
RN_DIR=$DIR/real-node                 # containerd root/state, kubelet root, logs, pki
RN_NODE=${STUDIO_REAL_NODE_NAME:-real-1}
RN_BRIDGE=studiorn0                   # not the control plane's studiobr0
RN_SUBNET=10.215.0.0/24               # not 10.213.0.0/16 (pods, control plane) nor 10.214.0.0/16 (Services)
RN_GATEWAY=10.215.0.1
RN_CNI_NET=studio-real                # CNI network name (host-local keeps its leases under RN_DIR)
# kubelet cgroupRoot /studio-real-<8 hex of the cluster dir>/kubepods/... in every v1
# hierarchy: cgroups are machine-wide, so a second cluster (the teardown suite's sandbox)
# must not share them.
RN_CGROUP=studio-real-$(printf %s "$DIR" | sha256sum | cut -c1-8)
RN_KUBELET_PORT=10260
RN_HEALTHZ_PORT=10268
RN_PROXY_HEALTHZ_PORT=10276
RN_NFT_TABLE=studio-real              # our forward filter (STUDIO_REAL_NODE_PROXY=1)
RN_SOCK=$RN_DIR/containerd/containerd.sock
RN_PAUSE_IMAGE=studio.local/pause:1
RN_BUSYBOX_IMAGE=studio.local/busybox:1
# The local image registry (Debian docker-registry, distribution 2.8; scripts/registry-up.sh):
# plain HTTP on loopback only, storage under RN_DIR (removed by real-node-down). containerd
# pulls from it through the hosts.toml under RN_CERTS_D; scripts/build-images.sh pushes to it.
RN_REGISTRY_PORT=5050
RN_REGISTRY=127.0.0.1:$RN_REGISTRY_PORT
RN_REGISTRY_DIR=$RN_DIR/registry      # config.yml and data/
RN_CERTS_D=$RN_DIR/certs.d            # containerd's registry.config_path
# Sysctls a kubelet with protectKernelDefaults=false rewrites (restored by real-node-down).
RN_SYSCTLS="vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys kernel/keys/root_maxbytes"
# iptables chains the kubelet creates (its canary and hint chains; portmap's when a pod
# has a hostPort). real-node-down deletes the ones real-node-up found absent.
RN_CHAINS="filter:KUBE-FIREWALL mangle:KUBE-IPTABLES-HINT mangle:KUBE-KUBELET-CANARY nat:KUBE-KUBELET-CANARY filter:KUBE-KUBELET-CANARY nat:CNI-HOSTPORT-DNAT nat:CNI-HOSTPORT-SNAT nat:CNI-HOSTPORT-MASQ nat:CNI-HOSTPORT-SETMARK"

rn_log() { echo "[real-node] $*" >&2; }
rn_die() {
  echo "[real-node] error: $*" >&2
  exit 1
}
ctr_() { ctr --address "$RN_SOCK" -n k8s.io "$@"; }
