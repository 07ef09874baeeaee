//! Hostile requests through the proxy: forged forwarding headers, and the token in disguise.
//!
//! Every request here comes from loopback: untrusted by default, a trusted proxy once
//! `http.trusted_proxies` names `127.0.0.1/32`.

use reqwest::{Method, StatusCode};
use sidekey_tests::{SECRET_KEY_ID, TestApp, send, spawn_app_with};

use super::upstream::{FakeUpstream, Seen};
use super::upstream_config;

/// Forwarding headers as a client would forge them, or a trusted proxy would send them.
const FORWARDING: [(&str, &str); 7] = [
    ("x-forwarded-for", "203.0.113.9"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "chat.example"),
    ("x-forwarded-port", "443"),
    ("x-forwarded-prefix", "/admin"),
    ("x-real-ip", "203.0.113.8"),
    ("forwarded", "for=203.0.113.7;proto=https"),
];

/// A sidekey with one upstream in front of `upstream`, trusting `trusted_proxies`.
async fn app_trusting(upstream: &FakeUpstream, trusted_proxies: &[&str]) -> TestApp {
    let upstreams = vec![upstream_config("api", &upstream.url(""), &[SECRET_KEY_ID])];
    spawn_app_with(|config| {
        config.upstreams = upstreams;
        config.http.trusted_proxies = trusted_proxies.iter().map(|network| (*network).to_owned()).collect();
    })
    .await
}

/// What the upstream saw of one request with the [`FORWARDING`] headers.
async fn forwarded_request(app: &TestApp, upstream: &FakeUpstream) -> Seen {
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    let mut request = app.request(Method::GET, "/v1/proxy/api/v1/models", Some(&issued.token));
    for (name, value) in FORWARDING {
        request = request.header(name, value);
    }
    assert_eq!(send(request).await.status(), StatusCode::OK);
    upstream.only_request()
}

#[tokio::test]
async fn forged_forwarding_headers_from_an_untrusted_peer_never_reach_the_upstream() {
    let upstream = FakeUpstream::start().await;
    let app = app_trusting(&upstream, &[]).await;
    let seen = forwarded_request(&app, &upstream).await;

    for forged in ["203.0.113", "chat.example", "/admin"] {
        assert!(!seen.contains(forged), "{forged} reached the upstream: {seen:#?}");
    }
    for gone in ["x-forwarded-port", "x-forwarded-prefix", "x-real-ip", "forwarded"] {
        assert!(seen.header_values(gone).is_empty(), "{gone} crossed: {seen:#?}");
    }
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some(app.addr.to_string().as_str()), "the Host it asked for");
    app.shutdown().await;
}

#[tokio::test]
async fn forwarding_headers_from_a_trusted_proxy_are_kept_and_extended() {
    let upstream = FakeUpstream::start().await;
    let app = app_trusting(&upstream, &["127.0.0.1/32"]).await;
    let seen = forwarded_request(&app, &upstream).await;

    assert_eq!(seen.header("x-forwarded-for"), Some("203.0.113.9, 127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some("chat.example"));
    assert_eq!(seen.header("x-forwarded-port"), Some("443"));
    assert_eq!(seen.header("x-forwarded-prefix"), Some("/admin"));
    assert_eq!(seen.header("x-real-ip"), Some("203.0.113.8"));
    assert_eq!(seen.header_values("forwarded").join(", "), "for=203.0.113.7;proto=https, for=127.0.0.1");
    app.shutdown().await;
}

#[tokio::test]
async fn the_token_percent_encoded_in_the_query_or_a_header_never_reaches_the_upstream() {
    let upstream = FakeUpstream::start().await;
    let app = app_trusting(&upstream, &[]).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    let token = issued.token.as_str();
    let rest = token.strip_prefix("skt_").expect("a session token");
    let once = format!("%73kt_{rest}");
    let twice = format!("%2573%256B%2574%255F{rest}");

    let query =
        format!("a=1&key={once}&k={twice}&plus=x+{once}+y&{once}=named&fully={}&q=two+words", escaped(token));
    let response = send(
        app.request(Method::GET, &format!("/v1/proxy/api/v1/models?{query}"), Some(token))
            .header("x-api-key", &once)
            .header("x-goog-api-key", &twice)
            .header("x-custom", "kept"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);

    let seen = upstream.only_request();
    assert_eq!(seen.target, "/v1/models?a=1&q=two+words");
    assert!(seen.header_values("x-api-key").is_empty() && seen.header_values("x-goog-api-key").is_empty());
    assert_eq!(seen.header("x-custom"), Some("kept"));
    for needle in [token, rest] {
        assert!(!seen.contains(needle), "the token reached the upstream: {seen:#?}");
    }
    app.shutdown().await;
}

/// `text` with every byte escaped as `%XX`.
fn escaped(text: &str) -> String {
    text.bytes().map(|byte| format!("%{byte:02X}")).collect()
}
