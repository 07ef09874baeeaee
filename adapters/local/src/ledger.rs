//! [`InMemoryUsageLedger`]: the [`UsageLedger`] of a single instance, in this process's memory.
//!
//! One mutex over every account: an admission checks and updates the session's, the subject's and the
//! key's counters in one critical section, so it is atomic across all of them, and the ledger is only
//! touched by limited requests (a few microseconds each, far below the upstream round trip they precede).
//!
//! # Counters
//! - per session: requests admitted, tokens settled, live reservations, and the GCRA state of its rate;
//! - per subject and day, subject and month, key and day, key and month: the same totals and
//!   reservations, and per subject the GCRA state of its rate.
//!
//! A reservation stays live until settled or until [`RESERVATION_LIFETIME`] has passed; then it is kept,
//! lapsed, for as long again, so that a late settle still counts (once). A settle removes it, so a
//! repeated settle finds nothing and counts nothing, and memory holds only unsettled reservations: no
//! tombstone per request. (The Redis ledger keeps tombstones, by expiry in sorted sets that Redis
//! prunes by range; the one difference is a settle more than a lifetime after its lapse, which counts
//! there and not here.) Counters are forgotten once nothing can ask for
//! them: a session's a retention after its expiry, a window's a day after its end; a sweep runs every
//! `SWEEP_EVERY` admissions, so memory follows the live accounts.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sidekey_application::ports::{
    Account, AccountUsage, Admission, Admitted, LedgerError, LimitScope, RESERVATION_LIFETIME, Refusal,
    Remaining, Reservation, SessionUsage, UsageLedger, WindowTotals,
};
use sidekey_application::{Clock, ENDED_SESSION_RETENTION};
use sidekey_domain::{Period, SecretRef, SessionId, Subject, TokenUsage};

/// Admissions between two sweeps of forgotten counters.
const SWEEP_EVERY: u64 = 1024;
/// How long a window's totals are kept after it ends (the admin usage of "yesterday" stays readable
/// through the boundary; nothing reads older ones).
const WINDOW_RETENTION: Duration = Duration::from_secs(86_400);

/// What one account has used.
#[derive(Debug, Default)]
struct Counter {
    requests: u64,
    usage: TokenUsage,
    reservations: HashMap<u128, Held>,
    /// The tokens of the `Live` reservations, kept beside them so that an admission reads one number
    /// instead of summing every reservation.
    live_tokens: u64,
    /// When each unsettled reservation's current state ends, in the order the states were set. Instants
    /// from the clock only grow, so the front is the next to end and [`Counter::tidy`] touches only what
    /// is due, never every reservation. An entry whose reservation was settled since is dropped then.
    deadlines: VecDeque<(SystemTime, u128)>,
    /// When the counter may be forgotten.
    forget_at: Option<SystemTime>,
}

#[derive(Debug, Clone, Copy)]
enum Held {
    /// Reserved until `until`.
    Live { tokens: u64, until: SystemTime },
    /// Lapsed unsettled: no longer held, but its usage still counts when it is settled by `until`.
    Lapsed { until: SystemTime },
}

impl Held {
    fn until(self) -> SystemTime {
        match self {
            Self::Live { until, .. } | Self::Lapsed { until } => until,
        }
    }
}

impl Counter {
    /// Tokens held by live reservations at `now`.
    fn reserved(&mut self, now: SystemTime) -> u64 {
        self.tidy(now);
        self.live_tokens
    }

    /// Tokens settled plus reserved.
    fn committed(&mut self, now: SystemTime) -> u64 {
        self.usage.total().saturating_add(self.reserved(now))
    }

    fn hold(&mut self, id: u128, tokens: u64, now: SystemTime) {
        let until = now + RESERVATION_LIFETIME;
        self.reservations.insert(id, Held::Live { tokens, until });
        self.deadlines.push_back((until, id));
        self.live_tokens = self.live_tokens.saturating_add(tokens);
    }

