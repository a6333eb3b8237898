//! Schema revisions: what the database format of this build is, which revisions it
//! can still exchange a journal with, and the migrations that bring an older
//! database up to date.
//!
//! - [`SCHEMA_REVISION`]: the database (and journal) format this build writes.
//!   Revision 1 is [`BASELINE`], the format before revisions were recorded.
//! - [`MIN_COMPATIBLE_REVISION`]: the oldest revision this build can still replicate
//!   with, in both directions (apply its journal and have its journal applied by it).
//!   An additive change raises [`SCHEMA_REVISION`] and keeps it; an incompatible change
//!   raises it to the new revision.
//! - The revision of the data is the `meta` key [`REVISION_KEY`]. A database without
//!   it (created before revisions) is at revision 1. [`prepare`] opens a database at
//!   this build's revision: it refuses a newer one without writing anything, and
//!   runs the missing [`MIGRATIONS`] in order, each in its own transaction that also
//!   records the new revision (a crash leaves the database at the last completed
//!   revision, and the next start continues from there).
//!
//! Changing the schema: never edit [`BASELINE`]; bump [`SCHEMA_REVISION`] and append
//! one [`Migration`] to [`MIGRATIONS`] (and raise [`MIN_COMPATIBLE_REVISION`] if old
//! nodes cannot apply the new journal or the new node cannot apply the old one).

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::{Result, StoreError};

/// The database and journal format this build writes.
#[cfg(not(feature = "schema-next"))]
pub const SCHEMA_REVISION: u32 = 1;
/// The oldest revision this build replicates with (see the module documentation).
#[cfg(not(feature = "schema-next"))]
pub const MIN_COMPATIBLE_REVISION: u32 = 1;

/// Test builds with a real second revision (`--features schema-next`, additive:
/// revision-1 nodes can still replicate with it; `schema-next-incompatible`: they
/// cannot). Used to test version skew; never in a release image.
#[cfg(feature = "schema-next")]
pub const SCHEMA_REVISION: u32 = 2;
#[cfg(all(feature = "schema-next", not(feature = "schema-next-incompatible")))]
pub const MIN_COMPATIBLE_REVISION: u32 = 1;
#[cfg(all(feature = "schema-next", feature = "schema-next-incompatible"))]
pub const MIN_COMPATIBLE_REVISION: u32 = 2;

/// The `meta` key holding the revision of the data.
pub const REVISION_KEY: &str = "schema_revision";

/// Revision 1: the schema before revisions were recorded. Never changed: later
/// revisions are [`MIGRATIONS`]. (`meta` is never dropped or renamed by a migration:
/// it holds the revision.)
pub(crate) const BASELINE: &str = r#"
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

/// One migration: brings a database at revision `to - 1` to revision `to`. Runs
/// inside a transaction (which also records `to`); an error rolls everything back.
#[derive(Clone, Copy)]
pub struct Migration {
    pub to: u32,
    /// What it changes (logged).
    pub what: &'static str,
    pub run: fn(&Transaction) -> Result<()>,
}

/// Every migration after [`BASELINE`], in order: entry `i` migrates to revision
/// `i + 2`; the last one's `to` is [`SCHEMA_REVISION`].
#[cfg(not(feature = "schema-next"))]
pub const MIGRATIONS: &[Migration] = &[];
#[cfg(feature = "schema-next")]
pub const MIGRATIONS: &[Migration] = &[Migration {
    to: 2,
    what: "test revision 2: a per-path tag table (schema-next builds only)",
    run: next_revision,
}];

/// The migration of the `schema-next` test builds: a real, if unused, schema change.
#[cfg(feature = "schema-next")]
fn next_revision(tx: &Transaction) -> Result<()> {
    tx.execute_batch(
        "CREATE TABLE item_tags (ws TEXT NOT NULL, path TEXT NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (ws, path, tag));",
    )?;
    Ok(())
}

/// A node's schema revision and the oldest revision it replicates with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revisions {
    pub revision: u32,
    pub min_compatible: u32,
}

impl Revisions {
    /// This build's.
    pub const OWN: Revisions = Revisions {
        revision: SCHEMA_REVISION,
        min_compatible: MIN_COMPATIBLE_REVISION,
    };

