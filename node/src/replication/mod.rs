//! Replication: journal stream, apply, catch-up, clone, sync quorum.
//! Stub from the skeleton; the replication engineer owns this module.

pub mod http;

use crate::app::AppState;
use crate::http::error::ApiError;
use crate::storage::JournalEntry;

/// Called by the content API after every local commit, before the client is
/// answered. In sync mode this waits for the write quorum (an error here means the
/// write is NOT acknowledged to the client).
pub async fn after_commit(_state: &AppState, _entry: &JournalEntry) -> Result<(), ApiError> {
    Ok(())
}

/// Starts background replication tasks for the configured role (replica stream,
/// retention/compaction, ...). Called once by `main` after the server is bound.
pub fn start(_state: &AppState) {}

/// Peers known to replication, for `/api/v1/cluster/status`.
pub fn peers(_state: &AppState) -> Vec<studio_crds::node_api::PeerStatus> {
    Vec::new()
}

/// Whether replication considers this node able to serve its role (for /readyz);
/// e.g. a replica that has caught up once.
pub fn ready(_state: &AppState) -> bool {
    true
}
