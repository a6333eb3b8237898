//! Restore at bootstrap: a base backup, then the archived journal up to a target
//! (latest, a seq, a time, or the base backup alone). Strict: a target the archive
//! does not cover is refused with the reason, never silently replaced by another.
//! The restored data then gets the new cluster's id (set by the caller), so the new
//! cluster archives under its own folder.

use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};
use studio_crds::node_api::{BaseBackupStatus, RestorePhase, RestoreStatus};

use super::layout::{self, ArchiveMark, SegmentName, TimelineRecord};
use super::{BackupError, Backups, Objects, base, segment};
use crate::config::BackupArgs;
use crate::storage::{JournalEntry, Store};

/// Largest compressed segment accepted (segments close at 4 MiB uncompressed).
const MAX_SEGMENT_BYTES: usize = 64 << 20;
/// Largest binary accepted from the archive.
const MAX_BLOB_BYTES: u64 = 64 << 30;

/// Where a restore stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Everything archived.
    Latest,
    /// Up to and including this seq.
    Seq(u64),
    /// Every entry written at or before this time (ms since the epoch).
    Time(i64),
    /// The base backup only.
    Immediate,
}

/// What to restore, from the node's flags; None when no restore is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub source_cluster_id: String,
    pub backup_id: Option<String>,
    pub target: Target,
}

impl Request {
    pub fn from_args(args: &BackupArgs) -> Result<Option<Request>, BackupError> {
        let Some(source) = args.restore_cluster_id.clone().filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let targets = [
            args.restore_target_seq.is_some(),
            args.restore_target_time.is_some(),
            args.restore_target_immediate,
        ];
        if targets.iter().filter(|t| **t).count() > 1 {
            return Err(BackupError::Config(
                "give at most one of the restore target seq, time or immediate".into(),
            ));
        }
        let target = if let Some(s) = args.restore_target_seq {
            Target::Seq(s)
        } else if let Some(t) = &args.restore_target_time {
            Target::Time(parse_time(t).map_err(BackupError::Config)?)
        } else if args.restore_target_immediate {
            Target::Immediate
        } else {
            Target::Latest
        };
        Ok(Some(Request {
            source_cluster_id: source,
            backup_id: args.restore_backup_id.clone().filter(|s| !s.is_empty()),
            target,
        }))
    }
}

/// RFC 3339, or the same without a zone (taken as UTC). Milliseconds since the epoch.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    Err(format!(
        "restore target time {s:?} is not RFC 3339 (e.g. 2026-11-30T18:00:00Z; without a zone it is UTC)"
    ))
}

fn show_time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// The base backup to start from (pure): the named one, else the newest whose
/// position is at or before the target.
pub fn choose_base<'a>(
    backups: &'a [BaseBackupStatus],
    named: Option<&str>,
    target: Target,
) -> Result<&'a BaseBackupStatus, BackupError> {
    let before = |b: &BaseBackupStatus| match target {
        Target::Latest | Target::Immediate => true,
        Target::Seq(s) => b.seq <= s,
        Target::Time(t) => b.time_ms <= t,
    };
    if let Some(id) = named {
        let b = backups.iter().find(|b| b.id == id).ok_or_else(|| {
            BackupError::Refused(format!("base backup {id} is not in the archive"))
        })?;
        if !before(b) {
            return Err(BackupError::Refused(format!(
                "the target is before base backup {id} (seq {}, written {}): choose an older backup or a later target",
                b.seq,
                show_time(b.time_ms)
            )));
        }
        return Ok(b);
    }
    backups
        .iter()
        .filter(|b| before(b))
        .max_by_key(|b| (b.seq, b.started_ms))
        .ok_or_else(|| match backups.iter().min_by_key(|b| b.seq) {
            None => BackupError::Refused("the archive has no completed base backup".into()),
            Some(first) => BackupError::Refused(format!(
                "the target is before the first recoverability point (base backup {} at seq {}, written {})",
                first.id,
                first.seq,
                show_time(first.time_ms)
            )),
        })
}

/// Whether replay may stop at `seq`/`time` or must continue (pure).
fn reached(target: Target, e: &JournalEntry) -> Option<bool> {
    match target {
        // Some(true): apply and stop; Some(false): stop before it; None: apply, go on.
        Target::Seq(s) if e.seq == s => Some(true),
        Target::Seq(s) if e.seq > s => Some(false),
        Target::Time(t) if e.time > t => Some(false),
        _ => None,
    }
}

