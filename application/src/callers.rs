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

use sidekey_domain::{CallerSession, Subject};

use crate::AUDIT_TARGET;
use crate::ports::{
    CallerCredential, CallerRejection, CallerVerifier, CallerVerifierError, Clock, DirectoryError,
    DirectorySession, UserDirectory, VerifiedCredential,
};

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
    confirmed: Mutex<HashMap<CallerSession, Instant>>,
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
    pub async fn is_active(&self, id: &CallerSession, now: SystemTime) -> Result<bool, DirectoryError> {
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
            confirmed.insert(id.clone(), instant);
        } else {
            confirmed.remove(id);
        }
        Ok(active)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CallerSession, Instant>> {
        self.confirmed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
