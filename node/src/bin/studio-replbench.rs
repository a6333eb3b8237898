//! studio-replbench: replication benchmarks on loopback, with `studio-node` processes
//! started from the binary next to this one (temporary data dirs, no auth).
//!
//!     cargo build --release -p studio-node
//!     target/release/studio-replbench lag --rate 1000 --seconds 10
//!     target/release/studio-replbench sync --writers 32 --seconds 10
//!     target/release/studio-replbench clone --binaries 20 --binary-mib 8 --items 20000
//!
//! - `lag`: primary + 1 async replica; writes 1 KiB items at a fixed rate while two
//!   samplers read both nodes' journal seq every ~1 ms; the lag of an entry is the
//!   time between the primary's and the replica's first sample at or past its seq.
//! - `sync`: primary in sync mode K=1 + 1 replica (and the same in async mode for
//!   comparison): acknowledged writes/s and latency with concurrent writers.
//! - `clone`: fills a primary with binaries and items, starts an empty replica and
//!   times the clone until its content digest equals the primary's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(name = "studio-replbench", about = "Benchmark studio-node replication")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Replication lag at a fixed write rate.
    Lag {
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Write throughput with sync K=1 (and async) replication.
    Sync {
        #[arg(long, default_value_t = 32)]
        writers: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Clone speed of an empty replica.
    Clone {
        #[arg(long, default_value_t = 20)]
        binaries: usize,
        #[arg(long, default_value_t = 8)]
        binary_mib: usize,
        #[arg(long, default_value_t = 20_000)]
        items: usize,
    },
}

struct Proc {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// A temporary directory, kept when `STUDIO_BENCH_KEEP` is set (to read node logs).
fn workdir() -> anyhow::Result<tempfile::TempDir> {
    let mut d = tempfile::TempDir::with_prefix("replbench-")?;
    if std::env::var_os("STUDIO_BENCH_KEEP").is_some() {
        eprintln!("node logs and data in {}", d.path().display());
        d.disable_cleanup(true);
    }
    Ok(d)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn start(dir: &Path, name: &str, args: &[&str]) -> anyhow::Result<Proc> {
    let port = free_port()?;
    let data = dir.join(name);
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(node_bin()?)
        .args([
            "--data-dir",
            &data.display().to_string(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--node-id",
            name,
            "--log-format",
            "json",
            "--log-filter",
            &std::env::var("STUDIO_BENCH_NODE_LOG").unwrap_or_else(|_| "info".into()),
        ])
        .args(args)
        .arg("--insecure-no-auth")
        .env_remove("STUDIO_JWT_SECRET")
        .env_remove("STUDIO_CLUSTER_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let mut p = Proc {
        child,
        url: format!("http://127.0.0.1:{port}"),
        log,
    };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{}/healthz", p.url)).send().await.is_err() {
        if Instant::now() > deadline || matches!(p.child.try_wait(), Ok(Some(_))) {
            let log = std::fs::read_to_string(&p.log).unwrap_or_default();
            bail!("{name} did not start: {log}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(p)
}

async fn connected(http: &reqwest::Client, primary: &str, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s: Value = http
            .get(format!("{primary}/api/v1/cluster/status"))
            .send()
            .await?
            .json()
            .await?;
        let c = s["peers"]
            .as_array()
            .map(|a| a.iter().filter(|p| p["connected"] == true).count())
            .unwrap_or(0);
        if c >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("replicas did not connect");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn digest(http: &reqwest::Client, url: &str) -> Option<(String, u64)> {
    let v: Value = http
        .get(format!("{url}/internal/v1/admin/digest"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some((v["digest"].as_str()?.to_string(), v["seq"].as_u64()?))
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

fn item(n: usize) -> Value {
    json!({"type": "doc", "properties": {"n": n, "text": "x".repeat(1000)}})
}

/// Samples a node's journal seq every millisecond until `stop`: (time, seq) pairs.
async fn seq_timeline(
    http: reqwest::Client,
    url: String,
    stop: Arc<AtomicBool>,
) -> Vec<(Instant, u64)> {
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let r = http
            .get(format!("{url}/api/v1/cluster/status"))
            .send()
            .await;
        let t = Instant::now();
        if let Ok(r) = r
            && let Ok(v) = r.json::<Value>().await
            && let Some(seq) = v["seq"].as_u64()
        {
            out.push((t, seq));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    out
}

/// When a timeline first reached `seq`.
fn reached(timeline: &[(Instant, u64)], seq: u64) -> Option<Instant> {
    let i = timeline.partition_point(|(_, s)| *s < seq);
    timeline.get(i).map(|(t, _)| *t)
}

async fn lag(rate: u64, seconds: u64) -> anyhow::Result<()> {
    let dir = workdir()?;
    let p = start(dir.path(), "p", &["--standalone"]).await?;
    let r = start(dir.path(), "r", &["--follow", &p.url]).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    connected(&http, &p.url, 1).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let pt = tokio::spawn(seq_timeline(http.clone(), p.url.clone(), stop.clone()));
    let rt = tokio::spawn(seq_timeline(http.clone(), r.url.clone(), stop.clone()));
    let total = (rate * seconds) as usize;
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        tick.tick().await;
        let (http, purl) = (http.clone(), p.url.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let ok = http
                .put(format!("{purl}/api/v1/content/lag/n{i}"))
                .json(&item(i))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            ok.then(|| t.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut ok = 0;
    let mut wlat = Vec::new();
    for t in tasks {
        if let Ok(Some(l)) = t.await {
            ok += 1;
            wlat.push(l);
        }
    }
    wlat.sort_by(|a, b| a.total_cmp(b));
    let secs = started.elapsed().as_secs_f64();
    // Let the replica finish, then stop sampling.
    let (_, last) = digest(&http, &p.url).await.context("digest")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while digest(&http, &r.url).await.map(|d| d.1) != Some(last) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    stop.store(true, Ordering::Relaxed);
    let (pt, rt) = (pt.await?, rt.await?);
    let first = pt.first().map(|(_, s)| *s).unwrap_or(0) + 1;
    let mut lags: Vec<f64> = (first..=last)
        .filter_map(|seq| {
            let a = reached(&pt, seq)?;
            let b = reached(&rt, seq)?;
            Some(b.saturating_duration_since(a).as_secs_f64() * 1000.0)
        })
        .collect();
    lags.sort_by(|a, b| a.total_cmp(b));
    println!(
        "lag: {ok}/{total} writes in {secs:.1}s ({:.0}/s, offered {rate}/s; write latency p50 {:.2} ms, p99 {:.2} ms); \
         replica lag over {} entries (commit seen on the primary -> applied seen on the replica, ~1 ms sampling): \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ok as f64 / secs,
        pct(&wlat, 0.5),
        pct(&wlat, 0.99),
        lags.len(),
        pct(&lags, 0.5),
        pct(&lags, 0.99),
        lags.last().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}

async fn throughput(mode: &str, writers: usize, seconds: u64) -> anyhow::Result<()> {
    let dir = workdir()?;
    let mut pargs = vec!["--standalone"];
    if mode == "sync" {
        pargs.extend(["--replication-mode", "sync", "--sync-replicas", "1"]);
    }
    let p = start(dir.path(), "p", &pargs).await?;
    let _r = start(dir.path(), "r", &["--follow", &p.url]).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    connected(&http, &p.url, 1).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (http, url, stop) = (http.clone(), p.url.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut failed = 0u64;
            let mut j = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = http
                    .put(format!("{url}/api/v1/content/t/w{w}/n{j}"))
                    .json(&item(j))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        lat.push(t.elapsed().as_secs_f64() * 1000.0)
                    }
                    _ => failed += 1,
                }
                j += 1;
            }
            (lat, failed)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (l, f) = t.await?;
        lat.extend(l);
        failed += f;
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{mode} (1 replica, {writers} writers): {} acknowledged writes in {secs:.1}s = {:.0} writes/s, {failed} failed; latency p50 {:.2} ms, p99 {:.2} ms",
        lat.len(),
        lat.len() as f64 / secs,
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    Ok(())
}

async fn clone_bench(binaries: usize, binary_mib: usize, items: usize) -> anyhow::Result<()> {
    let dir = workdir()?;
    let p = start(dir.path(), "p", &["--standalone"]).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    for b in 0..binaries {
        let data: Vec<u8> = (0..binary_mib * 1024 * 1024)
            .map(|i| {
                ((i as u64)
                    .wrapping_mul(2654435761)
                    .wrapping_add(b as u64 * 97)
                    >> 7) as u8
            })
            .collect();
        let r = http
            .post(format!("{}/api/v1/binaries", p.url))
            .body(data)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("binary upload failed: {}", r.status());
        }
    }
    let chunks: Vec<Vec<usize>> = (0..16)
        .map(|w| (0..items).filter(|i| i % 16 == w).collect())
        .collect();
    let mut tasks = Vec::new();
    for (w, chunk) in chunks.into_iter().enumerate() {
        let (http, url) = (http.clone(), p.url.clone());
        tasks.push(tokio::spawn(async move {
            for i in chunk {
                let _ = http
                    .put(format!("{url}/api/v1/content/c/w{w}/n{i}"))
                    .json(&item(i))
                    .send()
                    .await;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let (pd, pseq) = digest(&http, &p.url).await.context("digest")?;
    let started = Instant::now();
    let r = start(dir.path(), "r", &["--follow", &p.url]).await?;
    loop {
        if let Some((d, seq)) = digest(&http, &r.url).await
            && d == pd
            && seq == pseq
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("clone did not finish");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let log = std::fs::read_to_string(&r.log)?;
    let line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "clone complete")
        .context("no clone log line")?;
    let db = line["db_bytes"].as_u64().unwrap_or(0);
    let blobs = line["blob_bytes"].as_u64().unwrap_or(0);
    let total_mb = (db + blobs) as f64 / 1e6;
    println!(
        "clone: {pseq} entries, database {:.1} MB + binaries {:.1} MB = {total_mb:.1} MB; \
         inside the node {:.2}s = {:.0} MB/s; start to identical digest {secs:.2}s = {:.0} MB/s",
        db as f64 / 1e6,
        blobs as f64 / 1e6,
        line["secs"].as_f64().unwrap_or(f64::NAN),
        line["mb_per_s"].as_f64().unwrap_or(f64::NAN),
        total_mb / secs
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.cmd {
        Cmd::Lag { rate, seconds } => lag(rate, seconds).await,
        Cmd::Sync { writers, seconds } => {
            throughput("async", writers, seconds).await?;
            throughput("sync", writers, seconds).await
        }
        Cmd::Clone {
            binaries,
            binary_mib,
            items,
        } => clone_bench(binaries, binary_mib, items).await,
    }
}
