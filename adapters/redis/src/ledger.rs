//! [`RedisUsageLedger`]: the [`UsageLedger`] that every sidekey instance shares through Redis.
//!
//! The semantics are the in-memory ledger's (`sidekey_local::InMemoryUsageLedger`; one contract suite
//! runs against both): the same counters, the same GCRA, the same `Remaining` and `retry_after`
//! values. What differs is how an admission is made atomic when its counters live on different Redis
//! nodes, and that is what this documentation records.
//!
//! # Layout
//! - this module: the ledger, how an admission goes through its accounts and how it is undone;
//! - `keys`: key names, one hash tag per account;
//! - `scripts`: the Lua scripts, one per operation on one account.
//!
//! # Accounts
//! Counters are grouped into accounts, each under its own hash tag so that one script can check and
//! update a whole account atomically, on one server and on Redis Cluster alike:
//! - the **session**: its requests, tokens and reservations, and its GCRA state, under the session
//!   store's shard tag `{<prefix>:<shard>}` (the same slot as the session itself);
//! - the **subject**: a counter per UTC day and per UTC month, and its GCRA state, under
//!   `{<prefix>:sub:<subject>}`;
//! - the **real key**: a counter per day and per month, under `{<prefix>:key:<secret_key_id>}`.
//!
//! A counter holds requests, input and output tokens, and the tokens of its live reservations; the
//! reservations themselves are a sorted set scored by when they lapse plus a hash of their amounts, and
//! settled ones leave a tombstone for twice [`RESERVATION_LIFETIME`], so a second settle counts nothing
//! (see `keys` for the names). Every script that touches a counter first prunes it: lapsed reservations
//! stop counting, old tombstones go.
//!
//! # Atomicity
//! An admission runs one script per account, in a fixed order: session, subject, key. Each script checks
//! its account's limits and, only if all of them pass, counts the request there, reserves its tokens and
//! moves its GCRA arrival time; otherwise it changes nothing and names the limit that refused. When a
//! later account refuses, the accounts already counted are released (the `RELEASE` script): the request
//! un-counted, the reservation dropped, and the arrival time restored to what it was before, but only if
//! it is still the one this admission set (each stored arrival time carries the id of the reservation
//! that set it, so "unchanged" is exact).
//!
//! What that guarantees:
//! - **A budget is never exceeded**, however many instances admit at once: on each account the check and
//!   the count are one atomic script, and a release only takes back what that same admission counted.
//!   Everything an account holds at any instant is within its limits.
//! - **A refused admission counts nothing**, once [`UsageLedger::admit`] has returned: the release is
//!   awaited before the refusal is. During that round trip the earlier accounts carry the refused
//!   request, so a concurrent request there may be refused although it would fit a moment later: a
//!   refusal too many under contention, never an admission too many.
//! - **A rate is never exceeded either.** When another request has moved the arrival time since, the
//!   release leaves it: that request was admitted counting this one's interval, and undoing it would
//!   mean recomputing from history the script does not keep. The cost is at most one interval of the
//!   rate, the safe way.
//!
//! Why not one script over all the accounts: on Redis Cluster a script may only touch keys of one slot,
//! and putting every session, subject and key under one hash tag would put the whole ledger on one
//! master, the bottleneck the cluster is there to remove. `MULTI`/`WATCH` has the same single-slot rule,
//! and a lock across slots (Redlock) adds round trips and fails in subtler ways (a pause past the lock's
//! expiry) than a release does. One server could run one script, but then one server and a cluster would
//! run different code with different guarantees; this ledger runs the same scripts on both. An admission
//! costs one round trip per account (two or three), a settle as many run concurrently, a read one.
//!
//! The order of the checks differs slightly from the in-memory ledger's, which checks both rates before
//! any budget: when a session's budget and its subject's rate both refuse, that ledger names the
//! subject's rate and this one the session's budget. Either way the request is refused.
//!
//! # Settling
//! One script per account, concurrently; in each counter it drops the reservation (if still live) and
//! adds the tokens used, unless a tombstone says it was settled already. A reservation that lapsed is
//! settled all the same, as the port asks. A settle is idempotent: one that failed may simply be
//! retried.
//!
//! # Time
//! "Now" comes from the [`Clock`] port (an admission's own instant, else the ledger's clock) and is
//! passed to every script; Redis's clock never decides anything. Expiries are set as durations from
//! that now (`PEXPIRE`), so an offset between Redis's clock and the service's does not matter. A GCRA
//! arrival time is kept to the nanosecond (see `scripts` for how Lua's doubles manage it), so rates
//! behave exactly as the in-memory ledger's; reservation lapses are milliseconds, rounded so that a
//! reservation never stops counting early.
//!
//! # Nothing grows forever
//! Every key gets an expiry from the script that writes it: a session's counter when the session has
//! ended plus [`ENDED_SESSION_RETENTION`] plus [`RESERVATION_LIFETIME`] (the latest any admission
//! named: a session may be extended); a window's counter a day after the window ends (yesterday stays
//! readable through midnight); a GCRA state when its arrival time has passed, when it is as good as
//! absent.
//!
//! # Failures
//! Every call is bounded by the connect timeout plus the command timeout and answers
//! [`LedgerError::Unavailable`] past it, so callers refuse the request: a limited request is never
//! forwarded unmetered. [`RedisUsageLedger::connect`] connects nothing; the first call does, and broken
//! connections are replaced by the next call. When an admission fails, or is dropped, after some
//! accounts have counted it, those are released in the background. A release that fails leaves its
//! counts in place: the reservation lapses by itself, and the request stays counted in its windows
//! (an account charged for a request that never went, never the reverse). A script that timed out may
//! still have run; it is not released, with the same, safe, consequence.

