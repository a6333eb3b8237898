//! The deterministic apply function shared by the primary (`Store::write`) and
//! replicas (`Store::apply_entry`). It reads only the transaction and the entry (its
//! seq, term and time) — never the local clock — so every node that applies the same
//! journal holds the same content. Every row change is recorded in the `undo` table
//! (before-image) so that `Store::truncate_after` can roll entries back exactly.

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StoreError;
use super::path::{is_descendant, parent_of, parse_path, rebase};
use super::types::{
    Applied, Item, JournalEntry, Op, Workspace, binary_refs, is_sha256_hex, text_of,
};

/// `execute` through the statement cache (hot paths prepare each SQL text once).
pub(crate) fn exec<P: rusqlite::Params>(
    c: &Connection,
    sql: &str,
    p: P,
) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?.execute(p)
}

/// `query_row` through the statement cache.
pub(crate) fn qrow<T, P: rusqlite::Params>(
    c: &Connection,
    sql: &str,
    p: P,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    c.prepare_cached(sql)?.query_row(p, f)
}

/// Longest accepted item type name.
pub const MAX_TYPE_LEN: usize = 128;

/// An `items` row (also the before-image stored in `undo`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ItemRow {
    pub ws: String,
    pub path: String,
    pub id: String,
    pub item_type: String,
    pub props: String,
    pub version: u64,
    pub created: i64,
    pub modified: i64,
    pub author: String,
}

impl ItemRow {
    pub fn into_item(self) -> Item {
        Item {
            workspace: Workspace::parse(&self.ws).unwrap_or(Workspace::Authoring),
            properties: serde_json::from_str(&self.props).unwrap_or(Value::Null),
            id: self.id,
            path: self.path,
            item_type: self.item_type,
            version: self.version,
            created: self.created,
            modified: self.modified,
            author: self.author,
        }
    }
}

pub(crate) const ITEM_COLS: &str = "ws, path, id, type, props, version, created, modified, author";

pub(crate) fn row_to_item(r: &rusqlite::Row<'_>) -> rusqlite::Result<ItemRow> {
    Ok(ItemRow {
        ws: r.get(0)?,
        path: r.get(1)?,
        id: r.get(2)?,
        item_type: r.get(3)?,
        props: r.get(4)?,
        version: r.get::<_, i64>(5)? as u64,
        created: r.get(6)?,
        modified: r.get(7)?,
        author: r.get(8)?,
    })
}

pub(crate) fn get_item(
    tx: &rusqlite::Connection,
    ws: &str,
    path: &str,
) -> rusqlite::Result<Option<ItemRow>> {
    qrow(
        tx,
        &format!("SELECT {ITEM_COLS} FROM items WHERE ws = ?1 AND path = ?2"),
        params![ws, path],
        row_to_item,
    )
    .optional()
}

/// The item at `root` (if any) and all its descendants, ordered by path.
pub(crate) fn subtree(
    tx: &rusqlite::Connection,
    ws: &str,
    root: &str,
) -> rusqlite::Result<Vec<ItemRow>> {
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {ITEM_COLS} FROM items WHERE ws = ?1 AND (path = ?2 OR (path >= ?2 || '/' AND path < ?2 || '0')) ORDER BY path"
    ))?;
    let rows = stmt.query_map(params![ws, root], row_to_item)?;
    rows.collect()
}

pub(crate) fn has_descendants(
    tx: &rusqlite::Connection,
    ws: &str,
    root: &str,
) -> rusqlite::Result<bool> {
    qrow(
        tx,
        "SELECT EXISTS(SELECT 1 FROM items WHERE ws = ?1 AND path >= ?2 || '/' AND path < ?2 || '0')",
        params![ws, root],
        |r| r.get(0),
    )
}

