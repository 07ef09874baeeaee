//! [`SessionStore`]: where sessions live, keyed by the digest of their token.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sidekey_domain::{SecretRef, SecretValue, Session, SessionId, Subject, TokenDigest, TokenKeys};

/// What a valid token grants: the session and the real key it stands for.
///
/// Cloning is cheap (reference counts only), so stores can hand one out on every verification.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The session.
    pub session: Session,
    /// The real key, shared rather than copied so that only one copy of it lives in memory.
    pub secret: Arc<SecretValue>,
}

/// What a store knows of a token digest.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// A session that has not been revoked. It may already be past `expires_at`: stores purge lazily,
    /// so callers check [`Session::is_expired_at`] themselves.
    Active(Grant),
    /// A session that was revoked: said until [`ENDED_SESSION_RETENTION`] after its original expiry.
    Revoked,
    /// A session that expired and whose real key the store has already dropped: said until
    /// [`ENDED_SESSION_RETENTION`] after its expiry.
    Expired,
    /// No session: never issued, or ended longer than [`ENDED_SESSION_RETENTION`] ago.
    Missing,
}

/// How long a store remembers that a session ended (revoked or expired) after its expiry, so that a client
/// still holding the token is told why it stopped working ("expired", "revoked") rather than "unknown".
///
/// Five minutes: a client that keeps calling with a stale token notices within that window, and a store
/// holds at most five minutes' worth of ended sessions in addition to its live ones. The real key is
/// never part of this memory: it is dropped the moment the session ends.
pub const ENDED_SESSION_RETENTION: Duration = Duration::from_secs(300);

/// Which sessions an admin listing selects. Both filters set means both must match; none means all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFilter {
    /// Only sessions for this `secret_key_id`.
    pub secret_ref: Option<SecretRef>,
    /// Only sessions of this subject.
    pub subject: Option<Subject>,
}

impl SessionFilter {
    /// Whether `session` is selected.
    pub fn matches(&self, session: &Session) -> bool {
        self.secret_ref.as_ref().is_none_or(|wanted| session.secret_ref() == wanted)
            && self.subject.as_ref().is_none_or(|wanted| session.subject() == Some(wanted))
    }
}

/// Which sessions a bulk revocation ends: a key rotation, or a user ban.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationTarget {
    /// Every session bound to this `secret_key_id`.
    SecretRef(SecretRef),
    /// Every session of this subject.
    Subject(Subject),
}

impl RevocationTarget {
    /// Whether `session` is one of those to revoke.
    pub fn matches(&self, session: &Session) -> bool {
        match self {
            Self::SecretRef(wanted) => session.secret_ref() == wanted,
            Self::Subject(wanted) => session.subject() == Some(wanted),
        }
    }
}

/// A session store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or did not answer in time. The text is the cause, for the log only.
    #[error("the session store is unavailable: {0}")]
    Unavailable(String),
    /// A session is already stored under this digest.
    #[error("a session is already stored under this token digest")]
    Conflict,
}

/// Where sessions live, keyed by the digest of their token.
///
/// The methods that hand out a session's real key (or store it) receive the token's [`TokenKeys`]: the
/// digest to key by, and the sealing key with which a store that keeps data outside this process MUST
/// encrypt the real key, so that a copy of the store decrypts nothing without the token. No method ever
/// receives the token itself.
///
/// # Errors
/// Every method of every implementation:
/// - MUST return [`StoreError::Unavailable`] when its backend cannot be reached, and MUST do so within a
///   bounded time (a store that hangs hangs every request of the service);
/// - MUST NOT put a token, a real key or the cause's secrets into the error text.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new session until its `expires_at`. After that it MUST stop being returned as active
    /// within a moment (its real key dropped), SHOULD be reported as [`Lookup::Expired`] until
    /// [`ENDED_SESSION_RETENTION`] later, and then MUST be forgotten and its memory released without
    /// anyone asking.
    ///
    /// The session's id is [`SessionId::of_token`] of the token's digest (the use cases issue it so), and
    /// a store MAY rely on that: the in-memory store keys sessions by it and refuses any other id.
    ///
    /// # Errors
    /// MUST return [`StoreError::Conflict`] if a session (active or revoked) is stored under `digest`.
    async fn insert(&self, keys: &TokenKeys, grant: Grant) -> Result<(), StoreError>;

    /// What is stored under `digest`.
    ///
    /// MUST return [`Lookup::Revoked`] for a revoked session until at least its original `expires_at`
    /// (SHOULD until [`ENDED_SESSION_RETENTION`] after it), and MAY return an expired session as
    /// [`Lookup::Active`] for a moment before it becomes [`Lookup::Expired`] (callers check expiry
    /// against their clock).
    async fn find(&self, keys: &TokenKeys) -> Result<Lookup, StoreError>;

    /// Moves an active session's `expires_at` (a refresh) and returns what is stored afterwards.
    ///
    /// MUST NOT bring back an ended or purged session: those return [`Lookup::Revoked`],
    /// [`Lookup::Expired`] or [`Lookup::Missing`] unchanged.
    async fn extend(&self, keys: &TokenKeys, expires_at: SystemTime) -> Result<Lookup, StoreError>;

    /// Revokes the session stored under `digest`. Returns whether an active session was revoked.
    async fn revoke(&self, digest: &TokenDigest) -> Result<bool, StoreError>;

    /// Revokes the session with this id. Returns whether an active session was revoked.
    async fn revoke_by_id(&self, id: SessionId) -> Result<bool, StoreError>;

    /// Revokes every active session that `target` selects; returns how many.
    async fn revoke_matching(&self, target: &RevocationTarget) -> Result<u64, StoreError>;

    /// Up to `limit` active sessions that `filter` selects, in no particular order.
    async fn list(&self, filter: &SessionFilter, limit: usize) -> Result<Vec<Session>, StoreError>;

    /// Whether the store can serve requests now (for readiness probes).
    async fn ping(&self) -> Result<(), StoreError>;
}
