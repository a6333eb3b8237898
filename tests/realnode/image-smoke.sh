#!/usr/bin/env bash
# The images' smoke check on the real node (issue 10, part 2; docs/real-node.md), under the
# cluster lock:
#   flock -o /work/cluster.lock tests/realnode/image-smoke.sh
# Brings the control plane up if it is down (without a Node), starts the real
# node (and with it the local registry), runs scripts/build-images.sh (`make images`:
# builds and pushes studio-node and studio-operator, writes their digests), then on the real
# node:
#  - real-studio-node: the pushed studio-node image by digest, imagePullPolicy Always, as
#    shipped: uid/gid 65532, runAsNonRoot, read-only root filesystem, emptyDirs at /tmp and
#    /var/lib/studio (fsGroup 65532), a standalone node without auth. Checks that the kubelet
#    reports the registry digest as its imageID, that the process runs as 65532, and that
#    /healthz answers from the host;
#  - real-studio-version: the same image by tag (Always), `studio-node --version --json`;
#  - real-studio-operator: the studio-operator image, `kubectl-studio --help`.
# Then removes the pods, and the real node and the control plane if it started them.
# Environment: as tests/realnode/smoke.sh; CARGO_TARGET_DIR and STUDIO_IMAGES_NO_CARGO=1 are
# passed to scripts/build-images.sh.
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=scripts/lib-cluster.sh
source "$repo/scripts/lib-cluster.sh"
# shellcheck source=scripts/lib-real-node.sh
source "$repo/scripts/lib-real-node.sh"
CP_BIN=${STUDIO_CP_BIN:-${STUDIO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/studio}/bin}
k() { "$CP_BIN/kubectl" --kubeconfig "$DIR/kubeconfig" --request-timeout=15s "$@"; }
fail() {
  echo "FAIL: $*" >&2
  rc=1
}
started=0
if ! curl -sf --max-time 3 --cacert "$DIR/pki/ca.crt" --cert "$DIR/pki/admin.crt" --key "$DIR/pki/admin.key" \
  "$API_URL/readyz" >/dev/null 2>&1; then
  [ -z "${STUDIO_REAL_NODE_API_URL:-}" ] || { echo "error: no API server at $API_URL" >&2; exit 1; }
  echo "== the control plane is down: starting it (STUDIO_NO_KUBELET=1)"
  STUDIO_NO_KUBELET=1 "$repo/scripts/cluster-up.sh" >/dev/null || exit 1
  started=1
fi
rc=0
# A real node that was already up (e.g. started by cluster-up) is left running.
rn_was_up=0
if [ -f "$RN_DIR/run/kubelet.pid" ] && kill -0 "$(cat "$RN_DIR/run/kubelet.pid")" 2>/dev/null; then rn_was_up=1; fi
finish() {
  k delete pod real-studio-node real-studio-version real-studio-operator --ignore-not-found --wait=true --timeout=60s >/dev/null 2>&1 || rc=1
  if [ "$rn_was_up" = 0 ]; then
    echo "== scripts/real-node-down.sh"
    "$repo/scripts/real-node-down.sh" || rc=1
  fi
  if [ "$started" = 1 ]; then
    echo "== scripts/cluster-down.sh (the cluster was down before)"
    "$repo/scripts/cluster-down.sh" >/dev/null || rc=1
  fi
  [ "$rc" = 0 ] && echo "== image smoke check passed" || echo "== image smoke check FAILED"
  exit "$rc"
}
trap finish EXIT
echo "== scripts/real-node-up.sh"
"$repo/scripts/real-node-up.sh" || { rc=1; exit 1; }
echo "== scripts/build-images.sh"
images_env=$DIR/images.env
STUDIO_IMAGES_ENV=$images_env "$repo/scripts/build-images.sh" || { rc=1; exit 1; }
# shellcheck disable=SC1090
source "$images_env"
tag_image=${STUDIO_NODE_IMAGE%@*}:${STUDIO_IMAGE_TAG:-dev}
pod_yaml() { # pod_yaml NAME IMAGE RESTART ARGS-OR-COMMAND-YAML
  cat <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: default}
