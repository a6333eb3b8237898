//! Pure builders: every object the operator owns, derived from a StudioCluster.
//!
//! Nothing here talks to the API server; the reconciler applies what these return
//! (server-side apply, field manager `studio-operator`). Unit-tested from YAML fixtures
//! in `operator/tests/fixtures/`.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm,
    PodAntiAffinity, PodSpec, PodTemplateSpec, ResourceRequirements, Secret, Service,
    ServiceAccount, ServicePort, ServiceSpec, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use studio_crds::{StudioCluster, annotations, components, labels, names, roles, secret_keys};

use crate::error::Error;

pub mod backup;
pub mod certificates;
mod container;
pub mod network_policy;

pub use self::container::{TLS_DIR, node_env};
use self::container::{container, pod_volumes};

/// Port every node listens on (content, cluster status, probes, metrics; without TLS
/// also the internal routes).
pub const HTTP_PORT: i32 = 8080;
/// With spec.tls: the port of the internal routes (members and the operator only, see
/// `network_policy`); the members advertise it to each other.
pub const INTERNAL_PORT: i32 = 8081;
/// Where the PVC is mounted in the container.
pub const DATA_DIR: &str = "/var/lib/studio";
/// Name of the container in every Studio pod.
pub const CONTAINER: &str = "studio";
/// Name of the volume claim template.
pub const DATA_VOLUME: &str = "data";
/// Scratch space (the root filesystem is read-only).
pub const TMP_VOLUME: &str = "tmp";

/// Every object owned by one StudioCluster, ready to be applied.
#[derive(Debug, Clone)]
pub struct Owned {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub services: Vec<Service>,
    pub statefulset: StatefulSet,
    pub arbiter: Option<StatefulSet>,
    pub pdb: PodDisruptionBudget,
}

/// Identity of the cluster the objects are built for.
struct Meta<'a> {
    name: &'a str,
    namespace: &'a str,
    owner: OwnerReference,
}

fn meta_of(sc: &StudioCluster) -> Result<Meta<'_>, Error> {
    let name = sc
        .metadata
        .name
        .as_deref()
        .ok_or(Error::MissingField("metadata.name"))?;
    let namespace = sc
        .metadata
        .namespace
        .as_deref()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let owner = sc
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;
    Ok(Meta {
        name,
        namespace,
        owner,
    })
}

/// Labels on every object of the cluster.
pub fn common_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::CLUSTER.to_string(), cluster.to_string()),
        (
            labels::APP_NAME.to_string(),
            labels::APP_NAME_VALUE.to_string(),
        ),
        (labels::APP_INSTANCE.to_string(), cluster.to_string()),
        (
            labels::APP_MANAGED_BY.to_string(),
            labels::MANAGED_BY_VALUE.to_string(),
        ),
    ])
}

/// The (immutable) selector of a StatefulSet's pods.
pub fn selector_labels(cluster: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::CLUSTER.to_string(), cluster.to_string()),
        (labels::COMPONENT.to_string(), component.to_string()),
    ])
}

fn object_meta(m: &Meta<'_>, name: String, extra: BTreeMap<String, String>) -> ObjectMeta {
    let mut l = common_labels(m.name);
    l.extend(extra);
    ObjectMeta {
        name: Some(name),
        namespace: Some(m.namespace.to_string()),
        labels: Some(l),
        owner_references: Some(vec![m.owner.clone()]),
        ..Default::default()
    }
}

/// Builds every owned object except the Secret. `data_replicas` is the replica count
/// the data StatefulSet should have now (the planner may hold a scale-down until the
/// primary has been switched away from the pods being removed).
///
/// With `spec.bootstrap.recovery` only a `clusterId` source can be built from the spec
/// alone; a `cluster` or `backup` source must be resolved first (see
/// [`build_owned_with`]), so this refuses rather than build data nodes that would
/// bootstrap an empty cluster.
pub fn build_owned(sc: &StudioCluster, data_replicas: i32) -> Result<Owned, Error> {
    let restore = match sc.spec.bootstrap.as_ref().and_then(|b| b.recovery.as_ref()) {
        None => vec![],
        Some(r) => {
            let name = sc.metadata.name.as_deref().unwrap_or_default();
            match backup::resolve_recovery(name, r, None, None) {
                Ok(resolved) if r.cluster_id.is_some() => backup::restore_env(r, &resolved),
                Ok(_) => {
                    return Err(Error::Waiting(
                        "spec.bootstrap.recovery: the source is not resolved".into(),
                    ));
                }
                Err(u) => return Err(Error::Waiting(u.message)),
            }
        }
    };
    build_owned_with(sc, data_replicas, &restore)
}

