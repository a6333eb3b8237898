//! The one disruptive step a reconcile may take (switchover, pod restarts, answers to
//! user switchover requests).

use super::*;

/// Runs `step`; returns the switchover it started, if any (already recorded in the
/// status).
pub(super) async fn execute(
    ctx: &Context,
    sc: &StudioCluster,
    obs: &Observed,
    step: &Step,
    token: Option<&str>,
) -> Result<Option<SwitchoverRecord>> {
    let ns = sc
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let scs: Api<StudioCluster> = Api::namespaced(ctx.client.clone(), &ns);
    match step {
        Step::Switchover { from, to, reason } => {
            let Some(primary) = obs.member(from) else {
                return Ok(None);
            };
            // A hand-over already asked for moments ago is still under way: let it finish
            // (the node answers for up to SWITCHOVER_TIMEOUT) instead of asking again.
            // Asked by this replica (memory, fresher than the cached status) or by the
            // leader before it (the status).
            let window = SWITCHOVER_TIMEOUT + Duration::from_secs(5);
            let in_flight = ctx
                .switchovers
                .lock()
                .ok()
                .and_then(|s| s.get(&key(sc)).cloned())
                .map(|(t, at)| &t == to && at.elapsed() < window)
                .unwrap_or(false)
                || switchover_record::in_flight(
                    sc.status.as_ref().and_then(|s| s.switchover.as_ref()),
                    to,
                    Timestamp::now(),
                    window,
                );
            if in_flight {
                info!(cluster = %key(sc), %to, "switchover in progress");
                return Ok(None);
            }
            // Recorded before the node is asked: a leader taking over from here knows.
            let record = switchover_record::start(from, to, reason.as_str(), Timestamp::now());
            let mut recorded = sc.status.clone().unwrap_or_default();
            recorded.switchover = Some(record.clone());
            patch_status(&ctx.client, sc, &recorded).await?;
            info!(cluster = %key(sc), %from, %to, reason = reason.as_str(), "switchover");
            ctx.event(
                sc,
                EventType::Normal,
                "Switchover",
                format!(
                    "switching the primary {from} over to {to} ({})",
                    reason.as_str()
                ),
            )
            .await;
            if let Ok(mut s) = ctx.switchovers.lock() {
                s.insert(key(sc), (to.clone(), Instant::now()));
            }
            match ctx.nodes_for(sc, token).switchover(primary, to).await {
                Ok(msg) => {
                    ctx.metrics.switchovers.inc();
                    if *reason == Reason::User {
                        clear_switchover_request(&scs, sc, &format!("{to}: done")).await?;
                    }
                    // An approval is good for one upgrade.
                    let approved = sc
                        .metadata
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.contains_key(annotations::APPROVE_PRIMARY_UPDATE));
                    if *reason == Reason::Upgrade && approved {
                        let patch = json!({"metadata": {"annotations": {
                            annotations::APPROVE_PRIMARY_UPDATE: null,
                        }}});
                        scs.patch(
                            &sc.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(&patch),
                        )
                        .await?;
                    }
                    info!(cluster = %key(sc), %to, %msg, "switchover accepted");
                    return Ok(Some(record));
                }
                Err(e) => {
                    // Not in flight any more: the retry (after the back-off) asks again.
                    if let Ok(mut s) = ctx.switchovers.lock() {
                        s.remove(&key(sc));
                    }
                    ctx.event(
                        sc,
                        EventType::Warning,
                        "SwitchoverFailed",
                        format!("switchover {from} → {to} failed: {e}"),
                    )
                    .await;
                    return Err(e);
                }
            }
        }
        Step::RestartPod { name, primary } => {
            let what = if *primary { "primary" } else { "member" };
            ctx.event(
                sc,
                EventType::Normal,
                "Upgrade",
                format!("restarting {what} {name} on the new revision"),
            )
            .await;
            pods.delete(name, &DeleteParams::default()).await?;
        }
        Step::RestartAll { names } => {
            ctx.event(
                sc,
                EventType::Warning,
                "OfflineUpgrade",
                format!(
                    "offline upgrade: stopping writes and restarting {} together on the new revision",
                    names.join(", ")
                ),
            )
            .await;
            for name in names {
                match pods.delete(name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Step::RejectSwitchover { target, why } => {
            ctx.event(
                sc,
                EventType::Warning,
                "SwitchoverRejected",
                format!("switchover to {target} refused: {why}"),
            )
            .await;
            clear_switchover_request(&scs, sc, &format!("{target}: refused: {why}")).await?;
        }
        Step::SwitchoverDone { target } => {
            clear_switchover_request(&scs, sc, &format!("{target}: done")).await?;
        }
    }
    Ok(None)
}

pub(super) async fn clear_switchover_request(
    api: &Api<StudioCluster>,
    sc: &StudioCluster,
    outcome: &str,
) -> Result<()> {
    let patch = json!({"metadata": {"annotations": {
        annotations::SWITCHOVER_TO: null,
        annotations::LAST_SWITCHOVER: outcome,
    }}});
    api.patch(
        &sc.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}
