//! `spec.bootstrap.recovery`: the restore settings of the data nodes. Resolved once,
//! before the data StatefulSet exists (from the spec's `clusterId`, the source
//! StudioCluster's `status.clusterId`, or a Completed StudioBackup's status); from then
//! on taken from the StatefulSet's template (or, while it is re-created, from its data
//! pods), so the template never changes because a source went away.

use k8s_openapi::api::core::v1::EnvVar;
use studio_crds::StudioBackup;

use super::*;
use crate::build::backup::{Unresolved, pinned_restore_env, resolve_recovery, restore_env};

/// The restore settings of the data nodes: `Ok(env)` (empty without recovery), or why
/// they cannot be built yet.
pub(super) async fn restore_settings(
    ctx: &Context,
    sc: &StudioCluster,
    data_sts: Option<&StatefulSet>,
    pods: &[Pod],
) -> Result<std::result::Result<Vec<EnvVar>, Unresolved>> {
    let Some(r) = sc.spec.bootstrap.as_ref().and_then(|b| b.recovery.as_ref()) else {
        return Ok(Ok(vec![]));
    };
    let container = |spec: Option<&k8s_openapi::api::core::v1::PodSpec>| {
        spec.and_then(|p| p.containers.iter().find(|c| c.name == build::CONTAINER))
            .cloned()
    };
    if let Some(sts) = data_sts
        && let Some(c) = container(sts.spec.as_ref().and_then(|s| s.template.spec.as_ref()))
    {
        return Ok(Ok(pinned_restore_env(&c)));
    }
    // The StatefulSet is being re-created around its pods (storage growth): keep what
    // they run with.
    let data_pod = pods.iter().find(|p| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::COMPONENT))
            .map(String::as_str)
            == Some(studio_crds::components::DATA)
    });
    if let Some(c) = data_pod.and_then(|p| container(p.spec.as_ref())) {
        return Ok(Ok(pinned_restore_env(&c)));
    }
    let ns = sc
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let source = match r.cluster.as_deref() {
        Some(name) if r.cluster_id.is_none() => {
            Api::<StudioCluster>::namespaced(ctx.client.clone(), &ns)
                .get_opt(name)
                .await?
        }
        _ => None,
    };
    let backup = match r.backup.as_deref() {
        Some(name) if r.cluster_id.is_none() && r.cluster.is_none() => {
            Api::<StudioBackup>::namespaced(ctx.client.clone(), &ns)
                .get_opt(name)
                .await?
        }
        _ => None,
    };
    Ok(
        resolve_recovery(&sc.name_any(), r, source.as_ref(), backup.as_ref())
            .map(|resolved| restore_env(r, &resolved)),
    )
}
