//! The Redis store under faults, against `redis-server` processes of the tests' own (see
//! `sidekey_test_support::redis_server`): Redis stopped, crashed, frozen, restarted, started late; reached over a Unix
//! socket, over TLS, and as a three-master cluster.
//!
//! What the port promises and these tests hold the store to: a store whose Redis is gone answers
//! [`StoreError::Unavailable`] within a bounded time (its connect and command timeouts, plus scheduling
//! slack), recovers by itself when Redis returns, and finds every session Redis had persisted.
//!
//! Without `redis-server` on the `PATH` each test prints why and passes, except under `CI=true`, where it
//! fails. Run with `-- --nocapture` to see the timings the tests measure.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sidekey_application::{Grant, Lookup, RevocationTarget, SessionFilter, SessionStore, StoreError};
use sidekey_domain::{Metadata, SecretRef, SecretValue, Session, SessionId, SessionPolicy, Subject, Token};
use sidekey_local::SystemClock;
use sidekey_redis::{RedisSessionStore, RedisStoreSettings};

use sidekey_test_support::redis_server::{PrivateCluster, PrivateRedis};
use sidekey_test_support::skip_unless_installed;

/// The store's connect timeout in these tests: short, so that the tests are quick, and still far above
/// a loopback connect (well under a millisecond).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

/// The store's command timeout in these tests: far above a loopback round trip on an idle server.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(300);

/// Slack on top of the store's timeouts: task scheduling on a loaded two-core CI machine, and the error's
/// way back. A store that waits for anything else (a retry loop, a reconnect backoff) overshoots it.
const SLACK: Duration = Duration::from_millis(1000);

/// The bound on an answer from a store whose Redis is down or frozen: one connect attempt, one command,
/// the slack. 1.6 s with the values above.
const UNAVAILABLE_WITHIN: Duration = CONNECT_TIMEOUT.saturating_add(COMMAND_TIMEOUT).saturating_add(SLACK);

/// When a call that should have answered within [`UNAVAILABLE_WITHIN`] is declared hung: the test fails
/// here, at once and by name, rather than at the [`TEST_BUDGET`].
const HANG_AFTER: Duration = UNAVAILABLE_WITHIN.saturating_mul(3);

/// How soon after Redis answers again the store must serve again, with no help from outside.
const RECOVERY_WITHIN: Duration = Duration::from_secs(5);

/// How often the recovery polls retry.
const RETRY_EVERY: Duration = Duration::from_millis(50);

/// The most any test here may take; each step has its own, tighter bound, this one only guarantees that no
/// test hangs (the processes are killed on drop when it fires).
const TEST_BUDGET: Duration = Duration::from_secs(90);

/// How long the sessions these tests issue live: longer than any test.
const TTL_SECONDS: u64 = 600;

/// Runs a test body, failing it if it takes longer than [`TEST_BUDGET`].
async fn bounded<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_BUDGET, test)
        .await
        .unwrap_or_else(|_| panic!("the test took over {TEST_BUDGET:?}"));
}

/// Settings with the short test timeouts and a prefix of the test's own.
fn settings(url: String) -> RedisStoreSettings {
    let prefix = format!("sidekey-faults-{}", uuid::Uuid::new_v4().simple());
    let mut settings = RedisStoreSettings::new(url, prefix);
    settings.connect_timeout = CONNECT_TIMEOUT;
    settings.command_timeout = COMMAND_TIMEOUT;
    settings
}

/// A store on `settings`, on the system clock.
async fn connect(settings: RedisStoreSettings) -> RedisSessionStore {
    RedisSessionStore::connect(settings, Arc::new(SystemClock))
        .await
        .unwrap_or_else(|error| panic!("connect failed: {error}"))
}

/// One issued session: its token, the session and its real key as handed to the store.
struct Issued {
    token: Token,
    session: Session,
    secret: String,
}

