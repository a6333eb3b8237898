//! Acceptance of the operator (issue 5) on the real local cluster: the operator installed
//! with helm from `charts/studio-operator` and running as pods (see `common`), clusters
//! created and changed with kubectl as a user would, nodes reached on their pod addresses.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    coordination::v1::Lease,
    core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount},
    policy::v1::PodDisruptionBudget,
    rbac::v1::{Role, RoleBinding},
};
use kube::{Api, Resource, api::ListParams};
use serde_json::{Value, json};
use studio_e2e::{is_ready, name};
use studio_harness::{TestEnv, join, pod_pids, wait_for};

use common::*;

/// Every object the operator creates for a cluster, by kind and name, with whether it
/// exists now.
async fn owned_objects(
    env: &TestEnv,
    cluster: &str,
    arbiter: bool,
) -> anyhow::Result<Vec<(String, bool)>> {
    async fn exists<K>(env: &TestEnv, name: &str) -> anyhow::Result<(String, bool)>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + k8s_openapi::serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        let kind = K::kind(&Default::default()).to_string();
        let found = env
            .api::<K>()
            .get_opt(name)
            .await
            .with_context(|| format!("get {kind} {name}"))?
            .is_some();
        Ok((format!("{kind}/{name}"), found))
    }
    let mut out = vec![
        exists::<StatefulSet>(env, cluster).await?,
        exists::<Service>(env, &format!("{cluster}-nodes")).await?,
        exists::<Service>(env, &format!("{cluster}-primary")).await?,
        exists::<Service>(env, &format!("{cluster}-replicas")).await?,
        exists::<Secret>(env, &format!("{cluster}-auth")).await?,
        exists::<ServiceAccount>(env, &format!("{cluster}-node")).await?,
        exists::<Role>(env, &format!("{cluster}-node")).await?,
        exists::<RoleBinding>(env, &format!("{cluster}-node")).await?,
        exists::<PodDisruptionBudget>(env, cluster).await?,
    ];
    if arbiter {
        out.push(exists::<StatefulSet>(env, &format!("{cluster}-arbiter")).await?);
    }
    Ok(out)
}

fn missing(objects: &[(String, bool)]) -> Vec<String> {
    objects
        .iter()
        .filter(|(_, found)| !found)
        .map(|(n, _)| n.clone())
        .collect()
}

/// The part of kubectl's message that names `field`.
fn naming_line<'a>(msg: &'a str, field: &str) -> &'a str {
    let at = msg.find(&format!("{field}:")).unwrap_or(0);
    msg[at..].lines().next().unwrap_or("")
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// (a) The shipped 3 + arbiter example becomes Ready within 60 s of its pods starting;
/// `kubectl get studioclusters` shows 3 nodes, 3 ready and the primary; `kubectl wait
/// --for=condition=Ready` returns; status, Lease, labels and Services agree; an item
/// written through the primary reads back.
#[tokio::test]
async fn example_three_nodes_with_arbiter_becomes_ready() -> anyhow::Result<()> {
    let env = OpEnv::new("op-ready").await?;
    let cluster = "studio";
    let manifest = example_manifest(&env.cluster.repo)?;

    let t0 = Instant::now();
    apply(&env, "example.yaml", &manifest)?;
    let (mut owned_at, mut first_pod_at, mut running_at, mut ready_at) = (None, None, None, None);
    loop {
        if owned_at.is_none() && missing(&owned_objects(&env, cluster, true).await?).is_empty() {
            owned_at = Some(t0.elapsed());
        }
        let pods = cluster_pods(&env, cluster).await?;
        if first_pod_at.is_none() && !pods.is_empty() {
            first_pod_at = Some(t0.elapsed());
        }
        let running = pods
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_some_and(|ph| ph == "Running")
            })
            .count();
        if running_at.is_none() && running == 4 {
            running_at = Some(t0.elapsed());
        }
        let st = status(&env, cluster).await?;
        if ready_at.is_none() && st.ready_now() {
            ready_at = Some(t0.elapsed());
        }
        if let (Some(o), Some(f), Some(r), Some(d)) = (owned_at, first_pod_at, running_at, ready_at)
        {
            eprintln!(
                "[operator] TIMING CR applied → all owned objects exist {}; → first pod {}; → 4 pods Running {}; → Ready {} ({} after the first pod, {} after all Running)",
                secs(o),
                secs(f),
                secs(r),
                secs(d),
                secs(d.saturating_sub(f)),
                secs(d.saturating_sub(r))
            );
            ensure!(
                d.saturating_sub(f) <= Duration::from_secs(60),
                "Ready {} after the first pod appeared (bound: 60 s)",
                secs(d.saturating_sub(f))
            );
            break;
        }
        if t0.elapsed() > START {
            bail!(
                "after {}: owned objects missing {:?}, {} pods ({} Running), status {}",
                secs(t0.elapsed()),
                missing(&owned_objects(&env, cluster, true).await?),
                pods.len(),
                running,
                st.summary()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // `kubectl wait` returns.
    env.kubectl([
        "wait",
        "--for=condition=Ready",
        &format!("studiocluster/{cluster}"),
        "--timeout=30s",
    ])?;

    // Status, Lease, labels and Services agree on one primary.
    let (primary, ip) = wait_for(
        "status, Lease, role labels and Services to agree",
        Duration::from_secs(30),
        || roles_agree(&env, cluster, 3),
    )
    .await?;

    // `kubectl get studioclusters`: Nodes 3, Ready True, 4/4 members, the primary,
    // writable, a max lag, phase Ready.
    let table = env.kubectl(["get", "studioclusters"])?;
    eprintln!("{table}");
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    ensure!(
        header
            == [
                "NAME", "NODES", "READY", "MEMBERS", "PRIMARY", "WRITABLE", "MAX-LAG", "PHASE",
                "AGE"
            ],
        "printer columns: {header:?}"
    );
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with(cluster))
        .unwrap_or("")
        .split_whitespace()
        .collect();
    ensure!(
        row.get(1..6) == Some(&["3", "True", "4/4", primary.as_str(), "true"][..])
            && row.get(6).is_some_and(|lag| lag.parse::<u64>().is_ok())
            && row.get(7) == Some(&"Ready"),
        "kubectl get studioclusters row: {row:?} (primary {primary})"
    );
    eprintln!(
        "{}",
        env.kubectl(["get", "pods", "-L", ROLE, "-o", "wide"])?
    );

    // Write and read through the primary with a user JWT signed by the generated key.
    let content = Content::new(&env, cluster).await?;
    content.put(ip, "sites/e2e/home", "hello").await?;
    ensure!(
        content.get(ip, "sites/e2e/home").await?.as_deref() == Some("hello"),
        "the primary does not return the item just written"
    );
    env.pass().await
}

