//! Upstream failures as the contract's errors: 502 `upstream_error`, 504 `upstream_timeout`, in bounded time,
//! and never an echo of the key or the token.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use sidekey_test_support::skip;
use sidekey_tests::{SECRET_KEY_ID, TestApp, assert_problem, send};

use super::upstream::{FakeUpstream, UntrustedTls, closed_port, hanging_up, unanswered_port};
use super::{app_with, upstream_config};

/// Calls `path` with a fresh token, checks the problem and that it came within `within`, and that neither
/// the key nor the token is in it.
async fn assert_fails(app: &TestApp, path: &str, status: u16, code: &str, within: Duration) -> Value {
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    let started = Instant::now();
    let response = send(app.request(Method::POST, path, Some(&issued.token)).body("{}")).await;
    let elapsed = started.elapsed();
    let problem = assert_problem(response, status, code).await;
    assert!(elapsed < within, "{code} took {elapsed:?}");
    let text = problem.to_string();
    assert!(!text.contains(&app.real_key) && !text.contains(&issued.token), "{text}");
    problem
}

#[tokio::test]
async fn a_refused_connection_is_an_upstream_error() {
    let addr = closed_port().await;
    let app = app_with(vec![upstream_config("down", &format!("http://{addr}"), &[SECRET_KEY_ID])]).await;
    assert_fails(&app, "/v1/proxy/down/v1/chat/completions", 502, "upstream_error", Duration::from_secs(5))
        .await;
    app.shutdown().await;
}

#[tokio::test]
async fn an_upstream_that_hangs_up_without_answering_is_an_upstream_error() {
    let (addr, task) = hanging_up().await;
    let app = app_with(vec![upstream_config("rude", &format!("http://{addr}"), &[SECRET_KEY_ID])]).await;
    assert_fails(&app, "/v1/proxy/rude/v1/chat/completions", 502, "upstream_error", Duration::from_secs(5))
        .await;
    task.abort();
    app.shutdown().await;
}

#[tokio::test]
async fn slow_response_headers_are_an_upstream_timeout() {
    let upstream = FakeUpstream::start().await;
    let mut config = upstream_config("slow", &upstream.url(""), &[SECRET_KEY_ID]);
    config.response_timeout_ms = 300;
    let app = app_with(vec![config]).await;
    let problem =
        assert_fails(&app, "/v1/proxy/slow/sleep?ms=3000", 504, "upstream_timeout", Duration::from_secs(2))
            .await;
    assert!(problem["detail"].as_str().unwrap().contains("slow"), "{problem}");
    // Quick enough is fine.
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    let response = send(app.request(Method::GET, "/v1/proxy/slow/sleep?ms=10", Some(&issued.token))).await;
    assert_eq!(response.status(), 200);
    app.shutdown().await;
}

#[tokio::test]
async fn a_connection_that_is_never_accepted_is_an_upstream_timeout() {
    let Some((addr, _fillers, _listener)) = unanswered_port().await else {
        // Not Linux's behaviour for a full accept queue: the connect-timeout rule is then unverifiable here.
        return skip("this system does not leave connections to a full accept queue hanging");
    };
    let mut config = upstream_config("blackhole", &format!("http://{addr}"), &[SECRET_KEY_ID]);
    config.connect_timeout_ms = 300;
    let app = app_with(vec![config]).await;
    assert_fails(&app, "/v1/proxy/blackhole/x", 504, "upstream_timeout", Duration::from_secs(3)).await;
    app.shutdown().await;
}

#[tokio::test]
async fn an_https_upstream_with_an_untrusted_certificate_is_an_upstream_error() {
    let Some(tls) = UntrustedTls::start().await else {
        return skip("openssl could not start a TLS server here");
    };
    // The handshake fails on the certificate, before a single HTTP byte (the key among them) is written.
    let base_url = format!("https://{}", tls.addr);
    let app = app_with(vec![upstream_config("selfsigned", &base_url, &[SECRET_KEY_ID])]).await;
    assert_fails(&app, "/v1/proxy/selfsigned/v1/models", 502, "upstream_error", Duration::from_secs(5)).await;
    app.shutdown().await;
}
