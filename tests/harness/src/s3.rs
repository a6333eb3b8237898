//! A real S3-compatible object store for the backup tests: [versitygw] (the Versity S3
//! Gateway, Apache-2.0) with its POSIX backend on a temporary directory. No mock: the
//! tests' S3 client and the pods of the local cluster speak S3 (SigV4, path-style
//! addressing) to a real server.
//!
//! - [`S3Server::start`] makes sure the local cluster is up (its bridge carries the
//!   address pods reach the host on), generates a root access key and secret for this
//!   server, starts versitygw listening on `127.0.0.1:<port>` (for the test process) and
//!   on `<bridge address>:<port>` (for pods, [`BRIDGE_ADDR`]), creates the bucket with a
//!   signed `CreateBucket` and waits until a signed `HeadBucket` answers 200 on both
//!   addresses.
//! - [`S3Server::stop`] kills the server (an outage of the object store);
//!   [`S3Server::start_again`] restarts it on the same port with the same data and
//!   credentials and waits until it serves the bucket again.
//! - The server is killed when the value is dropped; its data directory is removed.
//!
//! The binary is built from the Go module proxy by `scripts/build-versitygw.sh` (also run
//! by `scripts/build-controlplane.sh`, i.e. `make controlplane`); `STUDIO_VERSITYGW`
//! names another binary.
//!
//! [versitygw]: https://github.com/versity/versitygw

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use ring::{digest, hmac, rand::SecureRandom};

/// The host's address on the local cluster's bridge (`BRIDGE_ADDR` of
/// `scripts/lib-cluster.sh`): pods' default gateway and `status.hostIP`, so every pod
/// reaches a host service listening on it.
pub const BRIDGE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);

/// The region versitygw serves (its default) and SigV4 signs for.
pub const REGION: &str = "us-east-1";

/// How long a start (or restart) may take until the bucket answers.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The versitygw binary: `STUDIO_VERSITYGW`, else `versitygw` in `STUDIO_CP_BIN`, else in
/// the cache bin directory of the build scripts
/// (`${STUDIO_CACHE:-${XDG_CACHE_HOME:-~/.cache}/studio}/bin`).
pub fn versitygw_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = super::env_path("STUDIO_VERSITYGW") {
        if p.is_file() {
            return Ok(p);
        }
        bail!(
            "STUDIO_VERSITYGW={} is not a file (scripts/build-versitygw.sh builds versitygw)",
            p.display()
        );
    }
    let mut candidates = Vec::new();
    if let Some(dir) = super::env_path("STUDIO_CP_BIN") {
        candidates.push(dir.join("versitygw"));
    }
    let cache = super::env_path("STUDIO_CACHE")
        .or_else(|| super::env_path("XDG_CACHE_HOME").map(|c| c.join("studio")))
        .or_else(|| super::env_path("HOME").map(|h| h.join(".cache/studio")));
    if let Some(cache) = cache {
        candidates.push(cache.join("bin/versitygw"));
    }
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    bail!(
        "the versitygw binary is missing (looked for {}): run scripts/build-versitygw.sh \
         (or make controlplane), or set STUDIO_VERSITYGW",
        super::join(candidates.iter().map(|p| p.display()))
    )
}

