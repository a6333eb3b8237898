//! studio-bench: durable write throughput and read latency of a studio-node primary.
//!
//! By default it starts `studio-node --standalone` (the binary next to this one) on a
//! temporary data dir and loopback port; `--url` measures a running node instead.
//!
//!     cargo build --release -p studio-node
//!     target/release/studio-bench --seconds 10 --writers 32 --readers 8

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(name = "studio-bench", about = "Benchmark a studio-node primary")]
struct Args {
    /// Node to measure (default: start a standalone node on a temp dir).
    #[arg(long)]
    url: Option<String>,
    /// Bearer JWT for --url nodes with authentication.
    #[arg(long, env = "STUDIO_BENCH_TOKEN")]
    token: Option<String>,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent writers.
    #[arg(long, default_value_t = 32)]
    writers: usize,
    /// Concurrent readers in the read-under-load phase.
    #[arg(long, default_value_t = 8)]
    readers: usize,
    /// Item payload size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Measure the storage layer alone (Store::write from --writers threads, no HTTP).
    #[arg(long)]
    direct: bool,
    /// Also start a replica following the started primary, and run the primary in
    /// sync mode with a write quorum of 1 (`--replication-mode sync --sync-replicas 1`).
    #[arg(long)]
    sync_replica: bool,
    /// Extra flags for the started node (e.g. "--replication-mode sync").
    #[arg(long, allow_hyphen_values = true)]
    node_args: Vec<String>,
}

struct Started {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut lat_ms: Vec<f64>, elapsed: Duration) {
    lat_ms.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{name}: {} ops in {:.1}s = {:.0} ops/s; latency ms p50 {:.2} p99 {:.2} max {:.2}",
        lat_ms.len(),
        elapsed.as_secs_f64(),
        lat_ms.len() as f64 / elapsed.as_secs_f64(),
        percentile(&lat_ms, 0.5),
        percentile(&lat_ms, 0.99),
        lat_ms.last().copied().unwrap_or(f64::NAN),
    );
}

async fn write_phase(
    http: &reqwest::Client,
    url: &str,
    token: &Option<String>,
    writers: usize,
    size: usize,
    dur: Duration,
    prefix: &str,
) -> (Vec<f64>, Duration, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (http, url, token, stop, errors) = (
            http.clone(),
            url.to_string(),
            token.clone(),
            stop.clone(),
            errors.clone(),
        );
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let body = json!({"type": "bench", "properties": {"payload": "x".repeat(size)}});
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let mut req = http
                    .put(format!("{url}/api/v1/content/{prefix}/w{w}/i{i}"))
                    .json(&body);
                if let Some(tok) = &token {
                    req = req.bearer_auth(tok);
                }
                match req.send().await {
                    Ok(r) if r.status().is_success() => {
                        lat.push(t.elapsed().as_secs_f64() * 1000.0)
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
            }
            lat
        }));
    }
    tokio::time::sleep(dur).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    (all, start.elapsed(), errors.load(Ordering::Relaxed))
}

fn start_node(
    exe: &std::path::Path,
    dir: &tempfile::TempDir,
    port: u16,
    mode: &[&str],
    extra: &[String],
) -> anyhow::Result<std::process::Child> {
    std::process::Command::new(exe)
        .args(mode)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--node-id",
            &format!("bench-{port}"),
        ])
        .args(["--log-format", "text", "--log-filter", "warn"])
        .args(extra)
        .arg("--insecure-no-auth")
        .env_remove("STUDIO_JWT_SECRET")
        .env_remove("STUDIO_CLUSTER_TOKEN")
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting {}: {e}", exe.display()))
}