mod keys;
mod scripts;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use redis::Value;
use sidekey_application::ports::{
    Account, AccountUsage, Admission, Admitted, LedgerError, LimitScope, RESERVATION_LIFETIME, Refusal,
    Remaining, Reservation, SessionUsage, UsageLedger, WindowTotals,
};
use sidekey_application::{Clock, ENDED_SESSION_RETENTION};
use sidekey_domain::{Period, SessionId, TokenUsage};

use self::keys::{CounterKeys, LedgerKeys};
use self::scripts::{AccountKeys, Admit, CounterTerms, LedgerScripts, Now, Rate, Release, Settle};
use crate::connection::{ConfigError, Connector, Unavailable};
use crate::store::RedisStoreSettings;
use crate::store::keys::{duration_nanos, millis_ceil, nanos};

/// How long a window's totals are kept after it ends: the admin usage of "yesterday" stays readable
/// through the boundary (the in-memory ledger's retention).
const WINDOW_RETENTION: Duration = Duration::from_secs(86_400);

/// How long a settled reservation's tombstone stands: twice its lifetime, as in the in-memory ledger.
const TOMBSTONE_LIFETIME: Duration = RESERVATION_LIFETIME.saturating_mul(2);

/// Usage counted in Redis, shared by every instance; see the [module documentation](self).
///
/// Share it as `Arc<RedisUsageLedger>` (which coerces to `Arc<dyn UsageLedger>`).
pub struct RedisUsageLedger {
    /// Shared with the background releases of failed or dropped admissions.
    inner: Arc<Inner>,
}

struct Inner {
    redis: Connector,
    keys: LedgerKeys,
    scripts: LedgerScripts,
    /// For settles and reads, which carry no instant of their own.
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for RedisUsageLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisUsageLedger").field("keys", &self.inner.keys).finish_non_exhaustive()
    }
}

impl RedisUsageLedger {
    /// A ledger on the Redis at `settings.url` (one server or a cluster), keys under `settings.prefix`,
    /// time from `clock`. The session store's settings serve as they are: the ledger's session counters
    /// share the store's shard tags, so give both the same prefix.
    ///
    /// Connects nothing: the first call does, so the service starts (and its readiness probe says 503)
    /// while Redis is down.
    ///
    /// # Errors
    /// [`ConfigError`] for an invalid URL or prefix; the text never quotes the URL, which may hold a
    /// password.
    pub async fn connect(settings: RedisStoreSettings, clock: Arc<dyn Clock>) -> Result<Self, ConfigError> {
        let keys = LedgerKeys::new(&settings.prefix)?;
        let redis = Connector::new(&settings.url, settings.connect_timeout, settings.command_timeout)?;
        Ok(Self { inner: Arc::new(Inner { redis, keys, scripts: LedgerScripts::new(), clock }) })
    }
}

