//! The controllers' reconcile steps against a mock API server (no node is called on
//! these paths).

use std::sync::{Arc, Mutex};

use http::{Request, Response};
use http_body_util::BodyExt;
use kube::Client;
use kube::client::Body;
use kube::runtime::events::Reporter;
use serde_json::{Value, json};
use studio_crds::{StudioBackup, StudioScheduledBackup};
use tower_test::mock;

use super::BackupContext;
use super::manifest::{SCHEDULE_LABEL, SCHEDULED_AT};
use crate::controller::Context;
use crate::metrics::Metrics;

type Seen = Arc<Mutex<Vec<(String, String, Value)>>>;

/// Serves every request with `answer(method, path)` (status, JSON body); records
/// (method, path and query, body). A GET of StudioBackup `b1` answers `b1` with every
/// status merge patch it got so far applied (the controller reads it fresh).
fn serve(
    answer: fn(&str, &str) -> (u16, Value),
) -> (BackupContext, Seen, tokio::task::JoinHandle<()>) {
    serve_backup(answer, backup_json())
}

fn serve_backup(
    answer: fn(&str, &str) -> (u16, Value),
    b1: Value,
) -> (BackupContext, Seen, tokio::task::JoinHandle<()>) {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let seen: Seen = Arc::default();
    let rec = seen.clone();
    let task = tokio::spawn(async move {
        let mut handle = Box::pin(handle);
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().to_string();
            let path = req.uri().path().to_string();
            let full = req.uri().to_string();
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if let Ok(mut s) = rec.lock() {
                s.push((method.clone(), full, body));
            }
            let (code, json) = if method == "GET"
                && path == "/apis/studio.cms.io/v1alpha1/namespaces/cms/studiobackups/b1"
            {
                let mut b = b1.clone();
                for (m, p, body) in rec.lock().map(|s| s.clone()).unwrap_or_default() {
                    if m == "PATCH" && p.contains("/studiobackups/b1/status") {
                        let mut st = b["status"].as_object().cloned().unwrap_or_default();
                        if let Some(n) = body["status"].as_object() {
                            for (k, v) in n {
                                st.insert(k.clone(), v.clone());
                            }
                        }
                        b["status"] = Value::Object(st);
                    }
                }
                (200, b)
            } else {
                answer(&method, &path)
            };
            if let Ok(r) = Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(&json).unwrap_or_default()))
            {
                send.send_response(r);
            }
        }
    });
    let client = Client::new(svc, "cms");
    let reporter = Reporter {
        controller: "studio-operator".into(),
        instance: Some("test".into()),
    };
    let ctx = Context::new(client, reporter, Arc::new(Metrics::new()));
    (BackupContext::new(Arc::new(ctx)), seen, task)
}

