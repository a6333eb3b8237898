//! The `StudioCluster` custom resource (`studio.cms.io/v1alpha1`).

// kube-derive printcolumn(...) repeats `type_ = ...`; clippy reads that as a duplicate.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::status::StudioClusterStatus;

/// Desired state of a Studio content-repository cluster: one primary, `nodes - 1`
/// replicas and an optional arbiter.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "studio.cms.io",
    version = "v1alpha1",
    kind = "StudioCluster",
    plural = "studioclusters",
    singular = "studiocluster",
    namespaced,
    shortname = "stc",
    shortname = "studio",
    category = "studio",
    status = "StudioClusterStatus",
    doc = "A Studio content-repository cluster: one primary, replicas and an optional arbiter, managed by studio-operator.",
    printcolumn(
        name = "Nodes",
        type_ = "integer",
        json_path = ".spec.nodes",
        description = "Desired data nodes"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "The Ready condition"
    ),
    printcolumn(
        name = "Members",
        type_ = "string",
        json_path = ".status.membersReady",
        description = "Members ready / members (data nodes and arbiter)"
    ),
    printcolumn(
        name = "Primary",
        type_ = "string",
        json_path = ".status.currentPrimary",
        description = "Pod holding the primary role"
    ),
    printcolumn(
        name = "Writable",
        type_ = "boolean",
        json_path = ".status.writable",
        description = "Whether a write can succeed now (the WriteQuorum condition)"
    ),
    printcolumn(
        name = "Max-Lag",
        type_ = "integer",
        json_path = ".status.maxLag",
        description = "Journal entries the most lagging member is behind the primary"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.replication) || self.replication.mode != 'sync' || self.replication.syncReplicas <= self.nodes - 1 + ((has(self.arbiter) && self.arbiter.enabled) ? 1 : 0)"
).message("spec.replication.syncReplicas must not exceed the members that can acknowledge a write: nodes - 1, plus 1 when the arbiter is enabled").field_path(".replication.syncReplicas"))]
#[x_kube(validation = Rule::new(
    "!has(self.election) || !has(self.election.priorities) || self.election.priorities.exists(k, self.election.priorities[k] > 0)"
).message("spec.election.priorities must leave at least one data node with a priority above 0").field_path(".election.priorities"))]
#[x_kube(validation = Rule::new(
    "(has(self.tls) && self.tls.enabled) == (has(oldSelf.tls) && oldSelf.tls.enabled)"
).message("spec.tls.enabled is chosen when the cluster is created and cannot change (members with and without TLS cannot replicate to each other)").field_path(".tls.enabled"))]
#[x_kube(validation = Rule::new(
    "!has(self.bootstrap) || !has(self.bootstrap.recovery) || has(self.backup)"
).message("spec.bootstrap.recovery reads from spec.backup.objectStore: set spec.backup").field_path(".bootstrap.recovery"))]
#[x_kube(validation = Rule::new(
    "has(self.bootstrap) == has(oldSelf.bootstrap) && (!has(self.bootstrap) || self.bootstrap == oldSelf.bootstrap)"
).message("spec.bootstrap is only read when the cluster is created and cannot change").field_path(".bootstrap"))]
pub struct StudioClusterSpec {
    /// Number of data nodes (primary + replicas).
    #[serde(default = "default_nodes")]
    #[schemars(range(min = 1, max = 32))]
    pub nodes: i32,

    /// Optional arbiter: a witness that replicates and acknowledges writes, serves
    /// snapshots, never serves clients and never becomes primary.
    #[serde(default)]
    pub arbiter: ArbiterSpec,

    /// Container image of studio-node.
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^\S+$"))]
    pub image: String,

    /// Pull policy of the image.
    #[serde(default)]
    pub image_pull_policy: ImagePullPolicy,

    /// Compute resources of each data node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Persistent storage of each data node (and the arbiter).
    #[serde(default)]
    pub storage: StorageSpec,

    /// Replication between the primary and the other members.
    #[serde(default)]
    pub replication: ReplicationSpec,

    /// What a replica does with requests: `CUD` forwards writes to the primary, `ALL`
    /// forwards reads too, `DISABLED` answers 503 with the primary's address.
    #[serde(default)]
    pub coordinator_mode: CoordinatorMode,

    /// Primary election on the `<name>-primary` Lease.
    #[serde(default)]
    pub election: ElectionSpec,

    /// How the operator rolls out changes to the pods.
    #[serde(default)]
    pub upgrades: UpgradeSpec,

    /// Scheduling and metadata overrides for the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodOverrides>,

