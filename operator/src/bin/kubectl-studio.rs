//! `kubectl studio`: status of a StudioCluster, planned switchover, merged logs, a
//! support bundle, base backups and restores.
//!
//! Install by putting `kubectl-studio` on the PATH (or `kubectl krew install --manifest
//! deploy/krew/studio.yaml`); then `kubectl studio status demo`, `kubectl studio
//! promote demo demo-2`, `kubectl studio logs demo`, `kubectl studio report demo`,
//! `kubectl studio backup demo --wait`, `kubectl studio restore demo2 --from demo`.

use clap::{Parser, Subcommand};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::{Client, Config, ResourceExt};
use studio_crds::{BackupTarget, StudioBackup, StudioCluster, annotations, labels};
use studio_operator::backup::manifest::{self, RestoreFrom, RestorePoint};
use studio_operator::{cli, support_bundle};

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
    /// Every member's log, merged by time, each line prefixed with its pod.
    Logs {
        /// StudioCluster name.
        cluster: String,
        /// Lines per member (from the end).
        #[arg(long, default_value_t = 200)]
        tail: i64,
        /// Only lines newer than this many seconds.
        #[arg(long, value_name = "SECONDS")]
        since: Option<i64>,
    },
    /// A support bundle (.tar.gz): the cluster, its status, Events, pods, StatefulSets,
    /// Lease, each member's own view and recent log.
    Report {
        /// StudioCluster name.
        cluster: String,
        /// Output file (default `<cluster>-report-<unix time>.tar.gz`).
        #[arg(short, long)]
        output: Option<std::path::PathBuf>,
        /// Log lines per member.
        #[arg(long, default_value_t = 2000)]
        tail: i64,
        /// A file holding a user token with the reader role: each member's own view
        /// (`/api/v1/cluster/status`) is included only with it.
        #[arg(long, value_name = "FILE")]
        token_file: Option<std::path::PathBuf>,
    },
    /// Take a base backup now: creates a StudioBackup `<cluster>-<yyyymmddhhmmss>`.
    Backup {
        /// StudioCluster name (it needs spec.backup).
        cluster: String,
        /// Wait until the backup is Completed or Failed and print the result (exit
        /// status 1 when it failed).
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
        timeout: u64,
        /// Which member takes it (default: the cluster's spec.backup.target).
        #[arg(long, value_parser = ["prefer-standby", "primary"])]
        target: Option<String>,
        /// Name of the StudioBackup (default `<cluster>-<yyyymmddhhmmss>`).
        #[arg(long)]
        name: Option<String>,
    },
    /// Create a new StudioCluster restored from a cluster's archive or a StudioBackup,
    /// with the source cluster's image, nodes, replication, TLS and backup settings.
    Restore {
        /// Name of the new StudioCluster (must not exist).
        new_cluster: String,
        /// A StudioCluster (its archive) or a StudioBackup; `cluster/NAME` or
        /// `backup/NAME` when both kinds have that name.
        #[arg(long)]
        from: String,
        /// Restore up to and including this journal seq.
        #[arg(long, value_name = "N", conflicts_with = "to_time")]
        to_seq: Option<i64>,
        /// Restore every write made at or before this time (RFC 3339; UTC if no zone).
        #[arg(long, value_name = "RFC3339")]
        to_time: Option<String>,
        /// Print the StudioCluster as YAML instead of creating it.
        #[arg(long)]
        dry_run: bool,
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
    let api: Api<StudioCluster> = Api::namespaced(client.clone(), &ns);
    match args.command {
        Command::Backup {
            cluster,
            wait,
            timeout,
            target,
            name,
        } => {
            let sc = api.get(&cluster).await?;
            if sc.spec.backup.is_none() {
                anyhow::bail!(
                    "StudioCluster {cluster} has no spec.backup: set spec.backup.objectStore first"
                );
            }
            let target = match target.as_deref() {
                Some("primary") => Some(BackupTarget::Primary),
                Some(_) => Some(BackupTarget::PreferStandby),
                None => None,
            };
            let name = name.unwrap_or_else(|| manifest::stamped_name(&cluster, chrono::Utc::now()));
            let backups: Api<StudioBackup> = Api::namespaced(client.clone(), &ns);
            let b = manifest::studio_backup(&ns, &name, &cluster, target, None);
            backups
                .create(&PostParams::default(), &b)
                .await
                .map_err(|e| match e {
                    kube::Error::Api(ae) if ae.code == 409 => {
                        anyhow::anyhow!("StudioBackup {name} already exists")
                    }
                    e => e.into(),
                })?;
            println!("studiobackup.studio.cms.io/{name} created");
            if wait {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
                let mut last_phase = None;
                loop {
                    let b = backups.get(&name).await?;
                    let phase = b.status.as_ref().and_then(|s| s.phase.clone());
                    if phase != last_phase {
                        if let Some(p) = &phase {
                            let msg = b
                                .status
                                .as_ref()
                                .and_then(|s| s.message.clone())
                                .unwrap_or_default();
                            eprintln!("{name}: {p} {msg}");
                        }
                        last_phase = phase;
                    }
                    match manifest::backup_result(&b) {
                        Some(Ok(done)) => {
                            println!("{done}");
                            break;
                        }
                        Some(Err(failed)) => anyhow::bail!("{failed}"),
                        None => {}
                    }
                    if std::time::Instant::now() > deadline {
                        anyhow::bail!(
                            "{name} did not finish within {timeout} s (phase {last_phase:?})"
                        );
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                }
            }
        }
        Command::Restore {
            new_cluster,
            from,
            to_seq,
            to_time,
            dry_run,
        } => {
            let backups: Api<StudioBackup> = Api::namespaced(client.clone(), &ns);
            let (kind, name) = manifest::parse_from(&from).map_err(anyhow::Error::msg)?;
            let from = match kind {
                Some(f) => f,
                None => manifest::resolve_from(
                    &name,
                    backups.get_opt(&name).await?.is_some(),
                    api.get_opt(&name).await?.is_some(),
                )
                .map_err(anyhow::Error::msg)?,
            };
            // The cluster whose spec is copied: the source itself, or the backup's.
            let source_name = match &from {
                RestoreFrom::Cluster(c) => c.clone(),
                RestoreFrom::Backup(b) => {
                    let bk = backups
                        .get_opt(b)
                        .await?
                        .ok_or_else(|| anyhow::anyhow!("no StudioBackup {b} in namespace {ns}"))?;
                    let phase = bk.status.as_ref().and_then(|s| s.phase.clone());
                    if phase.as_deref() != Some("Completed") {
                        anyhow::bail!(
                            "StudioBackup {b} is {}, not Completed: nothing to restore from yet",
                            phase.unwrap_or_else(|| "new".into())
                        );
                    }
                    bk.spec.cluster
                }
            };
            let source = api.get_opt(&source_name).await?.ok_or_else(|| {
                anyhow::anyhow!(
                    "StudioCluster {source_name} (whose spec the new cluster copies) does not exist; write the new StudioCluster by hand with spec.bootstrap.recovery"
                )
            })?;
            let point = match (to_seq, to_time) {
                (Some(s), _) => RestorePoint::Seq(s),
                (None, Some(t)) => RestorePoint::Time(t),
                (None, None) => RestorePoint::Latest,
            };
            let sc = manifest::restore_cluster(&new_cluster, &source, &from, &point)
                .map_err(anyhow::Error::msg)?;
            if dry_run {
                print!("{}", serde_yaml::to_string(&sc)?);
                return Ok(());
            }
            if api.get_opt(&new_cluster).await?.is_some() {
                anyhow::bail!(
                    "StudioCluster {new_cluster} already exists: a restore needs a new cluster"
                );
            }
            api.create(&PostParams::default(), &sc).await.map_err(|e| match e {
                kube::Error::Api(ae) if ae.code == 409 => {
                    anyhow::anyhow!("StudioCluster {new_cluster} already exists: a restore needs a new cluster")
                }
                e => e.into(),
            })?;
            println!(
                "studiocluster.studio.cms.io/{new_cluster} created from {}; follow with `kubectl studio status {new_cluster} -n {ns}`",
                match &from {
                    RestoreFrom::Cluster(c) => format!("the archive of {c}"),
                    RestoreFrom::Backup(b) => format!("StudioBackup {b}"),
                }
            );
        }
        Command::Logs {
            cluster,
            tail,
            since,
        } => {
            api.get(&cluster).await?;
            let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let list = pods
                .list(&ListParams::default().labels(&format!("{}={cluster}", labels::CLUSTER)))
                .await?;
            let mut logs = Vec::new();
            for p in &list.items {
                let lp = LogParams {
                    container: Some(studio_operator::build::CONTAINER.into()),
                    tail_lines: Some(tail),
                    since_seconds: since,
                    ..Default::default()
                };
                match pods.logs(&p.name_any(), &lp).await {
                    Ok(l) => logs.push((p.name_any(), l)),
                    Err(e) => eprintln!("{}: {e}", p.name_any()),
                }
            }
            for line in cli::merge_logs(&logs) {
                println!("{line}");
            }
        }
        Command::Report {
            cluster,
            output,
            tail,
            token_file,
        } => {
            let token = token_file
                .map(|f| {
                    std::fs::read_to_string(&f)
                        .map(|t| t.trim().to_string())
                        .map_err(|e| anyhow::anyhow!("reading --token-file {}: {e}", f.display()))
                })
                .transpose()?;
            let entries =
                support_bundle::collect(&client, &ns, &cluster, tail, token.as_deref()).await?;
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let prefix = format!("{cluster}-report-{stamp}");
            let path = output.unwrap_or_else(|| format!("{prefix}.tar.gz").into());
            let bytes = support_bundle::tar_gz(&prefix, &entries)?;
            std::fs::write(&path, &bytes)?;
            println!(
                "wrote {} ({} files, {} bytes)",
                path.display(),
                entries.len(),
                bytes.len()
            );
        }
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
