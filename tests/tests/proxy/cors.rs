//! CORS for browser frontends: the configured origins get preflights answered and their answers readable;
//! other origins get nothing a browser would accept.

use reqwest::{Method, StatusCode};
use sidekey_tests::{SECRET_KEY_ID, TestApp, assert_problem, header, send, spawn_app_with};

use super::upstream::FakeUpstream;
use super::upstream_config;

const FRONTEND: &str = "http://localhost:3000";
const STRANGER: &str = "https://evil.example";

async fn app_with_cors(upstream: &FakeUpstream) -> TestApp {
    let upstream_url = upstream.url("");
    spawn_app_with(move |config| {
        config.upstreams = vec![upstream_config("openai", &upstream_url, &[SECRET_KEY_ID])];
        config.cors.allowed_origins = vec![FRONTEND.to_owned()];
    })
    .await
}

fn preflight(app: &TestApp, path: &str, origin: &str, method: &str) -> reqwest::RequestBuilder {
    app.request(Method::OPTIONS, path, None)
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header("access-control-request-headers", "authorization, content-type, x-stainless-os")
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered_on_the_session_and_proxy_routes() {
    let upstream = FakeUpstream::start().await;
    let app = app_with_cors(&upstream).await;
    for (path, method) in [
        ("/v1/sessions", "POST"),
        ("/v1/session", "DELETE"),
        ("/v1/auth/verify", "GET"),
        ("/v1/proxy/openai/v1/chat/completions", "POST"),
        ("/v1/chatkit", "POST"),
    ] {
        let response = send(preflight(&app, path, FRONTEND, method)).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{path}");
        assert_eq!(header(&response, "access-control-allow-origin").as_deref(), Some(FRONTEND), "{path}");
        let methods = header(&response, "access-control-allow-methods").unwrap_or_default();
        assert!(methods.contains(method), "{path}: {methods}");
        let allowed = header(&response, "access-control-allow-headers").unwrap_or_default().to_lowercase();
        for name in ["authorization", "content-type", "x-stainless-os"] {
            assert!(allowed.contains(name), "{path}: {name} not in {allowed}");
        }
        assert!(header(&response, "access-control-max-age").is_some());
        assert_eq!(header(&response, "access-control-allow-credentials"), None);
    }
    // A preflight is sidekey's business: the upstream never sees one.
    assert!(upstream.seen().is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn a_preflight_from_another_origin_is_denied_without_cors_headers() {
    let upstream = FakeUpstream::start().await;
    let app = app_with_cors(&upstream).await;
    for path in ["/v1/sessions", "/v1/proxy/openai/v1/chat/completions"] {
        for origin in [STRANGER, "http://localhost:3001", "null"] {
            let response = send(preflight(&app, path, origin, "POST")).await;
            assert_eq!(header(&response, "access-control-allow-origin"), None, "{path} {origin}");
            assert_eq!(header(&response, "access-control-allow-methods"), None, "{path} {origin}");
            assert_problem(response, 403, "forbidden").await;
        }
    }
    assert!(upstream.seen().is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn answers_are_readable_by_an_allowed_origin_only() {
    let upstream = FakeUpstream::start().await;
    let app = app_with_cors(&upstream).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;

    let response = send(
        app.request(Method::GET, "/v1/proxy/openai/v1/models", Some(&issued.token))
            .header("origin", FRONTEND),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    // sidekey's rule, not the upstream's `Access-Control-Allow-Origin: *`.
    assert_eq!(header(&response, "access-control-allow-origin").as_deref(), Some(FRONTEND));
    assert_eq!(header(&response, "access-control-expose-headers").as_deref(), Some("*"));
    assert!(
        response.headers().get_all("vary").iter().any(|value| value.to_str().unwrap().contains("Origin"))
    );

    // Errors too, or a page could not read why it was refused.
    let response = send(app.request(Method::GET, "/v1/session", None).header("origin", FRONTEND)).await;
    assert_eq!(header(&response, "access-control-allow-origin").as_deref(), Some(FRONTEND));
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Another origin's request is served (a browser sends it anyway) but carries nothing that lets the
    // page read the answer.
    let response = send(
        app.request(Method::GET, "/v1/proxy/openai/v1/models", Some(&issued.token))
            .header("origin", STRANGER),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "access-control-allow-origin"), None);
    assert_eq!(header(&response, "access-control-expose-headers"), None);

    // The admin API is no browser's business.
    let response = send(app.admin(Method::GET, "/v1/admin/sessions").header("origin", FRONTEND)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "access-control-allow-origin"), None);
    app.shutdown().await;
}

#[tokio::test]
async fn without_configured_origins_there_are_no_cors_headers_at_all() {
    let upstream = FakeUpstream::start().await;
    let upstream_url = upstream.url("");
    let app = spawn_app_with(move |config| {
        config.upstreams = vec![upstream_config("openai", &upstream_url, &[SECRET_KEY_ID])];
    })
    .await;
    let response = send(preflight(&app, "/v1/proxy/openai/v1/chat/completions", FRONTEND, "POST")).await;
    assert_eq!(header(&response, "access-control-allow-origin"), None);
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    let response = send(
        app.request(Method::GET, "/v1/proxy/openai/v1/models", Some(&issued.token))
            .header("origin", FRONTEND),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "access-control-allow-origin"), None);
    app.shutdown().await;
}

#[tokio::test]
async fn an_invalid_origin_in_the_configuration_refuses_to_start() {
    let mut config = sidekey::Config { listen: "127.0.0.1:0".to_owned(), ..sidekey::Config::default() };
    config.cors.allowed_origins = vec!["http://localhost:3000/app".to_owned()];
    let error = sidekey::spawn(&config, None).await.err().expect("an invalid origin is refused");
    assert!(format!("{error:#}").contains("cors"), "{error:#}");
}
