//! What a client sees when the Redis store goes away and comes back: 503 `store_unavailable` with
//! `Retry-After` within a bounded time (never a hang, never a 200), `/readyz` 503, and recovery without a
//! restart, with the sessions Redis persisted still valid.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sidekey_test_support::redis_server::PrivateRedis;
use sidekey_test_support::skip_unless_installed;
use sidekey_tests::{SECRET_KEY_ID, TestApp, assert_problem, header, spawn_app_with};

/// Connect and command timeouts given to the store: short, so the bound below is tight.
const STORE_TIMEOUT_MS: u64 = 300;
/// The longest a request may take while Redis is down: both timeouts plus scheduling slack.
const UNAVAILABLE_BOUND: Duration = Duration::from_millis(2 * STORE_TIMEOUT_MS + 700);

async fn app_on(redis: &PrivateRedis) -> TestApp {
    let url = redis.url();
    spawn_app_with(move |config| {
        config.store.url = url.parse().unwrap();
        config.store.prefix = "outage".to_owned();
        config.store.redis.connect_timeout_ms = STORE_TIMEOUT_MS;
        config.store.redis.command_timeout_ms = STORE_TIMEOUT_MS;
    })
    .await
}

/// Polls until `check` holds, for at most 10 s; returns how long it took.
async fn within_10_s<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < Duration::from_secs(10), "{what} did not happen within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn redis_down_is_503_within_a_bound_and_redis_back_is_business_as_usual() {
    if skip_unless_installed("redis_outage", &["redis-server", "redis-cli"]) {
        return;
    }
    let mut redis = PrivateRedis::start();
    let app = app_on(&redis).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    assert_eq!(app.verify(&issued.token).await.status(), StatusCode::OK);
    assert_eq!(app.client.get(app.url("/readyz")).send().await.unwrap().status(), StatusCode::OK);

    redis.stop();
    // The session was just verified, so the store's local cache holds it; the cache serves only while
    // its subscription to Redis answered within the last 60 ms, so after that every verification asks
    // Redis and fails closed. Each request is bounded, and the cache's grace is short.
    let stopped = Instant::now();
    let verify = loop {
        let started = Instant::now();
        let verify = app.verify(&issued.token).await;
        let took = started.elapsed();
        assert!(took < UNAVAILABLE_BOUND, "verify took {took:?} with Redis down");
        if verify.status() != StatusCode::OK {
            break verify;
        }
        let served = stopped.elapsed();
        assert!(
            served < Duration::from_millis(500),
            "still served from memory {served:?} after Redis stopped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(header(&verify, "retry-after").as_deref(), Some("1"));
    assert_problem(verify, 503, "store_unavailable").await;

    let started = Instant::now();
    let issue = app.issue(&serde_json::json!({ "secret_key_id": SECRET_KEY_ID })).await;
    assert!(started.elapsed() < UNAVAILABLE_BOUND, "issue took {:?} with Redis down", started.elapsed());
    assert_problem(issue, 503, "store_unavailable").await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    let problem = assert_problem(ready, 503, "not_ready").await;
    assert!(problem["detail"].as_str().unwrap().contains("session store"), "{problem}");

    redis.restart();
    let recovered =
        within_10_s("recovery", || async { app.verify(&issued.token).await.status() == StatusCode::OK })
            .await;
    eprintln!("recovered {recovered:?} after Redis came back");
    assert_eq!(app.client.get(app.url("/readyz")).send().await.unwrap().status(), StatusCode::OK);
    let shown: serde_json::Value = app.show(&issued.token).await.json().await.unwrap();
    assert_eq!(shown["session_id"], issued.session_id.as_str(), "the persisted session is the same one");
    assert_eq!(app.revoke(&issued.token).await.status(), StatusCode::NO_CONTENT);
    app.shutdown().await;
}

#[tokio::test]
async fn sidekey_starts_while_redis_is_down_and_becomes_ready_when_it_comes_up() {
    if skip_unless_installed("redis_outage", &["redis-server", "redis-cli"]) {
        return;
    }
    let mut redis = PrivateRedis::start();
    redis.stop();
    let app = app_on(&redis).await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_problem(ready, 503, "not_ready").await;
    assert_problem(
        app.issue(&serde_json::json!({ "secret_key_id": SECRET_KEY_ID })).await,
        503,
        "store_unavailable",
    )
    .await;
    redis.restart();
    within_10_s("readiness", || async {
        app.client.get(app.url("/readyz")).send().await.unwrap().status() == StatusCode::OK
    })
    .await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    assert_eq!(app.verify(&issued.token).await.status(), StatusCode::OK);
    app.shutdown().await;
}
