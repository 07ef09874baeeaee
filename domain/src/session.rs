//! Sessions and their expiry rules.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use uuid::Uuid;

use crate::policy::{SessionPolicy, Ttl};
use crate::scope::{Limits, Scope};
use crate::secret_ref::SecretRef;
use crate::token::TokenDigest;

/// A session's public identifier (a UUID). Unlike the token, knowing it grants nothing.
///
/// Issued sessions carry the id derived from their token's digest ([`SessionId::of_token`]); stores
/// rebuild whatever id they kept.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(Uuid);

/// A text that is not a session id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a session id is a UUID")]
pub struct SessionIdError;

impl SessionId {
    /// A fresh random (v4) id.
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }

    /// A fresh random (v4) id whose first byte is `shard` (see [`SessionId::shard`]).
    ///
    /// A store partitioned by token digest (Redis Cluster, by hash tag) keeps a session and its id index
    /// in the digest's partition; carrying the partition in the id lets it find a session by id without
    /// an index that spans partitions. The id keeps 114 random bits, and the byte it gives away is one
    /// byte of a SHA-256 digest of a 256-bit secret: it says nothing usable about the token.
    pub fn new_random_in_shard(shard: u8) -> Self {
        let mut bytes = *Uuid::new_v4().as_bytes();
        // Byte 0 is random in a v4 UUID (the version and variant bits live in bytes 6 and 8).
        bytes[0] = shard;
        Self(Uuid::from_bytes(bytes))
    }

    /// The id of the session that the token with this digest stands for: the digest's first 16 bytes,
    /// marked as a version-8 (custom) UUID.
    ///
    /// Derived rather than random so that a store keyed by digest need not keep the id beside its key:
    /// the in-memory store keeps 16 bytes a session fewer, and finds a session by id in one lookup. It
    /// gives away nothing a random id would not: 122 bits of the SHA-256 digest of a 256-bit random token
    /// help neither to recover the token nor to make another one that matches. Its first byte is the
    /// digest's, so it carries the digest's shard as [`SessionId::new_random_in_shard`] does.
    pub fn of_token(digest: &TokenDigest) -> Self {
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest.as_bytes()[..16]);
        Self(uuid::Builder::from_custom_bytes(bytes).into_uuid())
    }

    /// The partition this id was issued in: its first byte.
    pub fn shard(&self) -> u8 {
        self.0.as_bytes()[0]
    }

    /// Wraps a stored UUID.
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// Parses the hyphenated text form.
    ///
    /// # Errors
    /// [`SessionIdError`] when the text is not a UUID.
    pub fn parse(text: &str) -> Result<Self, SessionIdError> {
        Uuid::from_str(text).map(Self).map_err(|_| SessionIdError)
    }

    /// The UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

/// Longest subject accepted, in bytes.
pub const MAX_SUBJECT_LEN: usize = 256;

/// The authenticated user a session belongs to (a user id from the identity provider).
///
/// Visible ASCII only, because it travels to upstreams in the `X-Sidekey-Subject` header.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject(Arc<str>);

/// A text that cannot be a subject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// Empty or longer than [`MAX_SUBJECT_LEN`].
    #[error("subject must be 1 to {MAX_SUBJECT_LEN} characters")]
    Length,
    /// Holds a space, a control character or a non-ASCII character.
    #[error("subject may only contain visible ASCII characters")]
    InvalidCharacter,
}

impl Subject {
    /// Validates a subject.
    ///
    /// # Errors
    /// [`SubjectError`] names the rule the text breaks.
    pub fn parse(text: &str) -> Result<Self, SubjectError> {
        if text.is_empty() || text.len() > MAX_SUBJECT_LEN {
            return Err(SubjectError::Length);
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SubjectError::InvalidCharacter);
        }
        Ok(Self(Arc::from(text)))
    }

    /// The subject as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Subject({:?})", &*self.0)
    }
}

/// The prefix of metadata keys reserved for sidekey: clients may not set them, so that nothing a client
/// writes can ever be read as sidekey's own (the caller's sign-in session once lived there).
pub const RESERVED_METADATA_PREFIX: &str = "sidekey:";

/// Most metadata entries a session may carry.
pub const MAX_METADATA_ENTRIES: usize = 16;
/// Longest metadata key or value, in characters.
pub const MAX_METADATA_TEXT: usize = 256;