/// Durable writes straight into a Store from `writers` threads.
fn direct(args: &Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = studio_node::storage::Store::open(dir.path())?;
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut threads = Vec::new();
    for w in 0..args.writers {
        let (store, stop, size) = (store.clone(), stop.clone(), args.size);
        threads.push(std::thread::spawn(move || {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let op = studio_node::storage::Op::Put {
                    path: format!("/direct/w{w}/i{i}"),
                    item_type: "bench".into(),
                    properties: json!({"payload": "x".repeat(size)}),
                    expected_version: None,
                    author: "bench".into(),
                };
                if store.write(op, 1).is_ok() {
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                i += 1;
            }
            lat
        }));
    }
    std::thread::sleep(Duration::from_secs(args.seconds));
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().unwrap_or_default());
    }
    summary("storage-only durable 1KiB writes", all, start.elapsed());
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.direct {
        return direct(&args);
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let mut _started = Vec::new();
    let url = match &args.url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let exe: PathBuf = std::env::current_exe()?.with_file_name("studio-node");
            let dir = tempfile::tempdir()?;
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let mut node_args = args.node_args.clone();
            if args.sync_replica {
                node_args.extend(
                    ["--replication-mode", "sync", "--sync-replicas", "1"].map(String::from),
                );
            }
            let child = start_node(&exe, &dir, port, &["--standalone"], &node_args)?;
            _started.push(Started { child, _dir: dir });
            let url = format!("http://127.0.0.1:{port}");
            if args.sync_replica {
                let rdir = tempfile::tempdir()?;
                let rport = std::net::TcpListener::bind("127.0.0.1:0")?
                    .local_addr()?
                    .port();
                let child = start_node(&exe, &rdir, rport, &["--follow", &url], &[])?;
                _started.push(Started { child, _dir: rdir });
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(r) = http.get(format!("{url}/readyz")).send().await
                    && r.status().is_success()
                {
                    break;
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "studio-node did not become ready"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if args.sync_replica {
                loop {
                    let status: serde_json::Value = http
                        .get(format!("{url}/api/v1/cluster/status"))
                        .send()
                        .await?
                        .json()
                        .await?;
                    let connected = status["peers"]
                        .as_array()
                        .is_some_and(|p| p.iter().any(|p| p["connected"] == true));
                    if connected {
                        break;
                    }
                    anyhow::ensure!(Instant::now() < deadline, "the replica did not connect");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            url
        }
    };
    let dur = Duration::from_secs(args.seconds);
    println!(
        "studio-bench: {url}, {} writers, {} readers, {} B items, {}s per phase",
        args.writers, args.readers, args.size, args.seconds
    );

    // Phase 1: durable write throughput.
    let (lat, elapsed, errors) = write_phase(
        &http,
        &url,
        &args.token,
        args.writers,
        args.size,
        dur,
        "bench1",
    )
    .await;
    summary("durable 1KiB writes", lat, elapsed);
    if errors > 0 {
        println!("  write errors: {errors}");
    }

    // Phase 2: read latency under a write load.
    let readers_stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..args.readers {
        let (http, url, token, stop) = (
            http.clone(),
            url.clone(),
            args.token.clone(),
            readers_stop.clone(),
        );
        let writers = args.writers as u64;
        readers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut n = r as u64;
            while !stop.load(Ordering::Relaxed) {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let path = format!("bench1/w{}/i{}", (n >> 33) % writers, (n >> 20) % 200);
                let t = Instant::now();
                let mut req = http.get(format!("{url}/api/v1/content/{path}"));
                if let Some(tok) = &token {
                    req = req.bearer_auth(tok);
                }
                if let Ok(resp) = req.send().await {
                    let _ = resp.bytes().await;
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
            lat
        }));
    }
    let start = Instant::now();
    let (wlat, welapsed, _) = write_phase(
        &http,
        &url,
        &args.token,
        (args.writers / 4).max(1),
        args.size,
        dur,
        "bench2",
    )
    .await;
    readers_stop.store(true, Ordering::Relaxed);
    let mut rlat = Vec::new();
    for r in readers {
        rlat.extend(r.await.unwrap_or_default());
    }
    summary("reads under write load", rlat, start.elapsed());
    summary("  concurrent writes", wlat, welapsed);
    Ok(())
}
