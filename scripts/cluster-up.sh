#!/usr/bin/env bash
# Starts the local Kubernetes cluster in the background: etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler in the network namespace studio-cp
# (10.213.0.2 on the bridge studiobr0), the PVC provisioner (studio-provisioner), and the
# Node real-1: the upstream kubelet and kube-proxy with containerd, runc and CNI, and the
# local image registry (scripts/real-node-up.sh). Returns when the API server is healthy,
# the Node is Ready and the default ServiceAccount exists; prints the admin kubeconfig's
# path.
#
# Environment:
#   STUDIO_CLUSTER_DIR   state: pki/, etcd/, real-node/, volumes/, logs/, run/, kubeconfig
#                        (default <repo>/.cache/cluster)
#   STUDIO_CP_BIN        control-plane binaries (default: scripts/build-controlplane.sh)
#   STUDIO_TARGET_DIR    the workspace's built binaries (default <repo>/target/debug)
#   STUDIO_UP_TIMEOUT    seconds to wait for each stage (default 90)
#   STUDIO_NO_KUBELET=1  start the control plane only (no Node; pods stay Pending)
set -euo pipefail
# shellcheck source=scripts/lib-cluster.sh
source "$(dirname "$0")/lib-cluster.sh"

TIMEOUT=${STUDIO_UP_TIMEOUT:-90}
NO_KUBELET=${STUDIO_NO_KUBELET:-0}
start_ns=$(date +%s%N)

[ "$(id -u)" = 0 ] || die "cluster-up needs root (network namespaces, veths, a bridge)"
for tool in ip openssl curl setsid flock awk base64 pgrep; do
  command -v "$tool" >/dev/null || die "missing tool '$tool' (apt-get install iproute2 openssl curl util-linux procps)"
done

mkdir -p "$DIR/run"
exec 9>"$DIR/run/lock"
if ! flock -w 300 9; then
  die "another cluster-up/cluster-down holds $DIR/run/lock for more than 300 s"
fi

kubectl_() { "$CP_BIN/kubectl" --kubeconfig "$DIR/kubeconfig" --request-timeout=10s "$@"; }

api_healthy() {
  curl -sf --max-time 3 --cacert "$DIR/pki/ca.crt" --cert "$DIR/pki/admin.crt" \
    --key "$DIR/pki/admin.key" "$API_URL/readyz" >/dev/null 2>&1
}

# The real node: containerd + runc + CNI + the upstream kubelet and kube-proxy, and the
# local registry `make images` pushes to (scripts/real-node-up.sh, docs/real-node.md).
# Idempotent: says "already running" when it is.
start_real_node() {
  [ "$NO_KUBELET" != 1 ] || return 0
  STUDIO_CP_BIN=${CP_BIN:-${STUDIO_CP_BIN:-}} STUDIO_REAL_NODE_PROXY=1 "$repo/scripts/real-node-up.sh" >&2 ||
    die "the real node did not start (scripts/real-node-up.sh above; STUDIO_NO_KUBELET=1 starts the control plane alone)"
}

# Already running?
running=()
for c in etcd kube-apiserver kube-controller-manager kube-scheduler provisioner; do
  if component_pid "$c" >/dev/null; then running+=("$c"); fi
done
if [ "${#running[@]}" = 5 ] && [ -f "$DIR/kubeconfig" ] && api_healthy; then
  start_real_node
  log "already running (${running[*]}); kubeconfig:"
  echo "$DIR/kubeconfig"
  exit 0
fi
# With etcd and the API server up, a component that exited is restarted
# alone: the cluster's objects are kept.
repair=0
if component_pid etcd >/dev/null && component_pid kube-apiserver >/dev/null &&
  [ -f "$DIR/kubeconfig" ] && api_healthy; then
  repair=1
  log "etcd and kube-apiserver are running (${running[*]}): restarting what has exited"
fi
owner=$(cat "$OWNER_FILE" 2>/dev/null || true)
if [ -n "$owner" ] && [ "$owner" != "$DIR" ] && [ -n "$(ip netns pids "$CP_NETNS" 2>/dev/null || true)" ]; then
  die "a cluster with STUDIO_CLUSTER_DIR=$owner is running (only one fits on a machine): stop it with STUDIO_CLUSTER_DIR=$owner scripts/cluster-down.sh"
fi
if [ "$repair" = 0 ] && { [ "${#running[@]}" -gt 0 ] || [ -n "$(our_netns)" ] || ip link show "$BRIDGE" >/dev/null 2>&1; }; then
  log "found stale state (running: ${running[*]:-none}; netns: $(our_netns | tr '\n' ' ')): cleaning it up"
  teardown
fi

# Binaries.
if [ -n "${STUDIO_CP_BIN:-}" ]; then
  CP_BIN=$STUDIO_CP_BIN
else
  CP_BIN=$("$repo/scripts/build-controlplane.sh") || die "building the control-plane binaries failed (scripts/build-controlplane.sh)"
