//! Domain errors of role changes and of the write path (no HTTP types: the HTTP
//! layer decides status codes).

use std::time::Duration;

use crate::storage::StoreError;

/// Why a role change was refused.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error("term {requested} is not above the highest term this node knows ({known})")]
    StaleTerm { requested: u64, known: u64 },
    #[error("an arbiter never becomes primary")]
    Arbiter,
    #[error("invalid primary address {0:?}")]
    BadAddress(String),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

/// Why a client write was refused or not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Not a writable primary (replica, demoted, fenced); `primary` says where to go.
    #[error("this node does not accept writes")]
    ReadOnly { primary: Option<String> },
    /// Sync mode: fewer than K replicas connected; nothing was written.
    #[error(
        "sync replication needs {needed} connected replica(s), {connected} connected: the write was refused and not applied"
    )]
    QuorumUnavailable { needed: usize, connected: usize },
    /// Sync mode: demoted while waiting for acknowledgements.
    #[error(
        "this node stopped being a writable primary before {needed} replica(s) confirmed seq {seq}: the write is not acknowledged"
    )]
    NotAcknowledged { needed: usize, seq: u64 },
    /// Sync mode: the quorum did not confirm in time.
    #[error(
        "only {confirmed} of {needed} required replica(s) confirmed seq {seq} within {timeout:?}: the write is not acknowledged"
    )]
    SyncTimeout {
        confirmed: usize,
        needed: usize,
        seq: u64,
        timeout: Duration,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}
