//! A one-second session: valid right after issue, refused once its `expires_at` has passed.

use std::time::Duration;

use reqwest::{Response, StatusCode};
use sidekey_tests::{EXPIRED, SECRET_KEY_ID, TestApp, assert_invalid_token, header, spawn_app};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// How often the token is presented while waiting for it to expire.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long after `expires_at` the refusal may come at the latest (scheduling slack on a busy CI box).
const EXPIRY_SLACK: Duration = Duration::from_millis(1500);

/// Issues a one-second session, checks it verifies at once, then presents it until it is refused.
/// Returns the first refusal, after checking it came no earlier than `expires_at` and no later than
/// [`EXPIRY_SLACK`] after it.
async fn first_refusal_of_a_one_second_session(app: &TestApp) -> (String, Response) {
    let issued = app.issue_token(SECRET_KEY_ID, Some(1)).await;
    assert_eq!(issued.body["expires_in"], 1);
    let expires_at = OffsetDateTime::parse(issued.body["expires_at"].as_str().unwrap(), &Rfc3339).unwrap();
    let response = app.verify(&issued.token).await;
    assert_eq!(response.status(), StatusCode::OK, "a fresh one-second session must verify");

    loop {
        let sent = OffsetDateTime::now_utc();
        let response = app.verify(&issued.token).await;
        let received = OffsetDateTime::now_utc();
        if response.status() == StatusCode::OK {
            // The boundary is inclusive: a session verifying means the server's clock was before expires_at.
            assert!(sent < expires_at, "verified although sent at {sent}, after expires_at {expires_at}");
            assert!(received < expires_at + EXPIRY_SLACK, "still valid {EXPIRY_SLACK:?} after {expires_at}");
            tokio::time::sleep(POLL_INTERVAL).await;
            continue;
        }
        assert!(received >= expires_at, "refused at {received}, before expires_at {expires_at}");
        return (issued.token, response);
    }
}

#[tokio::test]
async fn a_one_second_session_verifies_at_once_and_is_refused_with_invalid_token_once_expired() {
    let app = spawn_app().await;
    let (token, refusal) = first_refusal_of_a_one_second_session(&app).await;
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
    let app = spawn_app().await;
    let (token, refusal) = first_refusal_of_a_one_second_session(&app).await;
    assert_invalid_token(refusal, EXPIRED).await;
    // A refresh must not bring it back either.
    assert_invalid_token(app.refresh(&token).await, EXPIRED).await;
    app.shutdown().await;
}