/// (b) The schema refuses bad specs at `kubectl apply`, each message naming the field.
#[tokio::test]
async fn invalid_specs_are_refused_naming_the_field() -> anyhow::Result<()> {
    let env = OpEnv::new("op-invalid").await?;
    let img = node_image();
    // (spec, the field the message must name)
    let cases: Vec<(Value, &str)> = vec![
        (json!({"nodes": 0, "image": img}), "spec.nodes"),
        (json!({"nodes": 33, "image": img}), "spec.nodes"),
        (json!({"nodes": 3}), "spec.image"),
        (json!({"image": ""}), "spec.image"),
        (json!({"image": "studio node"}), "spec.image"),
        (
            json!({"image": img, "imagePullPolicy": "Sometimes"}),
            "spec.imagePullPolicy",
        ),
        (
            json!({"image": img, "coordinatorMode": "WRITES"}),
            "spec.coordinatorMode",
        ),
        (
            json!({"image": img, "replication": {"mode": "quorum"}}),
            "spec.replication.mode",
        ),
        (
            json!({"image": img, "nodes": 3, "replication": {"mode": "sync", "syncReplicas": 3}}),
            "spec.replication.syncReplicas",
        ),
        (
            json!({"image": img, "election": {"leaseDurationSeconds": 10, "renewDeadlineSeconds": 10}}),
            "spec.election.renewDeadlineSeconds",
        ),
        (
            json!({"image": img, "election": {"leaseDurationSeconds": 15, "renewDeadlineSeconds": 10, "retryPeriodSeconds": 9}}),
            "spec.election.retryPeriodSeconds",
        ),
        (
            json!({"image": img, "election": {"leaseDurationSeconds": 1}}),
            "spec.election.leaseDurationSeconds",
        ),
        (
            json!({"image": img, "tls": {"enabled": true, "certificateDurationSeconds": 600, "renewBeforeSeconds": 600}}),
            "spec.tls.renewBeforeSeconds",
        ),
        (
            json!({"image": img, "auth": {"oidc": {"jwksUrl": "ftp://idp/certs"}}}),
            "spec.auth.oidc.jwksUrl",
        ),
        (
            json!({"image": img, "election": {"priorities": {"x-0": 1}, "eligiblePattern": "x-.*"}}),
            "spec.election",
        ),
        (
            json!({"image": img, "election": {"priorities": {"x-0": 0, "x-1": 0}}}),
            "spec.election.priorities",
        ),
        (
            json!({"image": img, "election": {"priorities": {"x-0": 5000}}}),
            "spec.election.priorities",
        ),
        (
            json!({"image": img, "storage": {"size": "lots"}}),
            "spec.storage.size",
        ),
        (
            json!({"image": img, "storage": {"size": "0"}}),
            "spec.storage.size",
        ),
        (
            json!({"image": img, "storage": {"pvcRetention": "Keep"}}),
            "spec.storage.pvcRetention",
        ),
        (
            json!({"image": img, "upgrades": {"primaryUpdateStrategy": "manual"}}),
            "spec.upgrades.primaryUpdateStrategy",
        ),
        (
            json!({"image": img, "auth": {"existingSecret": "Not_A_Name"}}),
            "spec.auth.existingSecret",
        ),
    ];
    let mut failures = Vec::new();
    for (i, (spec, field)) in cases.iter().enumerate() {
        let name = format!("bad-{i}");
        let manifest = json!({
            "apiVersion": "studio.cms.io/v1alpha1",
            "kind": "StudioCluster",
            "metadata": {"name": name},
            "spec": spec,
        })
        .to_string();
        match apply(&env, &format!("{name}.json"), &manifest) {
            Ok(out) => failures.push(format!("{spec} was accepted: {}", out.trim())),
            Err(e) => {
                let msg = format!("{e:#}");
                if !msg.contains(&format!("{field}:")) {
                    failures.push(format!("{spec}: the message does not name {field}: {msg}"));
                } else {
                    eprintln!(
                        "[operator] refused, naming {field}: {}",
                        naming_line(&msg, field)
                    );
                }
            }
        }
    }

    // Transition rules: storage only grows; the storage class is immutable.
    let valid = json!({
        "apiVersion": "studio.cms.io/v1alpha1",
        "kind": "StudioCluster",
        "metadata": {"name": "grow"},
        "spec": {"image": img, "paused": true, "storage": {"size": "2Gi", "storageClassName": "standard"}},
    });
    apply(&env, "grow.json", &valid.to_string())?;
    let updates: Vec<(Value, &str)> = vec![
        (
            json!({"size": "1Gi", "storageClassName": "standard"}),
            "spec.storage.size",
        ),
        (
            json!({"size": "2Gi", "storageClassName": "fast"}),
            "spec.storage.storageClassName",
        ),
    ];
    for (i, (storage, field)) in updates.iter().enumerate() {
        let mut m = valid.clone();
        m["spec"]["storage"] = storage.clone();
        match apply(&env, &format!("grow-{i}.json"), &m.to_string()) {
            Ok(out) => failures.push(format!("update {storage} was accepted: {}", out.trim())),
            Err(e) => {
                let msg = format!("{e:#}");
                if !msg.contains(&format!("{field}:")) {
                    failures.push(format!(
                        "update {storage}: the message does not name {field}: {msg}"
                    ));
                } else {
                    eprintln!(
                        "[operator] refused, naming {field}: {}",
                        naming_line(&msg, field)
                    );
                }
            }
        }
    }
    ensure!(
        failures.is_empty(),
        "{} of {} invalid specs not refused properly:\n{}",
        failures.len(),
        cases.len() + updates.len(),
        failures.join("\n")
    );
    // Nothing of the refused specs exists.
    let names: Vec<String> = studio_api(&env)
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    ensure!(names == ["grow"], "StudioClusters present: {names:?}");
    env.pass().await
}