    /// Settles reservation `id` with `usage`, live or lapsed: false when it is neither (settled
    /// already, so a second settle counts nothing; or lapsed longer ago than a reservation's lifetime).
    fn settle(&mut self, id: u128, usage: TokenUsage) -> bool {
        match self.reservations.remove(&id) {
            Some(Held::Live { tokens, .. }) => self.live_tokens = self.live_tokens.saturating_sub(tokens),
            Some(Held::Lapsed { .. }) => {}
            None => return false,
        }
        self.usage.input = self.usage.input.saturating_add(usage.input);
        self.usage.output = self.usage.output.saturating_add(usage.output);
        true
    }

    /// Ends what is due at `now`: live reservations lapse (kept for as long again, so that a late
    /// settle still counts), lapsed ones are forgotten.
    fn tidy(&mut self, now: SystemTime) {
        while let Some(&(due, id)) = self.deadlines.front() {
            if due > now {
                break;
            }
            self.deadlines.pop_front();
            match self.reservations.get(&id).copied() {
                // Settled since (and maybe held again under a new id): nothing of it is due.
                None => {}
                Some(held) if held.until() != due => {}
                Some(Held::Live { tokens, .. }) => {
                    // Kept a lifetime from when it lapsed; if that has passed too, a later turn of
                    // this loop forgets it.
                    let until = due + RESERVATION_LIFETIME;
                    self.reservations.insert(id, Held::Lapsed { until });
                    self.deadlines.push_back((until, id));
                    self.live_tokens = self.live_tokens.saturating_sub(tokens);
                }
                Some(Held::Lapsed { .. }) => {
                    self.reservations.remove(&id);
                }
            }
        }
    }

    fn totals(&self) -> WindowTotals {
        WindowTotals {
            requests: self.requests,
            input_tokens: self.usage.input,
            output_tokens: self.usage.output,
        }
    }
}

/// Which counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Session(SessionId),
    Subject(Subject, Period, String),
    Secret(SecretRef, Period, String),
}

/// Whose rate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Rate {
    Session(SessionId),
    Subject(Subject),
}

#[derive(Debug, Default)]
struct State {
    counters: HashMap<Key, Counter>,
    /// Each subject's live sessions, until when (`max_live_per_subject`).
    live: HashMap<Subject, HashMap<SessionId, SystemTime>>,
    /// GCRA: each rate's theoretical arrival time.
    rates: HashMap<Rate, SystemTime>,
    admissions: u64,
}

/// The usage ledger in this process's memory; see the [module documentation](self).
pub struct InMemoryUsageLedger {
    state: Mutex<State>,
    /// For settles and reads, which carry no instant of their own.
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for InMemoryUsageLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryUsageLedger").finish_non_exhaustive()
    }
}

