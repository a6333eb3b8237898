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
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
        Command::Promote { cluster, pod } => {
            let sc = api.get(&cluster).await?;
            if let Err(why) = cli::check_promote(&sc, &pod) {
                anyhow::bail!("cannot promote {pod}: {why}");
            }
            let patch =
                serde_json::json!({"metadata": {"annotations": {annotations::SWITCHOVER_TO: pod}}});
            api.patch(
                &sc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
            println!(
                "switchover of {ns}/{cluster} to {pod} requested; follow with `kubectl studio status {cluster} -n {ns}` or `kubectl get events -n {ns}`"
            );
        }
    }
    Ok(())
}
