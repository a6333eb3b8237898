#!/usr/bin/env bash
# A private, throw-away control plane on 127.0.0.1 (etcd :23790, kube-apiserver :16443,
# kube-controller-manager, kube-scheduler) with the local cluster's layout under $D (pki/,
# kubeconfig), to try the real node while the shared cluster (scripts/cluster-up.sh) is in
# use by someone else. It creates no network objects. Usage (docs/real-node.md):
#   tests/realnode/private-controlplane.sh up
#   STUDIO_CLUSTER_DIR=/tmp/studio-rnp/cluster STUDIO_REAL_NODE_API_URL=https://127.0.0.1:16443 \
#     STUDIO_REAL_NODE_IP=10.215.0.1 tests/realnode/smoke.sh
#   tests/realnode/private-controlplane.sh down   (stops it and removes $D)
set -euo pipefail
D=${D:-/tmp/studio-rnp/cluster}; B=${STUDIO_CP_BIN:-${STUDIO_CACHE:-$HOME/.cache/studio}/bin}
case $1 in
up)
  mkdir -p $D/pki $D/etcd $D/logs $D/run; chmod 700 $D/etcd; p=$D/pki
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $p/ca.key 2>/dev/null
  openssl req -x509 -new -key $p/ca.key -subj /CN=rnp-ca -days 30 -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign,digitalSignature -out $p/ca.crt 2>/dev/null
  sign() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $p/$1.key 2>/dev/null
    openssl req -new -key $p/$1.key -subj "$2" -out $p/$1.csr 2>/dev/null
    printf "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=$3\n${4:+subjectAltName=$4\n}" >$p/$1.ext
    openssl x509 -req -in $p/$1.csr -CA $p/ca.crt -CAkey $p/ca.key -set_serial 0x$(openssl rand -hex 16) -days 30 -extfile $p/$1.ext -out $p/$1.crt 2>/dev/null; }
  sign apiserver /CN=kube-apiserver serverAuth IP:127.0.0.1,IP:10.214.0.1,DNS:localhost
  sign admin /O=system:masters/CN=rnp-admin clientAuth
  sign kubelet-client /O=system:masters/CN=kube-apiserver-kubelet-client clientAuth
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out $p/sa.key 2>/dev/null; openssl pkey -in $p/sa.key -pubout -out $p/sa.pub 2>/dev/null
  cat >$D/kubeconfig <<KC
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:16443", certificate-authority: "$p/ca.crt"}}]
users: [{name: a, user: {client-certificate: "$p/admin.crt", client-key: "$p/admin.key"}}]
contexts: [{name: c, context: {cluster: c, user: a}}]
current-context: c
KC
  run() { n=$1; shift; setsid "$@" </dev/null >$D/logs/$n.log 2>&1 & echo $! >$D/run/$n.pid; }
  run etcd $B/etcd --name rnp --data-dir $D/etcd --listen-client-urls http://127.0.0.1:23790 --advertise-client-urls http://127.0.0.1:23790 --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 --initial-cluster rnp=http://127.0.0.1:23800 --unsafe-no-fsync --log-level warn
  sleep 2
  run apiserver $B/kube-apiserver --etcd-servers=http://127.0.0.1:23790 --bind-address=127.0.0.1 --secure-port=16443 --advertise-address=127.0.0.1 \
    --tls-cert-file=$p/apiserver.crt --tls-private-key-file=$p/apiserver.key --client-ca-file=$p/ca.crt \
    --kubelet-preferred-address-types=InternalIP --kubelet-client-certificate=$p/kubelet-client.crt --kubelet-client-key=$p/kubelet-client.key \
    --service-cluster-ip-range=10.214.0.0/16 --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file=$p/sa.pub --service-account-signing-key-file=$p/sa.key --authorization-mode=Node,RBAC --allow-privileged=true \
    --enable-admission-plugins=NamespaceLifecycle,ServiceAccount,DefaultTolerationSeconds,NodeRestriction --profiling=false --v=1
  for i in $(seq 60); do curl -sf --cacert $p/ca.crt --cert $p/admin.crt --key $p/admin.key https://127.0.0.1:16443/readyz >/dev/null && break; sleep 1; done
  run cm $B/kube-controller-manager --kubeconfig=$D/kubeconfig --authentication-kubeconfig=$D/kubeconfig --authorization-kubeconfig=$D/kubeconfig \
    --bind-address=127.0.0.1 --secure-port=20257 --leader-elect=false --controllers='*,-node-lifecycle-controller' \
    --service-account-private-key-file=$p/sa.key --root-ca-file=$p/ca.crt --use-service-account-credentials=true --profiling=false --v=1
  run scheduler $B/kube-scheduler --kubeconfig=$D/kubeconfig --authentication-kubeconfig=$D/kubeconfig --authorization-kubeconfig=$D/kubeconfig \
    --bind-address=127.0.0.1 --secure-port=20259 --leader-elect=false --profiling=false --v=1
  for i in $(seq 60); do $B/kubectl --kubeconfig $D/kubeconfig get sa default >/dev/null 2>&1 && break; sleep 1; done
  $B/kubectl --kubeconfig $D/kubeconfig get sa default ;;
down)
  for n in scheduler cm apiserver etcd; do
    [ -f $D/run/$n.pid ] || continue
    pid=$(cat $D/run/$n.pid)
    kill $pid 2>/dev/null || true
    for i in $(seq 50); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
    kill -9 $pid 2>/dev/null || true
  done
  rm -rf "$D"
  rmdir "$(dirname "$D")" 2>/dev/null || true ;;
esac