/// (c) Deleting the primary pod: a new primary; status, Events, labels and Services
/// agree; what was written before is still there.
#[tokio::test]
async fn deleting_the_primary_pod_elects_a_new_one() -> anyhow::Result<()> {
    let env = OpEnv::new("op-failover").await?;
    let cluster = "fo";
    apply(&env, "fo.json", &cluster_manifest(cluster, json!({})))?;
    wait_ready(&env, cluster, 3, START).await?;
    let (old, ip) = wait_for("roles to agree", Duration::from_secs(30), || {
        roles_agree(&env, cluster, 3)
    })
    .await?;
    let content = Content::new(&env, cluster).await?;
    content.put(ip, "sites/e2e/before", "kept").await?;

    let t0 = Instant::now();
    env.kubectl(["delete", "pod", &old, "--wait=false"])?;
    let new_primary = wait_for(
        &format!("a primary other than {old}"),
        Duration::from_secs(60),
        || async {
            let st = status(&env, cluster).await?;
            match (&st.current_primary, lease_holder(&env, cluster).await?) {
                (Some(p), Some(h)) if *p != old && h == *p => Ok(p.clone()),
                _ => bail!(
                    "{} lease holder {:?}",
                    st.summary(),
                    lease_holder(&env, cluster).await?
                ),
            }
        },
    )
    .await?;
    let elected = t0.elapsed();
    let (agreed, new_ip) = wait_for(
        "status, Lease, labels and Services to agree after the failover",
        Duration::from_secs(120),
        || roles_agree(&env, cluster, 3),
    )
    .await?;
    ensure!(
        agreed == new_primary,
        "primary moved again: {new_primary} then {agreed}"
    );
    eprintln!(
        "[operator] TIMING primary pod {old} deleted → new primary {new_primary} in status and Lease {}; → everything agrees (old pod back as replica) {}",
        secs(elected),
        secs(t0.elapsed())
    );
    let st = status(&env, cluster).await?;
    ensure!(
        st.last_failover["from"] == old.as_str() && st.last_failover["to"] == new_primary.as_str(),
        "status.lastFailover {} (expected {old} → {new_primary})",
        st.last_failover
    );
    let events = wait_for(
        "an Event about the primary change",
        Duration::from_secs(30),
        || async {
            let ev = cluster_events(&env, cluster).await?;
            if ev.iter().any(|(r, m)| {
                (r == "Failover" || r == "SwitchedOver")
                    && m.contains(&old)
                    && m.contains(&new_primary)
            }) {
                Ok(ev)
            } else {
                bail!("events: {ev:?}")
            }
        },
    )
    .await?;
    eprintln!("[operator] events: {events:?}");
    ensure!(
        content.get(new_ip, "sites/e2e/before").await?.as_deref() == Some("kept"),
        "the item written before the failover is gone"
    );
    content.put(new_ip, "sites/e2e/after", "new").await?;
    env.pass().await
}

