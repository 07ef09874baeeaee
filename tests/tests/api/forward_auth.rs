//! Forward-auth (`GET /v1/auth/verify`) for scoped and limited sessions, and the admin's usage totals.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sidekey_tests::{SECRET_KEY_ID, TestApp, assert_problem, header, spawn_app_with};

/// A session issued with this scope and these limits.
async fn scoped(app: &TestApp, scope: Value, limits: Value) -> String {
    let response =
        app.issue(&json!({ "secret_key_id": SECRET_KEY_ID, "scope": scope, "limits": limits })).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
}

fn verify_forwarded(app: &TestApp, token: &str, method: &str, uri: &str) -> reqwest::RequestBuilder {
    app.request(Method::GET, "/v1/auth/verify", Some(token))
        .header("x-forwarded-method", method)
        .header("x-forwarded-uri", uri)
}

#[tokio::test]
async fn a_scoped_sessions_verification_names_its_upstreams_and_models_on_both_paths() {
    let app = spawn_app_with(|_| {}).await;
    let token = scoped(
        &app,
        json!({ "routes": ["POST /v1/chat/completions"], "models": ["gpt-4o-mini", "gpt-4.1-*"] }),
        json!({}),
    )
    .await;
    // The fast path (no Origin) and the route (an Origin sends it through poem) must agree.
    let fast = app.verify(&token).await;
    let routed = app
        .request(Method::GET, "/v1/auth/verify", Some(&token))
        .header("origin", "http://x.example")
        .send()
        .await
        .unwrap();
    for response in [fast, routed] {
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "x-sidekey-scope-models").as_deref(), Some("gpt-4o-mini,gpt-4.1-*"));
        assert_eq!(header(&response, "x-sidekey-scope-upstreams"), None, "no upstream was named");
    }
    let plain = app.issue_token(SECRET_KEY_ID, None).await;
    let response = app.verify(&plain.token).await;
    assert_eq!(header(&response, "x-sidekey-scope-models"), None, "an unscoped session says nothing");
    app.shutdown().await;
}

#[tokio::test]
async fn a_forwarded_request_is_checked_against_the_routes_and_counted_against_max_requests() {
    let app = spawn_app_with(|_| {}).await;
    let token =
        scoped(&app, json!({ "routes": ["POST /v1/chat/completions"] }), json!({ "max_requests": 2 })).await;

    let outside = verify_forwarded(&app, &token, "GET", "/v1/files?purpose=x").send().await.unwrap();
    assert_problem(outside, 403, "route_not_allowed").await;
    for left in ["1", "0"] {
        let response = verify_forwarded(&app, &token, "POST", "/v1/chat/completions").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "x-sidekey-requests-remaining").as_deref(), Some(left));
    }
    let spent = verify_forwarded(&app, &token, "POST", "/v1/chat/completions").send().await.unwrap();
    assert_problem(spent, 429, "quota_exceeded").await;
    let tricked =
        verify_forwarded(&app, &token, "POST", "/v1/chat/completions/..%2f..%2ffiles").send().await.unwrap();
    assert_problem(tricked, 400, "invalid_path").await;

    // Without the forwarded headers nothing is counted: the plain check still answers 200.
    assert_eq!(app.verify(&token).await.status(), StatusCode::OK);
    let shown: Value = app.show(&token).await.json().await.unwrap();
    assert_eq!(shown["usage"]["requests"], 2, "{shown}");
    assert_eq!(shown["remaining"]["requests"], 0, "{shown}");
    app.shutdown().await;
}

#[tokio::test]
async fn the_admin_reads_a_keys_usage_for_the_day_and_the_month() {
    let app = spawn_app_with(|config| config.limits.secret_key.tokens_per_day = Some(1_000_000)).await;
    let token = scoped(&app, json!({ "routes": ["ANY /*"] }), json!({})).await;
    for _ in 0..3 {
        let response = verify_forwarded(&app, &token, "POST", "/v1/chat/completions").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let usage: Value = app
        .admin(Method::GET, &format!("/v1/admin/usage?secret_key_id={SECRET_KEY_ID}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(usage["day"]["requests"], 3, "{usage}");
    assert_eq!(usage["month"]["requests"], 3, "{usage}");
    assert_eq!(usage["day"]["input_tokens"], 0, "{usage}");

    let neither = app.admin(Method::GET, "/v1/admin/usage").send().await.unwrap();
    assert_problem(neither, 422, "validation_failed").await;
    let both = app.admin(Method::GET, "/v1/admin/usage?subject=u&secret_key_id=k").send().await.unwrap();
    assert_problem(both, 422, "validation_failed").await;
    app.shutdown().await;
}

/// Envoy's HTTP ext_authz asks with the method of the request it checks, and may send its body.
#[tokio::test]
async fn forward_auth_answers_every_method_envoy_may_ask_with_alike_on_both_paths() {
    let app = spawn_app_with(|_| {}).await;
    let token = app.issue_token(SECRET_KEY_ID, None).await.token;
    for method in [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        for origin in [None, Some("http://x.example")] {
            let mut valid = app
                .request(method.clone(), "/v1/auth/verify", Some(&token))
                .body(r#"{"model":"gpt-4o-mini"}"#);
            if let Some(origin) = origin {
                valid = valid.header("origin", origin);
            }
            let valid = valid.send().await.unwrap();
            assert_eq!(valid.status(), StatusCode::OK, "{method} with origin {origin:?}");
            assert_eq!(header(&valid, "x-sidekey-secret-key-id").as_deref(), Some(SECRET_KEY_ID), "{method}");
        }
        let refused = app.request(method.clone(), "/v1/auth/verify", None).send().await.unwrap();
        assert_problem(refused, 401, "missing_token").await;
    }
    // The session was read, never changed: a DELETE asks about a request, it does not revoke.
    assert_eq!(app.verify(&token).await.status(), StatusCode::OK);
    app.shutdown().await;
}