impl InMemoryUsageLedger {
    /// An empty ledger on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { state: Mutex::new(State::default()), clock }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The GCRA decision for a rate of `per_minute` with theoretical arrival time `tat` at `now`: the new
/// arrival time when the request fits, else how long until it would.
pub fn gcra(tat: Option<SystemTime>, per_minute: u32, now: SystemTime) -> Result<SystemTime, Duration> {
    let interval = Duration::from_secs(60) / per_minute.max(1);
    let start = tat.filter(|tat| *tat > now).unwrap_or(now);
    let next = start + interval;
    // A burst of the whole minute's allowance: at most `per_minute` intervals ahead of now.
    let tolerance = interval * per_minute;
    let ahead = next.duration_since(now).unwrap_or_default();
    if ahead <= tolerance { Ok(next) } else { Err(ahead - tolerance) }
}

/// The counters an admission touches, each with the budget it has there.
struct Budgets {
    keys: Vec<(Key, Option<u64>, LimitScope, Option<SystemTime>)>,
}

fn budgets(admission: &Admission) -> Budgets {
    let now = admission.now;
    let session_end = admission.session_expires_at + ENDED_SESSION_RETENTION;
    let mut keys = vec![(
        Key::Session(admission.session),
        admission.limits.max_tokens(),
        LimitScope::Session,
        Some(session_end),
    )];
    if let Some((subject, limits)) = &admission.subject {
        for (period, budget) in
            [(Period::Day, limits.tokens_per_day), (Period::Month, limits.tokens_per_month)]
        {
            let window = period.window(now);
            keys.push((
                Key::Subject(subject.clone(), period, window.label),
                budget,
                LimitScope::Subject,
                Some(window.end),
            ));
        }
    }
    let (secret_ref, limits) = &admission.secret_key;
    for (period, budget) in [(Period::Day, limits.tokens_per_day), (Period::Month, None)] {
        let window = period.window(now);
        keys.push((
            Key::Secret(secret_ref.clone(), period, window.label),
            budget,
            LimitScope::SecretKey,
            Some(window.end),
        ));
    }
    Budgets { keys }
}

#[async_trait]
impl UsageLedger for InMemoryUsageLedger {
    async fn admit(&self, admission: &Admission) -> Result<Admitted, LedgerError> {
        let now = admission.now;
        let mut state = self.state();
        state.admissions += 1;
        if state.admissions.is_multiple_of(SWEEP_EVERY) {
            sweep(&mut state, now);
        }
        // Rates first: a refused request must not count anywhere.
        let mut rates = Vec::new();
        if let Some(per_minute) = admission.limits.requests_per_minute() {
            let rate = Rate::Session(admission.session);
            match gcra(state.rates.get(&rate).copied(), per_minute, now) {
                Ok(next) => rates.push((rate, next)),
                Err(wait) => {
                    return Ok(Admitted::No(Refusal::RateLimited {
                        scope: LimitScope::Session,
                        retry_after: wait,
                    }));
                }
            }
        }
        if let Some((subject, limits)) = &admission.subject
            && let Some(per_minute) = limits.requests_per_minute
        {
            let rate = Rate::Subject(subject.clone());
            match gcra(state.rates.get(&rate).copied(), per_minute, now) {
                Ok(next) => rates.push((rate, next)),
                Err(wait) => {
                    return Ok(Admitted::No(Refusal::RateLimited {
                        scope: LimitScope::Subject,
                        retry_after: wait,
                    }));
                }
            }
        }
        let session_key = Key::Session(admission.session);
        let session_requests = state.counters.get(&session_key).map_or(0, |counter| counter.requests);
        if admission.limits.max_requests().is_some_and(|max| session_requests >= max) {
            return Ok(Admitted::No(Refusal::QuotaExceeded {
                scope: LimitScope::Session,
                retry_after: None,
            }));
        }
        let budgets = budgets(admission);
        let mut tokens_left: Option<u64> = None;
        for (key, budget, scope, window_end) in &budgets.keys {
            let Some(budget) = budget else { continue };
            let committed = state.counters.get_mut(key).map_or(0, |counter| counter.committed(now));
            let after = committed.saturating_add(admission.reserve_tokens);
            if after > *budget {
                let retry_after = match scope {
                    LimitScope::Session => None,
                    _ => window_end.and_then(|end| end.duration_since(now).ok()),
                };
                return Ok(Admitted::No(Refusal::QuotaExceeded { scope: *scope, retry_after }));
            }
            if *scope != LimitScope::SecretKey {
                let left = budget - after;
                tokens_left = Some(tokens_left.map_or(left, |tighter| tighter.min(left)));
            }
        }
        // Admitted: count and reserve everywhere.
        let id = u128::from(getrandom_u64()) << 64 | u128::from(getrandom_u64());
        for (rate, next) in rates {
            state.rates.insert(rate, next);
        }
        for (key, _, _, forget_at) in budgets.keys {
            let counter = state.counters.entry(key).or_default();
            counter.requests += 1;
            counter.forget_at = forget_at.map(|end| end + WINDOW_RETENTION).max(counter.forget_at);
            // Held even at 0 tokens: the settle must find it to count what the answer reports.
            counter.hold(id, admission.reserve_tokens, now);
        }
        let remaining = Remaining {
            requests: admission.limits.max_requests().map(|max| max.saturating_sub(session_requests + 1)),
            tokens: tokens_left,
        };
        Ok(Admitted::Yes {
            reservation: Box::new(Reservation { id, admission: admission.clone() }),
            remaining,
        })
    }

    async fn settle(&self, reservation: &Reservation, usage: TokenUsage) -> Result<(), LedgerError> {
        let admission = &reservation.admission;
        let mut state = self.state();
        let now = self.clock.now();
        for (key, _, _, _) in budgets(admission).keys {
            if let Some(counter) = state.counters.get_mut(&key) {
                counter.tidy(now);
                counter.settle(reservation.id, usage);
            }
        }
        Ok(())
    }