    /// Credentials of the cluster (JWT signing key, cluster token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,

    /// TLS on every port of the nodes, members authenticated by certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// Continuous archiving and base backups to an S3-compatible object store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<crate::BackupSpec>,

    /// How the cluster gets its first content (default: empty). Only read when the
    /// cluster is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<crate::BootstrapSpec>,

    /// Stop reconciling: the operator leaves every object as it is (status still updated).
    #[serde(default)]
    pub paused: bool,
}

fn default_nodes() -> i32 {
    1
}

/// The optional arbiter.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArbiterSpec {
    /// Run one arbiter pod (`<name>-arbiter-0`).
    #[serde(default)]
    pub enabled: bool,
    /// Compute resources of the arbiter (defaults to the data nodes' resources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ImagePullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl ImagePullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// Storage of each member.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)"
).message("spec.storage.storageClassName is immutable").field_path(".storageClassName"))]
pub struct StorageSpec {
    /// Size of each PersistentVolumeClaim (a Kubernetes quantity, e.g. `10Gi`). Can only grow.
    #[serde(default = "default_storage_size")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("spec.storage.size must be a positive quantity such as 10Gi"))]
    #[x_kube(validation = Rule::new("!isQuantity(oldSelf) || !isQuantity(self) || quantity(self).compareTo(quantity(oldSelf)) >= 0").message("spec.storage.size can only grow"))]
    pub size: String,

    /// StorageClass of the claims (the cluster default when unset). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,

    /// What happens to a node's PersistentVolumeClaim when the node is scaled away or
    /// the StudioCluster is deleted.
    #[serde(default)]
    pub pvc_retention: PvcRetention,
}

fn default_storage_size() -> String {
    "1Gi".to_string()
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
            pvc_retention: PvcRetention::default(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PvcRetention {
    /// Keep the claims (data survives scale-down and deletion of the StudioCluster).
    #[default]
    Retain,
    /// Delete the claims together with their pods / the StudioCluster.
    Delete,
}

impl PvcRetention {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retain => "Retain",
            Self::Delete => "Delete",
        }
    }
}

/// Replication settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationSpec {
    /// `async`: a write is acknowledged after the primary's commit. `sync`: after the
    /// primary and `syncReplicas` other members hold it durably.
    #[serde(default)]
    pub mode: ReplicationMode,
    /// Members (replicas or arbiter) that must hold a write before it is acknowledged in
    /// `sync` mode.
    #[serde(default = "default_sync_replicas")]
    #[schemars(range(min = 1, max = 32))]
    pub sync_replicas: i32,
    /// `sync` mode: a primary that cannot reach `syncReplicas` members for this many
    /// seconds steps down and releases the primary Lease, so members that can form a
    /// quorum elect one of themselves. Default: the Lease duration; 0 = never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub quorum_loss_timeout_seconds: Option<i32>,
    /// `async` mode: a primary with no replica connected for this many seconds stops
    /// accepting writes and releases the primary Lease (its writes would otherwise end
    /// in its quarantine if another member took over). Default: never (0 = never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub isolated_primary_timeout_seconds: Option<i32>,
}

fn default_sync_replicas() -> i32 {
    1
}

impl Default for ReplicationSpec {
    fn default() -> Self {
        Self {
            mode: ReplicationMode::default(),
            sync_replicas: default_sync_replicas(),
            quorum_loss_timeout_seconds: None,
            isolated_primary_timeout_seconds: None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationMode {
    #[default]
    Async,
    Sync,
}

impl ReplicationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Async => "async",
            Self::Sync => "sync",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CoordinatorMode {
    #[default]
    #[serde(rename = "CUD")]
    Cud,
    #[serde(rename = "ALL")]
    All,
    #[serde(rename = "DISABLED")]
    Disabled,
}

impl CoordinatorMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cud => "CUD",
            Self::All => "ALL",
            Self::Disabled => "DISABLED",
        }
    }
}

