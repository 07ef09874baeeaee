//! The `UsageLedger` contract, as one suite run against every implementation (the memory ledger, the
//! Redis ledger): [`ledger_contract_suite!`](crate::ledger_contract_suite!) instantiates it for one backend.
//!
//! Every test builds its own ledger on a [`ManualClock`] and drives admissions at the clock's instant,
//! so windows and rates are tested at exact boundaries, without sleeping.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sidekey_application::Clock;
use sidekey_application::ports::{
    Account, Admission, Admitted, LimitScope, RESERVATION_LIFETIME, Refusal, Reservation, UsageLedger,
};
use sidekey_domain::{
    Limits, LimitsParts, Period, SecretKeyLimits, SecretRef, SessionId, Subject, SubjectLimits, TokenUsage,
};

pub use crate::clock::ManualClock;

/// Builds a ledger on a clock, or `None` when its backend is missing (the suite then skips, with the
/// factory's printed reason).
pub type Factory = Box<
    dyn Fn(Arc<ManualClock>) -> Pin<Box<dyn Future<Output = Option<Arc<dyn UsageLedger>>> + Send>>
        + Send
        + Sync,
>;

/// 2027-01-15T08:00:00Z: a fixed instant well inside a day and a month.
pub const T0: Duration = Duration::from_secs(1_800_000_000);

/// A ledger and its clock, for one test.
pub struct Harness {
    /// The ledger under test.
    pub ledger: Arc<dyn UsageLedger>,
    /// Its clock.
    pub clock: Arc<ManualClock>,
}

impl Harness {
    /// A harness from `factory`, or `None` to skip.
    pub async fn start(factory: &Factory) -> Option<Self> {
        let clock = Arc::new(ManualClock::starting_at(SystemTime::UNIX_EPOCH + T0));
        let ledger = factory(clock.clone()).await?;
        Some(Self { ledger, clock })
    }

    /// An admission for `session` with `limits`, reserving `reserve` tokens, at the clock's now.
    pub fn admission(&self, session: SessionId, limits: Limits, reserve: u64) -> Admission {
        Admission {
            session,
            session_expires_at: self.clock.now() + Duration::from_secs(3600),
            limits,
            subject: None,
            secret_key: (secret_ref(), SecretKeyLimits::default()),
            reserve_tokens: reserve,
            now: self.clock.now(),
        }
    }

    /// Admits `admission`, panicking if the ledger fails.
    pub async fn admit(&self, admission: &Admission) -> Admitted {
        self.ledger.admit(admission).await.expect("the ledger answers")
    }

    /// Sends `count` admissions for `session`, each reserving `reserve` tokens, all at once; returns how
    /// many were admitted.
    pub async fn admitted_at_once(
        &self,
        count: usize,
        session: SessionId,
        limits: Limits,
        reserve: u64,
    ) -> usize {
        let admissions: Vec<_> = (0..count)
            .map(|_| {
                let ledger = self.ledger.clone();
                let admission = self.admission(session, limits, reserve);
                tokio::spawn(async move { ledger.admit(&admission).await.expect("the ledger answers") })
            })
            .collect();
        let mut admitted = 0;
        for admission in admissions {
            if matches!(admission.await.expect("an admission task"), Admitted::Yes { .. }) {
                admitted += 1;
            }
        }
        admitted
    }
}

/// The key every test session stands for.
pub fn secret_ref() -> SecretRef {
    SecretRef::parse("openai-prod").unwrap()
}

/// A fresh session id.
pub fn session() -> SessionId {
    SessionId::new_random()
}

/// Limits from their parts.
pub fn limits(parts: LimitsParts) -> Limits {
    Limits::new(parts).unwrap()
}

fn reservation(admitted: Admitted) -> Reservation {
    match admitted {
        Admitted::Yes { reservation, .. } => *reservation,
        Admitted::No(refusal) => panic!("refused: {refusal:?}"),
    }
}

fn refusal(admitted: &Admitted) -> Option<Refusal> {
    match admitted {
        Admitted::Yes { .. } => None,
        Admitted::No(refusal) => Some(*refusal),
    }
}

/// Each test of the contract, written once against `&Harness`.
pub mod contract {
    use super::*;