impl Issued {
    /// A fresh token and a grant for it, issued now, for `secret_ref` (real key `secret`) and `subject`,
    /// with its id in the token digest's shard as the application issues it.
    fn new(secret_ref: &str, subject: Option<&str>, secret: &str) -> Self {
        let token = Token::generate().expect("the OS has entropy");
        let session = Session::issue(
            SessionId::new_random_in_shard(token.digest().shard()),
            SecretRef::parse(secret_ref).unwrap(),
            subject.map(|subject| Subject::parse(subject).unwrap()),
            Metadata::new([("team".to_owned(), "search".to_owned())].into()).unwrap(),
            SessionPolicy::default().ttl(Some(TTL_SECONDS)).unwrap(),
            SystemTime::now(),
        );
        Self { token, session, secret: secret.to_owned() }
    }

    fn grant(&self) -> Grant {
        Grant {
            session: self.session.clone(),
            secret: Arc::new(SecretValue::new(self.secret.clone()).unwrap()),
        }
    }

    /// Stores it; panics if the store fails.
    async fn insert_into(&self, store: &dyn SessionStore) {
        store
            .insert(&self.token.keys(), self.grant())
            .await
            .unwrap_or_else(|error| panic!("insert: {error}"));
    }

    /// Asserts that `lookup` is this very session with its real key.
    fn assert_is_me(&self, lookup: &Lookup) {
        let Lookup::Active(grant) = lookup else { panic!("expected the active session, found {lookup:?}") };
        assert_eq!(grant.session, self.session, "the stored session comes back unchanged");
        assert_eq!(grant.secret.expose(), self.secret, "the real key comes back unchanged");
    }

    /// Asserts that the store finds this very session, active, with its real key.
    async fn assert_found_in(&self, store: &dyn SessionStore) {
        let lookup = store.find(&self.token.keys()).await.unwrap_or_else(|error| panic!("find: {error}"));
        self.assert_is_me(&lookup);
    }
}

/// Runs one store call and asserts that it answers [`StoreError::Unavailable`] within
/// [`UNAVAILABLE_WITHIN`], with an error text that names neither the token nor the real key of `issued`.
async fn expect_unavailable<T: std::fmt::Debug>(
    operation: &str,
    issued: &Issued,
    call: impl Future<Output = Result<T, StoreError>>,
) {
    let started = Instant::now();
    let Ok(result) = tokio::time::timeout(HANG_AFTER, call).await else {
        panic!("{operation}: no answer after {HANG_AFTER:?}, the store hangs");
    };
    let elapsed = started.elapsed();
    eprintln!("{operation}: {result:?} after {elapsed:?}");
    match &result {
        Err(StoreError::Unavailable(cause)) => {
            assert!(!cause.contains(issued.token.expose()), "{operation}: the error text holds the token");
            assert!(!cause.contains(&issued.secret), "{operation}: the error text holds the real key");
        }
        other => panic!("{operation}: expected Unavailable, got {other:?}"),
    }
    assert!(elapsed <= UNAVAILABLE_WITHIN, "{operation} took {elapsed:?}, over {UNAVAILABLE_WITHIN:?}");
}

