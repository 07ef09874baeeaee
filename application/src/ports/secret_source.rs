//! [`SecretSource`]: whoever holds the real keys.

use std::time::Duration;

use async_trait::async_trait;
use sidekey_domain::{SecretRef, SecretValue};

/// The secret source failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretSourceError {
    /// The source holds no secret of that name.
    #[error("the secret source has no such secret")]
    NotFound,
    /// The source did not answer within its timeout.
    #[error("the secret source did not answer within {0:?}")]
    Timeout(Duration),
    /// The source answered with a failure. The text is for the log only.
    #[error("the secret source failed: {0}")]
    Failed(String),
    /// The source cannot be asked now (its bus is down, or too many requests are already waiting on
    /// it): a transient condition, worth a retry. The text is for the log only.
    #[error("the secret source is unavailable: {0}")]
    Unavailable(String),
}

/// Whoever holds the real keys: the environment, a directory, a bridge over an event bus.
///
/// # Errors
/// - [`SecretSourceError::NotFound`] MUST mean the source answered and has no such secret (a client
///   error), never that it could not be asked.
/// - Implementations MUST bound the time they take and return [`SecretSourceError::Timeout`] past it.
/// - The error text MUST NOT contain a secret.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait SecretSource: Send + Sync + 'static {
    /// The real key named `secret_ref`, read now (just in time, never cached past this call).
    async fn fetch(&self, secret_ref: &SecretRef) -> Result<SecretValue, SecretSourceError>;

    /// Whether the source can be asked now (for readiness probes).
    async fn ping(&self) -> Result<(), SecretSourceError>;

    /// Where this source looks for the secret named `secret_ref` (an environment variable's name, a
    /// file's path), for an operator reading why it was not found. MUST NOT reveal a secret.
    fn location(&self, secret_ref: &SecretRef) -> Option<String> {
        let _ = secret_ref;
        None
    }
}
