//! Caller authentication: who may create sessions, and for whom.
//!
//! With `auth.mode = jwt`, `POST /v1/sessions` needs a credential from the app's identity provider: a JWT
//! (checked by a [`CallerVerifier`]) or a Better Auth session token. With a [`UserDirectory`], the
//! caller's email must name a user who has an unexpired sign-in session, and the session issued is bound
//! to that sign-in session: it ends when the sign-in session ends (the *cascade*).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use sidekey_domain::Subject;

use crate::ports::Clock;
use crate::sessions::AUDIT_TARGET;

/// The metadata key under which a session keeps the id of the sign-in session it was derived from.
/// Clients may not set keys under the `sidekey:` prefix.
pub const CALLER_SESSION_KEY: &str = "sidekey:caller_session";
/// The prefix of metadata keys reserved for sidekey.
pub const RESERVED_METADATA_PREFIX: &str = "sidekey:";

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

/// A sign-in session in the app's directory (Better Auth's `session` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectorySession {
    /// `session.id`.
    pub id: String,
    /// `session."userId"`.
    pub user_id: String,
    /// `session."expiresAt"`.
    pub expires_at: SystemTime,
}

/// A user in the app's directory (Better Auth's `user` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    /// `user.id`.
    pub id: String,
    /// `user.email`.
    pub email: String,
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
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait CallerVerifier: Send + Sync + 'static {
    /// Verifies `credential` at `now`.
    async fn verify(
        &self,
        credential: &CallerCredential,
        now: SystemTime,
    ) -> Result<VerifiedCredential, CallerVerifierError>;
}

/// The directory cannot be reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// Down, unreachable or too slow; the text is for the log.
    #[error("the user directory is unavailable: {0}")]
    Unavailable(String),
}

/// The app's users and their sign-in sessions (Better Auth's tables).
///
/// # Errors
/// Every method MUST bound its time and answer [`DirectoryError::Unavailable`] past it.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait UserDirectory: Send + Sync + 'static {
    /// The user with this email (compared as Better Auth stores it: lower-cased).
    async fn user_by_email(&self, email: &str) -> Result<Option<DirectoryUser>, DirectoryError>;

    /// The user's sign-in session that lasts longest, among those unexpired at `now`.
    async fn active_session_of(
        &self,
        user_id: &str,
        now: SystemTime,
    ) -> Result<Option<DirectorySession>, DirectoryError>;

    /// The unexpired sign-in session whose token is `token`.
    async fn session_by_token(
        &self,
        token: &str,
        now: SystemTime,
    ) -> Result<Option<DirectorySession>, DirectoryError>;

    /// Whether the sign-in session `id` still exists unexpired at `now`.
    async fn session_is_active(&self, id: &str, now: SystemTime) -> Result<bool, DirectoryError>;

    /// Whether the directory can be asked now (readiness).
    async fn ping(&self) -> Result<(), DirectoryError>;
}

/// An authenticated caller: the subject of the session to issue, and the sign-in session it is bound
/// to, when there is a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedCaller {
    /// The session's subject: the JWT's `sub`, or the directory's user id.
    pub subject: Subject,
    /// The sign-in session the new session must not outlive.
    pub bound_to: Option<DirectorySession>,
}

/// Why a caller may not create sessions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallerAuthError {
    /// The credential was refused (401 `invalid_caller`, or `missing_token` when there was none).
    #[error(transparent)]
    Rejected(#[from] CallerRejection),
    /// The email names no user (404 `user_not_found`).
    #[error("no user has this email")]
    UserNotFound,
    /// The user has no unexpired sign-in session (404 `no_active_session`).
    #[error("the user has no active session")]
    NoActiveSession,
    /// The directory cannot be reached (503 `directory_unavailable`).
    #[error("the user directory is unavailable: {0}")]
    DirectoryUnavailable(String),
    /// The identity provider's keys cannot be fetched (503).
    #[error("the identity provider is unavailable: {0}")]
    ProviderUnavailable(String),
}

