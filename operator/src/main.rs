//! studio-operator: reconciles StudioCluster resources.
//!
//! Runs as 2+ replicas; only the holder of the `studio-operator` Lease reconciles.
//! A replica that loses the Lease exits so that it restarts as a clean standby.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use kube::Client;
use kube::runtime::events::Reporter;
use kube_lease_manager::LeaseManagerBuilder;
use studio_operator::controller::{self, Context};
use studio_operator::metrics::Metrics;
use tracing::{error, info};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

/// The Studio Kubernetes operator.
#[derive(Debug, Parser)]
#[command(name = "studio-operator", version, about)]
struct Args {
    /// Namespaces to watch (repeat, or comma-separate); all namespaces when empty.
    #[arg(
        long = "namespace",
        env = "STUDIO_WATCH_NAMESPACES",
        value_delimiter = ','
    )]
    namespaces: Vec<String>,

    /// Log format.
    #[arg(long, env = "STUDIO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax, e.g. `info,studio_operator=debug`).
    #[arg(long, env = "STUDIO_LOG", default_value = "info")]
    log_level: String,

    /// Address of the /healthz, /readyz and /metrics endpoints.
    #[arg(long, env = "STUDIO_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,

    /// Elect a leader among the operator's replicas on a Lease (disable for a single
    /// local replica).
    #[arg(long, env = "STUDIO_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,

    /// Name of the leader-election Lease.
    #[arg(long, env = "STUDIO_LEASE_NAME", default_value = "studio-operator")]
    lease_name: String,

    /// Namespace of the leader-election Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,

    /// The labels of the operator's pods (`k=v,k=v`): with the namespace above, the
    /// NetworkPolicy of a TLS cluster admits the operator to its internal port. Unset:
    /// no NetworkPolicy is created.
    #[arg(long, env = "STUDIO_OPERATOR_POD_LABELS")]
    pod_labels: Option<String>,

    /// This replica's identity (the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    /// Lease duration in seconds; the standby takes over this long after the leader stops renewing.
    #[arg(long, env = "STUDIO_LEASE_DURATION", default_value_t = 15)]
    lease_duration: u64,

    /// Apply the CRDs of this build (StudioCluster, StudioBackup, StudioScheduledBackup)
    /// server-side, wait until they are Established, and exit (the chart's
    /// pre-install/pre-upgrade hook).
    #[arg(long)]
    apply_crds: bool,
}

fn init_logs(args: &Args) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logs(&args);
    if args.apply_crds {
        let client = Client::try_default()
            .await
            .context("cannot build a Kubernetes client (in-cluster config or KUBECONFIG)")?;
        let names =
            studio_operator::crd_install::apply_crds(client, std::time::Duration::from_secs(60))
                .await?;
        info!(crds = ?names, "CRDs applied and Established");
        return Ok(());
    }
    let identity = args
        .identity
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("studio-operator-{}", std::process::id()));
    let metrics = Arc::new(Metrics::new());

    let server_metrics = metrics.clone();
    let addr = args.metrics_addr;
    tokio::spawn(async move {
        if let Err(e) = studio_operator::server::serve(addr, server_metrics).await {
            error!(error = %e, %addr, "metrics server failed");
            std::process::exit(1);
        }
    });

    let client = Client::try_default()
        .await
        .context("cannot build a Kubernetes client (in-cluster config or KUBECONFIG)")?;

    // Leader election: wait until this replica holds the Lease.
    let mut leadership = None;
    if args.leader_elect {
        let manager = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
            .with_namespace(&args.lease_namespace)
            .with_identity(&identity)
            .with_duration(args.lease_duration.max(2))
            .with_grace((args.lease_duration / 3).max(1))
            .with_field_manager("studio-operator-leader")
            .build()
            .await
            .context("cannot set up leader election")?;
        let (mut rx, handle) = manager.watch().await;
        info!(%identity, lease = %args.lease_name, namespace = %args.lease_namespace, "waiting for leadership");
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                anyhow::bail!("leader election stopped");
            }
        }
        info!(%identity, "became leader");
        leadership = Some((rx, handle));
    }
    metrics.leader.set(1);

    let reporter = Reporter {
        controller: "studio-operator".into(),
        instance: Some(identity.clone()),
    };
    let peer = match args.pod_labels.as_deref() {
        Some(l) => Some(
            studio_operator::build::network_policy::OperatorPeer::parse(&args.lease_namespace, l)
                .map_err(|e| anyhow::anyhow!("--pod-labels: {e}"))?,
        ),
        None => {
            tracing::warn!(
                "no --pod-labels (STUDIO_OPERATOR_POD_LABELS): TLS clusters get no NetworkPolicy"
            );
            None
        }
    };
    let ctx = Arc::new(Context::new(client, reporter, metrics).with_operator_peer(peer));
    let namespaces: Vec<Option<String>> = if args.namespaces.iter().all(|n| n.trim().is_empty()) {
        vec![None]
    } else {
        args.namespaces
            .iter()
            .filter(|n| !n.trim().is_empty())
            .map(|n| Some(n.trim().to_string()))
            .collect()
    };
    info!(namespaces = ?namespaces, "starting controllers");
    // Per namespace: the StudioCluster controller, and the StudioBackup and
    // StudioScheduledBackup controllers with the archive upkeep (studio_operator::backup).
    let controllers = futures::future::join_all(namespaces.into_iter().map(|ns| {
        let ctx = ctx.clone();
        async move {
            futures::join!(
                controller::run(ctx.clone(), ns.clone()),
                studio_operator::backup::run(ctx, ns),
            );
        }
    }));

    match leadership {
        Some((mut rx, handle)) => {
            let lost = async move {
                loop {
                    if rx.changed().await.is_err() || !*rx.borrow_and_update() {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = controllers => {
                    // Shutdown (SIGTERM): hand the Lease back at once so the standby
                    // takes over without waiting for it to expire.
                    info!("controllers stopped; releasing leadership");
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), handle).await;
                }
                _ = lost => {
                    error!(%identity, "lost leadership; exiting so a standby takes over");
                    std::process::exit(2);
                }
            }
        }
        None => {
            controllers.await;
        }
    }
    Ok(())
}
