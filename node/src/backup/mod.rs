//! Backups: continuous archiving of the journal to an S3-compatible object store
//! ([`archiver`]), base backups ([`base`]) and restore into a new cluster
//! ([`restore`]). The archive's layout is in [`layout`].
//!
//! Layer: above replication (the archiver reads the primary's acknowledgements so it
//! archives only entries another member holds: a failover never forks the archive),
//! below coordination (bootstrap runs the restore) and HTTP (the routes).

pub mod archiver;
pub mod base;
pub mod layout;
pub mod objects;
pub mod restore;
pub mod segment;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use studio_crds::node_api::{ArchiveStatus, BaseBackupStatus, RestoreStatus};

use crate::config::BackupArgs;
use crate::storage::StoreError;
pub use objects::Objects;

/// A segment is closed once its entries reach this many bytes (uncompressed JSON).
pub const SEGMENT_BYTES: usize = 4 << 20;
/// Base backups remembered in memory (older ones are answered from their manifest).
const MAX_RUNS: usize = 32;

/// Why a backup operation failed. `Refused` is permanent (retrying cannot help).
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("storage: {0}")]
    Storage(#[from] StoreError),
    #[error("I/O: {0}")]
    Io(std::io::Error),
    #[error("the archive is damaged: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Refused(String),
    #[error("backup configuration: {0}")]
    Config(String),
    #[error("backups are not configured on this node (no backup bucket)")]
    NotConfigured,
    #[error("base backup {0} is running; one at a time")]
    Busy(String),
    #[error("no base backup {0}")]
    NotFound(String),
    #[error("this node has no cluster id yet")]
    NoClusterId,
}

impl BackupError {
    /// Retrying later can succeed (the object store or the disk may recover).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BackupError::Store(_) | BackupError::Io(_) | BackupError::Storage(_)
        )
    }
}

/// The node's backup state: the object store (if configured), what the archiver
/// reports, the base backups this node ran, and the restore it ran at bootstrap.
pub struct Backups {
    pub objects: Option<Objects>,
    pub archive_timeout: Duration,
    archive: Mutex<ArchiveStatus>,
    /// Highest seq archived (u64::MAX when this node does not archive): the primary
    /// keeps journal entries above it through compaction.
    archived_seq: AtomicU64,
    runs: Mutex<HashMap<String, BaseBackupStatus>>,
    restore: Mutex<Option<RestoreStatus>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Backups {
    pub fn new(args: &BackupArgs) -> Result<Arc<Backups>, BackupError> {
        Ok(Arc::new(Backups {
            objects: Objects::from_args(args)?,
            archive_timeout: args.archive_timeout.max(Duration::from_millis(100)),
            archive: Mutex::new(ArchiveStatus::default()),
            archived_seq: AtomicU64::new(u64::MAX),
            runs: Mutex::new(HashMap::new()),
            restore: Mutex::new(None),
        }))
    }

    /// Backups off (tests, nodes without a bucket).
    pub fn disabled() -> Arc<Backups> {
        Arc::new(Backups {
            objects: None,
            archive_timeout: Duration::from_secs(5),
            archive: Mutex::new(ArchiveStatus::default()),
            archived_seq: AtomicU64::new(u64::MAX),
            runs: Mutex::new(HashMap::new()),
            restore: Mutex::new(None),
        })
    }

    pub fn objects(&self) -> Result<&Objects, BackupError> {
        self.objects.as_ref().ok_or(BackupError::NotConfigured)
    }

    /// The archive status for `ClusterStatus` (None without backups).
    pub fn archive_status(&self) -> Option<ArchiveStatus> {
        self.objects.as_ref()?;
        Some(lock(&self.archive).clone())
    }

    pub(crate) fn update_archive(&self, f: impl FnOnce(&mut ArchiveStatus)) {
        f(&mut lock(&self.archive));
    }

    /// Journal entries above this seq must stay (not archived yet).
    pub fn keep_above(&self) -> u64 {
        self.archived_seq.load(Ordering::Relaxed)
    }

    pub(crate) fn set_archived_seq(&self, seq: Option<u64>) {
        self.archived_seq
            .store(seq.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn restore_status(&self) -> Option<RestoreStatus> {
        lock(&self.restore).clone()
    }

    pub(crate) fn set_restore(&self, s: RestoreStatus) {
        *lock(&self.restore) = Some(s);
    }

    pub fn run(&self, id: &str) -> Option<BaseBackupStatus> {
        lock(&self.runs).get(id).cloned()
    }

    /// Records a base backup's progress; `Err(Busy)` when `status` is a new Running
    /// backup while another is running.
    pub(crate) fn record_run(&self, status: BaseBackupStatus) -> Result<(), BackupError> {
        use studio_crds::node_api::BackupPhase;
        let mut runs = lock(&self.runs);
        if status.phase == BackupPhase::Running
            && let Some(other) = runs
                .values()
                .find(|r| r.phase == BackupPhase::Running && r.id != status.id)
        {
            return Err(BackupError::Busy(other.id.clone()));
        }
        if runs.len() >= MAX_RUNS && !runs.contains_key(&status.id) {
            let oldest = runs
                .values()
                .filter(|r| r.phase != BackupPhase::Running)
                .min_by_key(|r| r.started_ms)
                .map(|r| r.id.clone());
            if let Some(o) = oldest {
                runs.remove(&o);
            }
        }
        runs.insert(status.id.clone(), status);
        Ok(())
    }
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
