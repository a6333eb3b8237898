//! studio-backupbench: continuous archiving, base backup and restore, and the recovery
//! point (RPO) of an async primary, against a real S3 server (versitygw, POSIX
//! backend) and `studio-node` processes (the binary next to this one) on loopback
//! with temporary dirs.
//!
//!     scripts/build-versitygw.sh
//!     cargo build --release -p studio-node --bins
//!     target/release/studio-backupbench --writers 16 --seconds 20 --size-mib 1024 --rpo-runs 5
//!
//! - `archive`: W writers of 1 KiB items for S seconds against a standalone primary
//!   archiving with `--archive-timeout 1`; write rate, the time the archive needs to
//!   catch up once the writers stop, archived entries/s and compressed MB/s
//!   (`studio_archive_bytes_total`), and the largest archive lag the status showed
//!   (polled every 200 ms); then the archiver's own speed: the same journal archived
//!   again from seq 1 into an empty folder after a restart.
//! - `base`: fills a primary with binaries of `--binary-mib` (pseudo-random, distinct),
//!   an item referencing each and `--small-items` small items; times a base backup
//!   while none of the binaries is archived yet ("cold": the archive timeout is an
//!   hour, so the archiver holds the journal back), then, after a restart with
//!   `--archive-timeout 1` and the archive caught up, a second one ("warm": the
//!   binaries are in the archive already, as on a cluster that archives all along);
//!   then times a restore into a new node from its start to /healthz and to a content
//!   digest equal to the source's.
//! - `rpo`: a standalone async primary archiving with `--archive-timeout 1` under W
//!   writers is killed (SIGKILL) at a random moment after a warm-up; the archive is
//!   read from the S3 server's data dir: acknowledged writes absent from it (entries)
//!   and the time between the last archived entry's write and the kill (seconds).
//!
//! `STUDIO_BENCH_KEEP=1` keeps the temporary dir (node and versitygw logs). The base
//! part needs about three times `--size-mib` of space in `--work-dir` at its peak.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use serde_json::{Value, json};
use studio_node::backup::layout::SegmentName;
use studio_node::backup::segment;
use studio_node::storage::Op;

#[derive(Parser, Debug)]
#[command(
    name = "studio-backupbench",
    about = "Benchmark studio-node archiving, base backup, restore and RPO against versitygw"
)]
struct Args {
    /// The versitygw binary (default: ~/.cache/studio/bin/versitygw, built by
    /// scripts/build-versitygw.sh).
    #[arg(long, env = "STUDIO_VERSITYGW")]
    versitygw: Option<PathBuf>,
    /// Parts to run (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Part::Archive, Part::Base, Part::Rpo])]
    parts: Vec<Part>,
    /// Concurrent writers (archive and rpo).
    #[arg(long, default_value_t = 16)]
    writers: usize,
    /// Seconds of writes in the archive part.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Binary content of the base backup part, in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Size of each binary, in MiB.
    #[arg(long, default_value_t = 4)]
    binary_mib: u64,
    /// Small items besides the items referencing the binaries.
    #[arg(long, default_value_t = 3000)]
    small_items: usize,
    /// RPO measurements (a new primary each).
    #[arg(long, default_value_t = 5)]
    rpo_runs: usize,
    /// Seconds of writes before the kill window opens.
    #[arg(long, default_value_t = 3.0)]
    rpo_warmup: f64,
    /// The kill comes at a uniformly random moment within this many seconds after the
    /// warm-up.
    #[arg(long, default_value_t = 3.0)]
    rpo_window: f64,
    /// Seed of the kill moments (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Where the temporary dir goes (default: the system's temp dir).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    Archive,
    Base,
    Rpo,
}

// ---- processes ----------------------------------------------------------------------

fn versitygw_bin(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let p = match flag {
        Some(p) => p,
        None => {
            let cache = std::env::var_os("STUDIO_CACHE")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("studio"))
                })
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/studio"))
                })
                .context("no HOME: pass --versitygw")?;
            cache.join("bin/versitygw")
        }
    };
    if !p.is_file() {
        bail!(
            "{} is missing: run scripts/build-versitygw.sh or pass --versitygw",
            p.display()
        );
    }
    Ok(p)
}

