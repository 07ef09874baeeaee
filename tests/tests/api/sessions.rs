//! The Session API's happy paths: issue, show, refresh, revoke, verify.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sidekey_application::Clock as _;
use sidekey_test_support::ManualClock;
use sidekey_tests::{
    OTHER_SECRET_KEY_ID, REVOKED, SECRET_KEY_ID, assert_invalid_token, header, send, spawn_app, spawn_app_on,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Parses an RFC 3339 timestamp the contract says is UTC (`Z`).
fn utc(value: &Value) -> OffsetDateTime {
    let text = value.as_str().unwrap_or_else(|| panic!("a timestamp string, got {value}"));
    assert!(text.ends_with('Z'), "{text} must be UTC with a `Z` suffix");
    OffsetDateTime::parse(text, &Rfc3339).unwrap_or_else(|error| panic!("{text} is not RFC 3339: {error}"))
}

fn keys(body: &Value) -> BTreeSet<&str> {
    body.as_object().expect("a JSON object").keys().map(String::as_str).collect()
}

#[tokio::test]
async fn issuing_a_session_answers_201_with_the_contract_shape_and_no_store() {
    let app = spawn_app().await;
    let before = OffsetDateTime::now_utc();
    let response = app.issue(&json!({ "secret_key_id": SECRET_KEY_ID })).await;
    let after = OffsetDateTime::now_utc();

    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(header(&response, "cache-control").as_deref(), Some("no-store"));
    assert!(header(&response, "content-type").is_some_and(|value| value.starts_with("application/json")));
    let text = response.text().await.unwrap();
    assert!(!text.contains(&app.real_key), "the real key is in the issue response: {text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        keys(&body),
        BTreeSet::from([
            "session_id",
            "token",
            "token_type",
            "expires_at",
            "expires_in",
            "secret_key_id",
            "subject",
            "scope",
            "limits",
            "usage"
        ]),
        "{body}"
    );
    assert_eq!(body["usage"], json!({"requests": 0, "input_tokens": 0, "output_tokens": 0}), "{body}");
    let token = body["token"].as_str().unwrap();
    assert!(token.starts_with("skt_"), "{token:?} lacks the skt_ prefix");
    assert_eq!(token.len(), 53, "{token:?}");
    assert!(sidekey_domain::Token::parse(token).is_ok(), "the issued token does not pass its own checksum");
    assert!(sidekey_domain::SessionId::parse(body["session_id"].as_str().unwrap()).is_ok(), "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["secret_key_id"], SECRET_KEY_ID);
    assert_eq!(body["subject"], Value::Null);
    let expires_at = utc(&body["expires_at"]);
    let hour = time::Duration::seconds(3600);
    assert!(
        expires_at >= before + hour - time::Duration::SECOND
            && expires_at <= after + hour + time::Duration::SECOND,
        "expires_at {expires_at} is not about an hour after {before}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn every_issue_gets_a_fresh_token_and_session_id() {
    let app = spawn_app().await;
    let first = app.issue_token(SECRET_KEY_ID, None).await;
    let second = app.issue_token(SECRET_KEY_ID, None).await;
    assert_ne!(first.token, second.token);
    assert_ne!(first.session_id, second.session_id);
    app.shutdown().await;
}

#[tokio::test]
async fn a_requested_ttl_and_metadata_are_kept_and_shown() {
    let app = spawn_app().await;
    let response = app
        .issue(&json!({
            "secret_key_id": OTHER_SECRET_KEY_ID,
            "ttl_seconds": 600,
            "metadata": { "chat": "c-42", "frontend": "web" }
        }))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["expires_in"], 600);
    assert_eq!(body["secret_key_id"], OTHER_SECRET_KEY_ID);

    let shown: Value = app.show(body["token"].as_str().unwrap()).await.json().await.unwrap();
    assert_eq!(shown["metadata"], json!({ "chat": "c-42", "frontend": "web" }));
    assert_eq!(shown["secret_key_id"], OTHER_SECRET_KEY_ID);
    let lifetime = utc(&shown["expires_at"]) - utc(&shown["issued_at"]);
    assert_eq!(lifetime, time::Duration::seconds(600), "{shown}");
    app.shutdown().await;
}

#[tokio::test]
async fn showing_a_session_gives_its_fields_but_never_the_token_or_the_real_key() {
    let app = spawn_app().await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;

    let response = app.show(&issued.token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "cache-control").as_deref(), Some("no-store"));
    let text = response.text().await.unwrap();
    for secret in [issued.token.as_str(), &issued.token[4..], app.real_key.as_str()] {
        assert!(!text.contains(secret), "GET /v1/session shows a secret: {text}");
    }
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        keys(&body),
        BTreeSet::from([
            "session_id",
            "secret_key_id",
            "subject",
            "issued_at",
            "expires_at",
            "expires_in",
            "metadata",
            "scope",
            "limits",
            "usage",
            "remaining"
        ]),
        "{body}"
    );
    assert_eq!(body["session_id"], issued.session_id.as_str());
    assert_eq!(body["secret_key_id"], SECRET_KEY_ID);
    assert_eq!(body["subject"], Value::Null);
    assert_eq!(body["metadata"], json!({}));
    assert_eq!(body["expires_at"], issued.body["expires_at"]);
    assert!((3599..=3600).contains(&body["expires_in"].as_u64().unwrap()), "{body}");
    assert_eq!(utc(&body["expires_at"]) - utc(&body["issued_at"]), time::Duration::seconds(3600));
    app.shutdown().await;
}

