//! The session use cases.

use std::sync::Arc;
use std::time::SystemTime;

use metrics::Counter;
use sidekey_domain::{
    CallerSession, EntropyError, LimitError, Limits, LimitsPolicy, Metadata, Scope, ScopeError, SecretRef,
    Session, SessionId, SessionPolicy, Subject, TICKET_LIFETIME, Ticket, Token, TokenDigest, TokenKeys,
    TokenParseError, TtlError, UpstreamPolicy,
};

use crate::AUDIT_TARGET;
use crate::callers::CascadeCheck;
use crate::ports::{
    Clock, DirectoryError, Grant, LedgerError, Lookup, RevocationTarget, SecretSource, SecretSourceError,
    SessionFilter, SessionStore, StoreError, StoredTicket, TicketStore, UsageLedger,
};

/// What a caller asks for when creating a session.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    /// The name of the real key the session stands for.
    pub secret_ref: SecretRef,
    /// The requested TTL in seconds; the policy's default when absent.
    pub ttl_seconds: Option<u64>,
    /// The client's labels.
    pub metadata: Metadata,
    /// The authenticated caller, when caller authentication is on.
    pub subject: Option<Subject>,
    /// The caller's sign-in session, when the caller was checked against a directory: the session
    /// issued ends when it ends (see [`CascadeCheck`]).
    pub caller_session: Option<CallerSession>,
    /// What the session may reach; [`Scope::default`] restricts nothing beyond the configuration.
    pub scope: Scope,
    /// The limits asked for; those left out come from the configured defaults, capped by the ceilings.
    pub limits: Limits,
}

/// A new session and the token that stands for it; the only place the token exists in clear.
#[derive(Debug)]
pub struct Issued {
    /// The token to hand to the client, once.
    pub token: Token,
    /// The session.
    pub session: Session,
}

/// Why a session could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The requested TTL lies outside the configured bounds (the caller must ask for less).
    #[error(transparent)]
    InvalidTtl(#[from] TtlError),
    /// The secret source has no secret of that name.
    #[error("the secret source has no such secret")]
    UnknownSecret {
        /// Where the source looked (a variable, a file), when it can say.
        looked_in: Option<String>,
    },
    /// The secret source did not answer in time.
    #[error("the secret source timed out")]
    SecretSourceTimeout,
    /// The secret source failed.
    #[error("the secret source failed: {0}")]
    SecretSourceFailed(String),
    /// The secret source cannot be asked now (transient).
    #[error("the secret source is unavailable: {0}")]
    SecretSourceUnavailable(String),
    /// The store could not keep the session.
    #[error("the session store is unavailable: {0}")]
    StoreUnavailable(String),
    /// The OS had no randomness for a token.
    #[error(transparent)]
    Entropy(#[from] EntropyError),
    /// The scope would widen what the configuration allows (the caller must ask for less).
    #[error(transparent)]
    InvalidScope(#[from] ScopeError),
    /// A limit is above its configured ceiling.
    #[error(transparent)]
    InvalidLimits(#[from] LimitError),
    /// The metadata holds more bytes than allowed.
    #[error("metadata: {bytes} bytes of UTF-8 over all keys and values, at most {max}")]
    MetadataTooLarge {
        /// Its size.
        bytes: usize,
        /// The configured bound (`session.max_metadata_bytes`).
        max: usize,
    },
    /// The subject already has as many live sessions as allowed.
    #[error("the user already has {max} live sessions")]
    TooManySessions {
        /// The configured bound (`session.max_live_per_subject`).
        max: u64,
    },
}

/// Why a presented token does not verify. Each reason is told to the client (RFC 6750
/// `error_description`) and counted; none of them reveals anything about other sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Not a token: wrong prefix, length, alphabet or checksum. Refused without touching the store.
    #[error("the token is malformed")]
    Malformed(TokenParseError),
    /// Well-formed but not issued here (or expired long ago and purged).
    #[error("the token is unknown")]
    Unknown,
    /// The session expired.
    #[error("the token has expired")]
    Expired,
    /// The session was revoked.
    #[error("the token was revoked")]
    Revoked,
}

impl Rejection {
    /// A stable label for metrics and audit events.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::Unknown => "unknown",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

/// Why a token did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The token is not valid (the client must get a new one).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The store could not be asked (fail closed; the client may retry).
    #[error("the session store is unavailable: {0}")]
    StoreUnavailable(String),
    /// The session is bound to a sign-in session, and the directory that knows whether it still
    /// stands could not be asked (fail closed; the client may retry).
    #[error("the user directory is unavailable: {0}")]
    DirectoryUnavailable(String),
}

/// Why a session could not be refreshed: the same reasons as verification.
pub type RefreshError = VerifyError;
/// Why a session could not be revoked by its own token: the same reasons as verification.
pub type RevokeError = VerifyError;

/// Why an admin operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// No active session has that id.
    #[error("no active session has that id")]
    NotFound,
    /// The store could not be asked.
    #[error("the session store is unavailable: {0}")]
    StoreUnavailable(String),
}

/// The state of the service's dependencies, for readiness probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// The store's answer to a ping.
    pub store: Result<(), StoreError>,
    /// The secret source's answer to a ping.
    pub secrets: Result<(), SecretSourceError>,
    /// The user directory's answer to a ping (`Ok` when there is none).
    pub directory: Result<(), DirectoryError>,
}

