#!/usr/bin/env bash
# Starts the local cluster's Node (scripts/cluster-up.sh runs it) next to the control plane:
# containerd (Debian) + runc + the CNI plugins (bridge, host-local, loopback, portmap) on
# the bridge studiorn0 (10.215.0.0/24), and the upstream kubelet built by
# scripts/build-node.sh from the control plane's pinned Kubernetes release, registered as
# the Node real-1 (label studio.cms.io/real-node=true). The sandbox image is the pause image
# built here (tests/realnode/pause.c). It also starts the local image registry
# (scripts/registry-up.sh, 127.0.0.1:5050, plain HTTP) that containerd pulls from and
# `make images` pushes to. scripts/cluster-down.sh stops it (scripts/real-node-down.sh).
# See docs/real-node.md.
#
# Needs the control plane up (scripts/cluster-up.sh; run both under
# `flock -o /work/cluster.lock`), unless STUDIO_REAL_NODE_STANDALONE=1: then the kubelet
# runs without an API server and starts the static pods in tests/realnode/static/ (a way to
# test containerd + CNI + the kubelet on their own).
#
# Environment: STUDIO_CLUSTER_DIR (as cluster-up), STUDIO_REAL_NODE_NAME (default real-1),
# STUDIO_UP_TIMEOUT (default 90 s), STUDIO_REAL_NODE_STANDALONE=1, STUDIO_REAL_NODE_API_URL
# and STUDIO_REAL_NODE_IP (another API server and the address it reaches the kubelet at),
# STUDIO_REAL_NODE_PROXY=1 (also kube-proxy, nftables mode, in its own nft table; pods may
# then forward through studiorn0 to Service backends on it, and nowhere else).
set -euo pipefail
# shellcheck source=scripts/lib-cluster.sh
source "$(dirname "$0")/lib-cluster.sh"
# shellcheck source=scripts/lib-real-node.sh
source "$(dirname "$0")/lib-real-node.sh"
TIMEOUT=${STUDIO_UP_TIMEOUT:-90}
STANDALONE=${STUDIO_REAL_NODE_STANDALONE:-0}
PROXY=${STUDIO_REAL_NODE_PROXY:-0}
start_ns=$(date +%s%N)

[ "$(id -u)" = 0 ] || rn_die "the real node needs root"
for tool in containerd runc ctr iptables openssl setsid; do
  command -v "$tool" >/dev/null || rn_die "missing '$tool' (apt-get install -y containerd runc containernetworking-plugins iptables openssl)"
done
CNI_BIN=/usr/lib/cni
for p in bridge host-local loopback portmap; do
  [ -x "$CNI_BIN/$p" ] || rn_die "missing CNI plugin $CNI_BIN/$p (apt-get install -y containernetworking-plugins)"
done
[ -d /sys/fs/cgroup/memory ] || [ -f /sys/fs/cgroup/cgroup.controllers ] || rn_die "no cgroup hierarchy found under /sys/fs/cgroup"

