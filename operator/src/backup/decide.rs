//! A StudioBackup's next step and its status (pure).

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use studio_crds::node_api::{BackupPhase, BaseBackupStatus};
use studio_crds::{StudioBackupStatus, StudioCluster};

pub const PENDING: &str = "Pending";
pub const RUNNING: &str = "Running";
pub const COMPLETED: &str = "Completed";
pub const FAILED: &str = "Failed";

/// A backup no member could start for this long fails.
pub const START_LIMIT: Duration = Duration::from_secs(10 * 60);
/// A running backup no member answered about for this long fails.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(30 * 60);
/// How often a pending or running backup is looked at.
pub const POLL: Duration = Duration::from_secs(5);

/// What the StudioBackup's status says to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Completed or Failed: nothing more.
    Done,
    /// Choose a member (or use the one recorded) and ask it to start.
    Start { recorded_node: Option<String> },
    /// Ask the members how the backup taken by `node` stands.
    Poll { node: String, id: String },
}

pub fn step(status: Option<&StudioBackupStatus>) -> Step {
    let st = status.cloned().unwrap_or_default();
    match st.phase.as_deref() {
        Some(COMPLETED) | Some(FAILED) => Step::Done,
        Some(RUNNING) => match (st.node, st.backup_id) {
            (Some(node), Some(id)) => Step::Poll { node, id },
            (node, _) => Step::Start {
                recorded_node: node,
            },
        },
        _ => Step::Start {
            recorded_node: st.node,
        },
    }
}

/// Why `cluster` cannot be backed up at all (a Failed backup, not a retry).
pub fn refuse(cluster_name: &str, cluster: Option<&StudioCluster>) -> Option<String> {
    match cluster {
        None => Some(format!(
            "StudioCluster {cluster_name} does not exist in this namespace"
        )),
        Some(sc) if sc.spec.backup.is_none() => Some(format!(
            "StudioCluster {cluster_name} has no spec.backup (object store): set it, then create another StudioBackup"
        )),
        Some(sc) if sc.metadata.deletion_timestamp.is_some() => {
            Some(format!("StudioCluster {cluster_name} is being deleted"))
        }
        Some(_) => None,
    }
}

