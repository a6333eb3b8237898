//! Replication: journal stream, apply, catch-up, clone, divergence repair and the
//! sync write quorum.
//!
//! ## Protocol (all routes under `/internal/v1`, cluster token; served by the HTTP layer)
//! - A replica (or arbiter) opens ONE long-lived `GET REPLICATION_STREAM?node_id=..&
//!   after_seq=..&after_term=..` to the primary. The answer is newline-delimited JSON
//!   [`StreamFrame`](studio_crds::node_api::StreamFrame)s: `entry` frames in seq order
//!   from `after_seq + 1`, a `heartbeat` every second when idle, or a single
//!   `diverged {common}` / `clone_required` frame.
//! - Acknowledgements: the stream request carries the replica's durable position,
//!   and after every applied batch (and on every heartbeat) the replica POSTs its new
//!   durable position to `REPLICATION_ACK` over the same keep-alive connection pool.
//!   (A separate small POST instead of a full-duplex request body: HTTP/1.1 clients
//!   and proxies handle it everywhere, and on loopback it costs ~100 µs.)
//! - Binaries: before an entry registering a binary applies, the replica fetches it
//!   from `BLOB_PREFIX/{sha256}` and stores it durably.
//! - Clone: `GET SNAPSHOT` returns a consistent online copy of the database
//!   (`VACUUM INTO`) with its position in headers; the replica fetches every binary
//!   it lists, then swaps the copy in and streams from its position.
//! - Divergence: the primary checks the requested position against its term history;
//!   a position not in it gets `diverged {common}`. The replica rolls back to
//!   `common`, keeps the removed entries in its quarantine and reconnects.
//! - Terms: the stream answer carries the primary's term; a node refuses a primary
//!   (and entries) of a term below the highest term it knows or has promised.
//!
//! ## Sync mode
//! [`after_commit`] waits until `--sync-replicas` peers (replicas or arbiter) have
//! acknowledged a position at or past the entry, up to `--sync-timeout`. Before the
//! write is even committed, [`before_commit`] refuses it when fewer than K peers are
//! connected, so with the quorum down a write fails without leaving anything behind.
//! A write whose quorum disappears *between* that check and the acknowledgements
//! gets a 503 `sync_timeout` (not acknowledged) but stays in the primary's journal,
//! as with PostgreSQL's synchronous replication: it may still reach the replicas
//! later, or end in the quarantine of this node after a failover. Rolling it back
//! instead would reuse its (seq, term) for another entry, which divergence
//! detection relies on never happening.
//!
//! ## Shutdown
//! On SIGTERM/SIGINT the streams this node serves end (so the HTTP server's graceful
//! shutdown completes); replicas reconnect with backoff.

pub mod client;
pub mod follower;
mod peers;
pub mod promise;
pub mod quorum;
pub mod roles;
pub mod server;
pub mod status;
pub mod switchover;

pub use peers::{PEER_TIMEOUT, Peer, Shared};

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::RoleState;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::storage::Store;
use crate::tls::Tls;

/// Idle streams send a heartbeat this often.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// Internal request/response calls (acks, positions, status, promote) end after this
/// long at most; callers may set a shorter per-request timeout.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Connecting to a peer gives up after this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// TCP keepalive on internal connections (idle 2 s, then a probe a second, 3 probes):
/// a peer that vanished without FIN/RST (a half-open connection) is noticed within
/// about 5 s even while a request waits for its answer.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(2);
pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
pub const TCP_KEEPALIVE_RETRIES: u32 = 3;
/// Data sent but not acknowledged by the peer for this long fails the connection
/// (TCP_USER_TIMEOUT), instead of the kernel's ~15 minutes of retransmissions.
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the replication layer (and the layers above it) acts on: the store,
/// the role, the replication bookkeeping, this node's identity and the internal HTTP
/// clients. Cheap to clone.
#[derive(Clone)]
pub struct Replication {
    pub store: Arc<Store>,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub role: Arc<RoleState>,
    pub repl: Arc<Shared>,
    /// This node's id.
    pub node_id: Arc<str>,
    /// The URL peers reach this node at.
    pub advertise_url: Arc<str>,
    /// Client for internal request/response calls (total timeout [`CALL_TIMEOUT`]).
    pub http: reqwest::Client,
    /// Client for long-lived streams and bulk downloads: no total timeout; callers
    /// bound the wait for the answer and for every chunk (`client::STREAM_SILENCE`).
    pub stream_http: reqwest::Client,
    /// The cluster token for outgoing internal calls.
    token: Option<Arc<str>>,
    /// TLS material (`--tls-dir`): the listener serves it, the clients present it.
    pub tls: Option<Arc<Tls>>,
}

