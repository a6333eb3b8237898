//! Prometheus metrics (prometheus-client).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    /// The matched route template (bounded cardinality), or "unmatched".
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

type HistogramFamily = Family<HttpLabels, Histogram, fn() -> Histogram>;

/// Every metric the node exposes on /metrics.
pub struct Metrics {
    pub registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: HistogramFamily,
    /// Last durable journal seq.
    pub journal_seq: Gauge,
    /// Term of the last journal entry.
    pub journal_term: Gauge,
    /// Journal entries written locally as primary.
    pub writes: Counter,
    /// Journal entries applied from a primary (rate = apply rate).
    pub applied: Counter,
    /// Per replica (on the primary) or towards the primary (on a replica): entries behind.
    pub replication_lag_entries: Family<PeerLabels, Gauge>,
    /// Same, in seconds.
    pub replication_lag_seconds: Family<PeerLabels, Gauge<f64, AtomicU64>>,
    /// Entries in quarantine.
    pub quarantined: Gauge,
    /// Sync-mode writes that timed out waiting for their quorum (not acknowledged).
    pub sync_timeouts: Counter,
    /// 1 unless this node is a sync-mode primary that cannot reach its write quorum.
    pub write_quorum_available: Gauge,
    /// Streams this node refused because the primary's term was below one it knows
    /// or promised (a stale primary).
    pub stale_streams_refused: Counter,
    /// Streams and snapshots refused (either side) because the peer's schema revision
    /// is incompatible with this node's.
    pub schema_refused: Counter,
    /// When the certificate the node serves expires (Unix seconds); 0 without TLS.
    pub tls_certificate_expiry: Gauge,
    /// Continuous archiving and base backups.
    pub backup: BackupMetrics,
}

/// Archiving and base backup metrics (timestamps in Unix seconds, 0 = never).
#[derive(Default)]
pub struct BackupMetrics {
    /// 1 while this node archives the journal (the primary, with backups configured).
    pub archiving: Gauge,
    pub archived_seq: Gauge,
    pub archive_lag_entries: Gauge,
    pub archive_lag_seconds: Gauge<f64, AtomicU64>,
    pub archive_last_success: Gauge,
    pub archive_last_failure: Gauge,
    pub archive_failures: Counter,
    pub segments_archived: Counter,
    pub archived_bytes: Counter,
    pub base_last_success: Gauge,
    pub base_last_failure: Gauge,
    pub base_completed: Counter,
    pub base_failed: Counter,
}

impl BackupMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "archive_active",
            "1 while this node archives the journal to the object store",
            self.archiving.clone(),
        );
        r.register(
            "archive_archived_seq",
            "Highest journal seq in the object store archive",
            self.archived_seq.clone(),
        );
        r.register(
            "archive_lag_entries",
            "Journal entries not yet archived",
            self.archive_lag_entries.clone(),
        );
        r.register(
            "archive_lag_seconds",
            "Age of the oldest journal entry not yet archived",
            self.archive_lag_seconds.clone(),
        );
        r.register(
            "archive_last_success_timestamp_seconds",
            "Last successful upload to the archive (Unix time; 0 never)",
            self.archive_last_success.clone(),
        );
        r.register(
            "archive_last_failure_timestamp_seconds",
            "Last failed upload to the archive (Unix time; 0 never)",
            self.archive_last_failure.clone(),
        );
        r.register(
            "archive_failures",
            "Failed archive uploads",
            self.archive_failures.clone(),
        );
        r.register(
            "archive_segments",
            "Journal segments archived",
            self.segments_archived.clone(),
        );
        r.register(
            "archive_bytes",
            "Compressed bytes of journal segments archived",
            self.archived_bytes.clone(),
        );
        r.register(
            "backup_last_success_timestamp_seconds",
            "Last completed base backup taken by this node (Unix time; 0 never)",
            self.base_last_success.clone(),
        );
        r.register(
            "backup_last_failure_timestamp_seconds",
            "Last failed base backup taken by this node (Unix time; 0 never)",
            self.base_last_failure.clone(),
        );
        r.register(
            "backups_completed",
            "Base backups this node completed",
            self.base_completed.clone(),
        );
        r.register(
            "backups_failed",
            "Base backups this node failed",
            self.base_failed.clone(),
        );
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("studio");
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let journal_seq = Gauge::default();
        let journal_term = Gauge::default();
        let writes = Counter::default();
        let applied = Counter::default();
        let replication_lag_entries = Family::<PeerLabels, Gauge>::default();
        let replication_lag_seconds = Family::<PeerLabels, Gauge<f64, AtomicU64>>::default();
        let quarantined = Gauge::default();
        let sync_timeouts = Counter::default();
        let write_quorum_available = Gauge::default();
        write_quorum_available.set(1);
        let stale_streams_refused = Counter::default();
        let schema_refused = Counter::default();
        let tls_certificate_expiry = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests served",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            http_duration.clone(),
        );
        registry.register(
            "journal_seq",
            "Last durable journal sequence number",
            journal_seq.clone(),
        );
        registry.register(
            "journal_term",
            "Term of the last journal entry",
            journal_term.clone(),
        );
        registry.register(
            "journal_writes",
            "Journal entries written as primary",
            writes.clone(),
        );
        registry.register(
            "journal_applied",
            "Journal entries applied from the primary",
            applied.clone(),
        );
        registry.register(
            "replication_lag_entries",
            "Replication lag in journal entries",
            replication_lag_entries.clone(),
        );
        registry.register(
            "replication_lag_seconds",
            "Replication lag in seconds",
            replication_lag_seconds.clone(),
        );
        registry.register(
            "quarantined_entries",
            "Journal entries in quarantine",
            quarantined.clone(),
        );
        registry.register(
            "sync_write_timeouts",
            "Sync writes not acknowledged because the quorum did not answer in time",
            sync_timeouts.clone(),
        );
        registry.register(
            "write_quorum_available",
            "1 unless this node is a sync-mode primary that cannot reach its write quorum",
            write_quorum_available.clone(),
        );
        registry.register(
            "replication_stale_streams_refused",
            "Replication streams refused because the primary's term is stale",
            stale_streams_refused.clone(),
        );
        registry.register(
            "replication_schema_refused",
            "Replication streams and snapshots refused because the peer's schema revision is incompatible",
            schema_refused.clone(),
        );
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the TLS certificate the node serves expires (Unix time; 0 without TLS)",
            tls_certificate_expiry.clone(),
        );
        let backup = BackupMetrics::default();
        backup.register(&mut registry);
        Metrics {
            backup,
            sync_timeouts,
            write_quorum_available,
            stale_streams_refused,
            schema_refused,
            registry,
            http_requests,
            http_duration,
            journal_seq,
            journal_term,
            writes,
            applied,
            replication_lag_entries,
            replication_lag_seconds,
            quarantined,
            tls_certificate_expiry,
        }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
