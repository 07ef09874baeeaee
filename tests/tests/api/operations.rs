//! Operations: liveness, readiness, metrics, docs, and the answers to routes that do not exist.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sidekey_test_support::random_hex;
use sidekey_tests::{SECRET_KEY_ID, TestApp, assert_problem, header, send, spawn_app, spawn_app_with};

/// The sum of every sample of `name` (across label sets) in a Prometheus text exposition.
fn sample_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics(app: &TestApp) -> String {
    let response = send(app.request(Method::GET, "/metrics", None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(&response, "content-type").is_some_and(|value| value.starts_with("text/plain")));
    response.text().await.unwrap()
}

#[tokio::test]
async fn healthz_answers_200_ok() {
    let app = spawn_app().await;
    let response = send(app.request(Method::GET, "/healthz", None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({ "status": "ok" }));
    app.shutdown().await;
}

#[tokio::test]
async fn readyz_answers_200_when_the_store_and_the_secret_source_answer() {
    let app = spawn_app().await;
    let response = send(app.request(Method::GET, "/readyz", None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({ "status": "ready" }));
    app.shutdown().await;
}

#[tokio::test]
async fn readyz_answers_503_not_ready_with_retry_after_when_the_secret_directory_is_missing() {
    let missing = std::env::temp_dir().join(format!("sidekey-e2e-missing-{}", random_hex(16)));
    let app = spawn_app_with(|config| {
        config.secrets.source = format!("file:{}", missing.display()).parse().unwrap()
    })
    .await;

    let response = send(app.request(Method::GET, "/readyz", None)).await;
    let retry_after = header(&response, "retry-after");
    let problem = assert_problem(response, 503, "not_ready").await;
    assert!(
        retry_after.as_deref().is_some_and(|value| value.parse::<u64>().is_ok_and(|seconds| seconds >= 1)),
        "a 503 needs Retry-After in seconds, got {retry_after:?}"
    );
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("secret source"), "the detail must name the dependency: {detail}");
    // Liveness is not readiness: the process itself is fine.
    assert_eq!(send(app.request(Method::GET, "/healthz", None)).await.status(), StatusCode::OK);
    // And issuing fails closed: never a session, never a 500.
    let response = app.issue(&json!({ "secret_key_id": SECRET_KEY_ID })).await;
    let status = response.status();
    assert!(
        status.is_client_error() || [502, 503, 504].contains(&status.as_u16()),
        "issue answered {status}"
    );
    assert_eq!(header(&response, "content-type").as_deref(), Some(sidekey_tests::PROBLEM_JSON));
    app.shutdown().await;
}

#[tokio::test]
async fn issuing_while_the_secret_directory_is_missing_is_a_secret_source_error_not_an_unknown_name() {
    // /readyz calls the source unavailable; issue must agree, not blame the client's secret_key_id (a 422
    // that clients do not retry) for what is an operator's fault.
    let missing = std::env::temp_dir().join(format!("sidekey-e2e-missing-{}", random_hex(16)));
    let app = spawn_app_with(|config| {
        config.secrets.source = format!("file:{}", missing.display()).parse().unwrap()
    })
    .await;
    let response = app.issue(&json!({ "secret_key_id": SECRET_KEY_ID })).await;
    assert_problem(response, 502, "secret_source_error").await;
    app.shutdown().await;
}

#[tokio::test]
async fn metrics_expose_the_contract_counters_gauge_and_latency_histogram() {
    let app = spawn_app().await;
    let before = metrics(&app).await;

    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    assert_eq!(app.verify(&issued.token).await.status(), StatusCode::OK);
    assert_eq!(app.verify("not-a-token").await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.revoke(&issued.token).await.status(), StatusCode::NO_CONTENT);

    let after = metrics(&app).await;
    for name in [
        "sidekey_sessions_issued_total",
        "sidekey_verifications_total",
        "sidekey_revocations_total",
        "sidekey_sessions_live",
        "sidekey_http_request_duration_seconds_bucket",
    ] {
        assert!(after.lines().any(|line| line.starts_with(name)), "/metrics lacks {name}:\n{after}");
    }
    // The registry is process-wide and other tests run alongside, so counters only ever grow by at least ours.
    for (name, ours) in [
        ("sidekey_sessions_issued_total", 1.0),
        ("sidekey_verifications_total", 2.0),
        ("sidekey_revocations_total", 1.0),
    ] {
        let grew = sample_sum(&after, name) - sample_sum(&before, name);
        assert!(grew >= ours, "{name} grew by {grew}, expected at least {ours}");
    }
    assert!(
        after.contains(r#"sidekey_verifications_total{outcome="refused",reason="malformed"}"#),
        "refusals are counted by reason:\n{after}"
    );
    assert!(after.contains(r#"operation="issue_session""#), "latency is labelled by operation:\n{after}");
    for secret in [issued.token.as_str(), app.real_key.as_str()] {
        assert!(!after.contains(secret), "/metrics shows a secret");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn docs_serve_an_interactive_html_page() {
    let app = spawn_app().await;
    let response = send(app.request(Method::GET, "/docs", None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(&response, "content-type").is_some_and(|value| value.starts_with("text/html")));
    let page = response.text().await.unwrap();
    assert!(page.to_ascii_lowercase().contains("swagger"), "not the Swagger UI page");
    app.shutdown().await;
}

#[tokio::test]
async fn an_unknown_route_is_not_found_as_problem_json() {
    let app = spawn_app().await;
    for path in ["/v1/nope", "/v1/sessions/extra", "/nope", "/v2/sessions"] {
        assert_problem(send(app.request(Method::GET, path, None)).await, 404, "not_found").await;
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_known_route_with_another_method_is_problem_json_and_never_500() {
    let app = spawn_app().await;
    for (method, path) in
        [(Method::GET, "/v1/sessions"), (Method::PUT, "/v1/session"), (Method::POST, "/healthz")]
    {
        let response = send(app.request(method.clone(), path, None)).await;
        let status = response.status();
        assert!(status.is_client_error(), "{method} {path}: {status}");
        assert_eq!(header(&response, "content-type").as_deref(), Some(sidekey_tests::PROBLEM_JSON));
    }
    app.shutdown().await;
}