    /// `max_requests` admits exactly that many, then refuses without a retry time, and a refusal
    /// counts nothing.
    pub async fn max_requests_admits_exactly_that_many(h: &Harness) {
        let session = session();
        let limits = limits(LimitsParts { max_requests: Some(3), ..LimitsParts::default() });
        for left in [2, 1, 0] {
            match h.admit(&h.admission(session, limits, 0)).await {
                Admitted::Yes { remaining, .. } => assert_eq!(remaining.requests, Some(left)),
                Admitted::No(refusal) => panic!("refused early: {refusal:?}"),
            }
        }
        for _ in 0..2 {
            assert_eq!(
                refusal(&h.admit(&h.admission(session, limits, 0)).await),
                Some(Refusal::QuotaExceeded { scope: LimitScope::Session, retry_after: None })
            );
        }
        assert_eq!(h.ledger.session_usage(session).await.unwrap().requests, 3, "refusals count nothing");
    }

    /// Concurrent admissions never pass `max_requests` together.
    pub async fn concurrent_admissions_never_pass_max_requests(h: &Harness) {
        let session = session();
        let limits = limits(LimitsParts { max_requests: Some(50), ..LimitsParts::default() });
        let admitted = h.admitted_at_once(200, session, limits, 0).await;
        assert_eq!(admitted, 50);
        assert_eq!(h.ledger.session_usage(session).await.unwrap().requests, 50);
    }

    /// A rate of N a minute admits a burst of N, refuses the next with the time until one more fits,
    /// and admits again once that time has passed.
    pub async fn a_rate_admits_a_burst_then_one_per_interval(h: &Harness) {
        let session = session();
        let limits = limits(LimitsParts { requests_per_minute: Some(20), ..LimitsParts::default() });
        for _ in 0..20 {
            assert!(matches!(h.admit(&h.admission(session, limits, 0)).await, Admitted::Yes { .. }));
        }
        let Some(Refusal::RateLimited { scope, retry_after }) =
            refusal(&h.admit(&h.admission(session, limits, 0)).await)
        else {
            panic!("the 21st request in a minute must be rate limited");
        };
        assert_eq!(scope, LimitScope::Session);
        assert_eq!(retry_after, Duration::from_secs(3), "one request per 60 s / 20");
        h.clock.advance(Duration::from_millis(2_999));
        assert!(
            refusal(&h.admit(&h.admission(session, limits, 0)).await).is_some(),
            "not before the interval"
        );
        h.clock.advance(Duration::from_millis(1));
        assert!(matches!(h.admit(&h.admission(session, limits, 0)).await, Admitted::Yes { .. }));
        assert_eq!(h.ledger.session_usage(session).await.unwrap().requests, 21);
    }

    /// Reservations count against `max_tokens` until settled; a settle replaces the reservation with
    /// what was used, and settling twice counts once.
    pub async fn reservations_hold_the_budget_until_settled_with_the_real_usage(h: &Harness) {
        let session = session();
        let limits = limits(LimitsParts { max_tokens: Some(100), ..LimitsParts::default() });
        let first = reservation(h.admit(&h.admission(session, limits, 30)).await);
        reservation(h.admit(&h.admission(session, limits, 30)).await);
        let third = h.admit(&h.admission(session, limits, 30)).await;
        let Admitted::Yes { remaining, .. } = &third else { panic!("90 of 100 fit") };
        assert_eq!(remaining.tokens, Some(10));
        assert_eq!(
            refusal(&h.admit(&h.admission(session, limits, 30)).await),
            Some(Refusal::QuotaExceeded { scope: LimitScope::Session, retry_after: None })
        );
        let used = TokenUsage { input: 4, output: 6 };
        h.ledger.settle(&first, used).await.unwrap();
        h.ledger.settle(&first, used).await.unwrap();
        let usage = h.ledger.session_usage(session).await.unwrap();
        assert_eq!((usage.input_tokens, usage.output_tokens, usage.reserved_tokens), (4, 6, 60));
        // 10 used + 60 reserved: 30 more fit exactly.
        reservation(h.admit(&h.admission(session, limits, 30)).await);
        assert!(refusal(&h.admit(&h.admission(session, limits, 1)).await).is_some());
    }