mkdir -p "$RN_DIR/run" "$RN_DIR/logs"
pidf() { echo "$RN_DIR/run/$1.pid"; }
rn_pid() {
  local f=$RN_DIR/run/$1.pid pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  kill -0 "$pid" 2>/dev/null || return 1
  [ "$(proc_state "$pid")" != Z ] || return 1
  [ "$(proc_start "$pid")" = "$(cat "$f.start" 2>/dev/null)" ] || return 1
  echo "$pid"
}
rn_launch() { # rn_launch NAME CMD...
  local name=$1 f i
  shift
  f=$(pidf "$name")
  rm -f "$f" "$f.start"
  # shellcheck disable=SC2016
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$f" "$@" </dev/null >>"$RN_DIR/logs/$name.log" 2>&1 9>&- &
  for ((i = 0; i < 200; i++)); do [ -s "$f" ] && break; sleep 0.05; done
  [ -s "$f" ] || rn_die "$name did not start"
  proc_start "$(cat "$f")" >"$f.start"
}
rn_fail() {
  echo "[real-node] error: $*" >&2
  for c in containerd kubelet kube-proxy; do
    [ -s "$RN_DIR/logs/$c.log" ] || continue
    echo "----- last lines of $RN_DIR/logs/$c.log" >&2
    tail -n 25 "$RN_DIR/logs/$c.log" >&2
  done
  echo "[real-node] (state kept for inspection; remove it with scripts/real-node-down.sh)" >&2
  exit 1
}
wait_until() { # wait_until DESCRIPTION COMPONENTS CHECK...
  local what=$1 comps=$2 deadline c
  shift 2
  deadline=$(($(date +%s) + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    for c in ${comps//,/ }; do rn_pid "$c" >/dev/null || rn_fail "$c exited while waiting for $what"; done
    [ "$(date +%s)" -lt "$deadline" ] || rn_fail "timed out after ${TIMEOUT}s waiting for $what"
    sleep 0.5
  done
}

if rn_pid containerd >/dev/null && rn_pid kubelet >/dev/null; then
  rn_log "already running (containerd pid $(rn_pid containerd), kubelet pid $(rn_pid kubelet))"
  exit 0
fi
if rn_pid containerd >/dev/null || rn_pid kubelet >/dev/null || ip link show "$RN_BRIDGE" >/dev/null 2>&1; then
  rn_log "found a half-started real node: removing it first"
  "$repo/scripts/real-node-down.sh"
  mkdir -p "$RN_DIR/run" "$RN_DIR/logs" # real-node-down removed the whole directory
fi

kubectl_() { "$CP_BIN/kubectl" --kubeconfig "$DIR/kubeconfig" --request-timeout=10s "$@"; }
NODE_BIN=$("$repo/scripts/build-node.sh") || rn_die "building the node binaries failed (scripts/build-node.sh)"
CP_BIN=${STUDIO_CP_BIN:-$NODE_BIN} # build-controlplane.sh and build-node.sh share the cache's bin/
IMAGES=$(dirname "$NODE_BIN")/images
if [ "$STANDALONE" != 1 ]; then
  curl -sf --max-time 3 --cacert "$DIR/pki/ca.crt" --cert "$DIR/pki/admin.crt" --key "$DIR/pki/admin.key" \
    "$API_URL/readyz" >/dev/null 2>&1 || rn_die "the control plane is not up at $API_URL: run scripts/cluster-up.sh first (or STUDIO_REAL_NODE_STANDALONE=1)"
  NODE_IP=${STUDIO_REAL_NODE_IP:-$BRIDGE_ADDR} # the API server (netns studio-cp) reaches the host through studiobr0
else
  NODE_IP=127.0.0.1
fi

# ------------------------------------------------ what the machine looked like before
# (real-node-down restores exactly this)
if [ ! -f "$RN_DIR/prestate" ]; then
  {
    for s in $RN_SYSCTLS; do echo "sysctl $s $(cat "/proc/sys/$s")"; done
    echo "sysctl net/ipv4/ip_forward $(cat /proc/sys/net/ipv4/ip_forward)"
    for tc in $RN_CHAINS; do
      for ipt in iptables ip6tables; do
        if ! "$ipt" -w 5 -t "${tc%%:*}" -S "${tc#*:}" >/dev/null 2>&1; then echo "chain $ipt ${tc%%:*} ${tc#*:}"; fi
      done
    done
    [ -d /run/containerd ] || echo "dir /run/containerd"
    if command -v nft >/dev/null; then
      for t in "ip kube-proxy" "ip6 kube-proxy" "inet $RN_NFT_TABLE"; do
        nft list table $t >/dev/null 2>&1 || echo "nft $t"
      done
    fi
  } >"$RN_DIR/prestate"
fi

# ------------------------------------------------ network: our own bridge
rn_log "creating bridge $RN_BRIDGE ($RN_GATEWAY/24)"
ip link add "$RN_BRIDGE" type bridge
ip addr add "$RN_GATEWAY/24" dev "$RN_BRIDGE"
echo 0 >"/proc/sys/net/ipv4/conf/$RN_BRIDGE/forwarding" # like studiobr0: nothing is routed out
ip link set "$RN_BRIDGE" up
mkdir -p "$RN_DIR/cni/net.d" "$RN_DIR/cni/ipam"
# isGateway=false: the bridge plugin would otherwise turn on net.ipv4.ip_forward for the
# whole machine; the bridge already has the gateway address (above) and host-local gives
# the pods their default route. ipMasq=false: no NAT rules.
cat >"$RN_DIR/cni/net.d/10-$RN_CNI_NET.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "$RN_CNI_NET",
  "plugins": [
    {"type": "bridge", "bridge": "$RN_BRIDGE", "isGateway": false, "ipMasq": false,
     "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$RN_DIR/cni/ipam",
              "ranges": [[{"subnet": "$RN_SUBNET", "gateway": "$RN_GATEWAY"}]],
              "routes": [{"dst": "0.0.0.0/0", "gw": "$RN_GATEWAY"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
cat >"$RN_DIR/cni/net.d/99-loopback.conf" <<JSON
{"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}
JSON

# ------------------------------------------------ the local registry (plain HTTP, loopback)
"$repo/scripts/registry-up.sh" || rn_die "the local registry did not start (scripts/registry-up.sh)"
# containerd reaches it through a hosts.toml (registry.config_path below): plain HTTP, pull
# and resolve only. Images are pushed there by scripts/build-images.sh (make images).
mkdir -p "$RN_CERTS_D/$RN_REGISTRY"
cat >"$RN_CERTS_D/$RN_REGISTRY/hosts.toml" <<TOML
server = "http://$RN_REGISTRY"

[host."http://$RN_REGISTRY"]
  capabilities = ["pull", "resolve"]
TOML

# ------------------------------------------------ containerd
mkdir -p "$RN_DIR/containerd/root" "$RN_DIR/containerd/state" "$RN_DIR/runc"
cat >"$RN_DIR/containerd/config.toml" <<TOML
version = 2
root = "$RN_DIR/containerd/root"
state = "$RN_DIR/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.introspection.aufs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$RN_SOCK"
[ttrpc]
  address = "$RN_DIR/containerd/containerd.sock.ttrpc"
[debug]
  address = "$RN_DIR/containerd/debug.sock"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$RN_PAUSE_IMAGE"
  netns_mounts_under_state_dir = true
  # No CAP_SYS_RESOURCE here: a sandbox's oom_score_adj of -998 is refused by the kernel
  # and runc fails with "can't get final child's PID from pipe: EOF". Clamp to ours.
  restrict_oom_score_adj = true
  enable_unprivileged_ports = false
  enable_unprivileged_icmp = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  tolerate_missing_hugetlb_controller = true
  disable_hugetlb_controller = true
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$RN_CERTS_D"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$RN_DIR/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$RN_DIR/runc"
TOML
rn_log "starting containerd $(containerd --version | awk '{print $3}') (socket $RN_SOCK)"
rn_launch containerd containerd --config "$RN_DIR/containerd/config.toml" --log-level info
wait_until "containerd's socket" containerd ctr_ version
for img in pause busybox; do
  [ -f "$IMAGES/$img.tar" ] || continue
  ctr_ images import --no-unpack=false "$IMAGES/$img.tar" >/dev/null 2>"$RN_DIR/logs/import-$img.log" ||
    rn_fail "ctr images import $IMAGES/$img.tar failed: $(cat "$RN_DIR/logs/import-$img.log")"
done
rn_log "images: $(ctr_ images ls -q | grep '^studio.local' | tr '\n' ' ')"

# ------------------------------------------------ cgroups: /studio-real in every v1 hierarchy
for h in /sys/fs/cgroup/*/; do
  [ -f "$h/cgroup.procs" ] || continue
  mkdir -p "$h$RN_CGROUP"
  if [ -f "$h/cpuset.cpus" ]; then
    cat "$h/cpuset.cpus" >"$h$RN_CGROUP/cpuset.cpus"
    cat "$h/cpuset.mems" >"$h$RN_CGROUP/cpuset.mems"
  fi
done

# ------------------------------------------------ kubelet
mkdir -p "$RN_DIR/kubelet" "$RN_DIR/pod-logs" "$RN_DIR/pki" "$RN_DIR/static"
kubeconfig_args=()
if [ "$STANDALONE" != 1 ]; then
  # Credentials as a kubelet gets them: a client certificate for system:node:<name> in
  # system:nodes, signed by the cluster CA (the Node authorizer then admits it).
  pki=$DIR/pki
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$RN_DIR/pki/node.key" 2>/dev/null
  openssl req -new -key "$RN_DIR/pki/node.key" -subj "/O=system:nodes/CN=system:node:$RN_NODE" -out "$RN_DIR/pki/node.csr" 2>/dev/null
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' >"$RN_DIR/pki/node.ext"
  openssl x509 -req -in "$RN_DIR/pki/node.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
    -days 365 -extfile "$RN_DIR/pki/node.ext" -out "$RN_DIR/pki/node.crt" 2>/dev/null
  cat >"$RN_DIR/kubelet.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: studio
  cluster: {server: "$API_URL", certificate-authority: "$pki/ca.crt"}
users:
- name: node
  user: {client-certificate: "$RN_DIR/pki/node.crt", client-key: "$RN_DIR/pki/node.key"}
contexts:
- name: studio
  context: {cluster: studio, user: node}
current-context: studio
KC
  chmod 600 "$RN_DIR/kubelet.kubeconfig"
  kubeconfig_args=(--kubeconfig "$RN_DIR/kubelet.kubeconfig"
    --node-labels "studio.cms.io/real-node=true")
else
  cp "$repo"/tests/realnode/static/*.yaml "$RN_DIR/static/" 2>/dev/null || true
fi
cat >"$RN_DIR/kubelet-config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# Kubernetes >= 1.35 refuses cgroup v1 unless told otherwise; this machine is v1 (hybrid).
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$RN_CGROUP
containerRuntimeEndpoint: unix://$RN_SOCK
imageServiceEndpoint: unix://$RN_SOCK
address: $NODE_IP
port: $RN_KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $RN_HEALTHZ_PORT
podLogsDir: $RN_DIR/pod-logs
staticPodPath: $RN_DIR/static
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: $([ "$STANDALONE" = 1 ] && echo false || echo true)}
  x509: {clientCAFile: "$DIR/pki/ca.crt"}
authorization:
  mode: $([ "$STANDALONE" = 1 ] && echo AlwaysAllow || echo Webhook)
failSwapOn: false
protectKernelDefaults: false
makeIPTablesUtilChains: true
resolvConf: /etc/resolv.conf
clusterDomain: cluster.local
# A shared development machine: no evictions for its disk or memory.
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
syncFrequency: 10s
fileCheckFrequency: 5s
# The tests kill -9 the same members back to back (20 failovers in a few minutes): with
# the default 5 min cap of CrashLoopBackOff a killed member would wait minutes for its
# restart. KubeletCrashLoopBackOffMax is beta (on by default) since 1.35.
crashLoopBackOff: {maxContainerRestartPeriod: 10s}
# The only Node: every suite's pods (and operator-bench's 100 clusters) land here.
maxPods: 250
YAML
rn_log "starting kubelet $("$NODE_BIN/kubelet" --version | awk '{print $2}') as node $RN_NODE ($NODE_IP:$RN_KUBELET_PORT)"
rn_launch kubelet "$NODE_BIN/kubelet" --config "$RN_DIR/kubelet-config.yaml" \
  --root-dir "$RN_DIR/kubelet" --cert-dir "$RN_DIR/kubelet/pki" \
  --hostname-override "$RN_NODE" --node-ip "$NODE_IP" \
  "${kubeconfig_args[@]}" --v=2

healthz() { curl -sf --max-time 2 "http://127.0.0.1:$RN_HEALTHZ_PORT/healthz"; }
wait_until "the kubelet's healthz" containerd,kubelet healthz
if [ "$STANDALONE" != 1 ]; then
  node_ready() {
    [ "$(kubectl_ get node "$RN_NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
  }
  wait_until "Node $RN_NODE to be Ready" containerd,kubelet node_ready
  # A kubelet registers with the taint node.kubernetes.io/not-ready:NoSchedule and the
  # node lifecycle controller lifts it once the Node is Ready; the local cluster runs
  # kube-controller-manager without that controller (cluster-up.sh), so lift it here.
  kubectl_ taint node "$RN_NODE" node.kubernetes.io/not-ready:NoSchedule- >/dev/null 2>&1 || true
  if [ "$PROXY" = 1 ]; then
    command -v nft >/dev/null || rn_fail "kube-proxy's nftables mode needs nft (apt-get install -y nftables)"
    # The host routes between the two pod networks: pod -> ClusterIP -> pod (DNAT in
    # prerouting, then forwarded), the operator's pod (studiobr0) -> a real node's pod
    # (studiorn0) and back, a real node's pod -> the API server. Forwarding on both
    # bridges; our own table drops whatever would be forwarded anywhere else.
    nft -f - <<NFT
table inet $RN_NFT_TABLE {
  chain forward {
    type filter hook forward priority filter - 5; policy accept;
    iifname { "$RN_BRIDGE", "$BRIDGE" } oifname != { "$RN_BRIDGE", "$BRIDGE" } drop
  }
}
NFT
    echo 1 >"/proc/sys/net/ipv4/conf/$RN_BRIDGE/forwarding"
    echo 1 >"/proc/sys/net/ipv4/conf/$BRIDGE/forwarding"
    # The control plane's netns has no default route: the way back to the real node's pods.
    ip netns exec "$CP_NETNS" ip route replace "$RN_SUBNET" via "$BRIDGE_ADDR"
    # system:kube-proxy is bound to system:node-proxier by the default RBAC policy.
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$RN_DIR/pki/proxy.key" 2>/dev/null
    openssl req -new -key "$RN_DIR/pki/proxy.key" -subj "/CN=system:kube-proxy" -out "$RN_DIR/pki/proxy.csr" 2>/dev/null
    openssl x509 -req -in "$RN_DIR/pki/proxy.csr" -CA "$DIR/pki/ca.crt" -CAkey "$DIR/pki/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
      -days 365 -extfile "$RN_DIR/pki/node.ext" -out "$RN_DIR/pki/proxy.crt" 2>/dev/null
    sed -e "s#$RN_DIR/pki/node.crt#$RN_DIR/pki/proxy.crt#" -e "s#$RN_DIR/pki/node.key#$RN_DIR/pki/proxy.key#" \
      "$RN_DIR/kubelet.kubeconfig" >"$RN_DIR/proxy.kubeconfig"
    chmod 600 "$RN_DIR/proxy.kubeconfig"
    # conntrack settings 0 = leave the machine's sysctls alone.
    rn_log "starting kube-proxy (nftables mode)"
    rn_launch kube-proxy "$NODE_BIN/kube-proxy" --proxy-mode=nftables --kubeconfig "$RN_DIR/proxy.kubeconfig" \
      --hostname-override "$RN_NODE" --cluster-cidr "$RN_SUBNET" --nodeport-addresses "$RN_GATEWAY/32" \
      --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0 \
      --healthz-bind-address "127.0.0.1:$RN_PROXY_HEALTHZ_PORT" --metrics-bind-address 127.0.0.1:10279 --v=1
    proxy_healthy() { curl -s --max-time 2 "http://127.0.0.1:$RN_PROXY_HEALTHZ_PORT/healthz" | grep -q lastUpdated; }
    wait_until "kube-proxy's healthz" kubelet,kube-proxy proxy_healthy
  fi
fi
rn_log "real node $RN_NODE is up in $((($(date +%s%N) - start_ns) / 1000000)) ms (logs in $RN_DIR/logs)"