fn not_found() -> (u16, Value) {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

fn backup_json() -> Value {
    json!({
        "apiVersion": "studio.cms.io/v1alpha1", "kind": "StudioBackup",
        "metadata": {"name": "b1", "namespace": "cms", "uid": "0c1d2e3f-aaaa-bbbb-cccc-dddddddddddd",
                     "creationTimestamp": "2026-11-30T02:00:00Z"},
        "spec": {"cluster": "content"}
    })
}

fn schedule_json() -> Value {
    json!({
        "apiVersion": "studio.cms.io/v1alpha1", "kind": "StudioScheduledBackup",
        "metadata": {"name": "nightly", "namespace": "cms", "uid": "s-uid-1", "generation": 1,
                     "creationTimestamp": "2026-11-30T02:00:00Z"},
        "spec": {"cluster": "content", "schedule": "0 2 * * *", "immediate": true}
    })
}

fn seen(s: &Seen) -> Vec<(String, String, Value)> {
    s.lock().map(|v| v.clone()).unwrap_or_default()
}

#[tokio::test]
async fn a_backup_of_a_missing_cluster_fails_with_a_message_and_an_event() {
    let (bctx, rec, task) = serve(|method, path| match (method, path) {
        ("GET", "/apis/studio.cms.io/v1alpha1/namespaces/cms/studioclusters/content") => {
            not_found()
        }
        ("PATCH", _) => (200, backup_json()),
        _ => (201, json!({})),
    });
    let bk: StudioBackup = serde_json::from_value(backup_json()).unwrap_or_else(|e| panic!("{e}"));
    let action = super::studio_backup::reconcile(Arc::new(bk), Arc::new(bctx))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    task.abort();
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    let seen = seen(&rec);
    let patch = seen
        .iter()
        .find(|(m, p, _)| m == "PATCH" && p.contains("/studiobackups/b1/status"))
        .unwrap_or_else(|| panic!("no status patch: {seen:?}"));
    assert_eq!(patch.2["status"]["phase"], "Failed");
    assert!(
        patch.2["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("StudioCluster content does not exist")),
        "{}",
        patch.2
    );
    let event = seen
        .iter()
        .find(|(m, p, _)| m == "POST" && p.contains("events"))
        .unwrap_or_else(|| panic!("no Event: {seen:?}"));
    assert_eq!(event.2["reason"], "Failed");
    assert_eq!(event.2["type"], "Warning");
}

#[tokio::test]
async fn a_backup_of_a_cluster_without_spec_backup_fails() {
    let (bctx, rec, task) = serve(|method, path| match (method, path) {
        ("GET", "/apis/studio.cms.io/v1alpha1/namespaces/cms/studioclusters/content") => (
            200,
            json!({"apiVersion": "studio.cms.io/v1alpha1", "kind": "StudioCluster",
                   "metadata": {"name": "content", "namespace": "cms"}, "spec": {"image": "studio-node:1"}}),
        ),
        ("GET", "/apis/studio.cms.io/v1alpha1/namespaces/cms/studiobackups/b1") => {
            (200, backup_json())
        }
        ("PATCH", _) => (200, backup_json()),
        _ => (201, json!({})),
    });
    let bk: StudioBackup = serde_json::from_value(backup_json()).unwrap_or_else(|e| panic!("{e}"));
    super::studio_backup::reconcile(Arc::new(bk), Arc::new(bctx))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    task.abort();
    let seen = seen(&rec);
    let patch = seen
        .iter()
        .find(|(m, _, _)| m == "PATCH")
        .unwrap_or_else(|| panic!("no status patch: {seen:?}"));
    assert_eq!(patch.2["status"]["phase"], "Failed");
    assert!(
        patch.2["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no spec.backup"))
    );
}

#[tokio::test]
async fn a_finished_backup_is_left_alone() {
    let (bctx, rec, task) = serve(|_, _| (500, json!({})));
    let mut v = backup_json();
    v["status"] = json!({"phase": "Completed"});
    let bk: StudioBackup = serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"));
    super::studio_backup::reconcile(Arc::new(bk), Arc::new(bctx))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    task.abort();
    assert!(seen(&rec).is_empty(), "no request for a finished backup");
}

#[tokio::test]
async fn an_immediate_schedule_creates_one_owned_backup_and_records_it() {
    let (bctx, rec, task) = serve(|method, path| match (method, path) {
        ("GET", "/apis/studio.cms.io/v1alpha1/namespaces/cms/studiobackups") => (
            200,
            json!({"apiVersion": "studio.cms.io/v1alpha1", "kind": "StudioBackupList", "metadata": {}, "items": []}),
        ),
        ("POST", "/apis/studio.cms.io/v1alpha1/namespaces/cms/studiobackups") => {
            (201, backup_json())
        }
        ("PATCH", _) => (200, schedule_json()),
        _ => (201, json!({})),
    });
    let s: StudioScheduledBackup =
        serde_json::from_value(schedule_json()).unwrap_or_else(|e| panic!("{e}"));
    let action = super::scheduled::reconcile(Arc::new(s), Arc::new(bctx))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    task.abort();
    assert_ne!(action, kube::runtime::controller::Action::await_change());
    let seen = seen(&rec);
    let list = &seen[0];
    assert!(
        list.1.contains(&format!(
            "labelSelector={}",
            SCHEDULE_LABEL.replace('/', "%2F")
        )),
        "{}",
        list.1
    );
    let create = seen
        .iter()
        .find(|(m, p, _)| m == "POST" && p.contains("/studiobackups?"))
        .unwrap_or_else(|| panic!("no StudioBackup created: {seen:?}"));
    let b = &create.2;
    let name = b["metadata"]["name"].as_str().unwrap_or_default();
    assert!(
        name.starts_with("nightly-") && name.len() == "nightly-".len() + 14,
        "{name}"
    );
    assert_eq!(b["spec"]["cluster"], "content");
    assert_eq!(b["metadata"]["ownerReferences"][0]["uid"], "s-uid-1");
    assert_eq!(b["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(b["metadata"]["labels"][SCHEDULE_LABEL], "nightly");
    let at = b["metadata"]["annotations"][SCHEDULED_AT]
        .as_str()
        .unwrap_or_default();
    assert!(
        at.ends_with(":00") || !at.contains('.'),
        "whole seconds: {at}"
    );
    let status = seen
        .iter()
        .find(|(m, p, _)| m == "PATCH" && p.contains("/studioscheduledbackups/nightly/status"))
        .unwrap_or_else(|| panic!("no status: {seen:?}"));
    let st = &status.2["status"];
    assert_eq!(st["lastBackup"], name);
    assert!(st["lastScheduleTime"].is_string());
    assert!(
        st["nextScheduleTime"]
            .as_str()
            .is_some_and(|t| t.contains("T02:00:00")),
        "{st}"
    );
    assert_eq!(st["conditions"][0]["type"], "Ready");
    assert!(
        seen.iter()
            .any(|(m, p, b)| m == "POST" && p.contains("events") && b["reason"] == "BackupCreated"),
        "{seen:?}"
    );
}

/// A fake node on a free local port: base backup `b1-0c1d2e3f` is Running when
/// started and Completed when asked about; the archive lists it and an older one;
/// prune deletes what it is asked to. Records (method, path, Authorization).
async fn fake_node() -> (u16, Seen, tokio::task::JoinHandle<()>) {
    use axum::Json;
    use axum::extract::{Path, State};
    use axum::http::HeaderMap;
    use axum::routing::{get, post};

    fn status(phase: &str) -> Value {
        json!({"id": "b1-0c1d2e3f", "phase": phase, "message": "", "clusterId": "c-1",
               "nodeId": "content-1", "startedMs": 1_800_000_000_000i64,
               "stoppedMs": if phase == "Running" { Value::Null } else { json!(1_800_000_060_000i64) },
               "seq": 420, "term": 2, "timeMs": 0, "sizeBytes": 4096,
               "location": "s3://b/e2e/c-1/base/b1-0c1d2e3f"})
    }
    fn note(seen: &Seen, m: &str, p: String, h: &HeaderMap) {
        let auth = h
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if let Ok(mut s) = seen.lock() {
            s.push((m.into(), p, json!(auth)));
        }
    }
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route(
            "/internal/v1/backups",
            post(|State(s): State<Seen>, h: HeaderMap, Json(body): Json<Value>| async move {
                note(&s, "POST", format!("/internal/v1/backups {}", body["id"]), &h);
                (axum::http::StatusCode::ACCEPTED, Json(status("Running")))
            })
            .get(|State(s): State<Seen>, h: HeaderMap| async move {
                note(&s, "GET", "/internal/v1/backups".into(), &h);
                let mut old = status("Completed");
                old["id"] = json!("old-1");
                old["stoppedMs"] = json!(1_700_000_000_000i64);
                Json(json!({"backups": [old, status("Completed")],
                            "firstRecoverabilitySeq": 100, "firstRecoverabilityTimeMs": 1_700_000_000_000i64}))
            }),
        )
        .route(
            "/internal/v1/backups/{id}",
            get(|State(s): State<Seen>, h: HeaderMap, Path(id): Path<String>| async move {
                note(&s, "GET", format!("/internal/v1/backups/{id}"), &h);
                Json(status("Completed"))
            }),
        )
        .route(
            "/internal/v1/backups-prune",
            post(|State(s): State<Seen>, h: HeaderMap, Json(body): Json<Value>| async move {
                note(&s, "POST", format!("/internal/v1/backups-prune {}", body["delete"]), &h);
                Json(json!({"deletedBackups": body["delete"], "deletedSegments": 3}))
            }),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, seen, task)
}

fn cluster_json() -> Value {
    json!({
        "apiVersion": "studio.cms.io/v1alpha1", "kind": "StudioCluster",
        "metadata": {"name": "content", "namespace": "cms", "uid": "c-uid"},
        "spec": {"image": "studio-node:1", "nodes": 2,
                 "backup": {"objectStore": {"bucket": "b", "path": "e2e", "credentials": {"secretName": "s3"}},
                            "retention": {"maxCount": 1}}},
        "status": {"members": [
            {"name": "content-0", "role": "primary", "ready": true, "podIp": "127.0.0.1", "lag": 0},
            {"name": "content-1", "role": "replica", "ready": true, "podIp": "127.0.0.1", "lag": 0}
        ]}
    })
}

fn api_for_happy_path(method: &str, path: &str) -> (u16, Value) {
    match (method, path) {
        ("GET", "/apis/studio.cms.io/v1alpha1/namespaces/cms/studioclusters/content") => {
            (200, cluster_json())
        }
        ("GET", "/api/v1/namespaces/cms/secrets/content-auth") => (
            200,
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "content-auth", "namespace": "cms"},
                   "data": {"jwt-key": "a2V5", "cluster-token": "dG9rZW4="}}),
        ),
        ("PATCH", p) if p.contains("/studioclusters/") => (200, cluster_json()),
        ("PATCH", _) => (200, backup_json()),
        _ => (201, json!({})),
    }
}

