//! Storage: content, version history, the journal, the term history, the quarantine
//! and binaries, in one SQLite database (WAL, `synchronous=FULL`) plus a directory of
//! content-addressed blob files.
//!
//! Every write is one transaction that validates the op, applies it and appends one
//! journal entry; it is durable (WAL fsync) when `write`/`apply_entry` return.
//!
//! ## Rewinding (divergence)
//! Each applied entry also stores the before-images of the rows it changed in the
//! `undo` table. [`Store::truncate_after`] rolls entries back newest first from those
//! images, exactly, inside one transaction. Undo records are compacted together with
//! the journal, so a rewind to a point older than [`Store::oldest_seq`]` - 1` is
//! refused with [`StoreError::Compacted`]: such a node re-clones instead.
//!
//! Sync methods block (SQLite); call them from async code through [`Store::call`]
//! (`spawn_blocking`).

pub mod apply;
pub mod blobs;
mod journal;
pub mod path;
mod read;
pub mod schema;
pub mod types;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

pub use types::*;

use apply::{ITEM_COLS, exec, get_item, qrow, row_to_item};

/// Storage errors. The HTTP layer maps them to status codes.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("version conflict on {path}: expected {expected}, current {actual}")]
    Conflict {
        path: String,
        expected: u64,
        actual: u64,
    },
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("{0} has children (use recursive)")]
    HasChildren(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("out of order entry: expected seq {expected}, got {got}")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("stale term {got}: the journal is at term {current}")]
    StaleTerm { current: u64, got: u64 },
    #[error("journal compacted: entries before {oldest} are gone")]
    Compacted { oldest: u64 },
    #[error("payload too large: limit {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("binary {0} is not on disk yet (fetch it before applying the entry)")]
    MissingBlob(String),
    #[error(
        "the data is at schema revision {data}, newer than this build's revision {build}: \
         refusing to use it (a downgrade below the data's revision is not supported; run a \
         build of revision {data} or newer)"
    )]
    SchemaTooNew { data: u32, build: u32 },
    #[error("migration to schema revision {to} ({what}) failed, nothing of it was kept: {error}")]
    Migration {
        to: u32,
        what: &'static str,
        error: String,
    },
    #[error("corrupt store: {0}")]
    Corrupt(String),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("task: {0}")]
    Task(String),
    /// The group-commit queue is full: the write was not taken (retry later).
    #[error("too many writes are waiting for the disk ({queued} queued): retry shortly")]
    Overloaded { queued: usize },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Meta keys with this prefix describe the local node and survive `restore_from`.
pub const LOCAL_META_PREFIX: &str = "local.";

/// A primary write waiting for the group commit.
struct PendingWrite {
    op: Op,
    term: u64,
    reply: Reply,
}

type WriteResult = Result<(JournalEntry, Applied)>;

/// Where the group-commit thread sends a write's outcome.
enum Reply {
    Blocking(std::sync::mpsc::SyncSender<WriteResult>),
    Async(tokio::sync::oneshot::Sender<WriteResult>),
}

impl Reply {
    fn send(self, r: WriteResult) {
        match self {
            Reply::Blocking(tx) => {
                let _ = tx.send(r);
            }
            Reply::Async(tx) => {
                let _ = tx.send(r);
            }
        }
    }
}

/// Largest group-commit batch.
const MAX_BATCH: usize = 512;
/// Writes that may wait for the group commit by default.
pub const DEFAULT_WRITE_QUEUE: usize = 4096;

fn group_commit_loop(
    rx: std::sync::mpsc::Receiver<PendingWrite>,
    writer: &Mutex<Connection>,
    pos_tx: &watch::Sender<Position>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let mut conn = lock(writer);
        Store::commit_batch(&mut conn, pos_tx, batch);
    }
}

/// The content store of one node.
/// See [`Store::snapshot_info`].
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    pub position: Position,
    pub time_ms: i64,
    /// (sha256, size) of every registered binary.
    pub blobs: Vec<(String, u64)>,
}

