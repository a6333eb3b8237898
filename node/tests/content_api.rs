//! The content API through HTTP against a `studio-node --standalone` process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

struct Api {
    node: Node,
    http: Client,
    token: String,
    _dir: tempfile::TempDir,
}

impl Api {
    fn start(extra: &[&str]) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::standalone(&dir.path().join("data"), extra);
        Api {
            node,
            http: Client::new(),
            token: editor(),
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.node.url, path)
    }

    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.token)
    }

    async fn put(&self, path: &str, body: Value) -> reqwest::Response {
        self.req(Method::PUT, &format!("/api/v1/content{path}"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let r = self.req(Method::GET, path).send().await.unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }
}

fn page(title: &str) -> Value {
    json!({"type": "page", "properties": {"title": title, "body": format!("{title} body text")}})
}

#[tokio::test]
async fn crud_with_etags_and_conflicts() {
    let api = Api::start(&[]);
    let r = api.put("/sites/acme/home", page("Home")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["etag"], "\"1\"");
    let item: Value = r.json().await.unwrap();
    assert_eq!(item["path"], "/sites/acme/home");
    assert_eq!(item["type"], "page");
    assert_eq!(item["author"], "ed");
    let id = item["id"].clone();

    let (s, got) = api.get_json("/api/v1/content/sites/acme/home").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["properties"]["title"], "Home");

    // Update with the right ETag.
    let r = api
        .req(Method::PUT, "/api/v1/content/sites/acme/home")
        .header("if-match", "\"1\"")
        .json(&page("Home v2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["etag"], "\"2\"");
    let v2: Value = r.json().await.unwrap();
    assert_eq!(v2["id"], id, "the id is stable across updates");

    // A stale ETag is a 409 and changes nothing.
    let r = api
        .req(Method::PUT, "/api/v1/content/sites/acme/home")
        .header("if-match", "\"1\"")
        .json(&page("lost update"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(
        assert_json_error(&r.text().await.unwrap(), "stale if-match"),
        "version_conflict"
    );
    let (_, got) = api.get_json("/api/v1/content/sites/acme/home").await;
    assert_eq!(got["properties"]["title"], "Home v2");

    // Create-only on an existing item.
    let r = api
        .req(Method::PUT, "/api/v1/content/sites/acme/home")
        .header("if-none-match", "*")
        .json(&page("again"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);

    // Delete with a stale ETag, then for real.
    let r = api
        .req(Method::DELETE, "/api/v1/content/sites/acme/home")
        .header("if-match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = api
        .req(Method::DELETE, "/api/v1/content/sites/acme/home")
        .header("if-match", "\"2\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (s, body) = api.get_json("/api/v1/content/sites/acme/home").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn concurrent_updates_with_the_same_etag_one_wins() {
    let api = Api::start(&[]);
    api.put("/race", page("v1")).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let req = api
            .req(Method::PUT, "/api/v1/content/race")
            .header("if-match", "\"1\"")
            .json(&page(&format!("writer {i}")));
        tasks.push(tokio::spawn(
            async move { req.send().await.unwrap().status() },
        ));
    }
    let mut ok = 0;
    let mut conflict = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::CONFLICT => conflict += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, conflict), (1, 7));
    let (_, got) = api.get_json("/api/v1/content/race").await;
    assert_eq!(got["version"], 2);
}

#[tokio::test]
async fn children_paging_subtree_delete_and_move() {
    let api = Api::start(&[]);
    api.put("/site", page("root")).await;
    for i in 0..25 {
        assert_eq!(
            api.put(&format!("/site/p{i:02}"), page(&format!("p{i}")))
                .await
                .status(),
            StatusCode::CREATED
        );
    }
    api.put("/site/p03/deep", page("deep")).await;
    let (s, first) = api.get_json("/api/v1/children/site?limit=10").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(first["total"], 25);
    let names: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    assert_eq!(names.first(), Some(&"/site/p00"));
    assert_eq!(names.len(), 10);
    let (_, third) = api
        .get_json("/api/v1/children/site?limit=10&offset=20")
        .await;
    assert_eq!(third["items"].as_array().unwrap().len(), 5);
    assert_eq!(third["nextOffset"], Value::Null);
    let (_, top) = api.get_json("/api/v1/children").await;
    assert_eq!(top["items"][0]["path"], "/site");

    // Move a subtree: the children come along.
    let r = api
        .req(Method::POST, "/api/v1/move")
        .json(&json!({"from": "/site/p03", "to": "/archive/p03"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-studio-moved"], "2");
    assert_eq!(
        api.get_json("/api/v1/content/archive/p03/deep").await.0,
        StatusCode::OK
    );
    assert_eq!(
        api.get_json("/api/v1/content/site/p03").await.0,
        StatusCode::NOT_FOUND
    );
    // Onto an existing item: 409.
    let r = api
        .req(Method::POST, "/api/v1/move")
        .json(&json!({"from": "/site/p04", "to": "/site/p05"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);

    // Deleting a parent needs recursive.
    let r = api
        .req(Method::DELETE, "/api/v1/content/site")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(
        assert_json_error(&r.text().await.unwrap(), "delete parent"),
        "has_children"
    );
    let r = api
        .req(Method::DELETE, "/api/v1/content/site?recursive=true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["deleted"], 25);
    assert_eq!(api.get_json("/api/v1/children/site").await.1["total"], 0);
}

#[tokio::test]
async fn versions_history_and_restore() {
    let api = Api::start(&[]);
    for t in ["one", "two", "three"] {
        api.put("/doc", page(t)).await;
    }
    let (_, hist) = api.get_json("/api/v1/versions/doc").await;
    let versions: Vec<i64> = hist["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, vec![3, 2, 1]);
    let (s, v1) = api.get_json("/api/v1/content/doc?version=1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v1["properties"]["title"], "one");

    let r = api
        .req(Method::POST, "/api/v1/restore/doc")
        .header("if-match", "\"3\"")
        .json(&json!({"version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["etag"], "\"4\"");
    let (_, cur) = api.get_json("/api/v1/content/doc").await;
    assert_eq!(cur["properties"]["title"], "one");
    assert_eq!(cur["version"], 4);
    // Restoring with a stale ETag or to a missing version fails clearly.
    let r = api
        .req(Method::POST, "/api/v1/restore/doc")
        .header("if-match", "\"3\"")
        .json(&json!({"version": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = api
        .req(Method::POST, "/api/v1/restore/doc")
        .json(&json!({"version": 99}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn publish_and_unpublish() {
    let api = Api::start(&[]);
    api.put("/s", page("site")).await;
    api.put("/s/a", page("A")).await;
    api.put("/s/a/b", page("B")).await;
    assert_eq!(
        api.get_json("/api/v1/content/s/a?workspace=live").await.0,
        StatusCode::NOT_FOUND
    );

    let r = api
        .req(Method::POST, "/api/v1/publish/s/a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        api.get_json("/api/v1/content/s/a?workspace=live").await.0,
        StatusCode::OK
    );
    assert_eq!(
        api.get_json("/api/v1/content/s/a/b?workspace=live").await.0,
        StatusCode::NOT_FOUND
    );

    // Authoring edits do not reach live until published again.
    api.put("/s/a", page("A edited")).await;
    let (_, live) = api.get_json("/api/v1/content/s/a?workspace=live").await;
    assert_eq!(live["properties"]["title"], "A");

    let r = api
        .req(Method::POST, "/api/v1/publish/s?recursive=true")
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["published"], 3);
    let (_, live) = api.get_json("/api/v1/content/s/a?workspace=live").await;
    assert_eq!(live["properties"]["title"], "A edited");
    assert_eq!(
        api.get_json("/api/v1/children/s/a?workspace=live").await.1["total"],
        1
    );

    // Writing to live directly is refused; unpublish removes the subtree.
    let r = api
        .req(Method::PUT, "/api/v1/content/s/x?workspace=live")
        .json(&page("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = api
        .req(Method::POST, "/api/v1/unpublish/s/a?recursive=true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        api.get_json("/api/v1/content/s/a/b?workspace=live").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.get_json("/api/v1/content/s?workspace=live").await.0,
        StatusCode::OK
    );
    assert_eq!(
        api.get_json("/api/v1/content/s/a").await.0,
        StatusCode::OK,
        "authoring untouched"
    );
    let r = api
        .req(Method::POST, "/api/v1/unpublish/s/a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn binaries_streamed_deduplicated_with_ranges() {
    let api = Api::start(&["--max-binary-bytes", "300000"]);
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let r = api
        .req(Method::POST, "/api/v1/binaries")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let up: Value = r.json().await.unwrap();
    let sha = up["sha256"].as_str().unwrap().to_string();
    assert_eq!(
        sha,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data))
    );
    assert_eq!(up["size"], 200_000);

    // Same bytes again: deduplicated (one file on disk, no new journal entry).
    let seq_before = api.get_json("/api/v1/cluster/status").await.1["seq"].clone();
    let r = api
        .req(Method::POST, "/api/v1/binaries")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        api.get_json("/api/v1/cluster/status").await.1["seq"],
        seq_before
    );
    let files = std::fs::read_dir(api.node.data_dir.join("blobs"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_file())
        .count();
    assert_eq!(files, 1);

    // Full download, ranges, suffix range, unsatisfiable range.
    let r = api
        .req(Method::GET, &format!("/api/v1/binaries/{sha}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);
    let r = api
        .req(Method::GET, &format!("/api/v1/binaries/{sha}"))
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], "bytes 100-199/200000");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[100..200]);
    let r = api
        .req(Method::GET, &format!("/api/v1/binaries/{sha}"))
        .header("range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[199_990..]);
    let r = api
        .req(Method::GET, &format!("/api/v1/binaries/{sha}"))
        .header("range", "bytes=199999-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[199_999..]);
    let r = api
        .req(Method::GET, &format!("/api/v1/binaries/{sha}"))
        .header("range", "bytes=500000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["content-range"], "bytes */200000");

    // Referenced from properties; an unknown reference is refused.
    let r = api
        .put(
            "/img",
            json!({"type": "image", "properties": {"file": {"$binary": sha}}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = api
        .put(
            "/img2",
            json!({"type": "image", "properties": {"file": {"$binary": "ab".repeat(32)}}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        api.get_json(&format!("/api/v1/binaries/{}", "cd".repeat(32)))
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    // Over the size limit: 413, nothing stored.
    let big = vec![1u8; 300_001];
    let r = api
        .req(Method::POST, "/api/v1/binaries")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Streamed without a length: the limit still holds.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..40).map(|_| Ok(vec![2u8; 10_000])).collect();
    let r = api
        .req(Method::POST, "/api/v1/binaries")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await;
    // The server answers 413 as soon as the limit is crossed and stops reading; a
    // client still sending may see the connection close instead of the answer.
    if let Ok(r) = r {
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
    let files = std::fs::read_dir(api.node.data_dir.join("blobs"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_file())
        .count();
    assert_eq!(files, 1);
}

#[tokio::test]
async fn full_text_search_with_filters() {
    let api = Api::start(&[]);
    api.put("/news/a", json!({"type": "article", "properties": {"title": "Kubernetes operators", "tags": ["cloud", "ops"]}})).await;
    api.put(
        "/news/b",
        json!({"type": "page", "properties": {"title": "Operators guide"}}),
    )
    .await;
    api.put(
        "/blog/c",
        json!({"type": "article", "properties": {"body": {"text": "operators everywhere"}}}),
    )
    .await;
    api.put(
        "/blog/d",
        json!({"type": "article", "properties": {"title": "nothing here", "n": 5}}),
    )
    .await;

    let hits = |v: &Value| -> Vec<String> {
        let mut p: Vec<String> = v["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["path"].as_str().unwrap().to_string())
            .collect();
        p.sort();
        p
    };
    let (s, all) = api.get_json("/api/v1/search?q=operators").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(hits(&all), vec!["/blog/c", "/news/a", "/news/b"]);
    let (_, news) = api.get_json("/api/v1/search?q=operators&path=/news").await;
    assert_eq!(hits(&news), vec!["/news/a", "/news/b"]);
    let (_, articles) = api
        .get_json("/api/v1/search?q=operators&type=article")
        .await;
    assert_eq!(hits(&articles), vec!["/blog/c", "/news/a"]);
    let (_, both) = api.get_json("/api/v1/search?q=kubernetes%20cloud").await;
    assert_eq!(hits(&both), vec!["/news/a"]);
    // Query syntax is not interpreted: quotes and operators are plain words.
    assert_eq!(
        api.get_json("/api/v1/search?q=%22OR%20NEAR(").await.0,
        StatusCode::OK
    );
    // Deleted items leave the index; live has its own results.
    api.req(Method::DELETE, "/api/v1/content/news/b")
        .send()
        .await
        .unwrap();
    let (_, after) = api.get_json("/api/v1/search?q=operators").await;
    assert_eq!(hits(&after), vec!["/blog/c", "/news/a"]);
    assert_eq!(
        hits(
            &api.get_json("/api/v1/search?q=operators&workspace=live")
                .await
                .1
        ),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn authentication_and_roles() {
    let api = Api::start(&[]);
    let http = Client::new();
    let url = api.url("/api/v1/content/x");
    let put = |tok: Option<String>| {
        let mut r = http.put(&url).json(&page("x"));
        if let Some(t) = tok {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let status_and_code = |r: reqwest::Response| async move {
        let s = r.status();
        (s, assert_json_error(&r.text().await.unwrap(), "auth"))
    };
    assert_eq!(
        status_and_code(put(None).await.unwrap()).await.0,
        StatusCode::UNAUTHORIZED
    );
    let bad_sig = token_with_secret("ed", &["editor"], None, "another-secret");
    assert_eq!(
        status_and_code(put(Some(bad_sig)).await.unwrap()).await.0,
        StatusCode::UNAUTHORIZED
    );
    let expired = token("ed", &["editor"], Some(1_000_000));
    assert_eq!(
        status_and_code(put(Some(expired)).await.unwrap()).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status_and_code(put(Some("not.a.jwt".into())).await.unwrap())
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let r = http
        .put(&url)
        .header("authorization", "Basic abc")
        .json(&page("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let reader = token("rd", &["reader"], None);
    let (s, code) = status_and_code(put(Some(reader.clone())).await.unwrap()).await;
    assert_eq!((s, code.as_str()), (StatusCode::FORBIDDEN, "forbidden"));
    let nobody = token("nobody", &[], None);
    let r = http.get(&url).bearer_auth(nobody).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        put(Some(editor())).await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(put(Some(admin())).await.unwrap().status(), StatusCode::OK);
    // Roles as one string, or a single `role` claim, are understood too.
    let sign = |alg: jsonwebtoken::Algorithm, claims: Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(alg),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        )
        .unwrap()
    };
    let hs256 = jsonwebtoken::Algorithm::HS256;
    let as_text = sign(
        hs256,
        json!({"sub": "t", "roles": "reader editor", "exp": now_secs() + 600}),
    );
    assert_eq!(put(Some(as_text)).await.unwrap().status(), StatusCode::OK);
    let single = sign(
        hs256,
        json!({"sub": "t", "role": "reader", "exp": now_secs() + 600}),
    );
    assert_eq!(
        put(Some(single)).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    // Another algorithm is refused even with the right key.
    let hs512 = sign(
        jsonwebtoken::Algorithm::HS512,
        json!({"sub": "t", "roles": ["admin"], "exp": now_secs() + 600}),
    );
    assert_eq!(
        put(Some(hs512)).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let no_sub = sign(hs256, json!({"roles": ["admin"], "exp": now_secs() + 600}));
    assert_eq!(
        put(Some(no_sub)).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let r = http.get(&url).bearer_auth(&reader).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Internal routes take the cluster token, not a user JWT.
    let internal = api.url("/internal/v1/admin/digest");
    assert_eq!(
        http.get(&internal).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        http.get(&internal)
            .bearer_auth(admin())
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let r = http
        .get(&internal)
        .bearer_auth(CLUSTER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap()["digest"]
            .as_str()
            .unwrap()
            .len(),
        64
    );

    // Secrets never reach the log.
    let log = api.node.log_text();
    assert!(!log.contains(JWT_SECRET) && !log.contains(CLUSTER_TOKEN) && !log.contains(&reader));
}

#[tokio::test]
async fn every_bad_input_class_is_a_clear_4xx() {
    let api = Api::start(&["--max-body-bytes", "4096"]);
    let port = api.node.port;
    let auth = format!("Authorization: Bearer {}", api.token);
    let json_ct = "Content-Type: application/json";
    let long = "x".repeat(300);
    let too_long = "/abcdefgh".repeat(120);
    let deep = "/a".repeat(40);
    let big_body = format!(
        "{{\"type\":\"page\",\"properties\":{{\"t\":\"{}\"}}}}",
        "y".repeat(5000)
    );
    let ok_body = r#"{"type":"page","properties":{}}"#.to_string();
    // (name, request line + headers, body, expected status, expected error code)
    let cases: Vec<(&str, String, String, u16, &str)> = vec![
        (
            "malformed json",
            format!("PUT /api/v1/content/a HTTP/1.1\r\n{auth}\r\n{json_ct}"),
            "{\"type\":".into(),
            400,
            "invalid_json",
        ),
        (
            "json not an object",
            format!("PUT /api/v1/content/a HTTP/1.1\r\n{auth}\r\n{json_ct}"),
            "[1,2]".into(),
            400,
            "invalid_json",
        ),
        (
            "missing type",
            format!("PUT /api/v1/content/a HTTP/1.1\r\n{auth}\r\n{json_ct}"),
            "{\"properties\":{}}".into(),
            400,
            "invalid_json",
        ),
        (
            "unknown field",
            format!("PUT /api/v1/content/a HTTP/1.1\r\n{auth}\r\n{json_ct}"),
            "{\"type\":\"p\",\"x\":1}".into(),
            400,
            "invalid_json",
        ),
        (
            "properties not object",
            format!("PUT /api/v1/content/a HTTP/1.1\r\n{auth}\r\n{json_ct}"),
            "{\"type\":\"p\",\"properties\":3}".into(),
            400,
            "bad_request",
        ),
        (
            "empty type",
            format!("PUT /api/v1/content/a HTTP/1.1\r\n{auth}\r\n{json_ct}"),
            "{\"type\":\"\"}".into(),
            400,
            "bad_request",
        ),
        (
            "dot-dot segment",
            format!("PUT /api/v1/content/a/../b HTTP/1.1\r\n{auth}\r\n{json_ct}"),
            ok_body.clone(),
            400,
            "invalid_path",
        ),
        (
            "encoded dot-dot",
            format!("GET /api/v1/content/a/%2e%2e/b HTTP/1.1\r\n{auth}"),
            String::new(),
            400,
            "invalid_path",
        ),
        (
            "dot segment",
            format!("GET /api/v1/content/a/./b HTTP/1.1\r\n{auth}"),
            String::new(),
            400,
            "invalid_path",
        ),
        (
            "empty segment",
            format!("PUT /api/v1/content/a//b HTTP/1.1\r\n{auth}\r\n{json_ct}"),
            ok_body.clone(),
            400,
            "invalid_path",
        ),
        (
            "trailing slash",
            format!("GET /api/v1/content/a/ HTTP/1.1\r\n{auth}"),
            String::new(),
            400,
            "invalid_path",
        ),
        (
            "control character",
            format!("PUT /api/v1/content/a%01b HTTP/1.1\r\n{auth}\r\n{json_ct}"),
            ok_body.clone(),
            400,
            "invalid_path",
        ),
        (
            "newline in path",
            format!("GET /api/v1/content/a%0Ab HTTP/1.1\r\n{auth}"),
            String::new(),
            400,
            "invalid_path",
        ),
        (
            "invalid utf-8",
            format!("GET /api/v1/content/a%FFb HTTP/1.1\r\n{auth}"),
            String::new(),
            400,
            "invalid_path",
        ),
        (
            "over-long segment",
            format!("GET /api/v1/content/{long} HTTP/1.1\r\n{auth}"),
            String::new(),
            400,
            "invalid_path",
        ),
        (
            "over-long path",
            format!("GET /api/v1/content{too_long} HTTP/1.1\r\n{auth}"),
            String::new(),
            400,
            "invalid_path",
        ),
        (
            "too deep",
            format!("GET /api/v1/content{deep} HTTP/1.1\r\n{auth}"),
            String::new(),
            400,
            "invalid_path",
        ),
        (
            "move to bad path",
            format!("POST /api/v1/move HTTP/1.1\r\n{auth}\r\n{json_ct}"),
            "{\"from\":\"/a\",\"to\":\"/b/../c\"}".into(),
            400,
            "invalid_path",
        ),
        (
            "oversize body",
            format!("PUT /api/v1/content/a HTTP/1.1\r\n{auth}\r\n{json_ct}"),
            big_body,
            413,
            "too_large",
        ),
        (
            "wrong content type",
            format!("PUT /api/v1/content/a HTTP/1.1\r\n{auth}\r\nContent-Type: text/plain"),
            ok_body.clone(),
            415,
            "unsupported_media_type",
        ),
        (
            "no content type",
            format!("PUT /api/v1/content/a HTTP/1.1\r\n{auth}"),
            ok_body.clone(),
            415,
            "unsupported_media_type",
        ),
        (
            "unknown workspace",
            format!("GET /api/v1/content/a?workspace=staging HTTP/1.1\r\n{auth}"),
            String::new(),
            400,
            "unknown_workspace",
        ),
        (
            "unknown workspace on list",
            format!("GET /api/v1/children?workspace=x HTTP/1.1\r\n{auth}"),
            String::new(),
            400,
            "unknown_workspace",
        ),
        (
            "unknown query parameter",
            format!("GET /api/v1/content/a?foo=1 HTTP/1.1\r\n{auth}"),
            String::new(),
            400,
            "invalid_query",
        ),
        (
            "bad limit",
            format!("GET /api/v1/children?limit=100000 HTTP/1.1\r\n{auth}"),
            String::new(),
            400,
            "invalid_query",
        ),
        (
            "non-numeric version",
            format!("GET /api/v1/content/a?version=x HTTP/1.1\r\n{auth}"),
            String::new(),
            400,
            "invalid_query",
        ),
        (
            "bad if-match",
            format!("PUT /api/v1/content/a HTTP/1.1\r\n{auth}\r\n{json_ct}\r\nIf-Match: banana"),
            ok_body.clone(),
            400,
            "invalid_precondition",
        ),
        (
            "empty search",
            format!("GET /api/v1/search?q= HTTP/1.1\r\n{auth}"),
            String::new(),
            400,
            "invalid_query",
        ),
        (
            "bad binary id",
            format!("GET /api/v1/binaries/xyz HTTP/1.1\r\n{auth}"),
            String::new(),
            400,
            "invalid_binary_id",
        ),
        (
            "missing token",
            "GET /api/v1/content/a HTTP/1.1".to_string(),
            String::new(),
            401,
            "unauthorized",
        ),
        (
            "garbage token",
            "GET /api/v1/content/a HTTP/1.1\r\nAuthorization: Bearer abc.def.ghi".to_string(),
            String::new(),
            401,
            "unauthorized",
        ),
        (
            "wrong scheme",
            "GET /api/v1/content/a HTTP/1.1\r\nAuthorization: Token abc".to_string(),
            String::new(),
            401,
            "unauthorized",
        ),
        (
            "bad cluster token",
            "GET /internal/v1/admin/digest HTTP/1.1\r\nAuthorization: Bearer nope".to_string(),
            String::new(),
            401,
            "unauthorized",
        ),
        (
            "wrong method",
            format!("POST /api/v1/content/a HTTP/1.1\r\n{auth}"),
            String::new(),
            405,
            "method_not_allowed",
        ),
        (
            "binary id not utf-8",
            format!("GET /api/v1/binaries/%FF HTTP/1.1\r\n{auth}"),
            String::new(),
            400,
            "invalid_binary_id",
        ),
        (
            "unknown route",
            format!("GET /api/v1/nothing HTTP/1.1\r\n{auth}"),
            String::new(),
            404,
            "not_found",
        ),
    ];
    let mut failures = Vec::new();
    for (name, head, body, want_status, want_code) in &cases {
        let (status, resp) = raw_request(port, head, body.as_bytes()).await;
        let code = serde_json::from_str::<Value>(&resp)
            .ok()
            .and_then(|v| {
                v["message"].as_str().filter(|m| !m.is_empty())?;
                v["error"].as_str().map(str::to_string)
            })
            .unwrap_or_else(|| {
                format!(
                    "<not a JSON error: {:?}>",
                    resp.chars().take(200).collect::<String>()
                )
            });
        if status != *want_status || code != *want_code {
            failures.push(format!(
                "{name}: got {status} {code}, want {want_status} {want_code}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "bad-input cases failed:\n{}",
        failures.join("\n")
    );
    // Nothing was written and the node is still serving.
    let (s, status) = api.get_json("/api/v1/cluster/status").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(status["seq"], 0);
    assert!(api.node.log_text().find("panicked").is_none());
}

#[tokio::test]
async fn operations_endpoints() {
    let api = Api::start(&[]);
    let http = Client::new();
    assert_eq!(
        http.get(api.url("/healthz")).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        http.get(api.url("/readyz")).send().await.unwrap().status(),
        StatusCode::OK
    );
    api.put("/m", page("m")).await;
    // The cluster's state is for readers (and members), not for anyone who can connect.
    let anonymous = http
        .get(api.url("/api/v1/cluster/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let body: Value = anonymous.json().await.unwrap();
    assert!(body["message"].as_str().is_some(), "{body}");
    let no_role = http
        .get(api.url("/api/v1/cluster/status"))
        .bearer_auth(token("nobody", &[], None))
        .send()
        .await
        .unwrap();
    assert_eq!(no_role.status(), StatusCode::FORBIDDEN);
    // Behind the API server's pod proxy, which owns `Authorization`.
    let proxied = http
        .get(api.url("/api/v1/cluster/status"))
        .header(
            "X-Studio-Authorization",
            format!("Bearer {}", token("rd", &["reader"], None)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), StatusCode::OK);
    let status: Value = http
        .get(api.url("/api/v1/cluster/status"))
        .bearer_auth(token("rd", &["reader"], None))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["role"], "primary");
    assert_eq!(status["nodeId"], "primary");
    assert_eq!(status["seq"], 1);
    assert_eq!(status["term"], 1);
    assert!(status["clusterId"].as_str().is_some_and(|s| !s.is_empty()));
    let metrics = http
        .get(api.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("studio_journal_seq 1"), "{metrics}");
    assert!(metrics.contains("studio_http_requests_total{method=\"PUT\",route=\"/api/v1/content/{*path}\",status=\"201\"} 1"), "{metrics}");
    assert!(metrics.contains("studio_http_request_duration_seconds_bucket"));
    let doc: Value = http
        .get(api.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/v1/content/{path}"]["put"].is_object());
}

#[tokio::test]
async fn configured_through_environment_variables() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_env(
        &dir.path().join("data"),
        &[
            ("STUDIO_STANDALONE", "true"),
            ("STUDIO_JWT_SECRET", JWT_SECRET),
            ("STUDIO_CLUSTER_TOKEN", CLUSTER_TOKEN),
            ("STUDIO_NODE_ID", "env-node"),
            ("STUDIO_MAX_BODY_BYTES", "100"),
        ],
    );
    let http = Client::new();
    let url = format!("{}/api/v1/content/e", node.url);
    assert_eq!(
        http.put(&url)
            .json(&page("e"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let small = json!({"type": "t"});
    assert_eq!(
        http.put(&url)
            .bearer_auth(editor())
            .json(&small)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
    let r = http
        .put(&url)
        .bearer_auth(editor())
        .json(&page(&"z".repeat(200)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let status: Value = http
        .get(format!("{}/api/v1/cluster/status", node.url))
        .bearer_auth(CLUSTER_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["nodeId"], "env-node");
    assert_eq!(status["role"], "primary");
    let internal = format!("{}/internal/v1/admin/quarantine", node.url);
    assert_eq!(
        http.get(&internal).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let q: Value = http
        .get(&internal)
        .bearer_auth(CLUSTER_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(q["entries"], json!([]));
}

/// A node without its secrets refuses to start (rather than serving content without
/// authentication) and says which flags fix it.
#[test]
fn missing_secrets_refuse_to_start_unless_insecure_is_explicit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let stderr = refused_start(dir.path(), &[], &[]);
    assert!(
        stderr.contains("--jwt-secret-file") && stderr.contains("--insecure-no-auth"),
        "the error names the flags: {stderr}"
    );
}
