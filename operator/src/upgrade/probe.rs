//! Learning an image's schema revision before rolling it: a Job runs the image's
//! `studio-node --version --json` and its log is the answer. The Job is deleted once
//! read; the answer is kept in `status.upgrade`, so an image is probed once.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Container, Pod, PodSpec, PodTemplateSpec, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams, PropagationPolicy};
use kube::{Client, Resource, ResourceExt};
use sha2::{Digest, Sha256};
use studio_crds::StudioCluster;

use super::decide::ImageRevision;
use crate::error::{Error, Result};

/// Label on the probe Job and its pod (value: the cluster), distinct from the
/// members' labels so a probe pod is never taken for a member.
pub const PROBE_LABEL: &str = "studio.cms.io/version-probe";

/// Where a probe stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Running (or just created); the text says what it waits for.
    Pending(String),
    Done(ImageRevision),
    /// The image could not tell (it failed, or printed no revision).
    Failed(String),
    /// The image cannot be pulled (yet): nothing happens until it can.
    Stuck(String),
}

/// `<cluster>-version-<8 hex of sha256(image)>`: one Job per image, stable across
/// operator restarts, within the 63 characters a Job's pods' label allows.
pub fn job_name(cluster: &str, image: &str) -> String {
    let digest = Sha256::digest(image.as_bytes());
    let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let prefix: String = cluster.chars().take(63 - "-version-".len() - 8).collect();
    format!("{prefix}-version-{hex}")
}