impl Readiness {
    /// Whether every dependency answered.
    pub fn is_ready(&self) -> bool {
        self.store.is_ok() && self.secrets.is_ok() && self.directory.is_ok()
    }
}

/// Counters resolved once at construction, so the verify path does not look metrics up by name.
struct Counters {
    issued: Counter,
    verified: Counter,
    refused_malformed: Counter,
    refused_unknown: Counter,
    refused_expired: Counter,
    refused_revoked: Counter,
    verify_errors: Counter,
    refreshed: Counter,
}

impl Counters {
    fn new() -> Self {
        let refused = |reason: &'static str| metrics::counter!("sidekey_verifications_total", "outcome" => "refused", "reason" => reason);
        Self {
            issued: metrics::counter!("sidekey_sessions_issued_total"),
            verified: metrics::counter!("sidekey_verifications_total", "outcome" => "accepted", "reason" => "valid"),
            refused_malformed: refused("malformed"),
            refused_unknown: refused("unknown"),
            refused_expired: refused("expired"),
            refused_revoked: refused("revoked"),
            verify_errors: metrics::counter!(
                "sidekey_verifications_total", "outcome" => "error", "reason" => "store_unavailable"
            ),
            refreshed: metrics::counter!("sidekey_refreshes_total"),
        }
    }

    fn refused(&self, rejection: Rejection) -> &Counter {
        match rejection {
            Rejection::Malformed(_) => &self.refused_malformed,
            Rejection::Unknown => &self.refused_unknown,
            Rejection::Expired => &self.refused_expired,
            Rejection::Revoked => &self.refused_revoked,
        }
    }
}

fn count_revocations(kind: &'static str, how_many: u64) {
    metrics::counter!("sidekey_revocations_total", "kind" => kind).increment(how_many);
}

/// The session use cases over a store, a secret source and a clock.
pub struct SessionService {
    store: Arc<dyn SessionStore>,
    secrets: Arc<dyn SecretSource>,
    clock: Arc<dyn Clock>,
    policy: SessionPolicy,
    counters: Counters,
    cascade: Option<Arc<CascadeCheck>>,
    /// What sessions may be scoped within, and what they may consume.
    scoping: Scoping,
    /// What one issuance may create.
    issuance: IssuanceLimits,
    /// Where one-time tickets wait; `None`: tickets are not offered.
    tickets: Option<Arc<dyn TicketStore>>,
}