/// One account an admission goes through, and its limits there.
struct AccountPlan {
    scope: LimitScope,
    keys: AccountKeys,
    rate: Option<Rate>,
    /// The request budget of the first counter (a session's `max_requests`).
    max_requests: Option<u64>,
    /// One per counter of `keys`.
    terms: Vec<CounterTerms>,
    /// When each counter's window ends (`None`: a session's counter, which has none).
    window_ends: Vec<Option<SystemTime>>,
}

/// What one account's admit script answered.
enum AccountAnswer {
    Admitted(Counted),
    Refused(Refusal),
}

/// An account that counted the admission.
struct Counted {
    /// The first counter's requests, this one included.
    requests: u64,
    /// The GCRA value before the admission and the one it set (empty: none).
    rate_before: String,
    rate_set: String,
    /// Each counter's tokens committed (settled plus reserved), this reservation included.
    committed: Vec<u64>,
}

impl Inner {
    /// The accounts `admission` goes through, in the order it goes through them.
    fn plan(&self, admission: &Admission) -> Vec<AccountPlan> {
        let now = admission.now;
        let session = admission.session;
        let session_keep = nanos(admission.session_expires_at)
            .saturating_add(duration_nanos(ENDED_SESSION_RETENTION.saturating_add(RESERVATION_LIFETIME)));
        let session_rate = admission.limits.requests_per_minute();
        let mut plans = vec![AccountPlan {
            scope: LimitScope::Session,
            keys: AccountKeys {
                rate: session_rate.map(|_| self.keys.session_rate(session)),
                counters: vec![self.keys.session(session)],
            },
            rate: session_rate.map(gcra),
            max_requests: admission.limits.max_requests(),
            terms: vec![CounterTerms {
                budget: admission.limits.max_tokens(),
                keep_ms: millis_ceil(session_keep),
            }],
            window_ends: vec![None],
        }];
        if let Some((subject, limits)) = &admission.subject {
            let windows = [(Period::Day, limits.tokens_per_day), (Period::Month, limits.tokens_per_month)];
            plans.push(windowed(
                LimitScope::Subject,
                limits.requests_per_minute.map(|_| self.keys.subject_rate(subject)),
                limits.requests_per_minute.map(gcra),
                windows.map(|(period, budget)| {
                    let window = period.window(now);
                    (self.keys.subject(subject, period, &window.label), budget, window.end)
                }),
            ));
        }
        let (secret_ref, limits) = &admission.secret_key;
        let windows = [(Period::Day, limits.tokens_per_day), (Period::Month, None)];
        plans.push(windowed(
            LimitScope::SecretKey,
            None,
            None,
            windows.map(|(period, budget)| {
                let window = period.window(now);
                (self.keys.secret_key(secret_ref, period, &window.label), budget, window.end)
            }),
        ));
        plans
    }

    /// Runs the admit script on one account.
    async fn admit_in(
        &self,
        plan: &AccountPlan,
        admission: &Admission,
        now: &Now,
        id: &str,
    ) -> Result<AccountAnswer, Unavailable> {
        let lapse = nanos(admission.now).saturating_add(duration_nanos(RESERVATION_LIFETIME));
        let invocation = self.scripts.admit(&Admit {
            account: &plan.keys,
            now,
            id,
            reserve: admission.reserve_tokens,
            lapse_ms: millis_ceil(lapse),
            rate: plan.rate,
            max_requests: plan.max_requests,
            terms: &plan.terms,
        });
        let answer: Vec<String> = self.redis.script("admit", &invocation).await?;
        parse_admit(plan, admission.now, &answer)
            .ok_or_else(|| Unavailable("unexpected answer from the admit script".to_owned()))
    }

    /// Releases what an admission counted on `charges`' accounts (the latest first), logging what could
    /// not be released: it stays counted, which only ever refuses more.
    async fn release(&self, id: &str, now: &Now, charges: &[Charge]) {
        for charge in charges.iter().rev() {
            let invocation = self.scripts.release(&Release {
                account: &charge.keys,
                now,
                id,
                rate_set: &charge.rate_set,
                rate_before: &charge.rate_before,
            });
            if let Err(Unavailable(cause)) = self.redis.script::<i64>("release", &invocation).await {
                tracing::warn!(
                    scope = charge.scope.label(),
                    %cause,
                    "a refused or failed admission could not be released: it stays counted"
                );
            }
        }
    }

