//! Process start-up and shutdown, in one place: logging, store, replication, (in
//! Kubernetes mode) coordination, the node, the HTTP server, background tasks under
//! supervision. Shutdown order: signal → coordination hand-over (a primary hands its
//! Lease to a replica, which catches up through the still-open streams) → end the
//! streams this node serves → stop HTTP (bounded grace).

use std::future::IntoFuture;
use std::time::Duration;

use crate::http::listener::{NodeListener, Peer};
use anyhow::Context;
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::task::JoinSet;
use tracing_subscriber::EnvFilter;

use crate::backup::Backups;
use crate::cluster::{Role, RoleInfo, RoleState};
use crate::config::{Config, LogFormat, RoleArg};
use crate::http::ApiState;
use crate::http::auth::{Auth, MemberAuth, TokenRules};
use crate::http::jwks::Jwks;
use crate::node::Node;
use crate::replication::Replication;
use crate::storage::Store;

/// How long in-flight requests may run after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often the journal is compacted.
const COMPACTION_PERIOD: Duration = Duration::from_secs(10);

/// A named long-running task; it must never end while the process runs.
pub type Task = (&'static str, BoxFuture<'static, Result<(), String>>);

/// Initialises JSON (or text) logs on stderr.
pub fn init_logging(config: &Config) {
    let filter = EnvFilter::try_new(&config.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Opens the store, checks the secrets and sets the initial role.
pub fn build_replication(config: Config) -> anyhow::Result<(Replication, Auth)> {
    let store = Store::open_with_queue(&config.data_dir, config.write_queue)
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    let jwt = config.jwt_secret()?;
    let token = config.cluster_token()?;
    let jwks = config
        .jwks_url
        .clone()
        .filter(|u| !u.trim().is_empty())
        .map(Jwks::new)
        .transpose()?;
    let tls = config.tls_dir.is_some();
    if tls && token.is_some() {
        // With TLS, members and the operator prove themselves by client certificate; a
        // shared secret beside it would be a second, weaker way in.
        anyhow::bail!(
            "a cluster token is not used with --tls-dir: members and the operator \
             authenticate by client certificate; remove --cluster-token(-file) \
             (STUDIO_CLUSTER_TOKEN / STUDIO_CLUSTER_TOKEN_FILE)"
        );
    }
    let no_jwt = jwt.is_none() && jwks.is_none();
    if (no_jwt || (token.is_none() && !tls)) && !config.insecure_no_auth {
        anyhow::bail!(
            "no {} configured: pass --jwt-secret-file (or --jwks-url) and either --tls-dir \
             (members authenticate by certificate) or --cluster-token-file \
             (or STUDIO_JWT_SECRET / STUDIO_JWKS_URL / STUDIO_TLS_DIR / STUDIO_CLUSTER_TOKEN), \
             or --insecure-no-auth to run without authentication",
            if no_jwt {
                "JWT secret"
            } else {
                "member authentication"
            }
        );
    }
    if no_jwt {
        tracing::warn!("no JWT secret configured: content API authentication is DISABLED");
    }
    if token.is_none() && !tls {
        tracing::warn!(
            "neither TLS nor a cluster token configured: internal/admin API authentication is DISABLED"
        );
    }
    let rules = TokenRules {
        issuer: config.jwt_issuer.clone(),
        audience: config.jwt_audience.clone(),
        leeway_seconds: config.jwt_leeway_seconds,
        roles_claim: config
            .jwt_roles_claim
            .split('.')
            .filter(|k| !k.is_empty())
            .map(String::from)
            .collect(),
    };
    let info = initial_role(&config, &store)?;
    let outgoing = token.clone().and_then(|t| String::from_utf8(t).ok());
    let repl = Replication::new(store, config, RoleState::new(info), outgoing)?;
    let members = if tls {
        MemberAuth::Certificate
    } else {
        MemberAuth::Token(token)
    };
    Ok((repl, Auth::new(jwt, jwks, members, rules)))
}

fn initial_role(config: &Config, store: &Store) -> anyhow::Result<RoleInfo> {
    let pos = store.position();
    let role = config.initial_role();
    let follow = || {
        config
            .follow
            .as_ref()
            .map(|u| u.trim_end_matches('/').to_string())
    };
    Ok(match role {
        // Kubernetes mode: start read-only; coordination elects, promotes or follows.
        _ if config.kubernetes_mode() => RoleInfo {
            role: if role == RoleArg::Arbiter {
                Role::Arbiter
            } else {
                Role::Replica
            },
            term: pos.term,
            primary: None,
            read_only: true,
        },
        RoleArg::Primary => {
            // With a restore asked for, the id comes after the restore (in `run`).
            let restoring = config.backup.restore_cluster_id.is_some();
            if store.cluster_id()?.is_none() && !restoring {
                let id = uuid::Uuid::new_v4().to_string();
                store.set_cluster_id(&id)?;
                tracing::info!(cluster_id = %id, "initialised a new repository");
            }
            RoleInfo {
                role: Role::Primary,
                term: pos.term.max(1),
                primary: Some(config.advertise_url()),
                read_only: false,
            }
        }
        RoleArg::Replica => RoleInfo {
            role: Role::Replica,
            term: pos.term,
            primary: follow(),
            read_only: true,
        },
        RoleArg::Arbiter => RoleInfo {
            role: Role::Arbiter,
            term: pos.term,
            primary: follow(),
            read_only: true,
        },
    })
}

/// Runs the node until SIGTERM/SIGINT, or until a supervised task dies (an error:
/// the kubelet restarts the container; fencing must never stop silently).
pub async fn run(config: Config) -> anyhow::Result<()> {
    init_logging(&config);
    let listen = config.listen;
    let internal_listen = config.internal_listen;
    let fail_task = config.fail_task.clone();
    let (repl, auth) = build_replication(config)?;
    let info = repl.role.get();
    let pos = repl.store.position();
    tracing::info!(
        node_id = %repl.node_id, role = ?info.role, term = info.term, seq = pos.seq,
        listen = %listen, internal_listen = ?internal_listen, data_dir = %repl.config.data_dir.display(), "studio-node starting"
    );
    let tcp = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let internal_tcp = match internal_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr} (internal)"))?,
        ),
        None => None,
    };
    let mut tasks: Vec<Task> = crate::replication::tasks(&repl)
        .into_iter()
        .map(|(name, f)| (name, f.map(Ok).boxed()))
        .collect();
    // With TLS only TLS is spoken on the ports: a plaintext client fails its handshake.
    let wrap = |tcp| -> anyhow::Result<NodeListener> {
        Ok(match &repl.tls {
            Some(tls) => NodeListener::tls(tcp, tune_socket, tls.server_config()?)?,
            None => NodeListener::plain(tcp, tune_socket),
        })
    };
    let listener = wrap(tcp)?;
    let internal_listener = internal_tcp.map(wrap).transpose()?;
    if let Some(tls) = &repl.tls {
        {
            let metrics = repl.metrics.clone();
            metrics.tls_certificate_expiry.set(tls.not_after());
            let reloaded = move |t| {
                metrics.tls_certificate_expiry.set(t);
            };
            tasks.push((
                "tls-reload",
                tls.clone().reload_loop(reloaded).map(Ok).boxed(),
            ));
        }
    }
    let backups = Backups::new(&repl.config.backup)?;
    tasks.push((
        "compaction",
        compaction_loop(repl.clone(), backups.clone())
            .map(Ok)
            .boxed(),
    ));
    if backups.objects.is_some() {
        tasks.push((
            "archiver",
            crate::backup::archiver::run(repl.clone(), backups.clone())
                .map(Ok)
                .boxed(),
        ));
    }
    let node = if repl.config.kubernetes_mode() {
        let (coordinator, coord_tasks) = crate::coordination::start(&repl, backups.clone()).await?;
        tasks.extend(coord_tasks);
        Node::coordinated(repl, backups, coordinator)
    } else {
        restore_standalone(&repl, &backups).await?;
        Node::standalone(repl, backups)
    };
    let (full, public) = crate::http::routers(ApiState {
        node: node.clone(),
        auth: std::sync::Arc::new(auth),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let serve = |listener: NodeListener, app: axum::Router| {
        let mut stop_rx = stop_rx.clone();
        axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
            .with_graceful_shutdown(async move {
                let _ = stop_rx.changed().await;
            })
            .into_future()
    };
    // With an internal port the --listen port serves only the public routes.
    let server = match internal_listener {
        Some(internal) => {
            let (a, b) = (serve(listener, public), serve(internal, full));
            async move { tokio::try_join!(a, b).map(|_| ()) }.boxed()
        }
        None => serve(listener, full).boxed(),
    };
    let mut server = tokio::spawn(server);
    let mut supervised = supervise(tasks, fail_task.as_deref());
    tokio::select! {
        _ = shutdown_signal() => {}
        res = &mut server => {
            return match res {
                Ok(r) => r.context("serving HTTP"),
                Err(e) => Err(anyhow::anyhow!("HTTP server task failed: {e}")),
            };
        }
        dead = first_to_end(&mut supervised) => {
            tracing::error!(error = %dead, "a background task stopped: exiting so the node restarts");
            return Err(anyhow::anyhow!(dead));
        }
    }
    if let Some(c) = node.coordinator() {
        // A primary hands over to a replica while the server still streams to it.
        c.shutdown().await;
    }
    node.end_streams();
    let _ = stop_tx.send(true);
    // Long-lived requests (replication streams) would hold a graceful shutdown open
    // forever: give in-flight requests a bounded time, then exit.
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(anyhow::Error::new(e).context("serving HTTP")),
        Ok(Err(e)) => return Err(anyhow::anyhow!("HTTP server task failed: {e}")),
        Err(_) => tracing::warn!("requests still open after the shutdown grace period; exiting"),
    }
    tracing::info!("studio-node stopped");
    Ok(())
}

