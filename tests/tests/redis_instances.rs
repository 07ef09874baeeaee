//! Several sidekey instances sharing one Redis: one truth, and revocation everywhere at once.
//!
//! Needs Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`). Each test uses its own random key
//! prefix and deletes its keys at the end. Without Redis: fails under `CI=true`, else skips with a reason.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sidekey_tests::{
    OTHER_SECRET_KEY_ID, RedisPrefix, SECRET_KEY_ID, TestApp, redis_url, send, spawn_app_with,
};

/// The contract's bound on cross-instance revocation.
const REVOCATION_BOUND: Duration = Duration::from_millis(100);

/// Two instances on one Redis under one fresh prefix.
struct Pair {
    a: TestApp,
    b: TestApp,
    /// Declared last, so dropped last: the keys go once both instances have stopped.
    prefix: RedisPrefix,
}

impl Pair {
    async fn start() -> Option<Self> {
        let prefix = RedisPrefix::new(&redis_url().await?);
        let on_redis = |config: &mut sidekey::Config| {
            config.store.url = prefix.url().parse().unwrap();
            config.store.prefix = prefix.prefix().to_owned();
        };
        let a = spawn_app_with(on_redis).await;
        let b = spawn_app_with(on_redis).await;
        Some(Self { a, b, prefix })
    }

    /// Stops both instances, then deletes every key under the prefix.
    async fn finish(self) {
        let Self { a, b, prefix } = self;
        a.shutdown().await;
        b.shutdown().await;
        drop(prefix);
    }
}

/// Polls `refused` until it holds or `bound` has passed; returns how long it took.
async fn time_until_refused(app: &TestApp, token: &str, bound: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if app.verify(token).await.status() == StatusCode::UNAUTHORIZED {
            return started.elapsed();
        }
        assert!(started.elapsed() < bound * 10, "still accepted after {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
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
    tokio::time::sleep(Duration::from_millis(1100)).await;
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

/// Polls `show` on `app` until it answers `expires_at`; returns how long it took.
async fn time_until_expiry_shown(
    app: &TestApp,
    token: &str,
    expires_at: &Value,
    bound: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let shown: Value = app.show(token).await.json().await.unwrap();
        if &shown["expires_at"] == expires_at {
            return started.elapsed();
        }
        assert!(started.elapsed() < bound * 10, "still {shown} after {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn a_refresh_on_one_instance_reaches_the_other_instances_cache_within_100_ms() {
    // Each instance caches what it verified (the Redis store's local cache, on by default): A has the
    // session in memory when B refreshes it, and must answer the new expiry within the bound.
    let Some(pair) = Pair::start().await else { return };
    let issued = pair.a.issue_token(SECRET_KEY_ID, Some(60)).await;
    // So that the refresh moves the expiry (whole seconds); both subscriptions are up by then.
    tokio::time::sleep(Duration::from_millis(1100)).await;
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
