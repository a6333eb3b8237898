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

    #[error("TLS: {0}")]
    Tls(String),

    #[error("serialization error: {0}")]
    Json(#[from] serde_json::Error),

    #[error("internal state lock poisoned")]
    Poisoned,

    /// Not a failure: a step must wait for the cluster (e.g. pods to stop) and retry soon.
    #[error("{0}")]
    Waiting(String),
}

impl Error {
    /// The reconciler's own error inside a finalizer wrapper.
    pub fn root(&self) -> &Error {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::Finalizer(f) => match f.as_ref() {
                F::ApplyFailed(e) | F::CleanupFailed(e) => e.root(),
                _ => self,
            },
            _ => self,
        }
    }

    /// A short machine-readable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self.root() {
            Error::Kube(_) => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::MissingField(_) => "missing_field",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::NodeApi { .. } => "node_api",
            Error::NodeUnreachable { .. } => "node_unreachable",
            Error::SecretKey(..) => "secret_key",
            Error::Random(_) => "random",
            Error::Tls(_) => "tls",
            Error::Json(_) => "json",
            Error::Poisoned => "poisoned",
            Error::Waiting(_) => "waiting",
        }
    }

    /// How long to wait before retrying after this error.
    pub fn backoff(&self, attempt: u32) -> Duration {
        if let Error::Waiting(_) = self.root() {
            return Duration::from_secs(1);
        }
        let base = match self.root() {
            // A spec the user must fix: retry slowly (a spec change triggers a reconcile anyway).
            Error::InvalidSpec(_) | Error::SecretKey(..) => 60,
            _ => 1,
        };
        let exp = 2u64.saturating_pow(attempt.min(6));
        Duration::from_secs((base * exp).min(300))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::finalizer::Error as F;

    #[test]
    fn backoff_grows_and_sees_through_the_finalizer_wrapper() {
        let api = Error::MissingField("x");
        assert!(api.backoff(1) < api.backoff(3));
        assert!(api.backoff(100) <= Duration::from_secs(300));
        let waiting = Error::Finalizer(Box::new(F::CleanupFailed(Error::Waiting("pods".into()))));
        assert_eq!(waiting.backoff(9), Duration::from_secs(1));
        assert_eq!(waiting.metric_label(), "waiting");
        let invalid = Error::Finalizer(Box::new(F::ApplyFailed(Error::InvalidSpec("x".into()))));
        assert!(invalid.backoff(1) >= Duration::from_secs(60));
    }
}
