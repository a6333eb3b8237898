//! Coordinator modes (CUD, ALL, DISABLED), the bypass and forwarded-from headers,
//! the arbiter, demote/follow, and the cluster status and metrics of replication.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::cluster::*;
use common::*;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use studio_crds::node_api::{self, HEADER_DIRECT, HEADER_FORWARDED_FROM, HEADER_PRIMARY};

fn doc(n: u64) -> Value {
    json!({"type": "doc", "properties": {"n": n}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coordinator_modes_headers_and_arbiter() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Node::standalone(&dir.path().join("p"), &[]);
    let cud = replica(&dir.path().join("cud"), &primary, "r-cud", &[]);
    let all = replica(
        &dir.path().join("all"),
        &primary,
        "r-all",
        &["--coordinator-mode", "ALL"],
    );
    let off = replica(
        &dir.path().join("off"),
        &primary,
        "r-off",
        &["--coordinator-mode", "DISABLED"],
    );
    let arb = replica(
        &dir.path().join("arb"),
        &primary,
        "arb",
        &["--role", "arbiter"],
    );
    let http = Client::new();
    let tok = editor();
    wait_for("4 connected peers", Duration::from_secs(30), || async {
        (connected_peers(&http, &primary.url).await? == 4).then_some(())
    })
    .await;

    // CUD: a write to the replica is forwarded and marked; the primary has it.
    let r = http
        .put(format!("{}/api/v1/content/site/a", cud.url))
        .bearer_auth(&tok)
        .json(&doc(1))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(r.headers()[HEADER_FORWARDED_FROM], "r-cud");
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let r = http
        .get(format!("{}/api/v1/content/site/a", primary.url))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // If-Match travels with the forwarded write: a stale one is a 409 from the primary.
    let r = http
        .put(format!("{}/api/v1/content/site/a", cud.url))
        .bearer_auth(&tok)
        .header("if-match", "\"7\"")
        .json(&doc(2))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(r.headers()[HEADER_FORWARDED_FROM], "r-cud");
    let r = http
        .put(format!("{}/api/v1/content/site/a", cud.url))
        .bearer_auth(&tok)
        .header("if-match", &etag)
        .json(&doc(2))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Authorization travels too: no token is a 401, a reader is a 403.
    let r = http
        .put(format!("{}/api/v1/content/site/b", cud.url))
        .json(&doc(1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http
        .put(format!("{}/api/v1/content/site/b", cud.url))
        .bearer_auth(token("rd", &["reader"], None))
        .json(&doc(1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Binaries stream through the forward.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let r = http
        .post(format!("{}/api/v1/binaries", cud.url))
        .bearer_auth(&tok)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let sha = r.json::<Value>().await.unwrap()["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    wait_converged(
        &http,
        &primary.url,
        &[&cud.url, &all.url, &off.url, &arb.url],
        Duration::from_secs(30),
    )
    .await;
    // Reads are local in CUD (no forwarded header) and see replicated content.
    let r = http
        .get(format!("{}/api/v1/content/site/a", cud.url))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get(HEADER_FORWARDED_FROM).is_none());
    assert_eq!(r.json::<Value>().await.unwrap()["version"], 2);
    let r = http
        .get(format!("{}/api/v1/binaries/{sha}", cud.url))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);
    // X-Studio-Direct: served locally, so a write is refused with the primary's address.
    let r = http
        .put(format!("{}/api/v1/content/site/c", cud.url))
        .bearer_auth(&tok)
        .header(HEADER_DIRECT, "true")
        .json(&doc(1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()[HEADER_PRIMARY], primary.url.as_str());

    // ALL: reads are forwarded too, unless direct.
    let r = http
        .get(format!("{}/api/v1/content/site/a", all.url))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[HEADER_FORWARDED_FROM], "r-all");
    let r = http
        .get(format!(
            "{}/api/v1/content/site/a?workspace=authoring",
            all.url
        ))
        .bearer_auth(&tok)
        .header(HEADER_DIRECT, "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get(HEADER_FORWARDED_FROM).is_none());

    // DISABLED: writes get 503 naming the primary (header and JSON); reads are local.
    let r = http
        .put(format!("{}/api/v1/content/site/d", off.url))
        .bearer_auth(&tok)
        .json(&doc(1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()[HEADER_PRIMARY], primary.url.as_str());
    let body = r.text().await.unwrap();
    assert_json_error(&body, "DISABLED write");
    assert!(body.contains(&primary.url), "{body}");
    let r = http
        .get(format!("{}/api/v1/content/site/a", off.url))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // The arbiter replicates (same digest above) but serves no content.
    let r = http
        .get(format!("{}/api/v1/content/site/a", arb.url))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_json_error(&r.text().await.unwrap(), "arbiter");

    // Status: the primary lists its peers with positions and lag; metrics too.
    // (Acknowledgements travel separately from the data: wait for them.)
    let s = wait_for(
        "every peer to acknowledge the last entry",
        Duration::from_secs(10),
        || async {
            let s = status(&http, &primary.url).await?;
            let peers = s["peers"].as_array()?;
            (peers.len() == 4 && peers.iter().all(|p| p["seq"] == s["seq"])).then_some(s)
        },
    )
    .await;
    let peers = s["peers"].as_array().unwrap();
    for p in peers {
        assert_eq!(p["lagEntries"], 0, "{p}");
        assert_eq!(p["lagSeconds"], 0.0, "{p}");
        assert_eq!(p["connected"], true);
    }
    assert!(
        peers
            .iter()
            .any(|p| p["nodeId"] == "arb" && p["role"] == "arbiter")
    );
    let metrics = wait_for("lag metrics", Duration::from_secs(10), || async {
        let m = http
            .get(format!("{}/metrics", primary.url))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        m.contains("studio_replication_lag_entries{peer=\"r-cud\"} 0")
            .then_some(m)
    })
    .await;
    assert!(metrics.contains("studio_replication_lag_seconds{peer=\"r-cud\"}"));
    let rm = http
        .get(format!("{}/metrics", cud.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!rm.contains("studio_journal_applied_total 0\n"), "{rm}");
    let rs = status(&http, &cud.url).await.unwrap();
    assert_eq!(rs["role"], "replica");
    assert_eq!(rs["primary"], primary.url.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn demote_follow_and_switchover() {
    let dir = tempfile::tempdir().unwrap();
    let a = Node::standalone(&dir.path().join("a"), &[]);
    let b = replica(&dir.path().join("b"), &a, "b", &[]);
    let http = Client::new();
    let tok = editor();
    let put = |url: String, path: &'static str| {
        let (http, tok) = (http.clone(), tok.clone());
        async move {
            http.put(format!("{url}/api/v1/content{path}"))
                .bearer_auth(&tok)
                .header(HEADER_DIRECT, "true")
                .json(&doc(1))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert!(put(a.url.clone(), "/x/1").await.is_success());
    wait_for("b connected", Duration::from_secs(30), || async {
        (connected_peers(&http, &a.url).await? == 1).then_some(())
    })
    .await;

    // Planned switchover: b becomes primary at a higher term, a follows it.
    let (st, body) = admin_post(
        &http,
        &a.url,
        node_api::ADMIN_SWITCHOVER,
        json!({"target": "b"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let sb = status(&http, &b.url).await.unwrap();
    assert_eq!(sb["role"], "primary");
    assert!(sb["term"].as_u64().unwrap() >= 2);
    let sa = status(&http, &a.url).await.unwrap();
    assert_eq!(sa["role"], "replica");
    assert_eq!(sa["primary"], b.url.as_str());
    assert_eq!(
        put(a.url.clone(), "/x/2").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(put(b.url.clone(), "/x/2").await.is_success());
    wait_converged(&http, &b.url, &[&a.url], Duration::from_secs(30)).await;
    assert!(quarantine(&http, &a.url).await.is_empty());

    // Demote: read-only at once.
    let (st, _) = admin_post(&http, &b.url, node_api::ADMIN_DEMOTE, json!({})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        put(b.url.clone(), "/x/3").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Promote back with a stale term is refused; a higher one works; follow re-points.
    let term = status(&http, &b.url).await.unwrap()["term"]
        .as_u64()
        .unwrap();
    let (st, _) = admin_post(
        &http,
        &b.url,
        node_api::ADMIN_PROMOTE,
        json!({"term": term}),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, _) = admin_post(
        &http,
        &b.url,
        node_api::ADMIN_PROMOTE,
        json!({"term": term + 1}),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = admin_post(
        &http,
        &a.url,
        node_api::ADMIN_FOLLOW,
        json!({"primary": b.url}),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert!(put(b.url.clone(), "/x/3").await.is_success());
    wait_converged(&http, &b.url, &[&a.url], Duration::from_secs(30)).await;
    // Internal routes need the cluster token.
    let r = http
        .post(format!("{}{}", a.url, node_api::ADMIN_PROMOTE))
        .json(&json!({"term": 99}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_refuses_a_primary_of_an_older_term() {
    let dir = tempfile::tempdir().unwrap();
    let p = Node::standalone(&dir.path().join("p"), &[]);
    let r = replica(&dir.path().join("r"), &p, "r", &[]);
    let http = Client::new();
    let put = |path: &'static str| {
        let (http, url) = (http.clone(), p.url.clone());
        async move {
            http.put(format!("{url}/api/v1/content{path}"))
                .bearer_auth(editor())
                .json(&doc(1))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert!(put("/t/1").await.is_success());
    wait_converged(&http, &p.url, &[&r.url], Duration::from_secs(30)).await;

    // r learns of term 5 (as if it voted in an election): the term-1 primary is stale.
    let (st, body) = admin_post(
        &http,
        &r.url,
        node_api::ADMIN_FOLLOW,
        json!({"primary": p.url, "term": 5}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let refusals = |log: String| log.matches("stale primary").count();
    let n0 = wait_for(
        "r to refuse the stale primary",
        Duration::from_secs(30),
        || async {
            let n = refusals(r.log_text());
            (n > 0).then_some(n)
        },
    )
    .await;
    assert!(put("/t/2").await.is_success());
    wait_for("r to refuse again", Duration::from_secs(30), || async {
        (refusals(r.log_text()) > n0).then_some(())
    })
    .await;
    let got = http
        .get(format!("{}/api/v1/content/t/2", r.url))
        .bearer_auth(editor())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(
        got,
        StatusCode::NOT_FOUND,
        "r applied an entry of a stale primary"
    );

    // Once the primary acts in a newer term, r follows it again and catches up.
    let (st, body) = admin_post(&http, &p.url, node_api::ADMIN_PROMOTE, json!({"term": 6})).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    wait_converged(&http, &p.url, &[&r.url], Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_with_streaming_replicas_stops_promptly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Node::standalone(&dir.path().join("p"), &[]);
    let _r = replica(&dir.path().join("r"), &p, "r", &[]);
    let http = Client::new();
    wait_for("the replica connected", Duration::from_secs(30), || async {
        (connected_peers(&http, &p.url).await? == 1).then_some(())
    })
    .await;
    let mut child = p.child.take().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_for("the primary to exit", Duration::from_secs(10), || {
        let s = child.try_wait().unwrap();
        async move { s }
    })
    .await;
    assert!(status.success(), "exit status {status}");
}
