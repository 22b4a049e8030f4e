//! Controller-layer errors. Every variant has a stable label used as the failure-metric label and
//! the Event reason, and says whether retrying can help.

use std::time::Duration;

/// Errors a reconcile can end with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed a request.
    #[error("Kubernetes API error: {0}")]
    Kube(#[source] kube::Error),
    /// The object could not be decoded (schema drift or a hand-edited object).
    #[error("object cannot be decoded: {0}")]
    Undecodable(String),
    /// Serializing a child object failed (a bug, not a user error).
    #[error("serialization failed: {0}")]
    Serialization(#[source] serde_json::Error),
    /// A required field is missing on an object the API server returned.
    #[error("object is missing {0}")]
    MissingField(&'static str),
    /// A database statement failed (message holds no credentials).
    #[error("database error: {0}")]
    Database(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Short, stable label for metrics and Event reasons.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeError",
            Error::Undecodable(_) => "Undecodable",
            Error::Serialization(_) => "SerializationFailed",
            Error::MissingField(_) => "MissingField",
            Error::Database(_) => "DatabaseError",
        }
    }

    /// Transient errors are retried with backoff; the others wait for the object to change.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Kube(_) | Error::Database(_))
    }

    /// How long to wait before retrying after `failures` consecutive failures (capped exponential).
    pub fn backoff(failures: u32) -> Duration {
        let secs = 2u64.saturating_pow(failures.min(8)).min(300);
        Duration::from_secs(secs)
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(e)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Serialization(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(Error::backoff(0), Duration::from_secs(1));
        assert_eq!(Error::backoff(3), Duration::from_secs(8));
        assert_eq!(Error::backoff(40), Duration::from_secs(256));
        assert!(Error::backoff(8) <= Duration::from_secs(300));
    }

    #[test]
    fn only_api_errors_are_transient() {
        assert!(!Error::Undecodable("x".into()).is_transient());
    }
}
