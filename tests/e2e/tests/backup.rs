//! Backups on the real cluster against a real S3 server (versitygw, started by the
//! harness on the cluster's bridge): continuous archiving while the primary is killed,
//! a StudioBackup taken from a standby, restores into new clusters (latest, a seq, a
//! time, a target the archive does not cover), an object store outage, and a
//! StudioScheduledBackup with retention and back-off.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use reqwest::Method;
use serde_json::{Value, json};
use studio_e2e::history::NodeAccess;
use studio_harness::s3::S3Server;
use studio_harness::{TestEnv, pod_pids, wait_for};

use common::*;

const ARCHIVE_PATH: &str = "e2e";

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "studio.cms.io".into(),
        version: "v1alpha1".into(),
        api_version: "studio.cms.io/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn backups(env: &TestEnv) -> Api<DynamicObject> {
    Api::namespaced_with(
        env.client.clone(),
        &env.ns,
        &resource("StudioBackup", "studiobackups"),
    )
}

/// The Secret with the object store's keys, and `spec.backup` pointing at `s3`.
async fn backup_spec(env: &TestEnv, s3: &S3Server, extra: Value) -> anyhow::Result<Value> {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "s3-creds"},
        "stringData": {"ACCESS_KEY_ID": s3.access_key_id(), "SECRET_ACCESS_KEY": s3.secret_access_key()}
    }))?;
    if env.api::<Secret>().get_opt("s3-creds").await?.is_none() {
        env.api::<Secret>()
            .create(&PostParams::default(), &secret)
            .await?;
    }
    let mut spec = json!({
        "objectStore": {
            "endpoint": s3.endpoint_for_pods(),
            "bucket": s3.bucket(),
            "path": ARCHIVE_PATH,
            "credentials": {"secretName": "s3-creds"}
        },
        "archiveTimeoutSeconds": 2
    });
    merge(&mut spec, &extra);
    Ok(spec)
}

/// A restored cluster: one node, async, TLS, the same object store.
fn restored_manifest(name: &str, backup: &Value, recovery: Value) -> String {
    cluster_manifest(
        name,
        json!({
            "nodes": 1,
            "arbiter": {"enabled": false},
            "replication": {"mode": "async", "syncReplicas": null},
            "backup": backup,
            "bootstrap": {"recovery": recovery}
        }),
    )
}

async fn primary(env: &TestEnv, cluster: &str) -> anyhow::Result<Ipv4Addr> {
    wait_for("a Ready primary", Duration::from_secs(90), || async {
        primary_ip(env, cluster)
            .await?
            .ok_or_else(|| anyhow!("no Ready pod labelled primary"))
    })
    .await
}

async fn member_get(access: &NodeAccess, ip: Ipv4Addr, path: &str) -> anyhow::Result<Value> {
    let r = access
        .as_member(ip, path, Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("GET {path} on {ip}"))?;
    let code = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    ensure!(code.is_success(), "GET {path} on {ip}: {code} {body}");
    Ok(body)
}

/// (digest, seq) of the primary.
async fn digest(env: &TestEnv, cluster: &str) -> anyhow::Result<(String, u64)> {
    let access = node_access(env, cluster).await?;
    let ip = primary(env, cluster).await?;
    let d = member_get(&access, ip, "/internal/v1/admin/digest").await?;
    Ok((
        d["digest"].as_str().context("digest")?.to_string(),
        d["seq"].as_u64().context("seq")?,
    ))
}

/// The seq the primary's restore ended at (its `restore` status, Completed).
async fn restored_seq(env: &TestEnv, cluster: &str) -> anyhow::Result<u64> {
    let access = node_access(env, cluster).await?;
    let ip = primary(env, cluster).await?;
    let s = member_get(&access, ip, "/api/v1/cluster/status").await?;
    ensure!(
        s["restore"]["phase"] == "Completed",
        "{cluster}: restore {}",
        s["restore"]
    );
    s["restore"]["restoredSeq"].as_u64().context("restoredSeq")
}

/// Waits until the primary has archived everything it holds; returns that seq.
async fn wait_archived(env: &TestEnv, cluster: &str) -> anyhow::Result<u64> {
    let access = node_access(env, cluster).await?;
    wait_for(
        "the archive to catch up with the primary",
        Duration::from_secs(120),
        || async {
            let ip = primary(env, cluster).await?;
            let s = member_get(&access, ip, "/api/v1/cluster/status").await?;
            let a = &s["archive"];
            let (seq, archived) = (s["seq"].as_u64(), a["archivedSeq"].as_u64());
            if archived.is_some() && archived == seq && a["lastError"].is_null() {
                Ok(seq.unwrap_or(0))
            } else {
                bail!("seq {seq:?}, archive {a}")
            }
        },
    )
    .await
}

