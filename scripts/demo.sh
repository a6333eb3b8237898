#!/usr/bin/env bash
# The Studio demo on the local cluster (`make demo` starts the cluster first):
#   1. helm install the operator chart (charts/studio-operator) into studio-system,
#   2. kubectl apply examples/three-nodes-arbiter-sync.yaml into the studio-demo namespace,
#   3. wait for the StudioCluster's Ready condition,
#   4. show `kubectl get studioclusters` and the pods with their roles,
#   5. write an item through the primary (-primary Service's EndpointSlice address) with a
#      JWT signed by the generated Secret's key, read it back from the primary and from a
#      replica.
# Safe to run again: every step is an install-or-upgrade, an apply or a read, and the
# item is replaced.
#
# Images: the process kubelet maps an image to a local binary by the last path segment
# of its repository (tag ignored), so the chart's image becomes local/studio-operator:dev
# and the example's local/studio-node:dev; the example file itself stays as it is for
# real clusters.
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
target=${STUDIO_TARGET_DIR:-$repo/target/debug}
for b in studio-operator studio-node; do
  [ -x "$target/$b" ] || die "$target/$b is missing: run 'cargo build --workspace --bins'"
done
command -v python3 >/dev/null || die "python3 is needed to sign the demo's JWT"
command -v curl >/dev/null || die "curl is needed to talk to the nodes"

say "Installing the operator: helm upgrade --install $RELEASE charts/studio-operator -n $OPERATOR_NS"
helm upgrade --install "$RELEASE" "$repo/charts/studio-operator" \
  --namespace "$OPERATOR_NS" --create-namespace \
  --set image.repository=local/studio-operator --set image.tag=dev \
  --wait --timeout "${TIMEOUT}s" >/dev/null ||
  die "helm install failed; see kubectl -n $OPERATOR_NS get pods and $DIR/kubelet/pods/${OPERATOR_NS}_*/operator.log"
# Operator pods older than the studio-operator binary run old code (helm sees no change
# when only the binary was rebuilt): restart them onto the new build.
built=$(stat -c %Y "$target/studio-operator")
oldest=$(kubectl -n "$OPERATOR_NS" get pods -l "app.kubernetes.io/instance=$RELEASE" \
  -o jsonpath='{range .items[*]}{.status.startTime}{"\n"}{end}' | sort | head -n1)
if [ -n "$oldest" ] && [ "$(date -d "$oldest" +%s)" -lt "$built" ]; then
  echo "restarting the operator onto the binary built $(date -d "@$built" -u +%H:%M:%SZ)"
  kubectl -n "$OPERATOR_NS" rollout restart "deployment/$RELEASE" >/dev/null
  kubectl -n "$OPERATOR_NS" rollout status "deployment/$RELEASE" --timeout="${TIMEOUT}s" >/dev/null ||
    die "the operator did not roll out; see $DIR/kubelet/pods/${OPERATOR_NS}_*/operator.log"
fi
kubectl -n "$OPERATOR_NS" get pods -o wide

say "Creating the StudioCluster: kubectl apply -f examples/$(basename "$EXAMPLE") -n $NS"
kubectl get namespace "$NS" >/dev/null 2>&1 || kubectl create namespace "$NS" >/dev/null
name=$(sed -n 's/^  name: *//p' "$EXAMPLE" | head -n1)
[ -n "$name" ] || die "cannot read metadata.name from $EXAMPLE"
manifest=$(mktemp)
trap 'rm -f "$manifest"' EXIT
sed -E 's#^(  image: *).*/?studio-node:.*$#\1local/studio-node:dev#' "$EXAMPLE" >"$manifest"
grep -q 'image: local/studio-node:dev' "$manifest" || die "cannot map the example's image to local/studio-node:dev"
kubectl -n "$NS" apply -f "$manifest"

say "Waiting for Ready: kubectl wait --for=condition=Ready studiocluster/$name (up to ${TIMEOUT}s)"
start=$(date +%s)
if ! kubectl -n "$NS" wait --for=condition=Ready "studiocluster/$name" --timeout="${TIMEOUT}s"; then
  kubectl -n "$NS" get studiocluster "$name" -o jsonpath='{.status.message}{"\n"}' >&2 || true
  kubectl -n "$NS" get pods -o wide >&2 || true
  die "studiocluster/$name is not Ready after ${TIMEOUT}s; node logs: $DIR/kubelet/pods/${NS}_*/studio.log"
fi
echo "Ready after $(($(date +%s) - start)) s of waiting"

say "kubectl get studioclusters -n $NS"
kubectl -n "$NS" get studioclusters
say "kubectl get pods -n $NS -L studio.cms.io/role -o wide"
kubectl -n "$NS" get pods -L studio.cms.io/role -o wide

say "Writing and reading an item through the primary"
# The primary's address: the -primary Service's EndpointSlice (it selects the role label
# the nodes flip), retried while the slice catches up.
primary_ip=""
for _ in $(seq 1 100); do
  primary_ip=$(kubectl -n "$NS" get endpointslices -l "kubernetes.io/service-name=$name-primary" \
    -o jsonpath='{range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]}{"\n"}{end}' 2>/dev/null | head -n1)
  [ -n "$primary_ip" ] && break
  sleep 0.2
done
[ -n "$primary_ip" ] || die "the Service $name-primary has no ready endpoint"
primary_pod=$(kubectl -n "$NS" get pods -l "studio.cms.io/cluster=$name,studio.cms.io/role=primary" -o jsonpath='{.items[0].metadata.name}')
echo "primary: $primary_pod at $primary_ip (from EndpointSlice of Service $name-primary)"

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
echo "PUT $primary_url/api/v1/content/$path (→ $primary_ip)"
out=$(http --resolve "$primary_host:8080:$primary_ip" -w '\n%{http_code}' -X PUT \
  -H 'content-type: application/json' --data "$item" \
  "$primary_url/api/v1/content/$path") || die "the write to the primary failed"
code=${out##*$'\n'}
echo "${out%$'\n'*}"
case $code in 200 | 201) echo "→ $code" ;; *) die "the primary answered the write with HTTP $code" ;; esac

echo "GET $primary_url/api/v1/content/$path"
got=$(http --resolve "$primary_host:8080:$primary_ip" "$primary_url/api/v1/content/$path") ||
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
