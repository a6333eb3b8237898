//! Shared fixtures of the end-to-end suites in `tests/`: the workspace's test program
//! (`studio-testapp`, its pushed image on the real node) as a StatefulSet or Pod,
//! Services, and pod-status helpers.

pub mod history;
pub mod nemesis;
pub mod prometheus;
pub mod real_node;

use std::{collections::BTreeSet, net::Ipv4Addr};

use anyhow::{Context, anyhow};
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{Api, api::ListParams};
use serde_json::json;

/// The port the test program listens on.
pub const TESTAPP_PORT: u16 = 8080;

/// The testapp container from `image` (the pushed one, [`real_node::testapp_image`]):
/// POD_NAME/POD_NAMESPACE from the downward API, data under `/data` (a PVC when the pod
/// has one), readiness from `/readyz` every second; read-only root, no privileges (it
/// writes only to `/data`).
fn testapp_container(image: &str) -> serde_json::Value {
    json!({
        "name": "app",
        "image": image,
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]}
        },
        "ports": [{"name": "http", "containerPort": TESTAPP_PORT}],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "PORT", "value": TESTAPP_PORT.to_string()},
            {"name": "DATA_DIR", "value": "/data"}
        ],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": TESTAPP_PORT},
            "periodSeconds": 1, "failureThreshold": 1, "successThreshold": 1, "timeoutSeconds": 1
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": TESTAPP_PORT},
            "periodSeconds": 2, "failureThreshold": 3, "timeoutSeconds": 1
        },
        "volumeMounts": [{"name": "data", "mountPath": "/data"}]
    })
}

/// The pod spec fields every testapp pod gets: the real node's selector and toleration,
/// and the image's user (non-root 65532; `fsGroup` makes PVC volumes writable for it).
fn testapp_pod_spec(containers: serde_json::Value) -> serde_json::Value {
    let placement = real_node::real_node_placement();
    json!({
        "terminationGracePeriodSeconds": 5,
        "nodeSelector": placement["nodeSelector"],
        "tolerations": placement["tolerations"],
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": real_node::IMAGE_UID,
            "runAsGroup": real_node::IMAGE_UID,
            "fsGroup": real_node::IMAGE_UID
        },
        "containers": containers
    })
}

/// A StatefulSet `name` of `replicas` testapp pods from `image` on the real node, each
/// with a 16Mi PVC `data` mounted at `/data`. Pods carry `app=<name>` (the StatefulSet's
/// selector) and `serve=yes` (what [`service`] selects).
pub fn testapp_statefulset(name: &str, replicas: i32, image: &str) -> anyhow::Result<StatefulSet> {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, "serve": "yes"}},
                "spec": testapp_pod_spec(json!([testapp_container(image)]))
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "16Mi"}}
                }
            }]
        }
    }))
    .context("building the testapp StatefulSet")
}

/// A bare testapp Pod from `image` on the real node, running as ServiceAccount
/// `service_account` (its token mounted, so the API server applies RBAC; scratch `/data`).
pub fn testapp_pod(name: &str, service_account: &str, image: &str) -> anyhow::Result<Pod> {
    let mut spec = testapp_pod_spec(json!([testapp_container(image)]));
    spec["serviceAccountName"] = json!(service_account);
    spec["automountServiceAccountToken"] = json!(true);
    spec["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": spec
    }))
    .context("building the testapp Pod")
}

/// A ClusterIP Service `name` selecting `app=<name>,serve=yes` on port 80 → 8080.
pub fn service(name: &str) -> anyhow::Result<Service> {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "selector": {"app": name, "serve": "yes"},
            "ports": [{"name": "http", "port": 80, "targetPort": TESTAPP_PORT}]
        }
    }))
    .context("building the Service")
}

/// Is the pod Ready (its Ready condition is True)?
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The sum of the restart counts of the pod's containers.
pub fn restart_count(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

/// The pod's IPv4 address, if it has one.
pub fn pod_ip(pod: &Pod) -> Option<Ipv4Addr> {
    pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()
}

/// The pod's name.
pub fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// A one-line summary of a pod's status, for failure messages.
pub fn describe(pod: &Pod) -> String {
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "-".into());
    format!(
        "{} phase={} ready={} ip={} restarts={}",
        name(pod),
        phase,
        is_ready(pod),
        pod_ip(pod).map_or_else(|| "-".into(), |ip| ip.to_string()),
        restart_count(pod)
    )
}

/// The addresses that the Service's EndpointSlices list as ready.
pub async fn ready_endpoints(
    slices: &Api<EndpointSlice>,
    service: &str,
) -> anyhow::Result<BTreeSet<Ipv4Addr>> {
    let list = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .context("listing EndpointSlices")?;
    let mut out = BTreeSet::new();
    for slice in list.items {
        for ep in slice.endpoints {
            let ready = ep
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(false);
            if !ready {
                continue;
            }
            for a in ep.addresses {
                out.insert(a.parse().map_err(|e| anyhow!("address {a:?}: {e}"))?);
            }
        }
    }
    Ok(out)
}

/// The pods of a StatefulSet-like app (label `app=<app>`), sorted by name.
pub async fn app_pods(pods: &Api<Pod>, app: &str) -> anyhow::Result<Vec<Pod>> {
    let mut list = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .context("listing pods")?
        .items;
    list.sort_by_key(name);
    Ok(list)
}

/// Namespace and Helm release of the operator installed by the e2e suites and the bench.
pub const OPERATOR_NS: &str = "studio-system";
pub const RELEASE: &str = "studio-operator";

/// The operator's leader: the holder of its Lease, when that pod is Ready.
pub async fn operator_leader(client: &kube::Client) -> anyhow::Result<String> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), OPERATOR_NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), OPERATOR_NS);
    let holder = leases
        .get(RELEASE)
        .await
        .context("get the operator Lease")?
        .spec
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
        .ok_or_else(|| anyhow!("the operator Lease has no holder"))?;
    let pod = pods
        .get_opt(&holder)
        .await?
        .ok_or_else(|| anyhow!("the Lease holder {holder} has no pod"))?;
    anyhow::ensure!(
        is_ready(&pod) && pod.metadata.deletion_timestamp.is_none(),
        "the Lease holder {holder} is not a Ready pod"
    );
    Ok(holder)
}

/// (p50, p99, max) of `v` (sorted in place; nearest-rank percentiles).
pub fn percentiles(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let p = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (p(0.5), p(0.99), v[v.len() - 1])
}