/// The probe Job (pure, for tests).
pub fn build_job(sc: &StudioCluster, image: &str) -> Result<Job> {
    let cluster = sc
        .metadata
        .name
        .as_deref()
        .ok_or(Error::MissingField("metadata.name"))?;
    let owner = sc
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;
    let labels = BTreeMap::from([(PROBE_LABEL.to_string(), cluster.to_string())]);
    let placement = sc.spec.pod.clone().unwrap_or_default();
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(job_name(cluster, image)),
            namespace: sc.metadata.namespace.clone(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(1),
            ttl_seconds_after_finished: Some(600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    // Where the cluster's pods may run (dedicated, tainted nodes): the
                    // node placement of spec.pod, not its pod (anti-)affinity.
                    node_selector: (!placement.node_selector.is_empty())
                        .then(|| placement.node_selector.clone()),
                    tolerations: (!placement.tolerations.is_empty())
                        .then(|| placement.tolerations.clone()),
                    affinity: placement
                        .affinity
                        .as_ref()
                        .and_then(|a| a.node_affinity.clone())
                        .map(|node_affinity| Affinity {
                            node_affinity: Some(node_affinity),
                            ..Default::default()
                        }),
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    containers: vec![Container {
                        name: "version".into(),
                        image: Some(image.to_string()),
                        image_pull_policy: Some(sc.spec.image_pull_policy.as_str().into()),
                        // The image's entrypoint is studio-node.
                        args: Some(vec!["--version".into(), "--json".into()]),
                        security_context: Some(SecurityContext {
                            allow_privilege_escalation: Some(false),
                            read_only_root_filesystem: Some(true),
                            run_as_non_root: Some(true),
                            run_as_user: Some(65532),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Reads `{"schemaRevision": N, "minCompatibleRevision": M, ...}` from the last JSON
/// line of the probe's log.
pub fn parse(log: &str) -> std::result::Result<ImageRevision, String> {
    let line = log
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("no JSON in its output: {:?}", tail(log)))?;
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("unreadable output {line:?}: {e}"))?;
    let field = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("its output {line:?} has no positive {k}"))
    };
    Ok(ImageRevision {
        schema_revision: field("schemaRevision")?,
        min_compatible_revision: field("minCompatibleRevision")?,
    })
}

fn tail(s: &str) -> String {
    let t: Vec<&str> = s.lines().rev().take(3).collect();
    t.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// Starts or reads the probe of `image`. A finished probe's Job is deleted.
pub async fn probe(client: &Client, sc: &StudioCluster, image: &str) -> Result<Probe> {
    let ns = sc
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let cluster = sc.name_any();
    let name = job_name(&cluster, image);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    // Probes of images spec.image no longer names (e.g. stuck pulling) go.
    let all = jobs
        .list(&ListParams::default().labels(&format!("{PROBE_LABEL}={cluster}")))
        .await?;
    for old in all
        .items
        .iter()
        .map(|j| j.name_any())
        .filter(|n| *n != name)
    {
        remove(&jobs, &old).await?;
    }
    let Some(job) = jobs.get_opt(&name).await? else {
        jobs.create(&PostParams::default(), &build_job(sc, image)?)
            .await?;
        return Ok(Probe::Pending(format!(
            "reading the schema revision of {image} (Job {name})"
        )));
    };
    let status = job.status.unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={name}")))
        .await?;
    let outcome = if status.succeeded.unwrap_or(0) > 0 {
        let done = list
            .items
            .iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"));
        match done {
            Some(p) => {
                let log = pods
                    .logs(
                        &p.name_any(),
                        &LogParams {
                            tail_lines: Some(20),
                            ..Default::default()
                        },
                    )
                    .await?;
                match parse(&log) {
                    Ok(rev) => Probe::Done(rev),
                    Err(why) => {
                        Probe::Failed(format!("{image} did not report its schema revision: {why}"))
                    }
                }
            }
            // The pod is already gone (TTL): run it again.
            None => Probe::Failed(String::new()),
        }
    } else if status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Failed" && c.status == "True")
    {
        let why = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Failed")
            .and_then(|c| c.message.clone().or(c.reason.clone()))
            .unwrap_or_default();
        Probe::Failed(format!(
            "{image} could not report its schema revision (Job {name} failed: {why}{})",
            waiting_reason(&list.items)
                .map(|w| format!("; {w}"))
                .unwrap_or_default()
        ))
    } else if let Some(w) = waiting_reason(&list.items).filter(|w| image_unavailable(w)) {
        // The kubelet keeps retrying: the Job stays, and the probe finishes by itself
        // once the image can be pulled.
        return Ok(Probe::Stuck(format!("{image} cannot be pulled: {w}")));
    } else {
        return Ok(Probe::Pending(format!(
            "reading the schema revision of {image} (Job {name}{})",
            waiting_reason(&list.items)
                .map(|w| format!(": {w}"))
                .unwrap_or_default()
        )));
    };
    remove(&jobs, &name).await?;
    Ok(match outcome {
        Probe::Failed(why) if why.is_empty() => Probe::Pending(format!(
            "reading the schema revision of {image} again (Job {name})"
        )),
        o => o,
    })
}

/// Deletes a probe Job and its pod (gone already is fine).
async fn remove(jobs: &Api<Job>, name: &str) -> Result<()> {
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    match jobs.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes the probe Job of `image` if one runs (spec.image moved back before it
/// finished).
pub async fn cancel(client: &Client, sc: &StudioCluster, image: &str) -> Result<()> {
    let ns = sc
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    remove(&jobs, &job_name(&sc.name_any(), image)).await
}

/// A waiting reason that will not go away by itself (the kubelet's image errors).
fn image_unavailable(reason: &str) -> bool {
    [
        "ErrImagePull",
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "InvalidImageName",
    ]
    .iter()
    .any(|r| reason.starts_with(r))
}

/// Why the probe's container is not running, e.g. `ErrImagePull: ...`.
fn waiting_reason(pods: &[Pod]) -> Option<String> {
    pods.iter()
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .find_map(|c| {
            let w = c.state.as_ref()?.waiting.as_ref()?;
            Some(format!(
                "{}{}",
                w.reason.clone().unwrap_or_default(),
                w.message
                    .as_ref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_json_is_read_from_the_last_json_line() {
        let log = "some banner\n{\"version\":\"0.2.0\",\"schemaRevision\":2,\"minCompatibleRevision\":1}\n";
        assert_eq!(
            parse(log),
            Ok(ImageRevision {
                schema_revision: 2,
                min_compatible_revision: 1
            })
        );
    }

    #[test]
    fn output_without_a_revision_is_an_error_that_quotes_it() {
        let e = parse("studio-node 0.1.0\n");
        assert!(
            matches!(&e, Err(m) if m.contains("studio-node 0.1.0")),
            "{e:?}"
        );
        let e = parse("{\"version\":\"0.1.0\"}");
        assert!(
            matches!(&e, Err(m) if m.contains("schemaRevision")),
            "{e:?}"
        );
    }

    #[test]
    fn job_names_are_stable_per_image_and_fit_a_label() {
        let a = job_name("demo", "ghcr.io/x/studio-node:v2");
        assert_eq!(a, job_name("demo", "ghcr.io/x/studio-node:v2"));
        assert_ne!(a, job_name("demo", "ghcr.io/x/studio-node:v3"));
        assert!(a.starts_with("demo-version-"));
        assert!(job_name(&"c".repeat(80), "i").len() <= 63);
    }

    #[test]
    fn the_probe_pod_is_not_labelled_as_a_member()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let sc: StudioCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "studio.cms.io/v1alpha1", "kind": "StudioCluster",
            "metadata": {"name": "demo", "namespace": "ns", "uid": "u1"},
            "spec": {"image": "studio-node:v1"}
        }))?;
        let job = build_job(&sc, "studio-node:v2")?;
        let tpl = job.spec.ok_or("no spec")?.template;
        let labels = tpl.metadata.and_then(|m| m.labels).ok_or("no labels")?;
        assert!(!labels.contains_key(studio_crds::labels::CLUSTER));
        assert_eq!(labels.get(PROBE_LABEL).map(String::as_str), Some("demo"));
        let spec = tpl.spec.ok_or("no pod spec")?;
        let c = spec.containers.first().ok_or("no container")?;
        assert_eq!(c.image.as_deref(), Some("studio-node:v2"));
        assert_eq!(
            c.args.as_deref(),
            Some(&["--version".to_string(), "--json".to_string()][..])
        );
        Ok(())
    }

    /// On dedicated, tainted nodes the probe must be able to run where the members run,
    /// or the upgrade waits forever for a pod nobody schedules.
    #[test]
    fn the_probe_pod_runs_where_the_members_may()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let sc: StudioCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "studio.cms.io/v1alpha1", "kind": "StudioCluster",
            "metadata": {"name": "demo", "namespace": "ns", "uid": "u1"},
            "spec": {"image": "studio-node:v1", "pod": {
                "nodeSelector": {"pool": "cms"},
                "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
                "affinity": {
                    "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}},
                    "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"x": "y"}}}]}
                }
            }}
        }))?;
        let job = build_job(&sc, "studio-node:v2")?;
        let spec = job
            .spec
            .ok_or("no spec")?
            .template
            .spec
            .ok_or("no pod spec")?;
        let selector = spec.node_selector.ok_or("no nodeSelector")?;
        assert_eq!(selector.get("pool").map(String::as_str), Some("cms"));
        let tolerations = spec.tolerations.ok_or("no tolerations")?;
        assert_eq!(tolerations[0].key.as_deref(), Some("dedicated"));
        let affinity = spec.affinity.ok_or("no affinity")?;
        assert!(affinity.node_affinity.is_some());
        // The members' anti-affinity is about members; the probe is not one.
        assert!(affinity.pod_anti_affinity.is_none());
        Ok(())
    }
}
