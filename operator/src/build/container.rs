//! The node container of the pods: its environment (every setting the node reads from
//! `STUDIO_*`), probes, mounts and the pod volumes they need.

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, Probe, ResourceRequirements, SecretKeySelector, SecretVolumeSource,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use studio_crds::{ReplicationMode, StudioCluster, names, roles, secret_keys};

use super::{CONTAINER, DATA_DIR, DATA_VOLUME, HTTP_PORT, TMP_VOLUME, secret_name};

pub(super) fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn env_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Environment of a Studio container: identity (downward API), cluster settings from
/// the spec, secrets by reference. The node reads every setting from `STUDIO_*` env.
pub fn node_env(sc: &StudioCluster, cluster: &str, arbiter: bool) -> Vec<EnvVar> {
    let s = &sc.spec;
    let secret = secret_name(sc);
    let mut v = vec![
        env_field("POD_NAME", "metadata.name"),
        env_field("POD_NAMESPACE", "metadata.namespace"),
        env_field("POD_IP", "status.podIP"),
        env("STUDIO_CLUSTER", cluster),
        env("STUDIO_DATA_DIR", DATA_DIR),
        env("STUDIO_REPLICATION_MODE", s.replication.mode.as_str()),
        env(
            "STUDIO_SYNC_REPLICAS",
            if s.replication.mode == ReplicationMode::Sync {
                s.replication.sync_replicas
            } else {
                0
            }
            .max(0)
            .to_string(),
        ),
        env("STUDIO_COORDINATOR_MODE", s.coordinator_mode.as_str()),
        env(
            "STUDIO_LEASE_DURATION",
            format!("{}s", s.election.lease_duration_seconds),
        ),
        env(
            "STUDIO_RENEW_DEADLINE",
            format!("{}s", s.election.renew_deadline_seconds),
        ),
        env(
            "STUDIO_RETRY_PERIOD",
            format!("{}s", s.election.retry_period_seconds),
        ),
        env("STUDIO_LOG_FORMAT", "json"),
        env_secret("STUDIO_JWT_SECRET", &secret, secret_keys::JWT_KEY),
    ];
    // With TLS, members and the operator authenticate by client certificate; the shared
    // token is only for clusters without it.
    if sc.tls().is_none() {
        v.push(env_secret(
            "STUDIO_CLUSTER_TOKEN",
            &secret,
            secret_keys::CLUSTER_TOKEN,
        ));
    }
    if let Some(t) = s.replication.quorum_loss_timeout_seconds {
        v.push(env("STUDIO_QUORUM_LOSS_TIMEOUT", format!("{}s", t.max(0))));
    }
    if let Some(t) = s.replication.isolated_primary_timeout_seconds {
        v.push(env("STUDIO_ISOLATION_TIMEOUT", format!("{}s", t.max(0))));
    }
    if let Some(p) = &s.election.priorities {
        let list: Vec<String> = p.iter().map(|(k, v)| format!("{k}={v}")).collect();
        v.push(env("STUDIO_ELECTION_PRIORITIES", list.join(",")));
    }
    if let Some(p) = &s.election.eligible_pattern {
        v.push(env("STUDIO_ELIGIBLE_PATTERN", p.clone()));
    }
    if arbiter {
        v.push(env("STUDIO_ROLE", roles::ARBITER));
    }
    if sc.tls().is_some() {
        v.push(env("STUDIO_TLS_DIR", TLS_DIR));
        v.push(env(
            "STUDIO_INTERNAL_LISTEN",
            format!("0.0.0.0:{}", super::INTERNAL_PORT),
        ));
    }
    if let Some(o) = s.auth.as_ref().and_then(|a| a.oidc.as_ref()) {
        v.push(env("STUDIO_JWKS_URL", o.jwks_url.clone()));
        if let Some(i) = &o.issuer {
            v.push(env("STUDIO_JWT_ISSUER", i.clone()));
        }
        if let Some(a) = &o.audience {
            v.push(env("STUDIO_JWT_AUDIENCE", a.clone()));
        }
        if let Some(r) = &o.roles_claim {
            v.push(env("STUDIO_JWT_ROLES_CLAIM", r.clone()));
        }
    }
    if let Some(b) = &s.backup {
        v.extend(super::backup::backup_env(b));
    }
    v
}

/// Where the members' certificate Secret is mounted (spec.tls).
pub const TLS_DIR: &str = "/etc/studio/tls";
const TLS_VOLUME: &str = "tls";

fn http_probe(path: &str, period: i32, failures: i32, initial: i32, tls: bool) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(HTTP_PORT),
            scheme: Some(if tls { "HTTPS" } else { "HTTP" }.into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        initial_delay_seconds: Some(initial),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

/// `http`, and with TLS `internal` (the internal routes' own port).
fn container_ports(tls: bool) -> Vec<ContainerPort> {
    let port = |name: &str, n: i32| ContainerPort {
        name: Some(name.into()),
        container_port: n,
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let mut v = vec![port("http", HTTP_PORT)];
    if tls {
        v.push(port("internal", super::INTERNAL_PORT));
    }
    v
}

pub(super) fn container(
    sc: &StudioCluster,
    cluster: &str,
    arbiter: bool,
    resources: Option<ResourceRequirements>,
    restore: &[EnvVar],
) -> Container {
    let tls = sc.tls().is_some();
    let mut mounts = vec![
        VolumeMount {
            name: DATA_VOLUME.into(),
            mount_path: DATA_DIR.into(),
            ..Default::default()
        },
        VolumeMount {
            name: TMP_VOLUME.into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        },
    ];
    if tls {
        mounts.push(VolumeMount {
            name: TLS_VOLUME.into(),
            mount_path: TLS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    mounts.extend(super::backup::backup_ca_mount(sc));
    let mut env = node_env(sc, cluster, arbiter);
    env.extend(restore.iter().cloned());
    Container {
        name: CONTAINER.into(),
        image: Some(sc.spec.image.clone()),
        image_pull_policy: Some(sc.spec.image_pull_policy.as_str().into()),
        args: Some(vec![
            "--data-dir".into(),
            DATA_DIR.into(),
            "--listen".into(),
            format!("0.0.0.0:{HTTP_PORT}"),
        ]),
        env: Some(env),
        ports: Some(container_ports(tls)),
        readiness_probe: Some(http_probe(studio_crds::node_api::READYZ, 2, 3, 1, tls)),
        liveness_probe: Some(http_probe(studio_crds::node_api::HEALTHZ, 10, 3, 10, tls)),
        resources,
        volume_mounts: Some(mounts),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The pod's volumes besides the PVC: /tmp, the members' certificate with TLS, the
/// object store's CA with `spec.backup.objectStore.ca`.
pub(super) fn pod_volumes(sc: &StudioCluster, cluster: &str) -> Vec<Volume> {
    let mut v = vec![Volume {
        name: TMP_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    if sc.tls().is_some() {
        v.push(Volume {
            name: TLS_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names::tls_secret(cluster)),
                // Readable by the pod's fsGroup (the node runs as a non-root user).
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    v.extend(super::backup::backup_ca_volume(sc));
    v
}
