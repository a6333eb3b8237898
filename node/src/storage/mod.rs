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
pub mod path;
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

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS journal (seq INTEGER PRIMARY KEY, term INTEGER NOT NULL, time INTEGER NOT NULL, op TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS terms (term INTEGER PRIMARY KEY, first_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    rid INTEGER PRIMARY KEY,
    ws TEXT NOT NULL, path TEXT NOT NULL, parent TEXT NOT NULL,
    id TEXT NOT NULL, type TEXT NOT NULL, props TEXT NOT NULL,
    version INTEGER NOT NULL, created INTEGER NOT NULL, modified INTEGER NOT NULL, author TEXT NOT NULL,
    UNIQUE (ws, path));
CREATE INDEX IF NOT EXISTS items_parent ON items (ws, parent, path);
CREATE INDEX IF NOT EXISTS items_id ON items (ws, id);
CREATE TABLE IF NOT EXISTS versions (
    id TEXT NOT NULL, version INTEGER NOT NULL, path TEXT NOT NULL, type TEXT NOT NULL,
    props TEXT NOT NULL, time INTEGER NOT NULL, author TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (id, version));
CREATE TABLE IF NOT EXISTS blobs (sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS undo (seq INTEGER NOT NULL, n INTEGER NOT NULL, tbl TEXT NOT NULL, key TEXT NOT NULL, before TEXT, PRIMARY KEY (seq, n));
CREATE TABLE IF NOT EXISTS quarantine (qid INTEGER PRIMARY KEY AUTOINCREMENT, seq INTEGER NOT NULL, term INTEGER NOT NULL, time INTEGER NOT NULL, op TEXT NOT NULL, reason TEXT NOT NULL, added INTEGER NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS items_fts USING fts5 (body);
"#;

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
        let conn = open_conn(&db_path)?;
        conn.execute_batch(SCHEMA)?;
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

    /// Up to `limit` entries with seq > `after`, in order. `Compacted` if some of
    /// them are gone (the caller must clone).
    pub fn entries_after(&self, after: u64, limit: usize) -> Result<Vec<JournalEntry>> {
        self.with_reader(|c| {
            let oldest = Self::oldest_in(c)?;
            if after + 1 < oldest {
                return Err(StoreError::Compacted { oldest });
            }
            let mut stmt = c.prepare_cached(
                "SELECT seq, term, time, op FROM journal WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after as i64, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (s, t, tm, op) = row?;
                out.push(entry_from_row(s, t, tm, &op)?);
            }
            Ok(out)
        })
    }

    /// The entry at `seq`, if still in the journal.
    pub fn entry_at(&self, seq: u64) -> Result<Option<JournalEntry>> {
        self.with_reader(|c| {
            let row = qrow(
                c,
                "SELECT seq, term, time, op FROM journal WHERE seq = ?1",
                params![seq as i64],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                },
            )
            .optional()?;
            row.map(|(s, t, tm, op)| entry_from_row(s, t, tm, &op))
                .transpose()
        })
    }

    fn oldest_in(c: &Connection) -> Result<u64> {
        let min: Option<i64> = qrow(c, "SELECT MIN(seq) FROM journal", [], |r| r.get(0))?;
        match min {
            Some(m) => Ok(m as u64),
            None => Ok(read_position(c)?.seq + 1),
        }
    }

    /// The oldest seq still in the journal (last seq + 1 when the journal is empty).
    pub fn oldest_seq(&self) -> Result<u64> {
        self.with_reader(Self::oldest_in)
    }

    /// The first seq of each term, ascending by term.
    pub fn term_history(&self) -> Result<Vec<TermStart>> {
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached("SELECT term, first_seq FROM terms ORDER BY term")?;
            let rows = stmt.query_map([], |r| {
                Ok(TermStart {
                    term: r.get::<_, i64>(0)? as u64,
                    first_seq: r.get::<_, i64>(1)? as u64,
                })
            })?;
            rows.collect::<rusqlite::Result<_>>().map_err(Into::into)
        })
    }

    /// The term of the entry at `seq` according to the term history (0 for seq 0).
    pub fn term_at(&self, seq: u64) -> Result<u64> {
        self.with_reader(|c| Self::term_at_in(c, seq))
    }

    fn term_at_in(c: &Connection, seq: u64) -> Result<u64> {
        if seq == 0 {
            return Ok(0);
        }
        let t: Option<i64> = qrow(
            c,
            "SELECT MAX(term) FROM terms WHERE first_seq <= ?1",
            params![seq as i64],
            |r| r.get(0),
        )?;
        Ok(t.unwrap_or(0) as u64)
    }

    /// Removes every entry after `seq` and rolls the content back to the state at
    /// `seq`. Returns the removed entries (to be quarantined by the caller).
    pub fn truncate_after(&self, seq: u64) -> Result<Vec<JournalEntry>> {
        self.rewind(seq, |tx| {
            let mut stmt =
                tx.prepare("SELECT seq, term, time, op FROM journal WHERE seq > ?1 ORDER BY seq")?;
            let rows = stmt.query_map(params![seq as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (s, t, tm, op) = row?;
                out.push(entry_from_row(s, t, tm, &op)?);
            }
            Ok(out)
        })
    }

    /// Divergence repair: moves every entry after `seq` into the quarantine (with
    /// `reason`) and rolls the content back to `seq`, in ONE transaction and without
    /// loading the entries into memory. Returns how many entries moved.
    pub fn quarantine_after(&self, seq: u64, reason: &str) -> Result<u64> {
        self.rewind(seq, |tx| Self::copy_to_quarantine(tx, seq, reason))
    }

    /// Copies the entries after `seq` into the quarantine without rolling anything
    /// back (a node that diverged beyond its journal keeps what it has, then clones).
    pub fn quarantine_copy_after(&self, seq: u64, reason: &str) -> Result<u64> {
        let conn = lock(&self.writer);
        Self::copy_to_quarantine(&conn, seq, reason)
    }

    fn copy_to_quarantine(conn: &Connection, seq: u64, reason: &str) -> Result<u64> {
        let n = exec(
            conn,
            "INSERT INTO quarantine (seq, term, time, op, reason, added) \
             SELECT seq, term, time, op, ?2, ?3 FROM journal WHERE seq > ?1 ORDER BY seq",
            params![seq as i64, reason, now_ms()],
        )?;
        Ok(n as u64)
    }

    /// Rolls back every entry after `seq` (newest first, from the undo records) in one
    /// transaction; `before` runs first in that transaction on the entries still there.
    fn rewind<R: Default>(
        &self,
        seq: u64,
        before: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<R>,
    ) -> Result<R> {
        let mut conn = lock(&self.writer);
        let pos = read_position(&conn)?;
        if seq >= pos.seq {
            return Ok(R::default());
        }
        let oldest = Self::oldest_in(&conn)?;
        if seq + 1 < oldest {
            return Err(StoreError::Compacted { oldest });
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = before(&tx)?;
        {
            // Reverting touches content tables only, so the undo rows can be read
            // while they are applied (no copy of them in memory).
            let mut stmt = tx.prepare(
                "SELECT tbl, key, before FROM undo WHERE seq > ?1 ORDER BY seq DESC, n DESC",
            )?;
            let mut rows = stmt.query(params![seq as i64])?;
            while let Some(r) = rows.next()? {
                let tbl: String = r.get(0)?;
                let key: String = r.get(1)?;
                let before: Option<String> = r.get(2)?;
                apply::revert(&tx, &tbl, &key, before.as_deref())?;
            }
        }
        exec(&tx, "DELETE FROM undo WHERE seq > ?1", params![seq as i64])?;
        exec(
            &tx,
            "DELETE FROM journal WHERE seq > ?1",
            params![seq as i64],
        )?;
        exec(
            &tx,
            "DELETE FROM terms WHERE first_seq > ?1",
            params![seq as i64],
        )?;
        let term = Self::term_at_in(&tx, seq)?;
        let new_pos = Position { seq, term };
        set_position(&tx, new_pos)?;
        tx.commit()?;
        drop(conn);
        self.pos_tx.send_replace(new_pos);
        Ok(out)
    }

    /// Drops journal entries (and their undo records) with seq < `seq`.
    pub fn compact_before(&self, seq: u64) -> Result<u64> {
        // In chunks, releasing the writer between them, so writes keep flowing.
        const CHUNK: u64 = 5_000;
        let mut removed = 0u64;
        loop {
            let oldest = self.oldest_seq()?;
            if oldest >= seq {
                return Ok(removed);
            }
            let upto = seq.min(oldest + CHUNK) as i64;
            let conn = lock(&self.writer);
            let n = exec(&conn, "DELETE FROM journal WHERE seq < ?1", params![upto])? as u64;
            exec(&conn, "DELETE FROM undo WHERE seq < ?1", params![upto])?;
            if n == 0 {
                return Ok(removed);
            }
            removed += n;
        }
    }

    /// Keeps `entries` aside with a reason.
    pub fn quarantine_add(&self, entries: &[JournalEntry], reason: &str) -> Result<()> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        let now = now_ms();
        for e in entries {
            exec(
                &tx,
                "INSERT INTO quarantine (seq, term, time, op, reason, added) VALUES (?1,?2,?3,?4,?5,?6)",
                params![
                    e.seq as i64,
                    e.term as i64,
                    e.time,
                    serde_json::to_string(&e.op)?,
                    reason,
                    now
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// How many entries are in quarantine (without loading them: status is polled).
    pub fn quarantine_count(&self) -> Result<u64> {
        self.with_reader(|c| {
            let n: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM quarantine")?
                .query_row([], |r| r.get(0))?;
            Ok(n as u64)
        })
    }

    /// Everything in quarantine, oldest first.
    pub fn quarantine_list(&self) -> Result<Vec<QuarantineRecord>> {
        self.with_reader(Self::quarantine_in)
    }

    fn quarantine_in(c: &Connection) -> Result<Vec<QuarantineRecord>> {
        let mut stmt = c.prepare(
            "SELECT qid, seq, term, time, op, reason, added FROM quarantine ORDER BY qid",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, s, t, tm, op, reason, added) = row?;
            out.push(QuarantineRecord {
                id: id as u64,
                reason,
                quarantined_at: added,
                entry: entry_from_row(s, t, tm, &op)?,
            });
        }
        Ok(out)
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

    /// Replaces the whole content (journal, terms, items, versions, blobs table) with
    /// the snapshot at `path`. Quarantine and `local.*` meta keys are kept.
    pub fn restore_from(&self, path: &Path) -> Result<Position> {
        let src = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
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
        conn.execute_batch(SCHEMA)?;
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

    /// SQLite's integrity check plus journal invariants (gapless seqs, position
    /// matching the last entry). Returns the problems found (empty = consistent).
    pub fn check_consistency(&self) -> Result<Vec<String>> {
        self.with_reader(|c| {
            let mut problems = Vec::new();
            let ic: String = qrow(c, "PRAGMA integrity_check", [], |r| r.get(0))?;
            if ic != "ok" {
                problems.push(format!("integrity_check: {ic}"));
            }
            let (n, min, max): (i64, Option<i64>, Option<i64>) = qrow(
                c,
                "SELECT COUNT(*), MIN(seq), MAX(seq) FROM journal",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            let pos = read_position(c)?;
            if let (Some(min), Some(max)) = (min, max) {
                if max - min + 1 != n {
                    problems.push(format!("journal has gaps: {n} entries in {min}..={max}"));
                }
                if max as u64 != pos.seq {
                    problems.push(format!("position {} != last journal seq {max}", pos.seq));
                }
            }
            Ok(problems)
        })
    }

    /// Whether the repository holds nothing yet (no journal entry ever applied).
    pub fn is_empty(&self) -> bool {
        self.position().seq == 0
    }

    /// sha256 over a canonical dump of both workspaces, the version history and the
    /// binaries table: equal digests mean equal content.
    pub fn digest(&self) -> Result<String> {
        self.digest_at().map(|(d, _)| d)
    }

    /// [`Store::digest`] and the journal position it corresponds to, read in one
    /// transaction (consistent however many writes go on meanwhile).
    pub fn digest_at(&self) -> Result<(String, Position)> {
        self.with_reader(|c| {
            let mut h = Sha256::new();
            c.execute_batch("BEGIN")?;
            let res = (|| -> Result<Position> {
                let pos = read_position(c)?;
                let mut stmt = c.prepare(&format!("SELECT {ITEM_COLS} FROM items ORDER BY ws, path"))?;
                let rows = stmt.query_map([], row_to_item)?;
                for r in rows {
                    let r = r?;
                    for f in [&r.ws, &r.path, &r.id, &r.item_type, &r.props, &r.author] {
                        h.update(f.as_bytes());
                        h.update([0u8]);
                    }
                    h.update(format!("{}\0{}\0{}\n", r.version, r.created, r.modified).as_bytes());
                }
                let mut stmt = c.prepare(
                    "SELECT id, version, path, type, props, time, author, seq FROM versions ORDER BY id, version",
                )?;
                let mut rows = stmt.query([])?;
                while let Some(r) = rows.next()? {
                    for i in 0..8 {
                        let v: rusqlite::types::Value = r.get(i)?;
                        h.update(format!("{v:?}\0").as_bytes());
                    }
                    h.update(b"\n");
                }
                let mut stmt = c.prepare("SELECT sha256, size FROM blobs ORDER BY sha256")?;
                let mut rows = stmt.query([])?;
                while let Some(r) = rows.next()? {
                    let s: String = r.get(0)?;
                    let n: i64 = r.get(1)?;
                    h.update(format!("{s}\0{n}\n").as_bytes());
                }
                Ok(pos)
            })();
            let _ = c.execute_batch("COMMIT");
            let pos = res?;
            Ok((hex::encode(h.finalize()), pos))
        })
    }

    // ---- content reads -------------------------------------------------------------

    pub fn get_item(&self, ws: Workspace, path: &str) -> Result<Option<Item>> {
        self.with_reader(|c| Ok(get_item(c, ws.as_str(), path)?.map(apply::ItemRow::into_item)))
    }

    /// Children of `parent` (`/` for top level), ordered by path, paged.
    pub fn children(
        &self,
        ws: Workspace,
        parent: &str,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<Item>, u64)> {
        self.with_reader(|c| {
            let total: i64 = qrow(c,
                "SELECT COUNT(*) FROM items WHERE ws = ?1 AND parent = ?2",
                params![ws.as_str(), parent],
                |r| r.get(0),
            )?;
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {ITEM_COLS} FROM items WHERE ws = ?1 AND parent = ?2 ORDER BY path LIMIT ?3 OFFSET ?4"
            ))?;
            let rows = stmt.query_map(params![ws.as_str(), parent, limit as i64, offset as i64], row_to_item)?;
            let items = rows.map(|r| r.map(apply::ItemRow::into_item)).collect::<rusqlite::Result<_>>()?;
            Ok((items, total as u64))
        })
    }

    /// Version history of the authoring item at `path`, newest first.
    pub fn versions(&self, path: &str) -> Result<Vec<Version>> {
        self.with_reader(|c| {
            let Some(item) = get_item(c, Workspace::Authoring.as_str(), path)? else {
                return Err(StoreError::NotFound(path.to_string()));
            };
            let mut stmt = c.prepare_cached(
                "SELECT version, path, type, props, time, author, seq FROM versions WHERE id = ?1 ORDER BY version DESC",
            )?;
            let rows = stmt.query_map(params![item.id], |r| {
                Ok(Version {
                    version: r.get::<_, i64>(0)? as u64,
                    path: r.get(1)?,
                    item_type: r.get(2)?,
                    properties: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
                    time: r.get(4)?,
                    author: r.get(5)?,
                    seq: r.get::<_, i64>(6)? as u64,
                })
            })?;
            rows.collect::<rusqlite::Result<_>>().map_err(Into::into)
        })
    }

    /// Full-text search over text properties. `query` is split into words that must
    /// all match (FTS5 syntax is not exposed).
    pub fn search(
        &self,
        ws: Workspace,
        query: &str,
        prefix: Option<&str>,
        item_type: Option<&str>,
        limit: u64,
    ) -> Result<Vec<SearchHit>> {
        let words: Vec<String> = query
            .split_whitespace()
            .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
            .collect();
        if words.is_empty() {
            return Ok(Vec::new());
        }
        let fts_query = words.join(" ");
        let prefix = prefix.unwrap_or("/").to_string();
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT i.path, i.id, i.type, i.version, snippet(items_fts, 0, '[', ']', '…', 12)
                 FROM items_fts f JOIN items i ON i.rid = f.rowid
                 WHERE items_fts MATCH ?1 AND i.ws = ?2
                   AND (?3 = '/' OR i.path = ?3 OR (i.path >= ?3 || '/' AND i.path < ?3 || '0'))
                   AND (?4 IS NULL OR i.type = ?4)
                 ORDER BY rank LIMIT ?5",
            )?;
            let rows = stmt.query_map(
                params![fts_query, ws.as_str(), prefix, item_type, limit as i64],
                |r| {
                    Ok(SearchHit {
                        path: r.get(0)?,
                        id: r.get(1)?,
                        item_type: r.get(2)?,
                        version: r.get::<_, i64>(3)? as u64,
                        snippet: r.get(4)?,
                    })
                },
            )?;
            rows.collect::<rusqlite::Result<_>>().map_err(Into::into)
        })
    }

    /// Size of a registered binary.
    pub fn blob_registered(&self, sha256: &str) -> Result<Option<u64>> {
        self.with_reader(|c| {
            let v: Option<i64> = qrow(
                c,
                "SELECT size FROM blobs WHERE sha256 = ?1",
                params![sha256],
                |r| r.get(0),
            )
            .optional()?;
            Ok(v.map(|v| v as u64))
        })
    }

    /// Every registered binary (sha256, size), e.g. to fetch after a clone.
    pub fn blob_list(&self) -> Result<Vec<(String, u64)>> {
        self.with_reader(|c| {
            let mut stmt = c.prepare("SELECT sha256, size FROM blobs ORDER BY sha256")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
            rows.collect::<rusqlite::Result<_>>().map_err(Into::into)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