/// [`build_owned`] with the data nodes' restore settings given: `restore` is what
/// [`backup::restore_env`] built from the resolved `spec.bootstrap.recovery`, or what
/// the existing data StatefulSet carries ([`backup::pinned_restore_env`]); empty
/// without recovery. The arbiter never bootstraps a cluster and gets none.
pub fn build_owned_with(
    sc: &StudioCluster,
    data_replicas: i32,
    restore: &[EnvVar],
) -> Result<Owned, Error> {
    let m = meta_of(sc)?;
    let arbiter = if sc.spec.arbiter.enabled {
        Some(arbiter_statefulset(sc, &m))
    } else {
        None
    };
    Ok(Owned {
        service_account: service_account(&m),
        role: role(&m),
        role_binding: role_binding(&m),
        services: vec![
            nodes_service(&m),
            role_service(&m, names::primary_service(m.name), roles::PRIMARY),
            role_service(&m, names::replicas_service(m.name), roles::REPLICA),
        ],
        statefulset: data_statefulset(sc, &m, data_replicas, restore),
        arbiter,
        pdb: pdb(&m),
    })
}

fn service_account(m: &Meta<'_>) -> ServiceAccount {
    ServiceAccount {
        metadata: object_meta(m, names::service_account(m.name), BTreeMap::new()),
        automount_service_account_token: Some(true),
        ..Default::default()
    }
}

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// What a node needs: peers and its own role label (pods), the election Lease, and the
/// bootstrap record (a ConfigMap created atomically by the first node), and the
/// StatefulSets' sizes. Mirrors examples/node-rbac.yaml (the node engineer's list).
fn role(m: &Meta<'_>) -> Role {
    Role {
        metadata: object_meta(m, names::service_account(m.name), BTreeMap::new()),
        rules: Some(vec![
            rule("", &["pods"], &["get", "list", "watch", "patch"]),
            rule(
                "coordination.k8s.io",
                &["leases"],
                &["get", "list", "watch", "create", "update"],
            ),
            rule("", &["configmaps"], &["get", "create"]),
            // The number of journal-holding members (failover quorum) comes from the
            // StatefulSets' replicas.
            rule("apps", &["statefulsets"], &["get"]),
        ]),
    }
}

fn role_binding(m: &Meta<'_>) -> RoleBinding {
    RoleBinding {
        metadata: object_meta(m, names::service_account(m.name), BTreeMap::new()),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: names::service_account(m.name),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: names::service_account(m.name),
            namespace: Some(m.namespace.to_string()),
            ..Default::default()
        }]),
    }
}

