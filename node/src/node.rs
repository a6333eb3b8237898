//! The node as the HTTP layer sees it: replication (store, role, peers) plus the
//! injected write fence and, in Kubernetes mode, the coordinator. `commit` is the
//! write path of every content mutation.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use studio_crds::node_api::AdminResponse;

use crate::backup::Backups;
use crate::cluster::{WriteError, WriteFence};
use crate::coordination::Coordinator;
use crate::replication::Replication;
use crate::replication::quorum::{after_commit, before_commit};
use crate::replication::switchover::{self, InProgress, PromoteOverHttp, SwitchoverError};
use crate::storage::{Applied, JournalEntry, Op};

/// Cheap to clone.
#[derive(Clone)]
pub struct Node {
    pub repl: Replication,
    /// Archiving, base backups and the bootstrap restore.
    pub backups: Arc<Backups>,
    fence: Arc<dyn WriteFence>,
    coordinator: Option<Arc<Coordinator>>,
}

impl Deref for Node {
    type Target = Replication;
    fn deref(&self) -> &Replication {
        &self.repl
    }
}

impl Node {
    /// Outside Kubernetes: the role alone decides who writes.
    pub fn standalone(repl: Replication, backups: Arc<Backups>) -> Node {
        Node {
            repl,
            backups,
            fence: Arc::new(crate::cluster::OpenFence),
            coordinator: None,
        }
    }

    /// Kubernetes mode: the coordinator fences writes and runs switchovers.
    pub fn coordinated(
        repl: Replication,
        backups: Arc<Backups>,
        coordinator: Arc<Coordinator>,
    ) -> Node {
        Node {
            repl,
            backups,
            fence: coordinator.clone(),
            coordinator: Some(coordinator),
        }
    }

    pub fn coordinator(&self) -> Option<&Arc<Coordinator>> {
        self.coordinator.as_ref()
    }

    /// Whether this node may take a client write now (role and fence).
    pub fn may_write(&self) -> Result<(), WriteError> {
        if self.role.writable() && self.fence.may_write() {
            Ok(())
        } else {
            Err(WriteError::ReadOnly {
                primary: self.role.get().primary,
            })
        }
    }

    /// Refuse unless this node is a writable primary, commit durably under the
    /// current term, then hold the answer back until the write is acknowledged
    /// (sync mode).
    pub async fn commit(&self, op: Op) -> Result<(JournalEntry, Applied), WriteError> {
        self.may_write()?;
        let term = self.role.get().term;
        before_commit(&self.repl)?;
        let (entry, applied) = self.store.write_async(op, term).await?;
        self.metrics.writes.inc();
        self.metrics.journal_seq.set(entry.seq as i64);
        self.metrics.journal_term.set(entry.term as i64);
        after_commit(&self.repl, &entry).await?;
        Ok((entry, applied))
    }

    /// Planned hand-over to `target` (node id, pod name or base URL).
    ///
    /// The hand-over fences this primary first, so it runs in its own task, to its end
    /// (handed over, or writes reopened), whatever happens to the caller: dropped
    /// half-way with an HTTP request whose client went away (an operator leader killed
    /// mid-switchover), it left the primary read-only for good.
    pub async fn switchover(
        &self,
        target: &str,
        timeout: Duration,
    ) -> Result<AdminResponse, SwitchoverError> {
        let node = self.clone();
        let target = target.to_string();
        tokio::spawn(async move { node.switchover_to_the_end(&target, timeout).await })
            .await
            .map_err(|e| SwitchoverError::Task(e.to_string()))?
    }

    async fn switchover_to_the_end(
        &self,
        target: &str,
        timeout: Duration,
    ) -> Result<AdminResponse, SwitchoverError> {
        if let Some(c) = &self.coordinator {
            return c.switchover(target, timeout).await;
        }
        let _busy = InProgress::begin(&self.repl.repl.switching)?;
        let target = switchover::connected_target(&self.repl, target)?;
        switchover::run(&self.repl, &target, timeout, &PromoteOverHttp(&self.repl)).await
    }
}