/// Free-form labels a client attaches to a session (at most 16 entries of at most 256 characters each).
///
/// Behind an `Arc` so that handing a session out on every verification clones no map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata(Arc<BTreeMap<String, String>>);

/// Metadata outside the contract's limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// More than [`MAX_METADATA_ENTRIES`] entries.
    #[error("metadata may hold at most {MAX_METADATA_ENTRIES} entries, got {0}")]
    TooManyEntries(usize),
    /// An empty key.
    #[error("metadata keys must not be empty")]
    EmptyKey,
    /// A key longer than [`MAX_METADATA_TEXT`] characters.
    #[error("metadata keys must be at most {MAX_METADATA_TEXT} characters")]
    KeyTooLong,
    /// The value under the named key is longer than [`MAX_METADATA_TEXT`] characters.
    #[error("metadata value of {0:?} must be at most {MAX_METADATA_TEXT} characters")]
    ValueTooLong(String),
    /// The named key starts with [`RESERVED_METADATA_PREFIX`].
    #[error("the key {0:?} is reserved (prefix {RESERVED_METADATA_PREFIX:?})")]
    ReservedKey(String),
}

impl Metadata {
    /// Validates metadata entries.
    ///
    /// # Errors
    /// [`MetadataError`] names the first limit the entries break.
    pub fn new(entries: BTreeMap<String, String>) -> Result<Self, MetadataError> {
        if entries.len() > MAX_METADATA_ENTRIES {
            return Err(MetadataError::TooManyEntries(entries.len()));
        }
        for (key, value) in &entries {
            if key.is_empty() {
                return Err(MetadataError::EmptyKey);
            }
            if key.starts_with(RESERVED_METADATA_PREFIX) {
                return Err(MetadataError::ReservedKey(key.clone()));
            }
            if key.chars().count() > MAX_METADATA_TEXT {
                return Err(MetadataError::KeyTooLong);
            }
            if value.chars().count() > MAX_METADATA_TEXT {
                return Err(MetadataError::ValueTooLong(key.clone()));
            }
        }
        Ok(Self(Arc::new(entries)))
    }

    /// The entries.
    pub fn entries(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The UTF-8 bytes of every key and value together: what a store keeps for them.
    pub fn byte_len(&self) -> usize {
        self.0.iter().map(|(key, value)| key.len() + value.len()).sum()
    }
}

/// Longest sign-in session id accepted, in bytes.
pub const MAX_CALLER_SESSION_LEN: usize = 256;

/// The id of the caller's sign-in session (a row of the app's directory, such as Better Auth's `session`
/// table) that a session was issued under: the session must not outlive it (the *cascade*).
///
/// Visible ASCII only: it is logged in audit events and kept by stores as text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallerSession(Arc<str>);

/// A text that cannot be a sign-in session id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a sign-in session id must be 1 to {MAX_CALLER_SESSION_LEN} visible ASCII characters")]
pub struct CallerSessionError;

impl CallerSession {
    /// Validates a sign-in session id.
    ///
    /// # Errors
    /// [`CallerSessionError`] when it is empty, too long, or holds anything but visible ASCII.
    pub fn parse(text: &str) -> Result<Self, CallerSessionError> {
        if text.is_empty()
            || text.len() > MAX_CALLER_SESSION_LEN
            || !text.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(CallerSessionError);
        }
        Ok(Self(Arc::from(text)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CallerSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CallerSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An id, not a credential: Better Auth's session *token* is a different column.
        write!(f, "CallerSession({:?})", &*self.0)
    }
}

/// A session: which secret a token stands for, for whom, and until when.
///
/// Built only by [`Session::issue`] (or rebuilt from a store by [`Session::from_parts`]), so `issued_at ≤
/// expires_at ≤ issued_at + ttl` always holds. Time never comes from a clock here: every rule takes `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    id: SessionId,
    secret_ref: SecretRef,
    subject: Option<Subject>,
    issued_at: SystemTime,
    expires_at: SystemTime,
    ttl: Duration,
    metadata: Metadata,
    caller_session: Option<CallerSession>,
    scope: Scope,
    limits: Limits,
}

/// A session's fields, for stores that keep them apart and rebuild the session with
/// [`Session::from_parts`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // the fields are the session's, documented on its accessors
pub struct SessionParts {
    pub id: SessionId,
    pub secret_ref: SecretRef,
    pub subject: Option<Subject>,
    pub issued_at: SystemTime,
    pub expires_at: SystemTime,
    pub ttl: Duration,
    pub metadata: Metadata,
    pub caller_session: Option<CallerSession>,
    pub scope: Scope,
    pub limits: Limits,
}

/// Stored fields that cannot make a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a stored session must have issued_at <= expires_at and a TTL of at least one second")]
pub struct SessionPartsError;

impl Session {
    /// A new session, valid from `now` for `ttl`, bound to no sign-in session, unscoped and unlimited
    /// (see [`Session::bound_to`], [`Session::scoped`]).
    pub fn issue(
        id: SessionId,
        secret_ref: SecretRef,
        subject: Option<Subject>,
        metadata: Metadata,
        ttl: Ttl,
        now: SystemTime,
    ) -> Self {
        Self {
            id,
            secret_ref,
            subject,
            issued_at: now,
            expires_at: now + ttl.get(),
            ttl: ttl.get(),
            metadata,
            caller_session: None,
            scope: Scope::default(),
            limits: Limits::default(),
        }
    }

