//! Command line and environment configuration (every flag has an env fallback).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Whether the command line (`args` without the program name) is exactly
/// `--version --json` (either order; `-V` too): the machine-readable version an
/// operator reads from an image before rolling it. Checked before [`Config`] is
/// parsed, so no other flag, environment variable or secret is needed.
pub fn version_json_requested<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> bool {
    let is = |a: &S, names: &[&str]| names.iter().any(|n| a.as_ref() == *n);
    args.len() == 2
        && args.iter().any(|a| is(a, &["--version", "-V"]))
        && args.iter().any(|a| is(a, &["--json"]))
}

/// The answer of `--version --json`.
pub fn version_json() -> String {
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "schemaRevision": crate::storage::schema::SCHEMA_REVISION,
        "minCompatibleRevision": crate::storage::schema::MIN_COMPATIBLE_REVISION,
    })
    .to_string()
}

/// Studio content repository node.
///
/// Run a single primary with `--standalone`, a replica with `--follow URL`. Content
/// requests need a bearer JWT (HS256) signed with the JWT secret; internal and admin
/// endpoints (/internal/v1/...) need the cluster token. Both secrets are required
/// unless --insecure-no-auth is given.
///
/// `studio-node --version --json` prints the version and the schema revisions as JSON
/// (`{"version", "schemaRevision", "minCompatibleRevision"}`), needing nothing else.
#[derive(Debug, Clone, Parser)]
#[command(name = "studio-node", version, about, long_about)]
pub struct Config {
    /// Run as a single primary without a cluster (bootstraps an empty data dir).
    #[arg(long, env = "STUDIO_STANDALONE", default_value_t = false)]
    pub standalone: bool,

    /// Directory holding the database (studio.db) and binaries (blobs/).
    #[arg(long, env = "STUDIO_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Address to listen on for HTTP (content, admin, internal, metrics).
    #[arg(long, env = "STUDIO_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// A second address serving every route, internal ones included; with it the
    /// --listen port serves only the public routes (content, cluster status, probes,
    /// metrics), so a NetworkPolicy can admit only members and the operator here.
    /// Members advertise this port to each other.
    #[arg(long, env = "STUDIO_INTERNAL_LISTEN", value_name = "ADDR")]
    pub internal_listen: Option<SocketAddr>,

    /// Base URL of the primary to replicate from (starts the node as a replica).
    #[arg(long, env = "STUDIO_FOLLOW", value_name = "URL")]
    pub follow: Option<String>,

    /// This node's id in the cluster (default: $POD_NAME, else the host name).
    #[arg(long, env = "STUDIO_NODE_ID")]
    pub node_id: Option<String>,

    /// URL other nodes reach this node at (default: http://<listen address>).
    #[arg(long, env = "STUDIO_ADVERTISE_URL", value_name = "URL")]
    pub advertise_url: Option<String>,

    /// Serve TLS (and call other members over TLS, presenting this certificate) from
    /// a directory laid out as a Kubernetes TLS Secret: tls.crt, tls.key and ca.crt
    /// (the cluster CA). The files are re-read when they change. Without it the node
    /// speaks plain HTTP.
    #[arg(long, env = "STUDIO_TLS_DIR", value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,

    /// File holding the HS256 secret that signs user JWTs.
    #[arg(long, env = "STUDIO_JWT_SECRET_FILE", value_name = "FILE")]
    pub jwt_secret_file: Option<PathBuf>,

    /// The HS256 JWT secret itself, used when no --jwt-secret-file is given (prefer the
    /// file or the environment variable: command lines are visible to other users).
    #[arg(long = "jwt-secret", env = "STUDIO_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// JWKS URL of an OpenID Connect identity provider (e.g.
    /// `https://idp/realms/cms/protocol/openid-connect/certs`): user JWTs signed with
    /// its keys (RS256, ES256, ...) are accepted; the keys are cached and fetched again
    /// when a token names one the cache lacks (key rotation needs no restart).
    #[arg(long, env = "STUDIO_JWKS_URL", value_name = "URL")]
    pub jwks_url: Option<String>,

