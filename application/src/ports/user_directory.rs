//! [`UserDirectory`]: the app's users and their sign-in sessions (Better Auth's tables).

use std::time::SystemTime;

use async_trait::async_trait;
use sidekey_domain::CallerSession;

/// A sign-in session in the app's directory (Better Auth's `session` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectorySession {
    /// `session.id`.
    pub id: CallerSession,
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
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
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
    async fn session_is_active(&self, id: &CallerSession, now: SystemTime) -> Result<bool, DirectoryError>;

    /// Whether the directory can be asked now (readiness).
    async fn ping(&self) -> Result<(), DirectoryError>;
}
