//! `--internal-listen`: internal routes get a port of their own, so that a
//! NetworkPolicy can admit only members and the operator to them. The `--listen` port
//! then serves the public routes only; members advertise, follow and replicate through
//! the internal one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::cluster::{digest, wait_for};
use common::*;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use studio_crds::node_api;

#[tokio::test]
async fn internal_routes_live_on_their_own_port_and_members_replicate_through_it() {
    let tmp = tempfile::tempdir().unwrap();
    let p_internal = format!("127.0.0.1:{}", free_port());
    let primary = Node::standalone(&tmp.path().join("p"), &["--internal-listen", &p_internal]);
    let p_internal_url = format!("http://{p_internal}");
    let http = Client::new();

    // The public port: content, status, probes; internal routes are not there, even
    // with the right credential, and the answer says where they are.
    let r = http
        .put(format!("{}/api/v1/content/a", primary.url))
        .bearer_auth(editor())
        .json(&json!({"type": "page", "properties": {"title": "a"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = http
        .get(format!("{}{}", primary.url, node_api::ADMIN_DIGEST))
        .bearer_auth(CLUSTER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("internal port"),
        "{body}"
    );
    for path in [node_api::HEALTHZ, node_api::READYZ, node_api::METRICS] {
        let r = http
            .get(format!("{}{path}", primary.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path} on the public port");
    }

    // The internal port: internal routes, still guarded.
    let r = http
        .get(format!("{p_internal_url}{}", node_api::ADMIN_DIGEST))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(digest(&http, &p_internal_url).await.is_some());

    // A replica follows the primary's internal URL and advertises its own internal one.
    let r_internal = format!("127.0.0.1:{}", free_port());
    let rep = Node::start(
        &tmp.path().join("r"),
        &[
            "--follow",
            &p_internal_url,
            "--node-id",
            "r",
            "--internal-listen",
            &r_internal,
        ],
    );
    let r_internal_url = format!("http://{r_internal}");
    wait_for(
        "the replica to converge",
        Duration::from_secs(20),
        || async {
            let (a, b) = (
                digest(&http, &p_internal_url).await?,
                digest(&http, &r_internal_url).await?,
            );
            (a == b).then_some(())
        },
    )
    .await;
    // The primary knows the replica by its internal address.
    let status: Value = http
        .get(format!("{}{}", primary.url, node_api::CLUSTER_STATUS))
        .bearer_auth(CLUSTER_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        status.to_string().contains(&r_internal_url),
        "the primary's peers do not show {r_internal_url}: {status}"
    );
    drop(rep);
}
