//! Process start-up: logging, store, role, HTTP server, background tasks, shutdown.

use std::future::IntoFuture;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use tracing_subscriber::EnvFilter;

use crate::app::AppState;
use crate::config::{Config, LogFormat, RoleArg};
use crate::http::auth::Auth;
use crate::roles::{Role, RoleInfo, RoleState};
use crate::storage::Store;

/// How long in-flight requests may run after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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

/// Builds the state for `config` (opens the store, sets the initial role).
pub fn build_state(config: Config) -> anyhow::Result<AppState> {
    let store = Store::open(&config.data_dir)
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    let jwt = config.jwt_secret()?;
    let token = config.cluster_token()?;
    if (jwt.is_none() || token.is_none()) && !config.insecure_no_auth {
        anyhow::bail!(
            "no {} configured: pass --jwt-secret-file and --cluster-token-file (or \
             STUDIO_JWT_SECRET / STUDIO_CLUSTER_TOKEN), or --insecure-no-auth to run without \
             authentication",
            if jwt.is_none() {
                "JWT secret"
            } else {
                "cluster token"
            }
        );
    }
    if jwt.is_none() {
        tracing::warn!("no JWT secret configured: content API authentication is DISABLED");
    }
    if token.is_none() {
        tracing::warn!(
            "no cluster token configured: internal/admin API authentication is DISABLED"
        );
    }
    let pos = store.position();
    let role = config.initial_role();
    let advertise = config.advertise_url();
    let info = match role {
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
            if store.cluster_id()?.is_none() {
                let id = uuid::Uuid::new_v4().to_string();
                store.set_cluster_id(&id)?;
                tracing::info!(cluster_id = %id, "initialised a new repository");
            }
            RoleInfo {
                role: Role::Primary,
                term: pos.term.max(1),
                primary: Some(advertise),
                read_only: false,
            }
        }
        RoleArg::Replica => RoleInfo {
            role: Role::Replica,
            term: pos.term,
            primary: config
                .follow
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_string()),
            read_only: true,
        },
        RoleArg::Arbiter => RoleInfo {
            role: Role::Arbiter,
            term: pos.term,
            primary: config
                .follow
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_string()),
            read_only: true,
        },
    };
    let auth = Auth::new(jwt, token);
    Ok(AppState::new(store, config, RoleState::new(info), auth))
}

/// Runs the node until SIGTERM/SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    init_logging(&config);
    let listen = config.listen;
    let state = build_state(config)?;
    let info = state.role.get();
    let pos = state.store.position();
    tracing::info!(
        node_id = %state.node_id, role = ?info.role, term = info.term, seq = pos.seq,
        listen = %listen, data_dir = %state.config.data_dir.display(), "studio-node starting"
    );
    // TCP_NODELAY: replication streams and acks are small writes that must leave at
    // once; with Nagle's algorithm a stream chunk waits for the previous one's
    // (delayed) ACK, which showed up as tens of milliseconds of replication lag.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?
        .tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
    let app = crate::http::router(state.clone());
    crate::replication::start(&state);
    let kubernetes = state.config.kubernetes_mode();
    if kubernetes {
        crate::coordination::start(&state).await?;
    }
    tokio::spawn(compaction_loop(state.clone()));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let mut server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.changed().await;
            })
            .into_future(),
    );
    tokio::select! {
        _ = shutdown_signal() => {}
        res = &mut server => {
            return match res {
                Ok(r) => r.context("serving HTTP"),
                Err(e) => Err(anyhow::anyhow!("HTTP server task failed: {e}")),
            };
        }
    }
    if kubernetes {
        // A primary hands over to a replica while the server still streams to it.
        crate::coordination::shutdown(&state).await;
    }
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

async fn shutdown_signal() {
    shutdown_requested().await;
    tracing::info!("shutdown signal received");
}

/// Returns when SIGTERM or SIGINT arrives (Ctrl-C elsewhere).
pub(crate) async fn shutdown_requested() {
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

/// Drops journal entries older than the retention window.
async fn compaction_loop(state: AppState) {
    let retention = state.config.journal_retention.max(1);
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let pos = state.store.position();
        if pos.seq > retention {
            let before = pos.seq - retention + 1;
            match state.store.call(move |s| s.compact_before(before)).await {
                Ok(n) if n > 0 => tracing::info!(removed = n, before, "journal compacted"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "journal compaction failed"),
            }
        }
    }
}