    fn now(&self) -> Now {
        Now::at(nanos(self.clock.now()))
    }
}

/// A subject's or key's account: a day and a month counter, each kept a day past its window.
fn windowed(
    scope: LimitScope,
    rate_key: Option<String>,
    rate: Option<Rate>,
    windows: [(CounterKeys, Option<u64>, SystemTime); 2],
) -> AccountPlan {
    let mut counters = Vec::with_capacity(2);
    let mut terms = Vec::with_capacity(2);
    let mut window_ends = Vec::with_capacity(2);
    for (keys, budget, end) in windows {
        counters.push(keys);
        let keep = nanos(end).saturating_add(duration_nanos(WINDOW_RETENTION));
        terms.push(CounterTerms { budget, keep_ms: millis_ceil(keep) });
        window_ends.push(Some(end));
    }
    AccountPlan {
        scope,
        keys: AccountKeys { rate: rate_key, counters },
        rate,
        max_requests: None,
        terms,
        window_ends,
    }
}

/// The GCRA of `per_minute` requests a minute, as the in-memory ledger's `gcra`: one request per
/// interval, and a burst of the whole minute's allowance.
fn gcra(per_minute: u32) -> Rate {
    let interval = Duration::from_secs(60) / per_minute.max(1);
    let tolerance = interval * per_minute;
    Rate { interval_ns: duration_nanos(interval), tolerance_ns: duration_nanos(tolerance) }
}

/// The admit script's answer for `plan`, or `None` when it is not one the script gives.
fn parse_admit(plan: &AccountPlan, now: SystemTime, answer: &[String]) -> Option<AccountAnswer> {
    let number = |at: usize| answer.get(at).and_then(|text| text.parse::<u64>().ok());
    let scope = plan.scope;
    Some(match answer.first()?.as_str() {
        "rate" => AccountAnswer::Refused(Refusal::RateLimited {
            scope,
            retry_after: Duration::from_nanos(number(1)?),
        }),
        "requests" => AccountAnswer::Refused(Refusal::QuotaExceeded { scope, retry_after: None }),
        "tokens" => {
            let counter = usize::try_from(number(1)?).ok()?.checked_sub(1)?;
            let window_end = *plan.window_ends.get(counter)?;
            // A session's own budget never resets; a window's does at its end.
            let retry_after = window_end.and_then(|end| end.duration_since(now).ok());
            AccountAnswer::Refused(Refusal::QuotaExceeded { scope, retry_after })
        }
        "admitted" => {
            let committed =
                (0..plan.terms.len()).map(|counter| number(4 + counter)).collect::<Option<Vec<u64>>>()?;
            AccountAnswer::Admitted(Counted {
                requests: number(1)?,
                rate_before: answer.get(2)?.clone(),
                rate_set: answer.get(3)?.clone(),
                committed,
            })
        }
        _ => return None,
    })
}

/// An account an admission has counted, with what a release needs.
struct Charge {
    scope: LimitScope,
    keys: AccountKeys,
    rate_before: String,
    rate_set: String,
}

/// The accounts an admission has counted so far. Unless [kept](Charges::keep) (every account admitted
/// it), they are released: [awaited](Charges::release) after a refusal, and in the background when the
/// admission failed or its future was dropped midway (a client gone), from `Drop`.
struct Charges {
    inner: Arc<Inner>,
    id: String,
    /// The admission's instant: the releases restore arrival times relative to it.
    now: Now,
    counted: Vec<Charge>,
}

impl Charges {
    async fn release(mut self) {
        let counted = std::mem::take(&mut self.counted);
        self.inner.release(&self.id, &self.now, &counted).await;
    }

    fn keep(mut self) {
        self.counted.clear();
    }
}

impl Drop for Charges {
    fn drop(&mut self) {
        if self.counted.is_empty() {
            return;
        }
        let counted = std::mem::take(&mut self.counted);
        let (inner, id, now) = (Arc::clone(&self.inner), std::mem::take(&mut self.id), self.now.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { inner.release(&id, &now, &counted).await });
            }
            Err(_) => tracing::warn!("an unfinished admission could not be released: it stays counted"),
        }
    }
}