fn http_port() -> ServicePort {
    ServicePort {
        name: Some("http".into()),
        port: HTTP_PORT,
        target_port: Some(IntOrString::String("http".into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// Headless Service governing both StatefulSets; lists not-ready pods too so that
/// joining nodes resolve each other.
fn nodes_service(m: &Meta<'_>) -> Service {
    Service {
        metadata: object_meta(m, names::nodes_service(m.name), BTreeMap::new()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(BTreeMap::from([(
                labels::CLUSTER.to_string(),
                m.name.to_string(),
            )])),
            ports: Some(vec![http_port()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `-primary` / `-replicas`: select the role label the nodes flip.
fn role_service(m: &Meta<'_>, name: String, role: &str) -> Service {
    Service {
        metadata: object_meta(m, name, BTreeMap::new()),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(BTreeMap::from([
                (labels::CLUSTER.to_string(), m.name.to_string()),
                (labels::ROLE.to_string(), role.to_string()),
            ])),
            ports: Some(vec![http_port()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pdb(m: &Meta<'_>) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: object_meta(m, names::pdb(m.name), BTreeMap::new()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    labels::CLUSTER.to_string(),
                    m.name.to_string(),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Name of the Secret the nodes read their credentials from.
pub fn secret_name(sc: &StudioCluster) -> String {
    match sc
        .spec
        .auth
        .as_ref()
        .and_then(|a| a.existing_secret.clone())
    {
        Some(s) => s,
        None => names::secret(sc.metadata.name.as_deref().unwrap_or_default()),
    }
}

/// Default scheduling: spread the cluster's pods across nodes when possible.
pub fn default_affinity(cluster: &str) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(LabelSelector {
                            match_labels: Some(BTreeMap::from([(
                                labels::CLUSTER.to_string(),
                                cluster.to_string(),
                            )])),
                            ..Default::default()
                        }),
                        topology_key: "kubernetes.io/hostname".into(),
                        ..Default::default()
                    },
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod_template(
    sc: &StudioCluster,
    m: &Meta<'_>,
    component: &str,
    arbiter: bool,
    resources: Option<ResourceRequirements>,
    restore: &[EnvVar],
) -> PodTemplateSpec {
    let overrides = sc.spec.pod.clone().unwrap_or_default();
    // User labels first: the operator's own labels win on conflict.
    let mut pod_labels = overrides.labels.clone();
    pod_labels.extend(common_labels(m.name));
    pod_labels.extend(selector_labels(m.name, component));
    pod_labels.insert(labels::APP_COMPONENT.into(), component.into());
    if sc.tls().is_some() {
        pod_labels.insert(labels::TLS.into(), "true".into());
    }
    if arbiter {
        pod_labels.insert(labels::ROLE.into(), roles::ARBITER.into());
    } else {
        // The data nodes own their role label (they flip it on election); never set it
        // in the template.
        pod_labels.remove(labels::ROLE);
    }
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: if overrides.annotations.is_empty() {
                None
            } else {
                Some(overrides.annotations.clone())
            },
            ..Default::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(names::service_account(m.name)),
            automount_service_account_token: Some(true),
            termination_grace_period_seconds: Some(30),
            containers: vec![container(sc, m.name, arbiter, resources, restore)],
            volumes: Some(pod_volumes(sc, m.name)),
            affinity: Some(
                overrides
                    .affinity
                    .clone()
                    .unwrap_or_else(|| default_affinity(m.name)),
            ),
            tolerations: if overrides.tolerations.is_empty() {
                None
            } else {
                Some(overrides.tolerations.clone())
            },
            node_selector: if overrides.node_selector.is_empty() {
                None
            } else {
                Some(overrides.node_selector.clone())
            },
            security_context: Some(k8s_openapi::api::core::v1::PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(65532),
                run_as_group: Some(65532),
                fs_group: Some(65532),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn volume_claim(sc: &StudioCluster) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: sc.spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(sc.spec.storage.size.clone()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn statefulset(
    sc: &StudioCluster,
    m: &Meta<'_>,
    name: String,
    component: &str,
    replicas: i32,
    template: PodTemplateSpec,
) -> StatefulSet {
    let retention = sc.spec.storage.pvc_retention.as_str().to_string();
    StatefulSet {
        metadata: object_meta(
            m,
            name,
            BTreeMap::from([(labels::COMPONENT.to_string(), component.to_string())]),
        ),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(names::nodes_service(m.name)),
            selector: LabelSelector {
                match_labels: Some(selector_labels(m.name, component)),
                ..Default::default()
            },
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                ..Default::default()
            }),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(retention.clone()),
                    when_scaled: Some(retention),
                },
            ),
            template,
            volume_claim_templates: Some(vec![volume_claim(sc)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn data_statefulset(
    sc: &StudioCluster,
    m: &Meta<'_>,
    replicas: i32,
    restore: &[EnvVar],
) -> StatefulSet {
    let template = pod_template(
        sc,
        m,
        components::DATA,
        false,
        sc.spec.resources.clone(),
        restore,
    );
    statefulset(
        sc,
        m,
        names::statefulset(m.name),
        components::DATA,
        replicas,
        template,
    )
}

fn arbiter_statefulset(sc: &StudioCluster, m: &Meta<'_>) -> StatefulSet {
    let resources = sc
        .spec
        .arbiter
        .resources
        .clone()
        .or_else(|| sc.spec.resources.clone());
    let template = pod_template(sc, m, components::ARBITER, true, resources, &[]);
    statefulset(
        sc,
        m,
        names::arbiter_statefulset(m.name),
        components::ARBITER,
        1,
        template,
    )
}

/// The generated credentials Secret. `random` supplies the bytes (32 for the JWT key, 32
/// for the cluster token); the reconciler creates it only when it does not exist, so the
/// credentials are generated once and never rotated by accident.
pub fn build_secret(sc: &StudioCluster, random: &[u8; 64]) -> Result<Secret, Error> {
    let m = meta_of(sc)?;
    let mut meta = object_meta(&m, names::secret(m.name), BTreeMap::new());
    meta.annotations = Some(BTreeMap::from([(
        annotations::GENERATED.to_string(),
        "true".to_string(),
    )]));
    Ok(Secret {
        metadata: meta,
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (
                secret_keys::JWT_KEY.to_string(),
                ByteString(hex::encode(&random[..32]).into_bytes()),
            ),
            (
                secret_keys::CLUSTER_TOKEN.to_string(),
                ByteString(hex::encode(&random[32..]).into_bytes()),
            ),
        ])),
        ..Default::default()
    })
}

/// A Secret of the cluster's TLS material (`kind`: the CA or the members' certificate),
/// owned by the StudioCluster, with the certificate's expiry in an annotation.
pub fn build_tls_secret(
    sc: &StudioCluster,
    name: String,
    type_: &str,
    data: BTreeMap<String, String>,
    not_after: &str,
) -> Result<Secret, Error> {
    let m = meta_of(sc)?;
    let mut meta = object_meta(&m, name, BTreeMap::new());
    meta.annotations = Some(BTreeMap::from([(
        annotations::NOT_AFTER.to_string(),
        not_after.to_string(),
    )]));
    Ok(Secret {
        metadata: meta,
        type_: Some(type_.into()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    })
}
