//! Storage growth: claims are patched and the StatefulSet re-created around its pods
//! (volumeClaimTemplates are immutable).

use super::*;

pub(super) fn template_storage(sts: &StatefulSet) -> Option<String> {
    sts.spec
        .as_ref()?
        .volume_claim_templates
        .as_ref()?
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(build::DATA_VOLUME))?
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
        .map(|q| q.0.clone())
}

/// Returns whether the StatefulSet was deleted (orphaning its pods) to be re-created.
pub(super) async fn grow_storage(
    ctx: &Context,
    sc: &StudioCluster,
    sts: &StatefulSet,
) -> Result<bool> {
    let want = &sc.spec.storage.size;
    let Some(have) = template_storage(sts) else {
        return Ok(false);
    };
    // Compare amounts, not spellings (the API server canonicalises 1024Mi to 1Gi).
    match (plan::quantity_bytes(&have), plan::quantity_bytes(want)) {
        (Some(h), Some(w)) if w > h => {}
        _ => return Ok(false),
    }
    let ns = sc
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let sts_name = sts.name_any();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    for i in 0..replicas {
        let pvc = format!("{}-{sts_name}-{i}", build::DATA_VOLUME);
        let patch = json!({"spec": {"resources": {"requests": {"storage": want}}}});
        match pvcs
            .patch(&pvc, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                ctx.event(
                    sc,
                    EventType::Warning,
                    "StorageResizeFailed",
                    format!("cannot resize {pvc} to {want}: {e}"),
                )
                .await;
                return Err(e.into());
            }
        }
    }
    // Orphan the pods: the re-created StatefulSet adopts them.
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..Default::default()
    };
    api.delete(&sts_name, &dp).await?;
    ctx.event(
        sc,
        EventType::Normal,
        "StorageResized",
        format!("claims of {sts_name} resized {have} → {want}"),
    )
    .await;
    Ok(true)
}