/// Why a ticket could not be issued or redeemed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// The token presented to issue one did not verify.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// The ticket is malformed, unknown, used already or expired (the client must ask for another).
    #[error("the ticket is not valid (unknown, used already, or expired)")]
    Invalid,
    /// The ticket store could not be asked (fail closed).
    #[error("the ticket store is unavailable: {0}")]
    StoreUnavailable(String),
    /// No ticket store is configured.
    #[error("tickets are not enabled")]
    Disabled,
    /// The OS had no randomness to give.
    #[error("no randomness for a ticket: {0}")]
    Entropy(String),
}

/// Bounds on what one issuance may create.
#[derive(Clone)]
pub struct IssuanceLimits {
    /// The most UTF-8 bytes a session's metadata may hold, keys and values together.
    pub max_metadata_bytes: usize,
    /// The most live sessions one subject may hold, counted in this ledger (`None`: unbounded).
    pub max_live_per_subject: Option<(u64, Arc<dyn UsageLedger>)>,
}

impl IssuanceLimits {
    /// 2 KiB of metadata (a few labels; 16 entries of 256 four-byte characters would be 32 KiB a
    /// session), no bound on live sessions.
    pub const DEFAULT_MAX_METADATA_BYTES: usize = 2048;
}

impl Default for IssuanceLimits {
    fn default() -> Self {
        Self { max_metadata_bytes: Self::DEFAULT_MAX_METADATA_BYTES, max_live_per_subject: None }
    }
}

impl std::fmt::Debug for IssuanceLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuanceLimits")
            .field("max_metadata_bytes", &self.max_metadata_bytes)
            .field("max_live_per_subject", &self.max_live_per_subject.as_ref().map(|(max, _)| max))
            .finish()
    }
}

/// The configuration a session's scope and limits must stay within.
#[derive(Debug, Clone, Default)]
pub struct Scoping {
    /// What each configured upstream admits.
    pub upstreams: Vec<UpstreamPolicy>,
    /// The default and ceiling of every session's limits.
    pub limits: LimitsPolicy,
}

impl SessionService {
    /// Wires the use cases. Metrics handles are taken from the recorder installed at this moment.
    pub fn new(
        store: Arc<dyn SessionStore>,
        secrets: Arc<dyn SecretSource>,
        clock: Arc<dyn Clock>,
        policy: SessionPolicy,
    ) -> Self {
        Self {
            store,
            secrets,
            clock,
            policy,
            counters: Counters::new(),
            cascade: None,
            scoping: Scoping::default(),
            issuance: IssuanceLimits::default(),
            tickets: None,
        }
    }

    /// Offers one-time tickets, kept in `store`.
    #[must_use]
    pub fn with_tickets(mut self, store: Arc<dyn TicketStore>) -> Self {
        self.tickets = Some(store);
        self
    }

    /// Issues a one-time ticket for the session of the presented token, valid [`TICKET_LIFETIME`].
    ///
    /// # Errors
    /// [`TicketError::Verify`] when the token does not verify; [`TicketError::StoreUnavailable`],
    /// [`TicketError::Disabled`], [`TicketError::Entropy`].
    pub async fn issue_ticket(&self, presented: &str) -> Result<Ticket, TicketError> {
        let store = self.tickets.as_ref().ok_or(TicketError::Disabled)?;
        let grant = self.verify(presented).await?;
        let token = Token::parse(presented).map_err(|_| TicketError::Invalid)?;
        let ticket = Ticket::generate().map_err(|error| TicketError::Entropy(error.to_string()))?;
        let stored = StoredTicket {
            sealed_token: ticket.seal(&token),
            expires_at: self.clock.now() + TICKET_LIFETIME,
        };
        store.put(ticket.digest(), stored).await.map_err(|error| TicketError::StoreUnavailable(error.0))?;
        tracing::info!(
            target: AUDIT_TARGET,
            event = "ticket.issued",
            session_id = %grant.session.id(),
            token = %token.digest().fingerprint(),
        );
        Ok(ticket)
    }

