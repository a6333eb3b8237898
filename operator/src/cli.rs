//! Rendering and checks of the `kubectl studio` plugin (pure, unit-tested).

use std::fmt::Write;

use studio_crds::{StudioCluster, conditions, roles};

fn dash(o: Option<String>) -> String {
    o.unwrap_or_else(|| "-".into())
}

/// The `kubectl studio status` report.
pub fn render_status(sc: &StudioCluster) -> String {
    let mut out = String::new();
    let st = sc.status.clone().unwrap_or_default();
    let name = sc.metadata.name.clone().unwrap_or_default();
    let ns = sc.metadata.namespace.clone().unwrap_or_default();
    let _ = writeln!(out, "Cluster:      {ns}/{name}");
    let _ = writeln!(
        out,
        "Phase:        {}{}",
        st.phase.map(|p| p.as_str()).unwrap_or("Unknown"),
        st.message
            .as_ref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default()
    );
    let ready = st
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::READY)
        .map(|c| c.status.clone());
    let _ = writeln!(out, "Ready:        {}", dash(ready));
    let quorum = st
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::WRITE_QUORUM)
        .map(|c| match c.status.as_str() {
            "True" => "OK".to_string(),
            "False" => format!("NO WRITES ({}): {}", c.reason, c.message),
            s => format!("{s} ({}): {}", c.reason, c.message),
        });
    let _ = writeln!(out, "WriteQuorum:  {}", dash(quorum));
    let _ = writeln!(
        out,
        "Nodes:        {} ready / {} desired{}",
        st.ready_nodes,
        sc.spec.nodes,
        if sc.spec.arbiter.enabled {
            " + arbiter"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "Primary:      {}", dash(st.current_primary.clone()));
    let _ = writeln!(
        out,
        "Replication:  {} (sync replicas {}), coordinator {}",
        sc.spec.replication.mode.as_str(),
        sc.spec.replication.sync_replicas,
        sc.spec.coordinator_mode.as_str()
    );
    let _ = writeln!(out, "Cluster id:   {}", dash(st.cluster_id.clone()));
    let failover = st.last_failover.as_ref().map(|f| {
        format!(
            "{} {} → {} at {}",
            f.kind,
            f.from.clone().unwrap_or_else(|| "?".into()),
            f.to,
            f.time.0
        )
    });
    let _ = writeln!(
        out,
        "Last failover: {}",
        failover.unwrap_or_else(|| "none".into())
    );
    if sc.spec.backup.is_some() {
        let b = st.backup.clone().unwrap_or_default();
        let t = |t: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
            t.map(|t| t.0.to_string())
        };
        let _ = writeln!(
            out,
            "Backups:      last successful {}, recoverable from {}{}, archived up to seq {}",
            dash(t(b.last_successful_backup)),
            dash(t(b.first_recoverability_point)),
            b.first_recoverability_seq
                .map(|s| format!(" (seq {s})"))
                .unwrap_or_default(),
            dash(b.last_archived_seq.map(|s| s.to_string()))
        );
    }
    let _ = writeln!(out);
    let rows: Vec<[String; 9]> = st
        .members
        .iter()
        .map(|m| {
            [
                m.name.clone(),
                m.role.clone(),
                if m.ready { "yes" } else { "no" }.into(),
                dash(m.term.map(|t| t.to_string())),
                dash(m.seq.map(|t| t.to_string())),
                dash(m.lag.map(|t| t.to_string())),
                dash(m.quarantined.map(|t| t.to_string())),
                if m.up_to_date { "yes" } else { "no" }.into(),
                dash(
                    m.quorum_connected
                        .map(|c| if c { "yes" } else { "no" }.to_string()),
                ),
            ]
        })
        .collect();
    let header = [
        "MEMBER",
        "ROLE",
        "READY",
        "TERM",
        "SEQ",
        "LAG",
        "QUARANTINED",
        "UP-TO-DATE",
        "IN-QUORUM",
    ]
    .map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    for r in std::iter::once(&header).chain(rows.iter()) {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    if rows.is_empty() {
        let _ = writeln!(out, "(no members reported yet)");
    }
    out
}