/// A fresh reservation id, from the OS generator.
fn reservation_id() -> Result<u128, LedgerError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|error| LedgerError::Unavailable(format!("no randomness for a reservation id: {error}")))?;
    Ok(u128::from_be_bytes(bytes))
}

/// A reservation id as the scripts store it: 32 hex digits.
fn id_text(id: u128) -> String {
    format!("{id:032x}")
}

/// Redis being unreachable or slow is the port's `Unavailable`.
impl From<Unavailable> for LedgerError {
    fn from(Unavailable(cause): Unavailable) -> Self {
        LedgerError::Unavailable(cause)
    }
}

#[async_trait]
impl UsageLedger for RedisUsageLedger {
    async fn admit(&self, admission: &Admission) -> Result<Admitted, LedgerError> {
        let id = reservation_id()?;
        let id_hex = id_text(id);
        let now = Now::at(nanos(admission.now));
        let mut charges = Charges {
            inner: Arc::clone(&self.inner),
            id: id_hex.clone(),
            now: now.clone(),
            counted: Vec::new(),
        };
        let mut session_requests = 0;
        let mut tokens_left: Option<u64> = None;
        for plan in self.inner.plan(admission) {
            // An error returns here and drops `charges`, which releases the accounts counted so far.
            let counted = match self.inner.admit_in(&plan, admission, &now, &id_hex).await? {
                AccountAnswer::Admitted(counted) => counted,
                AccountAnswer::Refused(refusal) => {
                    charges.release().await;
                    return Ok(Admitted::No(refusal));
                }
            };
            if plan.scope == LimitScope::Session {
                session_requests = counted.requests;
            }
            // The remaining tokens are the session's and its subject's: a key's budget is the
            // operator's, not the client's to see.
            if plan.scope != LimitScope::SecretKey {
                for (terms, committed) in plan.terms.iter().zip(&counted.committed) {
                    if let Some(budget) = terms.budget {
                        let left = budget.saturating_sub(*committed);
                        tokens_left = Some(tokens_left.map_or(left, |tighter| tighter.min(left)));
                    }
                }
            }
            charges.counted.push(Charge {
                scope: plan.scope,
                keys: plan.keys,
                rate_before: counted.rate_before,
                rate_set: counted.rate_set,
            });
        }
        charges.keep();
        let remaining = Remaining {
            requests: admission.limits.max_requests().map(|max| max.saturating_sub(session_requests)),
            tokens: tokens_left,
        };
        Ok(Admitted::Yes {
            reservation: Box::new(Reservation { id, admission: admission.clone() }),
            remaining,
        })
    }

    async fn settle(&self, reservation: &Reservation, usage: TokenUsage) -> Result<(), LedgerError> {
        let instant = nanos(self.inner.clock.now());
        let now = Now::at(instant);
        let forget = instant.saturating_add(duration_nanos(TOMBSTONE_LIFETIME));
        let id = id_text(reservation.id);
        let plans = self.inner.plan(&reservation.admission);
        // The accounts are independent here (nothing is checked), so they settle concurrently; each
        // script counts once per reservation, so a settle that failed halfway may be retried whole.
        let settles = plans.iter().map(|plan| {
            let invocation = self.inner.scripts.settle(&Settle {
                counters: &plan.keys.counters,
                now: &now,
                id: &id,
                input: usage.input,
                output: usage.output,
                forget_ms: millis_ceil(forget),
            });
            async move { self.inner.redis.script::<i64>("settle", &invocation).await }
        });
        futures_util::future::try_join_all(settles).await?;
        Ok(())
    }

    async fn session_usage(&self, session: SessionId) -> Result<SessionUsage, LedgerError> {
        let invocation =
            self.inner.scripts.session_usage(&self.inner.keys.session(session), &self.inner.now());
        let answer: Vec<String> = self.inner.redis.script("read a session's usage", &invocation).await?;
        match parse_numbers::<4>(&answer) {
            Some([requests, input_tokens, output_tokens, reserved_tokens]) => {
                Ok(SessionUsage { requests, input_tokens, output_tokens, reserved_tokens })
            }
            None => Err(LedgerError::Unavailable("unexpected answer reading a session's usage".to_owned())),
        }
    }

