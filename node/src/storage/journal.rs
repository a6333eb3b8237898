//! The journal beyond appending: reading it, the term history, rewinding a divergent
//! tail (into the quarantine), compaction, and the quarantine itself.

use super::*;

impl Store {
    /// Up to `limit` entries with seq > `after`, in order. `Compacted` if some of
    /// them are gone (the caller must clone).
    pub fn entries_after(&self, after: u64, limit: usize) -> Result<Vec<JournalEntry>> {
        self.with_reader(|c| {
            let oldest = Self::oldest_in(c)?;
            if after + 1 < oldest {
                return Err(StoreError::Compacted { oldest });
            }
            entries_after_in(c, after, limit)
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

    pub(super) fn oldest_in(c: &Connection) -> Result<u64> {
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

    pub(super) fn term_at_in(c: &Connection, seq: u64) -> Result<u64> {
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
        self.rewind(seq, |tx| entries_after_in(tx, seq, usize::MAX >> 1))
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

    pub(super) fn copy_to_quarantine(conn: &Connection, seq: u64, reason: &str) -> Result<u64> {
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
    pub(super) fn rewind<R: Default>(
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

    pub(super) fn quarantine_in(c: &Connection) -> Result<Vec<QuarantineRecord>> {
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
}

/// Up to `limit` journal entries with seq > `after`, in order.
fn entries_after_in(c: &Connection, after: u64, limit: usize) -> Result<Vec<JournalEntry>> {
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
}