/// Election of the primary on the `<name>-primary` Lease (client-go semantics).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.renewDeadlineSeconds < self.leaseDurationSeconds").message("spec.election.renewDeadlineSeconds must be less than spec.election.leaseDurationSeconds").field_path(".renewDeadlineSeconds"))]
#[x_kube(validation = Rule::new("double(self.retryPeriodSeconds) * 1.2 < double(self.renewDeadlineSeconds)").message("spec.election.retryPeriodSeconds times 1.2 must be less than spec.election.renewDeadlineSeconds").field_path(".retryPeriodSeconds"))]
#[x_kube(validation = Rule::new("!has(self.priorities) || !has(self.eligiblePattern)").message("spec.election: set either priorities or eligiblePattern, not both").field_path(".eligiblePattern"))]
pub struct ElectionSpec {
    /// How long a primary's Lease lasts without renewal before another node may take it.
    #[serde(default = "default_lease_duration")]
    #[schemars(range(min = 2, max = 300))]
    pub lease_duration_seconds: i32,
    /// The primary turns read-only and steps down if it could not renew for this long.
    #[serde(default = "default_renew_deadline")]
    #[schemars(range(min = 1, max = 299))]
    pub renew_deadline_seconds: i32,
    /// How often the Lease is renewed and candidates retry.
    #[serde(default = "default_retry_period")]
    #[schemars(range(min = 1, max = 120))]
    pub retry_period_seconds: i32,
    /// Election priority per data pod name (`<name>-0` …); higher wins a tie, 0 never
    /// becomes primary. Pods not listed have priority 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 32))]
    #[x_kube(validation = Rule::new("self.all(k, self[k] >= 0 && self[k] <= 1000)").message("spec.election.priorities values must be between 0 and 1000"))]
    #[x_kube(validation = Rule::new("self.all(k, k.size() <= 253)").message("spec.election.priorities keys must be pod names (at most 253 characters)"))]
    pub priorities: Option<BTreeMap<String, i32>>,
    /// Only data pods whose name matches this regular expression may become primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub eligible_pattern: Option<String>,
}

// Defaults match studio-node's own (4 s / 3 s, retry rounded up to whole seconds): a
// crashed primary is replaced at once through proof of death; the Lease duration only
// bounds the wait for a hung one.
fn default_lease_duration() -> i32 {
    4
}
fn default_renew_deadline() -> i32 {
    3
}
fn default_retry_period() -> i32 {
    1
}

impl Default for ElectionSpec {
    fn default() -> Self {
        Self {
            lease_duration_seconds: default_lease_duration(),
            renew_deadline_seconds: default_renew_deadline(),
            retry_period_seconds: default_retry_period(),
            priorities: None,
            eligible_pattern: None,
        }
    }
}

/// How changes to the pods are rolled out.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeSpec {
    /// `unsupervised`: the operator switches the primary over to an upgraded replica and
    /// restarts the old primary. `supervised`: it upgrades the replicas and waits for a
    /// user switchover (`kubectl studio promote`) or the
    /// `studio.cms.io/approve-primary-update: "true"` annotation.
    #[serde(default)]
    pub primary_update_strategy: PrimaryUpdateStrategy,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PrimaryUpdateStrategy {
    #[default]
    Unsupervised,
    Supervised,
}

/// Scheduling and metadata overrides for the pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Replaces the default (preferred anti-affinity across nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Extra pod labels (the operator's own labels win on conflict).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Credentials: the operator generates a Secret `<name>-auth` once unless
/// `existingSecret` names one (which must hold the keys `jwt-key` and `cluster-token`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub existing_secret: Option<String>,
    /// User tokens from an OpenID Connect provider, besides the HS256 key of the
    /// Secret: RS256/ES256 tokens verified against the provider's JWKS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcSpec>,
}

/// An OpenID Connect identity provider whose tokens the nodes accept.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OidcSpec {
    /// The provider's JWKS (e.g. Keycloak:
    /// `https://idp/realms/cms/protocol/openid-connect/certs`); keys are cached five
    /// minutes and fetched again for an unknown key id, so key rotation needs no
    /// restart.
    #[schemars(length(min = 8, max = 2048), regex(pattern = r"^https?://\S+$"))]
    pub jwks_url: String,
    /// Required `iss` of the tokens (recommended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub issuer: Option<String>,
    /// Required member of the tokens' `aud` (recommended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub audience: Option<String>,
    /// Dotted path of the claim holding the role names (`realm_access.roles` for
    /// Keycloak realm roles); default `roles`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[A-Za-z0-9_:-]+(\.[A-Za-z0-9_:-]+)*$")
    )]
    pub roles_claim: Option<String>,
}