    /// Claim holding the role names, as a dotted path (`realm_access.roles` for
    /// Keycloak).
    #[arg(
        long,
        env = "STUDIO_JWT_ROLES_CLAIM",
        default_value = "roles",
        value_name = "PATH"
    )]
    pub jwt_roles_claim: String,

    /// Required `iss` of user JWTs (not checked when unset).
    #[arg(long, env = "STUDIO_JWT_ISSUER", value_name = "ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` of user JWTs (a token's `aud` must contain it; not checked when
    /// unset).
    #[arg(long, env = "STUDIO_JWT_AUDIENCE", value_name = "AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock skew allowed on `exp` and `nbf` of user JWTs, in seconds.
    #[arg(long = "jwt-leeway", env = "STUDIO_JWT_LEEWAY", value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub jwt_leeway_seconds: u64,

    /// File holding the bearer token for internal/admin endpoints.
    #[arg(long, env = "STUDIO_CLUSTER_TOKEN_FILE", value_name = "FILE")]
    pub cluster_token_file: Option<PathBuf>,

    /// The cluster token itself, used when no --cluster-token-file is given (prefer the
    /// file or the environment variable).
    #[arg(
        long = "cluster-token",
        env = "STUDIO_CLUSTER_TOKEN",
        hide_env_values = true
    )]
    pub cluster_token: Option<String>,

    /// Run without authentication when the JWT secret or the cluster token is missing
    /// (local experiments only). Without this flag a missing secret is a start-up error.
    #[arg(long, env = "STUDIO_INSECURE_NO_AUTH", default_value_t = false)]
    pub insecure_no_auth: bool,

    /// Role to start in (default: primary with --standalone, replica with --follow).
    #[arg(long, env = "STUDIO_ROLE", value_enum)]
    pub role: Option<RoleArg>,

    /// async: acknowledge after the local commit; sync: after --sync-replicas members
    /// also hold the entry durably.
    #[arg(long, env = "STUDIO_REPLICATION_MODE", value_enum, default_value_t = ReplicationMode::Async)]
    pub replication_mode: ReplicationMode,

    /// Write quorum K in sync mode: replicas (arbiter included) that must hold an
    /// entry before the client is answered.
    #[arg(long, env = "STUDIO_SYNC_REPLICAS", default_value_t = 1)]
    pub sync_replicas: u32,

    /// How long a sync write waits for its quorum before failing (e.g. 5s, 500ms).
    #[arg(long, env = "STUDIO_SYNC_TIMEOUT", value_parser = parse_duration, default_value = "5s")]
    pub sync_timeout: Duration,

    /// What a replica does with client requests: CUD forwards writes to the primary,
    /// ALL forwards reads too, DISABLED answers writes with 503 and the primary's address.
    #[arg(long, env = "STUDIO_COORDINATOR_MODE", value_enum, default_value_t = CoordinatorMode::Cud)]
    pub coordinator_mode: CoordinatorMode,

    /// Largest accepted JSON request body, in bytes.
    #[arg(long, env = "STUDIO_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Largest accepted binary upload, in bytes.
    #[arg(long, env = "STUDIO_MAX_BINARY_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_binary_bytes: u64,

    /// Journal entries kept for replicas to catch up from; older ones are compacted
    /// (a replica further behind re-clones).
    #[arg(long, env = "STUDIO_JOURNAL_RETENTION", default_value_t = 100_000)]
    pub journal_retention: u64,

    /// Kubernetes mode (neither --standalone nor --follow): the StudioCluster this node
    /// belongs to. Peers are the pods labelled studio.cms.io/cluster=<name>; the
    /// election runs on the Lease <name>-primary, bootstrap on ConfigMap <name>-bootstrap.
    #[arg(long, env = "STUDIO_CLUSTER")]
    pub cluster: Option<String>,

    /// Kubernetes mode: the pod's namespace (downward API).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,

    /// Kubernetes mode: how long the primary's Lease lasts without a renewal observed
    /// before another node may take it.
    #[arg(long, env = "STUDIO_LEASE_DURATION", value_parser = parse_duration, default_value = "4s")]
    pub lease_duration: Duration,

    /// Kubernetes mode: a primary that could not renew its Lease for this long turns
    /// read-only and steps down (must be below the lease duration).
    #[arg(long, env = "STUDIO_RENEW_DEADLINE", value_parser = parse_duration, default_value = "3s")]
    pub renew_deadline: Duration,

    /// Kubernetes mode: how often the Lease is renewed and candidates retry.
    #[arg(long, env = "STUDIO_RETRY_PERIOD", value_parser = parse_duration, default_value = "500ms")]
    pub retry_period: Duration,

    /// Kubernetes mode: election priority per pod name, `name=prio,...` (default 1; 0
    /// never becomes primary; higher wins a tie).
    #[arg(long, env = "STUDIO_ELECTION_PRIORITIES")]
    pub election_priorities: Option<String>,

    /// Kubernetes mode: only pods whose name matches this regular expression may
    /// become primary.
    #[arg(long, env = "STUDIO_ELIGIBLE_PATTERN")]
    pub eligible_pattern: Option<String>,

    /// Kubernetes mode: members holding the journal (data nodes + arbiter), for the
    /// failover quorum; default: the replicas of the cluster's StatefulSets.
    #[arg(long, env = "STUDIO_MEMBERS")]
    pub members: Option<u32>,

    /// Kubernetes mode, sync replication: a primary that cannot reach its write quorum
    /// for this long steps down and releases the Lease, so members that can form a
    /// quorum elect one of themselves (default: the lease duration; 0 = never).
    #[arg(long, env = "STUDIO_QUORUM_LOSS_TIMEOUT", value_parser = parse_duration)]
    pub quorum_loss_timeout: Option<Duration>,

    /// Kubernetes mode, async replication: a primary with no replica connected for
    /// this long stops taking writes and releases the Lease (default 0 = never: an
    /// isolated async primary keeps writing; what the others do not get ends in its
    /// quarantine after a failover).
    #[arg(long, env = "STUDIO_ISOLATION_TIMEOUT", value_parser = parse_duration, default_value = "0s")]
    pub isolation_timeout: Duration,

    /// Client writes waiting for the group commit before new ones are refused with
    /// 503 and Retry-After (back-pressure instead of unbounded memory).
    #[arg(long, env = "STUDIO_WRITE_QUEUE", default_value_t = 4096)]
    pub write_queue: usize,

    /// Content requests served at once; more are refused with 503 and Retry-After.
    #[arg(long, env = "STUDIO_MAX_CONCURRENT_REQUESTS", default_value_t = 1024)]
    pub max_concurrent_requests: usize,

    /// Backups: continuous journal archiving and base backups to this S3-compatible
    /// object store (the cluster's archive is `<bucket>/<path>/<cluster id>/`).
    #[command(flatten)]
    pub backup: BackupArgs,

    /// Test hook: the named background task fails at start, to check that a dead
    /// task stops the process (tasks: see the "supervising" log line).
    #[arg(long, hide = true)]
    pub fail_task: Option<String>,

    /// Log format.
    #[arg(long, env = "STUDIO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "STUDIO_LOG", default_value = "info")]
    pub log_filter: String,
}