/// Writes a row without undo logging (used by apply helpers and by undo itself).
pub(crate) fn raw_upsert(tx: &rusqlite::Connection, row: &ItemRow) -> rusqlite::Result<()> {
    let existing: Option<i64> = qrow(
        tx,
        "SELECT rid FROM items WHERE ws = ?1 AND path = ?2",
        params![row.ws, row.path],
        |r| r.get(0),
    )
    .optional()?;
    let rid = match existing {
        Some(rid) => {
            exec(
                tx,
                "UPDATE items SET id=?1, type=?2, props=?3, version=?4, created=?5, modified=?6, author=?7, parent=?8 WHERE rid=?9",
                params![
                    row.id,
                    row.item_type,
                    row.props,
                    row.version as i64,
                    row.created,
                    row.modified,
                    row.author,
                    parent_of(&row.path),
                    rid
                ],
            )?;
            exec(tx, "DELETE FROM items_fts WHERE rowid = ?1", params![rid])?;
            rid
        }
        None => {
            exec(
                tx,
                "INSERT INTO items (ws, path, parent, id, type, props, version, created, modified, author) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)",
                params![
                    row.ws,
                    row.path,
                    parent_of(&row.path),
                    row.id,
                    row.item_type,
                    row.props,
                    row.version as i64,
                    row.created,
                    row.modified,
                    row.author
                ],
            )?;
            tx.last_insert_rowid()
        }
    };
    let props: Value = serde_json::from_str(&row.props).unwrap_or(Value::Null);
    let mut text = String::new();
    text_of(&props, &mut text);
    if !text.is_empty() {
        exec(
            tx,
            "INSERT INTO items_fts (rowid, body) VALUES (?1, ?2)",
            params![rid, text],
        )?;
    }
    Ok(())
}

pub(crate) fn raw_delete(tx: &rusqlite::Connection, ws: &str, path: &str) -> rusqlite::Result<()> {
    let rid: Option<i64> = qrow(
        tx,
        "SELECT rid FROM items WHERE ws = ?1 AND path = ?2",
        params![ws, path],
        |r| r.get(0),
    )
    .optional()?;
    if let Some(rid) = rid {
        exec(tx, "DELETE FROM items_fts WHERE rowid = ?1", params![rid])?;
        exec(tx, "DELETE FROM items WHERE rid = ?1", params![rid])?;
    }
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct ItemKey {
    ws: String,
    path: String,
}

#[derive(Serialize, Deserialize)]
struct VersionKey {
    id: String,
    version: u64,
}

/// One write in progress.
struct Ctx<'a> {
    tx: &'a Connection,
    seq: u64,
    term: u64,
    time: i64,
    undo_n: i64,
}

impl Ctx<'_> {
    fn undo(&mut self, tbl: &str, key: String, before: Option<String>) -> Result<(), StoreError> {
        exec(
            self.tx,
            "INSERT INTO undo (seq, n, tbl, key, before) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![self.seq as i64, self.undo_n, tbl, key, before],
        )?;
        self.undo_n += 1;
        Ok(())
    }

    fn put_item(&mut self, row: &ItemRow) -> Result<(), StoreError> {
        let before = get_item(self.tx, &row.ws, &row.path)?;
        let key = serde_json::to_string(&ItemKey {
            ws: row.ws.clone(),
            path: row.path.clone(),
        })?;
        let before = before.map(|b| serde_json::to_string(&b)).transpose()?;
        self.undo("items", key, before)?;
        raw_upsert(self.tx, row)?;
        Ok(())
    }

    fn delete_item(&mut self, row: &ItemRow) -> Result<(), StoreError> {
        let key = serde_json::to_string(&ItemKey {
            ws: row.ws.clone(),
            path: row.path.clone(),
        })?;
        self.undo("items", key, Some(serde_json::to_string(row)?))?;
        raw_delete(self.tx, &row.ws, &row.path)?;
        Ok(())
    }

    fn add_version(&mut self, row: &ItemRow) -> Result<(), StoreError> {
        let key = serde_json::to_string(&VersionKey {
            id: row.id.clone(),
            version: row.version,
        })?;
        self.undo("versions", key, None)?;
        exec(
            self.tx,
            "INSERT OR REPLACE INTO versions (id, version, path, type, props, time, author, seq) VALUES (?1,?2,?3,?4,?5,?6,?7,?8)",
            params![
                row.id,
                row.version as i64,
                row.path,
                row.item_type,
                row.props,
                self.time,
                row.author,
                self.seq as i64
            ],
        )?;
        Ok(())
    }

    fn new_id(&self) -> String {
        format!("{:08x}{:012x}", self.term, self.seq)
    }
}

/// Reverts one undo record (used by `truncate_after`, newest first).
pub(crate) fn revert(
    tx: &rusqlite::Connection,
    tbl: &str,
    key: &str,
    before: Option<&str>,
) -> Result<(), StoreError> {
    match tbl {
        "items" => {
            let k: ItemKey = serde_json::from_str(key)?;
            match before {
                Some(b) => {
                    let row: ItemRow = serde_json::from_str(b)?;
                    raw_upsert(tx, &row)?;
                }
                None => raw_delete(tx, &k.ws, &k.path)?,
            }
        }
        "versions" => {
            let k: VersionKey = serde_json::from_str(key)?;
            exec(
                tx,
                "DELETE FROM versions WHERE id = ?1 AND version = ?2",
                params![k.id, k.version as i64],
            )?;
        }
        "blobs" => {
            exec(tx, "DELETE FROM blobs WHERE sha256 = ?1", params![key])?;
        }
        other => return Err(StoreError::Corrupt(format!("unknown undo table {other}"))),
    }
    Ok(())
}