#[tokio::test]
async fn a_backup_is_started_on_the_standby_followed_to_completion_and_pruned() {
    let (port, node_seen, node) = fake_node().await;
    let (bctx, rec, task) = serve(api_for_happy_path);
    let mut ctx = Arc::try_unwrap(bctx.ctx).unwrap_or_else(|_| panic!("shared context"));
    ctx.nodes = crate::node_client::NodeClient::new().with_port(i32::from(port));
    let bctx = Arc::new(BackupContext::new(Arc::new(ctx)));

    // 1. No status: the standby is chosen and recorded, then asked to start.
    let bk: StudioBackup = serde_json::from_value(backup_json()).unwrap_or_else(|e| panic!("{e}"));
    super::studio_backup::reconcile(Arc::new(bk), bctx.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let api = seen(&rec);
    let patches: Vec<&Value> = api
        .iter()
        .filter(|(m, p, _)| m == "PATCH" && p.contains("/studiobackups/b1/status"))
        .map(|(_, _, b)| &b["status"])
        .collect();
    assert_eq!(patches.len(), 2, "{api:?}");
    assert_eq!(patches[0]["phase"], "Pending");
    assert_eq!(
        patches[0]["node"], "content-1",
        "the replica, not the primary"
    );
    assert_eq!(patches[0]["backupId"], "b1-0c1d2e3f");
    assert_eq!(patches[1]["phase"], "Running");
    assert_eq!(patches[1]["node"], "content-1");
    assert!(
        api.iter()
            .any(|(m, p, b)| m == "POST" && p.contains("events") && b["reason"] == "Started")
    );
    let calls = seen(&node_seen);
    assert_eq!(calls[0].1, "/internal/v1/backups \"b1-0c1d2e3f\"");
    assert_eq!(calls[0].2, "Bearer token", "the cluster token");

    // 2. Running: the node says Completed; status, Event, cluster fields, retention.
    // Woken by the Pending write with a cache that has not seen Running yet: the
    // fresh read finds Running, so nothing is started or announced twice.
    let mut v = backup_json();
    v["status"] = patches[0].clone();
    let bk: StudioBackup = serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"));
    super::studio_backup::reconcile(Arc::new(bk), bctx.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    task.abort();
    node.abort();
    let api = seen(&rec);
    let done = api
        .iter()
        .rev()
        .find(|(m, p, _)| m == "PATCH" && p.contains("/studiobackups/b1/status"))
        .map(|(_, _, b)| b["status"].clone())
        .unwrap_or_default();
    assert_eq!(done["phase"], "Completed");
    assert_eq!(done["seq"], 420);
    assert_eq!(done["sizeBytes"], 4096);
    assert_eq!(done["location"], "s3://b/e2e/c-1/base/b1-0c1d2e3f");
    assert_eq!(done["stoppedAt"], "2027-01-15T08:01:00Z");
    assert!(
        api.iter()
            .any(|(m, p, b)| m == "POST" && p.contains("events") && b["reason"] == "Completed")
    );
    let started = api
        .iter()
        .filter(|(m, p, b)| m == "POST" && p.contains("events") && b["reason"] == "Started")
        .count();
    assert_eq!(started, 1, "one Started Event");
    let calls = seen(&node_seen);
    assert_eq!(
        calls
            .iter()
            .filter(|(m, p, _)| m == "POST" && p.starts_with("/internal/v1/backups \""))
            .count(),
        1,
        "asked to start once: {calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|(_, p, _)| p == "/internal/v1/backups-prune [\"old-1\"]"),
        "retention (maxCount 1) deletes the older one: {calls:?}"
    );
    let pruned = api
        .iter()
        .find(|(m, p, b)| m == "POST" && p.contains("events") && b["reason"] == "BackupsPruned")
        .unwrap_or_else(|| panic!("no BackupsPruned: {api:?}"));
    assert!(
        pruned.2["note"]
            .as_str()
            .is_some_and(|n| n.contains("old-1") && n.contains("maxCount 1"))
    );
    let cluster_patches: Vec<&Value> = api
        .iter()
        .filter(|(m, p, _)| m == "PATCH" && p.contains("/studioclusters/content/status"))
        .map(|(_, _, b)| &b["status"]["backup"])
        .collect();
    assert_eq!(
        cluster_patches[0],
        &json!({"lastSuccessfulBackup": "2027-01-15T08:01:00Z"})
    );
    let fields = cluster_patches.last().copied().cloned().unwrap_or_default();
    assert_eq!(fields["lastSuccessfulBackup"], "2027-01-15T08:01:00Z");
    assert_eq!(fields["firstRecoverabilitySeq"], 100);
    assert_eq!(
        fields.as_object().map(|o| o.len()),
        Some(3),
        "only the three fields: {fields}"
    );
    let metrics = bctx.ctx.metrics.encode();
    assert!(
        metrics.contains(
            r#"studio_operator_backups_completed_total{namespace="cms",cluster="content"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"studio_operator_backups_pruned_total{namespace="cms",cluster="content"} 1"#
        ),
        "{metrics}"
    );
}
