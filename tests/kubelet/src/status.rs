//! Run-time container/pod state and the pure mapping to `PodStatus`.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

#[derive(Debug, Clone, PartialEq)]
pub struct Terminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    pub container_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: DateTime<Utc>,
    },
    Terminated(Terminated),
}

/// What the kubelet knows about one container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerRt {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub state: RunState,
    pub last_state: Option<Terminated>,
    pub restart_count: i32,
    pub ready: bool,
    pub started: bool,
    pub container_id: Option<String>,
    /// No further restarts will happen (terminated for good).
    pub done: bool,
}

impl ContainerRt {
    pub fn new(name: &str, image: &str) -> Self {
        ContainerRt {
            name: name.to_string(),
            image: image.to_string(),
            image_id: String::new(),
            state: RunState::Waiting {
                reason: "ContainerCreating".to_string(),
                message: None,
            },
            last_state: None,
            restart_count: 0,
            ready: false,
            started: false,
            container_id: None,
            done: false,
        }
    }

    fn has_run(&self) -> bool {
        !matches!(self.state, RunState::Waiting { .. }) || self.last_state.is_some()
    }
}

/// What the kubelet knows about one pod.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodRt {
    pub init: Vec<ContainerRt>,
    pub main: Vec<ContainerRt>,
    pub pod_ip: Option<Ipv4Addr>,
    pub host_ip: Option<Ipv4Addr>,
    pub start_time: Option<DateTime<Utc>>,
    pub init_done: bool,
}

/// Remembers when each condition last changed, so transitions carry honest times.
#[derive(Debug, Default, Clone)]
pub struct ConditionClock {
    seen: HashMap<String, (String, DateTime<Utc>)>,
}

impl ConditionClock {
    /// Seeds from an existing status (e.g. after a kubelet restart).
    pub fn seed(&mut self, status: Option<&PodStatus>) {
        for c in status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
        {
            if let Some(t) = &c.last_transition_time {
                self.seen
                    .insert(c.type_.clone(), (c.status.clone(), from_k8s(t.0)));
            }
        }
    }

    fn stamp(&mut self, type_: &str, status: &str, now: DateTime<Utc>) -> DateTime<Utc> {
        match self.seen.get(type_) {
            Some((s, t)) if s == status => *t,
            _ => {
                self.seen
                    .insert(type_.to_string(), (status.to_string(), now));
                now
            }
        }
    }
}

/// Pod phase from container states (restartPolicy semantics of the real kubelet).
pub fn phase(rt: &PodRt, restart_policy: &str) -> &'static str {
    if !rt.init_done {
        let failed_init = rt
            .init
            .iter()
            .any(|c| c.done && matches!(&c.state, RunState::Terminated(t) if t.exit_code != 0));
        return if failed_init && restart_policy == "Never" {
            "Failed"
        } else {
            "Pending"
        };
    }
    if rt.main.is_empty() {
        return "Pending";
    }
    let never_started = rt.main.iter().any(|c| !c.has_run());
    let all_done = rt.main.iter().all(|c| c.done);
    if all_done {
        let all_ok = rt
            .main
            .iter()
            .all(|c| matches!(&c.state, RunState::Terminated(t) if t.exit_code == 0));
        return if all_ok { "Succeeded" } else { "Failed" };
    }
    // Running, restarting, or some created while others still start (real kubelet:
    // Pending until every container has been created at least once).
    if never_started { "Pending" } else { "Running" }
}

fn time(t: DateTime<Utc>) -> Time {
    Time(to_k8s(t))
}

/// chrono → the Timestamp type k8s-openapi uses.
pub fn to_k8s(t: DateTime<Utc>) -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::new(t.timestamp(), t.timestamp_subsec_nanos() as i32)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}

/// The Timestamp type k8s-openapi uses → chrono.
pub fn from_k8s(t: k8s_openapi::jiff::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().max(0) as u32).unwrap_or_default()
}

fn term_state(t: &Terminated) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: Some(t.reason.clone()),
        message: t.message.clone(),
        started_at: t.started_at.map(time),
        finished_at: Some(time(t.finished_at)),
        container_id: t.container_id.clone(),
    }
}