    async fn account_usage(&self, account: &Account, now: SystemTime) -> Result<AccountUsage, LedgerError> {
        let counter = |period: Period| {
            let label = period.window(now).label;
            match account {
                Account::Subject(subject) => self.inner.keys.subject(subject, period, &label),
                Account::SecretKey(secret_ref) => self.inner.keys.secret_key(secret_ref, period, &label),
            }
        };
        let invocation = self.inner.scripts.window_totals(&counter(Period::Day), &counter(Period::Month));
        let answer: Vec<String> = self.inner.redis.script("read an account's usage", &invocation).await?;
        let totals = |[requests, input_tokens, output_tokens]: [u64; 3]| WindowTotals {
            requests,
            input_tokens,
            output_tokens,
        };
        match parse_numbers::<6>(&answer) {
            Some([a, b, c, d, e, f]) => Ok(AccountUsage { day: totals([a, b, c]), month: totals([d, e, f]) }),
            None => Err(LedgerError::Unavailable("unexpected answer reading an account's usage".to_owned())),
        }
    }

    async fn ping(&self) -> Result<(), LedgerError> {
        let _: Value = self.inner.redis.query("ping", &redis::cmd("PING")).await?;
        Ok(())
    }
}

/// Exactly `N` decimal numbers, or `None`.
fn parse_numbers<const N: usize>(answer: &[String]) -> Option<[u64; N]> {
    if answer.len() != N {
        return None;
    }
    let mut numbers = [0; N];
    for (number, text) in numbers.iter_mut().zip(answer) {
        *number = text.parse().ok()?;
    }
    Some(numbers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_the_in_memory_ledgers() {
        let twenty = gcra(20);
        assert_eq!(twenty.interval_ns, 3_000_000_000);
        assert_eq!(twenty.tolerance_ns, 60_000_000_000);
        // Not a whole number of nanoseconds: truncated as `Duration` division truncates.
        let seven = gcra(7);
        assert_eq!(seven.interval_ns, 8_571_428_571);
        assert_eq!(seven.tolerance_ns, 7 * 8_571_428_571);
        assert_eq!(gcra(0).tolerance_ns, 0, "no request fits a rate of zero");
    }

    #[test]
    fn answers_the_scripts_never_give_are_refused_not_guessed() {
        let plan = AccountPlan {
            scope: LimitScope::Subject,
            keys: AccountKeys { rate: None, counters: Vec::new() },
            rate: None,
            max_requests: None,
            terms: vec![CounterTerms { budget: Some(10), keep_ms: 0 }; 2],
            window_ends: vec![Some(SystemTime::UNIX_EPOCH + Duration::from_secs(100)), None],
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(40);
        let parse = |answer: &[&str]| {
            let answer: Vec<String> = answer.iter().map(|text| (*text).to_owned()).collect();
            parse_admit(&plan, now, &answer)
        };
        for junk in [&[][..], &["what"], &["rate"], &["rate", "-1"], &["tokens", "0"], &["tokens", "3"]] {
            assert!(parse(junk).is_none(), "{junk:?}");
        }
        assert!(parse(&["admitted", "1", "", ""]).is_none(), "a committed figure per counter");
        assert!(matches!(
            parse(&["tokens", "1"]),
            Some(AccountAnswer::Refused(Refusal::QuotaExceeded {
                scope: LimitScope::Subject,
                retry_after: Some(wait)
            })) if wait == Duration::from_secs(60)
        ));
        let Some(AccountAnswer::Admitted(counted)) = parse(&["admitted", "3", "", "x", "7", "9"]) else {
            panic!("a well-formed admission")
        };
        assert_eq!((counted.requests, counted.committed, counted.rate_set.as_str()), (3, vec![7, 9], "x"));
    }

    #[test]
    fn numbers_are_exactly_as_many_as_asked() {
        let answer: Vec<String> = ["1", "2"].map(str::to_owned).to_vec();
        assert_eq!(parse_numbers::<2>(&answer), Some([1, 2]));
        assert_eq!(parse_numbers::<3>(&answer), None);
        assert_eq!(parse_numbers::<2>(&["1".to_owned(), "-2".to_owned()]), None);
    }
}
