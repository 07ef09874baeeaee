//! A one-second session: valid right after issue and until its `expires_at`, refused from then on.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::{Response, StatusCode};
use sidekey_application::Clock as _;
use sidekey_test_support::ManualClock;
use sidekey_tests::{EXPIRED, SECRET_KEY_ID, TestApp, assert_invalid_token, header, spawn_app_on};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A server on a clock the test moves, so that the session expires at an exact instant.
async fn app_on_a_manual_clock() -> (TestApp, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::starting_now());
    (spawn_app_on(clock.clone(), |_| {}).await, clock)
}

/// Issues a one-second session, checks it verifies at once and still at the last millisecond before its
/// `expires_at` (the boundary is inclusive: at `expires_at` it has expired), then moves the clock to
/// `expires_at` and returns that verification's answer.
async fn first_refusal_of_a_one_second_session(app: &TestApp, clock: &ManualClock) -> (String, Response) {
    let issued = app.issue_token(SECRET_KEY_ID, Some(1)).await;
    assert_eq!(issued.body["expires_in"], 1);
    let expires_at = OffsetDateTime::parse(issued.body["expires_at"].as_str().unwrap(), &Rfc3339).unwrap();
    let expires_at = SystemTime::from(expires_at);
    assert_eq!(expires_at, clock.now() + Duration::from_secs(1), "a one-second session");
    let response = app.verify(&issued.token).await;
    assert_eq!(response.status(), StatusCode::OK, "a fresh one-second session must verify");

    clock.set(expires_at - Duration::from_millis(1));
    let response = app.verify(&issued.token).await;
    assert_eq!(response.status(), StatusCode::OK, "refused before its expires_at");
    clock.set(expires_at);
    let refusal = app.verify(&issued.token).await;
    (issued.token, refusal)
}

#[tokio::test]
async fn a_one_second_session_verifies_at_once_and_is_refused_with_invalid_token_once_expired() {
    let (app, clock) = app_on_a_manual_clock().await;
    let (token, refusal) = first_refusal_of_a_one_second_session(&app, &clock).await;
    assert_eq!(refusal.status(), StatusCode::UNAUTHORIZED);
    let challenge = header(&refusal, "www-authenticate").unwrap_or_default();
    assert!(challenge.contains(r#"error="invalid_token""#), "{challenge}");
    let body: serde_json::Value = refusal.json().await.unwrap();
    assert_eq!(body["code"], "invalid_token", "{body}");
    // And it stays refused on the other routes.
    assert_eq!(app.show(&token).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.refresh(&token).await.status(), StatusCode::UNAUTHORIZED);
    app.shutdown().await;
}

#[tokio::test]
async fn an_expired_token_is_described_as_expired() {
    let (app, clock) = app_on_a_manual_clock().await;
    let (token, refusal) = first_refusal_of_a_one_second_session(&app, &clock).await;
    assert_invalid_token(refusal, EXPIRED).await;
    // A refresh must not bring it back either.
    assert_invalid_token(app.refresh(&token).await, EXPIRED).await;
    app.shutdown().await;
}