/// A running (or stopped) versitygw S3 server with one bucket. Killed on drop.
pub struct S3Server {
    bin: PathBuf,
    bucket: String,
    access_key_id: String,
    secret_access_key: String,
    port: u16,
    child: Option<Child>,
    log: PathBuf,
    root: PathBuf,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts a server with an empty bucket `bucket` (an S3 bucket name: 3–63 of
    /// `a-z0-9.-`) and waits until the bucket answers a signed request on the host's
    /// and the pods' address. Brings the local cluster up if it is not (its bridge
    /// carries the pods' address).
    pub async fn start(bucket: &str) -> anyhow::Result<S3Server> {
        let valid = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !valid {
            bail!("{bucket:?} is not a valid S3 bucket name (3-63 characters of a-z0-9.-)");
        }
        super::cluster()?;
        let bin = versitygw_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("studio-s3-")
            .tempdir()
            .context("a directory for the S3 server")?;
        let root = dir.path().join("data");
        std::fs::create_dir(&root).with_context(|| format!("creating {}", root.display()))?;
        let rng = ring::rand::SystemRandom::new();
        let mut server = S3Server {
            bin,
            bucket: bucket.to_string(),
            access_key_id: random_string(&rng, 20, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")?,
            secret_access_key: random_string(
                &rng,
                40,
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            )?,
            port: free_port()?,
            child: None,
            log: dir.path().join("versitygw.log"),
            root,
            http: reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(5))
                .build()
                .context("building an HTTP client")?,
            _dir: dir,
        };
        server.spawn()?;
        // Any signed answer from the service (ListBuckets) means it listens and takes
        // our credentials; then the bucket is created through the S3 API.
        server
            .wait(
                "the S3 service to answer ListBuckets",
                &server.endpoint_for_host(),
                "/",
            )
            .await?;
        let path = format!("/{}", server.bucket);
        let (status, body) = server
            .signed(reqwest::Method::PUT, &server.endpoint_for_host(), &path)
            .await
            .context("CreateBucket")?;
        if status != 200 {
            bail!(
                "CreateBucket {} answered {status}: {body}\n{}",
                server.bucket,
                server.log_tail(20)
            );
        }
        server.wait_bucket().await?;
        eprintln!(
            "[harness] S3 server (versitygw) on {} (pods: {}), bucket {}, data in {}",
            server.endpoint_for_host(),
            server.endpoint_for_pods(),
            server.bucket,
            server.root.display()
        );
        Ok(server)
    }

    /// The S3 endpoint for the test process: `http://127.0.0.1:<port>`.
    pub fn endpoint_for_host(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The S3 endpoint for pods of the local cluster: `http://10.213.0.1:<port>` (the
    /// host's address on the cluster bridge; it works from the host too).
    pub fn endpoint_for_pods(&self) -> String {
        format!("http://{BRIDGE_ADDR}:{}", self.port)
    }

    /// The root access key id (generated for this server).
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The root secret access key (generated for this server).
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// The bucket created at start.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The region to sign for ([`REGION`]).
    pub fn region(&self) -> &str {
        REGION
    }

    /// The port the server listens on (on both addresses).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The POSIX backend's root: the bucket is the directory `<data_dir>/<bucket>`, an
    /// object `a/b` the file `<data_dir>/<bucket>/a/b`.
    pub fn data_dir(&self) -> &Path {
        &self.root
    }

    /// Whether the server process runs (it was not stopped and did not exit).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Kills the server (SIGKILL: an abrupt outage; what it had acknowledged is on
    /// disk). Connections are refused until [`S3Server::start_again`]. A no-op when
    /// it is not running.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            // kill fails only if the process has already exited: reap it either way.
            let _ = child.kill();
            child.wait().context("waiting for versitygw to exit")?;
            eprintln!("[harness] S3 server on port {} stopped", self.port);
        }
        Ok(())
    }

    /// Starts the stopped server again: the same port, data and credentials. Waits
    /// until the bucket answers a signed request on both addresses.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            bail!("the S3 server on port {} is still running", self.port);
        }
        self.stop()?;
        self.spawn()?;
        self.wait_bucket().await?;
        eprintln!("[harness] S3 server on port {} started again", self.port);
        Ok(())
    }

    /// The last `n` lines of the server's log (for failure reports).
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "----- {} (last {} lines)\n{}",
            self.log.display(),
            n,
            lines[lines.len().saturating_sub(n)..].join("\n")
        )
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(&self.bin)
            // The credentials go through the environment, not the command line.
            .env("ROOT_ACCESS_KEY_ID", &self.access_key_id)
            .env("ROOT_SECRET_ACCESS_KEY", &self.secret_access_key)
            .env("VGW_REGION", REGION)
            .arg("--port")
            .arg(SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)).to_string())
            .arg("--port")
            .arg(SocketAddr::from((BRIDGE_ADDR, self.port)).to_string())
            .arg("posix")
            .arg(&self.root)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating the log file")?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (scripts/build-versitygw.sh builds it)",
                    self.bin.display()
                )
            })?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until a signed HeadBucket answers 200 on the host's and the pods' address.
    async fn wait_bucket(&mut self) -> anyhow::Result<()> {
        let path = format!("/{}", self.bucket);
        for endpoint in [self.endpoint_for_host(), self.endpoint_for_pods()] {
            self.wait(&format!("bucket {}", self.bucket), &endpoint, &path)
                .await?;
        }
        Ok(())
    }

    /// Polls a signed GET (`/`: ListBuckets) or HEAD (`/<bucket>`: HeadBucket) until it
    /// answers 200; fails at once if the server process exits.
    async fn wait(&mut self, what: &str, endpoint: &str, path: &str) -> anyhow::Result<()> {
        let method = if path == "/" {
            reqwest::Method::GET
        } else {
            reqwest::Method::HEAD
        };
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().context("checking on versitygw")?
            {
                self.child = None;
                bail!(
                    "versitygw exited ({status}) while waiting for {what}\n{}",
                    self.log_tail(30)
                );
            }
            let observed = match self.signed(method.clone(), endpoint, path).await {
                Ok((200, _)) => return Ok(()),
                Ok((status, body)) => format!("{status}: {body}"),
                Err(e) => format!("{e:#}"),
            };
            if start.elapsed() > READY_TIMEOUT {
                bail!(
                    "timed out after {}s waiting for {what} at {endpoint}; last observed: {observed}\n{}",
                    READY_TIMEOUT.as_secs(),
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One SigV4-signed request without a body (path-style, no query); returns the
    /// status and the body.
    async fn signed(
        &self,
        method: reqwest::Method,
        endpoint: &str,
        path: &str,
    ) -> anyhow::Result<(u16, String)> {
        let host = endpoint
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("{endpoint} is not an http:// endpoint"))?;
        let now = chrono::Utc::now();
        let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
        let day = now.format("%Y%m%d").to_string();
        let payload = hex(digest::digest(&digest::SHA256, b"").as_ref());
        let signed_headers = "host;x-amz-content-sha256;x-amz-date";
        let canonical = format!(
            "{method}\n{path}\n\nhost:{host}\nx-amz-content-sha256:{payload}\nx-amz-date:{amz_date}\n\n{signed_headers}\n{payload}"
        );
        let scope = format!("{day}/{REGION}/s3/aws4_request");
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
        );
        let mut key = format!("AWS4{}", self.secret_access_key).into_bytes();
        for part in [day.as_str(), REGION, "s3", "aws4_request"] {
            key = hmac_sha256(&key, part.as_bytes());
        }
        let signature = hex(&hmac_sha256(&key, to_sign.as_bytes()));
        let url = format!("{endpoint}{path}");
        let resp = self
            .http
            .request(method.clone(), &url)
            .header("x-amz-date", &amz_date)
            .header("x-amz-content-sha256", &payload)
            .header(
                "authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
                    self.access_key_id
                ),
            )
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .text()
            .await
            .with_context(|| format!("reading the body of {method} {url}"))?;
        Ok((status, body))
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port free on both the loopback and the bridge address (versitygw binds both).
fn free_port() -> anyhow::Result<u16> {
    let mut last = None;
    for _ in 0..20 {
        let bridge = TcpListener::bind((BRIDGE_ADDR, 0)).with_context(|| {
            format!(
                "binding {BRIDGE_ADDR}: the local cluster's bridge address is not on this host \
                 (is the cluster up? scripts/cluster-up.sh)"
            )
        })?;
        let port = bridge.local_addr().context("the bound address")?.port();
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            Ok(_) => return Ok(port),
            Err(e) => last = Some(e),
        }
    }
    Err(anyhow!(
        "no port free on both 127.0.0.1 and {BRIDGE_ADDR} in 20 tries (last: {last:?})"
    ))
}

/// `len` characters drawn from `alphabet` (at most 256 characters; a slight bias when
/// its length does not divide 256 is harmless for a test credential).
fn random_string(
    rng: &ring::rand::SystemRandom,
    len: usize,
    alphabet: &[u8],
) -> anyhow::Result<String> {
    let mut bytes = vec![0u8; len];
    rng.fill(&mut bytes)
        .map_err(|_| anyhow!("the system random number generator failed"))?;
    Ok(bytes
        .iter()
        .map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()]))
        .collect())
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signing key derivation and signature of AWS' SigV4 documentation example
    /// (GET /test.txt of examplebucket, 2013-05-24) for the known secret.
    #[test]
    fn sigv4_signing_key_matches_the_aws_example() {
        let mut key = b"AWS4wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_vec();
        for part in ["20130524", "us-east-1", "s3", "aws4_request"] {
            key = hmac_sha256(&key, part.as_bytes());
        }
        let to_sign = "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972";
        assert_eq!(
            hex(&hmac_sha256(&key, to_sign.as_bytes())),
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }
}