/// (d) Deleting the StudioCluster removes every object the operator created, the pods,
/// the claims (pvcRetention: Delete), and what the nodes created (Lease, bootstrap).
#[tokio::test]
async fn deleting_the_cluster_removes_every_owned_object() -> anyhow::Result<()> {
    let env = OpEnv::new("op-delete").await?;
    let cluster = "gone";
    apply(
        &env,
        "gone.json",
        &cluster_manifest(
            cluster,
            json!({"nodes": 1, "replication": {"mode": "async", "syncReplicas": 1}}),
        ),
    )?;
    wait_ready(&env, cluster, 1, START).await?;
    let owned = owned_objects(&env, cluster, true).await?;
    ensure!(
        missing(&owned).is_empty(),
        "missing before deletion: {:?}",
        missing(&owned)
    );
    let uid = studio_api(&env)
        .get(cluster)
        .await?
        .metadata
        .uid
        .unwrap_or_default();
    let sts = env.api::<StatefulSet>().get(cluster).await?;
    ensure!(
        sts.metadata
            .owner_references
            .unwrap_or_default()
            .iter()
            .any(|o| o.uid == uid && o.controller == Some(true)),
        "the StatefulSet is not owned by the StudioCluster"
    );
    let pvcs = [
        format!("data-{cluster}-0"),
        format!("data-{cluster}-arbiter-0"),
    ];
    for p in &pvcs {
        ensure!(
            env.api::<PersistentVolumeClaim>()
                .get_opt(p)
                .await?
                .is_some(),
            "claim {p} missing before deletion"
        );
    }
    ensure!(
        lease_holder(&env, cluster).await?.is_some(),
        "no Lease before deletion"
    );

    let t0 = Instant::now();
    env.kubectl(["delete", "studiocluster", cluster, "--timeout=60s"])?;
    wait_for(
        "every owned object gone",
        Duration::from_secs(120),
        || async {
            let mut left = owned_objects(&env, cluster, true)
                .await?
                .into_iter()
                .filter(|(_, found)| *found)
                .map(|(n, _)| n)
                .collect::<Vec<_>>();
            left.extend(
                cluster_pods(&env, cluster)
                    .await?
                    .iter()
                    .map(|p| format!("Pod/{}", name(p))),
            );
            for p in &pvcs {
                if env
                    .api::<PersistentVolumeClaim>()
                    .get_opt(p)
                    .await?
                    .is_some()
                {
                    left.push(format!("PersistentVolumeClaim/{p}"));
                }
            }
            if env
                .api::<Lease>()
                .get_opt(&format!("{cluster}-primary"))
                .await?
                .is_some()
            {
                left.push(format!("Lease/{cluster}-primary"));
            }
            if env
                .api::<ConfigMap>()
                .get_opt(&format!("{cluster}-bootstrap"))
                .await?
                .is_some()
            {
                left.push(format!("ConfigMap/{cluster}-bootstrap"));
            }
            if studio_api(&env).get_opt(cluster).await?.is_some() {
                left.push(format!("StudioCluster/{cluster}"));
            }
            ensure!(left.is_empty(), "still present: {}", join(left));
            Ok(())
        },
    )
    .await?;
    eprintln!(
        "[operator] TIMING StudioCluster deleted → every owned object gone {}",
        secs(t0.elapsed())
    );
    env.pass().await
}

