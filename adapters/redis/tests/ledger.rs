//! The Redis usage ledger: the whole `UsageLedger` contract suite, on one server and on a private Redis
//! Cluster, and what only a shared ledger can get wrong: two instances admitting at once, releases after
//! a later account's refusal, key expiries, an unreachable Redis.
//!
//! Needs Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`; `redis+cluster://host:port,...` listing
//! every master works too). Each test works under its own random key prefix and deletes every key under
//! it at the end, also when it fails. Without Redis: fails under `CI=true`, else prints why and skips.
//! The cluster suite starts its own three-node cluster per test (needs `redis-server` and `redis-cli`).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use sidekey_application::ports::{
    Account, AccountUsage, Admission, Admitted, LedgerError, LimitScope, RESERVATION_LIFETIME, Refusal,
    Reservation, SessionUsage, UsageLedger,
};
use sidekey_application::{Clock, ENDED_SESSION_RETENTION};
use sidekey_domain::{
    Limits, LimitsParts, Period, SecretKeyLimits, SecretRef, SessionId, Subject, SubjectLimits, TokenUsage,
};
use sidekey_redis::{RedisStoreSettings, RedisUsageLedger};
use sidekey_test_support::ManualClock;
use sidekey_test_support::ledger_contract_suite;
use sidekey_test_support::redis_server::PrivateCluster;
use sidekey_test_support::services::cluster_node_urls;
use sidekey_test_support::{free_port, random_hex, redis_url, skip_unless_installed};

fn random_prefix() -> String {
    format!("sidekey-test-{}", random_hex(16))
}

/// One URL per server behind `url`: the server itself, or every node a cluster URL lists (a `SCAN` sees
/// one node's keys only).
fn node_urls(url: &str) -> Vec<String> {
    cluster_node_urls(url).unwrap_or_else(|| vec![url.to_owned()])
}