/// Why the internal HTTP clients could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("building the internal HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

impl Replication {
    pub fn new(
        store: Arc<Store>,
        config: Config,
        role: RoleState,
        token: Option<String>,
    ) -> Result<Replication, ClientBuildError> {
        let node_id: Arc<str> = config.node_id().into();
        let advertise_url: Arc<str> = config.advertise_url().into();
        let tls = match &config.tls_dir {
            Some(dir) => Some(Tls::load(dir)?),
            None => None,
        };
        let http = internal_client(tls.as_ref())?
            .timeout(CALL_TIMEOUT)
            .build()?;
        let stream_http = internal_client(tls.as_ref())?.build()?;
        let metrics = Arc::new(Metrics::new());
        let pos = store.position();
        metrics.journal_seq.set(pos.seq as i64);
        metrics.journal_term.set(pos.term as i64);
        Ok(Replication {
            store,
            config: Arc::new(config),
            metrics,
            role: Arc::new(role),
            repl: Arc::new(Shared::default()),
            node_id,
            advertise_url,
            http,
            stream_http,
            token: token.map(Into::into),
            tls,
        })
    }

    /// Adds the cluster token to an internal request.
    pub fn internal(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Ends the streams this node serves (shutdown: after any hand-over, so the
    /// target could catch up through them).
    pub fn end_streams(&self) {
        self.repl.shutdown.send_replace(true);
    }
}

/// The settings every internal client shares: no proxy, bounded connect, small writes
/// leave at once, dead peers detected by the kernel in seconds; with TLS, the member's
/// certificate presented and peers verified against the cluster CA.
pub fn internal_client(tls: Option<&Arc<Tls>>) -> Result<reqwest::ClientBuilder, ClientBuildError> {
    let b = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .tcp_keepalive(TCP_KEEPALIVE)
        .tcp_keepalive_interval(TCP_KEEPALIVE_INTERVAL)
        .tcp_keepalive_retries(TCP_KEEPALIVE_RETRIES);
    #[cfg(target_os = "linux")]
    let b = b.tcp_user_timeout(TCP_USER_TIMEOUT);
    Ok(match tls {
        Some(t) => b.use_preconfigured_tls(t.client_config()?),
        None => b,
    })
}

/// The background tasks of replication, for the server's supervisor: the follower
/// (streams from whatever primary the role names) and the lag metrics loop.
pub fn tasks(state: &Replication) -> Vec<(&'static str, futures::future::BoxFuture<'static, ()>)> {
    use futures::FutureExt;
    vec![
        ("replication-follower", follower::run(state.clone()).boxed()),
        (
            "replication-lag-metrics",
            status::lag_metrics_loop(state.clone()).boxed(),
        ),
        (
            "write-quorum-monitor",
            quorum::monitor(state.clone()).boxed(),
        ),
    ]
}

/// A base URL for `ip:port` (`scheme` http or https), IPv6 addresses in brackets.
pub fn base_url(scheme: &str, ip: &str, port: u16) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(addr) => format!("{scheme}://{}", std::net::SocketAddr::new(addr, port)),
        Err(_) => format!("{scheme}://{ip}:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_are_bracketed() {
        assert_eq!(base_url("http", "10.0.0.7", 8080), "http://10.0.0.7:8080");
        assert_eq!(base_url("https", "fd00::7", 8080), "https://[fd00::7]:8080");
        assert_eq!(
            base_url("http", "node-0.studio", 8080),
            "http://node-0.studio:8080"
        );
    }
}