/// Spawns every task; each reports its name when it ends (returned, failed or
/// panicked). `fail_task` (test hook) makes the named task panic at start.
pub fn supervise(tasks: Vec<Task>, fail_task: Option<&str>) -> JoinSet<(&'static str, String)> {
    let names: Vec<&str> = tasks.iter().map(|(n, _)| *n).collect();
    tracing::info!(tasks = ?names, "supervising background tasks");
    let mut set = JoinSet::new();
    for (name, fut) in tasks {
        let fut = if fail_task == Some(name) {
            async move { panic!("test hook --fail-task: {name} fails") }.boxed()
        } else {
            fut
        };
        set.spawn(async move {
            let why = match tokio::spawn(fut).await {
                Ok(Ok(())) => "returned".to_string(),
                Ok(Err(e)) => e,
                Err(e) if e.is_panic() => "panicked".to_string(),
                Err(e) => format!("was cancelled: {e}"),
            };
            (name, why)
        });
    }
    set
}

/// Resolves with a description of the first supervised task that ended.
pub async fn first_to_end(set: &mut JoinSet<(&'static str, String)>) -> String {
    match set.join_next().await {
        Some(Ok((name, why))) => format!("background task {name} stopped: {why}"),
        Some(Err(e)) => format!("the supervisor of a background task failed: {e}"),
        None => std::future::pending().await,
    }
}

/// Every accepted socket: TCP_NODELAY (replication streams and acks are small writes
/// that must leave at once; with Nagle's algorithm a stream chunk waits for the
/// previous one's delayed ACK, tens of milliseconds of lag) and dead-peer detection.
fn tune_socket(tcp: &tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    if let Err(e) = detect_dead_peers(tcp) {
        tracing::debug!(error = %e, "cannot set TCP keepalive / user timeout");
    }
}

/// Keepalive and TCP_USER_TIMEOUT on an accepted connection, as on the internal
/// clients: a replica that vanished mid-stream (half-open) is dropped in seconds and
/// its stream task ends, instead of after the kernel's ~15 minutes.
fn detect_dead_peers(tcp: &tokio::net::TcpStream) -> std::io::Result<()> {
    use crate::replication::{
        TCP_KEEPALIVE, TCP_KEEPALIVE_INTERVAL, TCP_KEEPALIVE_RETRIES, TCP_USER_TIMEOUT,
    };
    let sock = socket2::SockRef::from(tcp);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE)
        .with_interval(TCP_KEEPALIVE_INTERVAL)
        .with_retries(TCP_KEEPALIVE_RETRIES);
    sock.set_tcp_keepalive(&keepalive)?;
    #[cfg(target_os = "linux")]
    sock.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT))?;
    Ok(())
}

