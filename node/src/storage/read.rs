//! Reads: consistency checks, the content digest, and the content queries the API
//! serves (items, children, versions, search, binaries).

use super::*;

impl Store {
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
        self.with_reader(Self::blob_list_in)
    }

    pub(super) fn blob_list_in(c: &Connection) -> Result<Vec<(String, u64)>> {
        let mut stmt = c.prepare("SELECT sha256, size FROM blobs ORDER BY sha256")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        rows.collect::<rusqlite::Result<_>>().map_err(Into::into)
    }
}