pub struct Store {
    dir: PathBuf,
    db_path: PathBuf,
    writer: Arc<Mutex<Connection>>,
    /// Primary writes go to the group-commit thread through a bounded queue.
    queue: std::sync::mpsc::SyncSender<PendingWrite>,
    queue_capacity: usize,
    readers: Mutex<Vec<Connection>>,
    pos_tx: Arc<watch::Sender<Position>>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn open_conn(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    conn.pragma_update(None, "cache_size", -16384)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave SQLite inconsistent (transactions
    // roll back on drop), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read_position(conn: &Connection) -> Result<Position> {
    let get = |k: &str| -> Result<u64> {
        let v: Option<String> = qrow(
            conn,
            "SELECT value FROM meta WHERE key = ?1",
            params![k],
            |r| r.get(0),
        )
        .optional()?;
        Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
    };
    Ok(Position {
        seq: get("last_seq")?,
        term: get("last_term")?,
    })
}

fn set_position(conn: &Connection, pos: Position) -> Result<()> {
    exec(
        conn,
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_seq', ?1), ('last_term', ?2)",
        params![pos.seq.to_string(), pos.term.to_string()],
    )?;
    Ok(())
}

fn entry_from_row(seq: i64, term: i64, time: i64, op: &str) -> Result<JournalEntry> {
    Ok(JournalEntry {
        seq: seq as u64,
        term: term as u64,
        time,
        op: serde_json::from_str(op)?,
    })
}

impl Store {
    /// Opens (or creates) the store in `dir`: `dir/studio.db` and `dir/blobs/`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Arc<Store>> {
        Self::open_with_queue(dir, DEFAULT_WRITE_QUEUE)
    }

    /// [`Store::open`] with at most `queue` writes waiting for the group commit (more
    /// are refused with [`StoreError::Overloaded`]).
    pub fn open_with_queue(dir: impl AsRef<Path>, queue: usize) -> Result<Arc<Store>> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(dir.join("blobs").join("tmp"))?;
        let db_path = dir.join("studio.db");
        let mut conn = open_conn(&db_path)?;
        // Refuses newer data before anything is written; migrates older data.
        schema::prepare(&mut conn)?;
        let pos = read_position(&conn)?;
        let (pos_tx, _) = watch::channel(pos);
        // Leftovers of interrupted uploads.
        if let Ok(rd) = std::fs::read_dir(dir.join("blobs").join("tmp")) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let writer = Arc::new(Mutex::new(conn));
        let pos_tx = Arc::new(pos_tx);
        let queue_capacity = queue.max(1);
        let (queue_tx, queue_rx) = std::sync::mpsc::sync_channel::<PendingWrite>(queue_capacity);
        {
            let (writer, pos_tx) = (Arc::clone(&writer), Arc::clone(&pos_tx));
            // Ends when the Store (the only sender) is dropped.
            std::thread::Builder::new()
                .name("studio-group-commit".into())
                .spawn(move || group_commit_loop(queue_rx, &writer, &pos_tx))?;
        }
        Ok(Arc::new(Store {
            dir,
            db_path,
            writer,
            queue: queue_tx,
            queue_capacity,
            readers: Mutex::new(Vec::new()),
            pos_tx,
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs blocking store code on the blocking thread pool.
    pub async fn call<R, F>(self: &Arc<Self>, f: F) -> Result<R>
    where
        F: FnOnce(&Store) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let store = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    fn with_reader<R>(&self, f: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
        let conn = lock(&self.readers).pop();
        let conn = match conn {
            Some(c) => c,
            None => open_conn(&self.db_path)?,
        };
        let out = f(&conn);
        let mut pool = lock(&self.readers);
        if pool.len() < 8 {
            pool.push(conn);
        }
        out
    }

    /// Watch the last durable position (wakes replication streams).
    pub fn subscribe(&self) -> watch::Receiver<Position> {
        self.pos_tx.subscribe()
    }

    /// The last durable journal position.
    pub fn position(&self) -> Position {
        *self.pos_tx.borrow()
    }

    /// Primary path: validate `op`, apply it and append it to the journal under
    /// `term`, in one durable transaction.
    pub fn write(&self, op: Op, term: u64) -> Result<JournalEntry> {
        self.write_applied(op, term).map(|(e, _)| e)
    }

    /// Like [`Store::write`], also returning what the write changed.
    pub fn write_applied(&self, op: Op, term: u64) -> Result<(JournalEntry, Applied)> {
        // Group commit: the request goes to the commit thread, which takes everything
        // queued while the previous batch was being made durable into one transaction
        // (one fsync per batch). The answer comes only after that commit.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.enqueue(op, term, Reply::Blocking(tx))?;
        rx.recv()
            .map_err(|_| StoreError::Task("write batch dropped".into()))?
    }

    /// [`Store::write_applied`] for async callers: waits for the group commit
    /// without holding a blocking thread.
    pub async fn write_async(&self, op: Op, term: u64) -> Result<(JournalEntry, Applied)> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.enqueue(op, term, Reply::Async(tx))?;
        rx.await
            .map_err(|_| StoreError::Task("write batch dropped".into()))?
    }

    fn enqueue(&self, op: Op, term: u64, reply: Reply) -> Result<()> {
        use std::sync::mpsc::TrySendError;
        match self.queue.try_send(PendingWrite { op, term, reply }) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(StoreError::Overloaded {
                queued: self.queue_capacity,
            }),
            Err(TrySendError::Disconnected(_)) => {
                Err(StoreError::Task("group commit thread stopped".into()))
            }
        }
    }

    fn commit_batch(
        conn: &mut Connection,
        pos_tx: &watch::Sender<Position>,
        batch: Vec<PendingWrite>,
    ) {
        let mut done: Vec<(PendingWrite, Result<(JournalEntry, Applied)>)> =
            Vec::with_capacity(batch.len());
        let result = (|| -> Result<Position> {
            let mut pos = read_position(conn)?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for w in batch {
                if w.term < pos.term {
                    let e = StoreError::StaleTerm {
                        current: pos.term,
                        got: w.term,
                    };
                    done.push((w, Err(e)));
                    continue;
                }
                let entry = JournalEntry {
                    seq: pos.seq + 1,
                    term: w.term,
                    time: now_ms(),
                    op: w.op.clone(),
                };
                tx.execute_batch("SAVEPOINT w")?;
                match Self::append_entry(&tx, &entry, pos) {
                    Ok(applied) => {
                        tx.execute_batch("RELEASE w")?;
                        pos = entry.position();
                        done.push((w, Ok((entry, applied))));
                    }
                    Err(e) => {
                        tx.execute_batch("ROLLBACK TO w; RELEASE w")?;
                        done.push((w, Err(e)));
                    }
                }
            }
            set_position(&tx, pos)?;
            tx.commit()?;
            Ok(pos)
        })();
        match result {
            Ok(pos) => {
                pos_tx.send_replace(pos);
                for (w, r) in done {
                    w.reply.send(r);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for (w, r) in done {
                    w.reply.send(match r {
                        Ok(_) => Err(StoreError::Task(format!("commit failed: {msg}"))),
                        Err(e) => Err(e),
                    });
                }
                // Requests not reached yet were dropped with the closure: their
                // senders are gone, so their callers see "write batch dropped".
            }
        }
    }

    /// Replica path: apply an entry written by a primary. Its seq must be the next
    /// one and its term at least the current term.
    pub fn apply_entry(&self, entry: &JournalEntry) -> Result<Applied> {
        let mut out = self.apply_entries(std::slice::from_ref(entry))?;
        out.pop()
            .ok_or_else(|| StoreError::Task("no result".into()))
    }

    /// Replica path, batched: applies consecutive entries in ONE durable transaction
    /// (all or nothing). Each seq must follow the previous one; terms never decrease.
    pub fn apply_entries(&self, entries: &[JournalEntry]) -> Result<Vec<Applied>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        // A binary must be durable on disk before the entry that registers it.
        if let Some(missing) = entries
            .iter()
            .filter_map(JournalEntry::required_blob)
            .find(|sha| !self.has_blob(sha))
        {
            return Err(StoreError::MissingBlob(missing.to_string()));
        }
        let mut conn = lock(&self.writer);
        let mut pos = read_position(&conn)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            if entry.seq != pos.seq + 1 {
                return Err(StoreError::OutOfOrder {
                    expected: pos.seq + 1,
                    got: entry.seq,
                });
            }
            if entry.term < pos.term {
                return Err(StoreError::StaleTerm {
                    current: pos.term,
                    got: entry.term,
                });
            }
            out.push(Self::append_entry(&tx, entry, pos)?);
            pos = entry.position();
        }
        set_position(&tx, pos)?;
        tx.commit()?;
        drop(conn);
        self.pos_tx.send_replace(pos);
        Ok(out)
    }

    /// Applies `entry` and appends it to the journal (inside the caller's transaction).
    fn append_entry(tx: &Connection, entry: &JournalEntry, pos: Position) -> Result<Applied> {
        let applied = apply::apply(tx, entry)?;
        exec(
            tx,
            "INSERT INTO journal (seq, term, time, op) VALUES (?1, ?2, ?3, ?4)",
            params![
                entry.seq as i64,
                entry.term as i64,
                entry.time,
                serde_json::to_string(&entry.op)?
            ],
        )?;
        if entry.term > pos.term || pos.seq == 0 {
            exec(
                tx,
                "INSERT OR IGNORE INTO terms (term, first_seq) VALUES (?1, ?2)",
                params![entry.term as i64, entry.seq as i64],
            )?;
        }
        Ok(applied)
    }

    /// Writes a consistent copy of the database to `path` (which must not exist)
    /// while writes continue (`VACUUM INTO` on its own read transaction). Binaries
    /// are not included: a cloner fetches every blob listed by [`Store::blob_list`]
    /// of the snapshot.
    pub fn snapshot_to(&self, path: &Path) -> Result<Position> {
        let conn = open_conn(&self.db_path)?;
        // VACUUM INTO reads one consistent snapshot; the position travels inside it
        // (meta table), so it is read back from the copy.
        let target = path.to_string_lossy().to_string();
        exec(&conn, "VACUUM INTO ?1", params![target])?;
        drop(conn);
        let copy = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let pos = read_position(&copy)?;
        Ok(pos)
    }

    /// What a snapshot file written by [`Store::snapshot_to`] holds: its position, the
    /// write time of the entry at that position (0 if not in its journal) and the
    /// binaries it references.
    pub fn snapshot_info(path: &Path) -> Result<SnapshotInfo> {
        let c = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let position = read_position(&c)?;
        let time_ms: Option<i64> = qrow(
            &c,
            "SELECT time FROM journal WHERE seq = ?1",
            params![position.seq as i64],
            |r| r.get(0),
        )
        .optional()?;
        let blobs = Self::blob_list_in(&c)?;
        Ok(SnapshotInfo {
            position,
            time_ms: time_ms.unwrap_or(0),
            blobs,
        })
    }

    /// Replaces the whole content (journal, terms, items, versions, blobs table) with
    /// the snapshot at `path`. Quarantine and `local.*` meta keys are kept. The
    /// snapshot file itself is first brought to this build's schema revision (an
    /// older one is migrated in place, a newer one refused), so a refusal or a
    /// failed migration leaves this store untouched.
    pub fn restore_from(&self, path: &Path) -> Result<Position> {
        let mut src = Connection::open(path)?;
        schema::prepare(&mut src)?;
        let mut conn = lock(&self.writer);
        let quarantine = Self::quarantine_in(&conn)?;
        let local: Vec<(String, String)> = {
            let mut stmt = conn.prepare("SELECT key, value FROM meta WHERE key LIKE 'local.%'")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        {
            let backup = rusqlite::backup::Backup::new(&src, &mut conn)?;
            backup.run_to_completion(1024, std::time::Duration::from_millis(0), None)?;
        }
        let tx = conn.transaction()?;
        exec(&tx, "DELETE FROM quarantine", [])?;
        for q in &quarantine {
            exec(
                &tx,
                "INSERT INTO quarantine (qid, seq, term, time, op, reason, added) VALUES (?1,?2,?3,?4,?5,?6,?7)",
                params![
                    q.id as i64,
                    q.entry.seq as i64,
                    q.entry.term as i64,
                    q.entry.time,
                    serde_json::to_string(&q.entry.op)?,
                    q.reason,
                    q.quarantined_at
                ],
            )?;
        }
        exec(&tx, "DELETE FROM meta WHERE key LIKE 'local.%'", [])?;
        for (k, v) in &local {
            exec(
                &tx,
                "INSERT INTO meta (key, value) VALUES (?1, ?2)",
                params![k, v],
            )?;
        }
        tx.commit()?;
        let pos = read_position(&conn)?;
        drop(conn);
        // Pooled readers hold no transaction; they see the new pages.
        self.pos_tx.send_replace(pos);
        Ok(pos)
    }

    pub fn meta_get(&self, key: &str) -> Result<Option<String>> {
        self.with_reader(|c| {
            qrow(
                c,
                "SELECT value FROM meta WHERE key = ?1",
                params![key],
                |r| r.get(0),
            )
            .optional()
            .map_err(Into::into)
        })
    }

    pub fn meta_set(&self, key: &str, value: &str) -> Result<()> {
        let conn = lock(&self.writer);
        exec(
            &conn,
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
            params![key, value],
        )?;
        Ok(())
    }

    /// The cluster id this data belongs to (replicated: it travels with snapshots).
    pub fn cluster_id(&self) -> Result<Option<String>> {
        self.meta_get("cluster_id")
    }

    pub fn set_cluster_id(&self, id: &str) -> Result<()> {
        self.meta_set("cluster_id", id)
    }

    /// Drops the cluster id (restored data belongs to no cluster until the restore
    /// completes and the new cluster's id is set).
    pub fn forget_cluster_id(&self) -> Result<()> {
        let conn = lock(&self.writer);
        exec(&conn, "DELETE FROM meta WHERE key = 'cluster_id'", [])?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
