#!/usr/bin/env bash
# Checks the Helm chart without a cluster:
#   1. `helm lint` (default values, and every monitoring switch on);
#   2. a `helm template` snapshot: the rendering of the default values must equal
#      tests/helm/snapshot.yaml (review the diff, then `UPDATE=1 scripts/test-chart.sh`);
#   3. values.schema.json refuses bad values with a message naming the value.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
chart="$here/charts/studio-operator"
snapshot="$here/tests/helm/snapshot.yaml"
helm="$("$here/scripts/build-controlplane.sh")/helm"
log() { echo "[chart] $*" >&2; }
fail() { echo "[chart] FAIL: $*" >&2; exit 1; }
all_on=(--set monitoring.podMonitor.enabled=true --set monitoring.serviceMonitor.enabled=true
        --set monitoring.prometheusRule.enabled=true --set monitoring.dashboard.enabled=true)

"$helm" lint "$chart" >/dev/null || fail "helm lint"
"$helm" lint "$chart" "${all_on[@]}" >/dev/null || fail "helm lint with monitoring on"
log "helm lint ok"

render() { "$helm" template studio-operator "$chart" --namespace studio-system; }
if [ "${UPDATE:-}" = 1 ]; then
  render >"$snapshot"
  log "snapshot updated: ${snapshot#"$here"/}"
else
  diff -u "$snapshot" <(render) || fail "helm template differs from ${snapshot#"$here"/} (review, then UPDATE=1 $0)"
  log "helm template matches the snapshot"
fi

# value → text the refusal must contain
refused() {
  local out
  if out=$("$helm" template t "$chart" --set "$1" 2>&1); then
    fail "--set $1 was accepted"
  fi
  grep -qF -- "$2" <<<"$out" || fail "--set $1 refused without naming it: $out"
}
refused replicaCount=0 "/replicaCount"
refused logFormat=xml "/logFormat"
refused image.pullPolicy=Sometimes "/image/pullPolicy"
refused replicaCoutn=2 "replicaCoutn"
refused monitoring.podMonitor.interval=soon "/monitoring/podMonitor/interval"
refused metrics.port=70000 "/metrics/port"
refused image.digest=latest "/image/digest"
log "bad values refused with a clear message"
# A digest pins the image (deployment and CRD hook), the tag is not used.
d=sha256:$(printf '%064d' 0)
pinned=$("$helm" template t "$chart" --set image.repository=r.example/studio-operator --set image.tag=x --set "image.digest=$d")
[ "$(grep -c "image: \"r.example/studio-operator@$d\"" <<<"$pinned")" = 2 ] ||
  fail "image.digest did not pin both the operator and the CRD hook image"
log "image.digest pins the image"