    /// Concurrent admissions never reserve past a token budget together.
    pub async fn concurrent_reservations_never_pass_a_token_budget(h: &Harness) {
        let session = session();
        let limits = limits(LimitsParts { max_tokens: Some(1000), ..LimitsParts::default() });
        let admitted = h.admitted_at_once(100, session, limits, 100).await;
        assert_eq!(admitted, 10);
        assert_eq!(h.ledger.session_usage(session).await.unwrap().reserved_tokens, 1000);
    }

    /// A reservation nobody settles stops counting after its lifetime; settled late (twice), its usage
    /// still counts, once.
    pub async fn an_unsettled_reservation_lapses_and_still_counts_once_when_settled_late(h: &Harness) {
        let session = session();
        let limits = limits(LimitsParts { max_tokens: Some(100), ..LimitsParts::default() });
        let lapsing = reservation(h.admit(&h.admission(session, limits, 100)).await);
        assert!(refusal(&h.admit(&h.admission(session, limits, 1)).await).is_some());
        // Lapse times may be whole milliseconds rounded up: one more.
        h.clock.advance(RESERVATION_LIFETIME + Duration::from_millis(1));
        assert_eq!(h.ledger.session_usage(session).await.unwrap().reserved_tokens, 0, "lapsed");
        h.ledger.settle(&lapsing, TokenUsage { input: 30, output: 40 }).await.unwrap();
        h.ledger.settle(&lapsing, TokenUsage { input: 30, output: 40 }).await.unwrap();
        let usage = h.ledger.session_usage(session).await.unwrap();
        assert_eq!((usage.input_tokens, usage.output_tokens, usage.reserved_tokens), (30, 40, 0));
        // 70 used: 30 more fit, 31 do not.
        assert!(refusal(&h.admit(&h.admission(session, limits, 31)).await).is_some());
        reservation(h.admit(&h.admission(session, limits, 30)).await);
    }

    /// A subject's budget spans its sessions, refuses with the time until the day ends, and resets at
    /// midnight UTC by itself.
    pub async fn a_subject_budget_spans_sessions_and_resets_at_the_window_boundary(h: &Harness) {
        let subject = Subject::parse(&format!("user-{}", SessionId::new_random())).unwrap();
        let budget = SubjectLimits { tokens_per_day: Some(100), ..SubjectLimits::default() };
        let as_subject = |session: SessionId| Admission {
            subject: Some((subject.clone(), budget)),
            ..h.admission(session, Limits::default(), 60)
        };
        let (one, two) = (session(), session());
        let first = reservation(h.admit(&as_subject(one)).await);
        let refused = refusal(&h.admit(&as_subject(two)).await);
        let day_end = Period::Day.window(h.clock.now()).end;
        let until_midnight = day_end.duration_since(h.clock.now()).unwrap();
        assert_eq!(
            refused,
            Some(Refusal::QuotaExceeded { scope: LimitScope::Subject, retry_after: Some(until_midnight) })
        );
        assert_eq!(h.ledger.session_usage(two).await.unwrap().requests, 0, "a refusal counts nowhere");
        h.ledger.settle(&first, TokenUsage { input: 20, output: 30 }).await.unwrap();
        let usage = h.ledger.account_usage(&Account::Subject(subject.clone()), h.clock.now()).await.unwrap();
        assert_eq!((usage.day.requests, usage.day.input_tokens, usage.day.output_tokens), (1, 20, 30));
        assert_eq!(usage.month.output_tokens, 30);
        assert!(refusal(&h.admit(&as_subject(two)).await).is_some(), "50 used + 60 is over 100");
        h.clock.advance(until_midnight);
        reservation(h.admit(&as_subject(two)).await);
        let usage = h.ledger.account_usage(&Account::Subject(subject.clone()), h.clock.now()).await.unwrap();
        assert_eq!(usage.day.requests, 1, "a new day");
        assert_eq!(usage.month.requests, 2, "the same month");
    }

