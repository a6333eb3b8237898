//! Thin helpers over the Kubernetes API calls the node makes, with errors that name
//! the missing permission on a 403.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams};

use super::election::LeaseRecord;

/// Turns a kube error into a message; a 403 names the verb and resource the node's
/// Role lacks (see `examples/node-rbac.yaml`).
pub fn explain(e: &kube::Error, verb: &str, resource: &str, ns: &str) -> String {
    if let kube::Error::Api(s) = e
        && s.code == 403
    {
        return format!(
            "missing permission: the node's ServiceAccount may not {verb} {resource} in namespace {ns} \
             (grant verb {verb:?} on {resource:?} in its Role; see examples/node-rbac.yaml): {}",
            s.message
        );
    }
    format!("{verb} {resource}: {e}")
}

pub fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// API timestamps (jiff) as chrono times.
pub fn to_chrono(t: k8s_openapi::jiff::Timestamp) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().max(0) as u32)
}

/// chrono times as API timestamps.
pub fn micro_time(t: chrono::DateTime<chrono::Utc>) -> Option<MicroTime> {
    k8s_openapi::jiff::Timestamp::from_microsecond(t.timestamp_micros())
        .ok()
        .map(MicroTime)
}

/// The election view of a Lease object.
pub fn record_of(l: &Lease) -> LeaseRecord {
    let spec = l.spec.clone().unwrap_or_default();
    LeaseRecord {
        holder: spec.holder_identity.filter(|h| !h.is_empty()),
        transitions: spec.lease_transitions.unwrap_or(0).max(0) as u64,
        duration_seconds: spec.lease_duration_seconds,
        resource_version: l.metadata.resource_version.clone(),
        acquire_time: spec.acquire_time.and_then(|t| to_chrono(t.0)),
        renew_time: spec.renew_time.and_then(|t| to_chrono(t.0)),
    }
}

/// A Lease spec for `holder` at `transitions`, acquired (and renewed) now.
pub fn lease_spec(holder: &str, transitions: u64, seconds: i32) -> LeaseSpec {
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    LeaseSpec {
        holder_identity: Some(holder.to_string()),
        lease_duration_seconds: Some(seconds),
        acquire_time: Some(now.clone()),
        renew_time: Some(now),
        lease_transitions: Some(transitions.min(i32::MAX as u64) as i32),
        ..Default::default()
    }
}

/// Sets a pod's role label (and the term annotation) with a merge patch.
pub async fn label_pod(
    pods: &Api<Pod>,
    name: &str,
    role: &str,
    term: Option<u64>,
) -> Result<(), kube::Error> {
    let mut labels = BTreeMap::new();
    labels.insert(studio_crds::labels::ROLE.to_string(), role.to_string());
    let mut meta = serde_json::json!({ "labels": labels });
    if let Some(t) = term {
        meta["annotations"] = serde_json::json!({ studio_crds::annotations::TERM: t.to_string() });
    }
    let patch = serde_json::json!({ "metadata": meta });
    pods.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// Sets one annotation of a pod with a merge patch.
pub async fn annotate_pod(
    pods: &Api<Pod>,
    name: &str,
    key: &str,
    value: &str,
) -> Result<(), kube::Error> {
    let patch = serde_json::json!({ "metadata": { "annotations": { key: value } } });
    pods.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// An annotation of a pod.
pub fn annotation<'a>(p: &'a Pod, key: &str) -> Option<&'a str> {
    p.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// The role label of a pod.
pub fn role_label(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()?
        .get(studio_crds::labels::ROLE)
        .map(String::as_str)
}
