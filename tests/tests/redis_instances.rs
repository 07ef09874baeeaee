//! Several sidekey instances sharing one Redis: one truth, and revocation everywhere at once.
//!
//! Needs Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`). Each test uses its own random key
//! prefix and deletes its keys at the end. Without Redis: fails under `CI=true`, else skips with a reason.
//!
//! Both instances run on one [`ManualClock`]: a test that needs time to pass (so that a refresh moves
//! `expires_at`) moves it instead of sleeping. Pub/sub is real, so the bounds on messages are measured,
//! and a wait for a subscription polls for it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sidekey_test_support::{ManualClock, random_hex, redis_url};
use sidekey_tests::{OTHER_SECRET_KEY_ID, SECRET_KEY_ID, TestApp, send, spawn_app_on};

/// The contract's bound on cross-instance revocation.
const REVOCATION_BOUND: Duration = Duration::from_millis(100);

/// How long an instance may take to answer from its local cache after it started: its subscription
/// comes up within milliseconds on a local Redis; the bound only keeps a broken one from hanging the test.
const CACHING_WITHIN: Duration = Duration::from_secs(5);

/// Two instances on one Redis under one fresh prefix, on one clock.
struct Pair {
    a: TestApp,
    b: TestApp,
    clock: Arc<ManualClock>,
    url: String,
    prefix: String,
}

impl Pair {
    async fn start() -> Option<Self> {
        let url = redis_url().await?;
        let prefix = format!("sidekey-e2e-{}", random_hex(12));
        // Near the real time: Redis expires the keys on its own clock, which must agree about when that is.
        let clock = Arc::new(ManualClock::starting_now());
        let on_redis = |config: &mut sidekey::Config| {
            config.store.url = url.parse().unwrap();
            config.store.prefix = prefix.clone();
        };
        let a = spawn_app_on(clock.clone(), on_redis).await;
        let b = spawn_app_on(clock.clone(), on_redis).await;
        Some(Self { a, b, clock, url, prefix })
    }