fn check_expected(
    expected: Option<u64>,
    actual: Option<u64>,
    path: &str,
) -> Result<(), StoreError> {
    match (expected, actual) {
        (None, _) => Ok(()),
        (Some(0), None) => Ok(()),
        (Some(e), Some(a)) if e == a => Ok(()),
        (Some(e), a) => Err(StoreError::Conflict {
            path: path.to_string(),
            expected: e,
            actual: a.unwrap_or(0),
        }),
    }
}

fn require_path(p: &str) -> Result<String, StoreError> {
    parse_path(p).map_err(|e| StoreError::BadRequest(format!("invalid path {p:?}: {e}")))
}

/// Validates and applies `entry.op` inside `tx`. On error nothing must be committed
/// (the caller rolls the transaction back).
pub(crate) fn apply(tx: &Connection, entry: &JournalEntry) -> Result<Applied, StoreError> {
    let mut cx = Ctx {
        tx,
        seq: entry.seq,
        term: entry.term,
        time: entry.time,
        undo_n: 0,
    };
    let auth = Workspace::Authoring.as_str();
    let live = Workspace::Live.as_str();
    match &entry.op {
        Op::Put {
            path,
            item_type,
            properties,
            expected_version,
            author,
        } => {
            let path = require_path(path)?;
            if item_type.is_empty()
                || item_type.len() > MAX_TYPE_LEN
                || item_type.chars().any(char::is_control)
            {
                return Err(StoreError::BadRequest(format!(
                    "type must be 1..={MAX_TYPE_LEN} printable characters"
                )));
            }
            if !properties.is_object() {
                return Err(StoreError::BadRequest(
                    "properties must be a JSON object".into(),
                ));
            }
            let mut refs = Vec::new();
            binary_refs(properties, &mut refs);
            for r in &refs {
                let known: bool = qrow(
                    cx.tx,
                    "SELECT EXISTS(SELECT 1 FROM blobs WHERE sha256 = ?1)",
                    params![r],
                    |row| row.get(0),
                )?;
                if !is_sha256_hex(r) || !known {
                    return Err(StoreError::BadRequest(format!("unknown binary {r:?}")));
                }
            }
            let existing = get_item(cx.tx, auth, &path)?;
            check_expected(
                *expected_version,
                existing.as_ref().map(|e| e.version),
                &path,
            )?;
            let props = serde_json::to_string(properties)?;
            let row = match existing {
                Some(e) => ItemRow {
                    item_type: item_type.clone(),
                    props,
                    version: e.version + 1,
                    modified: cx.time,
                    author: author.clone(),
                    ..e
                },
                None => ItemRow {
                    ws: auth.into(),
                    path: path.clone(),
                    id: cx.new_id(),
                    item_type: item_type.clone(),
                    props,
                    version: 1,
                    created: cx.time,
                    modified: cx.time,
                    author: author.clone(),
                },
            };
            cx.put_item(&row)?;
            cx.add_version(&row)?;
            Ok(Applied {
                item: Some(row.into_item()),
                count: 1,
            })
        }
        Op::Delete {
            path,
            recursive,
            expected_version,
            author: _,
        } => {
            let path = require_path(path)?;
            let existing = get_item(cx.tx, auth, &path)?;
            if existing.is_some() || expected_version.is_some_and(|v| v > 0) {
                check_expected(
                    *expected_version,
                    existing.as_ref().map(|i| i.version),
                    &path,
                )?;
            }
            let rows = match existing {
                Some(item) if !recursive => {
                    if has_descendants(cx.tx, auth, &path)? {
                        return Err(StoreError::HasChildren(path));
                    }
                    vec![item]
                }
                _ if *recursive => subtree(cx.tx, auth, &path)?,
                _ => Vec::new(),
            };
            if rows.is_empty() {
                return Err(StoreError::NotFound(path));
            }
            for row in &rows {
                cx.delete_item(row)?;
            }
            Ok(Applied {
                item: None,
                count: rows.len() as u64,
            })
        }
        Op::Move {
            from,
            to,
            expected_version,
            author,
        } => {
            let from = require_path(from)?;
            let to = require_path(to)?;
            if to == from || is_descendant(&to, &from) {
                return Err(StoreError::BadRequest(
                    "cannot move an item into itself".into(),
                ));
            }
            let Some(item) = get_item(cx.tx, auth, &from)? else {
                return Err(StoreError::NotFound(from));
            };
            check_expected(*expected_version, Some(item.version), &from)?;
            if get_item(cx.tx, auth, &to)?.is_some() || has_descendants(cx.tx, auth, &to)? {
                return Err(StoreError::AlreadyExists(to));
            }
            let rows = subtree(cx.tx, auth, &from)?;
            for row in &rows {
                cx.delete_item(row)?;
            }
            let mut moved_root = None;
            for row in rows.iter() {
                let mut new = row.clone();
                new.path = rebase(&row.path, &from, &to);
                if row.path == from {
                    new.modified = cx.time;
                    new.author = author.clone();
                    moved_root = Some(new.clone());
                }
                cx.put_item(&new)?;
            }
            Ok(Applied {
                item: moved_root.map(ItemRow::into_item),
                count: rows.len() as u64,
            })
        }
        Op::Publish {
            path,
            recursive,
            author: _,
        } => {
            let path = require_path(path)?;
            let root = get_item(cx.tx, auth, &path)?;
            let rows = match root {
                Some(root) if !recursive => vec![root],
                _ if *recursive => subtree(cx.tx, auth, &path)?,
                _ => Vec::new(),
            };
            if rows.is_empty() {
                return Err(StoreError::NotFound(path));
            }
            for row in &rows {
                // The same item published earlier at another path (before a move)
                // leaves live.
                let stale: Vec<String> = {
                    let mut stmt = cx.tx.prepare_cached(
                        "SELECT path FROM items WHERE ws = ?1 AND id = ?2 AND path != ?3",
                    )?;
                    let r = stmt.query_map(params![live, row.id, row.path], |r| r.get(0))?;
                    r.collect::<rusqlite::Result<_>>()?
                };
                for p in stale {
                    if let Some(old) = get_item(cx.tx, live, &p)? {
                        cx.delete_item(&old)?;
                    }
                }
                let mut copy = row.clone();
                copy.ws = live.into();
                cx.put_item(&copy)?;
            }
            let item = rows.first().cloned().map(|mut r| {
                r.ws = live.into();
                r.into_item()
            });
            Ok(Applied {
                item,
                count: rows.len() as u64,
            })
        }
        Op::Unpublish {
            path,
            recursive,
            author: _,
        } => {
            let path = require_path(path)?;
            let rows = if *recursive {
                subtree(cx.tx, live, &path)?
            } else {
                get_item(cx.tx, live, &path)?.into_iter().collect()
            };
            if rows.is_empty() {
                return Err(StoreError::NotFound(path));
            }
            for row in &rows {
                cx.delete_item(row)?;
            }
            Ok(Applied {
                item: None,
                count: rows.len() as u64,
            })
        }
        Op::Restore {
            path,
            version,
            expected_version,
            author,
        } => {
            let path = require_path(path)?;
            let Some(item) = get_item(cx.tx, auth, &path)? else {
                return Err(StoreError::NotFound(path));
            };
            check_expected(*expected_version, Some(item.version), &path)?;
            let old: Option<(String, String)> = cx
                .tx
                .query_row(
                    "SELECT type, props FROM versions WHERE id = ?1 AND version = ?2",
                    params![item.id, *version as i64],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((item_type, props)) = old else {
                return Err(StoreError::NotFound(format!("{path} version {version}")));
            };
            let row = ItemRow {
                item_type,
                props,
                version: item.version + 1,
                modified: cx.time,
                author: author.clone(),
                ..item
            };
            cx.put_item(&row)?;
            cx.add_version(&row)?;
            Ok(Applied {
                item: Some(row.into_item()),
                count: 1,
            })
        }
        Op::RegisterBinary { sha256, size } => {
            if !is_sha256_hex(sha256) {
                return Err(StoreError::BadRequest(format!("invalid sha256 {sha256:?}")));
            }
            let inserted = exec(
                cx.tx,
                "INSERT OR IGNORE INTO blobs (sha256, size, seq) VALUES (?1, ?2, ?3)",
                params![sha256, *size as i64, cx.seq as i64],
            )?;
            if inserted > 0 {
                cx.undo("blobs", sha256.clone(), None)?;
            }
            Ok(Applied {
                item: None,
                count: inserted as u64,
            })
        }
        Op::TermStart { .. } => Ok(Applied::default()),
    }
}