async fn shutdown_signal() {
    shutdown_requested().await;
    tracing::info!("shutdown signal received");
}

/// Returns when SIGTERM or SIGINT arrives (Ctrl-C elsewhere).
async fn shutdown_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Outside Kubernetes a primary with a restore asked for and no data restores before
/// it serves (a refusal stops the process with the reason), then takes a new id.
async fn restore_standalone(repl: &Replication, backups: &Backups) -> anyhow::Result<()> {
    let Some(req) = crate::backup::restore::Request::from_args(&repl.config.backup)? else {
        return Ok(());
    };
    if repl.store.call(|s| s.cluster_id()).await?.is_some() || !repl.role.writable() {
        return Ok(());
    }
    let done =
        crate::backup::restore::run(&repl.store, backups, &req, &repl.config.data_dir).await?;
    tracing::info!(message = %done.message, "restore completed");
    backups.set_restore(done);
    // Write at a term at least the restored journal's (terms never go back).
    let restored = repl.store.position();
    repl.role.update(|i| i.term = i.term.max(restored.term));
    let id = uuid::Uuid::new_v4().to_string();
    let i = id.clone();
    repl.store.call(move |s| s.set_cluster_id(&i)).await?;
    tracing::info!(cluster_id = %id, "the restored repository is a new cluster");
    Ok(())
}

/// Drops journal entries older than the retention window (on a primary that
/// archives, never one not archived yet).
async fn compaction_loop(state: Replication, backups: std::sync::Arc<Backups>) {
    let retention = state.config.journal_retention.max(1);
    loop {
        tokio::time::sleep(COMPACTION_PERIOD).await;
        let pos = state.store.position();
        if pos.seq > retention {
            let before = (pos.seq - retention + 1).min(backups.keep_above().saturating_add(1));
            match state.store.call(move |s| s.compact_before(before)).await {
                Ok(n) if n > 0 => tracing::info!(removed = n, before, "journal compacted"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "journal compaction failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_dies_is_reported_by_name() {
        let tasks: Vec<Task> = vec![
            ("forever", std::future::pending().boxed()),
            ("fence-watchdog", async { Ok(()) }.boxed()),
        ];
        let mut set = supervise(tasks, Some("fence-watchdog"));
        let dead = first_to_end(&mut set).await;
        assert_eq!(dead, "background task fence-watchdog stopped: panicked");
        let tasks: Vec<Task> = vec![(
            "election",
            async { Err("data of another cluster".into()) }.boxed(),
        )];
        let dead = first_to_end(&mut supervise(tasks, None)).await;
        assert_eq!(
            dead,
            "background task election stopped: data of another cluster"
        );
    }
}
