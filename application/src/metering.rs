//! Metering: admitting a limited session's proxied requests against its limits and budgets, settling
//! their token usage, and reading what was used.
//!
//! [`Metering`] stands between the proxy and the [`UsageLedger`]: it knows the configured budgets of
//! subjects and keys, builds each admission from the session, counts refusals, and audits the first
//! refusal of each budget and window (`quota.exhausted`). A request that nothing limits never reaches the
//! ledger.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use sidekey_domain::{Period, SecretKeyLimits, Session, SubjectLimits, TokenUsage};

use crate::AUDIT_TARGET;
use crate::ports::{
    Account, AccountUsage, Admission, Admitted, Clock, LedgerError, LimitScope, Refusal, Reservation,
    SessionUsage, UsageLedger,
};

/// The budgets that span sessions (`[limits.subject]`, `[limits.secret_key]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budgets {
    /// Every session of one subject.
    pub subject: SubjectLimits,
    /// Every session of one real key.
    pub secret_key: SecretKeyLimits,
}

/// Why a request could not be admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// A limit refused it: nothing was counted.
    #[error("refused by a limit: {0:?}")]
    Refused(Refusal),
    /// The ledger could not be asked (fail closed: the request is not forwarded).
    #[error("the usage ledger is unavailable: {0}")]
    LedgerUnavailable(String),
}

/// Admits, settles and reads usage; see the [module documentation](self).
pub struct Metering {
    ledger: Arc<dyn UsageLedger>,
    clock: Arc<dyn Clock>,
    budgets: Budgets,
    /// (scope, account, window) already audited as exhausted: one event per budget and window.
    exhausted: Mutex<HashSet<(LimitScope, String)>>,
}

impl std::fmt::Debug for Metering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metering").field("budgets", &self.budgets).finish_non_exhaustive()
    }
}

/// Audit-dedup entries kept before the set is cleared (a new day starts most of them over anyway).
const EXHAUSTED_MEMORY: usize = 10_000;

impl Metering {
    /// Metering on `ledger`, with the budgets that span sessions.
    pub fn new(ledger: Arc<dyn UsageLedger>, clock: Arc<dyn Clock>, budgets: Budgets) -> Self {
        Self { ledger, clock, budgets, exhausted: Mutex::new(HashSet::new()) }
    }

    /// The admission of one request of `session`, reserving `reserve_tokens` when a token budget applies.
    pub fn admission(&self, session: &Session, reserve_tokens: u64) -> Admission {
        let subject = session.subject().map(|subject| (subject.clone(), self.budgets.subject));
        let tokens_limited = session.limits().max_tokens().is_some()
            || subject.as_ref().is_some_and(|(_, limits)| {
                limits.tokens_per_day.is_some() || limits.tokens_per_month.is_some()
            })
            || self.budgets.secret_key.tokens_per_day.is_some();
        Admission {
            session: session.id(),
            session_expires_at: session.expires_at(),
            limits: *session.limits(),
            subject,
            secret_key: (session.secret_ref().clone(), self.budgets.secret_key),
            reserve_tokens: if tokens_limited { reserve_tokens } else { 0 },
            now: self.clock.now(),
        }
    }

    /// Whether any limit or budget applies to `session`'s requests.
    pub fn applies_to(&self, session: &Session) -> bool {
        self.admission(session, 0).is_limited()
    }

    /// Whether a token budget applies to `session` (its answers' usage must then be read).
    pub fn meters_tokens(&self, session: &Session) -> bool {
        self.admission(session, 1).reserve_tokens > 0
    }

    /// Admits one request of `session`: `Ok(None)` when nothing limits it (the ledger is not asked).
    ///
    /// # Errors
    /// [`AdmitError::Refused`] when a limit refuses it (audited and counted), or
    /// [`AdmitError::LedgerUnavailable`].
    pub async fn admit(
        &self,
        session: &Session,
        reserve_tokens: u64,
    ) -> Result<Option<(Box<Reservation>, crate::ports::Remaining)>, AdmitError> {
        let admission = self.admission(session, reserve_tokens);
        if !admission.is_limited() {
            return Ok(None);
        }
        match self.ledger.admit(&admission).await {
            Ok(Admitted::Yes { reservation, remaining }) => Ok(Some((reservation, remaining))),
            Ok(Admitted::No(refusal)) => {
                self.refused(&admission, refusal);
                Err(AdmitError::Refused(refusal))
            }
            Err(LedgerError::Unavailable(cause)) => Err(AdmitError::LedgerUnavailable(cause)),
        }
    }

    /// Settles `reservation` with the tokens the answer used. A failure is logged, not returned: the
    /// answer has already gone to the client, and the reservation lapses by itself.
    pub async fn settle(&self, reservation: &Reservation, usage: TokenUsage) {
        if let Err(error) = self.ledger.settle(reservation, usage).await {
            tracing::warn!(%error, session_id = %reservation.admission.session, "a reservation could not be settled; it will lapse");
        }
    }

    /// What `session` has used (zero when nothing limits it: it is not counted).
    ///
    /// # Errors
    /// [`LedgerError`] when the ledger cannot be asked.
    pub async fn session_usage(&self, session: &Session) -> Result<SessionUsage, LedgerError> {
        if !self.applies_to(session) {
            return Ok(SessionUsage::default());
        }
        self.ledger.session_usage(session.id()).await
    }

    /// A subject's or key's totals for the current day and month.
    ///
    /// # Errors
    /// [`LedgerError`] when the ledger cannot be asked.
    pub async fn account_usage(&self, account: &Account) -> Result<AccountUsage, LedgerError> {
        self.ledger.account_usage(account, self.clock.now()).await
    }

    /// Whether the ledger can be asked (readiness).
    ///
    /// # Errors
    /// [`LedgerError`] when it cannot.
    pub async fn ping(&self) -> Result<(), LedgerError> {
        self.ledger.ping().await
    }

    fn refused(&self, admission: &Admission, refusal: Refusal) {
        let (reason, scope) = match refusal {
            Refusal::RateLimited { scope, .. } => ("rate_limited", scope),
            Refusal::QuotaExceeded { scope, .. } => ("quota_exceeded", scope),
        };
        metrics::counter!("sidekey_quota_refusals_total", "scope" => scope.label(), "reason" => reason)
            .increment(1);
        if let Refusal::QuotaExceeded { scope, .. } = refusal {
            let account = match scope {
                LimitScope::Session => admission.session.to_string(),
                LimitScope::Subject => {
                    let subject = admission.subject.as_ref().map_or("", |(subject, _)| subject.as_str());
                    format!("{subject}:{}", Period::Day.window(admission.now).label)
                }
                LimitScope::SecretKey => {
                    format!("{}:{}", admission.secret_key.0, Period::Day.window(admission.now).label)
                }
            };
            let mut exhausted = self.exhausted.lock().unwrap_or_else(PoisonError::into_inner);
            if exhausted.len() >= EXHAUSTED_MEMORY {
                exhausted.clear();
            }
            if exhausted.insert((scope, account)) {
                tracing::warn!(
                    target: AUDIT_TARGET,
                    event = "quota.exhausted",
                    scope = scope.label(),
                    session_id = %admission.session,
                    subject = admission.subject.as_ref().map(|(subject, _)| subject.as_str()),
                    secret_key_id = %admission.secret_key.0,
                );
            }
        }
    }

    /// The clock's now (for answers that compute what remains).
    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }
}