/// Decides who may create sessions: verifies the credential, consults the directory, and audits every
/// attempt, allowed or refused.
pub struct CallerAuthenticator {
    verifier: Arc<dyn CallerVerifier>,
    directory: Option<Arc<dyn UserDirectory>>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for CallerAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallerAuthenticator")
            .field("directory", &self.directory.is_some())
            .finish_non_exhaustive()
    }
}

impl CallerAuthenticator {
    /// An authenticator over `verifier`, and `directory` when configured.
    pub fn new(
        verifier: Arc<dyn CallerVerifier>,
        directory: Option<Arc<dyn UserDirectory>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { verifier, directory, clock }
    }

    /// The directory, when there is one (for the cascade and readiness).
    pub fn directory(&self) -> Option<&Arc<dyn UserDirectory>> {
        self.directory.as_ref()
    }

    /// Authenticates the caller of `POST /v1/sessions`.
    ///
    /// # Errors
    /// [`CallerAuthError`]; each is audited with its reason and the client's address.
    pub async fn authenticate(
        &self,
        credential: Option<&CallerCredential>,
        client: Option<IpAddr>,
    ) -> Result<AuthenticatedCaller, CallerAuthError> {
        let outcome = self.decide(credential).await;
        let client = client.map(|address| address.to_string());
        let kind = match credential {
            Some(CallerCredential::Bearer(_)) => "bearer",
            Some(CallerCredential::SessionCookie(_)) => "cookie",
            None => "none",
        };
        match &outcome {
            Ok(caller) => {
                metrics::counter!("sidekey_caller_authentications_total", "outcome" => "allowed", "reason" => "")
                    .increment(1);
                tracing::info!(
                    target: AUDIT_TARGET,
                    event = "caller.allowed",
                    credential = kind,
                    subject = %caller.subject,
                    caller_session = caller.bound_to.as_ref().map(|session| session.id.as_str()),
                    client,
                );
            }
            Err(error) => {
                let (reason, subject) = refusal(error);
                metrics::counter!("sidekey_caller_authentications_total", "outcome" => "refused", "reason" => reason)
                    .increment(1);
                tracing::warn!(
                    target: AUDIT_TARGET,
                    event = "caller.refused",
                    credential = kind,
                    reason,
                    subject,
                    client,
                );
            }
        }
        outcome.map_err(|(error, _)| error)
    }

    async fn decide(
        &self,
        credential: Option<&CallerCredential>,
    ) -> Result<AuthenticatedCaller, (CallerAuthError, Option<String>)> {
        let credential = credential.ok_or((CallerAuthError::Rejected(CallerRejection::Missing), None))?;
        let now = self.clock.now();
        let verified = self.verifier.verify(credential, now).await.map_err(|error| {
            let error = match error {
                CallerVerifierError::Rejected(rejection) => CallerAuthError::Rejected(rejection),
                CallerVerifierError::ProviderUnavailable(cause) => {
                    CallerAuthError::ProviderUnavailable(cause)
                }
                CallerVerifierError::Directory(DirectoryError::Unavailable(cause)) => {
                    CallerAuthError::DirectoryUnavailable(cause)
                }
            };
            (error, None)
        })?;
        match verified {
            VerifiedCredential::DirectorySession(session) => {
                let subject = subject_of(&session.user_id)?;
                Ok(AuthenticatedCaller { subject, bound_to: Some(session) })
            }
            VerifiedCredential::Jwt { subject, email } => {
                let Some(directory) = &self.directory else {
                    return Ok(AuthenticatedCaller { subject: subject_of(&subject)?, bound_to: None });
                };
                let known = Some(subject.clone());
                let email = email.ok_or_else(|| {
                    (CallerAuthError::Rejected(CallerRejection::MissingClaim), known.clone())
                })?;
                let user = directory
                    .user_by_email(&email)
                    .await
                    .map_err(|error| (directory_down(error), known.clone()))?
                    .ok_or_else(|| (CallerAuthError::UserNotFound, known.clone()))?;
                let known = Some(user.id.clone());
                let session = directory
                    .active_session_of(&user.id, now)
                    .await
                    .map_err(|error| (directory_down(error), known.clone()))?
                    .ok_or_else(|| (CallerAuthError::NoActiveSession, known.clone()))?;
                Ok(AuthenticatedCaller { subject: subject_of(&user.id)?, bound_to: Some(session) })
            }
        }
    }
}

