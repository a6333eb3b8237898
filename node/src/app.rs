//! Shared application state and the write path used by every handler.

use std::sync::Arc;

use crate::config::Config;
use crate::http::auth::Auth;
use crate::http::error::ApiError;
use crate::metrics::Metrics;
use crate::roles::RoleState;
use crate::storage::{Applied, JournalEntry, Op, Store};

/// Everything a request handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub role: Arc<crate::roles::RoleState>,
    pub auth: Arc<Auth>,
    /// This node's id.
    pub node_id: Arc<str>,
    /// The URL peers reach this node at.
    pub advertise_url: Arc<str>,
    /// HTTP client for node-to-node calls.
    pub http: reqwest::Client,
}

impl AppState {
    pub fn new(store: Arc<Store>, config: Config, role: RoleState, auth: Auth) -> AppState {
        let node_id: Arc<str> = config.node_id().into();
        let advertise_url: Arc<str> = config.advertise_url().into();
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        let metrics = Arc::new(Metrics::new());
        let pos = store.position();
        metrics.journal_seq.set(pos.seq as i64);
        metrics.journal_term.set(pos.term as i64);
        AppState {
            store,
            config: Arc::new(config),
            metrics,
            role: Arc::new(role),
            auth: Arc::new(auth),
            node_id,
            advertise_url,
            http,
        }
    }

    /// The write path of every content mutation: refuse unless this node is a
    /// writable primary, commit durably under the current term, then let
    /// replication hold the answer back until the write is acknowledged (sync mode).
    pub async fn commit(&self, op: Op) -> Result<(JournalEntry, Applied), ApiError> {
        let info = self.role.get();
        if !self.role.writable() || !crate::coordination::may_write() {
            return Err(ApiError::read_only(info.primary.as_deref()));
        }
        let term = info.term;
        crate::replication::before_commit(self)?;
        let (entry, applied) = self.store.write_async(op, term).await?;
        self.metrics.writes.inc();
        self.metrics.journal_seq.set(entry.seq as i64);
        self.metrics.journal_term.set(entry.term as i64);
        crate::replication::after_commit(self, &entry).await?;
        Ok((entry, applied))
    }
}
