//! Shared helpers for tests that run `studio-node` as separate processes on loopback.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub mod cluster;
pub mod s3;

pub const JWT_SECRET: &str = "test-jwt-secret-0123456789";
pub const CLUSTER_TOKEN: &str = "test-cluster-token-abcdef";

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `studio-node` process.
pub struct Node {
    pub child: Option<Child>,
    pub port: u16,
    pub url: String,
    pub data_dir: PathBuf,
    pub args: Vec<String>,
    secrets_dir: PathBuf,
    log: PathBuf,
}

/// Writes the shared secrets into `dir` and returns the common flags.
/// With TLS (`tls`) members authenticate by certificate and no cluster token is given.
fn secret_args(dir: &Path, tls: bool) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    let jwt = dir.join("jwt");
    std::fs::write(&jwt, JWT_SECRET).unwrap();
    let mut args = vec!["--jwt-secret-file".into(), jwt.display().to_string()];
    if !tls {
        let token = dir.join("token");
        std::fs::write(&token, CLUSTER_TOKEN).unwrap();
        args.extend(["--cluster-token-file".into(), token.display().to_string()]);
    }
    args
}

impl Node {
    /// Starts a node with the shared secrets and `extra` flags, and waits until it
    /// answers /healthz.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Node {
        let port = free_port();
        let secrets_dir = data_dir.with_extension("secrets");
        let tls = extra.contains(&"--tls-dir");
        let mut args = secret_args(&secrets_dir, tls);
        args.extend(["--data-dir".into(), data_dir.display().to_string()]);
        args.extend(["--listen".into(), format!("127.0.0.1:{port}")]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = data_dir.with_extension("log");
        let scheme = if tls { "https" } else { "http" };
        let mut node = Node {
            child: None,
            port,
            url: format!("{scheme}://127.0.0.1:{port}"),
            data_dir: data_dir.to_path_buf(),
            args,
            secrets_dir,
            log,
        };
        node.spawn();
        node
    }

    /// Starts a standalone primary.
    pub fn standalone(data_dir: &Path, extra: &[&str]) -> Node {
        let mut args = vec!["--standalone", "--node-id", "primary"];
        args.extend_from_slice(extra);
        Node::start(data_dir, &args)
    }

    /// Starts a node configured only through `envs` (plus data dir and listen port
    /// env vars), without the shared secret files.
    pub fn start_env(data_dir: &Path, envs: &[(&str, &str)]) -> Node {
        let port = free_port();
        let mut node = Node {
            child: None,
            port,
            url: format!("http://127.0.0.1:{port}"),
            data_dir: data_dir.to_path_buf(),
            args: Vec::new(),
            secrets_dir: data_dir.with_extension("secrets"),
            log: data_dir.with_extension("log"),
        };
        let mut envs: Vec<(String, String)> = envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        envs.push(("STUDIO_DATA_DIR".into(), data_dir.display().to_string()));
        envs.push(("STUDIO_LISTEN".into(), format!("127.0.0.1:{port}")));
        node.spawn_with(&envs);
        node
    }

    fn spawn(&mut self) {
        self.spawn_with(&[]);
    }

    fn spawn_with(&mut self, envs: &[(String, String)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_studio-node"))
            .args(&self.args)
            .env_remove("STUDIO_JWT_SECRET")
            .env_remove("STUDIO_CLUSTER_TOKEN")
            .env("STUDIO_LOG", "info")
            .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn studio-node");
        self.child = Some(child);
        self.wait_healthy();
    }

    /// Waits until /healthz answers (the process is serving), or panics with the log.
    pub fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("{}/healthz", self.url);
        let tls = self.url.starts_with("https://");
        loop {
            // A TLS node: the port accepting connections is enough here (the tests
            // speak TLS to it themselves).
            if tls && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Ok(true) = plain_http::get_ok(&url) {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("studio-node exited with {status}: {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "studio-node did not become healthy: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again with the same flags and port.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.secrets_dir);
    }
}

/// Minimal blocking GET used by the health wait (no extra runtime needed).
mod plain_http {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    pub fn get_ok(url: &str) -> std::io::Result<bool> {
        let rest = url.trim_start_matches("http://");
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut s = TcpStream::connect(host)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(
            s,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        Ok(buf.starts_with("HTTP/1.1 200"))
    }
}

/// Unix seconds now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An HS256 JWT for `sub` with `roles`, expiring at `exp` (unix s; default an hour from
/// now: the node requires `exp`).
pub fn token(sub: &str, roles: &[&str], exp: Option<i64>) -> String {
    token_with_secret(sub, roles, exp, JWT_SECRET)
}

pub fn token_with_secret(sub: &str, roles: &[&str], exp: Option<i64>, secret: &str) -> String {
    let claims = json!({"sub": sub, "roles": roles, "exp": exp.unwrap_or(now_secs() + 3600)});
    sign_claims(&claims, secret)
}

/// An HS256 JWT with exactly these claims.
pub fn sign_claims(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub fn editor() -> String {
    token("ed", &["editor"], None)
}

pub fn admin() -> String {
    token("root", &["admin"], None)
}

/// A raw HTTP/1.1 request (for inputs an HTTP client would normalise, like `..`).
/// Returns (status, body).
pub async fn raw_request(port: u16, head: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!(
        "{head}\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Asserts a JSON error body `{"error": code, "message": ...}`.
pub fn assert_json_error(body: &str, ctx: &str) -> String {
    let v: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{ctx}: error body is not JSON ({e}): {body:?}"));
    let code = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{ctx}: no error code in {body}"));
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{ctx}: no message in {body}"
    );
    code.to_string()
}

/// Runs a standalone `studio-node` that must refuse to start: none of the secret
/// variables of the caller's environment, `envs` set, `extra` flags added. Returns its
/// stderr (the error a user would read).
pub fn refused_start(data_dir: &Path, extra: &[&std::ffi::OsStr], envs: &[(&str, &str)]) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_studio-node"));
    cmd.args([
        "--standalone",
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "text",
    ])
    .arg("--data-dir")
    .arg(data_dir)
    .args(extra);
    for v in [
        "STUDIO_JWT_SECRET",
        "STUDIO_JWT_SECRET_FILE",
        "STUDIO_CLUSTER_TOKEN",
        "STUDIO_CLUSTER_TOKEN_FILE",
        "STUDIO_INSECURE_NO_AUTH",
    ] {
        cmd.env_remove(v);
    }
    cmd.envs(envs.iter().copied());
    let out = cmd.output().expect("run studio-node");
    assert!(
        !out.status.success(),
        "studio-node started: {extra:?} {envs:?}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}
