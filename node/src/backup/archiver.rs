//! Continuous archiving: the primary ships journal entries to the object store in
//! segments, closed at [`SEGMENT_BYTES`] or after the archive timeout.
//!
//! Only entries another member already holds are archived (the K-th highest
//! acknowledgement in sync mode, the highest in async mode; everything when the
//! node has no peers at all), so an entry that a failover rolls back into a
//! quarantine never reaches the archive. A new primary lists the archive, records its
//! term history under `timeline/` and continues after the last archived seq: no gap,
//! no fork. Binaries an entry references are uploaded before its segment.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::path::Path;

use super::layout::{self, ArchiveMark, SegmentName, TimelineRecord};
use super::{BackupError, Backups, Objects, SEGMENT_BYTES, now_ms, segment};
use crate::cluster::Role;
use crate::config::ReplicationMode;
use crate::replication::Replication;
use crate::storage::{JournalEntry, StoreError};

/// Entries read from the journal per batch.
const BATCH: usize = 2_000;
/// After a failed upload, wait this long at first, doubling up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Binaries known to be in the archive (remembered to skip a HEAD per upload).
const KNOWN_BLOBS: usize = 100_000;

/// The archiver task (only started when backups are configured).
pub async fn run(state: Replication, backups: Arc<Backups>) {
    let Some(objects) = backups.objects.clone() else {
        return std::future::pending().await;
    };
    let mut roles = state.role.subscribe();
    let mut known_blobs = HashSet::new();
    loop {
        let info = state.role.get();
        if info.role != Role::Primary || info.read_only {
            stand_by(&state, &backups);
            let _ = roles.changed().await;
            continue;
        }
        let mut session = Session {
            state: &state,
            backups: &backups,
            objects: &objects,
            term: info.term,
            known_blobs: &mut known_blobs,
        };
        if let Err(e) = session.run().await {
            tracing::warn!(error = %e, "archiving failed; retrying");
            record_failure(&state, &backups, &e);
            tokio::time::sleep(MAX_BACKOFF).await;
        }
    }
}

fn stand_by(state: &Replication, backups: &Backups) {
    backups.set_archived_seq(None);
    backups.update_archive(|a| {
        a.archiving = false;
        a.lag_entries = 0;
        a.lag_seconds = 0.0;
    });
    state.metrics.backup.archiving.set(0);
}

fn record_failure(state: &Replication, backups: &Backups, e: &BackupError) {
    let now = now_ms();
    backups.update_archive(|a| {
        a.last_error = Some(e.to_string());
        a.failing_since_ms.get_or_insert(now);
    });
    state.metrics.backup.archive_failures.inc();
    state.metrics.backup.archive_last_failure.set(now / 1000);
}

/// The highest seq this primary may archive: one another member holds.
pub fn archivable(state: &Replication) -> u64 {
    let own = state.store.position().seq;
    let peers = state.repl.peers_snapshot();
    if peers.is_empty() {
        return own;
    }
    let mut acks: Vec<u64> = peers.iter().map(|(_, p)| p.acked.seq).collect();
    acks.sort_unstable_by(|a, b| b.cmp(a));
    let k = match state.config.replication_mode {
        ReplicationMode::Sync => state.config.sync_replicas.max(1) as usize,
        ReplicationMode::Async => 1,
    };
    acks.get(k - 1).copied().unwrap_or(0).min(own)
}

struct Session<'a> {
    state: &'a Replication,
    backups: &'a Backups,
    objects: &'a Objects,
    term: u64,
    known_blobs: &'a mut HashSet<String>,
}