/// (e) Killing the operator's leader: a standby takes the Lease over and reconciles (a
/// cluster created right after the kill becomes Ready).
#[tokio::test]
async fn killing_the_operator_leader_hands_over_to_the_standby() -> anyhow::Result<()> {
    operator().await?;
    let _exclusive = OPERATOR_GATE.write().await;
    let env = TestEnv::new("op-leader").await?;
    let ops: Api<Pod> = Api::namespaced(env.client.clone(), OPERATOR_NS);
    let t0 = Instant::now();
    let leader = kill_operator_leader(&env).await?;
    let cluster = "after";
    apply(
        &env,
        "after.json",
        &cluster_manifest(
            cluster,
            json!({"nodes": 1, "arbiter": {"enabled": false}, "replication": {"mode": "async", "syncReplicas": 1}}),
        ),
    )?;
    let new_leader = wait_new_operator_leader(&env, &leader).await?;
    let took_over = t0.elapsed();
    wait_ready(&env, cluster, 1, START).await?;
    eprintln!(
        "[operator] TIMING leader {leader} killed → {new_leader} holds the Lease {}; → a cluster applied after the kill is Ready {}",
        secs(took_over),
        secs(t0.elapsed())
    );
    // The new leader says so on /metrics.
    let new_pod = ops.get(&new_leader).await?;
    let ip = studio_e2e::pod_ip(&new_pod).context("new leader has no IP")?;
    let (code, body) = studio_harness::http(
        &studio_harness::http_client()?,
        reqwest::Method::GET,
        &format!("http://{ip}:8080/metrics"),
        None,
    )
    .await?;
    ensure!(
        code == 200 && body.lines().any(|l| l.trim() == "studio_operator_leader 1"),
        "the new leader's /metrics ({code}) does not report studio_operator_leader 1"
    );
    // The Deployment is back to 2 Ready replicas (a standby again).
    wait_operator_pods_ready(&env).await?;
    remove_scratch(&env);
    env.pass().await
}

/// (f) Scale 3 → 5 → 2 under a write load: no acknowledged write is lost, and the
/// primary (switched onto the highest ordinal first) is never removed while primary.
#[tokio::test]
async fn scaling_up_and_down_under_load_loses_no_acknowledged_write() -> anyhow::Result<()> {
    let env = OpEnv::new("op-scale").await?;
    let cluster = "sc";
    // The users' default (the shared test manifest deletes claims).
    let retain = json!({"storage": {"pvcRetention": "Retain"}});
    apply(&env, "sc.json", &cluster_manifest(cluster, retain))?;
    wait_ready(&env, cluster, 3, START).await?;
    wait_for("roles to agree", Duration::from_secs(30), || {
        roles_agree(&env, cluster, 3)
    })
    .await?;
    let content = Content::new(&env, cluster).await?;
    let recorder = PodRecorder::start(&env, cluster);
    let load = Load::start(&env, cluster, content.clone(), "load");
    wait_for(
        "the load to get writes acknowledged",
        Duration::from_secs(30),
        || async {
            ensure!(
                load.acked_count() >= 20,
                "{} acknowledged",
                load.acked_count()
            );
            Ok(())
        },
    )
    .await?;

    let t0 = Instant::now();
    patch_spec(&env, cluster, json!({"nodes": 5}))?;
    wait_ready(&env, cluster, 5, START).await?;
    wait_for(
        "roles to agree with 5 nodes",
        Duration::from_secs(60),
        || roles_agree(&env, cluster, 5),
    )
    .await?;
    let up = t0.elapsed();

    // Put the primary on a pod the scale-down removes.
    let target = format!("{cluster}-4");
    annotate(
        &env,
        cluster,
        &format!("studio.cms.io/switchover-to={target}"),
    )?;
    wait_for(
        &format!("{target} to become primary"),
        Duration::from_secs(60),
        || async {
            let (p, _) = roles_agree(&env, cluster, 5).await?;
            ensure!(p == target, "primary is {p}");
            Ok(())
        },
    )
    .await?;

    let t1 = Instant::now();
    patch_spec(&env, cluster, json!({"nodes": 2}))?;
    wait_for("2 data nodes, Ready, roles agreeing", START, || async {
        let st = status(&env, cluster).await?;
        ensure!(st.ready_now() && st.ready_nodes == 2, "{}", st.summary());
        let pods = cluster_pods(&env, cluster).await?;
        let data: Vec<String> = pods
            .iter()
            .map(name)
            .filter(|n| !is_arbiter(cluster, n))
            .collect();
        ensure!(
            data == [format!("{cluster}-0"), format!("{cluster}-1")],
            "data pods {data:?}"
        );
        roles_agree(&env, cluster, 2).await
    })
    .await?;
    let down = t1.elapsed();
    // pvcRetention Retain: the removed nodes' data stays for a later scale-up.
    for i in 2..5 {
        let claim = format!("data-{cluster}-{i}");
        ensure!(
            env.api::<PersistentVolumeClaim>()
                .get_opt(&claim)
                .await?
                .is_some(),
            "claim {claim} was deleted on scale-down although pvcRetention is Retain"
        );
    }
    let before = load.acked_count();
    wait_for(
        "more writes acknowledged after the scale-down",
        Duration::from_secs(30),
        || async {
            ensure!(
                load.acked_count() >= before + 20,
                "{} acknowledged",
                load.acked_count()
            );
            Ok(())
        },
    )
    .await?;
    let (acked, errors) = load.stop().await;
    eprintln!(
        "[operator] TIMING scale 3→5 Ready {}; 5→2 Ready {}; {} writes acknowledged, {} errors{}",
        secs(up),
        secs(down),
        acked.len(),
        errors.len(),
        errors
            .first()
            .map(|(_, e)| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    verify_acked(&env, cluster, &content, &acked).await?;

    // No pod was marked for deletion while labelled primary; the primary moved off
    // the highest ordinal before it was removed.
    let events = recorder.snapshot();
    let deleted_primaries: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            PodEvent::Deleting { pod, role, .. } if role == "primary" => Some(pod.clone()),
            _ => None,
        })
        .collect();
    ensure!(
        deleted_primaries.is_empty(),
        "pods removed while primary: {deleted_primaries:?}; events {events:?}"
    );
    ensure!(
        events
            .iter()
            .any(|e| matches!(e, PodEvent::Deleting { pod, .. } if *pod == target)),
        "{target} was never removed: {events:?}"
    );
    // Events tell the story: scaling both ways, the switchover off the removed pod.
    wait_for(
        "Scaling and Switchover Events",
        Duration::from_secs(30),
        || async {
            let ev = cluster_events(&env, cluster).await?;
            let has =
                |reason: &str, text: &str| ev.iter().any(|(r, m)| r == reason && m.contains(text));
            ensure!(
                has("Scaling", "3 → 5") && has("Scaling", "5 → 2") && has("Switchover", &target),
                "events: {ev:?}"
            );
            Ok(())
        },
    )
    .await?;
    env.pass().await
}

