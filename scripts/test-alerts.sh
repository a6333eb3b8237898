#!/usr/bin/env bash
# Checks the chart's monitoring kit:
#   1. builds promtool (scripts/build-prometheus.sh: tests/promtool, pinned in
#      go.mod/go.sum, into the cache bin directory), once per go.mod+go.sum;
#   2. `promtool check rules` on charts/studio-operator/files/studio-alerts.yaml (the
#      file the chart's PrometheusRule embeds with .Files.Get);
#   3. `promtool test rules` on tests/promtool/alerts_test.yaml (a firing and a quiet
#      case for every alert);
#   4. `helm template` of the chart: with every monitoring.* switch on it renders a
#      PodMonitor, a ServiceMonitor, a PrometheusRule and the Grafana dashboard
#      ConfigMap (and the embedded rules/dashboard are the files checked above); the
#      default rendering contains none of them.
# Exits non-zero on the first failure.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
chart="$here/charts/studio-operator"
rules="$chart/files/studio-alerts.yaml"
dashboard="$chart/files/studio-dashboard.json"
tests="$here/tests/promtool/alerts_test.yaml"
log() { echo "[alerts] $*" >&2; }
fail() { echo "[alerts] FAIL: $*" >&2; exit 1; }

# --- promtool ---------------------------------------------------------------------
bin=$("$here/scripts/build-prometheus.sh")
promtool="$bin/promtool"
log "$("$promtool" --version 2>&1 | head -1)"

log "promtool check rules ${rules#"$here"/}"
"$promtool" check rules "$rules" || fail "promtool check rules"
log "promtool test rules ${tests#"$here"/}"
(cd "$(dirname "$tests")" && "$promtool" test rules "$(basename "$tests")") || fail "promtool test rules"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- dashboard JSON ---------------------------------------------------------------
# Valid JSON, and every PromQL query of it parses: the queries (Grafana variables
# replaced by sample values) become recording rules that promtool checks.
if command -v python3 >/dev/null; then
  python3 - "$dashboard" "$tmp/dashboard-queries.yaml" <<'PY' || fail "${dashboard#"$here"/}: invalid JSON or no queries"
import json, sys
d = json.load(open(sys.argv[1]))
exprs = []
def walk(panels):
    for p in panels:
        exprs.extend(t["expr"] for t in p.get("targets", []) if t.get("expr"))
        walk(p.get("panels", []))
walk(d["panels"])
exprs += [a["expr"] for a in d.get("annotations", {}).get("list", []) if a.get("expr")]
exprs += [v["definition"].replace("label_values(", "group(", 1).rsplit(",", 1)[0] + ")"
          for v in d.get("templating", {}).get("list", []) if v.get("type") == "query"]
assert exprs, "no queries"
subst = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "30s", "$namespace": "cms", "$cluster": "acme"}
with open(sys.argv[2], "w") as out:
    out.write("groups:\n  - name: dashboard-queries\n    rules:\n")
    for i, e in enumerate(exprs):
        for k, v in subst.items():
            e = e.replace(k, v)
        assert "$" not in e, f"unknown Grafana variable in: {e}"
        out.write(f"      - record: dashboard:query_{i}\n        expr: {json.dumps(e)}\n")
PY
  log "promtool check rules (the dashboard's $(grep -c 'record:' "$tmp/dashboard-queries.yaml") queries)"
  "$promtool" check rules "$tmp/dashboard-queries.yaml" >/dev/null || {
    "$promtool" check rules "$tmp/dashboard-queries.yaml" >&2 || true
    fail "a query of ${dashboard#"$here"/} does not parse"
  }
fi

# --- helm template ----------------------------------------------------------------
cp_bin=$("$here/scripts/build-controlplane.sh")
helm="$cp_bin/helm"
[ -x "$helm" ] || fail "helm not found at $helm"

log "helm template (defaults): no monitoring objects"
"$helm" template studio-operator "$chart" -n studio-system >"$tmp/default.yaml"
for kind in PodMonitor ServiceMonitor PrometheusRule; do
  if grep -Eq "^kind: $kind\$" "$tmp/default.yaml"; then fail "default rendering contains a $kind"; fi
done
if grep -q "grafana_dashboard" "$tmp/default.yaml"; then fail "default rendering contains the dashboard ConfigMap"; fi

log "helm template (every monitoring switch on)"
"$helm" template studio-operator "$chart" -n studio-system \
  --set monitoring.podMonitor.enabled=true \
  --set monitoring.serviceMonitor.enabled=true \
  --set monitoring.prometheusRule.enabled=true \
  --set monitoring.dashboard.enabled=true >"$tmp/all.yaml"
for kind in PodMonitor ServiceMonitor PrometheusRule; do
  n=$(grep -Ec "^kind: $kind\$" "$tmp/all.yaml" || true)
  [ "$n" = 1 ] || fail "expected one $kind with every monitoring switch on, found $n"
done
grep -q '^  name: studio-operator-dashboard$' "$tmp/all.yaml" || fail "dashboard ConfigMap studio-operator-dashboard not rendered"
grep -q 'grafana_dashboard: "1"' "$tmp/all.yaml" || fail "dashboard ConfigMap lacks the grafana_dashboard label"

# The rendered objects must embed exactly the files checked above.
if command -v python3 >/dev/null; then
  python3 - "$tmp/all.yaml" "$rules" "$dashboard" <<'PY' || fail "rendered PrometheusRule/dashboard differ from the checked files"
import json, sys
try:
    import yaml
except ImportError:
    sys.exit(0)  # no PyYAML: the grep checks above stand
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
rules = yaml.safe_load(open(sys.argv[2]))
dash = json.load(open(sys.argv[3]))
pr = [d for d in docs if d.get("kind") == "PrometheusRule"][0]
assert pr["spec"] == rules, "PrometheusRule spec != files/studio-alerts.yaml"
cm = [d for d in docs if d.get("kind") == "ConfigMap" and d["metadata"].get("labels", {}).get("grafana_dashboard")][0]
assert json.loads(cm["data"]["studio.json"]) == dash, "dashboard ConfigMap != files/studio-dashboard.json"
pm = [d for d in docs if d.get("kind") == "PodMonitor"][0]
assert pm["spec"]["namespaceSelector"] == {"any": True}, pm["spec"].get("namespaceSelector")
PY
fi

log "OK: rules checked, rule unit tests pass, chart renders the monitoring kit only on request"
