#!/usr/bin/env bash
# The real node's smoke check (docs/real-node.md), to run under the cluster lock:
#   flock -o /work/cluster.lock tests/realnode/smoke.sh
# Brings the control plane up if it is down (without a Node), starts the real
# node, runs the pause image and the busybox image on it by nodeSelector, prints
# `kubectl get nodes -o wide` and the pods with their CNI addresses, checks the busybox
# pod's HTTP server from the host, then removes the real node and leaves the cluster as
# it found it.
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=scripts/lib-cluster.sh
source "$repo/scripts/lib-cluster.sh"
# shellcheck source=scripts/lib-real-node.sh
source "$repo/scripts/lib-real-node.sh"
CP_BIN=${STUDIO_CP_BIN:-${STUDIO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/studio}/bin}
k() { "$CP_BIN/kubectl" --kubeconfig "$DIR/kubeconfig" --request-timeout=15s "$@"; }
started=0
if ! curl -sf --max-time 3 --cacert "$DIR/pki/ca.crt" --cert "$DIR/pki/admin.crt" --key "$DIR/pki/admin.key" \
  "$API_URL/readyz" >/dev/null 2>&1; then
  [ -z "${STUDIO_REAL_NODE_API_URL:-}" ] || { echo "error: no API server at $API_URL" >&2; exit 1; }
  echo "== the control plane is down: starting it (STUDIO_NO_KUBELET=1)"
  STUDIO_NO_KUBELET=1 "$repo/scripts/cluster-up.sh" >/dev/null || exit 1
  started=1
fi
rc=0
finish() {
  echo "== scripts/real-node-down.sh"
  "$repo/scripts/real-node-down.sh" || rc=1
  if [ "$started" = 1 ]; then
    echo "== scripts/cluster-down.sh (the cluster was down before)"
    "$repo/scripts/cluster-down.sh" >/dev/null || rc=1
  fi
  exit "$rc"
}
trap finish EXIT
echo "== scripts/real-node-up.sh"
"$repo/scripts/real-node-up.sh" || { rc=1; exit 1; }
k apply -f - <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: real-pause, namespace: default}
spec:
  nodeSelector: {kubernetes.io/hostname: real-1}
  tolerations: [{key: studio.cms.io/real-node, operator: Exists, effect: NoSchedule}]
  containers:
  - {name: pause, image: studio.local/pause:1, imagePullPolicy: Never}
---
apiVersion: v1
kind: Pod
metadata: {name: real-busybox, namespace: default, labels: {app: real-busybox}}
spec:
  nodeSelector: {kubernetes.io/hostname: real-1}
  tolerations: [{key: studio.cms.io/real-node, operator: Exists, effect: NoSchedule}]
  terminationGracePeriodSeconds: 5
  containers:
  - name: sh
    image: studio.local/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "ip -4 addr show eth0; ls /var/run/secrets/kubernetes.io/serviceaccount; mkdir -p /tmp/www && echo ok >/tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]
    readinessProbe:
      httpGet: {path: /index.html, port: 8080}
      periodSeconds: 2
YAML
k wait --for=condition=Ready pod/real-pause pod/real-busybox --timeout=90s || rc=1
echo "== kubectl get nodes -o wide"
k get nodes -o wide
echo "== kubectl get pods -o wide"
k get pods -o wide
echo "== containerStatuses"
k get pods real-pause real-busybox -o jsonpath='{range .items[*]}{.metadata.name}{": "}{.status.containerStatuses[0].containerID}{" "}{.status.containerStatuses[0].imageID}{" ready="}{.status.containerStatuses[0].ready}{"\n"}{end}'
echo "== kubectl logs real-busybox"
k logs real-busybox || {
  echo "(logs through the API server failed: see docs/real-node.md; the kubelet's log file:)"
  cat "$RN_DIR"/pod-logs/default_real-busybox_*/sh/0.log
}
ip=$(k get pod real-busybox -o jsonpath='{.status.podIP}')
echo "== curl http://$ip:8080/index.html (from the host)"
curl -sS --max-time 5 "http://$ip:8080/index.html" || rc=1
if [ "${STUDIO_REAL_NODE_PROXY:-0}" = 1 ]; then
  k create service clusterip real-busybox --tcp=80:8080 >/dev/null || rc=1
  sleep 3
  cip=$(k get service real-busybox -o jsonpath='{.spec.clusterIP}')
  echo "== kube-proxy: curl http://$cip/index.html (the Service's ClusterIP, from the host)"
  curl -sS --max-time 5 "http://$cip/index.html" || rc=1
  echo "== kube-proxy: the same from the pod's network namespace (hairpin through the ClusterIP)"
  # nsenter into the container's netns (its PID from containerd), not `kubectl exec`:
  # exec through the API server needs cluster-up.sh flags it does not set (docs/real-node.md).
  cid=$(k get pod real-busybox -o jsonpath='{.status.containerStatuses[0].containerID}')
  pid=$(ctr_ tasks ls | awk -v id="${cid#containerd://}" '$1 == id {print $2}')
  echo "(container ${cid#containerd://} pid $pid)"
  nsenter -t "$pid" -n curl -sS --max-time 5 "http://$cip/index.html" || rc=1
  k delete service real-busybox >/dev/null || rc=1
fi
echo "== kubectl delete pods"
k delete pod real-pause real-busybox --wait=true --timeout=60s || rc=1