    async fn session_usage(&self, session: SessionId) -> Result<SessionUsage, LedgerError> {
        let now = self.clock.now();
        let mut state = self.state();
        Ok(state.counters.get_mut(&Key::Session(session)).map_or_else(SessionUsage::default, |counter| {
            SessionUsage {
                requests: counter.requests,
                input_tokens: counter.usage.input,
                output_tokens: counter.usage.output,
                reserved_tokens: counter.reserved(now),
            }
        }))
    }

    async fn account_usage(&self, account: &Account, now: SystemTime) -> Result<AccountUsage, LedgerError> {
        let state = self.state();
        let totals = |period: Period| {
            let label = period.window(now).label;
            let key = match account {
                Account::Subject(subject) => Key::Subject(subject.clone(), period, label),
                Account::SecretKey(secret_ref) => Key::Secret(secret_ref.clone(), period, label),
            };
            state.counters.get(&key).map(Counter::totals).unwrap_or_default()
        };
        Ok(AccountUsage { day: totals(Period::Day), month: totals(Period::Month) })
    }

    async fn admit_session(
        &self,
        subject: &Subject,
        session: SessionId,
        expires_at: SystemTime,
        max_live: u64,
        now: SystemTime,
    ) -> Result<bool, LedgerError> {
        let mut state = self.state();
        let live = state.live.entry(subject.clone()).or_default();
        live.retain(|_, until| *until > now);
        if !live.contains_key(&session) && live.len() as u64 >= max_live {
            return Ok(false);
        }
        live.insert(session, expires_at);
        Ok(true)
    }

    async fn release_session(&self, subject: &Subject, session: SessionId) -> Result<(), LedgerError> {
        let mut state = self.state();
        if let Some(live) = state.live.get_mut(subject) {
            live.remove(&session);
            if live.is_empty() {
                state.live.remove(subject);
            }
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), LedgerError> {
        Ok(())
    }
}

/// Forgets counters nothing can ask for any more, and lapsed rates.
fn sweep(state: &mut State, now: SystemTime) {
    state.counters.retain(|_, counter| {
        counter.tidy(now);
        counter.forget_at.is_none_or(|at| at > now) || !counter.reservations.is_empty()
    });
    state.rates.retain(|_, tat| *tat > now);
    state.live.retain(|_, live| {
        live.retain(|_, until| *until > now);
        !live.is_empty()
    });
}

fn getrandom_u64() -> u64 {
    // A reservation id only needs to be unique among live reservations; the OS generator never fails
    // in practice, and a clock-derived fallback keeps the ledger working if it did.
    getrandom::u64().unwrap_or_else(|_| {
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |since| since.as_nanos() as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_reservations_leave_nothing_behind_and_unsettled_ones_lapse_then_go() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let used = TokenUsage { input: 1, output: 2 };
        let mut counter = Counter::default();
        for id in 0..1000 {
            counter.hold(id, 10, start);
            assert!(counter.settle(id, used));
        }
        assert!(!counter.settle(7, used), "a second settle counts nothing");
        assert!(counter.reservations.is_empty(), "no tombstone per request");
        counter.hold(5000, 7, start);
        assert_eq!(counter.reserved(start), 7, "only the unsettled reservation is held");
        assert_eq!(counter.committed(start), 3000 + 7);
        // The settled ones' deadlines go as they come due, without a scan.
        let lapsed = start + RESERVATION_LIFETIME + Duration::from_secs(1);
        assert_eq!(counter.reserved(lapsed), 0, "the unsettled reservation lapsed");
        assert_eq!((counter.reservations.len(), counter.deadlines.len()), (1, 1));
        assert!(counter.settle(5000, used), "a late settle still counts");
        assert_eq!(counter.usage.total(), 3003);

        counter.hold(6000, 5, lapsed);
        let forgotten = lapsed + RESERVATION_LIFETIME * 2 + Duration::from_secs(1);
        counter.tidy(forgotten);
        assert!(counter.reservations.is_empty() && counter.deadlines.is_empty());
        assert!(!counter.settle(6000, used), "forgotten a lifetime after its lapse");
    }
}