/// Object store and restore settings (see `studio_crds::node_api::backup_env`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BackupArgs {
    /// Bucket to archive into; without it nothing is archived.
    #[arg(long = "backup-bucket", env = "STUDIO_BACKUP_BUCKET")]
    pub bucket: Option<String>,
    /// Object store endpoint URL (unset: AWS S3 of the region).
    #[arg(
        long = "backup-endpoint",
        env = "STUDIO_BACKUP_ENDPOINT",
        value_name = "URL"
    )]
    pub endpoint: Option<String>,
    /// Prefix inside the bucket.
    #[arg(long = "backup-path", env = "STUDIO_BACKUP_PATH", default_value = "")]
    pub path: String,
    #[arg(
        long = "backup-region",
        env = "STUDIO_BACKUP_REGION",
        default_value = "us-east-1"
    )]
    pub region: String,
    #[arg(
        long = "backup-access-key-id",
        env = "STUDIO_BACKUP_ACCESS_KEY_ID",
        hide_env_values = true
    )]
    pub access_key_id: Option<String>,
    #[arg(
        long = "backup-secret-access-key",
        env = "STUDIO_BACKUP_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    pub secret_access_key: Option<String>,
    /// PEM file of CA certificates to trust for the endpoint.
    #[arg(
        long = "backup-ca-file",
        env = "STUDIO_BACKUP_CA_FILE",
        value_name = "FILE"
    )]
    pub ca_file: Option<PathBuf>,
    /// Close and upload a journal segment at least this often (seconds).
    #[arg(long = "archive-timeout", env = "STUDIO_ARCHIVE_TIMEOUT", value_parser = parse_seconds_or_duration, default_value = "5")]
    pub archive_timeout: Duration,
    /// Restore at bootstrap from the archive of this cluster id (same bucket and path).
    #[arg(long = "restore-cluster-id", env = "STUDIO_RESTORE_CLUSTER_ID")]
    pub restore_cluster_id: Option<String>,
    /// Restore from this base backup (default: the newest before the target).
    #[arg(long = "restore-backup-id", env = "STUDIO_RESTORE_BACKUP_ID")]
    pub restore_backup_id: Option<String>,
    /// Restore up to and including this journal seq.
    #[arg(long = "restore-target-seq", env = "STUDIO_RESTORE_TARGET_SEQ")]
    pub restore_target_seq: Option<u64>,
    /// Restore every write made at or before this time (RFC 3339; UTC if no zone).
    #[arg(long = "restore-target-time", env = "STUDIO_RESTORE_TARGET_TIME")]
    pub restore_target_time: Option<String>,
    /// Restore the base backup only.
    #[arg(
        long = "restore-target-immediate",
        env = "STUDIO_RESTORE_TARGET_IMMEDIATE",
        default_value_t = false
    )]
    pub restore_target_immediate: bool,
}