/// (g) A new image tag: a rolling upgrade in the order replicas (and arbiter) → one
/// switchover → old primary, with write errors only around the switchover.
#[tokio::test]
async fn image_change_rolls_replicas_then_switches_over_then_the_old_primary() -> anyhow::Result<()>
{
    let env = OpEnv::new("op-upgrade").await?;
    let cluster = "up";
    apply(&env, "up.json", &cluster_manifest(cluster, json!({})))?;
    wait_ready(&env, cluster, 3, START).await?;
    let (old_primary, _) = wait_for("roles to agree", Duration::from_secs(30), || {
        roles_agree(&env, cluster, 3)
    })
    .await?;
    let before = pod_table(&env, cluster).await?;
    let content = Content::new(&env, cluster).await?;
    let recorder = PodRecorder::start(&env, cluster);
    let load = Load::start(&env, cluster, content.clone(), "load");
    wait_for(
        "the load to get writes acknowledged",
        Duration::from_secs(30),
        || async {
            ensure!(
                load.acked_count() >= 20,
                "{} acknowledged",
                load.acked_count()
            );
            Ok(())
        },
    )
    .await?;

    let t0 = Instant::now();
    patch_spec(&env, cluster, json!({"image": node_image_v2()}))?;
    wait_for(
        "every pod on the new image, Ready",
        Duration::from_secs(300),
        || async {
            let st = status(&env, cluster).await?;
            ensure!(st.ready_now() && st.ready_nodes == 3, "{}", st.summary());
            let pods = cluster_pods(&env, cluster).await?;
            let old: Vec<String> = pods
                .iter()
                .filter(|p| image_of(p) != node_image_v2() || !is_ready(p))
                .map(name)
                .collect();
            ensure!(
                pods.len() == 4 && old.is_empty(),
                "not upgraded or not ready: {old:?}"
            );
            roles_agree(&env, cluster, 3).await
        },
    )
    .await?;
    let upgraded = t0.elapsed();
    let (acked, errors) = load.stop().await;
    verify_acked(&env, cluster, &content, &acked).await?;

    let events = recorder.snapshot();
    let after = pod_table(&env, cluster).await?;
    for (pod, (uid, _, _)) in &before {
        ensure!(
            after.get(pod).is_some_and(|(u, _, _)| u != uid),
            "{pod} was not restarted: {events:?}"
        );
    }
    // The first primary change after the patch, and the deletions around it.
    let flip = events.iter().find_map(|e| match e {
        PodEvent::PrimaryLabel { pod, at } if *pod != old_primary && *at > t0 => {
            Some((pod.clone(), *at))
        }
        _ => None,
    });
    let Some((new_primary, flip_at)) = flip else {
        bail!("the primary never changed: {events:?}");
    };
    let deletions: Vec<(String, String, Instant)> = events
        .iter()
        .filter_map(|e| match e {
            PodEvent::Deleting { pod, role, at, .. } if *at > t0 => {
                Some((pod.clone(), role.clone(), *at))
            }
            _ => None,
        })
        .collect();
    let order = join(deletions.iter().map(|(p, r, at)| {
        format!(
            "{p} (labelled {r}) at {} {} the switchover",
            secs(at.saturating_duration_since(t0)),
            if *at < flip_at { "before" } else { "after" }
        )
    }));
    eprintln!(
        "[operator] upgrade order (switchover to {new_primary} at {}): {order}",
        secs(flip_at.saturating_duration_since(t0))
    );
    ensure!(
        deletions.iter().all(|(_, role, _)| role != "primary"),
        "a pod was restarted while primary: {order}"
    );
    let (before_flip, after_flip): (Vec<_>, Vec<_>) =
        deletions.iter().partition(|(_, _, at)| *at < flip_at);
    ensure!(
        before_flip.iter().all(|(p, _, _)| *p != old_primary)
            && before
                .keys()
                .filter(|p| **p != old_primary)
                .all(|p| before_flip.iter().any(|(d, _, _)| d == p)),
        "every replica and the arbiter must restart before the switchover, the old primary not: {order}"
    );
    ensure!(
        after_flip
            .iter()
            .map(|(p, _, _)| p.as_str())
            .collect::<Vec<_>>()
            == [old_primary.as_str()],
        "after the switchover only the old primary {old_primary} restarts: {order}"
    );
    let primary_changes = events
        .iter()
        .filter(|e| matches!(e, PodEvent::PrimaryLabel { at, .. } if *at > t0))
        .count();
    ensure!(
        primary_changes == 1,
        "{primary_changes} primary changes: {events:?}"
    );

    // Write errors only inside the switchover gap.
    let gap = Duration::from_secs(12);
    let outside: Vec<String> = errors
        .iter()
        .filter(|(at, _)| *at + gap < flip_at || *at > flip_at + gap)
        .map(|(at, e)| format!("{} {e}", secs(at.saturating_duration_since(t0))))
        .collect();
    let window = match (errors.first(), errors.last()) {
        (Some((a, _)), Some((b, _))) => secs(b.saturating_duration_since(*a)),
        _ => "none".into(),
    };
    eprintln!(
        "[operator] TIMING image change → every pod upgraded and Ready {}; {} writes acknowledged, {} errors spanning {window}",
        secs(upgraded),
        acked.len(),
        errors.len()
    );
    ensure!(
        outside.is_empty(),
        "write errors outside the switchover (±{}s of {}): {outside:?}",
        gap.as_secs(),
        secs(flip_at.saturating_duration_since(t0))
    );
    // Events: one Upgrade per restarted pod, the switchover and its outcome.
    wait_for(
        "Upgrade and switchover Events",
        Duration::from_secs(30),
        || async {
            let ev = cluster_events(&env, cluster).await?;
            let upgrades = ev.iter().filter(|(r, _)| r == "Upgrade").count();
            ensure!(
                upgrades >= before.len()
                    && ev
                        .iter()
                        .any(|(r, m)| r == "Switchover" && m.contains(&new_primary))
                    && ev
                        .iter()
                        .any(|(r, m)| r == "SwitchedOver" && m.contains(&new_primary)),
                "{upgrades} Upgrade events for {} pods; events: {ev:?}",
                before.len()
            );
            Ok(())
        },
    )
    .await?;
    env.pass().await
}

