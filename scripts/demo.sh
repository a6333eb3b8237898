#!/usr/bin/env bash
# The Studio demo on the local cluster (`make demo` starts the cluster first):
#   1. helm install the operator chart (charts/studio-operator) into studio-system,
#   2. kubectl apply examples/three-nodes-arbiter-sync.yaml into the studio-demo namespace,
#   3. wait for the StudioCluster's Ready condition,
#   4. show `kubectl get studioclusters` and the pods with their roles,
#   5. write an item through the -primary Service's ClusterIP (kube-proxy) with a
#      JWT signed by the generated Secret's key, read it back from the primary and from a
#      replica.
# Safe to run again: every step is an install-or-upgrade, an apply or a read, and the
# item is replaced.
#
# Everything runs on the local cluster's real node (Node real-1: the upstream kubelet,
# containerd, runc, CNI, kube-proxy) from the images `make images` built from the
# Dockerfile and pushed to the local registry: the operator from the chart with its
# image pinned by digest, the example's StudioCluster with spec.image set to the pushed
# studio-node digest (the example file itself stays as it is for real clusters). The
# write goes through the -primary Service's ClusterIP.
#
# Environment: STUDIO_CLUSTER_DIR (default .cache/cluster), STUDIO_CP_BIN (kubectl/helm;
# default: the output of scripts/build-controlplane.sh), DEMO_NAMESPACE (studio-demo),
# DEMO_TIMEOUT (seconds per wait, default 180).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${STUDIO_CLUSTER_DIR:-$repo/.cache/cluster}
NS=${DEMO_NAMESPACE:-studio-demo}
OPERATOR_NS=studio-system
RELEASE=studio-operator
EXAMPLE=$repo/examples/three-nodes-arbiter-sync.yaml
TIMEOUT=${DEMO_TIMEOUT:-180}

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() {
  echo "demo: error: $*" >&2
  exit 1
}

BIN=${STUDIO_CP_BIN:-$("$repo/scripts/build-controlplane.sh")}
export KUBECONFIG=$DIR/kubeconfig
kubectl() { "$BIN/kubectl" --request-timeout=20s "$@"; }
helm() { "$BIN/helm" "$@"; }

[ -f "$KUBECONFIG" ] || die "no local cluster ($KUBECONFIG missing): run 'make cluster-up' (or 'make demo')"
kubectl get --raw /readyz >/dev/null 2>&1 ||
  die "the local cluster's API server does not answer: run 'make cluster-up' (or 'make demo')"