/// One member's answer about a backup.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Found(BaseBackupStatus),
    /// 404: neither taking it nor in the archive.
    NotFound,
    /// No answer (unreachable, an error status).
    Silent(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Poll {
    /// Completed or Failed on the node.
    Finished(BaseBackupStatus),
    /// Still running (with its progress).
    Running(BaseBackupStatus),
    /// It will never finish: why.
    Lost(String),
    /// Nobody could say; look again.
    Unknown(String),
}

/// What the members' answers mean. `answers` come in asking order, the taking member
/// first.
pub fn interpret(
    node: &str,
    answers: &[(String, Answer)],
    started: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Poll {
    let found = || {
        answers.iter().filter_map(|(_, a)| match a {
            Answer::Found(b) => Some(b),
            _ => None,
        })
    };
    if let Some(b) = found().find(|b| b.phase != BackupPhase::Running) {
        return Poll::Finished(b.clone());
    }
    if let Some(b) = found().next() {
        return Poll::Running(b.clone());
    }
    if answers
        .iter()
        .any(|(m, a)| m == node && *a == Answer::NotFound)
    {
        return Poll::Lost(format!(
            "{node} no longer knows the backup and the archive has no manifest of it (the member restarted while taking it?)"
        ));
    }
    let why = answers
        .iter()
        .filter_map(|(m, a)| match a {
            Answer::Silent(e) => Some(format!("{m}: {e}")),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("; ");
    let why = if why.is_empty() {
        format!("{node} is not among the cluster's members with an address")
    } else {
        why
    };
    let silent_for = started.map(|s| now - s).unwrap_or_default();
    if silent_for.num_seconds() > SILENCE_LIMIT.as_secs() as i64 {
        return Poll::Lost(format!(
            "no member could say how the backup stands for {} min: {why}",
            silent_for.num_minutes()
        ));
    }
    Poll::Unknown(why)
}

fn time_ms(ms: i64) -> Option<Time> {
    Timestamp::from_millisecond(ms).ok().map(Time)
}

/// The StudioBackup's status from what the node reports about it.
pub fn status_from(prev: &StudioBackupStatus, b: &BaseBackupStatus) -> StudioBackupStatus {
    let phase = match b.phase {
        BackupPhase::Running => RUNNING,
        BackupPhase::Completed => COMPLETED,
        BackupPhase::Failed => FAILED,
    };
    let message = match b.phase {
        BackupPhase::Running if b.message.is_empty() => format!("running on {}", b.node_id),
        BackupPhase::Running => format!("running on {}: {}", b.node_id, b.message),
        BackupPhase::Completed => format!(
            "completed on {}: {} bytes, content at seq {}",
            b.node_id, b.size_bytes, b.seq
        ),
        BackupPhase::Failed if b.message.is_empty() => format!("failed on {}", b.node_id),
        BackupPhase::Failed => format!("failed on {}: {}", b.node_id, b.message),
    };
    StudioBackupStatus {
        phase: Some(phase.to_string()),
        message: Some(message),
        backup_id: Some(b.id.clone()),
        cluster_id: Some(b.cluster_id.clone())
            .filter(|c| !c.is_empty())
            .or(prev.cluster_id.clone()),
        node: Some(b.node_id.clone())
            .filter(|n| !n.is_empty())
            .or(prev.node.clone()),
        started_at: time_ms(b.started_ms).or(prev.started_at.clone()),
        stopped_at: b.stopped_ms.and_then(time_ms).or(prev.stopped_at.clone()),
        seq: (b.seq > 0 || b.phase == BackupPhase::Completed)
            .then_some(b.seq as i64)
            .or(prev.seq),
        size_bytes: (b.size_bytes > 0 || b.phase == BackupPhase::Completed)
            .then_some(b.size_bytes as i64)
            .or(prev.size_bytes),
        location: Some(b.location.clone())
            .filter(|l| !l.is_empty())
            .or(prev.location.clone()),
    }
}

/// A Failed status keeping what is known.
pub fn failed(prev: &StudioBackupStatus, why: String) -> StudioBackupStatus {
    StudioBackupStatus {
        phase: Some(FAILED.to_string()),
        message: Some(why),
        ..prev.clone()
    }
}

pub fn to_chrono(t: &Time) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_status(phase: BackupPhase) -> BaseBackupStatus {
        BaseBackupStatus {
            id: "b-1234abcd".into(),
            phase,
            message: if phase == BackupPhase::Failed {
                "bucket gone".into()
            } else {
                String::new()
            },
            cluster_id: "c-1".into(),
            node_id: "c-2".into(),
            started_ms: 1_800_000_000_000,
            stopped_ms: (phase != BackupPhase::Running).then_some(1_800_000_060_000),
            seq: 420,
            term: 3,
            time_ms: 1_799_999_999_000,
            size_bytes: 4096,
            location: "s3://b/p/c-1/base/b-1234abcd".into(),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_100, 0).unwrap_or_default()
    }

    #[test]
    fn steps_follow_the_phase() {
        assert_eq!(
            step(None),
            Step::Start {
                recorded_node: None
            }
        );
        let running = StudioBackupStatus {
            phase: Some(RUNNING.into()),
            node: Some("c-2".into()),
            backup_id: Some("b".into()),
            ..Default::default()
        };
        assert_eq!(
            step(Some(&running)),
            Step::Poll {
                node: "c-2".into(),
                id: "b".into()
            }
        );
        let pending = StudioBackupStatus {
            phase: Some(PENDING.into()),
            node: Some("c-1".into()),
            ..Default::default()
        };
        assert_eq!(
            step(Some(&pending)),
            Step::Start {
                recorded_node: Some("c-1".into())
            }
        );
        for p in [COMPLETED, FAILED] {
            let st = StudioBackupStatus {
                phase: Some(p.into()),
                ..Default::default()
            };
            assert_eq!(step(Some(&st)), Step::Done);
        }
    }

    #[test]
    fn a_cluster_without_backup_or_missing_is_refused_with_a_message() {
        assert!(refuse("content", None).is_some_and(|m| m.contains("does not exist")));
        let sc: StudioCluster = serde_yaml::from_str(
            "apiVersion: studio.cms.io/v1alpha1\nkind: StudioCluster\nmetadata: {name: content}\nspec: {image: x}\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(refuse("content", Some(&sc)).is_some_and(|m| m.contains("no spec.backup")));
    }

    #[test]
    fn answers_are_read_in_order_of_certainty() {
        let done = node_status(BackupPhase::Completed);
        let answers = vec![
            ("c-2".to_string(), Answer::Silent("timeout".into())),
            ("c-0".to_string(), Answer::Found(done.clone())),
        ];
        assert_eq!(
            interpret("c-2", &answers, None, now()),
            Poll::Finished(done)
        );
        let run = node_status(BackupPhase::Running);
        let answers = vec![("c-2".to_string(), Answer::Found(run.clone()))];
        assert_eq!(interpret("c-2", &answers, None, now()), Poll::Running(run));
        let answers = vec![
            ("c-2".to_string(), Answer::NotFound),
            ("c-0".to_string(), Answer::NotFound),
        ];
        assert!(matches!(
            interpret("c-2", &answers, None, now()),
            Poll::Lost(_)
        ));
        // Only others say 404 (the manifest is not written yet), the taker is silent.
        let answers = vec![
            (
                "c-2".to_string(),
                Answer::Silent("connection refused".into()),
            ),
            ("c-0".to_string(), Answer::NotFound),
        ];
        let started = now() - chrono::TimeDelta::seconds(60);
        assert!(
            matches!(interpret("c-2", &answers, Some(started), now()), Poll::Unknown(m) if m.contains("connection refused"))
        );
        let long_ago = now() - chrono::TimeDelta::seconds(SILENCE_LIMIT.as_secs() as i64 + 1);
        assert!(matches!(
            interpret("c-2", &answers, Some(long_ago), now()),
            Poll::Lost(_)
        ));
    }

    #[test]
    fn status_is_filled_from_the_node() {
        let st = status_from(
            &StudioBackupStatus::default(),
            &node_status(BackupPhase::Completed),
        );
        assert_eq!(st.phase.as_deref(), Some(COMPLETED));
        assert_eq!(st.seq, Some(420));
        assert_eq!(st.size_bytes, Some(4096));
        assert_eq!(st.cluster_id.as_deref(), Some("c-1"));
        assert_eq!(st.node.as_deref(), Some("c-2"));
        assert_eq!(st.location.as_deref(), Some("s3://b/p/c-1/base/b-1234abcd"));
        assert_eq!(
            st.started_at.map(|t| t.0.as_millisecond()),
            Some(1_800_000_000_000)
        );
        assert_eq!(
            st.stopped_at.map(|t| t.0.as_millisecond()),
            Some(1_800_000_060_000)
        );
        assert!(st.message.is_some_and(|m| m.contains("4096 bytes")));
        let failed = status_from(
            &StudioBackupStatus::default(),
            &node_status(BackupPhase::Failed),
        );
        assert_eq!(failed.phase.as_deref(), Some(FAILED));
        assert!(failed.message.is_some_and(|m| m.contains("bucket gone")));
    }
}
