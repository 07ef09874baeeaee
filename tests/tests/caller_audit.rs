//! The audit trail of caller authentication. Its own test binary because it installs the process's
//! global tracing subscriber (a scoped one misses events whose callsites other tests registered first).

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};
use sidekey::config::AuthMode;
use sidekey_tests::{SECRET_KEY_ID, TestApp, secret, spawn_app_with};

const HS256_SECRET: &str = "an-hs256-secret-of-at-least-32-bytes-for-tests";

fn jwt(sub: &str, email: &str, secret: &str, expires_in: u64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let claims = json!({ "sub": sub, "email": email, "iat": now, "exp": now + expires_in });
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

async fn jwt_app() -> TestApp {
    spawn_app_with(|config| {
        config.auth.mode = AuthMode::Jwt;
        config.auth.jwt.hs256_secret = Some(secret(HS256_SECRET));
    })
    .await
}

async fn issue_as(app: &TestApp, credential: Option<&str>) -> reqwest::Response {
    let request = app.request(Method::POST, "/v1/sessions", credential);
    request.json(&json!({ "secret_key_id": SECRET_KEY_ID })).send().await.unwrap()
}

#[tokio::test]
async fn every_attempt_is_audited_with_outcome_reason_subject_and_client_address_and_never_the_credential() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let capture = sidekey_tests::LogCapture::default();
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().json().with_writer(capture.clone()))
        .init();
    let app = jwt_app().await;
    let forged = jwt("user_1", "ada@example.com", "some-other-secret-of-32-bytes-or-more", 600);
    let genuine = jwt("user_1", "ada@example.com", HS256_SECRET, 600);
    assert_eq!(issue_as(&app, Some(&forged)).await.status(), 401);
    assert_eq!(issue_as(&app, None).await.status(), 401);
    assert_eq!(issue_as(&app, Some(&genuine)).await.status(), 201);
    app.shutdown().await;

    let logs = capture.text();
    let events: Vec<Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["target"] == "sidekey::audit")
        .map(|event| event["fields"].clone())
        .filter(|fields| fields["event"].as_str().is_some_and(|name| name.starts_with("caller.")))
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[0]["event"], "caller.refused");
    assert_eq!(events[0]["reason"], "bad_signature");
    assert_eq!(events[1]["reason"], "missing");
    assert_eq!(events[2]["event"], "caller.allowed");
    assert_eq!(events[2]["subject"], "user_1");
    for event in &events {
        assert_eq!(event["client"], "127.0.0.1", "{event}");
    }
    for credential in [&forged, &genuine] {
        assert!(!logs.contains(credential.as_str()), "a caller JWT was logged");
        let signature = credential.rsplit('.').next().unwrap();
        assert!(!logs.contains(signature), "a JWT signature was logged");
    }
}
