//! `kubectl studio`: status of a StudioCluster and planned switchover.
//!
//! Install by putting `kubectl-studio` on the PATH; then `kubectl studio status demo`,
//! `kubectl studio promote demo demo-2`.

use clap::{Parser, Subcommand};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Config, ResourceExt};
use studio_crds::{StudioCluster, annotations};
use studio_operator::cli;

/// Inspect and operate Studio clusters.
#[derive(Debug, Parser)]
#[command(name = "kubectl-studio", version, about)]
struct Args {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Members, roles, positions, lag and the last failover of a cluster.
    Status {
        /// StudioCluster name.
        cluster: String,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask the operator to switch the primary over to a replica.
    Promote {
        /// StudioCluster name.
        cluster: String,
        /// Pod to promote (a ready data node, e.g. `demo-2`).
        pod: String,
        /// Wait until the pod is the primary (or the operator refuses), at most this many seconds.
        #[arg(long, value_name = "SECONDS")]
        wait: Option<u64>,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::infer().await?;
    let ns = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config)?;
    let api: Api<StudioCluster> = Api::namespaced(client, &ns);
    match args.command {
        Command::Status { cluster, json } => {
            let sc = api.get(&cluster).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&sc.status)?);
            } else {
                print!("{}", cli::render_status(&sc));
            }
        }
        Command::Promote { cluster, pod, wait } => {
            let sc = api.get(&cluster).await?;
            if let Err(why) = cli::check_promote(&sc, &pod) {
                anyhow::bail!("cannot promote {pod}: {why}");
            }
            let patch = serde_json::json!({"metadata": {"annotations": {
                annotations::SWITCHOVER_TO: pod,
                annotations::LAST_SWITCHOVER: null,
            }}});
            api.patch(
                &sc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
            println!(
                "switchover of {ns}/{cluster} to {pod} requested; follow with `kubectl studio status {cluster} -n {ns}` or `kubectl get events -n {ns}`"
            );
            if let Some(secs) = wait {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
                loop {
                    let sc = api.get(&cluster).await?;
                    if sc
                        .status
                        .as_ref()
                        .and_then(|s| s.current_primary.as_deref())
                        == Some(pod.as_str())
                    {
                        println!("{pod} is the primary");
                        break;
                    }
                    let outcome = sc
                        .annotations()
                        .get(annotations::LAST_SWITCHOVER)
                        .cloned()
                        .unwrap_or_default();
                    if outcome.starts_with(&format!("{pod}: refused")) {
                        anyhow::bail!("the operator refused: {outcome}");
                    }
                    if std::time::Instant::now() > deadline {
                        anyhow::bail!(
                            "{pod} is not the primary after {secs} s (last outcome: {outcome:?})"
                        );
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
    }
    Ok(())
}
