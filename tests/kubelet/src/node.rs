//! Node registration, status heartbeats and Leases in `kube-node-lease`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

use crate::status::to_k8s;

pub const KUBELET_VERSION: &str = "v1.36.0-studio";
pub const LEASE_DURATION_SECONDS: i32 = 40;

/// What a Node reports about itself.
#[derive(Debug, Clone)]
pub struct NodeSpecInfo {
    pub name: String,
    pub host_ip: String,
    pub cpu: String,
    pub memory: String,
    pub max_pods: u32,
    /// Port of our log endpoint (0: none).
    pub kubelet_port: u16,
}

/// The Node object to create.
pub fn node_object(info: &NodeSpecInfo) -> Node {
    let labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", info.name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", std::env::consts::ARCH),
        ("studio.dev/process-kubelet", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.replace('_', "-")))
    .collect();
    Node {
        metadata: ObjectMeta {
            name: Some(info.name.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The Node status posted on every heartbeat.
pub fn node_status(info: &NodeSpecInfo, now: DateTime<Utc>, since: DateTime<Utc>) -> NodeStatus {
    let cond = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_heartbeat_time: Some(Time(to_k8s(now))),
        last_transition_time: Some(Time(to_k8s(since))),
    };
    let resources: BTreeMap<String, Quantity> = [
        ("cpu".to_string(), Quantity(info.cpu.clone())),
        ("memory".to_string(), Quantity(info.memory.clone())),
        ("pods".to_string(), Quantity(info.max_pods.to_string())),
        (
            "ephemeral-storage".to_string(),
            Quantity("100Gi".to_string()),
        ),
    ]
    .into();
    NodeStatus {
        conditions: Some(vec![
            cond(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            cond(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            ),
            cond(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            cond(
                "Ready",
                "True",
                "KubeletReady",
                "studio process kubelet is posting ready status",
            ),
        ]),
        // No Hostname address: the API server prefers it for reaching the kubelet and
        // our Node names do not resolve; InternalIP is the bridge address.
        addresses: Some(vec![NodeAddress {
            type_: "InternalIP".to_string(),
            address: info.host_ip.clone(),
        }]),
        daemon_endpoints: (info.kubelet_port != 0).then(|| NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(info.kubelet_port),
            }),
        }),
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH.to_string(),
            boot_id: String::new(),
            container_runtime_version: "studio-process://0.1.0".to_string(),
            kernel_version: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.to_string(),
            machine_id: String::new(),
            operating_system: "linux".to_string(),
            os_image: "studio process kubelet".to_string(),
            system_uuid: String::new(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Taints that only describe a not-ready/unreachable condition (ours is always Ready).
pub fn without_condition_taints(taints: &[Taint]) -> Vec<Taint> {
    taints
        .iter()
        .filter(|t| {
            t.key != "node.kubernetes.io/not-ready" && t.key != "node.kubernetes.io/unreachable"
        })
        .cloned()
        .collect()
}

async fn ensure_node(client: &Client, info: &NodeSpecInfo) -> Result<Node, kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    if let Some(n) = api.get_opt(&info.name).await? {
        return Ok(n);
    }
    match api.create(&PostParams::default(), &node_object(info)).await {
        Ok(n) => {
            tracing::info!(node = %info.name, "registered node");
            Ok(n)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => api.get(&info.name).await,
        Err(e) => Err(e),
    }
}

async fn heartbeat(
    client: &Client,
    info: &NodeSpecInfo,
    since: DateTime<Utc>,
) -> Result<(), kube::Error> {
    let node = ensure_node(client, info).await?;
    let now = Utc::now();
    let api: Api<Node> = Api::all(client.clone());
    let status = node_status(info, now, since);
    api.patch_status(
        &info.name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await?;

    // The API server's TaintNodesByCondition admission taints new Nodes not-ready;
    // the node lifecycle controller (not run by our cluster) would lift it. We do.
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let kept = without_condition_taints(&taints);
    if kept.len() != taints.len() {
        api.patch(
            &info.name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "taints": kept } })),
        )
        .await?;
        tracing::info!(node = %info.name, "removed condition taints");
    }

    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let spec = LeaseSpec {
        holder_identity: Some(info.name.clone()),
        lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
        renew_time: Some(MicroTime(to_k8s(now))),
        ..Default::default()
    };
    match leases.get_opt(&info.name).await? {
        Some(_) => {
            leases
                .patch(
                    &info.name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({ "spec": spec })),
                )
                .await?;
        }
        None => {
            let owner = node.metadata.uid.clone().map(|uid| {
                vec![OwnerReference {
                    api_version: "v1".to_string(),
                    kind: "Node".to_string(),
                    name: info.name.clone(),
                    uid,
                    ..Default::default()
                }]
            });
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(info.name.clone()),
                    namespace: Some("kube-node-lease".to_string()),
                    owner_references: owner,
                    ..Default::default()
                },
                spec: Some(spec),
            };
            match leases.create(&PostParams::default(), &lease).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Keeps one Node registered and fresh, forever.
pub async fn run(client: Client, info: NodeSpecInfo, period: Duration) {
    let since = Utc::now();
    loop {
        let wait = match heartbeat(&client, &info, since).await {
            Ok(()) => period,
            Err(e) => {
                tracing::warn!(node = %info.name, error = %e, "node heartbeat failed; retrying");
                Duration::from_secs(2)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn status_is_ready_with_resources() {
        let info = NodeSpecInfo {
            name: "local-1".into(),
            host_ip: "10.213.0.1".into(),
            cpu: "8".into(),
            memory: "32Gi".into(),
            max_pods: 110,
            kubelet_port: 10250,
        };
        let t0 = Utc::now();
        let s = node_status(&info, t0, t0);
        let ready = s
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(s.allocatable.as_ref().unwrap()["pods"].0, "110");
        assert_eq!(s.capacity.as_ref().unwrap()["cpu"].0, "8");
        assert_eq!(s.addresses.as_ref().unwrap()[0].address, "10.213.0.1");
        let port = s
            .daemon_endpoints
            .as_ref()
            .unwrap()
            .kubelet_endpoint
            .as_ref()
            .unwrap()
            .port;
        assert_eq!(port, 10250);
        assert_eq!(
            s.node_info.as_ref().unwrap().kubelet_version,
            KUBELET_VERSION
        );
        let taints = vec![
            Taint {
                key: "node.kubernetes.io/not-ready".into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            },
            Taint {
                key: "dedicated".into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            },
        ];
        let kept = without_condition_taints(&taints);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].key, "dedicated");
        let n = node_object(&info);
        assert_eq!(
            n.metadata.labels.unwrap()["kubernetes.io/hostname"],
            "local-1"
        );
    }
}
