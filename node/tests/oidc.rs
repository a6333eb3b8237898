//! User tokens from a real OpenID Connect identity provider: Keycloak (fetched from
//! Maven Central by `scripts/fetch-keycloak.sh`) runs a realm `cms` with a client
//! `studio` and a user holding the realm role `editor`. The node verifies its RS256
//! tokens against the realm's JWKS (issuer, audience and the `realm_access.roles`
//! claim configured), refuses a tampered one, and accepts tokens again after the
//! provider rotates its signing key — without a restart.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const REALM: &str = "cms";

/// A Keycloak server in its own process group, stopped on drop.
struct Keycloak {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Drop for Keycloak {
    fn drop(&mut self) {
        // kc.sh starts java as a child: stop the whole group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

fn realm_file(dir: &Path) -> PathBuf {
    let realm = json!({
        "realm": REALM,
        "enabled": true,
        "roles": {"realm": [{"name": "reader"}, {"name": "editor"}, {"name": "admin"}]},
        "clients": [{
            "clientId": "studio",
            "enabled": true,
            "publicClient": true,
            "directAccessGrantsEnabled": true,
            "standardFlowEnabled": false,
            "protocolMappers": [{
                "name": "studio-audience",
                "protocol": "openid-connect",
                "protocolMapper": "oidc-audience-mapper",
                "config": {"included.client.audience": "studio", "access.token.claim": "true",
                           "id.token.claim": "false"}
            }]
        }],
        "users": [{
            "username": "ed", "enabled": true, "email": "ed@example.com",
            "emailVerified": true, "firstName": "Ed", "lastName": "Itor",
            "credentials": [{"type": "password", "value": "ed-password", "temporary": false}],
            "realmRoles": ["editor"]
        }]
    });
    let path = dir.join("cms-realm.json");
    std::fs::write(&path, realm.to_string()).expect("writing the realm file");
    path
}

impl Keycloak {
    fn start(dir: &Path) -> Keycloak {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = Command::new(repo.join("scripts/fetch-keycloak.sh"))
            .output()
            .expect("running scripts/fetch-keycloak.sh");
        assert!(
            out.status.success(),
            "fetch-keycloak: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut lines = text.lines();
        let (home, java) = (
            lines.next().unwrap_or_default().to_string(),
            lines.next().unwrap_or_default().to_string(),
        );
        // --import-realm reads <home>/data/import (the same file every run).
        let import = Path::new(&home).join("data/import");
        std::fs::create_dir_all(&import).expect("import dir");
        realm_file(&import);
        let port = free_port();
        let log = dir.join("keycloak.log");
        let child = Command::new(Path::new(&home).join("bin/kc.sh"))
            .args([
                "start-dev",
                "--db=dev-mem",
                "--http-host=127.0.0.1",
                &format!("--http-port={port}"),
                &format!("--http-management-port={}", free_port()),
                "--import-realm",
            ])
            .env("JAVA_HOME", &java)
            .env("KC_BOOTSTRAP_ADMIN_USERNAME", "admin")
            .env("KC_BOOTSTRAP_ADMIN_PASSWORD", "admin")
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .expect("starting Keycloak");
        Keycloak {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    fn issuer(&self) -> String {
        format!("{}/realms/{REALM}", self.url)
    }

    async fn wait_ready(&mut self, http: &Client) {
        let deadline = Instant::now() + Duration::from_secs(300);
        let url = format!("{}/.well-known/openid-configuration", self.issuer());
        loop {
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "Keycloak exited ({st}): {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "Keycloak not ready after 300 s: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// A password-grant access token.
    async fn token(
        &self,
        http: &Client,
        realm: &str,
        client: &str,
        user: &str,
        pw: &str,
    ) -> String {
        let r: Value = http
            .post(format!(
                "{}/realms/{realm}/protocol/openid-connect/token",
                self.url
            ))
            .form(&[
                ("grant_type", "password"),
                ("client_id", client),
                ("username", user),
                ("password", pw),
            ])
            .send()
            .await
            .expect("token request")
            .json()
            .await
            .expect("token JSON");
        r["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access token: {r}"))
            .to_string()
    }

    /// Adds a new RSA signing key with a higher priority: new tokens are signed with it.
    async fn rotate_key(&self, http: &Client) {
        let admin = self
            .token(http, "master", "admin-cli", "admin", "admin")
            .await;
        let realm: Value = http
            .get(format!("{}/admin/realms/{REALM}", self.url))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("realm")
            .json()
            .await
            .expect("realm JSON");
        let r = http
            .post(format!("{}/admin/realms/{REALM}/components", self.url))
            .bearer_auth(&admin)
            .json(&json!({
                "name": "rotated-rsa",
                "providerId": "rsa-generated",
                "providerType": "org.keycloak.keys.KeyProvider",
                "parentId": realm["id"],
                "config": {"priority": ["500"], "enabled": ["true"], "active": ["true"],
                           "algorithm": ["RS256"], "keySize": ["2048"]}
            }))
            .send()
            .await
            .expect("adding a key");
        assert!(r.status().is_success(), "adding a key: {}", r.status());
    }
}

fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .ok()
        .and_then(|h| h.kid)
        .unwrap_or_default()
}

async fn put(http: &Client, node: &Node, token: &str) -> (StatusCode, String) {
    let r = http
        .put(format!("{}/api/v1/content/oidc", node.url))
        .bearer_auth(token)
        .json(&json!({"type": "page", "properties": {"title": "from the IdP"}}))
        .send()
        .await
        .expect("the node answers");
    let s = r.status();
    (s, r.text().await.unwrap_or_default())
}

#[tokio::test]
async fn tokens_from_keycloak_are_verified_and_survive_a_key_rotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client");
    let mut kc = Keycloak::start(dir.path());
    kc.wait_ready(&http).await;
    eprintln!("[oidc] Keycloak ready at {}", kc.url);
    let certs = format!("{}/protocol/openid-connect/certs", kc.issuer());
    let issuer = kc.issuer();
    let node = Node::standalone(
        &dir.path().join("data"),
        &[
            "--jwks-url",
            &certs,
            "--jwt-issuer",
            &issuer,
            "--jwt-audience",
            "studio",
            "--jwt-roles-claim",
            "realm_access.roles",
        ],
    );

    let first = kc.token(&http, REALM, "studio", "ed", "ed-password").await;
    eprintln!("[oidc] token from Keycloak, key {}", kid(&first));
    let (s, body) = put(&http, &node, &first).await;
    assert!(s.is_success(), "a Keycloak token was refused: {s} {body}");

    // A tampered signature.
    let mut bad = first.clone();
    let last = bad.pop().unwrap_or('A');
    bad.push(if last == 'A' { 'B' } else { 'A' });
    let (s, body) = put(&http, &node, &bad).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(assert_json_error(&body, "tampered"), "unauthorized");

    // The provider rotates its key: new tokens name a key the node has not seen.
    kc.rotate_key(&http).await;
    eprintln!("[oidc] Keycloak key rotated");
    let second = kc.token(&http, REALM, "studio", "ed", "ed-password").await;
    assert_ne!(kid(&first), kid(&second), "Keycloak did not switch keys");
    let (s, body) = put(&http, &node, &second).await;
    assert!(
        s.is_success(),
        "a token signed with the new key was refused: {s} {body}"
    );
    // Tokens signed with the old key stay valid until they expire.
    let (s, body) = put(&http, &node, &first).await;
    assert!(s.is_success(), "{s} {body}");
}