    /// Redeems a ticket, once: the session it stands for (verified now, as a token would be) and that
    /// session's token, for the live checks of what it opens.
    ///
    /// # Errors
    /// [`TicketError::Invalid`] for a malformed, unknown, used or expired ticket; [`TicketError::Verify`]
    /// when its session no longer verifies; [`TicketError::StoreUnavailable`], [`TicketError::Disabled`].
    pub async fn redeem_ticket(&self, presented: &str) -> Result<(Grant, Token), TicketError> {
        let store = self.tickets.as_ref().ok_or(TicketError::Disabled)?;
        let ticket = Ticket::parse(presented).map_err(|_| TicketError::Invalid)?;
        let stored = store
            .take(&ticket.digest())
            .await
            .map_err(|error| TicketError::StoreUnavailable(error.0))?
            .ok_or(TicketError::Invalid)?;
        if self.clock.now() > stored.expires_at {
            return Err(TicketError::Invalid);
        }
        let token = ticket.open(&stored.sealed_token).ok_or(TicketError::Invalid)?;
        let grant = self.verify(token.expose()).await?;
        Ok((grant, token))
    }

    /// Bounds issuances by `issuance` (by default: 2 KiB of metadata, no bound on live sessions).
    #[must_use]
    pub fn with_issuance_limits(mut self, issuance: IssuanceLimits) -> Self {
        self.issuance = issuance;
        self
    }

    /// Scopes and limits sessions within `scoping` (by default: no upstream to scope to, no limit).
    #[must_use]
    pub fn with_scoping(mut self, scoping: Scoping) -> Self {
        self.scoping = scoping;
        self
    }

    /// Ends sessions whose caller's sign-in session ended, as `cascade` finds out.
    #[must_use]
    pub fn with_cascade(mut self, cascade: Arc<CascadeCheck>) -> Self {
        self.cascade = Some(cascade);
        self
    }

    /// The policy sessions are issued under.
    pub fn policy(&self) -> &SessionPolicy {
        &self.policy
    }

    /// The service clock's current time, for adapters that must agree with it (the HTTP layer's
    /// `expires_in`).
    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// Issues a session: checks the TTL, fetches the real key just in time, stores the session under the
    /// digest of a fresh token, and returns the token.
    ///
    /// # Errors
    /// [`IssueError`]; the TTL, the scope and the limits are checked before the secret source is asked.
    #[tracing::instrument(skip_all, fields(secret_key_id = %request.secret_ref))]
    pub async fn issue(&self, request: IssueRequest) -> Result<Issued, IssueError> {
        let ttl = self.policy.ttl(request.ttl_seconds)?;
        let (bytes, max) = (request.metadata.byte_len(), self.issuance.max_metadata_bytes);
        if bytes > max {
            return Err(IssueError::MetadataTooLarge { bytes, max });
        }
        request.scope.check_within(&request.secret_ref, &self.scoping.upstreams)?;
        let limits = self.scoping.limits.resolve(&request.limits)?;
        let secret = self.secrets.fetch(&request.secret_ref).await.map_err(|error| match error {
            SecretSourceError::NotFound => {
                IssueError::UnknownSecret { looked_in: self.secrets.location(&request.secret_ref) }
            }
            SecretSourceError::Timeout(_) => IssueError::SecretSourceTimeout,
            SecretSourceError::Failed(cause) => IssueError::SecretSourceFailed(cause),
            SecretSourceError::Unavailable(cause) => IssueError::SecretSourceUnavailable(cause),
        })?;
        let token = Token::generate()?;
        let keys = token.keys();
        let digest = *keys.digest();
        let session = Session::issue(
            // Derived from the digest: a store keyed by digest need not keep it, and a partitioned store
            // finds a session by id in the digest's partition (its first byte is the digest's shard).
            SessionId::of_token(&digest),
            request.secret_ref,
            request.subject,
            request.metadata,
            ttl,
            self.clock.now(),
        );
        let session = match request.caller_session {
            Some(caller_session) => session.bound_to(caller_session),
            None => session,
        }
        .scoped(request.scope, limits);
        let counted = self.count_live(&session).await?;
        let grant = Grant { session: session.clone(), secret: Arc::new(secret) };
        if let Err(error) = self.store.insert(&keys, grant).await {
            if counted {
                self.release_live(&session).await;
            }
            return Err(match error {
                StoreError::Unavailable(cause) => IssueError::StoreUnavailable(cause),
                // 2^-256 odds: a fresh token colliding means the randomness is broken, so fail loudly.
                StoreError::Conflict => IssueError::StoreUnavailable("token digest collision".into()),
            });
        }
        self.counters.issued.increment(1);
        tracing::info!(
            target: AUDIT_TARGET,
            event = "session.issued",
            session_id = %session.id(),
            secret_key_id = %session.secret_ref(),
            subject = session.subject().map(Subject::as_str),
            ttl_seconds = ttl.get().as_secs(),
            token = %digest.fingerprint(),
        );
        Ok(Issued { token, session })
    }

