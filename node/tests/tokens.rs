//! User JWTs: `exp` is required, `nbf` honoured, `iss` and `aud` checked when the node
//! is configured with them; every refusal is a 401 with a JSON error saying why.

mod common;

use common::*;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

async fn put(http: &Client, node: &Node, token: &str) -> (StatusCode, String) {
    let r = http
        .put(format!("{}/api/v1/content/t", node.url))
        .bearer_auth(token)
        .json(&json!({"type": "page", "properties": {"title": "t"}}))
        .send()
        .await
        .expect("the node answers");
    let status = r.status();
    (status, r.text().await.unwrap_or_default())
}

/// Asserts a 401 whose JSON message contains `why`.
async fn refused(http: &Client, node: &Node, claims: Value, why: &str) {
    let (status, body) = put(http, node, &sign_claims(&claims, JWT_SECRET)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{claims}: {body}");
    assert_eq!(assert_json_error(&body, why), "unauthorized");
    assert!(body.contains(why), "{claims}: expected {why:?} in {body}");
}

async fn accepted(http: &Client, node: &Node, claims: Value) {
    let (status, body) = put(http, node, &sign_claims(&claims, JWT_SECRET)).await;
    assert!(status.is_success(), "{claims}: {status} {body}");
}

#[tokio::test]
async fn a_token_without_expiry_or_not_yet_valid_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::standalone(&dir.path().join("data"), &[]);
    let http = Client::new();
    let now = now_secs();
    refused(
        &http,
        &node,
        json!({"sub": "a", "roles": ["editor"]}),
        "no expiry",
    )
    .await;
    refused(
        &http,
        &node,
        json!({"sub": "a", "roles": ["editor"], "exp": now - 3600}),
        "expired",
    )
    .await;
    refused(
        &http,
        &node,
        json!({"sub": "a", "roles": ["editor"], "exp": now + 3600, "nbf": now + 600}),
        "not yet valid",
    )
    .await;
    // Within the default leeway (30 s) of the clocks.
    accepted(
        &http,
        &node,
        json!({"sub": "a", "roles": ["editor"], "exp": now - 10}),
    )
    .await;
    accepted(
        &http,
        &node,
        json!({"sub": "a", "roles": ["editor"], "exp": now + 60, "nbf": now + 10}),
    )
    .await;
    // No issuer or audience configured: not checked.
    accepted(
        &http,
        &node,
        json!({"sub": "a", "roles": ["editor"], "exp": now + 60, "iss": "x", "aud": "y"}),
    )
    .await;
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::standalone(
        &dir.path().join("data"),
        &[
            "--jwt-issuer",
            "https://idp.example/realms/cms",
            "--jwt-audience",
            "studio",
            "--jwt-leeway",
            "0",
        ],
    );
    let http = Client::new();
    let now = now_secs();
    let good = json!({"sub": "a", "roles": ["editor"], "exp": now + 60,
                      "iss": "https://idp.example/realms/cms", "aud": ["account", "studio"]});
    accepted(&http, &node, good.clone()).await;
    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("https://evil.example/");
    refused(&http, &node, wrong_iss, "wrong issuer").await;
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("another-service");
    refused(&http, &node, wrong_aud, "wrong audience").await;
    let mut no_aud = good.clone();
    if let Some(m) = no_aud.as_object_mut() {
        m.remove("aud");
    }
    refused(&http, &node, no_aud, "the aud claim is required").await;
    // No leeway configured: a token expired a few seconds ago is refused.
    let mut just_expired = good;
    just_expired["exp"] = json!(now - 5);
    refused(&http, &node, just_expired, "expired").await;
}
