//! [`CallerVerifier`]: checks the credential of whoever asks for a session (a JWT, a sign-in session).

use std::fmt;
use std::time::SystemTime;

use async_trait::async_trait;

use super::user_directory::{DirectoryError, DirectorySession};

/// What a caller presented. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub enum CallerCredential {
    /// `Authorization: Bearer …`: a JWT, or a raw Better Auth session token.
    Bearer(String),
    /// The value of the `better-auth.session_token` cookie (`token.signature`, URL-encoded).
    SessionCookie(String),
}

impl fmt::Debug for CallerCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Self::SessionCookie(_) => f.write_str("SessionCookie(<redacted>)"),
        }
    }
}

/// What a verified credential says about the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifiedCredential {
    /// A JWT whose signature, issuer, audience and times were checked.
    Jwt {
        /// `sub`.
        subject: String,
        /// `email`, when present.
        email: Option<String>,
    },
    /// A Better Auth session token found unexpired in the directory.
    DirectorySession(DirectorySession),
}

/// Why a credential was refused. Each reason is logged and counted; the client is told only that its
/// credential was refused, with this reason as the detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallerRejection {
    /// No credential at all.
    #[error("no caller credential")]
    Missing,
    /// Not a JWT or session token, or unreadable.
    #[error("the credential is malformed")]
    Malformed,
    /// The signature does not verify.
    #[error("the signature is invalid")]
    BadSignature,
    /// `alg` is none, not allowed, or not the algorithm of the key.
    #[error("the algorithm is not accepted")]
    Algorithm,
    /// No key with that `kid`.
    #[error("the signing key is unknown")]
    UnknownKey,
    /// `exp` is past.
    #[error("the credential has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("the credential is not valid yet")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("the issuer is not accepted")]
    Issuer,
    /// `aud` does not include the configured audience.
    #[error("the audience is not accepted")]
    Audience,
    /// A required claim is missing (`sub`, `exp`, or `email` with a directory).
    #[error("a required claim is missing")]
    MissingClaim,
    /// A session token whose signature is wrong, or that names no unexpired session.
    #[error("the session token is not valid")]
    UnknownSession,
    /// This kind of credential is not accepted by the configuration.
    #[error("this kind of credential is not accepted")]
    NotAccepted,
}

impl CallerRejection {
    /// The reason as a stable label (logs and metrics).
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::Algorithm => "algorithm",
            Self::UnknownKey => "unknown_key",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Issuer => "issuer",
            Self::Audience => "audience",
            Self::MissingClaim => "missing_claim",
            Self::UnknownSession => "unknown_session",
            Self::NotAccepted => "not_accepted",
        }
    }
}

/// A verifier could not decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallerVerifierError {
    /// The credential is refused.
    #[error(transparent)]
    Rejected(#[from] CallerRejection),
    /// A dependency (the identity provider's key set) cannot be reached; the text is for the log.
    #[error("the identity provider is unavailable: {0}")]
    ProviderUnavailable(String),
    /// The directory cannot be reached; the text is for the log.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
}

/// Checks a caller's credential.
///
/// # Errors
/// Implementations MUST refuse what they cannot fully verify ([`CallerRejection`]) and MUST bound the
/// time they take; an unreachable dependency is [`CallerVerifierError::ProviderUnavailable`] or
/// [`CallerVerifierError::Directory`], never an acceptance.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait CallerVerifier: Send + Sync + 'static {
    /// Verifies `credential` at `now`.
    async fn verify(
        &self,
        credential: &CallerCredential,
        now: SystemTime,
    ) -> Result<VerifiedCredential, CallerVerifierError>;
}