/// Refuses a promote the operator would refuse anyway, with the reason.
pub fn check_promote(sc: &StudioCluster, pod: &str) -> Result<(), String> {
    let st = sc.status.clone().unwrap_or_default();
    if st.current_primary.as_deref() == Some(pod) {
        return Err(format!("{pod} is already the primary"));
    }
    match st.members.iter().find(|m| m.name == pod) {
        None => Err(format!(
            "{pod} is not a member of {} (members: {})",
            sc.metadata.name.clone().unwrap_or_default(),
            st.members
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Some(m) if m.role == roles::ARBITER => {
            Err(format!("{pod} is the arbiter, which never becomes primary"))
        }
        Some(m) if !m.ready => Err(format!("{pod} is not ready")),
        Some(_) => Ok(()),
    }
}

/// The members' logs merged into one timeline, each line prefixed with its pod. Lines
/// are ordered by the JSON `timestamp` studio-node writes; a line without one (a
/// panic message, a plain line) stays right after the previous line of its pod.
pub fn merge_logs(logs: &[(String, String)]) -> Vec<String> {
    let mut lines: Vec<(Option<k8s_openapi::jiff::Timestamp>, usize, usize, String)> = Vec::new();
    for (pod_ix, (pod, text)) in logs.iter().enumerate() {
        let mut last = None;
        for (line_ix, line) in text.lines().enumerate() {
            let ts = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("timestamp")?.as_str()?.parse().ok());
            if ts.is_some() {
                last = ts;
            }
            lines.push((last, pod_ix, line_ix, format!("{pod} {line}")));
        }
    }
    // Lines before any timestamp sort first; then by time, pod, position.
    lines.sort_by_key(|l| (l.0, l.1, l.2));
    lines.into_iter().map(|l| l.3).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sc() -> StudioCluster {
        serde_yaml::from_str(
            r#"
apiVersion: studio.cms.io/v1alpha1
kind: StudioCluster
metadata: {name: demo, namespace: cms}
spec: {nodes: 3, image: studio-node:1, arbiter: {enabled: true}, replication: {mode: sync, syncReplicas: 2}}
status:
  phase: Ready
  message: 3 of 3 data nodes ready, primary demo-0
  currentPrimary: demo-0
  readyNodes: 3
  clusterId: c-123
  conditions:
    - {type: Ready, status: "True", reason: Ready, message: ok, lastTransitionTime: "2026-01-01T00:00:00Z"}
  lastFailover: {time: "2026-01-02T03:04:05Z", from: demo-1, to: demo-0, kind: failover}
  members:
    - {name: demo-0, role: primary, ready: true, term: 4, seq: 120, lag: 0, upToDate: true}
    - {name: demo-1, role: replica, ready: true, term: 4, seq: 117, lag: 3, quarantined: 2, upToDate: true, quorumConnected: true}
    - {name: demo-2, role: replica, ready: false, upToDate: false}
    - {name: demo-arbiter-0, role: arbiter, ready: true, term: 4, seq: 120, lag: 0, upToDate: true, quorumConnected: false}
"#,
        )
        .unwrap_or_else(|e| panic!("fixture: {e}"))
    }

    #[test]
    fn status_shows_members_roles_lag_and_last_failover() {
        let out = render_status(&sc());
        assert!(out.contains("Primary:      demo-0"), "{out}");
        assert!(
            out.contains("failover demo-1 → demo-0 at 2026-01-02T03:04:05Z"),
            "{out}"
        );
        assert!(out.contains("3 ready / 3 desired + arbiter"), "{out}");
        let row = out
            .lines()
            .find(|l| l.starts_with("demo-1"))
            .unwrap_or_default();
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cols,
            vec![
                "demo-1", "replica", "yes", "4", "117", "3", "2", "yes", "yes"
            ]
        );
        let row2 = out
            .lines()
            .find(|l| l.starts_with("demo-2"))
            .unwrap_or_default();
        assert_eq!(
            row2.split_whitespace().collect::<Vec<_>>(),
            vec!["demo-2", "replica", "no", "-", "-", "-", "-", "no", "-"]
        );
        let arbiter = out
            .lines()
            .find(|l| l.starts_with("demo-arbiter-0"))
            .unwrap_or_default();
        assert_eq!(arbiter.split_whitespace().last(), Some("no"), "{out}");
        // No WriteQuorum condition yet (an operator before 0.2 wrote this status).
        assert!(out.contains("WriteQuorum:  -"), "{out}");
        assert!(!out.contains("Backups:"), "no spec.backup: {out}");
    }

    #[test]
    fn status_shows_backups_when_configured() {
        let mut sc = sc();
        sc.spec.backup = serde_json::from_value(serde_json::json!({
            "objectStore": {"bucket": "backups", "credentials": {"secretName": "s3"}}
        }))
        .ok();
        let out = render_status(&sc);
        assert!(
            out.contains(
                "Backups:      last successful -, recoverable from -, archived up to seq -"
            ),
            "{out}"
        );
        if let Some(st) = sc.status.as_mut() {
            st.backup = serde_json::from_value(serde_json::json!({
                "lastSuccessfulBackup": "2026-11-30T02:01:00Z",
                "firstRecoverabilityPoint": "2026-11-23T02:00:00Z",
                "firstRecoverabilitySeq": 17,
                "lastArchivedSeq": 4711
            }))
            .ok();
        }
        let out = render_status(&sc);
        assert!(
            out.contains("Backups:      last successful 2026-11-30T02:01:00Z, recoverable from 2026-11-23T02:00:00Z (seq 17), archived up to seq 4711"),
            "{out}"
        );
    }

    #[test]
    fn status_shows_the_write_quorum() {
        let mut sc = sc();
        let cond = |status: &str, reason: &str, message: &str| {
            serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>(
                serde_json::json!({"type": "WriteQuorum", "status": status, "reason": reason,
                    "message": message, "lastTransitionTime": "2026-01-01T00:00:00Z"}),
            )
            .unwrap_or_else(|e| panic!("condition: {e}"))
        };
        if let Some(st) = sc.status.as_mut() {
            st.conditions.push(cond(
                "True",
                "WritablePrimary",
                "primary demo-0 accepts writes",
            ));
        }
        let out = render_status(&sc);
        assert!(out.contains("WriteQuorum:  OK\n"), "{out}");
        let msg = "primary demo-0 needs 2 connected replica(s) for sync writes, 1 connected; not connected: demo-arbiter-0 (for 12s)";
        if let Some(st) = sc.status.as_mut() {
            st.conditions.pop();
            st.conditions.push(cond("False", "QuorumUnavailable", msg));
        }
        let out = render_status(&sc);
        assert!(
            out.contains(&format!(
                "WriteQuorum:  NO WRITES (QuorumUnavailable): {msg}"
            )),
            "{out}"
        );
        assert!(out.contains("IN-QUORUM"), "{out}");
    }

    #[test]
    fn promote_refuses_what_the_operator_would() {
        let sc = sc();
        assert!(check_promote(&sc, "demo-1").is_ok());
        assert!(check_promote(&sc, "demo-0").is_err_and(|e| e.contains("already the primary")));
        assert!(check_promote(&sc, "demo-2").is_err_and(|e| e.contains("not ready")));
        assert!(check_promote(&sc, "demo-arbiter-0").is_err_and(|e| e.contains("arbiter")));
        assert!(check_promote(&sc, "demo-7").is_err_and(|e| e.contains("not a member")));
    }

    #[test]
    fn logs_merge_by_timestamp_and_keep_plain_lines_with_their_pod() {
        let a = "{\"timestamp\":\"2026-11-30T08:00:01.5Z\",\"message\":\"a1\"}\n\
                 thread panicked\n\
                 {\"timestamp\":\"2026-11-30T08:00:03Z\",\"message\":\"a2\"}";
        let b = "{\"timestamp\":\"2026-11-30T08:00:02.25Z\",\"message\":\"b1\"}\n\
                 {\"timestamp\":\"2026-11-30T08:00:00.1Z\",\"message\":\"b0\"}";
        let merged = merge_logs(&[("p-0".into(), a.into()), ("p-1".into(), b.into())]);
        let order: Vec<String> = merged
            .iter()
            .map(|l| {
                let (pod, rest) = l.split_once(' ').unwrap_or_default();
                let msg = serde_json::from_str::<serde_json::Value>(rest)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(String::from))
                    .unwrap_or_else(|| rest.to_string());
                format!("{pod}:{msg}")
            })
            .collect();
        assert_eq!(
            order,
            [
                "p-1:b0",
                "p-0:a1",
                "p-0:thread panicked",
                "p-1:b1",
                "p-0:a2"
            ]
        );
    }
}
