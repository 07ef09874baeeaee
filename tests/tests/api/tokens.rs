//! Every way a presented token is refused, on every route that takes a session token.

use reqwest::{Method, StatusCode};
use sidekey_tests::{
    MALFORMED, REVOKED, SECRET_KEY_ID, TestApp, UNKNOWN, assert_invalid_token, assert_missing_token, send,
    spawn_app,
};

/// The Session API's routes that need `Authorization: Bearer <session token>`.
const TOKEN_ROUTES: [(Method, &str); 4] = [
    (Method::GET, "/v1/session"),
    (Method::POST, "/v1/session/refresh"),
    (Method::DELETE, "/v1/session"),
    (Method::GET, "/v1/auth/verify"),
];

/// Presents `token` on every token route and expects `invalid_token` with `description`, and an answer
/// that does not echo the token.
async fn refused_everywhere(app: &TestApp, token: &str, description: &str) {
    for (method, path) in TOKEN_ROUTES {
        let response = send(app.request(method.clone(), path, Some(token))).await;
        let body = assert_invalid_token(response, description).await;
        assert!(!body.to_string().contains(token), "{method} {path} echoes the token: {body}");
    }
}

#[tokio::test]
async fn a_request_without_a_bearer_token_is_refused_with_missing_token_on_every_route() {
    let app = spawn_app().await;
    for (method, path) in TOKEN_ROUTES {
        assert_missing_token(send(app.request(method, path, None)).await).await;
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_credential_that_is_not_a_bearer_token_counts_as_missing() {
    let app = spawn_app().await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    for (method, path) in TOKEN_ROUTES {
        // The right token under the wrong scheme is still no bearer credential.
        let response = send(
            app.client
                .request(method, app.url(path))
                .header("authorization", format!("Basic {}", issued.token)),
        )
        .await;
        assert_missing_token(response).await;
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_garbage_token_is_refused_as_malformed() {
    let app = spawn_app().await;
    for garbage in ["not-a-token", "skt_", "skt_!!!!", "sk-live-123"] {
        refused_everywhere(&app, garbage, MALFORMED).await;
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_truncated_token_is_refused_as_malformed() {
    let app = spawn_app().await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    refused_everywhere(&app, &issued.token[..issued.token.len() - 1], MALFORMED).await;
    refused_everywhere(&app, &issued.token[..30], MALFORMED).await;
    // The truncated attempts touched nothing: the real token still works.
    assert_eq!(app.verify(&issued.token).await.status(), StatusCode::OK);
    app.shutdown().await;
}

#[tokio::test]
async fn a_token_with_a_flipped_character_fails_its_checksum_and_is_refused_as_malformed() {
    let app = spawn_app().await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    let flip = |token: &str, index: usize| {
        let mut bytes = token.as_bytes().to_vec();
        bytes[index] = if bytes[index] == b'a' { b'b' } else { b'a' };
        String::from_utf8(bytes).unwrap()
    };
    let last = issued.token.len() - 1;
    // A checksum character, and a body character (which the checksum then no longer matches).
    for mangled in [flip(&issued.token, last), flip(&issued.token, 10)] {
        assert!(sidekey_domain::Token::parse(&mangled).is_err(), "{mangled} still parses");
        refused_everywhere(&app, &mangled, MALFORMED).await;
    }
    assert_eq!(app.verify(&issued.token).await.status(), StatusCode::OK);
    app.shutdown().await;
}

#[tokio::test]
async fn a_well_formed_token_never_issued_here_is_refused_as_unknown() {
    let app = spawn_app().await;
    let stranger = sidekey_domain::Token::generate().unwrap();
    refused_everywhere(&app, stranger.expose(), UNKNOWN).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_token_issued_by_another_instance_is_unknown_here() {
    let (issuer, other) = (spawn_app().await, spawn_app().await);
    let issued = issuer.issue_token(SECRET_KEY_ID, None).await;
    refused_everywhere(&other, &issued.token, UNKNOWN).await;
    assert_eq!(issuer.verify(&issued.token).await.status(), StatusCode::OK);
    issuer.shutdown().await;
    other.shutdown().await;
}

#[tokio::test]
async fn a_revoked_token_is_refused_with_invalid_token() {
    let app = spawn_app().await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    assert_eq!(app.revoke(&issued.token).await.status(), StatusCode::NO_CONTENT);
    refused_everywhere(&app, &issued.token, REVOKED).await;
    app.shutdown().await;
}