#[tokio::test]
async fn refresh_slides_expires_at_but_never_past_the_maximum_lifetime() {
    // A 2-second TTL capped at 3 seconds of lifetime: the first refresh slides, the second hits the cap.
    // The server runs on a clock the test moves, so each step happens at an exact instant.
    let clock = Arc::new(ManualClock::starting_now());
    let app = spawn_app_on(clock.clone(), |config| {
        config.session.default_ttl_seconds = 2;
        config.session.max_ttl_seconds = 2;
        config.session.max_lifetime_seconds = 3;
    })
    .await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    let shown: Value = app.show(&issued.token).await.json().await.unwrap();
    let issued_at = utc(&shown["issued_at"]);
    assert_eq!(SystemTime::from(issued_at), clock.now(), "issued_at is the server's clock");
    let first_expiry = utc(&shown["expires_at"]);
    assert_eq!(first_expiry - issued_at, time::Duration::seconds(2));
    let cap = issued_at + time::Duration::seconds(3);

    let refresh_at = issued_at + time::Duration::milliseconds(500);
    clock.set(refresh_at.into());
    let response = app.refresh(&issued.token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "cache-control").as_deref(), Some("no-store"));
    let slid: Value = response.json().await.unwrap();
    assert!(!slid.to_string().contains(&issued.token), "the refresh answer shows the token");
    let slid_expiry = utc(&slid["expires_at"]);
    assert!(slid_expiry > first_expiry, "refresh did not slide: {slid_expiry} <= {first_expiry}");
    assert_eq!(slid_expiry, refresh_at + time::Duration::seconds(2), "a refresh slides to now + ttl");
    assert_eq!(utc(&slid["issued_at"]), issued_at, "refresh must not move issued_at");
    assert_eq!(slid["session_id"], issued.session_id.as_str());

    clock.set((issued_at + time::Duration::milliseconds(1300)).into());
    let capped: Value = app.refresh(&issued.token).await.json().await.unwrap();
    assert_eq!(utc(&capped["expires_at"]), cap, "now + ttl would pass issued_at + max_lifetime: {capped}");
    let shown: Value = app.show(&issued.token).await.json().await.unwrap();
    assert_eq!(utc(&shown["expires_at"]), cap, "GET /v1/session disagrees with the refresh: {shown}");

    // Past the original expiry and the first refresh's: the store honours the extension.
    clock.set((issued_at + time::Duration::milliseconds(2600)).into());
    let response = app.verify(&issued.token).await;
    assert_eq!(response.status(), StatusCode::OK, "a refreshed session expired at its old expiry");
    app.shutdown().await;
}