    /// The same new session, ending when the caller's sign-in session `caller_session` ends.
    #[must_use]
    pub fn bound_to(self, caller_session: CallerSession) -> Self {
        Self { caller_session: Some(caller_session), ..self }
    }

    /// The same new session, restricted to `scope` and `limits`.
    #[must_use]
    pub fn scoped(self, scope: Scope, limits: Limits) -> Self {
        Self { scope, limits, ..self }
    }

    /// Rebuilds a stored session.
    ///
    /// # Errors
    /// [`SessionPartsError`] when the fields break the session's invariants.
    pub fn from_parts(parts: SessionParts) -> Result<Self, SessionPartsError> {
        if parts.expires_at < parts.issued_at || parts.ttl < Duration::from_secs(1) {
            return Err(SessionPartsError);
        }
        Ok(Self {
            id: parts.id,
            secret_ref: parts.secret_ref,
            subject: parts.subject,
            issued_at: parts.issued_at,
            expires_at: parts.expires_at,
            ttl: parts.ttl,
            metadata: parts.metadata,
            caller_session: parts.caller_session,
            scope: parts.scope,
            limits: parts.limits,
        })
    }

    /// Whether the session no longer verifies at `now`. The boundary is inclusive: at exactly
    /// `expires_at` the session is already expired, so "valid for 1 s" never means a little more.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        now >= self.expires_at
    }

    /// How long the session still has at `now` (zero once expired).
    pub fn remaining_at(&self, now: SystemTime) -> Duration {
        self.expires_at.duration_since(now).unwrap_or(Duration::ZERO)
    }

    /// The session slid forward at `now`: `expires_at` becomes `now + ttl`, but never later than
    /// `issued_at + policy.max_lifetime()` and never earlier than it already was (a refresh only extends).
    ///
    /// The caller checks [`Session::is_expired_at`] first: refreshing an expired session is not this rule's
    /// business, and it would return the session unchanged.
    pub fn refreshed_at(&self, now: SystemTime, policy: &SessionPolicy) -> Self {
        if self.is_expired_at(now) {
            return self.clone();
        }
        let cap = self.issued_at + policy.max_lifetime();
        let slid = (now + self.ttl).min(cap).max(self.expires_at);
        Self { expires_at: slid, ..self.clone() }
    }