/// The keys under `prefix` on the server `connection` reaches.
fn scan(connection: &mut redis::Connection, prefix: &str) -> redis::RedisResult<Vec<String>> {
    let (mut cursor, mut keys) = (0u64, Vec::new());
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{{{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query(connection)?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

fn connect_node(node: String) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(node)?.get_connection()
}

/// Every key under `prefix` on every server behind `url`, with its remaining time to live (ms, `PTTL`:
/// -1 for none), read on the server that holds it.
fn keys_with_ttl(url: &str, prefix: &str) -> Vec<(String, i64)> {
    let mut found = Vec::new();
    for node in node_urls(url) {
        let mut connection = connect_node(node).unwrap();
        for key in scan(&mut connection, prefix).unwrap() {
            let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut connection).unwrap();
            found.push((key, ttl));
        }
    }
    found
}

/// Deletes every key under its prefix when dropped: at the end of the test, passed or failed.
struct PrefixGuard {
    url: String,
    prefix: String,
}

impl Drop for PrefixGuard {
    fn drop(&mut self) {
        for node in node_urls(&self.url) {
            // Best effort: a failing test must still report its own failure, not the cleanup's.
            let Ok(mut connection) = connect_node(node) else { continue };
            for key in scan(&mut connection, &self.prefix).unwrap_or_default() {
                let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(&key).query(&mut connection);
            }
        }
    }
}

/// A ledger for one test and what goes when the test is over: its keys on the shared Redis, or its
/// private cluster.
struct TestLedger {
    ledger: RedisUsageLedger,
    _cleanup: Cleanup,
}

/// Held for what its drop does.
enum Cleanup {
    Prefix { _guard: PrefixGuard },
    Cluster { _cluster: PrivateCluster },
}

#[async_trait]
impl UsageLedger for TestLedger {
    async fn admit(&self, admission: &Admission) -> Result<Admitted, LedgerError> {
        self.ledger.admit(admission).await
    }

    async fn settle(&self, reservation: &Reservation, usage: TokenUsage) -> Result<(), LedgerError> {
        self.ledger.settle(reservation, usage).await
    }

    async fn session_usage(&self, session: SessionId) -> Result<SessionUsage, LedgerError> {
        self.ledger.session_usage(session).await
    }

    async fn account_usage(&self, account: &Account, now: SystemTime) -> Result<AccountUsage, LedgerError> {
        self.ledger.account_usage(account, now).await
    }

    async fn admit_session(
        &self,
        subject: &Subject,
        session: SessionId,
        expires_at: SystemTime,
        max_live: u64,
        now: SystemTime,
    ) -> Result<bool, LedgerError> {
        self.ledger.admit_session(subject, session, expires_at, max_live, now).await
    }

    async fn release_session(&self, subject: &Subject, session: SessionId) -> Result<(), LedgerError> {
        self.ledger.release_session(subject, session).await
    }

    async fn ping(&self) -> Result<(), LedgerError> {
        self.ledger.ping().await
    }
}

async fn ledger(url: &str, prefix: &str, clock: Arc<dyn Clock>) -> RedisUsageLedger {
    RedisUsageLedger::connect(RedisStoreSettings::new(url, prefix), clock).await.unwrap()
}

ledger_contract_suite!(one_server, |clock| Box::pin(async move {
    let url = redis_url().await?;
    let prefix = random_prefix();
    let ledger = ledger(&url, &prefix, clock).await;
    let cleanup = Cleanup::Prefix { _guard: PrefixGuard { url, prefix } };
    Some(Arc::new(TestLedger { ledger, _cleanup: cleanup }) as Arc<dyn UsageLedger>)
}));

ledger_contract_suite!(cluster, |clock| Box::pin(async move {
    if skip_unless_installed("the ledger contract on a cluster", &["redis-server", "redis-cli"]) {
        return None;
    }
    let cluster = tokio::task::spawn_blocking(PrivateCluster::start).await.unwrap();
    let mut settings = RedisStoreSettings::new(cluster.url(), random_prefix());
    // Generous: these tests are about routing, and cluster discovery takes a few round trips.
    settings.connect_timeout = Duration::from_secs(2);
    settings.command_timeout = Duration::from_secs(2);
    let ledger = RedisUsageLedger::connect(settings, clock).await.unwrap();
    Some(Arc::new(TestLedger { ledger, _cleanup: Cleanup::Cluster { _cluster: cluster } })
        as Arc<dyn UsageLedger>)
}));

/// Two instances' ledgers on the shared Redis under one fresh prefix, on one clock, and the guard that
/// deletes their keys.
async fn two_instances()
-> Option<(Arc<RedisUsageLedger>, Arc<RedisUsageLedger>, Arc<ManualClock>, PrefixGuard)> {
    let url = redis_url().await?;
    let prefix = random_prefix();
    let clock = Arc::new(ManualClock::starting_at(SystemTime::now()));
    let a = Arc::new(ledger(&url, &prefix, clock.clone()).await);
    let b = Arc::new(ledger(&url, &prefix, clock.clone()).await);
    Some((a, b, clock, PrefixGuard { url, prefix }))
}

fn secret_ref(name: &str) -> SecretRef {
    SecretRef::parse(name).unwrap()
}

fn admission(clock: &ManualClock, session: SessionId, limits: LimitsParts, reserve: u64) -> Admission {
    Admission {
        session,
        session_expires_at: clock.now() + Duration::from_secs(3600),
        limits: Limits::new(limits).unwrap(),
        subject: None,
        secret_key: (secret_ref("openai-prod"), SecretKeyLimits::default()),
        reserve_tokens: reserve,
        now: clock.now(),
    }
}

/// Runs every admission at once, alternating between the two ledgers, and returns the answers.
async fn admit_all(
    a: &Arc<RedisUsageLedger>,
    b: &Arc<RedisUsageLedger>,
    admissions: Vec<Admission>,
) -> Vec<Admitted> {
    let tasks: Vec<_> = admissions
        .into_iter()
        .enumerate()
        .map(|(i, admission)| {
            let ledger = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { ledger.admit(&admission).await.unwrap() })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

fn admitted(answers: &[Admitted]) -> usize {
    answers.iter().filter(|answer| matches!(answer, Admitted::Yes { .. })).count()
}

fn reservation(answer: Admitted) -> Reservation {
    match answer {
        Admitted::Yes { reservation, .. } => *reservation,
        Admitted::No(refusal) => panic!("refused: {refusal:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_admit_exactly_max_requests_together() {
    let Some((a, b, clock, _guard)) = two_instances().await else { return };
    let session = SessionId::new_random();
    let limits = LimitsParts { max_requests: Some(50), ..LimitsParts::default() };
    let answers = admit_all(&a, &b, (0..200).map(|_| admission(&clock, session, limits, 0)).collect()).await;
    assert_eq!(admitted(&answers), 50);
    assert_eq!(a.session_usage(session).await.unwrap().requests, 50);
    assert_eq!(b.session_usage(session).await.unwrap().requests, 50, "both instances read the same count");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_never_reserve_past_a_token_budget_together() {
    let Some((a, b, clock, _guard)) = two_instances().await else { return };
    let session = SessionId::new_random();
    let limits = LimitsParts { max_tokens: Some(1000), ..LimitsParts::default() };
    let answers =
        admit_all(&a, &b, (0..100).map(|_| admission(&clock, session, limits, 100)).collect()).await;
    assert_eq!(admitted(&answers), 10);
    let usage = b.session_usage(session).await.unwrap();
    assert_eq!((usage.requests, usage.reserved_tokens), (10, 1000));
}

/// 100 sessions of one subject at once: the subject's budget lets 10 through, the key's only 5, so up to
/// 5 are counted on the subject and then refused by the key: each must be released, or the subject
/// would end with more than 5 requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_accounts_refusal_is_released_from_the_earlier_ones_under_contention() {
    let Some((a, b, clock, _guard)) = two_instances().await else { return };
    let subject = Subject::parse("contended").unwrap();
    let key = secret_ref("contended-key");
    let sessions: Vec<SessionId> = (0..100).map(|_| SessionId::new_random()).collect();
    let admissions = sessions
        .iter()
        .map(|&session| Admission {
            subject: Some((
                subject.clone(),
                SubjectLimits { tokens_per_day: Some(1000), ..SubjectLimits::default() },
            )),
            secret_key: (key.clone(), SecretKeyLimits { tokens_per_day: Some(500) }),
            ..admission(&clock, session, LimitsParts::default(), 100)
        })
        .collect();
    let answers = admit_all(&a, &b, admissions).await;
    assert_eq!(admitted(&answers), 5);
    for answer in &answers {
        if let Admitted::No(refusal) = answer {
            assert!(
                matches!(
                    refusal,
                    Refusal::QuotaExceeded { scope: LimitScope::SecretKey | LimitScope::Subject, .. }
                ),
                "{refusal:?}"
            );
        }
    }
    let subject_usage = a.account_usage(&Account::Subject(subject), clock.now()).await.unwrap();
    assert_eq!(subject_usage.day.requests, 5, "the key's refusals were released from the subject");
    assert_eq!(b.account_usage(&Account::SecretKey(key), clock.now()).await.unwrap().day.requests, 5);
    let mut counted = 0;
    for session in sessions {
        counted += a.session_usage(session).await.unwrap().requests;
    }
    assert_eq!(counted, 5, "and from the sessions");
}

/// A session allowed one request a minute: an admission its subject refuses must give the session's
/// rate back, or the next request would wait a minute for nothing.
#[tokio::test]
async fn a_refusal_gives_back_the_rate_an_earlier_account_had_taken() {
    let Some((a, _, clock, _guard)) = two_instances().await else { return };
    let session = SessionId::new_random();
    let one_a_minute = LimitsParts { requests_per_minute: Some(1), ..LimitsParts::default() };
    let subject = Subject::parse("rate-giver").unwrap();
    let with_subject = |reserve| Admission {
        subject: Some((
            subject.clone(),
            SubjectLimits { tokens_per_day: Some(10), ..SubjectLimits::default() },
        )),
        ..admission(&clock, session, one_a_minute, reserve)
    };
    assert!(matches!(
        a.admit(&with_subject(100)).await.unwrap(),
        Admitted::No(Refusal::QuotaExceeded { scope: LimitScope::Subject, .. })
    ));
    reservation(a.admit(&with_subject(0)).await.unwrap());
    assert!(
        matches!(
            a.admit(&with_subject(0)).await.unwrap(),
            Admitted::No(Refusal::RateLimited { scope: LimitScope::Session, .. })
        ),
        "the rate still counts what was admitted"
    );
    assert_eq!(a.session_usage(session).await.unwrap().requests, 1);
}

/// Every key the ledger writes expires by itself, at the time its kind calls for.
#[tokio::test]
async fn every_key_the_ledger_writes_expires() {
    let Some((a, _, clock, guard)) = two_instances().await else { return };
    let session = SessionId::new_random();
    let subject = Subject::parse("expiring").unwrap();
    let key = secret_ref("expiring-key");
    let full = |session, reserve| Admission {
        subject: Some((
            subject.clone(),
            SubjectLimits {
                tokens_per_day: Some(1000),
                tokens_per_month: Some(5000),
                requests_per_minute: Some(60),
            },
        )),
        secret_key: (key.clone(), SecretKeyLimits { tokens_per_day: Some(300) }),
        ..admission(
            &clock,
            session,
            LimitsParts {
                max_requests: Some(10),
                max_tokens: Some(1000),
                requests_per_minute: Some(60),
                ..LimitsParts::default()
            },
            reserve,
        )
    };
    let settled = reservation(a.admit(&full(session, 100)).await.unwrap());
    a.settle(&settled, TokenUsage { input: 10, output: 20 }).await.unwrap();
    reservation(a.admit(&full(session, 100)).await.unwrap());
    // Refused by the key after the session and the subject counted it: released, rates restored.
    assert!(matches!(a.admit(&full(SessionId::new_random(), 250)).await.unwrap(), Admitted::No(_)));

    let keys = keys_with_ttl(&guard.url, &guard.prefix);
    let names: Vec<&str> = keys.iter().map(|(key, _)| key.as_str()).collect();
    let day = Period::Day.window(clock.now());
    for expected in [
        format!("{{{}:sub:expiring}}:day:{}", guard.prefix, day.label),
        format!("{{{}:sub:expiring}}:rate", guard.prefix),
        format!(
            "{{{}:key:expiring-key}}:month:{}:settled",
            guard.prefix,
            Period::Month.window(clock.now()).label
        ),
        format!("{{{}:{:02x}}}:usage:{}:held", guard.prefix, session.shard(), session.as_uuid().hyphenated()),
    ] {
        assert!(names.contains(&expected.as_str()), "{expected} missing from {names:?}");
    }
    let without: Vec<_> = keys.iter().filter(|(_, ttl)| *ttl <= 0).collect();
    assert!(without.is_empty(), "keys without an expiry: {without:?}");

    let ttl_of = |suffix: &str| {
        keys.iter()
            .find(|(key, _)| key.ends_with(suffix))
            .map(|(_, ttl)| Duration::from_millis(*ttl as u64))
            .unwrap()
    };
    let slack = Duration::from_secs(5);
    let session_keep = Duration::from_secs(3600) + ENDED_SESSION_RETENTION + RESERVATION_LIFETIME;
    let session_ttl = ttl_of(&format!(":usage:{}", session.as_uuid().hyphenated()));
    assert!(session_ttl <= session_keep && session_ttl + slack > session_keep, "{session_ttl:?}");
    let day_keep = day.end.duration_since(clock.now()).unwrap() + Duration::from_secs(86_400);
    let day_ttl = ttl_of(&format!("expiring}}:day:{}", day.label));
    assert!(day_ttl <= day_keep && day_ttl + slack > day_keep, "{day_ttl:?}");
    let rate_ttl = ttl_of("expiring}:rate");
    assert!(rate_ttl <= Duration::from_secs(2), "two requests at 60 a minute: {rate_ttl:?}");
}

/// Runs `call` and checks it answers `Unavailable` within `bound`.
async fn unavailable_within<T: std::fmt::Debug>(
    what: &str,
    bound: Duration,
    call: impl Future<Output = Result<T, LedgerError>>,
) {
    let started = Instant::now();
    let answer = tokio::time::timeout(bound * 4, call).await.unwrap_or_else(|_| panic!("{what} hung"));
    let elapsed = started.elapsed();
    assert!(matches!(answer, Err(LedgerError::Unavailable(_))), "{what}: {answer:?}");
    assert!(elapsed <= bound, "{what} took {elapsed:?}, over {bound:?}");
}

#[tokio::test]
async fn an_unreachable_redis_answers_unavailable_within_the_timeouts() {
    let mut settings = RedisStoreSettings::new(format!("redis://127.0.0.1:{}", free_port()), "sidekey-down");
    settings.connect_timeout = Duration::from_millis(300);
    settings.command_timeout = Duration::from_millis(300);
    // The connect and command timeouts, plus scheduling slack.
    let bound = Duration::from_millis(600) + Duration::from_millis(400);
    let clock = Arc::new(ManualClock::starting_at(SystemTime::now()));
    let ledger = RedisUsageLedger::connect(settings, clock.clone()).await.unwrap();
    let limited = admission(
        &clock,
        SessionId::new_random(),
        LimitsParts { max_requests: Some(1), ..LimitsParts::default() },
        10,
    );
    unavailable_within("admit", bound, ledger.admit(&limited)).await;
    let reservation = Reservation { id: 7, admission: limited.clone() };
    unavailable_within("settle", bound, ledger.settle(&reservation, TokenUsage::default())).await;
    unavailable_within("session_usage", bound, ledger.session_usage(limited.session)).await;
    let account = Account::SecretKey(secret_ref("openai-prod"));
    unavailable_within("account_usage", bound, ledger.account_usage(&account, clock.now())).await;
    unavailable_within("ping", bound, ledger.ping()).await;
}
