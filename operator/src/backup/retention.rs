//! Which base backups retention deletes (pure): `spec.backup.retention` applied to the
//! archive's list.

use studio_crds::RetentionSpec;
use studio_crds::node_api::{BackupPhase, BaseBackupStatus};

const DAY_MS: i64 = 24 * 3600 * 1000;

/// The ids to delete, oldest first. A backup goes when it is older than `maxAgeDays`
/// (by when it finished) or beyond the newest `maxCount`; the newest completed backup
/// always stays, whatever the limits say. Backups that are not completed are never
/// touched (the list holds completed ones only; this is a second guard).
pub fn to_delete(
    backups: &[BaseBackupStatus],
    retention: &RetentionSpec,
    now_ms: i64,
) -> Vec<String> {
    let mut done: Vec<&BaseBackupStatus> = backups
        .iter()
        .filter(|b| b.phase == BackupPhase::Completed)
        .collect();
    // Newest first: by the time the backup's content is at, then its seq, then id.
    let finished = |b: &BaseBackupStatus| b.stopped_ms.unwrap_or(b.started_ms);
    done.sort_by(|a, b| (finished(b), b.seq, &b.id).cmp(&(finished(a), a.seq, &a.id)));
    let mut delete: Vec<&BaseBackupStatus> = Vec::new();
    for (i, b) in done.iter().enumerate() {
        if i == 0 {
            continue; // the newest completed backup is always kept
        }
        let too_many = retention.max_count.is_some_and(|n| i as i64 >= n.max(1));
        let too_old = retention
            .max_age_days
            .is_some_and(|d| now_ms.saturating_sub(finished(b)) > d.saturating_mul(DAY_MS));
        if too_many || too_old {
            delete.push(b);
        }
    }
    delete.reverse();
    delete.into_iter().map(|b| b.id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(id: &str, stopped_days_ago: i64, now: i64) -> BaseBackupStatus {
        BaseBackupStatus {
            id: id.into(),
            phase: BackupPhase::Completed,
            message: String::new(),
            cluster_id: "c".into(),
            node_id: "n".into(),
            started_ms: now - stopped_days_ago * DAY_MS - 1000,
            stopped_ms: Some(now - stopped_days_ago * DAY_MS),
            seq: (100 - stopped_days_ago) as u64,
            term: 1,
            time_ms: 0,
            size_bytes: 1,
            location: String::new(),
        }
    }

    const NOW: i64 = 1_800_000_000_000;

    fn list() -> Vec<BaseBackupStatus> {
        // oldest first, as the node lists them
        vec![
            b("d10", 10, NOW),
            b("d5", 5, NOW),
            b("d2", 2, NOW),
            b("d0", 0, NOW),
        ]
    }

    #[test]
    fn no_limits_keep_everything() {
        assert!(to_delete(&list(), &RetentionSpec::default(), NOW).is_empty());
    }

    #[test]
    fn max_count_keeps_the_newest_n() {
        let r = RetentionSpec {
            max_count: Some(2),
            ..Default::default()
        };
        assert_eq!(to_delete(&list(), &r, NOW), ["d10", "d5"]);
    }

    #[test]
    fn max_age_deletes_what_finished_too_long_ago() {
        let r = RetentionSpec {
            max_age_days: Some(3),
            ..Default::default()
        };
        assert_eq!(to_delete(&list(), &r, NOW), ["d10", "d5"]);
        let r = RetentionSpec {
            max_age_days: Some(5),
            ..Default::default()
        };
        assert_eq!(to_delete(&list(), &r, NOW), ["d10"]);
    }

    #[test]
    fn both_limits_delete_what_either_says() {
        let r = RetentionSpec {
            max_age_days: Some(7),
            max_count: Some(2),
        };
        assert_eq!(to_delete(&list(), &r, NOW), ["d10", "d5"]);
    }

    #[test]
    fn the_newest_completed_backup_always_stays() {
        let r = RetentionSpec {
            max_age_days: Some(1),
            max_count: Some(1),
        };
        let old = vec![b("d30", 30, NOW), b("d20", 20, NOW)];
        assert_eq!(to_delete(&old, &r, NOW), ["d30"]);
        let mut with_failed = old.clone();
        with_failed.push(BaseBackupStatus {
            phase: BackupPhase::Failed,
            ..b("x", 0, NOW)
        });
        with_failed.push(BaseBackupStatus {
            phase: BackupPhase::Running,
            ..b("y", 0, NOW)
        });
        assert_eq!(to_delete(&with_failed, &r, NOW), ["d30"]);
        assert!(to_delete(&[], &r, NOW).is_empty());
    }
}