async fn upload(access: &NodeAccess, ip: Ipv4Addr, data: Vec<u8>) -> anyhow::Result<String> {
    let r = access
        .as_user(
            Method::POST,
            ip,
            "/api/v1/binaries",
            Duration::from_secs(30),
        )
        .body(data)
        .send()
        .await?;
    ensure!(r.status().is_success(), "upload: {}", r.status());
    let v: Value = r.json().await?;
    Ok(v["sha256"].as_str().context("sha256")?.to_string())
}

async fn create_backup(env: &TestEnv, name: &str, cluster: &str) -> anyhow::Result<()> {
    let b: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "studio.cms.io/v1alpha1",
        "kind": "StudioBackup",
        "metadata": {"name": name},
        "spec": {"cluster": cluster}
    }))?;
    backups(env).create(&PostParams::default(), &b).await?;
    Ok(())
}

async fn wait_backup(env: &TestEnv, name: &str) -> anyhow::Result<Value> {
    wait_for(
        &format!("StudioBackup {name} Completed"),
        Duration::from_secs(180),
        || async {
            let b = backups(env).get(name).await?;
            let st = b.data.get("status").cloned().unwrap_or(Value::Null);
            match st["phase"].as_str() {
                Some("Completed") => Ok(st),
                Some("Failed") => Err(anyhow!("StudioBackup {name} failed: {st}")),
                _ => bail!("{st}"),
            }
        },
    )
    .await
}

async fn cluster_id(env: &TestEnv, cluster: &str) -> anyhow::Result<String> {
    let obj = studio_api(env).get(cluster).await?;
    obj.data["status"]["clusterId"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| anyhow!("{cluster} has no status.clusterId"))
}

/// Waits until the cluster's `ContinuousArchiving` condition has `status`; returns it.
async fn archiving_condition(
    env: &TestEnv,
    cluster: &str,
    status: &str,
    timeout: Duration,
) -> anyhow::Result<Value> {
    wait_for(
        &format!("ContinuousArchiving {status}"),
        timeout,
        || async {
            let c = condition(env, cluster, "ContinuousArchiving").await?;
            if c["status"] == status {
                Ok(c)
            } else {
                bail!("{c}")
            }
        },
    )
    .await
}