    /// Waits until `app` answers verifications from its local cache, so that a test of what reaches the
    /// cache tests the cache and not Redis: a probe session (under the other key, which the tests below
    /// leave alone) is verified on `app`, then deleted from Redis behind its back; while `app` still
    /// accepts it, the answer came from memory.
    async fn until_caching(&self, app: &TestApp) {
        let deadline = Instant::now() + CACHING_WITHIN;
        loop {
            let probe = app.issue_token(OTHER_SECRET_KEY_ID, None).await;
            assert_eq!(app.verify(&probe.token).await.status(), StatusCode::OK);
            let digest = sidekey_domain::Token::parse(&probe.token).unwrap().digest().to_hex();
            delete_keys(&self.url, &format!("*{}*{digest}", self.prefix)).await;
            if app.verify(&probe.token).await.status() == StatusCode::OK {
                return;
            }
            assert!(Instant::now() < deadline, "no answer from the local cache within {CACHING_WITHIN:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops both instances and deletes every key under the prefix.
    async fn finish(self) {
        self.a.shutdown().await;
        self.b.shutdown().await;
        delete_keys(&self.url, &format!("*{}*", self.prefix)).await;
    }
}

/// Deletes every key of the Redis at `url` that matches `pattern`, behind the instances' backs (no
/// invalidation is sent).
async fn delete_keys(url: &str, pattern: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = {
        let mut iter: redis::AsyncIter<String> = connection.scan_match(pattern).await.unwrap();
        let mut keys = Vec::new();
        while let Some(key) = iter.next_item().await {
            keys.push(key.unwrap());
        }
        keys
    };
    if !keys.is_empty() {
        let _: () = connection.del(keys).await.unwrap();
    }
}

/// Polls `holds` until it is true; returns how long that took. Past ten times `bound` the test fails
/// with `what` (the caller asserts the bound itself, so that the figure shows how far over it was).
async fn time_until(what: &str, bound: Duration, mut holds: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if holds().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < bound * 10, "{what} after {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// How long until `app` refuses `token`.
async fn time_until_refused(app: &TestApp, token: &str, bound: Duration) -> Duration {
    time_until("still accepted", bound, async || app.verify(token).await.status() == StatusCode::UNAUTHORIZED)
        .await
}

#[tokio::test]
async fn a_session_issued_on_one_instance_verifies_on_the_other() {
    let Some(pair) = Pair::start().await else { return };
    let issued = pair.a.issue_token(SECRET_KEY_ID, None).await;
    let verified = pair.b.verify(&issued.token).await;
    assert_eq!(verified.status(), StatusCode::OK);
    assert_eq!(
        sidekey_tests::header(&verified, "x-sidekey-session-id").as_deref(),
        Some(&*issued.session_id)
    );
    let shown: Value = pair.b.show(&issued.token).await.json().await.unwrap();
    assert_eq!(shown["secret_key_id"], SECRET_KEY_ID);
    assert_eq!(shown["expires_at"], issued.body["expires_at"]);
    pair.finish().await;
}

#[tokio::test]
async fn a_revocation_on_one_instance_is_refused_on_the_other_within_100_ms() {
    let Some(pair) = Pair::start().await else { return };
    let issued = pair.a.issue_token(SECRET_KEY_ID, None).await;
    assert_eq!(pair.b.verify(&issued.token).await.status(), StatusCode::OK);
    assert_eq!(pair.a.revoke(&issued.token).await.status(), StatusCode::NO_CONTENT);
    let took = time_until_refused(&pair.b, &issued.token, REVOCATION_BOUND).await;
    assert!(took <= REVOCATION_BOUND, "the other instance accepted a revoked token for {took:?}");
    sidekey_tests::assert_invalid_token(pair.b.verify(&issued.token).await, sidekey_tests::REVOKED).await;
    pair.finish().await;
}

#[tokio::test]
async fn an_admin_revocation_by_key_on_one_instance_is_refused_everywhere_within_100_ms() {
    let Some(pair) = Pair::start().await else { return };
    let on_a = pair.a.issue_token(SECRET_KEY_ID, None).await;
    let on_b = pair.b.issue_token(SECRET_KEY_ID, None).await;
    let other_key = pair.a.issue_token(OTHER_SECRET_KEY_ID, None).await;
    for token in [&on_a.token, &on_b.token] {
        assert_eq!(pair.a.verify(token).await.status(), StatusCode::OK);
        assert_eq!(pair.b.verify(token).await.status(), StatusCode::OK);
    }
    let revoked = send(
        pair.b.admin(Method::POST, "/v1/admin/revocations").json(&json!({ "secret_key_id": SECRET_KEY_ID })),
    )
    .await;
    assert_eq!(revoked.status(), StatusCode::OK);
    let body: Value = revoked.json().await.unwrap();
    assert_eq!(body["revoked"], 2, "both instances' sessions of the key, and nothing else");
    for token in [&on_a.token, &on_b.token] {
        let took = time_until_refused(&pair.a, token, REVOCATION_BOUND).await;
        assert!(took <= REVOCATION_BOUND, "instance A accepted a revoked token for {took:?}");
    }
    assert_eq!(pair.a.verify(&other_key.token).await.status(), StatusCode::OK, "other keys keep working");
    pair.finish().await;
}

#[tokio::test]
async fn an_admin_revocation_by_id_and_a_refresh_are_seen_by_the_other_instance() {
    let Some(pair) = Pair::start().await else { return };
    let refreshed = pair.a.issue_token(SECRET_KEY_ID, Some(60)).await;
    // So that the refresh moves the expiry.
    pair.clock.advance(Duration::from_secs(1));
    let answer: Value = pair.b.refresh(&refreshed.token).await.json().await.unwrap();
    let shown: Value = pair.a.show(&refreshed.token).await.json().await.unwrap();
    assert_eq!(shown["expires_at"], answer["expires_at"], "A sees B's refresh");
    assert_ne!(shown["expires_at"], refreshed.body["expires_at"]);

    let by_id = format!("/v1/admin/sessions/{}", refreshed.session_id);
    assert_eq!(send(pair.b.admin(Method::DELETE, &by_id)).await.status(), StatusCode::NO_CONTENT);
    let took = time_until_refused(&pair.a, &refreshed.token, REVOCATION_BOUND).await;
    assert!(took <= REVOCATION_BOUND, "instance A accepted a revoked token for {took:?}");
    let listed: Value = send(pair.a.admin(Method::GET, "/v1/admin/sessions")).await.json().await.unwrap();
    assert_eq!(listed["sessions"].as_array().map(Vec::len), Some(0), "{listed}");
    pair.finish().await;
}

/// How long until `show` on `app` answers `expires_at`.
async fn time_until_expiry_shown(
    app: &TestApp,
    token: &str,
    expires_at: &Value,
    bound: Duration,
) -> Duration {
    time_until(&format!("still not {expires_at}"), bound, async || {
        let shown: Value = app.show(token).await.json().await.unwrap();
        &shown["expires_at"] == expires_at
    })
    .await
}

#[tokio::test]
async fn a_refresh_on_one_instance_reaches_the_other_instances_cache_within_100_ms() {
    // Each instance caches what it verified (the Redis store's local cache, on by default): A has the
    // session in memory when B refreshes it, and must answer the new expiry within the bound.
    let Some(pair) = Pair::start().await else { return };
    pair.until_caching(&pair.a).await;
    pair.until_caching(&pair.b).await;
    let issued = pair.a.issue_token(SECRET_KEY_ID, Some(60)).await;
    // So that the refresh moves the expiry.
    pair.clock.advance(Duration::from_secs(1));
    for _ in 0..3 {
        assert_eq!(pair.a.verify(&issued.token).await.status(), StatusCode::OK);
    }
    let before: Value = pair.a.show(&issued.token).await.json().await.unwrap();
    assert_eq!(before["expires_at"], issued.body["expires_at"]);
    let refreshed: Value = pair.b.refresh(&issued.token).await.json().await.unwrap();
    assert_ne!(refreshed["expires_at"], issued.body["expires_at"]);
    let took =
        time_until_expiry_shown(&pair.a, &issued.token, &refreshed["expires_at"], REVOCATION_BOUND).await;
    assert!(took <= REVOCATION_BOUND, "instance A answered the old expiry for {took:?}");
    // A's own revocation then reaches B, which has verified it too.
    assert_eq!(pair.b.verify(&issued.token).await.status(), StatusCode::OK);
    assert_eq!(pair.a.revoke(&issued.token).await.status(), StatusCode::NO_CONTENT);
    let took = time_until_refused(&pair.b, &issued.token, REVOCATION_BOUND).await;
    assert!(took <= REVOCATION_BOUND, "instance B accepted a revoked token for {took:?}");
    pair.finish().await;
}