fn node_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .context("no parent dir")?
        .join(format!("studio-node{}", std::env::consts::EXE_SUFFIX));
    if !bin.is_file() {
        bail!("{} not found: build studio-node first", bin.display());
    }
    Ok(bin)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn random_hex(n: usize) -> String {
    let mut s = String::new();
    while s.len() < n {
        s.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    s.truncate(n);
    s
}

/// versitygw on loopback with the POSIX backend: the bucket is a directory of `root`.
struct S3 {
    child: Child,
    port: u16,
    root: PathBuf,
    bucket: String,
    key_id: String,
    secret: String,
}

impl S3 {
    async fn start(bin: &Path, dir: &Path) -> anyhow::Result<S3> {
        let root = dir.join("s3");
        let bucket = "studio-bench".to_string();
        std::fs::create_dir_all(root.join(&bucket))?;
        let log = std::fs::File::create(dir.join("versitygw.log"))?;
        let port = free_port()?;
        let key_id = random_hex(20).to_uppercase();
        let secret = random_hex(40);
        let child = Command::new(bin)
            .env("ROOT_ACCESS_KEY_ID", &key_id)
            .env("ROOT_SECRET_ACCESS_KEY", &secret)
            .env("VGW_REGION", "us-east-1")
            .arg("--port")
            .arg(format!("127.0.0.1:{port}"))
            .arg("posix")
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut s3 = S3 {
            child,
            port,
            root,
            bucket,
            key_id,
            secret,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if Instant::now() > deadline || matches!(s3.child.try_wait(), Ok(Some(_))) {
                let log = std::fs::read_to_string(dir.join("versitygw.log")).unwrap_or_default();
                bail!("versitygw did not listen: {log}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(s3)
    }

    /// Node flags archiving into this server under `path`.
    fn node_args(&self, path: &str) -> Vec<String> {
        [
            "--backup-bucket",
            &self.bucket,
            "--backup-endpoint",
            &format!("http://127.0.0.1:{}", self.port),
            "--backup-path",
            path,
            "--backup-access-key-id",
            &self.key_id,
            "--backup-secret-access-key",
            &self.secret,
        ]
        .map(String::from)
        .to_vec()
    }

    /// The directory holding `<path>/<cluster id>/<sub>` objects.
    fn dir(&self, path: &str, cluster_id: &str, sub: &str) -> PathBuf {
        self.root
            .join(&self.bucket)
            .join(path)
            .join(cluster_id)
            .join(sub)
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Shared secrets: the nodes verify editor JWTs (HS256) and the cluster token.
struct Secrets {
    jwt_file: PathBuf,
    token_file: PathBuf,
    editor: String,
    token: String,
}

impl Secrets {
    fn new(dir: &Path) -> anyhow::Result<Secrets> {
        let jwt = random_hex(48);
        let token = random_hex(48);
        let jwt_file = dir.join("jwt-secret");
        let token_file = dir.join("cluster-token");
        std::fs::write(&jwt_file, &jwt)?;
        std::fs::write(&token_file, &token)?;
        let exp = unix_ms() / 1000 + 24 * 3600;
        let editor = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &json!({"sub": "bench", "roles": ["editor"], "exp": exp}),
            &jsonwebtoken::EncodingKey::from_secret(jwt.as_bytes()),
        )?;
        Ok(Secrets {
            jwt_file,
            token_file,
            editor,
            token,
        })
    }
}

/// A `studio-node --standalone` process, killed when dropped.
struct Node {
    child: Option<Child>,
    url: String,
    data: PathBuf,
    log: PathBuf,
    args: Vec<String>,
    port: u16,
}

impl Node {
    async fn start(
        dir: &Path,
        name: &str,
        secrets: &Secrets,
        extra: &[String],
        healthy_within: Duration,
    ) -> anyhow::Result<Node> {
        let port = free_port()?;
        let data = dir.join(name);
        let mut args: Vec<String> = vec![
            "--standalone".into(),
            "--node-id".into(),
            name.into(),
            "--data-dir".into(),
            data.display().to_string(),
            "--jwt-secret-file".into(),
            secrets.jwt_file.display().to_string(),
            "--cluster-token-file".into(),
            secrets.token_file.display().to_string(),
            "--log-format".into(),
            "json".into(),
        ];
        args.extend_from_slice(extra);
        let mut node = Node {
            child: None,
            url: format!("http://127.0.0.1:{port}"),
            log: dir.join(format!("{name}.log")),
            data,
            args,
            port,
        };
        node.spawn(healthy_within).await?;
        Ok(node)
    }

    /// Starts the process (again: same flags, data and port); waits for /healthz.
    async fn spawn(&mut self, healthy_within: Duration) -> anyhow::Result<()> {
        self.kill9();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(node_bin()?);
        cmd.args(&self.args)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port));
        for v in [
            "STUDIO_JWT_SECRET",
            "STUDIO_CLUSTER_TOKEN",
            "STUDIO_INSECURE_NO_AUTH",
            "STUDIO_RESTORE_CLUSTER_ID",
            "STUDIO_BACKUP_BUCKET",
        ] {
            cmd.env_remove(v);
        }
        let child = cmd
            .env(
                "STUDIO_LOG",
                std::env::var("STUDIO_BENCH_NODE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let http = reqwest::Client::new();
        let deadline = Instant::now() + healthy_within;
        loop {
            let ok = http
                .get(format!("{}/healthz", self.url))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(());
            }
            let exited = match self.child.as_mut() {
                Some(c) => matches!(c.try_wait(), Ok(Some(_))),
                None => true,
            };
            if exited || Instant::now() > deadline {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                bail!(
                    "studio-node {} did not become healthy; log tail:\n{}",
                    self.url,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

// ---- HTTP -----------------------------------------------------------------------------

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    editor: String,
    token: String,
}

impl Api {
    fn new(secrets: &Secrets) -> anyhow::Result<Api> {
        Ok(Api {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .timeout(Duration::from_secs(120))
                .build()?,
            editor: secrets.editor.clone(),
            token: secrets.token.clone(),
        })
    }

    async fn put(&self, url: &str, path: &str, body: &Value) -> anyhow::Result<Value> {
        let r = self
            .http
            .put(format!("{url}/api/v1/content{path}"))
            .bearer_auth(&self.editor)
            .json(body)
            .send()
            .await?;
        let st = r.status();
        if !st.is_success() {
            bail!("PUT {path}: {st} {}", r.text().await.unwrap_or_default());
        }
        Ok(r.json().await?)
    }

    async fn upload(&self, url: &str, data: Vec<u8>) -> anyhow::Result<String> {
        let r = self
            .http
            .post(format!("{url}/api/v1/binaries"))
            .bearer_auth(&self.editor)
            .body(data)
            .send()
            .await?;
        let st = r.status();
        if !st.is_success() {
            bail!("binary upload: {st} {}", r.text().await.unwrap_or_default());
        }
        let v: Value = r.json().await?;
        Ok(v["sha256"]
            .as_str()
            .context("no sha256 in the upload answer")?
            .to_string())
    }

    async fn internal(&self, url: &str, path: &str) -> anyhow::Result<Value> {
        let r = self
            .http
            .get(format!("{url}{path}"))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(10))
            .send()
            .await?;
        let st = r.status();
        if !st.is_success() {
            bail!("GET {path}: {st} {}", r.text().await.unwrap_or_default());
        }
        Ok(r.json().await?)
    }

    async fn status(&self, url: &str) -> anyhow::Result<Value> {
        self.internal(url, "/api/v1/cluster/status").await
    }

    async fn digest(&self, url: &str) -> anyhow::Result<(String, u64)> {
        let v = self.internal(url, "/internal/v1/admin/digest").await?;
        Ok((
            v["digest"].as_str().context("no digest")?.to_string(),
            v["seq"].as_u64().context("no seq")?,
        ))
    }

    /// A counter or gauge of /metrics (0 when absent).
    async fn metric(&self, url: &str, name: &str) -> anyhow::Result<f64> {
        let text = self
            .http
            .get(format!("{url}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0))
    }

    /// Runs base backup `id` to completion: (the final status, seconds).
    async fn base_backup(&self, url: &str, id: &str) -> anyhow::Result<(Value, f64)> {
        let started = Instant::now();
        let r = self
            .http
            .post(format!("{url}/internal/v1/backups"))
            .bearer_auth(&self.token)
            .json(&json!({"id": id}))
            .send()
            .await?;
        let st = r.status();
        if st != reqwest::StatusCode::ACCEPTED {
            bail!(
                "POST backup {id}: {st} {}",
                r.text().await.unwrap_or_default()
            );
        }
        let deadline = started + Duration::from_secs(900);
        loop {
            if let Ok(v) = self
                .internal(url, &format!("/internal/v1/backups/{id}"))
                .await
            {
                match v["phase"].as_str() {
                    Some("Completed") => return Ok((v, started.elapsed().as_secs_f64())),
                    Some("Failed") => bail!("base backup {id} failed: {v}"),
                    _ => {}
                }
            }
            if Instant::now() > deadline {
                bail!("base backup {id} did not finish");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the node archived everything it holds (at least `seq`).
    async fn archived(&self, url: &str, seq: u64, within: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(s) = self.status(url).await {
                let a = &s["archive"];
                if let Some(done) = a["archivedSeq"].as_u64()
                    && done >= seq
                    && a["lastError"].is_null()
                {
                    return Ok(done);
                }
            }
            if Instant::now() > deadline {
                bail!("the archive did not reach seq {seq}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

// ---- load -----------------------------------------------------------------------------

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// xorshift64*: cheap, incompressible filler and random choices.
struct Rng(u64);

impl Rng {
    /// Distinct seeds give distinct streams (splitmix64 of the seed; never 0).
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)).max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// A 1 KiB item: 1024 hex characters (about as compressible as prose, ~2:1).
fn item(rng: &mut Rng, n: u64) -> Value {
    json!({"type": "doc", "properties": {"n": n, "text": hex::encode(rng.bytes(512))}})
}

/// Acknowledged writes: (path, unix ms of the acknowledgement).
#[derive(Default)]
struct WriteLog {
    acked: Vec<(String, i64)>,
    latencies_ms: Vec<f64>,
    failed: u64,
}

/// `writers` tasks PUT new items under `prefix` until `stop`.
async fn write_load(
    api: &Api,
    url: &str,
    prefix: &str,
    writers: usize,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<WriteLog> {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (api, url, stop) = (api.clone(), url.to_string(), stop.clone());
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut log = WriteLog::default();
            let mut rng = Rng::new(w as u64 + 1);
            let mut j = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let path = format!("/{prefix}/w{w}/n{j}");
                let body = item(&mut rng, j);
                let t = Instant::now();
                match api.put(&url, &path, &body).await {
                    Ok(_) => {
                        log.acked.push((path, unix_ms()));
                        log.latencies_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    Err(_) => {
                        log.failed += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                j += 1;
            }
            log
        }));
    }
    let mut all = WriteLog::default();
    for t in tasks {
        let l = t.await?;
        all.acked.extend(l.acked);
        all.latencies_ms.extend(l.latencies_ms);
        all.failed += l.failed;
    }
    all.latencies_ms.sort_by(|a, b| a.total_cmp(b));
    Ok(all)
}

/// One status sample.
#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    seq: u64,
    archived_seq: u64,
    lag_entries: u64,
    lag_seconds: f64,
}

/// Polls the status every 200 ms until `stop`.
fn poll_status(
    api: &Api,
    url: &str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Sample>> {
    let (api, url) = (api.clone(), url.to_string());
    tokio::spawn(async move {
        let mut out = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            if let Ok(s) = api.status(&url).await {
                let a = &s["archive"];
                out.push(Sample {
                    at: Instant::now(),
                    seq: s["seq"].as_u64().unwrap_or(0),
                    archived_seq: a["archivedSeq"].as_u64().unwrap_or(0),
                    lag_entries: a["lagEntries"].as_u64().unwrap_or(0),
                    lag_seconds: a["lagSeconds"].as_f64().unwrap_or(0.0),
                });
            }
        }
        out
    })
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

fn mb(bytes: f64) -> f64 {
    bytes / 1e6
}

async fn cluster_id(api: &Api, url: &str) -> anyhow::Result<String> {
    Ok(api.status(url).await?["clusterId"]
        .as_str()
        .context("no clusterId in the status")?
        .to_string())
}

/// Segments in a `wal/` dir of the S3 server's data: (name, compressed bytes, bytes).
fn read_segments(dir: &Path) -> anyhow::Result<Vec<(SegmentName, Vec<u8>)>> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for e in rd {
        let e = e?;
        let Some(name) = e.file_name().to_str().and_then(SegmentName::parse) else {
            continue;
        };
        out.push((name, std::fs::read(e.path())?));
    }
    out.sort_by_key(|(n, _)| n.first);
    Ok(out)
}

// ---- the parts ------------------------------------------------------------------------

struct Ctx {
    dir: PathBuf,
    s3: S3,
    secrets: Secrets,
    api: Api,
    args: Args,
}

async fn archive_part(ctx: &Ctx) -> anyhow::Result<()> {
    let (api, w, secs) = (&ctx.api, ctx.args.writers, ctx.args.seconds);
    let mut flags = ctx.s3.node_args("archive");
    flags.extend(["--archive-timeout".into(), "1".into()]);
    let node = Node::start(
        &ctx.dir,
        "archive",
        &ctx.secrets,
        &flags,
        Duration::from_secs(60),
    )
    .await?;
    let url = node.url.clone();
    let cid = cluster_id(api, &url).await?;
    let seq0 = api.status(&url).await?["seq"].as_u64().unwrap_or(0);
    let archived0 = api.archived(&url, seq0, Duration::from_secs(30)).await?;
    let bytes0 = api.metric(&url, "studio_archive_bytes_total").await?;
    let segs0 = api.metric(&url, "studio_archive_segments_total").await?;

    let poll_stop = Arc::new(AtomicBool::new(false));
    let poller = poll_status(api, &url, poll_stop.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let load = {
        let (api, url, stop) = (api.clone(), url.clone(), stop.clone());
        tokio::spawn(async move { write_load(&api, &url, "arch", w, stop).await })
    };
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let log = load.await??;
    let write_secs = started.elapsed().as_secs_f64();
    let stopped = Instant::now();
    let end_seq = api.status(&url).await?["seq"].as_u64().context("no seq")?;
    let archived = api
        .archived(&url, end_seq, Duration::from_secs(300))
        .await?;
    let catch_up = stopped.elapsed().as_secs_f64();
    let total_secs = started.elapsed().as_secs_f64();
    poll_stop.store(true, Ordering::Relaxed);
    let samples = poller.await?;
    let bytes = api.metric(&url, "studio_archive_bytes_total").await? - bytes0;
    let segs = api.metric(&url, "studio_archive_segments_total").await? - segs0;
    let entries = archived.saturating_sub(archived0);
    let max_lag_entries = samples.iter().map(|s| s.lag_entries).max().unwrap_or(0);
    let max_lag_secs = samples.iter().map(|s| s.lag_seconds).fold(0.0f64, f64::max);
    // Uncompressed size, from the segments themselves.
    let mut raw = 0u64;
    let mut on_disk = 0u64;
    for (_, bytes) in read_segments(&ctx.s3.dir("archive", &cid, "wal"))? {
        on_disk += bytes.len() as u64;
        let mut d = flate2::read::GzDecoder::new(&bytes[..]);
        raw += std::io::copy(&mut d, &mut std::io::sink())?;
    }
    let ok = log.acked.len();
    println!(
        "archive: {w} writers x {secs}s, 1 KiB items: {ok} acknowledged writes = {:.0} writes/s \
         ({} failed; latency p50 {:.2} ms, p99 {:.2} ms)",
        ok as f64 / write_secs,
        log.failed,
        pct(&log.latencies_ms, 0.5),
        pct(&log.latencies_ms, 0.99),
    );
    println!(
        "archive: caught up {catch_up:.2}s after the writers stopped (seq {end_seq}); \
         {entries} entries in {segs:.0} segments over {total_secs:.1}s = {:.0} entries/s; \
         {:.1} MB compressed ({:.1} MB as JSON, {:.2}:1) = {:.2} MB/s compressed, {:.2} MB/s as JSON",
        entries as f64 / total_secs,
        mb(bytes),
        mb(raw as f64),
        raw as f64 / on_disk.max(1) as f64,
        mb(bytes) / total_secs,
        mb(raw as f64) / total_secs,
    );
    println!(
        "archive: max lag seen (status every 200 ms, {} samples): {max_lag_entries} entries, {max_lag_secs:.2}s",
        samples.len()
    );

    // The archiver's own speed, not bounded by the writers: the same journal archived
    // again from seq 1 into an empty folder (another --backup-path), after a restart.
    let mut node = node;
    let drain_path = "archive-drain";
    let mut drain = ctx.s3.node_args(drain_path);
    drain.extend(["--archive-timeout".into(), "1".into()]);
    let keep = node.args.len() - flags.len();
    node.args.truncate(keep);
    node.args.extend(drain);
    let started = Instant::now();
    node.spawn(Duration::from_secs(60)).await?;
    let healthy = started.elapsed().as_secs_f64();
    api.archived(&url, end_seq, Duration::from_secs(600))
        .await?;
    let secs = started.elapsed().as_secs_f64();
    let bytes = api.metric(&url, "studio_archive_bytes_total").await?;
    let drained = read_segments(&ctx.s3.dir(drain_path, &cid, "wal"))?;
    let n = drained.len();
    let raw = drained
        .iter()
        .map(|(_, b)| {
            let mut d = flate2::read::GzDecoder::new(&b[..]);
            std::io::copy(&mut d, &mut std::io::sink())
        })
        .sum::<Result<u64, _>>()?;
    println!(
        "archive: backlog of {end_seq} entries archived again from seq 1 after a restart (healthy at {healthy:.2}s): \
         {secs:.2}s = {:.0} entries/s, {:.1} MB compressed = {:.2} MB/s compressed ({:.2} MB/s as JSON), {n} segments",
        end_seq as f64 / secs,
        mb(bytes),
        mb(bytes) / secs,
        mb(raw as f64) / secs,
    );
    drop(node);
    let _ = std::fs::remove_dir_all(ctx.dir.join("archive"));
    Ok(())
}

async fn base_part(ctx: &Ctx) -> anyhow::Result<()> {
    let api = &ctx.api;
    let n_bin = (ctx.args.size_mib / ctx.args.binary_mib.max(1)).max(1) as usize;
    let bin_bytes = (ctx.args.binary_mib.max(1) << 20) as usize;
    let mut flags = ctx.s3.node_args("base");
    // An hour: the journal (well under a 4 MiB segment) is not archived, so the
    // binaries are not in the archive when the first base backup starts.
    let mut cold = flags.clone();
    cold.extend(["--archive-timeout".into(), "3600".into()]);
    let mut src = Node::start(
        &ctx.dir,
        "base-src",
        &ctx.secrets,
        &cold,
        Duration::from_secs(60),
    )
    .await?;
    let url = src.url.clone();

    let started = Instant::now();
    let uploads = futures::stream::iter(0..n_bin)
        .map(|i| {
            let (api, url) = (api.clone(), url.clone());
            async move {
                let data = Rng::new(0xB1_0000 + i as u64).bytes(bin_bytes);
                let sha = api.upload(&url, data).await?;
                api.put(
                    &url,
                    &format!("/files/f{i}"),
                    &json!({"type": "file", "properties": {"n": i, "file": {"$binary": sha}}}),
                )
                .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
    for u in uploads {
        u?;
    }
    let bin_secs = started.elapsed().as_secs_f64();
    let small = ctx.args.small_items;
    let puts = futures::stream::iter(0..small)
        .map(|i| {
            let (api, url) = (api.clone(), url.clone());
            async move {
                api.put(
                    &url,
                    &format!("/pages/p{}/i{i}", i % 50),
                    &json!({"type": "page", "properties": {"n": i, "title": format!("page {i}")}}),
                )
                .await
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    for p in puts {
        p?;
    }
    let load_secs = started.elapsed().as_secs_f64();
    let total_mb = mb((n_bin * bin_bytes) as f64);
    println!(
        "base: loaded {n_bin} binaries of {} MiB ({total_mb:.0} MB; {:.0} MB/s uploaded) + {n_bin} items referencing them + {small} small items in {load_secs:.1}s",
        ctx.args.binary_mib,
        total_mb / bin_secs
    );

    let (b, secs) = api.base_backup(&url, "bench-cold").await?;
    let size = b["sizeBytes"].as_u64().unwrap_or(0) as f64;
    println!(
        "base: cold base backup (no binary archived yet): {secs:.2}s, size_bytes {:.1} MB = {:.0} MB/s (seq {})",
        mb(size),
        mb(size) / secs,
        b["seq"]
    );

    // Restart archiving every second: the archive catches up (binaries already in the
    // object store from the cold backup), then a "warm" base backup.
    flags.extend(["--archive-timeout".into(), "1".into()]);
    src.args.truncate(src.args.len() - cold.len());
    src.args.extend(flags.clone());
    src.spawn(Duration::from_secs(120)).await?;
    let t = Instant::now();
    let seq = api.status(&url).await?["seq"].as_u64().context("no seq")?;
    api.archived(&url, seq, Duration::from_secs(300)).await?;
    println!(
        "base: after a restart with --archive-timeout 1 the archive caught up with {seq} entries in {:.2}s",
        t.elapsed().as_secs_f64()
    );
    let (b, secs) = api.base_backup(&url, "bench-warm").await?;
    let size = b["sizeBytes"].as_u64().unwrap_or(0) as f64;
    println!(
        "base: warm base backup (binaries already archived): {secs:.2}s, size_bytes {:.2} MB (seq {})",
        mb(size),
        b["seq"]
    );

    let source = api.digest(&url).await?;
    let cid = cluster_id(api, &url).await?;
    // The source's data is not needed any more (disk space for the restore).
    src.kill9();
    let _ = std::fs::remove_dir_all(&src.data);

    let mut rflags = ctx.s3.node_args("base");
    rflags.extend(["--restore-cluster-id".into(), cid.clone()]);
    let started = Instant::now();
    let restored = Node::start(
        &ctx.dir,
        "base-restored",
        &ctx.secrets,
        &rflags,
        Duration::from_secs(900),
    )
    .await?;
    let healthy = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(d) = api.digest(&restored.url).await
            && d == source
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("the restored node's digest did not reach the source's {source:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let st = api.status(&restored.url).await?;
    println!(
        "base: restore into a new node: healthy after {healthy:.2}s, digest equal to the source's (seq {}) after {secs:.2}s = {:.0} MB/s of binaries; {}",
        source.1,
        total_mb / secs,
        st["restore"]["message"].as_str().unwrap_or("?")
    );
    drop(restored);
    let _ = std::fs::remove_dir_all(ctx.dir.join("base-restored"));
    Ok(())
}

/// One RPO measurement.
struct Rpo {
    lost: usize,
    acked: usize,
    secs_since_archived: f64,
    oldest_lost_age: f64,
    status_lag: Option<(u64, u64, f64)>,
}

async fn rpo_once(ctx: &Ctx, run: usize, rng: &mut Rng) -> anyhow::Result<Rpo> {
    let api = &ctx.api;
    let path = format!("rpo-{run}");
    let mut flags = ctx.s3.node_args(&path);
    flags.extend(["--archive-timeout".into(), "1".into()]);
    let name = format!("rpo-{run}");
    let mut node = Node::start(
        &ctx.dir,
        &name,
        &ctx.secrets,
        &flags,
        Duration::from_secs(60),
    )
    .await?;
    let url = node.url.clone();
    let cid = cluster_id(api, &url).await?;
    let poll_stop = Arc::new(AtomicBool::new(false));
    let poller = poll_status(api, &url, poll_stop.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (api, url, stop) = (api.clone(), url.clone(), stop.clone());
        let w = ctx.args.writers;
        tokio::spawn(async move { write_load(&api, &url, "rpo", w, stop).await })
    };
    let at = ctx.args.rpo_warmup + rng.unit() * ctx.args.rpo_window;
    tokio::time::sleep(Duration::from_secs_f64(at)).await;
    let killed_ms = unix_ms();
    let killed_at = Instant::now();
    node.kill9();
    stop.store(true, Ordering::Relaxed);
    poll_stop.store(true, Ordering::Relaxed);
    let log = load.await??;
    let samples = poller.await?;
    // Let versitygw finish what it had received completely.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut archived: HashSet<String> = HashSet::new();
    let mut last_time = None;
    for (name, bytes) in read_segments(&ctx.s3.dir(&path, &cid, "wal"))? {
        for e in segment::decode(&name, &bytes)? {
            if let Op::Put { path, .. } = &e.op {
                archived.insert(path.clone());
            }
            last_time = last_time.max(Some(e.time));
        }
    }
    let lost: Vec<i64> = log
        .acked
        .iter()
        .filter(|(p, _)| !archived.contains(p))
        .map(|(_, t)| *t)
        .collect();
    let status_lag = samples
        .iter()
        .rev()
        .find(|s| s.at <= killed_at)
        .map(|s| (s.seq, s.archived_seq, (killed_at - s.at).as_secs_f64()));
    drop(node);
    let _ = std::fs::remove_dir_all(ctx.dir.join(&name));
    Ok(Rpo {
        lost: lost.len(),
        acked: log.acked.len(),
        secs_since_archived: last_time
            .map(|t| (killed_ms - t) as f64 / 1000.0)
            .unwrap_or(f64::NAN),
        oldest_lost_age: lost
            .iter()
            .min()
            .map(|t| (killed_ms - t) as f64 / 1000.0)
            .unwrap_or(0.0),
        status_lag,
    })
}

async fn rpo_part(ctx: &Ctx) -> anyhow::Result<()> {
    let seed = ctx.args.seed.unwrap_or_else(|| unix_ms() as u64);
    let mut rng = Rng::new(seed);
    let mut entries = Vec::new();
    let mut secs = Vec::new();
    for run in 0..ctx.args.rpo_runs {
        let r = rpo_once(ctx, run, &mut rng).await?;
        let status = r
            .status_lag
            .map(|(seq, a, age)| {
                format!(
                    "; last status {:.0} ms before the kill: seq {seq}, archivedSeq {a} ({} behind)",
                    age * 1000.0,
                    seq.saturating_sub(a)
                )
            })
            .unwrap_or_default();
        println!(
            "rpo run {}: {} of {} acknowledged writes not in the archive; last archived entry written {:.2}s before the kill; \
             oldest lost write acknowledged {:.2}s before{status}",
            run + 1,
            r.lost,
            r.acked,
            r.secs_since_archived,
            r.oldest_lost_age
        );
        entries.push(r.lost as f64);
        secs.push(r.secs_since_archived);
    }
    entries.sort_by(|a, b| a.total_cmp(b));
    secs.sort_by(|a, b| a.total_cmp(b));
    println!(
        "rpo ({} runs, {} writers, archive-timeout 1s, kill at {:.1}-{:.1}s, seed {seed}): \
         lost acknowledged writes p50 {:.0}, max {:.0}; seconds p50 {:.2}, max {:.2}",
        ctx.args.rpo_runs,
        ctx.args.writers,
        ctx.args.rpo_warmup,
        ctx.args.rpo_warmup + ctx.args.rpo_window,
        pct(&entries, 0.5),
        entries.last().copied().unwrap_or(f64::NAN),
        pct(&secs, 0.5),
        secs.last().copied().unwrap_or(f64::NAN),
    );
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let vgw = versitygw_bin(args.versitygw.clone())?;
    let mut tmp = match &args.work_dir {
        Some(d) => tempfile::TempDir::with_prefix_in("backupbench-", d)?,
        None => tempfile::TempDir::with_prefix("backupbench-")?,
    };
    if std::env::var_os("STUDIO_BENCH_KEEP").is_some() {
        eprintln!("logs and data in {}", tmp.path().display());
        tmp.disable_cleanup(true);
    }
    let dir = tmp.path().to_path_buf();
    let s3 = S3::start(&vgw, &dir).await?;
    let secrets = Secrets::new(&dir)?;
    let api = Api::new(&secrets)?;
    let ctx = Ctx {
        dir,
        s3,
        secrets,
        api,
        args,
    };
    for part in ctx.args.parts.clone() {
        match part {
            Part::Archive => archive_part(&ctx).await?,
            Part::Base => base_part(&ctx).await?,
            Part::Rpo => rpo_part(&ctx).await?,
        }
    }
    drop(ctx);
    drop(tmp);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Ctrl-C drops the run (its guards kill the node and versitygw processes).
    tokio::select! {
        r = run(args) => r,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    }
}