#[tokio::test]
async fn revoking_a_session_answers_204_and_its_token_is_refused_everywhere_after() {
    let app = spawn_app().await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    let other = app.issue_token(SECRET_KEY_ID, None).await;

    let response = app.revoke(&issued.token).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.bytes().await.unwrap().is_empty(), "a 204 has no body");

    assert_invalid_token(app.verify(&issued.token).await, REVOKED).await;
    assert_invalid_token(app.show(&issued.token).await, REVOKED).await;
    assert_invalid_token(app.refresh(&issued.token).await, REVOKED).await;
    assert_invalid_token(app.revoke(&issued.token).await, REVOKED).await;
    let admin = send(app.request(Method::GET, "/v1/admin/sessions", Some(&issued.token))).await;
    assert_invalid_token(admin, "the admin token is not valid").await;

    // Only that session: another token for the same key still verifies.
    assert_eq!(app.verify(&other.token).await.status(), StatusCode::OK);
    let listed: Value = send(app.admin(Method::GET, "/v1/admin/sessions")).await.json().await.unwrap();
    let ids: Vec<&str> =
        listed["sessions"].as_array().unwrap().iter().map(|s| s["session_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [other.session_id.as_str()], "the admin list still shows the revoked session");
    app.shutdown().await;
}

#[tokio::test]
async fn verify_answers_200_with_the_session_headers_and_no_body() {
    let app = spawn_app().await;
    let issued = app.issue_token(OTHER_SECRET_KEY_ID, None).await;

    let response = app.verify(&issued.token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-sidekey-session-id"), Some(issued.session_id.clone()));
    assert_eq!(header(&response, "x-sidekey-secret-key-id").as_deref(), Some(OTHER_SECRET_KEY_ID));
    // The subject header appears only when the subject is known; without caller authentication it is not.
    assert_eq!(header(&response, "x-sidekey-subject"), None);
    for (name, value) in response.headers() {
        let value = value.to_str().unwrap_or_default();
        assert!(
            !value.contains(&app.other_real_key) && !value.contains(&issued.token),
            "header {name} carries a secret"
        );
    }
    assert!(response.bytes().await.unwrap().is_empty(), "verify must have no body");

    // Verifying is read-only: the token keeps working.
    assert_eq!(app.verify(&issued.token).await.status(), StatusCode::OK);
    app.shutdown().await;
}

/// Headers and body of an answer, without `date` (which may tick between two requests).
async fn answer_of(response: reqwest::Response) -> (StatusCode, Vec<(String, String)>, bytes::Bytes) {
    let status = response.status();
    let mut headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .filter(|(name, _)| *name != "date")
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
        .collect();
    headers.sort();
    (status, headers, response.bytes().await.unwrap())
}

#[tokio::test]
async fn verify_answers_alike_on_the_fast_path_and_through_the_route() {
    // A valid token is answered before the poem application; an `Origin` header (no CORS configured,
    // so it changes nothing in the answer) sends the same request through the route instead.
    let app = spawn_app().await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    let through_route = |token: &str| {
        send(
            app.request(Method::GET, "/v1/auth/verify", Some(token)).header("origin", "https://chat.example"),
        )
    };

    let fast = answer_of(app.verify(&issued.token).await).await;
    let routed = answer_of(through_route(&issued.token).await).await;
    assert_eq!(fast.0, StatusCode::OK);
    assert_eq!(fast, routed);

    assert_eq!(app.revoke(&issued.token).await.status(), StatusCode::NO_CONTENT);
    let fast = answer_of(app.verify(&issued.token).await).await;
    let routed = answer_of(through_route(&issued.token).await).await;
    assert_eq!(fast.0, StatusCode::UNAUTHORIZED);
    assert_eq!(fast, routed, "a refused token gets the route's own problem+json");
    app.shutdown().await;
}

#[tokio::test]
async fn issue_and_verify_work_over_http2_with_prior_knowledge() {
    // An ingress may speak h2c to sidekey; the fast path and the routes behind it both answer.
    let app = spawn_app().await;
    let client = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let issued = client
        .post(app.url("/v1/sessions"))
        .json(&json!({ "secret_key_id": SECRET_KEY_ID }))
        .send()
        .await
        .unwrap();
    assert_eq!(issued.version(), reqwest::Version::HTTP_2);
    assert_eq!(issued.status(), StatusCode::CREATED);
    let issued: Value = issued.json().await.unwrap();
    let token = issued["token"].as_str().unwrap();

    let verified = client.get(app.url("/v1/auth/verify")).bearer_auth(token).send().await.unwrap();
    assert_eq!(verified.version(), reqwest::Version::HTTP_2);
    assert_eq!(verified.status(), StatusCode::OK);
    assert_eq!(header(&verified, "x-sidekey-session-id").as_deref(), issued["session_id"].as_str());

    let refused = client.get(app.url("/v1/auth/verify")).bearer_auth("skt_nope").send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    app.shutdown().await;
}
