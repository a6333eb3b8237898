//! StudioCluster API types and the names shared by the operator and the node.

pub mod backup;
pub mod cluster;
pub mod node_api;
pub mod status;

pub use backup::*;
pub use cluster::*;
pub use status::*;

/// API group of every Studio resource.
pub const GROUP: &str = "studio.cms.io";
/// Served and stored version of `StudioCluster`.
pub const VERSION: &str = "v1alpha1";
/// The one server-side-apply field manager the operator writes with.
pub const FIELD_MANAGER: &str = "studio-operator";
/// Finalizer the operator puts on every StudioCluster it manages.
pub const FINALIZER: &str = "studio.cms.io/cleanup";

/// Label and annotation names shared by every component.
pub mod labels {
    /// The StudioCluster a pod belongs to.
    pub const CLUSTER: &str = "studio.cms.io/cluster";
    /// The role a node holds: `primary`, `replica` or `arbiter`.
    pub const ROLE: &str = "studio.cms.io/role";
    /// What an object is to its cluster: `data`, `arbiter` (pods), or `nodes` etc.
    pub const COMPONENT: &str = "studio.cms.io/component";
    /// Standard recommended labels.
    pub const APP_NAME: &str = "app.kubernetes.io/name";
    pub const APP_INSTANCE: &str = "app.kubernetes.io/instance";
    pub const APP_COMPONENT: &str = "app.kubernetes.io/component";
    pub const APP_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// `true` on the pods of a cluster with spec.tls: they serve HTTPS only (the chart's
    /// PodMonitor scrapes them with `https` from it).
    pub const TLS: &str = "studio.cms.io/tls";
    /// Label the StatefulSet controller stamps on each pod with its revision.
    pub const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";
    /// Label the StatefulSet controller stamps on each pod with its name.
    pub const STATEFULSET_POD_NAME: &str = "statefulset.kubernetes.io/pod-name";

    /// Value of [`APP_NAME`] on everything Studio runs.
    pub const APP_NAME_VALUE: &str = "studio";
    /// Value of [`APP_MANAGED_BY`] on everything the operator creates.
    pub const MANAGED_BY_VALUE: &str = "studio-operator";
}

/// Values of the [`labels::ROLE`] label.
pub mod roles {
    pub const PRIMARY: &str = "primary";
    pub const REPLICA: &str = "replica";
    pub const ARBITER: &str = "arbiter";
}

/// Values of the [`labels::COMPONENT`] label.
pub mod components {
    /// A data node (a pod of the `<name>` StatefulSet).
    pub const DATA: &str = "data";
    /// The arbiter (a pod of the `<name>-arbiter` StatefulSet).
    pub const ARBITER: &str = "arbiter";
}

/// Annotation names.
pub mod annotations {
    /// On a StudioCluster: ask for a planned switchover to the named pod. The operator
    /// removes it once the switchover is done (or refused, with an Event saying why).
    pub const SWITCHOVER_TO: &str = "studio.cms.io/switchover-to";
    /// On a StudioCluster: the operator records here the pod it last switched to, with the
    /// outcome, so a repeated request is not retried forever.
    pub const LAST_SWITCHOVER: &str = "studio.cms.io/last-switchover";
    /// On a StudioCluster with `primaryUpdateStrategy: supervised`: set to `true` to let
    /// the operator restart the primary during an upgrade (after switching it away).
    pub const APPROVE_PRIMARY_UPDATE: &str = "studio.cms.io/approve-primary-update";
    /// On pods: the journal term the node reports (written by the node, read by tools).
    pub const TERM: &str = "studio.cms.io/term";
    /// On pods: `available` or `unavailable` — whether this node, as a sync primary,
    /// can reach its write quorum (written by the node on every change, so the
    /// operator's pod watch re-reads the cluster's status at once).
    pub const WRITE_QUORUM: &str = "studio.cms.io/write-quorum";
    /// On the Secret: the operator generated it (so it is never regenerated).
    pub const GENERATED: &str = "studio.cms.io/generated";
    /// On the CA and TLS Secrets: when the certificate expires (RFC 3339).
    pub const NOT_AFTER: &str = "studio.cms.io/not-after";
    /// On the data pods' template: hash of the settings that require a restart.
    pub const CONFIG_HASH: &str = "studio.cms.io/config-hash";
}