fn container_status(c: &ContainerRt) -> ContainerStatus {
    let state = match &c.state {
        RunState::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..Default::default()
        },
        RunState::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(time(*started_at)),
            }),
            ..Default::default()
        },
        RunState::Terminated(t) => ContainerState {
            terminated: Some(term_state(t)),
            ..Default::default()
        },
    };
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: c.image_id.clone(),
        container_id: c.container_id.clone(),
        ready: c.ready,
        started: Some(c.started),
        restart_count: c.restart_count,
        state: Some(state),
        last_state: Some(
            c.last_state
                .as_ref()
                .map(|t| ContainerState {
                    terminated: Some(term_state(t)),
                    ..Default::default()
                })
                .unwrap_or_default(),
        ),
        ..Default::default()
    }
}

/// Builds the status the kubelet reports for `pod`.
pub fn build_status(
    pod: &Pod,
    rt: &PodRt,
    clock: &mut ConditionClock,
    now: DateTime<Utc>,
) -> PodStatus {
    let restart_policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".to_string());
    let phase = phase(rt, &restart_policy);
    let all_ready = !rt.main.is_empty() && rt.main.iter().all(|c| c.ready);
    // A pod that has completed is not ready (matches the real kubelet: reason PodCompleted).
    let terminal = phase == "Succeeded" || phase == "Failed";
    let containers_ready = all_ready && !terminal;
    let not_ready: Vec<&str> = rt
        .main
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();

    let scheduled = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled").cloned())
        .unwrap_or(PodCondition {
            type_: "PodScheduled".to_string(),
            status: "True".to_string(),
            last_transition_time: Some(time(now)),
            ..Default::default()
        });
    let mut cond = |type_: &str, ok: bool, reason: Option<String>, message: Option<String>| {
        let status = if ok { "True" } else { "False" };
        PodCondition {
            type_: type_.to_string(),
            status: status.to_string(),
            last_transition_time: Some(time(clock.stamp(type_, status, now))),
            reason: if ok { None } else { reason },
            message: if ok { None } else { message },
            ..Default::default()
        }
    };
    let init_pending: Vec<&str> = rt
        .init
        .iter()
        .filter(|c| !matches!(&c.state, RunState::Terminated(t) if t.exit_code == 0))
        .map(|c| c.name.as_str())
        .collect();
    let (cr_reason, cr_msg) = if terminal {
        (Some("PodCompleted".to_string()), None)
    } else {
        (
            Some("ContainersNotReady".to_string()),
            Some(format!(
                "containers with unready status: [{}]",
                not_ready.join(" ")
            )),
        )
    };
    let conditions = vec![
        scheduled,
        cond(
            "Initialized",
            rt.init_done,
            Some("ContainersNotInitialized".to_string()),
            Some(format!(
                "containers with incomplete status: [{}]",
                init_pending.join(" ")
            )),
        ),
        cond(
            "ContainersReady",
            containers_ready,
            cr_reason.clone(),
            cr_msg.clone(),
        ),
        cond("Ready", containers_ready, cr_reason, cr_msg),
    ];

    let pod_ip = rt.pod_ip.map(|ip| ip.to_string());
    let host_ip = rt.host_ip.map(|ip| ip.to_string());
    PodStatus {
        observed_generation: pod.metadata.generation,
        phase: Some(phase.to_string()),
        conditions: Some(conditions),
        pod_ip: pod_ip.clone(),
        pod_ips: pod_ip.map(|ip| vec![PodIP { ip }]),
        host_ip: host_ip.clone(),
        host_ips: host_ip.map(|ip| vec![HostIP { ip }]),
        start_time: rt.start_time.map(time),
        init_container_statuses: if rt.init.is_empty() {
            None
        } else {
            Some(rt.init.iter().map(container_status).collect())
        },
        container_statuses: Some(rt.main.iter().map(container_status).collect()),
        ..Default::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(policy: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "n", "uid": "u"},
            "spec": {"restartPolicy": policy, "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"conditions": [{"type": "PodScheduled", "status": "True",
                                        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap()
    }

    fn term(code: i32) -> RunState {
        RunState::Terminated(Terminated {
            exit_code: code,
            signal: None,
            reason: if code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            },
            message: None,
            started_at: None,
            finished_at: Utc::now(),
            container_id: None,
        })
    }

    fn rt() -> PodRt {
        PodRt {
            init: vec![],
            main: vec![
                ContainerRt::new("a", "img-a"),
                ContainerRt::new("b", "img-b"),
            ],
            pod_ip: Some(Ipv4Addr::new(10, 213, 1, 1)),
            host_ip: Some(Ipv4Addr::new(10, 213, 0, 1)),
            start_time: Some(Utc::now()),
            init_done: true,
        }
    }

    fn cond<'a>(s: &'a PodStatus, t: &str) -> &'a PodCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
    }

    #[test]
    fn pending_then_running_then_ready() {
        let p = pod("Always");
        let mut clock = ConditionClock::default();
        let mut r = rt();
        let t0 = Utc::now();
        let s = build_status(&p, &r, &mut clock, t0);
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(cond(&s, "PodScheduled").status, "True");
        assert_eq!(s.pod_ip.as_deref(), Some("10.213.1.1"));
        assert_eq!(s.pod_ips.as_ref().unwrap()[0].ip, "10.213.1.1");
        assert_eq!(s.host_ip.as_deref(), Some("10.213.0.1"));

        for c in &mut r.main {
            c.state = RunState::Running { started_at: t0 };
            c.started = true;
        }
        r.main[0].ready = true;
        let s = build_status(&p, &r, &mut clock, t0 + chrono::Duration::seconds(1));
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let ready = cond(&s, "Ready");
        assert_eq!(ready.status, "False");
        assert!(ready.message.as_ref().unwrap().contains("[b]"));

        r.main[1].ready = true;
        let t2 = t0 + chrono::Duration::seconds(2);
        let s = build_status(&p, &r, &mut clock, t2);
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "ContainersReady").status, "True");
        assert_eq!(
            cond(&s, "Ready")
                .last_transition_time
                .as_ref()
                .map(|t| from_k8s(t.0))
                .unwrap(),
            t2
        );
        // Initialized did not change since t0.
        assert_eq!(
            cond(&s, "Initialized")
                .last_transition_time
                .as_ref()
                .map(|t| from_k8s(t.0))
                .unwrap(),
            t0
        );
        let cs = s.container_statuses.unwrap();
        assert_eq!(cs.len(), 2);
        assert!(cs[0].state.as_ref().unwrap().running.is_some());
        assert!(cs[0].ready);
    }

    #[test]
    fn crash_loop_is_running_with_last_state() {
        let p = pod("Always");
        let mut r = rt();
        r.main[0].state = RunState::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: None,
        };
        r.main[0].last_state = match term(2) {
            RunState::Terminated(t) => Some(t),
            _ => None,
        };
        r.main[0].restart_count = 1;
        r.main[1].state = RunState::Running {
            started_at: Utc::now(),
        };
        r.main[1].ready = true;
        let s = build_status(&p, &r, &mut ConditionClock::default(), Utc::now());
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "Ready").status, "False");
        let cs = s.container_statuses.unwrap();
        assert_eq!(cs[0].restart_count, 1);
        assert_eq!(
            cs[0]
                .last_state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            2
        );
        assert_eq!(
            cs[0]
                .state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("CrashLoopBackOff")
        );
    }

    #[test]
    fn terminal_phases() {
        let mut r = rt();
        r.main[0].state = term(0);
        r.main[0].done = true;
        r.main[1].state = term(0);
        r.main[1].done = true;
        assert_eq!(phase(&r, "Never"), "Succeeded");
        r.main[1].state = term(1);
        assert_eq!(phase(&r, "Never"), "Failed");
        r.main[1].done = false;
        r.main[1].state = RunState::Running {
            started_at: Utc::now(),
        };
        assert_eq!(phase(&r, "OnFailure"), "Running");
        let s = build_status(
            &pod("Never"),
            &r,
            &mut ConditionClock::default(),
            Utc::now(),
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));

        let mut r = rt();
        r.init_done = false;
        r.init = vec![ContainerRt::new("i", "img")];
        r.init[0].state = term(3);
        r.init[0].done = true;
        assert_eq!(phase(&r, "Never"), "Failed");
        assert_eq!(phase(&r, "Always"), "Pending");
        let s = build_status(
            &pod("Always"),
            &r,
            &mut ConditionClock::default(),
            Utc::now(),
        );
        assert_eq!(cond(&s, "Initialized").status, "False");
        assert_eq!(s.init_container_statuses.unwrap().len(), 1);
    }
}