/// TLS: the members' certificate (Secret `<name>-tls`: `tls.crt`, `tls.key`, `ca.crt`),
/// renewed `renewBeforeSeconds` before it expires; the nodes re-read it without a
/// restart. Its CA is, by default, one the operator generates per cluster (Secret
/// `<name>-ca`); or the user's (`caSecret`); or cert-manager issues the certificates
/// (`issuerRef`). The certificate is valid for the headless Service's pod names
/// (`*.<name>-nodes.<namespace>.svc`) and the cluster's Services; members reach each
/// other by pod IP and check that the peer's chain leads to the CA in `ca.crt`.
/// Internal routes need a certificate from that CA (members and the operator have one).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.renewBeforeSeconds < self.certificateDurationSeconds").message("spec.tls.renewBeforeSeconds must be less than spec.tls.certificateDurationSeconds").field_path(".renewBeforeSeconds"))]
#[x_kube(validation = Rule::new("!has(self.caSecret) || !has(self.issuerRef)").message("spec.tls: set either caSecret or issuerRef, not both").field_path(".issuerRef"))]
#[x_kube(validation = Rule::new(
    "has(self.caSecret) == has(oldSelf.caSecret) && (!has(self.caSecret) || self.caSecret == oldSelf.caSecret)"
).message("spec.tls.caSecret is chosen when the cluster is created and cannot change (the members must keep trusting the same CA)").field_path(".caSecret"))]
#[x_kube(validation = Rule::new(
    "has(self.issuerRef) == has(oldSelf.issuerRef) && (!has(self.issuerRef) || self.issuerRef == oldSelf.issuerRef)"
).message("spec.tls.issuerRef is chosen when the cluster is created and cannot change (the members must keep trusting the same CA)").field_path(".issuerRef"))]
#[x_kube(validation = Rule::new(
    "!has(self.issuerRef) || (self.certificateDurationSeconds >= 3600 && self.renewBeforeSeconds >= 300)"
).message("spec.tls.issuerRef: cert-manager needs certificateDurationSeconds of at least 3600 and renewBeforeSeconds of at least 300").field_path(".certificateDurationSeconds"))]
pub struct TlsSpec {
    /// Serve TLS only (plain HTTP is refused).
    #[serde(default)]
    pub enabled: bool,
    /// Validity of the members' certificate (default 90 days).
    #[serde(default = "default_certificate_duration")]
    #[schemars(range(min = 120, max = 315_360_000))]
    pub certificate_duration_seconds: i64,
    /// Renew the certificate this long before it expires (default 7 days).
    #[serde(default = "default_renew_before")]
    #[schemars(range(min = 60, max = 315_360_000))]
    pub renew_before_seconds: i64,
    /// Bring your own CA: a Secret in the cluster's namespace holding the CA certificate
    /// (`tls.crt`), its key (`tls.key`, unencrypted PKCS#8 PEM, `BEGIN PRIVATE KEY`:
    /// ECDSA P-256/P-384, Ed25519 or RSA) and optionally the CA's own chain (`ca.crt`).
    /// The operator issues the members' certificate and its own client certificate from
    /// it instead of generating `<name>-ca`, and never writes to this Secret. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub ca_secret: Option<String>,
    /// cert-manager issues the certificates: the operator creates the Certificates
    /// `<name>-members` (Secret `<name>-tls`) and `<name>-operator-client` (Secret
    /// `<name>-operator-client-tls`, its own client identity) with this issuer, which
    /// must sign both with the same CA (a CA, Vault or similar issuer, not SelfSigned).
    /// cert-manager renews them. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
}

/// A cert-manager issuer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// Name of the Issuer (in the cluster's namespace) or ClusterIssuer.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(default)]
    pub kind: IssuerKind,
    /// API group of the issuer.
    #[serde(default = "default_issuer_group")]
    #[schemars(length(min = 1, max = 253))]
    pub group: String,
}

fn default_issuer_group() -> String {
    "cert-manager.io".to_string()
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum IssuerKind {
    #[default]
    Issuer,
    ClusterIssuer,
}

impl IssuerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issuer => "Issuer",
            Self::ClusterIssuer => "ClusterIssuer",
        }
    }
}

fn default_certificate_duration() -> i64 {
    90 * 24 * 3600
}

fn default_renew_before() -> i64 {
    7 * 24 * 3600
}

impl Default for TlsSpec {
    fn default() -> Self {
        TlsSpec {
            enabled: false,
            certificate_duration_seconds: default_certificate_duration(),
            renew_before_seconds: default_renew_before(),
            ca_secret: None,
            issuer_ref: None,
        }
    }
}

impl StudioCluster {
    /// The TLS settings when TLS is on.
    pub fn tls(&self) -> Option<&TlsSpec> {
        self.spec.tls.as_ref().filter(|t| t.enabled)
    }

    /// Whether an arbiter is requested.
    pub fn arbiter_enabled(&self) -> bool {
        self.spec.arbiter.enabled
    }
}

#[cfg(test)]
mod tests;