/// Restores into `store` (whose data is replaced). Progress goes to `backups`.
pub async fn run(
    store: &Arc<Store>,
    backups: &Backups,
    req: &Request,
    data_dir: &std::path::Path,
) -> Result<RestoreStatus, BackupError> {
    let objects = backups.objects()?;
    let src = req.source_cluster_id.as_str();
    let progress = |msg: String, backup: Option<String>, seq: u64| {
        tracing::info!(%msg, seq, "restore");
        backups.set_restore(RestoreStatus {
            phase: RestorePhase::Running,
            message: msg,
            backup_id: backup,
            restored_seq: seq,
        });
    };
    progress(format!("restoring from {}", objects.describe(src)), None, 0);
    let list = base::list(objects, src).await?;
    let b = choose_base(&list.backups, req.backup_id.as_deref(), req.target)?.clone();
    if let Target::Seq(s) = req.target
        && s < b.seq
    {
        return Err(BackupError::Refused(format!(
            "target seq {s} is before base backup {} (seq {})",
            b.id, b.seq
        )));
    }
    progress(
        format!("downloading base backup {}", b.id),
        Some(b.id.clone()),
        0,
    );
    let tmp = data_dir.join(".restore");
    let _ = tokio::fs::remove_dir_all(&tmp).await;
    tokio::fs::create_dir_all(&tmp)
        .await
        .map_err(BackupError::Io)?;
    let gz = tmp.join(layout::CONTENT);
    let db = tmp.join("content.db");
    objects
        .get_to_file(
            &objects.key(
                src,
                &format!("{}/{}/{}", layout::BASE, b.id, layout::CONTENT),
            ),
            &gz,
        )
        .await?;
    {
        let (gz, db) = (gz.clone(), db.clone());
        tokio::task::spawn_blocking(move || decompress(&gz, &db))
            .await
            .map_err(|e| BackupError::Io(std::io::Error::other(e)))??;
    }
    let info = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || Store::snapshot_info(&db))
            .await
            .map_err(|e| BackupError::Io(std::io::Error::other(e)))??
    };
    for (sha, _) in &info.blobs {
        fetch_blob(store, objects, src, sha).await?;
    }
    let db2 = db.clone();
    // The snapshot carries the source's cluster id: drop it at once, so a restore
    // refused or interrupted from here on leaves data that belongs to no cluster (the
    // bootstrap then retries or reports, instead of refusing "another cluster's data").
    let pos = store
        .call(move |s| {
            let pos = s.restore_from(&db2)?;
            s.forget_cluster_id()?;
            Ok(pos)
        })
        .await?;
    let _ = tokio::fs::remove_dir_all(&tmp).await;
    progress(
        format!("base backup {} restored at seq {}", b.id, pos.seq),
        Some(b.id.clone()),
        pos.seq,
    );
    if let Target::Time(t) = req.target
        && info.time_ms > t
    {
        return Err(BackupError::Refused(format!(
            "target time {} is before base backup {} (written {})",
            show_time(t),
            b.id,
            show_time(info.time_ms)
        )));
    }
    let end = if req.target == Target::Immediate {
        pos.seq
    } else {
        replay(store, objects, src, req.target, pos.seq, |seq| {
            progress(
                format!("replaying the archived journal (seq {seq})"),
                Some(b.id.clone()),
                seq,
            )
        })
        .await?
    };
    Ok(RestoreStatus {
        phase: RestorePhase::Completed,
        message: format!(
            "restored from {} (base backup {} at seq {}) to seq {end}",
            objects.describe(src),
            b.id,
            b.seq
        ),
        backup_id: Some(b.id),
        restored_seq: end,
    })
}

