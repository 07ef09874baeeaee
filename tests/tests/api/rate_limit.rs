//! Failed requests are limited per client address: 429 `rate_limited` with `Retry-After`.
//!
//! The server trusts loopback as a reverse proxy here and reads the client's address from
//! `X-Forwarded-For`, so one test can play several clients from loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::{Method, StatusCode};
use sidekey_tests::{SECRET_KEY_ID, TestApp, assert_problem, header, spawn_app_with};

const GUESSER: &str = "192.0.2.66";
const USER: &str = "198.51.100.10";
/// Well-formed enough to reach the store, never issued.
const UNKNOWN_TOKEN: &str = "skt_0000000000000000000000000000000000000000000aaaaaa";

async fn spawn_limited(per_second: u32, burst: u32) -> TestApp {
    spawn_app_with(|config| {
        config.http.failed_requests_per_second = per_second;
        config.http.failed_requests_burst = burst;
        config.http.trusted_proxies = vec!["127.0.0.1/32".to_owned()];
    })
    .await
}

async fn verify_as(app: &TestApp, client: &str, token: &str) -> reqwest::Response {
    app.request(Method::GET, "/v1/auth/verify", Some(token))
        .header("x-forwarded-for", client)
        .send()
        .await
        .expect("an answer")
}

/// `POST /v1/sessions` with a JSON `body` from `client`; the send's error is the caller's to judge (a
/// refused oversize body may be cut off).
async fn create_session_as(
    app: &TestApp,
    client: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Result<reqwest::Response> {
    app.request(Method::POST, "/v1/sessions", None)
        .header("x-forwarded-for", client)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
}

#[tokio::test]
async fn a_client_over_its_failures_is_refused_with_429_until_its_block_ends() {
    let app = spawn_limited(1, 5).await;
    let valid = app.issue_token(SECRET_KEY_ID, None).await.token;

    for attempt in 0..5 {
        let response = verify_as(&app, GUESSER, UNKNOWN_TOKEN).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "attempt {attempt} is within the burst");
    }
    // The sixth is over the burst: refused, and the refusal is held until the block ends (a second). What
    // happens during the block, and how long the hold lasts, is checked where the clocks can be moved:
    // the middleware's unit tests.
    let over = verify_as(&app, GUESSER, UNKNOWN_TOKEN).await;
    let retry_after = header(&over, "retry-after").expect("a Retry-After");
    let seconds: u64 = retry_after.parse().expect("Retry-After in seconds");
    assert!((1..=2).contains(&seconds), "one failure a second: wait about a second, not {seconds}");
    assert_problem(over, 429, "rate_limited").await;

    // Once the block is over, the client is served again; nobody else was ever refused.
    assert_eq!(verify_as(&app, GUESSER, &valid).await.status(), StatusCode::OK);
    assert_eq!(verify_as(&app, USER, &valid).await.status(), StatusCode::OK);
    app.shutdown().await;
}

#[tokio::test]
async fn a_client_forging_x_forwarded_for_from_an_untrusted_peer_is_limited_by_its_own_address() {
    let app = spawn_app_with(|config| {
        config.http.failed_requests_per_second = 1;
        config.http.failed_requests_burst = 3;
    })
    .await;
    // A fresh forged address for every guess: all of them are loopback's, and the fourth is refused.
    for forged in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        assert_eq!(
            verify_as(&app, forged, UNKNOWN_TOKEN).await.status(),
            StatusCode::UNAUTHORIZED,
            "{forged}"
        );
    }
    assert_problem(verify_as(&app, "203.0.113.4", UNKNOWN_TOKEN).await, 429, "rate_limited").await;
    app.shutdown().await;
}

#[tokio::test]
async fn the_deprecated_client_address_header_still_believes_every_peer() {
    let app = spawn_app_with(|config| {
        config.http.failed_requests_per_second = 1;
        config.http.failed_requests_burst = 1;
        config.http.client_address_header = Some("X-Forwarded-For".to_owned());
    })
    .await;
    assert_eq!(verify_as(&app, GUESSER, UNKNOWN_TOKEN).await.status(), StatusCode::UNAUTHORIZED);
    // Another address, by the header's word: its own burst.
    assert_eq!(verify_as(&app, USER, UNKNOWN_TOKEN).await.status(), StatusCode::UNAUTHORIZED);
    assert_problem(verify_as(&app, GUESSER, UNKNOWN_TOKEN).await, 429, "rate_limited").await;
    app.shutdown().await;
}

#[tokio::test]
async fn oversize_and_malformed_bodies_count_as_failures() {
    let app = spawn_limited(1, 3).await;
    let oversize = vec![b'x'; 64 * 1024];
    for _ in 0..2 {
        let response = create_session_as(&app, GUESSER, oversize.clone()).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
    let malformed = create_session_as(&app, GUESSER, "{not json").await.unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    // The burst of three is spent: the next failure is refused.
    let over = create_session_as(&app, GUESSER, "{not json").await.unwrap();
    assert_problem(over, 429, "rate_limited").await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_rate_of_zero_turns_the_limit_off() {
    let app = spawn_limited(0, 1).await;
    for _ in 0..300 {
        assert_eq!(verify_as(&app, GUESSER, UNKNOWN_TOKEN).await.status(), StatusCode::UNAUTHORIZED);
    }
    app.shutdown().await;
}

/// A flood of invalid tokens and oversize bodies from one address, with a user's valid requests from
/// another in the middle of it: every valid request is answered 200, and past its burst the flood is
/// turned away at the door (429), held until the client's block ends. (That exactly the burst and then
/// the sustained rate get processed is checked on a clock the test moves, in the middleware's unit
/// tests; how much the flood slows valid requests is measured by `bench/flood.sh`, not here: a timing
/// assertion in a shared test runner would be noise.)
#[tokio::test]
async fn a_flood_of_failures_is_turned_away_while_valid_requests_pass() {
    let app = Arc::new(spawn_limited(20, 100).await);
    let valid = app.issue_token(SECRET_KEY_ID, None).await.token;
    let refused = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let flooders: Vec<_> = (0..8)
        .map(|flooder| {
            let (app, refused, failed) = (app.clone(), refused.clone(), failed.clone());
            tokio::spawn(async move {
                for round in 0..FLOOD_ROUNDS {
                    let response = if (flooder + round) % 2 == 0 {
                        verify_as(&app, GUESSER, UNKNOWN_TOKEN).await
                    } else {
                        let sent = create_session_as(&app, GUESSER, vec![b' '; 256 * 1024]).await;
                        // A refused body is not read: the server may close the connection before the
                        // client has finished sending it, and the client then sees a reset instead of
                        // the answer. Cutting a flooder off is fine.
                        match sent {
                            Ok(response) => response,
                            Err(_) => {
                                refused.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                        }
                    };
                    match response.status() {
                        StatusCode::TOO_MANY_REQUESTS => refused.fetch_add(1, Ordering::Relaxed),
                        StatusCode::UNAUTHORIZED | StatusCode::PAYLOAD_TOO_LARGE => {
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                        other => panic!("a flood request got {other}"),
                    };
                }
            })
        })
        .collect();

    for _ in 0..200 {
        assert_eq!(verify_as(&app, USER, &valid).await.status(), StatusCode::OK);
    }
    for flooder in flooders {
        flooder.await.unwrap();
    }
    let (refused, failed) = (refused.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(refused + failed, 8 * FLOOD_ROUNDS);
    assert!(refused > 0, "the flood was never refused");
}

const FLOOD_ROUNDS: usize = 60;