fn subject_of(id: &str) -> Result<Subject, (CallerAuthError, Option<String>)> {
    Subject::parse(id).map_err(|_| (CallerAuthError::Rejected(CallerRejection::MissingClaim), None))
}

fn directory_down(error: DirectoryError) -> CallerAuthError {
    let DirectoryError::Unavailable(cause) = error;
    CallerAuthError::DirectoryUnavailable(cause)
}

fn refusal((error, subject): &(CallerAuthError, Option<String>)) -> (&'static str, Option<&str>) {
    let reason = match error {
        CallerAuthError::Rejected(rejection) => rejection.label(),
        CallerAuthError::UserNotFound => "user_not_found",
        CallerAuthError::NoActiveSession => "no_active_session",
        CallerAuthError::DirectoryUnavailable(_) => "directory_unavailable",
        CallerAuthError::ProviderUnavailable(_) => "provider_unavailable",
    };
    (reason, subject.as_deref())
}

/// The cascade: whether the sign-in session a session was derived from is still active, asked of the
/// directory at most once per `recheck_after` for each sign-in session. That interval is the bound on
/// how long a session outlives a deleted sign-in session (an *expired* one is never outlived: sessions
/// are issued to end no later than it).
pub struct CascadeCheck {
    directory: Arc<dyn UserDirectory>,
    recheck_after: Duration,
    /// Sign-in session id → when it was last found active.
    confirmed: Mutex<HashMap<String, Instant>>,
}

impl fmt::Debug for CascadeCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CascadeCheck").field("recheck_after", &self.recheck_after).finish_non_exhaustive()
    }
}

/// Sign-in sessions remembered as active before the map is swept of stale entries.
const CASCADE_SWEEP_AT: usize = 10_000;

impl CascadeCheck {
    /// A check against `directory`, asking again after `recheck_after`.
    pub fn new(directory: Arc<dyn UserDirectory>, recheck_after: Duration) -> Self {
        Self { directory, recheck_after, confirmed: Mutex::new(HashMap::new()) }
    }

    /// The bound on how long a session outlives its deleted sign-in session.
    pub fn recheck_after(&self) -> Duration {
        self.recheck_after
    }

    /// Whether the directory answers (readiness).
    ///
    /// # Errors
    /// [`DirectoryError`] when it does not.
    pub async fn ping(&self) -> Result<(), DirectoryError> {
        self.directory.ping().await
    }

    /// Whether the sign-in session `id` is active at `now`.
    ///
    /// # Errors
    /// [`DirectoryError`] when the directory must be asked and cannot be.
    pub async fn is_active(&self, id: &str, now: SystemTime) -> Result<bool, DirectoryError> {
        let instant = Instant::now();
        let fresh = self
            .lock()
            .get(id)
            .is_some_and(|confirmed| instant.saturating_duration_since(*confirmed) < self.recheck_after);
        if fresh {
            return Ok(true);
        }
        let active = self.directory.session_is_active(id, now).await?;
        let mut confirmed = self.lock();
        if active {
            if confirmed.len() >= CASCADE_SWEEP_AT {
                confirmed.retain(|_, at| instant.saturating_duration_since(*at) < self.recheck_after);
            }
            confirmed.insert(id.to_owned(), instant);
        } else {
            confirmed.remove(id);
        }
        Ok(active)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.confirmed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
