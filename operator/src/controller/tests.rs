//! One reconcile step against a mock API server: the credentials Secret is generated
//! once and never regenerated.

use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use tower_test::mock;

use super::*;

fn cluster() -> StudioCluster {
    serde_yaml::from_str(
        "apiVersion: studio.cms.io/v1alpha1\nkind: StudioCluster\nmetadata: {name: solo, namespace: cms, uid: u-1}\nspec: {image: studio-node:1}\n",
    )
    .unwrap_or_else(|e| panic!("fixture: {e}"))
}

type Seen = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// Serves requests: GET of the Secret answers `existing` (or 404); POSTs echo their
/// body with 201. Records (method, path, body).
fn serve(existing: Option<serde_json::Value>) -> (Client, Seen, tokio::task::JoinHandle<()>) {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let seen: Seen = Arc::default();
    let rec = seen.clone();
    let task = tokio::spawn(async move {
        let mut handle = Box::pin(handle);
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().to_string();
            let path = req.uri().path().to_string();
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            if let Ok(mut s) = rec.lock() {
                s.push((method.clone(), path.clone(), body.clone()));
            }
            let resp = match (method.as_str(), &existing) {
                ("GET", Some(s)) => Response::builder().status(StatusCode::OK).body(Body::from(serde_json::to_vec(s).unwrap_or_default())),
                ("GET", None) => Response::builder().status(StatusCode::NOT_FOUND).body(Body::from(
                    serde_json::to_vec(&serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})).unwrap_or_default(),
                )),
                _ => Response::builder().status(StatusCode::CREATED).body(Body::from(body)),
            };
            if let Ok(r) = resp {
                send.send_response(r);
            }
        }
    });
    (Client::new(svc, "cms"), seen, task)
}

fn ctx(client: Client) -> Context {
    let reporter = Reporter {
        controller: "studio-operator".into(),
        instance: Some("test".into()),
    };
    Context::new(client, reporter, Arc::new(Metrics::new()))
}

#[tokio::test]
async fn an_existing_secret_is_never_regenerated() {
    let existing = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "solo-auth", "namespace": "cms"},
        "data": {"jwt-key": "a2V5", "cluster-token": "dG9rZW4="}
    });
    let (client, seen, task) = serve(Some(existing));
    let token = ensure_secret(&ctx(client), &cluster())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(token.as_deref(), Some("token"));
    task.abort();
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(seen.len(), 1, "only a read: {seen:?}");
    assert_eq!(
        (seen[0].0.as_str(), seen[0].1.as_str()),
        ("GET", "/api/v1/namespaces/cms/secrets/solo-auth")
    );
}

#[tokio::test]
async fn a_missing_secret_is_generated_with_fresh_random_credentials() {
    let (client, seen, task) = serve(None);
    let token = ensure_secret(&ctx(client), &cluster())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    task.abort();
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let create = seen
        .iter()
        .find(|(m, p, _)| m == "POST" && p == "/api/v1/namespaces/cms/secrets")
        .unwrap_or_else(|| panic!("no create: {seen:?}"));
    let secret: Secret = serde_json::from_slice(&create.2).unwrap_or_else(|e| panic!("{e}"));
    let data = secret.data.unwrap_or_default();
    let jwt = String::from_utf8_lossy(&data[secret_keys::JWT_KEY].0).to_string();
    let tok = String::from_utf8_lossy(&data[secret_keys::CLUSTER_TOKEN].0).to_string();
    assert_eq!(jwt.len(), 64);
    assert_ne!(jwt, tok);
    assert_ne!(jwt, "0".repeat(64));
    assert_eq!(token.as_deref(), Some(tok.as_str()));
    assert!(
        seen.iter()
            .any(|(m, p, _)| m == "POST" && p.contains("events")),
        "an Event says so: {seen:?}"
    );
}

fn restored_cluster() -> StudioCluster {
    serde_yaml::from_str(
        "apiVersion: studio.cms.io/v1alpha1\nkind: StudioCluster\nmetadata: {name: restored, namespace: cms, uid: u-2}\nspec:\n  image: studio-node:1\n  backup: {objectStore: {bucket: b, credentials: {secretName: s3}}}\n  bootstrap: {recovery: {backup: nightly, targetSeq: 42}}\n",
    )
    .unwrap_or_else(|e| panic!("fixture: {e}"))
}

fn env_value(env: &[k8s_openapi::api::core::v1::EnvVar], name: &str) -> Option<String> {
    env.iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

#[tokio::test]
async fn recovery_waits_for_the_studio_backup() {
    use studio_crds::node_api::backup_env;
    let sc = restored_cluster();
    // Not there: no settings (so no pods), waiting.
    let (client, seen, task) = serve(None);
    let r = recovery::restore_settings(&ctx(client), &sc, None, &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    task.abort();
    let u = r.expect_err("unresolved");
    assert!(!u.permanent);
    assert!(
        u.message.contains("StudioBackup nightly not found"),
        "{u:?}"
    );
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(
        seen.iter()
            .map(|(m, p, _)| format!("{m} {p}"))
            .collect::<Vec<_>>(),
        ["GET /apis/studio.cms.io/v1alpha1/namespaces/cms/studiobackups/nightly"]
    );

    // Completed: the ids from its status.
    let backup = serde_json::json!({
        "apiVersion": "studio.cms.io/v1alpha1", "kind": "StudioBackup",
        "metadata": {"name": "nightly", "namespace": "cms"},
        "spec": {"cluster": "old"},
        "status": {"phase": "Completed", "backupId": "b-7", "clusterId": "c-old"}
    });
    let (client, _, task) = serve(Some(backup));
    let env = recovery::restore_settings(&ctx(client), &sc, None, &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|u| panic!("{u:?}"));
    task.abort();
    assert_eq!(
        env_value(&env, backup_env::RESTORE_CLUSTER_ID).as_deref(),
        Some("c-old")
    );
    assert_eq!(
        env_value(&env, backup_env::RESTORE_BACKUP_ID).as_deref(),
        Some("b-7")
    );
    assert_eq!(
        env_value(&env, backup_env::RESTORE_TARGET_SEQ).as_deref(),
        Some("42")
    );

    // The StatefulSet exists: its settings as they are, nothing looked up (the backup
    // may be long gone).
    let owned = build::build_owned_with(&sc, 1, &env).unwrap_or_else(|e| panic!("{e}"));
    let (client, seen, task) = serve(None);
    let pinned = recovery::restore_settings(&ctx(client), &sc, Some(&owned.statefulset), &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|u| panic!("{u:?}"));
    task.abort();
    assert_eq!(pinned, env);
    assert!(seen.lock().map(|s| s.is_empty()).unwrap_or(false));
}