    /// Verifies a presented token and returns what it grants. The hot path: one parse, one digest, one
    /// store lookup.
    ///
    /// # Errors
    /// [`VerifyError::Rejected`] with the reason, or [`VerifyError::StoreUnavailable`].
    pub async fn verify(&self, presented: &str) -> Result<Grant, VerifyError> {
        let keys = self.parse(presented, "verify")?;
        let grant = self.active_grant(&keys, "verify").await?;
        self.counters.verified.increment(1);
        Ok(grant)
    }

    /// Slides a session's expiry forward (see [`Session::refreshed_at`]) and returns it.
    ///
    /// # Errors
    /// As [`SessionService::verify`]; a session at its maximum lifetime is returned unchanged, not refused.
    #[tracing::instrument(skip_all)]
    pub async fn refresh(&self, presented: &str) -> Result<Session, RefreshError> {
        let keys = self.parse(presented, "refresh")?;
        let digest = *keys.digest();
        // One reading of the clock for the whole refresh, so the expiry check and the new expiry agree.
        let now = self.clock.now();
        let grant = self.active_grant_at(&keys, now, "refresh").await?;
        let refreshed = grant.session.refreshed_at(now, &self.policy);
        let stored = self
            .store
            .extend(&keys, refreshed.expires_at())
            .await
            .map_err(|error| self.store_failed(error))?;
        let session = match stored {
            Lookup::Active(grant) => grant.session,
            // Revoked between the lookup and the update: the revocation wins.
            Lookup::Revoked => {
                return Err(self.refuse(Rejection::Revoked, Some(&digest), "refresh"));
            }
            Lookup::Expired => {
                return Err(self.refuse(Rejection::Expired, Some(&digest), "refresh"));
            }
            Lookup::Missing => {
                return Err(self.refuse(Rejection::Unknown, Some(&digest), "refresh"));
            }
        };
        self.counters.refreshed.increment(1);
        tracing::info!(
            target: AUDIT_TARGET,
            event = "session.refreshed",
            session_id = %session.id(),
            expires_in_seconds = session.remaining_at(now).as_secs(),
            token = %digest.fingerprint(),
        );
        Ok(session)
    }

    /// Revokes the session of a presented token (a client logging out).
    ///
    /// # Errors
    /// As [`SessionService::verify`]: only a token that verifies can revoke itself.
    #[tracing::instrument(skip_all)]
    pub async fn revoke(&self, presented: &str) -> Result<(), RevokeError> {
        let keys = self.parse(presented, "revoke")?;
        let digest = *keys.digest();
        let grant = self.active_grant(&keys, "revoke").await?;
        let revoked = self.store.revoke(&digest).await.map_err(|error| self.store_failed(error))?;
        if !revoked {
            // Revoked or purged by someone else in between: the token is invalid either way.
            return Err(self.refuse(Rejection::Revoked, Some(&digest), "revoke"));
        }
        count_revocations("self", 1);
        self.release_live(&grant.session).await;
        tracing::info!(
            target: AUDIT_TARGET,
            event = "session.revoked",
            by = "self",
            session_id = %grant.session.id(),
            token = %digest.fingerprint(),
        );
        Ok(())
    }