/// Keys of the cluster Secret (generated, or the user's `spec.auth.existingSecret`).
pub mod secret_keys {
    /// HMAC key the nodes sign and verify client JWTs with.
    pub const JWT_KEY: &str = "jwt-key";
    /// Shared token nodes (and the operator) present on internal/admin calls.
    pub const CLUSTER_TOKEN: &str = "cluster-token";
}

/// Keys of the TLS Secrets (the `kubernetes.io/tls` layout plus the CA).
pub mod tls_keys {
    pub const CERT: &str = "tls.crt";
    pub const KEY: &str = "tls.key";
    pub const CA: &str = "ca.crt";
    /// Only in the CA Secret, never mounted into pods.
    pub const CA_KEY: &str = "ca.key";
}

/// Condition types on `StudioCluster.status.conditions`.
pub mod conditions {
    /// Every node is running, ready and up to date, and there is one primary.
    pub const READY: &str = "Ready";
    /// The operator is moving the cluster towards its spec (creating, scaling, upgrading).
    pub const PROGRESSING: &str = "Progressing";
    /// The cluster serves but with less redundancy than asked (or without a primary).
    pub const DEGRADED: &str = "Degraded";
    /// kstatus: True while the operator works towards the spec (mirrors Progressing),
    /// so Flux/Argo CD/kstatus report InProgress.
    pub const RECONCILING: &str = "Reconciling";
    /// kstatus: True when the operator cannot make progress without a user (invalid
    /// spec), so kstatus reports Failed.
    pub const STALLED: &str = "Stalled";
    /// Whether a write can succeed now: exactly one member reports itself a writable
    /// primary and, in sync mode, it has its write quorum (the replicas it needs are
    /// connected). When False, `Ready` is False too.
    pub const WRITE_QUORUM: &str = "WriteQuorum";
    /// With `spec.backup`: whether the primary archives its journal to the object
    /// store (absent without `spec.backup`).
    pub const CONTINUOUS_ARCHIVING: &str = "ContinuousArchiving";
}

/// Reasons of the [`conditions::CONTINUOUS_ARCHIVING`] condition and the Events
/// emitted when it changes.
pub mod archiving {
    /// True: the primary archives and its last upload succeeded.
    pub const ARCHIVING: &str = "Archiving";
    /// False: uploads fail (the message has the error and since when).
    pub const FAILING: &str = "ArchivingFailing";
    /// False: the archive misses entries (compacted before they were archived).
    pub const GAP: &str = "ArchiveGap";
    /// Unknown: no primary reports its archive status (none yet, not answering, or an
    /// image without backups).
    pub const UNKNOWN: &str = "ArchiveStatusUnknown";
    /// Unknown: the primary reports that it does not archive.
    pub const NOT_ARCHIVING: &str = "NotArchiving";
    /// Normal Event: the condition turned True again after False.
    pub const EVENT_RECOVERED: &str = "ArchivingRecovered";
}

/// Reasons of the conditions (and Events) of a restore at bootstrap
/// (`spec.bootstrap.recovery`).
pub mod restore {
    /// A member restores from the archive (Progressing True, Ready False).
    pub const RESTORING: &str = "Restoring";
    /// A member's restore failed for good (Ready False, Stalled True): re-create the
    /// cluster with another `spec.bootstrap.recovery`.
    pub const FAILED: &str = "RestoreFailed";
    /// Normal Event: the restore finished.
    pub const EVENT_COMPLETED: &str = "RestoreCompleted";
    /// The recovery source cannot be resolved yet (a StudioBackup missing or not
    /// Completed, a source cluster without `status.clusterId`): no pods are created.
    pub const SOURCE_NOT_READY: &str = "RecoverySourceNotReady";
    /// The recovery source can never be used (a failed StudioBackup, the cluster naming
    /// itself): no pods are created.
    pub const SOURCE_UNUSABLE: &str = "RecoverySourceUnusable";
}

