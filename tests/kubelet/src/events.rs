//! Kubernetes Events about pods (Started, Killing, BackOff, Unhealthy, Failed), so
//! `kubectl describe pod` tells what the kubelet did. Best effort: failures are logged.

use chrono::Utc;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::status::to_k8s;

/// The Event object for `pod` (pure).
pub fn event_for(
    pod: &Pod,
    container: Option<&str>,
    type_: &str,
    reason: &str,
    message: &str,
) -> Event {
    let now = Utc::now();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}.")),
            namespace: pod.metadata.namespace.clone(),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Pod".to_string()),
            name: Some(name),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            field_path: container.map(|c| format!("spec.containers{{{c}}}")),
            ..Default::default()
        },
        type_: Some(type_.to_string()),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        count: Some(1),
        first_timestamp: Some(Time(to_k8s(now))),
        last_timestamp: Some(Time(to_k8s(now))),
        source: Some(EventSource {
            component: Some("kubelet".to_string()),
            host: node.clone(),
        }),
        reporting_component: Some("kubelet".to_string()),
        reporting_instance: node,
        ..Default::default()
    }
}

/// Posts an Event in the background.
pub fn emit(
    client: &Client,
    pod: &Pod,
    container: Option<&str>,
    type_: &str,
    reason: &str,
    message: &str,
) {
    let ev = event_for(pod, container, type_, reason, message);
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let client = client.clone();
    tokio::spawn(async move {
        let api: Api<Event> = Api::namespaced(client, &ns);
        if let Err(e) = api.create(&PostParams::default(), &ev).await {
            tracing::debug!(error = %e, "posting event");
        }
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "ns", "uid": "u1"},
            "spec": {"nodeName": "local-1", "containers": []}
        }))
        .unwrap();
        let e = event_for(&pod, Some("app"), "Warning", "BackOff", "back-off 1s");
        assert_eq!(e.metadata.generate_name.as_deref(), Some("web-0."));
        assert_eq!(e.involved_object.uid.as_deref(), Some("u1"));
        assert_eq!(
            e.involved_object.field_path.as_deref(),
            Some("spec.containers{app}")
        );
        assert_eq!(e.source.unwrap().host.as_deref(), Some("local-1"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
    }
}