/// A role label that disagrees with the Lease (a replica labelled primary, which puts it
/// behind the `-primary` Service) is repaired: by the node itself when it runs, and by
/// the operator, with an Event, when the node cannot (here: its process is stopped).
#[tokio::test]
async fn a_role_label_disagreeing_with_the_lease_is_repaired() -> anyhow::Result<()> {
    let env = OpEnv::new("op-labels").await?;
    let cluster = "lbl";
    apply(
        &env,
        "lbl.json",
        &cluster_manifest(
            cluster,
            json!({"nodes": 2, "arbiter": {"enabled": false}, "replication": {"mode": "async", "syncReplicas": 1}}),
        ),
    )?;
    wait_ready(&env, cluster, 2, START).await?;
    let (primary, _) = wait_for("roles to agree", Duration::from_secs(30), || {
        roles_agree(&env, cluster, 2)
    })
    .await?;
    let replica = if primary == format!("{cluster}-0") {
        format!("{cluster}-1")
    } else {
        format!("{cluster}-0")
    };
    let mislabel = || {
        env.kubectl([
            "label",
            "pod",
            &replica,
            &format!("{ROLE}=primary"),
            "--overwrite",
        ])
    };

    // A running node corrects its own label.
    let t0 = Instant::now();
    mislabel()?;
    wait_for(
        "the running node to correct its label",
        Duration::from_secs(30),
        || roles_agree(&env, cluster, 2),
    )
    .await?;
    let by_node = t0.elapsed();

    // A hung node cannot: the operator repairs the label against the Lease.
    let pod = env.api::<Pod>().get(&replica).await?;
    let stopped = Stopped::new(pod_pids(&pod)?)?;
    let t1 = Instant::now();
    mislabel()?;
    wait_for(
        "the operator to repair the label of the stopped node",
        Duration::from_secs(30),
        || async {
            let p = env.api::<Pod>().get(&replica).await?;
            ensure!(
                role_of(&p) == "replica",
                "{replica} labelled {:?}",
                role_of(&p)
            );
            let ev = cluster_events(&env, cluster).await?;
            ensure!(
                ev.iter()
                    .any(|(r, m)| r == "RoleLabelsRepaired" && m.contains(&replica)),
                "no RoleLabelsRepaired Event naming {replica}: {ev:?}"
            );
            Ok(())
        },
    )
    .await?;
    let by_operator = t1.elapsed();
    drop(stopped);
    let (after, _) = wait_for(
        "roles to agree once the node runs again",
        Duration::from_secs(60),
        || roles_agree(&env, cluster, 2),
    )
    .await?;
    ensure!(
        after == primary,
        "the primary moved from {primary} to {after}"
    );
    eprintln!(
        "[operator] TIMING wrong role label on {replica}: corrected by the running node {}; by the operator for a stopped node {}",
        secs(by_node),
        secs(by_operator)
    );
    env.pass().await
}