/// Applies archived entries after `from` up to the target; returns the last seq.
async fn replay(
    store: &Arc<Store>,
    objects: &Objects,
    src: &str,
    target: Target,
    from: u64,
    progress: impl Fn(u64),
) -> Result<u64, BackupError> {
    let timeline: Vec<TimelineRecord> = {
        let mut v = Vec::new();
        for m in objects
            .list(&objects.key(src, layout::TIMELINE), None)
            .await?
        {
            v.push(objects.get_json::<TimelineRecord>(&m.location).await?);
        }
        v
    };
    let mark: Option<ArchiveMark> = objects
        .get_json_opt(&objects.key(src, layout::MARK))
        .await?;
    let mut segments: Vec<(SegmentName, object_store::path::Path)> = objects
        .list(&objects.key(src, layout::WAL), None)
        .await?
        .into_iter()
        .filter_map(|m| {
            let n = m.location.filename().and_then(SegmentName::parse)?;
            Some((n, m.location))
        })
        .filter(|(n, _)| n.last > from)
        .collect();
    // By first seq; for the same range the newer term first.
    segments.sort_by(|(a, _), (b, _)| a.first.cmp(&b.first).then(b.term.cmp(&a.term)));
    let mut at = from;
    let mut passed_target = false;
    'segments: for (name, key) in &segments {
        if name.last <= at {
            continue;
        }
        if name.first > at + 1 {
            break; // a gap: judged below
        }
        let bytes = objects.get(key, MAX_SEGMENT_BYTES).await?;
        let entries = segment::decode(name, &bytes)?;
        let mut batch: Vec<JournalEntry> = Vec::new();
        for e in entries.into_iter().filter(|e| e.seq > at) {
            if e.seq != at + batch.len() as u64 + 1 {
                break;
            }
            // A stale primary's tail: its term is not the one the timeline gives.
            if layout::term_for(&timeline, e.seq).is_some_and(|t| t != e.term) {
                break;
            }
            match reached(target, &e) {
                Some(false) => {
                    passed_target = true;
                    apply(store, objects, src, &batch).await?;
                    at += batch.len() as u64;
                    break 'segments;
                }
                Some(true) => {
                    batch.push(e);
                    apply(store, objects, src, &batch).await?;
                    at += batch.len() as u64;
                    passed_target = true;
                    break 'segments;
                }
                None => batch.push(e),
            }
        }
        apply(store, objects, src, &batch).await?;
        at += batch.len() as u64;
        progress(at);
    }
    let next_first = segments
        .iter()
        .map(|(n, _)| n)
        .find(|n| n.first > at + 1 && n.last > at)
        .map(|n| n.first);
    judge_end(target, at, passed_target, next_first, mark)
}

/// Whether a replay that ended at `at` reached its target (pure). `passed_target`: an
/// entry at or past the target was seen; `next_first`: the first seq of a segment that
/// starts beyond `at + 1` (entries missing in between).
fn judge_end(
    target: Target,
    at: u64,
    passed_target: bool,
    next_first: Option<u64>,
    mark: Option<ArchiveMark>,
) -> Result<u64, BackupError> {
    match target {
        Target::Seq(s) if at < s => Err(BackupError::Refused(match next_first {
            Some(n) => format!(
                "the archive misses entries {}..{} (a gap) before target seq {s}",
                at + 1,
                n - 1
            ),
            None => format!("the archive ends at seq {at}, before target seq {s}"),
        })),
        Target::Time(t) if !passed_target => {
            let as_of = mark.map(|m| (m.archived_seq, m.as_of_ms));
            match as_of {
                Some((seq, ms)) if ms >= t && seq <= at => Ok(at),
                _ => Err(BackupError::Refused(format!(
                    "target time {} is after the end of the archive (known complete up to {}; restored up to seq {at})",
                    show_time(t),
                    as_of
                        .map(|(_, ms)| show_time(ms))
                        .unwrap_or_else(|| "no mark".into())
                ))),
            }
        }
        // Reached: whatever lies beyond the target does not matter.
        Target::Seq(_) | Target::Time(_) | Target::Immediate => Ok(at),
        Target::Latest => match next_first {
            Some(n) => Err(BackupError::Refused(format!(
                "the archive misses entries {}..{} (a gap): restore to a seq or time before it",
                at + 1,
                n - 1
            ))),
            None => Ok(at),
        },
    }
}

async fn apply(
    store: &Arc<Store>,
    objects: &Objects,
    src: &str,
    batch: &[JournalEntry],
) -> Result<(), BackupError> {
    if batch.is_empty() {
        return Ok(());
    }
    for sha in batch.iter().filter_map(JournalEntry::required_blob) {
        fetch_blob(store, objects, src, sha).await?;
    }
    let batch = batch.to_vec();
    store.call(move |s| s.apply_entries(&batch)).await?;
    Ok(())
}

async fn fetch_blob(
    store: &Arc<Store>,
    objects: &Objects,
    src: &str,
    sha: &str,
) -> Result<(), BackupError> {
    if store.has_blob(sha) {
        return Ok(());
    }
    let stream = objects
        .get_stream(&objects.key(src, &format!("{}/{sha}", layout::BLOBS)))
        .await?;
    store
        .put_blob_stream(stream, MAX_BLOB_BYTES, Some(sha))
        .await?;
    Ok(())
}