spec:
  nodeSelector: {kubernetes.io/hostname: $RN_NODE}
  tolerations: [{key: studio.cms.io/real-node, operator: Exists, effect: NoSchedule}]
  terminationGracePeriodSeconds: 5
  restartPolicy: $3
  securityContext: {fsGroup: 65532}
  containers:
  - name: main
    image: $2
    imagePullPolicy: Always
    $4
    securityContext:
      runAsUser: 65532
      runAsGroup: 65532
      runAsNonRoot: true
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
    volumeMounts: [{name: tmp, mountPath: /tmp}, {name: data, mountPath: /var/lib/studio}]
  volumes: [{name: tmp, emptyDir: {}}, {name: data, emptyDir: {}}]
YAML
}
{
  pod_yaml real-studio-node "$STUDIO_NODE_IMAGE" Always \
    'args: [--standalone, --data-dir, /var/lib/studio, --listen, "0.0.0.0:8080", --insecure-no-auth]
    readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 2}'
  echo ---
  pod_yaml real-studio-version "$tag_image" Never 'command: [/usr/local/bin/studio-node, --version, --json]'
  echo ---
  pod_yaml real-studio-operator "$STUDIO_OPERATOR_IMAGE" Never 'command: [/usr/local/bin/kubectl-studio, --help]'
} | k apply -f - || { rc=1; exit 1; }
k wait --for=condition=Ready pod/real-studio-node --timeout=120s || fail "real-studio-node did not become Ready"
k wait --for=jsonpath='{.status.phase}'=Succeeded pod/real-studio-version pod/real-studio-operator --timeout=120s ||
  fail "the one-shot pods did not succeed"
echo "== kubectl get pods -o wide"
k get pods -o wide
echo "== image and imageID (the registry's digest) of each container"
k get pods real-studio-node real-studio-version real-studio-operator -o jsonpath='{range .items[*]}{.metadata.name}{": "}{.status.containerStatuses[0].image}{" -> "}{.status.containerStatuses[0].imageID}{"\n"}{end}'
want=${STUDIO_NODE_IMAGE}
got=$(k get pod real-studio-node -o jsonpath='{.status.containerStatuses[0].imageID}')
[ "$got" = "$want" ] || fail "real-studio-node's imageID is '$got', not the pushed digest $want"
got=$(k get pod real-studio-version -o jsonpath='{.status.containerStatuses[0].imageID}')
[ "$got" = "$want" ] || fail "real-studio-version (pulled by tag $tag_image) has imageID '$got', not $want"
got=$(k get pod real-studio-operator -o jsonpath='{.status.containerStatuses[0].imageID}')
[ "$got" = "$STUDIO_OPERATOR_IMAGE" ] || fail "real-studio-operator's imageID is '$got', not $STUDIO_OPERATOR_IMAGE"
echo "== the node's process (containerd task) runs as"
cid=$(k get pod real-studio-node -o jsonpath='{.status.containerStatuses[0].containerID}')
pid=$(ctr_ tasks ls | awk -v id="${cid#containerd://}" '$1 == id {print $2}')
if [ -n "$pid" ]; then
  grep -E '^(Uid|Gid|Groups)' "/proc/$pid/status"
  awk '/^Uid/ {exit !($2 == 65532 && $3 == 65532)}' "/proc/$pid/status" || fail "studio-node does not run as uid 65532"
else
  fail "no containerd task for ${cid#containerd://}"
fi
ip=$(k get pod real-studio-node -o jsonpath='{.status.podIP}')
echo "== curl http://$ip:8080/healthz (from the host)"
curl -sS --noproxy "*" --max-time 5 "http://$ip:8080/healthz" || fail "no answer from http://$ip:8080/healthz"
echo
pod_log() { # kubectl logs, or the kubelet's log file when logs through the API server fail
  k logs "$1" 2>/dev/null || cat "$RN_DIR"/pod-logs/default_"$1"_*/main/0.log
}
echo "== studio-node --version --json in the image (real-studio-version's log)"
out=$(pod_log real-studio-version)
echo "$out"
grep -q '"schemaRevision"' <<<"$out" || fail "studio-node --version --json printed no schemaRevision"
echo "== kubectl-studio --help in the operator image (first lines)"
pod_log real-studio-operator | head -n 3