fi
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  [ -x "$CP_BIN/$b" ] || die "missing $CP_BIN/$b: run scripts/build-controlplane.sh (or set STUDIO_CP_BIN)"
done
[ -x "$TARGET_DIR/studio-provisioner" ] ||
  die "missing $TARGET_DIR/studio-provisioner: run 'cargo build --workspace --bins' (or set STUDIO_TARGET_DIR)"

# ---------------------------------------------------------------- PKI
pki=$DIR/pki
gen_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
# sign NAME SUBJECT EXT_USAGE [SANS]
sign() {
  local name=$1 subj=$2 usage=$3 sans=${4:-}
  gen_key "$pki/$name.key"
  openssl req -new -key "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    echo "extendedKeyUsage=$usage"
    [ -z "$sans" ] || echo "subjectAltName=$sans"
  } >"$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 3650 -extfile "$pki/$name.ext" \
    -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$pki/$name.ext"
}
# kubeconfig FILE CERT_NAME
write_kubeconfig() {
  local b64="base64 -w0"
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: studio
  cluster:
    server: $API_URL
    certificate-authority-data: $($b64 <"$pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $($b64 <"$pki/$2.crt")
    client-key-data: $($b64 <"$pki/$2.key")
contexts:
- name: studio
  context:
    cluster: studio
    user: $2
current-context: studio
EOF
  chmod 600 "$1"
}

# make_pki: the CA, serving and client certs and the service-account keys (generated
# once, kept across runs), and the kubeconfigs.
make_pki() {
  if [ ! -f "$pki/complete" ]; then
    log "generating PKI in $pki"
    rm -rf "$pki"
    mkdir -p "$pki"
    gen_key "$pki/ca.key"
    openssl req -x509 -new -key "$pki/ca.key" -subj "/CN=studio-local-ca" -days 3650 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -out "$pki/ca.crt" 2>/dev/null
    sign apiserver "/CN=kube-apiserver" serverAuth \
      "IP:$CP_ADDR,IP:$SERVICE_API_IP,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost"
    sign admin "/O=system:masters/CN=studio-admin" clientAuth
    sign controller-manager "/CN=system:kube-controller-manager" clientAuth
    sign scheduler "/CN=system:kube-scheduler" clientAuth
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key" 2>/dev/null
    openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
    touch "$pki/complete"
  fi
  # The API server's identity towards kubelets (logs, exec, port-forward): a real
  # kubelet authenticates it by certificate. Made separately so an existing PKI gains it.
  [ -f "$pki/kubelet-client.crt" ] ||
    sign kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
  write_kubeconfig "$DIR/kubeconfig" admin
  write_kubeconfig "$DIR/controller-manager.kubeconfig" controller-manager
  write_kubeconfig "$DIR/scheduler.kubeconfig" scheduler
}

# fresh_state: empty etcd and volumes; the previous run's logs in logs.prev.
fresh_state() {
  rm -rf --one-file-system "$DIR/etcd" "$DIR/volumes" "$DIR/kubelet"
  if [ -d "$DIR/logs" ]; then
    rm -rf "$DIR/logs.prev"
    mv "$DIR/logs" "$DIR/logs.prev"
  fi
  mkdir -p "$DIR/logs" "$DIR/etcd" "$DIR/volumes"
  chmod 700 "$DIR/etcd"
}

# ---------------------------------------------------------------- network
# make_network: the bridge and the control plane's netns with its veth.
make_network() {
  echo "$DIR" >"$OWNER_FILE"
  log "creating bridge $BRIDGE ($BRIDGE_ADDR/$NET_PREFIX) and netns $CP_NETNS ($CP_ADDR)"
  ip link add "$BRIDGE" type bridge
  ip addr add "$BRIDGE_ADDR/$NET_PREFIX" dev "$BRIDGE"
  # Never route what arrives on the bridge (pods' default route points at it) elsewhere,
  # even on a host with IP forwarding on: traffic stays among our namespaces.
  echo 0 >"/proc/sys/net/ipv4/conf/$BRIDGE/forwarding"
  ip link set "$BRIDGE" up
  ip netns add "$CP_NETNS"
  ip -n "$CP_NETNS" link set lo up
  ip link add "$CP_VETH_HOST" type veth peer name eth0 netns "$CP_NETNS"
  ip link set "$CP_VETH_HOST" master "$BRIDGE"
  ip link set "$CP_VETH_HOST" up
  ip -n "$CP_NETNS" addr add "$CP_ADDR/$NET_PREFIX" dev eth0
  ip -n "$CP_NETNS" link set eth0 up
  # No default route in studio-cp: it reaches only the bridge's /16.
}

# A fresh start (not when repairing): our addresses must not clash with the host's.
if [ "$repair" = 0 ]; then
  clash=$(ip -o -4 addr show | awk -v b="$BRIDGE" '$2 != b && $4 ~ /^10\.21[34]\./ {print $2 " " $4}')
  [ -z "$clash" ] || die "10.213.0.0/16 or 10.214.0.0/16 is already used on this host: $clash"
  make_pki
  fresh_state
  make_network
fi

# ---------------------------------------------------------------- processes
# launch NAME NETNS|- CMD...: starts CMD in its own session, logging to logs/NAME.log.
launch() {
  local name=$1 ns=$2 pidf i
  shift 2
  pidf=$(pid_file "$name")
  rm -f "$pidf" "$pidf.start"
  local -a pre=()
  [ "$ns" = - ] || pre=(ip netns exec "$ns")
  # shellcheck disable=SC2016
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidf" "${pre[@]}" "$@" \
    </dev/null >>"$DIR/logs/$name.log" 2>&1 9>&- &
  for ((i = 0; i < 200; i++)); do
    [ -s "$pidf" ] && break
    sleep 0.05
  done
  [ -s "$pidf" ] || die "$name did not start"
  proc_start "$(cat "$pidf")" >"$pidf.start" || true
}

fail() {
  local c
  echo "[cluster] error: $*" >&2
  for c in "${COMPONENTS[@]}"; do
    [ -s "$DIR/logs/$c.log" ] || continue
    echo "----- last lines of $DIR/logs/$c.log" >&2
    tail -n 15 "$DIR/logs/$c.log" >&2
  done
  log "stopping what was started"
  teardown
  exit 1
}

# wait_for DESCRIPTION COMPONENTS CHECK...: polls CHECK until it succeeds, failing fast
# when one of COMPONENTS (comma-separated) dies and after TIMEOUT seconds.
wait_for() {
  local what=$1 comps=$2 deadline c
  shift 2
  deadline=$(($(date +%s) + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    for c in ${comps//,/ }; do
      component_pid "$c" >/dev/null || fail "$c exited while waiting for $what (see $DIR/logs/$c.log)"
    done
    [ "$(date +%s)" -lt "$deadline" ] || fail "timed out after ${TIMEOUT}s waiting for $what"
    sleep 0.2
  done
}

start_etcd() {
  log "starting etcd"
  launch etcd "$CP_NETNS" "$CP_BIN/etcd" --name studio --data-dir "$DIR/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster studio=http://127.0.0.1:2380 --unsafe-no-fsync --log-level warn
}
etcd_healthy() { ip netns exec "$CP_NETNS" curl -sf --max-time 2 http://127.0.0.1:2379/health; }

start_apiserver() {
  log "starting kube-apiserver"
  launch kube-apiserver "$CP_NETNS" "$CP_BIN/kube-apiserver" \
    --etcd-servers=http://127.0.0.1:2379 \
    --bind-address=0.0.0.0 --secure-port="$API_PORT" --advertise-address="$CP_ADDR" \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --kubelet-client-certificate="$pki/kubelet-client.crt" --kubelet-client-key="$pki/kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP,Hostname \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
    --authorization-mode=Node,RBAC --allow-privileged=true \
    --enable-admission-plugins=NamespaceLifecycle,ServiceAccount,DefaultStorageClass,DefaultTolerationSeconds,StorageObjectInUseProtection \
    --profiling=false --v=1
}

start_controller_manager() {
  log "starting kube-controller-manager"
  launch kube-controller-manager "$CP_NETNS" "$CP_BIN/kube-controller-manager" \
    --kubeconfig="$DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$DIR/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false \
    --controllers='*,-node-lifecycle-controller' \
    --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
    --use-service-account-credentials=true \
    --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
    --profiling=false --v=1
}

start_scheduler() {
  log "starting kube-scheduler"
  launch kube-scheduler "$CP_NETNS" "$CP_BIN/kube-scheduler" \
    --kubeconfig="$DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig="$DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig="$DIR/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false --v=1
}

# PVCs of every Node: local PVs in directories under $DIR/volumes (tests/provisioner).
start_provisioner() {
  log "starting studio-provisioner"
  launch provisioner - "$TARGET_DIR/studio-provisioner" --kubeconfig "$DIR/kubeconfig" \
    --volumes-dir "$DIR/volumes"
}


if [ "$repair" = 0 ]; then
  start_etcd
  wait_for "etcd to be healthy" etcd etcd_healthy
  start_apiserver
  wait_for "the API server at $API_URL to be ready" etcd,kube-apiserver api_healthy
  log "API server ready after $((($(date +%s%N) - start_ns) / 1000000)) ms"
fi
# The controllers start once RBAC's bootstrap roles exist (they exit when refused).
component_pid kube-controller-manager >/dev/null || start_controller_manager
component_pid kube-scheduler >/dev/null || start_scheduler

storage_class() {
  kubectl_ apply -f - <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: studio.cms.io/local
reclaimPolicy: Delete
volumeBindingMode: Immediate
EOF
}
wait_for "the default StorageClass to be created" kube-apiserver storage_class
component_pid provisioner >/dev/null || start_provisioner


wait_for "the default ServiceAccount" kube-apiserver,kube-controller-manager \
  kubectl_ get serviceaccount default -n default

start_real_node

log "cluster is up in $((($(date +%s%N) - start_ns) / 1000000)) ms (logs in $DIR/logs); kubeconfig:"
echo "$DIR/kubeconfig"