fn decompress(gz: &std::path::Path, db: &std::path::Path) -> Result<(), BackupError> {
    let input = std::io::BufReader::new(std::fs::File::open(gz).map_err(BackupError::Io)?);
    let mut out = std::io::BufWriter::new(std::fs::File::create(db).map_err(BackupError::Io)?);
    std::io::copy(&mut flate2::read::GzDecoder::new(input), &mut out).map_err(BackupError::Io)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use studio_crds::node_api::BackupPhase;

    fn b(id: &str, seq: u64, time_ms: i64) -> BaseBackupStatus {
        BaseBackupStatus {
            id: id.into(),
            phase: BackupPhase::Completed,
            message: String::new(),
            cluster_id: "c".into(),
            node_id: "n".into(),
            started_ms: time_ms,
            stopped_ms: None,
            seq,
            term: 1,
            time_ms,
            size_bytes: 0,
            location: String::new(),
        }
    }

    #[test]
    fn the_newest_base_backup_before_the_target_is_chosen() {
        let all = [b("a", 10, 1000), b("b", 50, 5000), b("c", 90, 9000)];
        assert_eq!(choose_base(&all, None, Target::Latest).unwrap().id, "c");
        assert_eq!(choose_base(&all, None, Target::Seq(60)).unwrap().id, "b");
        assert_eq!(choose_base(&all, None, Target::Time(4999)).unwrap().id, "a");
        assert_eq!(
            choose_base(&all, Some("a"), Target::Seq(95)).unwrap().id,
            "a"
        );
    }

    #[test]
    fn a_target_before_every_base_backup_is_refused_with_the_first_point() {
        let all = [b("a", 10, 1000), b("b", 50, 5000)];
        let err = choose_base(&all, None, Target::Seq(5))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("first recoverability point") && err.contains("seq 10"),
            "{err}"
        );
        let err = choose_base(&all, Some("b"), Target::Seq(20))
            .unwrap_err()
            .to_string();
        assert!(err.contains("before base backup b"), "{err}");
        let err = choose_base(&[], None, Target::Latest)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no completed base backup"), "{err}");
    }

    #[test]
    fn a_reached_target_ignores_what_lies_beyond_but_a_gap_before_it_is_refused() {
        // Restored to 494; later segments start at 558 (entries 495..557 are in a
        // segment not needed): reached, not a gap.
        assert_eq!(
            judge_end(Target::Seq(494), 494, true, Some(558), None).unwrap(),
            494
        );
        let t = judge_end(Target::Time(5_000), 494, true, Some(558), None).unwrap();
        assert_eq!(t, 494);
        // Stopped short of the target at a hole.
        let err = judge_end(Target::Seq(600), 494, false, Some(558), None).unwrap_err();
        assert!(err.to_string().contains("misses entries 495..557"), "{err}");
        let err = judge_end(Target::Latest, 494, false, Some(558), None).unwrap_err();
        assert!(err.to_string().contains("misses entries 495..557"), "{err}");
        assert_eq!(
            judge_end(Target::Latest, 494, false, None, None).unwrap(),
            494
        );
        let err = judge_end(Target::Seq(600), 494, false, None, None).unwrap_err();
        assert!(err.to_string().contains("ends at seq 494"), "{err}");
        // A time past the last entry: covered only up to the completeness mark.
        let mark = Some(ArchiveMark {
            archived_seq: 494,
            as_of_ms: 9_000,
        });
        assert_eq!(
            judge_end(Target::Time(8_000), 494, false, None, mark).unwrap(),
            494
        );
        let err = judge_end(Target::Time(10_000), 494, false, None, mark).unwrap_err();
        assert!(
            err.to_string().contains("after the end of the archive"),
            "{err}"
        );
    }

    #[test]
    fn target_times_are_rfc3339_or_utc_without_a_zone() {
        let z = parse_time("2026-11-30T18:00:00Z").unwrap();
        assert_eq!(parse_time("2026-11-30T19:00:00+01:00").unwrap(), z);
        assert_eq!(parse_time("2026-11-30T18:00:00").unwrap(), z);
        assert_eq!(parse_time("2026-11-30 18:00:00.000").unwrap(), z);
        assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
    }
}