/// Reasons of the [`conditions::WRITE_QUORUM`] condition (and of `Ready` when it is
/// False because of it) and the Events emitted when it changes.
pub mod write_quorum {
    /// True: one writable primary; async mode, or its sync quorum is connected.
    pub const WRITABLE: &str = "WritablePrimary";
    /// False: the sync-mode primary has fewer connected replicas than it needs.
    pub const QUORUM_UNAVAILABLE: &str = "QuorumUnavailable";
    /// False: no member reports role primary with `readOnly` false.
    pub const NO_WRITABLE_PRIMARY: &str = "NoWritablePrimary";
    /// False: more than one member claims to be a writable primary (never expected).
    pub const MULTIPLE_PRIMARIES: &str = "MultiplePrimaries";
    /// Reason of `Ready` (and `Degraded`) while WriteQuorum is False.
    pub const READY_REASON: &str = "WriteQuorumUnavailable";
    /// Warning Event: WriteQuorum turned False.
    pub const EVENT_LOST: &str = "WriteQuorumLost";
    /// Normal Event: WriteQuorum turned True again.
    pub const EVENT_RESTORED: &str = "WriteQuorumRestored";
}

/// Names of the objects the operator derives from a StudioCluster's name.
pub mod names {
    /// The data-node StatefulSet (same name as the cluster).
    pub fn statefulset(cluster: &str) -> String {
        cluster.to_string()
    }
    pub fn arbiter_statefulset(cluster: &str) -> String {
        format!("{cluster}-arbiter")
    }
    /// Headless Service governing both StatefulSets.
    pub fn nodes_service(cluster: &str) -> String {
        format!("{cluster}-nodes")
    }
    pub fn primary_service(cluster: &str) -> String {
        format!("{cluster}-primary")
    }
    pub fn replicas_service(cluster: &str) -> String {
        format!("{cluster}-replicas")
    }
    /// The generated Secret (JWT key + cluster token).
    pub fn secret(cluster: &str) -> String {
        format!("{cluster}-auth")
    }
    /// ServiceAccount, Role and RoleBinding of the nodes.
    /// The cluster CA (`ca.crt`, `ca.key`) when TLS is on.
    pub fn ca_secret(cluster: &str) -> String {
        format!("{cluster}-ca")
    }
    /// The members' certificate (`tls.crt`, `tls.key`, `ca.crt`) when TLS is on.
    pub fn tls_secret(cluster: &str) -> String {
        format!("{cluster}-tls")
    }
    /// spec.tls.issuerRef: the cert-manager Certificate of the members (its Secret is
    /// [`tls_secret`]).
    pub fn members_certificate(cluster: &str) -> String {
        format!("{cluster}-members")
    }
    /// spec.tls.issuerRef: the cert-manager Certificate of the operator's client identity.
    pub fn operator_client_certificate(cluster: &str) -> String {
        format!("{cluster}-operator-client")
    }
    /// spec.tls.issuerRef: the Secret cert-manager keeps the operator's client
    /// certificate in.
    pub fn operator_client_secret(cluster: &str) -> String {
        format!("{cluster}-operator-client-tls")
    }
    pub fn service_account(cluster: &str) -> String {
        format!("{cluster}-node")
    }
    pub fn pdb(cluster: &str) -> String {
        cluster.to_string()
    }
    /// The election Lease the nodes hold.
    pub fn primary_lease(cluster: &str) -> String {
        format!("{cluster}-primary")
    }
    /// The bootstrap record (a ConfigMap created atomically by the first node).
    pub fn bootstrap_configmap(cluster: &str) -> String {
        format!("{cluster}-bootstrap")
    }
    /// Pod name of ordinal `i` of the data StatefulSet.
    pub fn data_pod(cluster: &str, ordinal: i32) -> String {
        format!("{cluster}-{ordinal}")
    }
}