    /// Up to `limit` active sessions matching `filter` (admin).
    ///
    /// # Errors
    /// [`AdminError::StoreUnavailable`].
    pub async fn list(&self, filter: &SessionFilter, limit: usize) -> Result<Vec<Session>, AdminError> {
        let now = self.clock.now();
        let mut sessions = self.store.list(filter, limit).await.map_err(admin_store_failed)?;
        sessions.retain(|session| !session.is_expired_at(now));
        Ok(sessions)
    }

    /// Revokes one session by id (admin).
    ///
    /// # Errors
    /// [`AdminError::NotFound`] when no active session has that id.
    #[tracing::instrument(skip_all, fields(session_id = %id))]
    pub async fn revoke_by_id(&self, id: SessionId) -> Result<(), AdminError> {
        if !self.store.revoke_by_id(id).await.map_err(admin_store_failed)? {
            return Err(AdminError::NotFound);
        }
        count_revocations("admin", 1);
        tracing::info!(target: AUDIT_TARGET, event = "session.revoked", by = "admin", session_id = %id);
        Ok(())
    }

    /// Revokes every session bound to a `secret_key_id` or a subject (admin: key rotation, user ban).
    ///
    /// # Errors
    /// [`AdminError::StoreUnavailable`].
    #[tracing::instrument(skip_all)]
    pub async fn revoke_matching(&self, target: &RevocationTarget) -> Result<u64, AdminError> {
        self.revoke_matching_for(target, "admin").await
    }

    /// Revokes every session bound to `secret_ref` because its holder announced that the key was
    /// rotated or withdrawn: the sessions must not keep using the old key.
    ///
    /// # Errors
    /// [`AdminError::StoreUnavailable`].
    #[tracing::instrument(skip_all, fields(secret_key_id = %secret_ref))]
    pub async fn revoke_rotated(&self, secret_ref: &SecretRef) -> Result<u64, AdminError> {
        self.revoke_matching_for(&RevocationTarget::SecretRef(secret_ref.clone()), "bridge").await
    }

    async fn revoke_matching_for(
        &self,
        target: &RevocationTarget,
        by: &'static str,
    ) -> Result<u64, AdminError> {
        let revoked = self.store.revoke_matching(target).await.map_err(admin_store_failed)?;
        let (kind, secret_key_id, subject) = match target {
            RevocationTarget::SecretRef(name) => ("secret_key_id", Some(name.as_str()), None),
            RevocationTarget::Subject(subject) => ("subject", None, Some(subject.as_str())),
        };
        count_revocations(kind, revoked);
        tracing::info!(
            target: AUDIT_TARGET,
            event = "sessions.revoked",
            by,
            kind,
            secret_key_id,
            subject,
            revoked,
        );
        Ok(revoked)
    }

    /// Counts a new session against its subject's bound on live sessions; whether it was counted.
    async fn count_live(&self, session: &Session) -> Result<bool, IssueError> {
        let (Some((max, ledger)), Some(subject)) = (&self.issuance.max_live_per_subject, session.subject())
        else {
            return Ok(false);
        };
        match ledger.admit_session(subject, session.id(), session.expires_at(), *max, self.clock.now()).await
        {
            Ok(true) => Ok(true),
            Ok(false) => Err(IssueError::TooManySessions { max: *max }),
            Err(LedgerError::Unavailable(cause)) => Err(IssueError::StoreUnavailable(cause)),
        }
    }

    /// Frees the place a session took among its subject's live sessions (it ended early); a failure
    /// leaves it counted until the session's expiry.
    async fn release_live(&self, session: &Session) {
        if let (Some((_, ledger)), Some(subject)) = (&self.issuance.max_live_per_subject, session.subject())
            && let Err(error) = ledger.release_session(subject, session.id()).await
        {
            tracing::warn!(%error, "a session's place among its subject's live sessions stays taken until it expires");
        }
    }