impl Session<'_> {
    fn still_primary(&self) -> bool {
        let i = self.state.role.get();
        i.role == Role::Primary && !i.read_only && i.term == self.term
    }

    async fn run(&mut self) -> Result<(), BackupError> {
        let store = &self.state.store;
        let Some(cluster_id) = store.call(|s| s.cluster_id()).await? else {
            return Err(BackupError::NoClusterId);
        };
        let key = |rest: &str| self.objects.key(&cluster_id, rest);
        let history = store.call(|s| s.term_history()).await?;
        // Every term this primary's history holds, so a restore can tell committed
        // entries from a stale primary's tail (see layout::term_for).
        let listed: HashSet<Path> = self
            .objects
            .list(&key(layout::TIMELINE), None)
            .await?
            .into_iter()
            .map(|m| m.location)
            .collect();
        let mut recorded = HashSet::new();
        for t in &history {
            let k = key(&format!(
                "{}/{}",
                layout::TIMELINE,
                layout::timeline_file(t.term)
            ));
            if listed.contains(&k) {
                recorded.insert(t.term);
            }
        }
        self.record_terms(&cluster_id, &mut recorded, &history)
            .await?;
        let my_first = history
            .iter()
            .find(|t| t.term == self.term)
            .map(|t| t.first_seq);
        let (mut archived, had_archive) = self.archive_end(&cluster_id).await?;
        if let Some(first) = my_first
            && archived >= first
        {
            // Entries at or after our term's start archived under an older term are
            // a stale tail the timeline rejects: archive ours again from there.
            archived = first - 1;
        }
        tracing::info!(term = self.term, archived, destination = %self.objects.describe(&cluster_id), "archiving the journal");
        self.backups.update_archive(|a| {
            a.archiving = true;
            a.destination = self.objects.describe(&cluster_id);
            a.archived_seq = archived;
        });
        self.state.metrics.backup.archiving.set(1);
        let mut pending: Vec<JournalEntry> = Vec::new();
        let mut pending_bytes = 0usize;
        let mut last_mark: Option<Instant> = None;
        let mut backoff = FIRST_BACKOFF;
        let mut positions = store.subscribe();
        let timeout_ms = self.backups.archive_timeout.as_millis() as i64;
        while self.still_primary() {
            self.backups.set_archived_seq(Some(archived));
            let limit = archivable(self.state);
            let next = archived + pending.len() as u64;
            if next < limit {
                let want = ((limit - next) as usize).min(BATCH);
                match store.call(move |s| s.entries_after(next, want)).await {
                    Ok(es) => {
                        for e in es {
                            pending_bytes += e.encode().len();
                            pending.push(e);
                        }
                    }
                    Err(StoreError::Compacted { oldest }) if pending.is_empty() => {
                        if had_archive {
                            tracing::error!(
                                archived,
                                oldest,
                                "journal entries were compacted before they were archived: the archive has a gap; take a base backup"
                            );
                            self.backups
                                .update_archive(|a| a.gap_before_seq = Some(oldest));
                        }
                        archived = oldest - 1;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let oldest_age = pending.first().map(|e| now_ms() - e.time).unwrap_or(0);
            let due =
                pending_bytes >= SEGMENT_BYTES || (!pending.is_empty() && oldest_age >= timeout_ms);
            if due {
                match self.flush(&cluster_id, &pending, &mut recorded).await {
                    Ok(()) => {
                        archived += pending.len() as u64;
                        pending.clear();
                        pending_bytes = 0;
                        backoff = FIRST_BACKOFF;
                        self.record_success(archived).await;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "archiving a segment failed; retrying");
                        record_failure(self.state, self.backups, &e);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            self.report_lag(archived, &pending).await;
            // Caught up: say how far the archive is known complete (PITR by time).
            let caught_up = pending.is_empty() && archived >= store.position().seq;
            if caught_up && last_mark.is_none_or(|t| t.elapsed() >= self.backups.archive_timeout) {
                let mark = ArchiveMark {
                    archived_seq: archived,
                    as_of_ms: now_ms(),
                };
                match self.objects.put_json(&key(layout::MARK), &mark).await {
                    Ok(()) => last_mark = Some(Instant::now()),
                    Err(e) => record_failure(self.state, self.backups, &e),
                }
            }
            let wait = if pending.is_empty() {
                self.backups.archive_timeout.min(Duration::from_secs(1))
            } else {
                Duration::from_millis(((timeout_ms - oldest_age).clamp(20, 1000)) as u64)
            };
            tokio::select! {
                _ = positions.changed() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        Ok(())
    }

    /// Where the archive ends (highest archived seq), and whether it has anything.
    async fn archive_end(&self, cluster_id: &str) -> Result<(u64, bool), BackupError> {
        let mark: Option<ArchiveMark> = self
            .objects
            .get_json_opt(&self.objects.key(cluster_id, layout::MARK))
            .await?;
        let wal = self.objects.key(cluster_id, layout::WAL);
        let offset = mark.map(|m| {
            self.objects.key(
                cluster_id,
                &format!("{}/{:020}", layout::WAL, m.archived_seq),
            )
        });
        let segments = self.objects.list(&wal, offset.as_ref()).await?;
        let end = segments
            .iter()
            .filter_map(|m| m.location.filename().and_then(SegmentName::parse))
            .map(|s| s.last)
            .max();
        let from_mark = mark.map(|m| m.archived_seq);
        Ok((
            end.max(from_mark).unwrap_or(0),
            end.is_some() || from_mark.is_some(),
        ))
    }

    /// Puts `timeline/<term>.json` for every term of `history` not in `recorded`.
    async fn record_terms(
        &self,
        cluster_id: &str,
        recorded: &mut HashSet<u64>,
        history: &[crate::storage::TermStart],
    ) -> Result<(), BackupError> {
        for t in history {
            if recorded.contains(&t.term) {
                continue;
            }
            let k = self.objects.key(
                cluster_id,
                &format!("{}/{}", layout::TIMELINE, layout::timeline_file(t.term)),
            );
            let rec = TimelineRecord {
                term: t.term,
                first_seq: t.first_seq,
            };
            self.objects.put_json(&k, &rec).await?;
            recorded.insert(t.term);
        }
        Ok(())
    }

    async fn flush(
        &mut self,
        cluster_id: &str,
        entries: &[JournalEntry],
        recorded: &mut HashSet<u64>,
    ) -> Result<(), BackupError> {
        // The timeline names every term before a segment holding it is archived.
        if entries.iter().any(|e| !recorded.contains(&e.term)) {
            let history = self.state.store.call(|s| s.term_history()).await?;
            self.record_terms(cluster_id, recorded, &history).await?;
        }
        for e in entries {
            if let Some(sha) = e.required_blob() {
                self.upload_blob(cluster_id, sha).await?;
            }
        }
        let (name, bytes) = segment::encode(entries, self.term)?;
        let size = bytes.len() as u64;
        let k = self
            .objects
            .key(cluster_id, &format!("{}/{}", layout::WAL, name.file_name()));
        self.objects.put(&k, bytes).await?;
        self.state.metrics.backup.segments_archived.inc();
        self.state.metrics.backup.archived_bytes.inc_by(size);
        Ok(())
    }

    async fn upload_blob(&mut self, cluster_id: &str, sha: &str) -> Result<(), BackupError> {
        if self.known_blobs.contains(sha) {
            return Ok(());
        }
        upload_blob(self.state, self.objects, cluster_id, sha).await?;
        if self.known_blobs.len() >= KNOWN_BLOBS {
            self.known_blobs.clear();
        }
        self.known_blobs.insert(sha.to_string());
        Ok(())
    }

    async fn record_success(&self, archived: u64) {
        let now = now_ms();
        let time = self
            .state
            .store
            .call(move |s| s.entry_at(archived))
            .await
            .ok()
            .flatten()
            .map(|e| e.time);
        self.backups.update_archive(|a| {
            a.archived_seq = archived;
            a.archived_time_ms = time.or(a.archived_time_ms);
            a.last_success_ms = Some(now);
            a.last_error = None;
            a.failing_since_ms = None;
        });
        let m = &self.state.metrics.backup;
        m.archived_seq.set(archived as i64);
        m.archive_last_success.set(now / 1000);
    }

    async fn report_lag(&self, archived: u64, pending: &[JournalEntry]) {
        let own = self.state.store.position().seq;
        let lag = own.saturating_sub(archived);
        let oldest_time = match pending.first() {
            Some(e) => Some(e.time),
            None if lag > 0 => {
                let next = archived + 1;
                self.state
                    .store
                    .call(move |s| s.entry_at(next))
                    .await
                    .ok()
                    .flatten()
                    .map(|e| e.time)
            }
            None => None,
        };
        let secs = oldest_time
            .map(|t| ((now_ms() - t).max(0)) as f64 / 1000.0)
            .unwrap_or(0.0);
        self.backups.update_archive(|a| {
            a.lag_entries = lag;
            a.lag_seconds = secs;
        });
        let m = &self.state.metrics.backup;
        m.archive_lag_entries.set(lag as i64);
        m.archive_lag_seconds.set(secs);
    }
}

/// Uploads a binary unless the archive has it. Returns the bytes uploaded.
pub async fn upload_blob(
    state: &Replication,
    objects: &Objects,
    cluster_id: &str,
    sha: &str,
) -> Result<u64, BackupError> {
    let k = objects.key(cluster_id, &format!("{}/{sha}", layout::BLOBS));
    if objects.exists(&k).await? {
        return Ok(0);
    }
    let Some(path) = state.store.blob_path(sha) else {
        return Err(BackupError::Corrupt(format!("{sha} is not a sha256")));
    };
    objects.put_file(&k, &path).await
}