/// Runs `attempt` every [`RETRY_EVERY`] until it returns `Some`, for at most [`RECOVERY_WITHIN`]; returns
/// the value and how long it took.
async fn poll_until<T, F, Fut>(what: &str, mut attempt: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        // Each attempt is itself bounded, so that a hanging call fails here rather than at the test budget.
        let outcome = tokio::time::timeout(UNAVAILABLE_WITHIN, attempt()).await;
        if let Ok(Some(value)) = outcome {
            let took = started.elapsed();
            eprintln!("{what}: after {took:?}");
            return (value, took);
        }
        assert!(started.elapsed() < RECOVERY_WITHIN, "{what}: not within {RECOVERY_WITHIN:?}");
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

/// Polls `find` until it returns the session, after a restart or a thaw.
async fn until_found(what: &str, store: &dyn SessionStore, issued: &Issued) -> Duration {
    let (lookup, took) = poll_until(what, || async { store.find(&issued.token.keys()).await.ok() }).await;
    issued.assert_is_me(&lookup);
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_survives_a_redis_restart() {
    if skip_unless_installed("a_session_survives_a_redis_restart", &["redis-server"]) {
        return;
    }
    bounded(async {
        let mut redis = PrivateRedis::start();
        let settings = settings(redis.url());
        let store = connect(settings.clone()).await;
        let issued = Issued::new("openai-prod", Some("alice"), "sk-survives-a-restart");
        issued.insert_into(&store).await;

        redis.stop();
        redis.restart();

        until_found("find after the restart", &store, &issued).await;
        let fresh = connect(settings).await;
        issued.assert_found_in(&fresh).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_survives_a_redis_crash() {
    if skip_unless_installed("a_session_survives_a_redis_crash", &["redis-server"]) {
        return;
    }
    bounded(async {
        let mut redis = PrivateRedis::start();
        let store = connect(settings(redis.url())).await;
        let issued = Issued::new("openai-prod", None, "sk-survives-a-crash");
        issued.insert_into(&store).await;
        let revoked = Issued::new("openai-prod", None, "sk-revoked-before-the-crash");
        revoked.insert_into(&store).await;
        assert!(store.revoke(&revoked.token.digest()).await.unwrap());

        redis.kill();
        redis.restart();

        until_found("find after the crash", &store, &issued).await;
        let lookup = store.find(&revoked.token.keys()).await.unwrap();
        assert!(matches!(lookup, Lookup::Revoked), "a revocation survives the crash too: {lookup:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_answers_unavailable_within_a_bounded_time() {
    if skip_unless_installed("redis_down_answers_unavailable_within_a_bounded_time", &["redis-server"]) {
        return;
    }
    bounded(async {
        let mut redis = PrivateRedis::start();
        let store = connect(settings(redis.url())).await;
        let stored = Issued::new("openai", Some("alice"), "sk-stored-before-the-outage");
        stored.insert_into(&store).await;
        store.ping().await.unwrap();

        redis.stop();

        // Twice: first on the connection Redis just closed, then while the store tries to reconnect.
        for round in 1..=2 {
            let fresh = Issued::new("openai", Some("alice"), "sk-issued-during-the-outage");
            let (keys, digest, id) = (stored.token.keys(), stored.token.digest(), stored.session.id());
            let later = SystemTime::now() + Duration::from_secs(TTL_SECONDS);
            let alice = RevocationTarget::Subject(Subject::parse("alice").unwrap());
            let all = SessionFilter::default();
            let name = |operation: &str| format!("{operation} (round {round})");
            expect_unavailable(&name("find"), &stored, store.find(&keys)).await;
            expect_unavailable(&name("insert"), &fresh, store.insert(&fresh.token.keys(), fresh.grant()))
                .await;
            expect_unavailable(&name("ping"), &stored, store.ping()).await;
            expect_unavailable(&name("extend"), &stored, store.extend(&keys, later)).await;
            expect_unavailable(&name("revoke"), &stored, store.revoke(&digest)).await;
            expect_unavailable(&name("revoke_by_id"), &stored, store.revoke_by_id(id)).await;
            expect_unavailable(&name("revoke_matching"), &stored, store.revoke_matching(&alice)).await;
            expect_unavailable(&name("list"), &stored, store.list(&all, 10)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_recovers_by_itself_when_redis_returns() {
    if skip_unless_installed("the_store_recovers_by_itself_when_redis_returns", &["redis-server"]) {
        return;
    }
    bounded(async {
        let mut redis = PrivateRedis::start();
        let store = connect(settings(redis.url())).await;
        let before = Issued::new("openai", Some("alice"), "sk-before-the-outage");
        before.insert_into(&store).await;

        redis.stop();
        let during = Issued::new("openai", Some("alice"), "sk-during-the-outage");
        expect_unavailable("find while down", &before, store.find(&before.token.keys())).await;
        expect_unavailable("insert while down", &during, store.insert(&during.token.keys(), during.grant()))
            .await;

        redis.restart();

        until_found("find after Redis returned", &store, &before).await;
        store.ping().await.expect("ping after recovery");
        let after = Issued::new("openai", Some("alice"), "sk-after-the-outage");
        after.insert_into(&store).await;
        after.assert_found_in(&store).await;
        let lookup = store.find(&during.token.keys()).await.unwrap();
        assert!(matches!(lookup, Lookup::Missing), "an insert that failed stored nothing: {lookup:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_started_while_redis_is_down_connects_once_it_is_up() {
    if skip_unless_installed("a_store_started_while_redis_is_down_connects_once_it_is_up", &["redis-server"])
    {
        return;
    }
    bounded(async {
        // Started and stopped at once: a port and a directory of our own with nothing listening.
        let mut redis = PrivateRedis::start();
        redis.stop();

        let timed = Instant::now();
        let store = connect(settings(redis.url())).await;
        let connect_took = timed.elapsed();
        eprintln!("connect with Redis down: Ok after {connect_took:?}");
        assert!(connect_took <= UNAVAILABLE_WITHIN, "connect took {connect_took:?} with Redis down");

        let issued = Issued::new("openai", None, "sk-once-redis-is-up");
        expect_unavailable("ping before Redis is up", &issued, store.ping()).await;
        expect_unavailable("find before Redis is up", &issued, store.find(&issued.token.keys())).await;
        expect_unavailable(
            "insert before Redis is up",
            &issued,
            store.insert(&issued.token.keys(), issued.grant()),
        )
        .await;

        redis.restart();

        poll_until("ping once Redis is up", || async { store.ping().await.ok() }).await;
        issued.insert_into(&store).await;
        issued.assert_found_in(&store).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_does_not_hang_requests() {
    if skip_unless_installed("a_hung_redis_does_not_hang_requests", &["redis-server", "kill"]) {
        return;
    }
    bounded(async {
        let mut redis = PrivateRedis::start();
        let settings = settings(redis.url());
        let store = connect(settings.clone()).await;
        let issued = Issued::new("openai", Some("alice"), "sk-frozen-redis");
        issued.insert_into(&store).await;

        redis.pause();
        // Three in a row: a request stuck behind an earlier timed-out one must not wait for it.
        for attempt in 1..=3 {
            let operation = format!("find on a frozen Redis ({attempt})");
            expect_unavailable(&operation, &issued, store.find(&issued.token.keys())).await;
        }
        expect_unavailable("ping on a frozen Redis", &issued, store.ping()).await;
        // A store with no connection yet: the kernel still accepts its connection, Redis never answers
        // its handshake.
        let newcomer = connect(settings.clone()).await;
        expect_unavailable("find on a frozen Redis, new store", &issued, newcomer.find(&issued.token.keys()))
            .await;
        let other = Issued::new("openai", Some("alice"), "sk-issued-while-frozen");
        expect_unavailable(
            "insert on a frozen Redis",
            &other,
            store.insert(&other.token.keys(), other.grant()),
        )
        .await;

        redis.resume();

        until_found("find after Redis thawed", &store, &issued).await;
        store.ping().await.expect("ping after the thaw");
        until_found("find after Redis thawed, new store", &newcomer, &issued).await;
        // The insert had reached Redis's socket before it timed out, so Redis may run it once thawed: the
        // caller was told it failed and never handed out the token, so such a session is unreachable.
        let late = store.find(&other.token.keys()).await.expect("find after the thaw");
        let stored = if matches!(late, Lookup::Active(_)) { "stored" } else { "not stored" };
        eprintln!("the insert that timed out while Redis was frozen: {stored} after the thaw");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_and_tls_urls_work() {
    if skip_unless_installed("unix_socket_and_tls_urls_work", &["redis-server"]) {
        return;
    }
    bounded(async {
        let unix = PrivateRedis::start_unix();
        assert!(unix.url().starts_with("redis+unix:///"), "{}", unix.url());
        round_trip(&unix).await;

        if skip_unless_installed("unix_socket_and_tls_urls_work (TLS)", &["openssl"]) {
            return;
        }
        let tls = PrivateRedis::start_tls();
        assert!(tls.url().starts_with("rediss://"), "{}", tls.url());
        round_trip(&tls).await;

        // Without `#insecure` the store verifies the certificate, and this CA is no one's root: refused.
        // Shows that the port speaks TLS and that the fragment is what the round trip above relied on.
        let verifying = connect(settings(format!("rediss://127.0.0.1:{}/", tls.port()))).await;
        let issued = Issued::new("openai", None, "sk-untrusted-server");
        expect_unavailable("ping over TLS to an untrusted certificate", &issued, verifying.ping()).await;
    })
    .await;
}

/// Insert, find, revoke and ping through `redis`'s URL, and check that the session's keys are in that
/// very server.
async fn round_trip(redis: &PrivateRedis) {
    let store = connect(settings(redis.url())).await;
    store.ping().await.unwrap_or_else(|error| panic!("ping over {}: {error}", redis.url()));
    let issued = Issued::new("openai", Some("alice"), "sk-round-trip");
    issued.insert_into(&store).await;
    issued.assert_found_in(&store).await;
    assert!(redis.dbsize() > 0, "the session is in the server behind {}", redis.url());
    assert!(store.revoke(&issued.token.digest()).await.unwrap());
    let lookup = store.find(&issued.token.keys()).await.unwrap();
    assert!(matches!(lookup, Lookup::Revoked), "over {}: {lookup:?}", redis.url());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_works_on_a_three_master_cluster() {
    if skip_unless_installed("the_store_works_on_a_three_master_cluster", &["redis-server", "redis-cli"]) {
        return;
    }
    bounded(async {
        let cluster = PrivateCluster::start();
        let mut settings = settings(cluster.url());
        // Generous: this test is about routing, not faults, and cluster discovery takes a few round trips.
        settings.connect_timeout = Duration::from_secs(2);
        settings.command_timeout = Duration::from_secs(2);
        let store = connect(settings).await;
        store.ping().await.expect("ping on the cluster");

        // 50 sessions: openai for even i, anthropic for odd; subjects user-0 .. user-4 in turn.
        let mut sessions: Vec<(Issued, bool)> = (0..50)
            .map(|i| {
                let secret_ref = if i % 2 == 0 { "openai" } else { "anthropic" };
                (Issued::new(secret_ref, Some(&format!("user-{}", i % 5)), &format!("sk-{i}")), true)
            })
            .collect();
        for (issued, _) in &sessions {
            issued.insert_into(&store).await;
        }
        let shards: BTreeSet<u8> = sessions.iter().map(|(issued, _)| issued.token.digest().shard()).collect();
        let per_node: Vec<u64> = cluster.nodes().iter().map(|node| node.dbsize()).collect();
        eprintln!("{} digest shards; keys per master: {per_node:?}", shards.len());
        assert!(per_node.iter().all(|&keys| keys > 0), "every master holds sessions: {per_node:?}");
        for (issued, _) in &sessions {
            issued.assert_found_in(&store).await;
        }

        // Revoke one by digest and one by id.
        assert!(store.revoke(&sessions[0].0.token.digest()).await.unwrap());
        assert!(
            !store.revoke(&sessions[0].0.token.digest()).await.unwrap(),
            "only the first revocation counts"
        );
        sessions[0].1 = false;
        assert!(store.revoke_by_id(sessions[1].0.session.id()).await.unwrap());
        assert!(!store.revoke_by_id(sessions[1].0.session.id()).await.unwrap());
        sessions[1].1 = false;
        assert!(!store.revoke_by_id(SessionId::new_random()).await.unwrap(), "an unknown id revokes nothing");

        // Bulk revocations count exactly the active sessions they end, across all masters.
        let openai = SecretRef::parse("openai").unwrap();
        let expected = active(&sessions, |session| session.secret_ref() == &openai);
        assert_eq!(expected, 24);
        let target = RevocationTarget::SecretRef(openai.clone());
        assert_eq!(store.revoke_matching(&target).await.unwrap(), expected);
        end(&mut sessions, |session| session.secret_ref() == &openai);
        assert_eq!(store.revoke_matching(&target).await.unwrap(), 0, "nothing left to revoke");

        let user_3 = Subject::parse("user-3").unwrap();
        let expected = active(&sessions, |session| session.subject() == Some(&user_3));
        assert_eq!(expected, 5, "user-3's anthropic sessions: i = 3, 13, 23, 33, 43");
        let target = RevocationTarget::Subject(user_3.clone());
        assert_eq!(store.revoke_matching(&target).await.unwrap(), expected);
        end(&mut sessions, |session| session.subject() == Some(&user_3));

        for (issued, is_active) in &sessions {
            let lookup = store.find(&issued.token.keys()).await.unwrap();
            if *is_active {
                issued.assert_is_me(&lookup);
            } else {
                assert!(matches!(lookup, Lookup::Revoked), "{lookup:?}");
            }
        }

        // Listings gather the active sessions from every master.
        let anthropic = SecretRef::parse("anthropic").unwrap();
        let user_2 = Subject::parse("user-2").unwrap();
        let filters = [
            SessionFilter::default(),
            SessionFilter { secret_ref: Some(anthropic.clone()), subject: None },
            SessionFilter { secret_ref: None, subject: Some(user_2.clone()) },
            SessionFilter { secret_ref: Some(anthropic), subject: Some(user_2) },
            SessionFilter { secret_ref: Some(openai), subject: None },
        ];
        for filter in &filters {
            let listed = store.list(filter, 1000).await.unwrap();
            let wanted: BTreeSet<SessionId> = sessions
                .iter()
                .filter(|(issued, is_active)| *is_active && filter.matches(&issued.session))
                .map(|(issued, _)| issued.session.id())
                .collect();
            assert_eq!(listed.len(), wanted.len(), "{filter:?}: no session listed twice");
            assert_eq!(listed.iter().map(Session::id).collect::<BTreeSet<_>>(), wanted, "{filter:?}");
        }
        let limited = store.list(&SessionFilter::default(), 5).await.unwrap();
        assert_eq!(limited.len(), 5, "the limit holds across masters");

        // A refresh on the cluster.
        let (survivor, _) = sessions.iter().find(|(_, is_active)| *is_active).unwrap();
        let later = survivor.session.expires_at() + Duration::from_secs(60);
        let Lookup::Active(extended) = store.extend(&survivor.token.keys(), later).await.unwrap() else {
            panic!("extending an active session returns it");
        };
        assert_eq!(extended.session.expires_at(), later);
        assert_eq!(extended.secret.expose(), survivor.secret);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_master_down_fails_only_its_sessions_and_the_store_recovers() {
    if skip_unless_installed(
        "a_cluster_master_down_fails_only_its_sessions_and_the_store_recovers",
        &["redis-server", "redis-cli"],
    ) {
        return;
    }
    bounded(async {
        let mut cluster = PrivateCluster::start();
        let store = connect(settings(cluster.url())).await;
        let sessions: Vec<Issued> =
            (0..30).map(|i| Issued::new("openai", Some("alice"), &format!("sk-cluster-{i}"))).collect();
        for issued in &sessions {
            issued.insert_into(&store).await;
        }

        cluster.node_mut(0).stop();
        // The other masters keep serving their slots; the stopped one's sessions are unavailable, each
        // within the bound.
        let (mut served, mut unavailable) = (0, 0);
        for issued in &sessions {
            let started = Instant::now();
            let Ok(result) = tokio::time::timeout(HANG_AFTER, store.find(&issued.token.keys())).await else {
                panic!("find with a master down: no answer after {HANG_AFTER:?}");
            };
            let elapsed = started.elapsed();
            assert!(elapsed <= UNAVAILABLE_WITHIN, "find with a master down took {elapsed:?}");
            match result {
                Ok(lookup) => {
                    issued.assert_is_me(&lookup);
                    served += 1;
                }
                Err(StoreError::Unavailable(cause)) => {
                    eprintln!("find with a master down: {cause} after {elapsed:?}");
                    unavailable += 1;
                }
                Err(other) => panic!("find with a master down: {other:?}"),
            }
        }
        eprintln!("with one master of three down: {served} sessions served, {unavailable} unavailable");
        assert!(served > 0 && unavailable > 0, "served {served}, unavailable {unavailable}");

        cluster.node_mut(0).restart();
        cluster.wait_until_ok(RECOVERY_WITHIN);
        let (lookups, _) = poll_until("every session found after the master returned", || async {
            let mut lookups = Vec::with_capacity(sessions.len());
            for issued in &sessions {
                lookups.push(store.find(&issued.token.keys()).await.ok()?);
            }
            Some(lookups)
        })
        .await;
        for (issued, lookup) in sessions.iter().zip(&lookups) {
            issued.assert_is_me(lookup);
        }
    })
    .await;
}

/// How many sessions still active in the model `select` selects.
fn active(sessions: &[(Issued, bool)], select: impl Fn(&Session) -> bool) -> u64 {
    sessions.iter().filter(|(issued, is_active)| *is_active && select(&issued.session)).count() as u64
}

/// Marks the sessions `select` selects as ended in the model.
fn end(sessions: &mut [(Issued, bool)], select: impl Fn(&Session) -> bool) {
    for (issued, is_active) in sessions.iter_mut() {
        if select(&issued.session) {
            *is_active = false;
        }
    }
}