    /// What a peer announced; 0 = not announced. A node from before revisions
    /// announces nothing and is at revision 1; a missing minimum is taken to be the
    /// revision itself (the strictest reading), and a minimum above the revision is
    /// capped at it.
    pub fn announced(revision: u32, min_compatible: u32) -> Revisions {
        let revision = revision.max(1);
        let min_compatible = match min_compatible {
            0 => revision,
            m => m.min(revision),
        };
        Revisions {
            revision,
            min_compatible,
        }
    }

    /// Whether two nodes may replicate with each other, in either direction: each
    /// one's revision is at least the other's minimum compatible revision. So nodes
    /// at the same revision always may; of two different revisions, the older node
    /// must be at least the newer node's minimum (the newer one declares the older
    /// format still compatible: it applies the older journal and writes one the older
    /// node applies).
    pub fn compatible_with(self, peer: Revisions) -> bool {
        self.min_compatible <= peer.revision && peer.min_compatible <= self.revision
    }
}

impl std::fmt::Display for Revisions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "schema revision {} (replicates with revisions >= {})",
            self.revision, self.min_compatible
        )
    }
}

/// The revision recorded in `conn`'s `meta` table; None when there is none (a new
/// database, or one created before revisions).
pub fn stored_revision(conn: &Connection) -> Result<Option<u32>> {
    let has_meta: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta')",
        [],
        |r| r.get(0),
    )?;
    if !has_meta {
        return Ok(None);
    }
    let v: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            params![REVISION_KEY],
            |r| r.get(0),
        )
        .optional()?;
    v.map(|v| {
        v.parse().map_err(|_| {
            StoreError::Corrupt(format!("{REVISION_KEY} is {v:?}, not a revision number"))
        })
    })
    .transpose()
}

/// The revision of the data in `conn` (1 when none is recorded).
pub fn data_revision(conn: &Connection) -> Result<u32> {
    Ok(stored_revision(conn)?.unwrap_or(1))
}

/// Refuses data at a revision above `build` (a downgrade): it must not be touched.
pub fn check_not_newer(data: u32, build: u32) -> Result<()> {
    if data > build {
        return Err(StoreError::SchemaTooNew { data, build });
    }
    Ok(())
}

/// Brings the database to this build's revision ([`migrate`] with [`SCHEMA_REVISION`]
/// and [`MIGRATIONS`]).
pub fn prepare(conn: &mut Connection) -> Result<u32> {
    migrate(conn, SCHEMA_REVISION, MIGRATIONS)
}

/// Brings the database to revision `target` with `migrations` (see [`MIGRATIONS`]
/// for their order). A database without a recorded revision gets [`BASELINE`] and
/// revision 1 first; one above `target` is refused before anything is written.
/// Returns the revision reached (`target`).
pub fn migrate(conn: &mut Connection, target: u32, migrations: &[Migration]) -> Result<u32> {
    let mut current = match stored_revision(conn)? {
        Some(r) => r,
        None => {
            // New, or created before revisions: the baseline is idempotent on both.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(BASELINE)?;
            set_revision(&tx, 1)?;
            tx.commit()?;
            1
        }
    };
    check_not_newer(current, target)?;
    if current == 1 {
        // Revision 1 databases may predate a `CREATE ... IF NOT EXISTS` of the
        // baseline (it used to run on every start): complete them.
        conn.execute_batch(BASELINE)?;
    }
    let from = current;
    for m in migrations.iter().filter(|m| m.to > from && m.to <= target) {
        if m.to != current + 1 {
            return Err(StoreError::Corrupt(format!(
                "no migration from schema revision {current} to {} (the list has a gap)",
                current + 1
            )));
        }
        tracing::info!(
            from = current,
            to = m.to,
            what = m.what,
            "migrating the database"
        );
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        (m.run)(&tx).map_err(|e| StoreError::Migration {
            to: m.to,
            what: m.what,
            error: e.to_string(),
        })?;
        set_revision(&tx, m.to)?;
        tx.commit()?;
        current = m.to;
    }
    if current != target {
        return Err(StoreError::Corrupt(format!(
            "no migration reaches schema revision {target} (stopped at {current})"
        )));
    }
    Ok(current)
}

fn set_revision(tx: &Transaction, revision: u32) -> Result<()> {
    tx.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
        params![REVISION_KEY, revision.to_string()],
    )?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