/// The condition `type` of a StudioCluster.
async fn condition(env: &TestEnv, cluster: &str, ty: &str) -> anyhow::Result<Value> {
    let obj = studio_api(env).get(cluster).await?;
    Ok(obj.data["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty))
        .cloned()
        .unwrap_or(Value::Null))
}

#[tokio::test]
async fn restores_bring_back_every_acknowledged_write_at_latest_a_seq_and_a_time()
-> anyhow::Result<()> {
    let env = OpEnv::new("backup-restore").await?;
    let s3 = S3Server::start("e2e-restore").await?;
    let backup = backup_spec(&env, &s3, json!({})).await?;
    apply(
        &env,
        "src.yaml",
        &cluster_manifest("src", json!({"backup": backup})),
    )?;
    wait_ready(&env, "src", 3, Duration::from_secs(240)).await?;
    let access = node_access(&env, "src").await?;
    let ip = primary(&env, "src").await?;

    // Binaries and items referencing them.
    let mut blobs = Vec::new();
    for i in 0..3u32 {
        let data: Vec<u8> = (0..300_000u32)
            .map(|j| (j.wrapping_mul(31) ^ i) as u8)
            .collect();
        let sha = upload(&access, ip, data.clone()).await?;
        let r = access
            .as_user(
                Method::PUT,
                ip,
                &format!("/api/v1/content/files/f{i}"),
                Duration::from_secs(10),
            )
            .json(&json!({"type": "asset", "properties": {"file": {"$binary": sha}}}))
            .send()
            .await?;
        ensure!(r.status().is_success(), "PUT files/f{i}: {}", r.status());
        blobs.push((sha, data));
    }

    // Writes under load; a base backup from a standby meanwhile; then kill -9 the
    // primary while writes and archiving go on.
    let content = Content::new(&env, "src").await?;
    let load = Load::start(&env, "src", content.clone(), "one");
    wait_for(
        "100 acknowledged writes",
        Duration::from_secs(120),
        || async {
            (load.acked_count() >= 100)
                .then_some(())
                .ok_or_else(|| anyhow!("{} acked", load.acked_count()))
        },
    )
    .await?;
    create_backup(&env, "src-base", "src").await?;
    let b = wait_backup(&env, "src-base").await?;
    let took = b["node"].as_str().unwrap_or_default().to_string();
    let primary_pod = status(&env, "src")
        .await?
        .current_primary
        .unwrap_or_default();
    ensure!(
        !took.is_empty() && took != primary_pod,
        "prefer-standby: the backup was taken by {took:?}, the primary is {primary_pod}"
    );
    ensure!(b["seq"].as_i64().unwrap_or(0) > 0, "{b}");
    let before_kill = load.acked_count();
    let pod = cluster_pods(&env, "src")
        .await?
        .into_iter()
        .find(|p| role_of(p) == "primary")
        .context("no primary pod")?;
    for pid in pod_pids(&pod)? {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )?;
    }
    wait_for(
        "writes after the failover",
        Duration::from_secs(120),
        || async {
            (load.acked_count() >= before_kill + 150)
                .then_some(())
                .ok_or_else(|| anyhow!("{} acked", load.acked_count()))
        },
    )
    .await?;
    let (phase1, _) = load.stop().await;

    // A cut point: no writer, a marker, its seq and a time after it.
    let ip = primary(&env, "src").await?;
    content.put(ip, "marker/mid", "mid").await?;
    let seq_mid = wait_archived(&env, "src").await?;
    let time_mid = chrono_now_ms();
    wait_for(
        "the clock to pass the cut",
        Duration::from_secs(5),
        || async {
            (chrono_now_ms() > time_mid)
                .then_some(())
                .ok_or_else(|| anyhow!("same ms"))
        },
    )
    .await?;
    let load = Load::start(&env, "src", content.clone(), "two");
    wait_for("100 more writes", Duration::from_secs(120), || async {
        (load.acked_count() >= 100)
            .then_some(())
            .ok_or_else(|| anyhow!("{} acked", load.acked_count()))
    })
    .await?;
    let (phase2, _) = load.stop().await;
    let seq_end = wait_archived(&env, "src").await?;
    let (src_digest, src_seq) = digest(&env, "src").await?;
    ensure!(
        src_seq == seq_end,
        "digest at {src_seq}, archived {seq_end}"
    );
    let src_id = cluster_id(&env, "src").await?;
    eprintln!(
        "[backup] src {src_id}: base backup at {}, cut at seq {seq_mid}, end {seq_end}; {} + {} acknowledged writes",
        b["seq"],
        phase1.len(),
        phase2.len()
    );

    // Latest: the same digest, every acknowledged write, binaries byte-identical.
    apply(
        &env,
        "latest.yaml",
        &restored_manifest("latest", &backup, json!({"cluster": "src"})),
    )?;
    wait_ready(&env, "latest", 1, Duration::from_secs(240)).await?;
    // The same content; the journal ends where the archive did (the new primary's
    // own term-start entry follows it).
    let (latest_digest, _) = digest(&env, "latest").await?;
    ensure!(
        latest_digest == src_digest,
        "latest: digest {latest_digest}, the source's {src_digest}"
    );
    ensure!(
        restored_seq(&env, "latest").await? == seq_end,
        "latest did not restore to seq {seq_end}"
    );
    let latest = Content::new(&env, "latest").await?;
    verify_acked(&env, "latest", &latest, &phase1).await?;
    verify_acked(&env, "latest", &latest, &phase2).await?;
    let la = node_access(&env, "latest").await?;
    let lip = primary(&env, "latest").await?;
    for (sha, data) in &blobs {
        let r = la
            .as_user(
                Method::GET,
                lip,
                &format!("/api/v1/binaries/{sha}"),
                Duration::from_secs(30),
            )
            .send()
            .await?;
        ensure!(r.status().is_success(), "binary {sha}: {}", r.status());
        ensure!(r.bytes().await?[..] == data[..], "binary {sha} differs");
    }
    let latest_id = cluster_id(&env, "latest").await?;
    ensure!(
        latest_id != src_id,
        "the restored cluster kept the source's id"
    );
    // Its own archive folder, beside the source's.
    let root = s3.data_dir().join(s3.bucket()).join(ARCHIVE_PATH);
    wait_for(
        "the restored cluster's own archive",
        Duration::from_secs(60),
        || async {
            root.join(&latest_id)
                .join("timeline")
                .is_dir()
                .then_some(())
                .ok_or_else(|| anyhow!("no {latest_id}/timeline yet"))
        },
    )
    .await?;

    // To the cut, by seq and by time: phase 1 and the marker, nothing of phase 2.
    for (name, recovery) in [
        ("at-seq", json!({"cluster": "src", "targetSeq": seq_mid})),
        (
            "at-time",
            json!({"clusterId": src_id, "targetTime": ms_to_rfc3339(time_mid)}),
        ),
    ] {
        apply(
            &env,
            &format!("{name}.yaml"),
            &restored_manifest(name, &backup, recovery),
        )?;
        wait_ready(&env, name, 1, Duration::from_secs(240)).await?;
        ensure!(
            restored_seq(&env, name).await? == seq_mid,
            "{name}: not at seq {seq_mid}"
        );
        let c = Content::new(&env, name).await?;
        verify_acked(&env, name, &c, &phase1).await?;
        let ip = primary(&env, name).await?;
        ensure!(
            c.get(ip, "marker/mid").await?.as_deref() == Some("mid"),
            "{name}: no marker"
        );
        for (path, _) in phase2.iter().take(50) {
            ensure!(
                c.get(ip, path).await?.is_none(),
                "{name}: {path} written after the cut is present"
            );
        }
    }

    // A target the archive does not cover: refused, said so, never Ready.
    apply(
        &env,
        "beyond.yaml",
        &restored_manifest(
            "beyond",
            &backup,
            json!({"cluster": "src", "targetSeq": seq_end + 100_000}),
        ),
    )?;
    let refused = wait_for(
        "the refused restore in the status",
        Duration::from_secs(180),
        || async {
            let c = condition(&env, "beyond", "Ready").await?;
            if c["reason"] == "RestoreFailed" {
                Ok(c)
            } else {
                bail!("Ready: {c}")
            }
        },
    )
    .await?;
    let msg = refused["message"].as_str().unwrap_or_default();
    ensure!(
        msg.contains(&format!("the archive ends at seq {seq_end}")),
        "message: {msg}"
    );
    ensure!(
        !status(&env, "beyond").await?.ready_now(),
        "a refused restore is Ready"
    );
    env.pass().await
}