    /// Asks every dependency whether it can serve.
    pub async fn readiness(&self) -> Readiness {
        let directory = match &self.cascade {
            Some(cascade) => cascade.ping().await,
            None => Ok(()),
        };
        Readiness { store: self.store.ping().await, secrets: self.secrets.ping().await, directory }
    }

    fn parse(&self, presented: &str, operation: &'static str) -> Result<TokenKeys, VerifyError> {
        Token::parse(presented)
            .map(|token| token.keys())
            .map_err(|error| self.refuse(Rejection::Malformed(error), None, operation))
    }

    async fn active_grant(&self, keys: &TokenKeys, operation: &'static str) -> Result<Grant, VerifyError> {
        self.active_grant_at(keys, self.clock.now(), operation).await
    }

    async fn active_grant_at(
        &self,
        keys: &TokenKeys,
        now: SystemTime,
        operation: &'static str,
    ) -> Result<Grant, VerifyError> {
        let lookup = self.store.find(keys).await.map_err(|error| self.store_failed(error))?;
        let digest = keys.digest();
        match lookup {
            Lookup::Active(grant) if !grant.session.is_expired_at(now) => {
                self.check_caller_session(grant, digest, now, operation).await
            }
            Lookup::Active(_) => Err(self.refuse(Rejection::Expired, Some(digest), operation)),
            Lookup::Revoked => Err(self.refuse(Rejection::Revoked, Some(digest), operation)),
            Lookup::Expired => Err(self.refuse(Rejection::Expired, Some(digest), operation)),
            Lookup::Missing => Err(self.refuse(Rejection::Unknown, Some(digest), operation)),
        }
    }

    /// The cascade: a session bound to a sign-in session that ended is revoked and refused.
    async fn check_caller_session(
        &self,
        grant: Grant,
        digest: &TokenDigest,
        now: SystemTime,
        operation: &'static str,
    ) -> Result<Grant, VerifyError> {
        let (Some(cascade), Some(caller_session)) = (&self.cascade, grant.session.caller_session()) else {
            return Ok(grant);
        };
        match cascade.is_active(caller_session, now).await {
            Ok(true) => Ok(grant),
            Ok(false) => {
                // Revoke rather than merely refuse, so every instance (and every later lookup) agrees
                // without asking the directory again. A failure here changes nothing: refused anyway.
                let revoked = self.store.revoke(digest).await;
                tracing::info!(
                    target: AUDIT_TARGET,
                    event = "session.revoked",
                    by = "cascade",
                    session_id = %grant.session.id(),
                    caller_session = %caller_session,
                    stored = revoked.is_ok(),
                );
                Err(self.refuse(Rejection::Revoked, Some(digest), operation))
            }
            Err(DirectoryError::Unavailable(cause)) => {
                self.counters.verify_errors.increment(1);
                Err(VerifyError::DirectoryUnavailable(cause))
            }
        }
    }

    fn refuse(
        &self,
        rejection: Rejection,
        digest: Option<&TokenDigest>,
        operation: &'static str,
    ) -> VerifyError {
        self.counters.refused(rejection).increment(1);
        tracing::info!(
            target: AUDIT_TARGET,
            event = "verification.refused",
            operation,
            reason = rejection.reason(),
            token = digest.map(|digest| tracing::field::display(digest.fingerprint())),
        );
        VerifyError::Rejected(rejection)
    }

    fn store_failed(&self, error: StoreError) -> VerifyError {
        self.counters.verify_errors.increment(1);
        VerifyError::StoreUnavailable(store_cause(error))
    }
}

fn admin_store_failed(error: StoreError) -> AdminError {
    AdminError::StoreUnavailable(store_cause(error))
}

/// The cause alone: the error variants that carry it already say "the session store is unavailable".
fn store_cause(error: StoreError) -> String {
    match error {
        StoreError::Unavailable(cause) => cause,
        StoreError::Conflict => StoreError::Conflict.to_string(),
    }
}

#[cfg(test)]
mod tests;