# The images `make images` pushed (scripts/build-images.sh writes their digests here).
images_env=$DIR/images.env
[ -f "$images_env" ] || die "$images_env is missing: run 'make images' (or 'make demo')"
node_image=$(sed -n 's/^STUDIO_NODE_IMAGE=//p' "$images_env")
operator_image=$(sed -n 's/^STUDIO_OPERATOR_IMAGE=//p' "$images_env")
case $node_image$operator_image in *@sha256:*@sha256:*) ;; *) die "$images_env does not name both images by digest" ;; esac
real_node=real-1
[ "$(kubectl get node "$real_node" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ] ||
  die "Node $real_node (the real kubelet) is not Ready: run 'make cluster-up'"
target=${STUDIO_TARGET_DIR:-$repo/target/debug}
command -v python3 >/dev/null || die "python3 is needed to sign the demo's JWT"
command -v curl >/dev/null || die "curl is needed to talk to the nodes"

say "Installing the operator: helm upgrade --install $RELEASE charts/studio-operator -n $OPERATOR_NS"
echo "image $operator_image, on Node $real_node"
values=$(mktemp)
manifest=$(mktemp)
trap 'rm -f "$values" "$manifest"' EXIT
cat >"$values" <<VALUES
image:
  repository: ${operator_image%@*}
  digest: ${operator_image#*@}
VALUES
helm upgrade --install "$RELEASE" "$repo/charts/studio-operator" \
  --namespace "$OPERATOR_NS" --create-namespace -f "$values" \
  --wait --timeout "${TIMEOUT}s" >/dev/null ||
  die "helm install failed; see kubectl -n $OPERATOR_NS get pods and kubectl -n $OPERATOR_NS logs deployment/$RELEASE"
kubectl -n "$OPERATOR_NS" get pods -o wide

say "Creating the StudioCluster: kubectl apply -f examples/$(basename "$EXAMPLE") -n $NS"
kubectl get namespace "$NS" >/dev/null 2>&1 || kubectl create namespace "$NS" >/dev/null
name=$(sed -n 's/^  name: *//p' "$EXAMPLE" | head -n1)
[ -n "$name" ] || die "cannot read metadata.name from $EXAMPLE"
# The example with the pushed image (a local patch: the API server is not involved).
patch=$(printf '{"spec": {"image": "%s"}}' "$node_image")
kubectl patch --local -f "$EXAMPLE" --type merge -o yaml -p "$patch" >"$manifest" ||
  die "cannot set the image in a copy of $EXAMPLE"
kubectl -n "$NS" apply -f "$manifest"

say "Waiting for Ready: kubectl wait --for=condition=Ready studiocluster/$name (up to ${TIMEOUT}s)"
start=$(date +%s)
if ! kubectl -n "$NS" wait --for=condition=Ready "studiocluster/$name" --timeout="${TIMEOUT}s"; then
  kubectl -n "$NS" get studiocluster "$name" -o jsonpath='{.status.message}{"\n"}' >&2 || true
  kubectl -n "$NS" get pods -o wide >&2 || true
  die "studiocluster/$name is not Ready after ${TIMEOUT}s; node logs: kubectl -n $NS logs $name-0"
fi
echo "Ready after $(($(date +%s) - start)) s of waiting"

say "kubectl get studioclusters -n $NS"
kubectl -n "$NS" get studioclusters
say "kubectl get pods -n $NS -L studio.cms.io/role -o wide"
kubectl -n "$NS" get pods -L studio.cms.io/role -o wide

say "Writing and reading an item through the -primary Service's ClusterIP"
# kube-proxy sends the Service's ClusterIP to the pod labelled primary (the role label
# the nodes flip); wait until the Service has that ready endpoint.
vip=$(kubectl -n "$NS" get service "$name-primary" -o jsonpath='{.spec.clusterIP}')
[ -n "$vip" ] || die "the Service $name-primary has no ClusterIP"
primary_ip=""
for _ in $(seq 1 100); do
  primary_ip=$(kubectl -n "$NS" get endpointslices -l "kubernetes.io/service-name=$name-primary" \
    -o jsonpath='{range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]}{"\n"}{end}' 2>/dev/null | head -n1)
  [ -n "$primary_ip" ] && break
  sleep 0.2
done
[ -n "$primary_ip" ] || die "the Service $name-primary has no ready endpoint"
primary_pod=$(kubectl -n "$NS" get pods -l "studio.cms.io/cluster=$name,studio.cms.io/role=primary" -o jsonpath='{.items[0].metadata.name}')
echo "Service $name-primary: ClusterIP $vip -> $primary_pod ($primary_ip)"

# A short-lived HS256 JWT signed with the generated Secret's jwt-key (the nodes verify
# user tokens with it). Nothing is written to disk; the key stays in this process.
key=$(kubectl -n "$NS" get secret "$name-auth" -o jsonpath='{.data.jwt-key}' | base64 -d)
[ -n "$key" ] || die "Secret $name-auth has no jwt-key"
token=$(JWT_KEY="$key" python3 -c '
import base64, hashlib, hmac, json, os, time
enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = enc(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = enc(json.dumps({"sub": "demo", "roles": ["editor"], "exp": int(time.time()) + 600}).encode())
sig = hmac.new(os.environ["JWT_KEY"].encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
print(f"{head}.{body}.{enc(sig)}")')

path=sites/demo/pages/home
stamp=$(date -u +%Y-%m-%dT%H:%M:%SZ)
item=$(printf '{"type":"page","properties":{"title":"Hello from make demo","written":"%s"}}' "$stamp")
# Every port speaks TLS (spec.tls): trust the cluster's CA (from Secret $name-tls) and
# reach the pods under the names their certificate carries (--resolve maps the name to
# the address found above; no DNS needed).
ca="$DIR/$NS-$name-ca.crt"
kubectl -n "$NS" get secret "$name-tls" -o jsonpath='{.data.ca\.crt}' | base64 -d >"$ca"
[ -s "$ca" ] || die "Secret $name-tls has no ca.crt"
http() { curl -sS --noproxy '*' --connect-timeout 2 --max-time 10 --cacert "$ca" -H "Authorization: Bearer $token" "$@"; }
primary_host="$name-primary.$NS.svc"
primary_url="https://$primary_host:8080"
echo "PUT $primary_url/api/v1/content/$path (-> ClusterIP $vip)"
# The first connection may come before kube-proxy has programmed the endpoint: retry.
for _ in $(seq 1 50); do
  http --resolve "$primary_host:8080:$vip" -o /dev/null "$primary_url/healthz" 2>/dev/null && break
  sleep 0.2
done
out=$(http --resolve "$primary_host:8080:$vip" -w '\n%{http_code}' -X PUT \
  -H 'content-type: application/json' --data "$item" \
  "$primary_url/api/v1/content/$path") || die "the write to the primary failed"
code=${out##*$'\n'}
echo "${out%$'\n'*}"
case $code in 200 | 201) echo "→ $code" ;; *) die "the primary answered the write with HTTP $code" ;; esac

echo "GET $primary_url/api/v1/content/$path"
got=$(http --resolve "$primary_host:8080:$vip" "$primary_url/api/v1/content/$path") ||
  die "the read from the primary failed"
echo "$got"
case $got in *"$stamp"*) echo "→ the primary returns what was written" ;; *) die "the primary did not return the item just written" ;; esac

# Replicas serve reads too (sync mode: the write was acknowledged once 2 members had it).
replica=$(kubectl -n "$NS" get pods -l "studio.cms.io/cluster=$name,studio.cms.io/role=replica" \
  -o jsonpath='{.items[0].metadata.name} {.items[0].status.podIP}' 2>/dev/null || true)
replica_ip=${replica#* }
replica_host="${replica%% *}.$name-nodes.$NS.svc"
if [ -n "$replica_ip" ] && [ "$replica_ip" != "$replica" ]; then
  got=""
  for _ in $(seq 1 50); do
    got=$(http --resolve "$replica_host:8080:$replica_ip" \
      "https://$replica_host:8080/api/v1/content/$path" 2>/dev/null || true)
    case $got in *"$stamp"*) break ;; esac
    sleep 0.2
  done
  case $got in
    *"$stamp"*) echo "GET from replica $replica_ip → the same item" ;;
    *) echo "note: replica $replica_ip did not return the item within 10 s: $got" >&2 ;;
  esac
fi

say "Done"
cat <<EOF
The cluster keeps running. Try:
  export KUBECONFIG=$KUBECONFIG PATH=$BIN:\$PATH
  kubectl -n $NS delete pod $primary_pod            # failover: a new primary within seconds
  kubectl -n $NS get studioclusters -w
  kubectl -n $NS patch studiocluster $name --type merge -p '{"spec":{"nodes":5}}'
  $target/kubectl-studio -n $NS status $name        # members, roles, lag, last failover
Clean up: kubectl delete namespace $NS; helm uninstall $RELEASE -n $OPERATOR_NS; make cluster-down
EOF