#[tokio::test]
async fn archiving_survives_an_object_store_outage() -> anyhow::Result<()> {
    let env = OpEnv::new("backup-outage").await?;
    let mut s3 = S3Server::start("e2e-outage").await?;
    let backup = backup_spec(&env, &s3, json!({})).await?;
    apply(
        &env,
        "c.yaml",
        &cluster_manifest("c", json!({"backup": backup})),
    )?;
    wait_ready(&env, "c", 3, Duration::from_secs(240)).await?;
    archiving_condition(&env, "c", "True", Duration::from_secs(120)).await?;
    let content = Content::new(&env, "c").await?;
    let load = Load::start(&env, "c", content.clone(), "w");
    wait_archived(&env, "c").await.ok();
    s3.stop()?;
    let stopped_at = std::time::Instant::now();
    let acked_at_stop = load.acked_count();
    let down = archiving_condition(&env, "c", "False", Duration::from_secs(90)).await?;
    ensure!(down["reason"] == "ArchivingFailing", "{down}");
    wait_cluster_event(&env, "c", "ArchivingFailing", Duration::from_secs(30)).await?;
    // The object store stays down 60 s; writes go on.
    wait_for("60 s of outage", Duration::from_secs(70), || async {
        (stopped_at.elapsed() >= Duration::from_secs(60))
            .then_some(())
            .ok_or_else(|| anyhow!("waiting"))
    })
    .await?;
    ensure!(
        load.acked_count() > acked_at_stop + 50,
        "writes stalled during the outage: {} → {}",
        acked_at_stop,
        load.acked_count()
    );
    s3.start_again().await?;
    archiving_condition(&env, "c", "True", Duration::from_secs(120)).await?;
    let (acked, _) = load.stop().await;
    let archived = wait_archived(&env, "c").await?;
    let (_, seq) = digest(&env, "c").await?;
    ensure!(archived == seq, "archived {archived}, primary at {seq}");
    verify_acked(&env, "c", &content, &acked).await?;
    wait_cluster_event(&env, "c", "ArchivingRecovered", Duration::from_secs(30)).await?;
    env.pass().await
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 in UTC with milliseconds, from ms since the epoch.
fn ms_to_rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

fn schedules(env: &TestEnv) -> Api<DynamicObject> {
    Api::namespaced_with(
        env.client.clone(),
        &env.ns,
        &resource("StudioScheduledBackup", "studioscheduledbackups"),
    )
}

/// (name, created, phase) of every StudioBackup, oldest first.
async fn backup_runs(env: &TestEnv) -> anyhow::Result<Vec<(String, String, String)>> {
    let mut v: Vec<(String, String, String)> = backups(env)
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .map(|b| {
            let created = b
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default();
            let phase = b.data["status"]["phase"].as_str().unwrap_or("").to_string();
            (b.metadata.name.unwrap_or_default(), created, phase)
        })
        .collect();
    v.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(v)
}

#[tokio::test]
async fn scheduled_backups_run_on_schedule_prune_by_retention_and_back_off() -> anyhow::Result<()> {
    let env = OpEnv::new("backup-schedule").await?;
    let mut s3 = S3Server::start("e2e-schedule").await?;
    let backup = backup_spec(&env, &s3, json!({"retention": {"maxCount": 2}})).await?;
    // One data node and the arbiter: the arbiter is the standby that takes backups.
    let spec = json!({"nodes": 1, "replication": {"mode": "async", "syncReplicas": null}, "backup": backup});
    apply(&env, "s.yaml", &cluster_manifest("s", spec))?;
    wait_ready(&env, "s", 1, Duration::from_secs(240)).await?;
    let content = Content::new(&env, "s").await?;
    let ip = primary(&env, "s").await?;
    content.put(ip, "a/b", "c").await?;
    let sched: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "studio.cms.io/v1alpha1",
        "kind": "StudioScheduledBackup",
        "metadata": {"name": "every20s"},
        "spec": {"cluster": "s", "schedule": "*/20 * * * * *", "immediate": true}
    }))?;
    schedules(&env)
        .create(&PostParams::default(), &sched)
        .await?;

    // On schedule: the immediate run plus two scheduled ones complete.
    let runs = wait_for(
        "three completed scheduled backups",
        Duration::from_secs(180),
        || async {
            let runs = backup_runs(&env).await?;
            let done = runs.iter().filter(|r| r.2 == "Completed").count();
            if done >= 3 {
                Ok(runs)
            } else {
                bail!("{runs:?}")
            }
        },
    )
    .await?;
    ensure!(
        runs.iter().all(|r| r.0.starts_with("every20s-")),
        "{runs:?}"
    );
    // Retention keeps two base backups in the archive.
    let id = cluster_id(&env, "s").await?;
    let base = s3
        .data_dir()
        .join(s3.bucket())
        .join(ARCHIVE_PATH)
        .join(&id)
        .join("base");
    wait_for(
        "retention to keep 2 base backups",
        Duration::from_secs(120),
        || async {
            let n = std::fs::read_dir(&base)
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.path().join("manifest.json").is_file())
                        .count()
                })
                .unwrap_or(0);
            if n == 2 {
                Ok(())
            } else {
                bail!("{n} base backups in {}", base.display())
            }
        },
    )
    .await?;

    // The object store goes away for 80 s: runs fail, at most one per period, with
    // the schedule backing off; after it returns, one run, not a burst of catch-ups.
    s3.stop()?;
    let before = backup_runs(&env).await?.len();
    let stopped = std::time::Instant::now();
    let saw_backoff = std::sync::atomic::AtomicBool::new(false);
    wait_for("80 s of outage", Duration::from_secs(100), || async {
        let s = schedules(&env).get("every20s").await?;
        if s.data["status"]["consecutiveFailures"]
            .as_i64()
            .unwrap_or(0)
            > 0
        {
            saw_backoff.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if stopped.elapsed() >= Duration::from_secs(80) {
            Ok(())
        } else {
            bail!("waiting")
        }
    })
    .await?;
    let during = backup_runs(&env).await?;
    let created = during.len() - before;
    ensure!(
        created <= 5,
        "{created} backups created in 80 s of outage with a 20 s schedule: {during:?}"
    );
    ensure!(
        during.iter().any(|r| r.2 == "Failed"),
        "no failed run during the outage: {during:?}"
    );
    ensure!(
        saw_backoff.load(std::sync::atomic::Ordering::Relaxed),
        "the schedule never counted a failure"
    );
    s3.start_again().await?;
    let back = std::time::Instant::now();
    let n_back = backup_runs(&env).await?.len();
    wait_for(
        "a completed run after the outage",
        Duration::from_secs(180),
        || async {
            let runs = backup_runs(&env).await?;
            if runs.iter().skip(n_back).any(|r| r.2 == "Completed") {
                Ok(())
            } else {
                bail!("{runs:?}")
            }
        },
    )
    .await?;
    let after = backup_runs(&env).await?.len() - n_back;
    let periods = back.elapsed().as_secs() / 20 + 1;
    ensure!(
        after as u64 <= periods,
        "{after} runs in {} s after the outage: a burst",
        back.elapsed().as_secs()
    );
    env.pass().await
}
