//! `studio-provisioner`: the local cluster's PVC provisioner as its own process (see
//! the library docs), started by scripts/cluster-up.sh next to the control plane, so
//! that PVCs bind whichever kind of Node runs their pods.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Provisions local PersistentVolumes for the local cluster's PVCs"
)]
struct Args {
    /// Kubeconfig with rights over PVs, PVCs and StorageClasses.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Where each volume's directory (`pvc-<uid>`) is made.
    #[arg(long)]
    volumes_dir: PathBuf,
}

async fn client(path: &std::path::Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .context("loading kubeconfig")?;
    kube::Client::try_from(cfg).context("building API client")
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // One TLS provider, chosen explicitly (several may be compiled into the workspace).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let client = match client(&args.kubeconfig).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "studio-provisioner cannot start");
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing::info!(volumes = %args.volumes_dir.display(), "studio-provisioner running");
    tokio::select! {
        () = studio_provisioner::run(client, args.volumes_dir) => {}
        _ = tokio::signal::ctrl_c() => {}
        () = terminated() => {}
    }
    std::process::ExitCode::SUCCESS
}

/// SIGTERM (how cluster-down stops components).
async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