/// `5` (seconds) or a duration such as `500ms`, `5s`, `1m`.
pub fn parse_seconds_or_duration(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<u64>() {
        Ok(n) => Ok(Duration::from_secs(n)),
        Err(_) => parse_duration(s),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Primary,
    Replica,
    Arbiter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReplicationMode {
    Async,
    Sync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CoordinatorMode {
    #[value(name = "CUD", alias = "cud")]
    Cud,
    #[value(name = "ALL", alias = "all")]
    All,
    #[value(name = "DISABLED", alias = "disabled")]
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Parses `500ms`, `5s`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("invalid duration unit in {s:?} (use ms, s or m)")),
    }
}

impl Config {
    /// The node id: flag, else $POD_NAME, else $HOSTNAME / host name, else "studio-node".
    pub fn node_id(&self) -> String {
        if let Some(id) = &self.node_id {
            return id.clone();
        }
        for var in ["POD_NAME", "HOSTNAME"] {
            if let Ok(v) = std::env::var(var)
                && !v.is_empty()
            {
                return v;
            }
        }
        std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "studio-node".to_string())
    }

    /// The URL peers use to reach this node.
    pub fn advertise_url(&self) -> String {
        if let Some(u) = &self.advertise_url {
            return u.trim_end_matches('/').to_string();
        }
        let scheme = self.scheme();
        if let Ok(ip) = std::env::var("POD_IP")
            && !ip.is_empty()
        {
            return format!("{scheme}://{ip}:{}", self.peer_port());
        }
        format!("{scheme}://{}", self.internal_listen.unwrap_or(self.listen))
    }

    /// The port members reach each other on: the internal one when there is one.
    pub fn peer_port(&self) -> u16 {
        self.internal_listen.unwrap_or(self.listen).port()
    }

    /// `https` when the node serves TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls_dir.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Kubernetes mode: neither `--standalone` nor `--follow` (coordination decides).
    pub fn kubernetes_mode(&self) -> bool {
        !self.standalone && self.follow.is_none()
    }

    /// The starting role.
    pub fn initial_role(&self) -> RoleArg {
        match self.role {
            Some(r) => r,
            None if self.follow.is_some() => RoleArg::Replica,
            None => RoleArg::Primary,
        }
    }

    /// Reads a secret from its file (trimmed) or its direct value.
    fn secret(
        file: &Option<PathBuf>,
        value: &Option<String>,
        what: &str,
    ) -> anyhow::Result<Option<Vec<u8>>> {
        if let Some(f) = file {
            let s = std::fs::read_to_string(f)
                .map_err(|e| anyhow::anyhow!("cannot read {what} file {}: {e}", f.display()))?;
            let s = s.trim();
            if s.is_empty() {
                anyhow::bail!("{what} file {} is empty", f.display());
            }
            return Ok(Some(s.as_bytes().to_vec()));
        }
        Ok(value
            .as_ref()
            .map(|v| v.trim().as_bytes().to_vec())
            .filter(|v| !v.is_empty()))
    }

    pub fn jwt_secret(&self) -> anyhow::Result<Option<Vec<u8>>> {
        Self::secret(&self.jwt_secret_file, &self.jwt_secret, "JWT secret")
    }

    pub fn cluster_token(&self) -> anyhow::Result<Option<Vec<u8>>> {
        Self::secret(
            &self.cluster_token_file,
            &self.cluster_token,
            "cluster token",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Config::command().debug_assert();
    }

    #[test]
    fn version_json_is_recognised_in_either_order() {
        assert!(version_json_requested(&["--version", "--json"]));
        assert!(version_json_requested(&["--json", "-V"]));
        assert!(!version_json_requested(&["--version"]));
        assert!(!version_json_requested(&["--json"]));
        assert!(!version_json_requested(&[
            "--version",
            "--json",
            "--standalone"
        ]));
        let v: serde_json::Value = serde_json::from_str(&version_json()).unwrap_or_default();
        assert_eq!(v["schemaRevision"], crate::storage::schema::SCHEMA_REVISION);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5h").is_err());
    }
}
