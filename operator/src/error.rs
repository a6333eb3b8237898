//! The operator's one error type.

use std::time::Duration;

/// Everything a reconcile can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),

    #[error("finalizer error: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),

    #[error("object has no {0}")]
    MissingField(&'static str),

    #[error("invalid spec: {0}")]
    InvalidSpec(String),

    #[error("node {node} answered {status}: {message}")]
    NodeApi {
        node: String,
        status: u16,
        message: String,
    },

    #[error("cannot reach node {node}: {source}")]
    NodeUnreachable {
        node: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("secret {0} lacks key {1}")]
    SecretKey(String, &'static str),

    #[error("random source failed: {0}")]
    Random(String),

    #[error("serialization error: {0}")]
    Json(#[from] serde_json::Error),

    #[error("internal state lock poisoned")]
    Poisoned,
}

impl Error {
    /// A short machine-readable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::MissingField(_) => "missing_field",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::NodeApi { .. } => "node_api",
            Error::NodeUnreachable { .. } => "node_unreachable",
            Error::SecretKey(..) => "secret_key",
            Error::Random(_) => "random",
            Error::Json(_) => "json",
            Error::Poisoned => "poisoned",
        }
    }

    /// How long to wait before retrying after this error.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = match self {
            // A spec the user must fix: retry slowly (a spec change triggers a reconcile anyway).
            Error::InvalidSpec(_) | Error::SecretKey(..) => 60,
            _ => 1,
        };
        let exp = 2u64.saturating_pow(attempt.min(6));
        Duration::from_secs((base * exp).min(300))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