    /// A key's daily budget spans every session of the key.
    pub async fn a_secret_key_budget_spans_every_session_of_the_key(h: &Harness) {
        let secret_ref =
            SecretRef::parse(&format!("key-{}", SessionId::new_random().as_uuid().simple())).unwrap();
        let budget = SecretKeyLimits { tokens_per_day: Some(50) };
        let admission = |session| Admission {
            secret_key: (secret_ref.clone(), budget),
            ..h.admission(session, Limits::default(), 30)
        };
        reservation(h.admit(&admission(session())).await);
        assert!(matches!(
            refusal(&h.admit(&admission(session())).await),
            Some(Refusal::QuotaExceeded { scope: LimitScope::SecretKey, retry_after: Some(_) })
        ));
        let usage = h.ledger.account_usage(&Account::SecretKey(secret_ref), h.clock.now()).await.unwrap();
        assert_eq!(usage.day.requests, 1);
    }

    /// A subject's live sessions are bounded: past `max_live` nothing is counted, a released or expired
    /// session frees its place, and concurrent issuances never pass the bound together.
    pub async fn live_sessions_of_a_subject_are_bounded(h: &Harness) {
        let subject = Subject::parse(&format!("live-{}", SessionId::new_random())).unwrap();
        let now = h.clock.now();
        let (one, two, three) = (session(), session(), session());
        let hour = now + Duration::from_secs(3600);
        assert!(h.ledger.admit_session(&subject, one, hour, 2, now).await.unwrap());
        assert!(h.ledger.admit_session(&subject, two, now + Duration::from_secs(60), 2, now).await.unwrap());
        assert!(!h.ledger.admit_session(&subject, three, hour, 2, now).await.unwrap());
        h.ledger.release_session(&subject, one).await.unwrap();
        assert!(h.ledger.admit_session(&subject, three, hour, 2, now).await.unwrap());
        let later = now + Duration::from_secs(60);
        assert!(h.ledger.admit_session(&subject, session(), hour, 2, later).await.unwrap(), "two expired");
        let crowd = Subject::parse(&format!("crowd-{}", SessionId::new_random())).unwrap();
        let admitted = futures_admitted(h, &crowd, 20, 5).await;
        assert_eq!(admitted, 5);
    }

    async fn futures_admitted(h: &Harness, subject: &Subject, tries: usize, max_live: u64) -> usize {
        let now = h.clock.now();
        let tasks: Vec<_> = (0..tries)
            .map(|_| {
                let (ledger, subject) = (h.ledger.clone(), subject.clone());
                tokio::spawn(async move {
                    ledger
                        .admit_session(&subject, session(), now + Duration::from_secs(600), max_live, now)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut admitted = 0;
        for task in tasks {
            admitted += usize::from(task.await.unwrap());
        }
        admitted
    }

    /// The ledger answers a ping.
    pub async fn ping_answers(h: &Harness) {
        h.ledger.ping().await.unwrap();
    }
}

#[doc(hidden)]
#[macro_export]
macro_rules! ledger_contract_tests {
    ($($test:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $test() {
                let Some(harness) = $crate::ledger_contract::Harness::start(&factory()).await else { return };
                $crate::ledger_contract::contract::$test(&harness).await;
            }
        )*
    };
}

/// The whole ledger contract suite as a module `$backend` of `#[tokio::test]`s, over the ledger
/// `$factory` (a [`Factory`]) builds.
#[macro_export]
macro_rules! ledger_contract_suite {
    ($backend:ident, $factory:expr) => {
        mod $backend {
            use super::*;

            fn factory() -> $crate::ledger_contract::Factory {
                Box::new($factory)
            }

            $crate::ledger_contract_tests!(
                max_requests_admits_exactly_that_many,
                concurrent_admissions_never_pass_max_requests,
                a_rate_admits_a_burst_then_one_per_interval,
                reservations_hold_the_budget_until_settled_with_the_real_usage,
                concurrent_reservations_never_pass_a_token_budget,
                an_unsettled_reservation_lapses_and_still_counts_once_when_settled_late,
                a_subject_budget_spans_sessions_and_resets_at_the_window_boundary,
                a_secret_key_budget_spans_every_session_of_the_key,
                live_sessions_of_a_subject_are_bounded,
                ping_answers,
            );
        }
    };
}