    /// The public identifier.
    pub fn id(&self) -> SessionId {
        self.id
    }
    /// The name of the real key this session stands for.
    pub fn secret_ref(&self) -> &SecretRef {
        &self.secret_ref
    }
    /// The user the session belongs to, if the caller was authenticated.
    pub fn subject(&self) -> Option<&Subject> {
        self.subject.as_ref()
    }
    /// When the session was issued.
    pub fn issued_at(&self) -> SystemTime {
        self.issued_at
    }
    /// The first instant at which the session no longer verifies.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }
    /// The TTL granted at issue, which each refresh slides by.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
    /// The client's labels.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    /// The caller's sign-in session this session must not outlive, when it was issued under one.
    pub fn caller_session(&self) -> Option<&CallerSession> {
        self.caller_session.as_ref()
    }
    /// What the session may reach (unrestricted unless it was scoped at issue).
    pub fn scope(&self) -> &Scope {
        &self.scope
    }
    /// What the session may consume (unlimited unless limits applied at issue).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
    /// The session's fields, for a store to keep.
    pub fn to_parts(&self) -> SessionParts {
        SessionParts {
            id: self.id,
            secret_ref: self.secret_ref.clone(),
            subject: self.subject.clone(),
            issued_at: self.issued_at,
            expires_at: self.expires_at,
            ttl: self.ttl,
            metadata: self.metadata.clone(),
            caller_session: self.caller_session.clone(),
            scope: self.scope.clone(),
            limits: self.limits,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: Duration = Duration::from_secs(1_800_000_000);

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(seconds)
    }

    fn session(ttl: u64, policy: &SessionPolicy) -> Session {
        Session::issue(
            SessionId::new_random(),
            SecretRef::parse("openai-prod").unwrap(),
            None,
            Metadata::default(),
            policy.ttl(Some(ttl)).unwrap(),
            at(0),
        )
    }

    #[test]
    fn a_session_expires_at_exactly_its_ttl() {
        let session = session(60, &SessionPolicy::default());
        assert!(!session.is_expired_at(at(59)));
        assert!(!session.is_expired_at(at(60) - Duration::from_nanos(1)));
        assert!(session.is_expired_at(at(60)));
        assert!(session.is_expired_at(at(61)));
    }

    #[test]
    fn remaining_time_counts_down_to_zero() {
        let session = session(60, &SessionPolicy::default());
        assert_eq!(session.remaining_at(at(0)), Duration::from_secs(60));
        assert_eq!(session.remaining_at(at(45)), Duration::from_secs(15));
        assert_eq!(session.remaining_at(at(60)), Duration::ZERO);
        assert_eq!(session.remaining_at(at(600)), Duration::ZERO);
    }

    #[test]
    fn refresh_slides_by_the_ttl_and_stops_at_the_maximum_lifetime() {
        let policy = SessionPolicy::from_seconds(60, 1, 60, 100).unwrap();
        let session = session(60, &policy);
        let once = session.refreshed_at(at(30), &policy);
        assert_eq!(once.expires_at(), at(90));
        assert_eq!(once.issued_at(), at(0));
        let capped = once.refreshed_at(at(80), &policy);
        assert_eq!(capped.expires_at(), at(100));
        assert_eq!(capped.refreshed_at(at(99), &policy).expires_at(), at(100));
    }

    #[test]
    fn refresh_never_shortens_a_session() {
        // The policy's lifetime shrank after issue: the session keeps what it was granted.
        let generous = SessionPolicy::from_seconds(60, 1, 600, 600).unwrap();
        let strict = SessionPolicy::from_seconds(60, 1, 60, 60).unwrap();
        let session = session(600, &generous);
        assert_eq!(session.refreshed_at(at(10), &strict).expires_at(), at(600));
    }

    #[test]
    fn from_parts_refuses_inconsistent_fields() {
        let mut parts = session(60, &SessionPolicy::default()).to_parts();
        assert!(Session::from_parts(parts.clone()).is_ok());
        parts.expires_at = at(0) - Duration::from_secs(1);
        assert_eq!(Session::from_parts(parts), Err(SessionPartsError));
    }

    #[test]
    fn subject_and_metadata_enforce_their_limits() {
        assert!(Subject::parse("user_123").is_ok());
        assert_eq!(Subject::parse(""), Err(SubjectError::Length));
        assert_eq!(Subject::parse("a b"), Err(SubjectError::InvalidCharacter));
        assert_eq!(Subject::parse("a\r\nb"), Err(SubjectError::InvalidCharacter));
        let many: BTreeMap<_, _> = (0..17).map(|i| (i.to_string(), String::new())).collect();
        assert_eq!(Metadata::new(many), Err(MetadataError::TooManyEntries(17)));
        let long = BTreeMap::from([("k".to_owned(), "é".repeat(257))]);
        assert_eq!(Metadata::new(long), Err(MetadataError::ValueTooLong("k".into())));
        let fits = BTreeMap::from([("k".repeat(256), "é".repeat(256))]);
        assert!(Metadata::new(fits).is_ok());
    }

    #[test]
    fn metadata_refuses_keys_under_the_reserved_prefix() {
        let reserved = BTreeMap::from([("sidekey:caller_session".to_owned(), "s1".to_owned())]);
        assert_eq!(Metadata::new(reserved), Err(MetadataError::ReservedKey("sidekey:caller_session".into())));
        let near =
            BTreeMap::from([("sidekey".to_owned(), String::new()), ("Sidekey:x".to_owned(), String::new())]);
        assert!(Metadata::new(near).is_ok(), "only the exact prefix is reserved");
    }

    #[test]
    fn a_caller_session_is_visible_ascii_and_a_session_keeps_it() {
        assert!(CallerSession::parse("").is_err());
        assert!(CallerSession::parse("a b").is_err());
        assert!(CallerSession::parse(&"s".repeat(MAX_CALLER_SESSION_LEN + 1)).is_err());
        let bound = CallerSession::parse("sess_123").unwrap();
        let session = session(60, &SessionPolicy::default()).bound_to(bound.clone());
        assert_eq!(session.caller_session(), Some(&bound));
        assert_eq!(Session::from_parts(session.to_parts()).unwrap(), session);
    }

    #[test]
    fn an_id_issued_in_a_shard_carries_it_and_stays_a_random_v4_uuid() {
        let id = SessionId::new_random_in_shard(0xab);
        assert_eq!(id.shard(), 0xab);
        assert_eq!(id.as_uuid().get_version_num(), 4);
        assert_eq!(id.as_uuid().get_variant(), uuid::Variant::RFC4122);
        assert_ne!(SessionId::new_random_in_shard(0xab), id);
    }

    #[test]
    fn a_token_derived_id_is_a_v8_uuid_of_the_digest_prefix_and_carries_its_shard() {
        let first = crate::Token::from_random_bytes(&[7; 32]).digest();
        let other = crate::Token::from_random_bytes(&[8; 32]).digest();
        let id = SessionId::of_token(&first);
        assert_eq!(id, SessionId::of_token(&first), "the same token always names the same session");
        assert_ne!(id, SessionId::of_token(&other));
        assert_eq!(id.shard(), first.shard());
        assert_eq!(id.as_uuid().get_version_num(), 8);
        assert_eq!(id.as_uuid().get_variant(), uuid::Variant::RFC4122);
        // Only the version and variant bits differ from the digest's prefix.
        let differing: u32 =
            id.as_uuid().as_bytes().iter().zip(first.as_bytes()).map(|(a, b)| (a ^ b).count_ones()).sum();
        assert!(differing <= 6, "{differing} bits changed");
    }

    #[test]
    fn session_ids_round_trip_through_text() {
        let id = SessionId::new_random();
        assert_eq!(SessionId::parse(&id.to_string()), Ok(id));
        assert_eq!(SessionId::parse("not-a-uuid"), Err(SessionIdError));
    }

    proptest! {
        #[test]
        fn expiry_is_a_step_at_expires_at(ttl in 1u64..86_400, probe in 0u64..200_000) {
            let session = session(ttl, &SessionPolicy::default());
            prop_assert_eq!(session.is_expired_at(at(probe)), probe >= ttl);
            prop_assert_eq!(session.remaining_at(at(probe)).as_secs(), ttl.saturating_sub(probe));
        }

        #[test]
        fn refresh_stays_within_issue_plus_lifetime_and_never_shrinks(
            ttl in 1u64..1_000,
            extra in 0u64..5_000,
            refreshes in proptest::collection::vec(0u64..500, 1..20),
        ) {
            let lifetime = ttl + extra;
            let policy = SessionPolicy::from_seconds(ttl, 1, ttl, lifetime).unwrap();
            let mut current = session(ttl, &policy);
            let mut now = 0;
            for step in refreshes {
                now += step;
                let before = current.expires_at();
                let next = current.refreshed_at(at(now), &policy);
                prop_assert!(next.expires_at() >= before);
                prop_assert!(next.expires_at() <= at(lifetime));
                if !current.is_expired_at(at(now)) {
                    prop_assert_eq!(next.expires_at(), at((now + ttl).min(lifetime)).max(before));
                }
                current = next;
            }
        }
    }
}