/// The shipped supervised-upgrades example: on an image change the replicas are
/// restarted and the operator waits (WaitingForUser) with the primary untouched;
/// `kubectl studio promote` finishes the upgrade (switchover, then the old primary).
/// Pod overrides (labels) reach the pods; `kubectl studio status` shows the result.
#[tokio::test]
async fn supervised_upgrade_waits_for_kubectl_studio_promote() -> anyhow::Result<()> {
    let env = OpEnv::new("op-supervised").await?;
    let cluster = "studio-supervised";
    let manifest = mapped_example(&env.cluster.repo, "examples/supervised-upgrades.yaml")?;
    apply(&env, "supervised.yaml", &manifest)?;
    wait_ready(&env, cluster, 3, START).await?;
    let (old_primary, _) = wait_for("roles to agree", Duration::from_secs(30), || {
        roles_agree(&env, cluster, 3)
    })
    .await?;
    ensure!(
        old_primary != format!("{cluster}-2"),
        "{cluster}-2 has election priority 0 but became primary"
    );
    let pods = cluster_pods(&env, cluster).await?;
    ensure!(
        pods.iter().all(|p| p
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("team"))
            .is_some_and(|v| v == "web")),
        "spec.pod.labels (team: web) missing on some pods"
    );
    let before = pod_table(&env, cluster).await?;

    patch_spec(&env, cluster, json!({"image": node_image_v2()}))?;
    wait_for(
        "the replicas upgraded and the operator waiting for the user",
        Duration::from_secs(240),
        || async {
            let st = status(&env, cluster).await?;
            ensure!(st.phase == "WaitingForUser", "{}", st.summary());
            let pods = cluster_pods(&env, cluster).await?;
            for p in &pods {
                let n = name(p);
                if n == old_primary {
                    ensure!(
                        image_of(p) == node_image() && role_of(p) == "primary",
                        "the primary {n} was touched: image {} role {}",
                        image_of(p),
                        role_of(p)
                    );
                    ensure!(
                        before.get(&n).map(|b| &b.0) == p.metadata.uid.as_ref(),
                        "the primary {n} was restarted"
                    );
                } else {
                    ensure!(
                        image_of(p) == node_image_v2() && is_ready(p),
                        "{n} not upgraded yet"
                    );
                }
            }
            Ok(())
        },
    )
    .await?;

    let target = if old_primary == format!("{cluster}-0") {
        format!("{cluster}-1")
    } else {
        format!("{cluster}-0")
    };
    let plugin = env.cluster.target_dir.join("kubectl-studio");
    let out = std::process::Command::new(&plugin)
        .env("KUBECONFIG", &env.cluster.kubeconfig)
        .args(["-n", &env.ns, "promote", cluster, &target])
        .output()
        .with_context(|| format!("running {}", plugin.display()))?;
    ensure!(
        out.status.success(),
        "kubectl studio promote failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t0 = Instant::now();
    wait_for(
        "the upgrade to finish on the promoted primary",
        Duration::from_secs(180),
        || async {
            let (p, _) = roles_agree(&env, cluster, 3).await?;
            ensure!(p == target, "primary is {p}, not {target}");
            let pods = cluster_pods(&env, cluster).await?;
            ensure!(
                pods.iter()
                    .all(|p| image_of(p) == node_image_v2() && is_ready(p)),
                "not all pods upgraded and ready"
            );
            let old = pods.iter().find(|p| name(p) == old_primary);
            ensure!(
                old.is_some_and(
                    |p| before.get(&old_primary).map(|b| &b.0) != p.metadata.uid.as_ref()
                ),
                "the old primary {old_primary} was not restarted"
            );
            Ok(())
        },
    )
    .await?;
    eprintln!(
        "[operator] TIMING kubectl studio promote {target} → upgrade finished {}",
        secs(t0.elapsed())
    );
    let out = std::process::Command::new(&plugin)
        .env("KUBECONFIG", &env.cluster.kubeconfig)
        .args(["-n", &env.ns, "status", cluster])
        .output()
        .with_context(|| format!("running {}", plugin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    ensure!(
        out.status.success()
            && text.contains(&format!("Primary:      {target}"))
            && text.contains(&format!("switchover {old_primary} → {target}"))
            && text.lines().filter(|l| l.starts_with(cluster)).count() == 3,
        "kubectl studio status: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.pass().await
}
