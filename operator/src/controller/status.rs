//! The status write: failover/switchover records and their Events, member statuses,
//! conditions, and the write-quorum Events; position-only changes are rate-limited.

use super::*;

pub(super) async fn update_status(
    ctx: &Context,
    sc: &StudioCluster,
    obs: &Observed,
    plan: &Plan,
    gate: &upgrade::Gate,
    started: Option<SwitchoverRecord>,
) -> Result<()> {
    let prev = sc.status.clone().unwrap_or_default();
    // The switchover in progress: started by this reconcile, else as recorded.
    let recorded = started.or(prev.switchover.clone());
    let primary = obs.primary().map(|m| m.name.clone());
    let seen = ctx
        .last_primary
        .lock()
        .ok()
        .and_then(|m| m.get(&key(sc)).cloned());
    let mut last_failover = plan::newest_failover(
        prev.last_failover.clone(),
        seen.as_ref().and_then(|s| s.last_failover.clone()),
    );
    // The primary before this change: the one in status, or (when a reconcile in between
    // saw no primary at all, e.g. while the old one's pod was terminating) the last one
    // this operator saw. A primary our last update already saw is no change.
    let old_primary = prev
        .current_primary
        .clone()
        .or_else(|| seen.as_ref().map(|s| s.primary.clone()));
    let already_seen = primary.is_some() && seen.as_ref().map(|s| &s.primary) == primary.as_ref();
    if let (Some(old), Some(new)) = (&old_primary, &primary)
        && old != new
        && !already_seen
    {
        let in_memory = ctx
            .switchovers
            .lock()
            .ok()
            .and_then(|mut s| s.remove(&key(sc)))
            .map(|(to, at)| &to == new && at.elapsed() < switchover_record::EXPLAINS_FOR)
            .unwrap_or(false);
        let planned =
            in_memory || switchover_record::explains(recorded.as_ref(), new, Timestamp::now());
        let kind = if planned { "switchover" } else { "failover" };
        last_failover = Some(FailoverRecord {
            time: Time(Timestamp::now()),
            from: Some(old.clone()),
            to: new.clone(),
            kind: kind.into(),
        });
        if planned {
            ctx.event(
                sc,
                EventType::Normal,
                "SwitchedOver",
                format!("primary is now {new} (was {old})"),
            )
            .await;
        } else {
            ctx.metrics.failovers.inc();
            ctx.event(
                sc,
                EventType::Warning,
                "Failover",
                format!("primary changed from {old} to {new}"),
            )
            .await;
        }
    }
    if let Some(new) = &primary
        && let Ok(mut m) = ctx.last_primary.lock()
    {
        m.insert(
            key(sc),
            SeenPrimary {
                primary: new.clone(),
                last_failover: last_failover.clone(),
            },
        );
    }
    let members = plan::member_statuses_with(obs, Some(&plan.write_quorum));
    for (pod, before, now) in plan::quarantine_growth(&prev.members, &members) {
        ctx.event(
            sc,
            EventType::Warning,
            "Quarantined",
            format!(
                "{pod} quarantined {} journal entries the primary does not hold ({now} in all): review them at /internal/v1/admin/quarantine on {pod}",
                now - before
            ),
        )
        .await;
    }
    ctx.metrics.observe_cluster(
        &sc.namespace().unwrap_or_default(),
        &sc.name_any(),
        obs.data().filter(|m| m.ready && !m.terminating).count() as i32,
        plan.phase == Phase::Ready,
    );
    let primary_now = primary.clone();
    let mut conditions = plan::cluster_conditions(
        sc,
        plan.phase,
        &plan.message,
        Some(&plan.write_quorum),
        sc.status.as_ref(),
    );
    if let Some(reason) = plan.reason {
        plan::override_reason(&mut conditions, reason, &plan.message);
    }
    upgrade::mark_stalled(&mut conditions, gate, sc.status.as_ref());
    // spec.backup: what the primary reports about its archive.
    let archive_check = plan::check_archiving(sc, obs);
    conditions.extend(plan::archiving_condition(
        sc,
        archive_check.as_ref(),
        sc.status.as_ref(),
    ));
    let restore_check = plan::check_restore(obs);
    let status = StudioClusterStatus {
        observed_generation: sc.metadata.generation,
        phase: Some(plan.phase),
        message: Some(plan.message.clone()),
        conditions,
        current_primary: primary.or(if plan.phase == Phase::Paused {
            prev.current_primary.clone()
        } else {
            None
        }),
        ready_nodes: obs.data().filter(|m| m.ready && !m.terminating).count() as i32,
        last_failover,
        cluster_id: obs
            .primary()
            .and_then(|m| m.node.as_ref())
            .and_then(|n| n.cluster_id.clone())
            .or(prev.cluster_id.clone()),
        update_revision: obs.update_revision.clone(),
        switchover: switchover_record::carry(recorded, primary_now.as_deref(), Timestamp::now()),
        members_ready: Some(format!(
            "{}/{}",
            members.iter().filter(|m| m.ready).count(),
            members.len()
        )),
        writable: Some(plan.write_quorum.ok()),
        max_lag: members.iter().filter_map(|m| m.lag).max(),
        members,
        image: Some(gate.image.clone()),
        upgrade: gate.upgrade.clone(),
        backup: plan::backup_status(sc, obs, prev.backup.as_ref()),
    };
    if sc.status.as_ref() != Some(&status) {
        // Journal positions move with every write: a status that differs only in them
        // is written at most every POSITIONS_REFRESH (each write wakes the controller).
        let only_positions = sc
            .status
            .as_ref()
            .is_some_and(|old| plan::same_but_positions(old, &status));
        let recent = ctx
            .status_writes
            .lock()
            .ok()
            .and_then(|w| w.get(&key(sc)).copied())
            .is_some_and(|at| at.elapsed() < POSITIONS_REFRESH);
        if only_positions && recent {
            return Ok(());
        }
        if prev.phase != Some(plan.phase) {
            info!(cluster = %key(sc), phase = plan.phase.as_str(), message = %plan.message, "phase");
        }
        // Decided from the status in the object before this write: an operator restart
        // sees the condition it wrote and announces nothing again.
        let quorum_event = plan::write_quorum_event(sc.status.as_ref(), &plan.write_quorum);
        let backup_events = [
            (
                "archiving",
                plan::archiving_event(sc.status.as_ref(), archive_check.as_ref()),
            ),
            (
                "restore",
                plan::reason_event(sc.status.as_ref(), plan, restore_check.as_ref()),
            ),
        ];
        patch_status(&ctx.client, sc, &status).await?;
        if let Ok(mut w) = ctx.status_writes.lock() {
            w.insert(key(sc), Instant::now());
        }
        let now_quorum = plan.write_quorum.status();
        let already_written = ctx
            .written_quorum
            .lock()
            .ok()
            .and_then(|mut w| w.insert(key(sc), now_quorum))
            .is_some_and(|before| before == now_quorum);
        if let Some(ev) = quorum_event
            && !already_written
        {
            if ev.warning {
                warn!(cluster = %key(sc), reason = ev.reason, note = %ev.note, "write quorum");
            } else {
                info!(cluster = %key(sc), reason = ev.reason, note = %ev.note, "write quorum");
            }
            let type_ = if ev.warning {
                EventType::Warning
            } else {
                EventType::Normal
            };
            ctx.event(sc, type_, ev.reason, ev.note).await;
        }
        for (topic, ev) in backup_events {
            let Some(ev) = ev else { continue };
            let state = format!("{}: {}", ev.reason, ev.note);
            let already = ctx
                .announced
                .lock()
                .ok()
                .and_then(|mut a| a.insert(format!("{}/{topic}", key(sc)), state.clone()))
                .is_some_and(|before| before == state);
            if already {
                continue;
            }
            if ev.warning {
                warn!(cluster = %key(sc), reason = ev.reason, note = %ev.note, "{topic}");
            } else {
                info!(cluster = %key(sc), reason = ev.reason, note = %ev.note, "{topic}");
            }
            let type_ = if ev.warning {
                EventType::Warning
            } else {
                EventType::Normal
            };
            ctx.event(sc, type_, ev.reason, ev.note).await;
        }
    }
    Ok(())
}

pub(super) async fn patch_status(
    client: &Client,
    sc: &StudioCluster,
    status: &StudioClusterStatus,
) -> Result<()> {
    let ns = sc
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<StudioCluster> = Api::namespaced(client.clone(), &ns);
    // Server-side apply: fields this manager no longer sets (a primary that is gone, a
    // cleared message) are removed, which a merge patch would leave behind.
    let patch = json!({
        "apiVersion": format!("{}/{}", studio_crds::GROUP, studio_crds::VERSION),
        "kind": "StudioCluster",
        "status": status,
    });
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(&sc.name_any(), &pp, &Patch::Apply(&patch))
        .await?;
    Ok(())
}
