//! [`UsageLedger`]: where proxied requests and tokens are counted against the limits of a session, of
//! its subject and of its real key.
//!
//! Every proxied request of a limited session goes through [`UsageLedger::admit`] before it is
//! forwarded: the request is counted and its token ceiling reserved, atomically, or it is refused. When
//! the answer has ended, [`UsageLedger::settle`] replaces the reservation with what the upstream
//! reported. So concurrent requests can never together pass a budget: each reserves before it goes.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sidekey_domain::{Limits, SecretKeyLimits, SecretRef, SessionId, Subject, SubjectLimits, TokenUsage};

/// How long a reservation stands when nobody settles it (the instance that made it died mid-request):
/// then it is dropped, and its tokens count again for others. Half an hour: far longer than any answer
/// takes to start, and longer than almost any stream lasts (a stream that outlives it is settled all
/// the same, only no longer held against concurrent requests).
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// One request asking to be admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The session making it.
    pub session: SessionId,
    /// When the session ends: its counters may be forgotten some time after.
    pub session_expires_at: SystemTime,
    /// The session's own limits.
    pub limits: Limits,
    /// The session's subject and the budgets of all its sessions, when it has one.
    pub subject: Option<(Subject, SubjectLimits)>,
    /// The session's real key and the budget of all its sessions.
    pub secret_key: (SecretRef, SecretKeyLimits),
    /// Tokens to hold for the request's answer until it is settled (0 when no token budget applies).
    pub reserve_tokens: u64,
    /// The instant of the request (from the service's clock).
    pub now: SystemTime,
}

impl Admission {
    /// Whether anything limits this request: without a limit there is nothing to count or refuse, and
    /// a request need not touch the ledger at all.
    pub fn is_limited(&self) -> bool {
        !self.limits.is_unlimited()
            || self.subject.as_ref().is_some_and(|(_, limits)| !limits.is_unlimited())
            || !self.secret_key.1.is_unlimited()
    }
}

/// Whose limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitScope {
    /// The session's own (`limits`).
    Session,
    /// Every session of the subject (`[limits.subject]`).
    Subject,
    /// Every session of the real key (`[limits.secret_key]`).
    SecretKey,
}

impl LimitScope {
    /// A stable label (metrics, audit events, problem details).
    pub fn label(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Subject => "subject",
            Self::SecretKey => "secret_key",
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many requests per minute: retry after the given time.
    RateLimited {
        /// Whose rate.
        scope: LimitScope,
        /// How long until one more request fits.
        retry_after: Duration,
    },
    /// A request or token budget is used up.
    QuotaExceeded {
        /// Whose budget.
        scope: LimitScope,
        /// When the budget's window resets (`None`: never, as a session's own budget).
        retry_after: Option<Duration>,
    },
}

/// What remains after an admission, for the answer's `X-Sidekey-*-Remaining` headers: the tighter of
/// the session's and its subject's, `None` when nothing limits it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Remaining {
    /// Requests the session may still make.
    pub requests: Option<u64>,
    /// Tokens still available, reservations in flight deducted.
    pub tokens: Option<u64>,
}

/// A reservation to settle once the answer has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Random, so that a settle finds exactly its own reservation.
    pub id: u128,
    /// The admission it was made for (its accounts, its windows' instant).
    pub admission: Admission,
}

/// The answer to an admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    /// Counted, and its tokens reserved.
    Yes {
        /// To settle when the answer has ended (boxed: it carries the whole admission, and a refusal
        /// is small).
        reservation: Box<Reservation>,
        /// What remains.
        remaining: Remaining,
    },
    /// Refused: nothing was counted or reserved.
    No(Refusal),
}

/// What a session has used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionUsage {
    /// Requests admitted.
    pub requests: u64,
    /// Input tokens settled.
    pub input_tokens: u64,
    /// Output tokens settled.
    pub output_tokens: u64,
    /// Tokens reserved by requests still in flight.
    pub reserved_tokens: u64,
}

/// Totals of one subject or key over one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowTotals {
    /// Requests admitted.
    pub requests: u64,
    /// Input tokens settled.
    pub input_tokens: u64,
    /// Output tokens settled.
    pub output_tokens: u64,
}

/// A subject's or a key's totals for the current day and month.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountUsage {
    /// The current UTC day.
    pub day: WindowTotals,
    /// The current UTC calendar month.
    pub month: WindowTotals,
}

/// Whose totals to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Account {
    /// Every session of a subject.
    Subject(Subject),
    /// Every session of a real key.
    SecretKey(SecretRef),
}

/// The ledger could not be asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The backend cannot be reached or did not answer in time. The text is for the log only.
    #[error("the usage ledger is unavailable: {0}")]
    Unavailable(String),
}

/// Where requests and tokens are counted.
///
/// # Errors
/// Every method of every implementation:
/// - MUST return [`LedgerError::Unavailable`] when its backend cannot be reached, within a bounded time;
///   callers then refuse the request (fail closed: a limited request is never forwarded unmetered);
/// - MUST NOT put a token or a real key into the error text.
///
/// And the contract of the counts:
/// - [`admit`](UsageLedger::admit) MUST be atomic per limit: however many instances admit at once, the
///   requests admitted never exceed `max_requests`, the rate never exceeds its `requests_per_minute`
///   (GCRA: a burst of the whole minute's allowance, then one request per interval), and the tokens
///   settled plus reserved never exceed a token budget; a refused admission MUST count and reserve
///   nothing, at any scope;
/// - a reservation nobody settles MUST stop counting after [`RESERVATION_LIFETIME`];
/// - day and month totals MUST reset by themselves at their UTC window boundaries.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait UsageLedger: Send + Sync + 'static {
    /// Counts one request and reserves its tokens, or refuses it.
    async fn admit(&self, admission: &Admission) -> Result<Admitted, LedgerError>;

    /// Replaces `reservation` with the tokens the answer used (counted in the windows of the
    /// admission's instant). Settling a reservation that lapsed MUST count the usage all the same for at
    /// least [`RESERVATION_LIFETIME`] after it lapsed (later, an implementation may drop it); settling
    /// one twice counts it once.
    async fn settle(&self, reservation: &Reservation, usage: TokenUsage) -> Result<(), LedgerError>;

    /// What a session has used so far.
    async fn session_usage(&self, session: SessionId) -> Result<SessionUsage, LedgerError>;

    /// A subject's or key's totals for the day and month containing `now`.
    async fn account_usage(&self, account: &Account, now: SystemTime) -> Result<AccountUsage, LedgerError>;

    /// Counts a new `session` of `subject`, live until `expires_at`, against at most `max_live` live
    /// sessions of that subject: `false` (nothing counted) when `max_live` already live at `now`. Atomic,
    /// like [`admit`](UsageLedger::admit): concurrent issuances never pass `max_live` together.
    async fn admit_session(
        &self,
        subject: &Subject,
        session: SessionId,
        expires_at: SystemTime,
        max_live: u64,
        now: SystemTime,
    ) -> Result<bool, LedgerError>;

    /// Stops counting `session` of `subject`: it ended before its expiry (revoked, or never stored).
    async fn release_session(&self, subject: &Subject, session: SessionId) -> Result<(), LedgerError>;

    /// Whether the ledger can be asked now (readiness).
    async fn ping(&self) -> Result<(), LedgerError>;
}
