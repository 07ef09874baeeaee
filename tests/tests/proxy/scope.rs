//! Scoped sessions through the proxy: what a session may reach (its `scope`) and how often (its request
//! `limits`), checked before the upstream hears of the request; and issuance, which only narrows what the
//! configuration allows.
//!
//! Every refusal is checked twice: the answer (status, code, and the `error` member the SDKs read), and
//! the fake upstream's record, which must not have grown.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sidekey_tests::{IssuedToken, SECRET_KEY_ID, TestApp, assert_problem, header, raw_http, send};

use super::instances::Instances;
use super::sdk::{python, sdk_available_or_skipped};
use super::upstream::FakeUpstream;
use super::{app_with, assert_refused, upstream_config};

/// The routes the `openai` upstream of these tests admits.
const ROUTES: [&str; 3] = ["POST /v1/chat/completions", "POST /v1/responses", "GET /v1/models"];
/// The models it admits.
const MODELS: [&str; 2] = ["gpt-4o-mini", "gpt-4.1-*"];
/// A model within [`MODELS`].
const ALLOWED_MODEL: &str = "gpt-4.1-mini";

/// An `openai` upstream at `upstream` admitting [`ROUTES`] and [`MODELS`] for [`SECRET_KEY_ID`].
fn scoped_upstream(upstream: &FakeUpstream) -> sidekey_http::UpstreamSettings {
    let mut settings = upstream_config("openai", &upstream.url(""), &[SECRET_KEY_ID]);
    settings.routes = Some(ROUTES.map(str::to_owned).to_vec());
    settings.models = Some(MODELS.map(str::to_owned).to_vec());
    settings
}

/// Issues a session of [`SECRET_KEY_ID`] with this `scope` and `limits`, checking it is a 201.
async fn issue_scoped(app: &TestApp, scope: Value, limits: Value) -> IssuedToken {
    let response =
        app.issue(&json!({ "secret_key_id": SECRET_KEY_ID, "scope": scope, "limits": limits })).await;
    let status = response.status();
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(status, StatusCode::CREATED, "issue: {body}");
    IssuedToken {
        token: body["token"].as_str().expect("a token").to_owned(),
        session_id: body["session_id"].as_str().expect("a session id").to_owned(),
        body,
    }
}

/// A chat completion request for `model`.
fn chat(app: &TestApp, token: &str, model: &str) -> reqwest::RequestBuilder {
    app.request(Method::POST, "/v1/proxy/openai/v1/chat/completions", Some(token))
        .header("content-type", "application/json")
        .body(json!({ "model": model, "messages": [{ "role": "user", "content": "hi" }] }).to_string())
}

/// Paths below `/v1/proxy/openai` that could be read as another path than the one matched, each of which
/// must be refused whatever the scope: encoded separators, dot segments in every encoding, `;`
/// parameters on a dot segment, double encoding, empty segments.
const PATH_TRICKS: [&str; 27] = [
    "/v1%2fchat/completions",
    "/v1%2Fchat/completions",
    "/v1/chat%2fcompletions",
    "/v1%5cchat/completions",
    "/v1%5Cchat/completions",
    "/v1\\chat/completions",
    "/v1/./chat/completions",
    "/v1/../v1/chat/completions",
    "/v1/chat/completions/..",
    "/v1/chat/completions/.",
    "/..",
    "/.",
    "/v1/%2e/chat/completions",
    "/v1/%2E/chat/completions",
    "/v1/%2e%2e/admin",
    "/v1/%2E%2E/admin",
    "/v1/.%2e/admin",
    "/v1/%2e./admin",
    "/v1/%252e%252e/admin",
    "/v1/%252fadmin",
    "/v1/..;/admin",
    "/v1/..;jsessionid=x/admin",
    "/v1/.%3B/admin",
    "/v1/..%2fadmin",
    "/v1//chat/completions",
    "//v1/chat/completions",
    "/v1/chat//completions",
];

/// The same tricks on the ChatKit route.
const CHATKIT_TRICKS: [&str; 4] =
    ["/v1/chatkit/..%2finternal/x", "/v1/chatkit/../internal/x", "/v1/chatkit/%2e%2e/x", "/v1/chatkit//x"];

/// Every trick as a full request path.
fn trick_paths() -> Vec<String> {
    PATH_TRICKS
        .iter()
        .map(|trick| format!("/v1/proxy/openai{trick}"))
        .chain(CHATKIT_TRICKS.iter().map(|path| (*path).to_owned()))
        .collect()
}

/// An app whose upstreams admit any route and model: nothing but the path rule stands between a trick
/// and the upstream.
async fn open_app(upstream: &FakeUpstream) -> TestApp {
    app_with(vec![
        upstream_config("openai", &upstream.url("/openai"), &[SECRET_KEY_ID]),
        upstream_config("chatkit", &upstream.url("/chatkit"), &[SECRET_KEY_ID]),
    ])
    .await
}

#[tokio::test]
async fn every_path_trick_sent_as_raw_bytes_over_http1_is_invalid_path_and_reaches_nothing() {
    let upstream = FakeUpstream::start().await;
    let app = open_app(&upstream).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    let raw_get = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            app.addr, issued.token
        )
    };

    for path in trick_paths() {
        let response = raw_http(app.addr, raw_get(&path).as_bytes()).await;
        let text = String::from_utf8_lossy(&response.body).into_owned();
        assert_eq!(response.status, 400, "{path}: {text}");
        assert_eq!(response.header("content-type"), Some(sidekey_tests::PROBLEM_JSON), "{path}");
        let body = response.json();
        assert_eq!(body["code"], "invalid_path", "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_path", "{path}: {body}");
        assert!(!text.contains(&issued.token), "{path}: the token was echoed");
    }
    assert!(upstream.seen().is_empty(), "a trick reached the upstream: {:#?}", upstream.seen());

    // The same request with a plain path goes through: the refusals above were the path's doing.
    let response = raw_http(app.addr, raw_get("/v1/proxy/openai/v1/models").as_bytes()).await;
    assert_eq!(response.status, 200);
    assert_eq!(upstream.only_request().target, "/openai/v1/models");
    app.shutdown().await;
}

/// Sends `GET path` over one HTTP/2 connection with prior knowledge (h2c), the `:path` exactly as
/// written (hyper's client, unlike reqwest's URL parser, neither resolves dot segments nor turns `\`
/// into `/`).
async fn h2c_get(app: &TestApp, path: &str, token: &str) -> (u16, Value) {
    let uri: hyper::Uri = format!("http://{}{path}", app.addr)
        .parse()
        .unwrap_or_else(|error| panic!("{path} as an HTTP/2 :path: {error}"));
    let stream = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("an HTTP/2 handshake with prior knowledge");
    let connection = tokio::spawn(connection);
    let request = hyper::Request::get(uri)
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::<Bytes>::new())
        .expect("a request");
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .expect("an answer in time")
        .expect("an HTTP/2 answer");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.expect("the whole body").to_bytes();
    connection.abort();
    let body =
        serde_json::from_slice(&body).unwrap_or_else(|_| json!({ "raw": String::from_utf8_lossy(&body) }));
    (status, body)
}

#[tokio::test]
async fn every_path_trick_sent_over_h2c_is_invalid_path_and_reaches_nothing() {
    let upstream = FakeUpstream::start().await;
    let app = open_app(&upstream).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;

    for path in trick_paths() {
        let (status, body) = h2c_get(&app, &path, &issued.token).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["code"], "invalid_path", "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_path", "{path}: {body}");
    }
    assert!(upstream.seen().is_empty(), "a trick reached the upstream: {:#?}", upstream.seen());

    let (status, body) = h2c_get(&app, "/v1/proxy/openai/v1/models", &issued.token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(upstream.only_request().target, "/openai/v1/models");
    app.shutdown().await;
}

#[tokio::test]
async fn routes_outside_the_upstreams_list_or_the_sessions_scope_are_refused_before_the_upstream() {
    let upstream = FakeUpstream::start().await;
    let app = app_with(vec![scoped_upstream(&upstream)]).await;
    let unscoped = app.issue_token(SECRET_KEY_ID, None).await;
    let scoped = issue_scoped(&app, json!({ "routes": ["POST /v1/chat/completions"] }), json!({})).await;

    // Outside the upstream's routes: refused for every session.
    for (method, path) in [
        (Method::GET, "/v1/proxy/openai/v1/files"),
        (Method::DELETE, "/v1/proxy/openai/v1/models"),
        (Method::POST, "/v1/proxy/openai/v1/chat/completions/extra"),
        (Method::POST, "/v1/proxy/openai"),
    ] {
        for token in [&unscoped.token, &scoped.token] {
            let response = send(app.request(method.clone(), path, Some(token)).body("{}")).await;
            assert_refused(response, 403, "route_not_allowed").await;
        }
    }
    // Within the upstream's routes, outside the session's.
    for (method, path) in
        [(Method::GET, "/v1/proxy/openai/v1/models"), (Method::POST, "/v1/proxy/openai/v1/responses")]
    {
        let response = send(app.request(method, path, Some(&scoped.token)).body("{}")).await;
        assert_refused(response, 403, "route_not_allowed").await;
    }
    assert!(upstream.seen().is_empty(), "a refused route reached the upstream: {:#?}", upstream.seen());

    // What both allow goes through.
    let response = send(chat(&app, &scoped.token, ALLOWED_MODEL)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = send(app.request(Method::GET, "/v1/proxy/openai/v1/models", Some(&unscoped.token))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(upstream.seen().len(), 2);
    app.shutdown().await;
}

#[tokio::test]
async fn models_outside_the_upstreams_list_or_the_sessions_scope_are_refused_in_the_body_and_the_query() {
    let upstream = FakeUpstream::start().await;
    let app = app_with(vec![scoped_upstream(&upstream)]).await;
    let unscoped = app.issue_token(SECRET_KEY_ID, None).await;
    let scoped = issue_scoped(&app, json!({ "models": [ALLOWED_MODEL] }), json!({})).await;

    // Outside the upstream's models: refused for every session, in the body and in the query.
    for token in [&unscoped.token, &scoped.token] {
        let problem = assert_refused(send(chat(&app, token, "gpt-5")).await, 403, "model_not_allowed").await;
        assert!(problem["detail"].as_str().unwrap().contains("gpt-5"), "{problem}");
        let response =
            send(app.request(Method::GET, "/v1/proxy/openai/v1/models?model=gpt-5", Some(token))).await;
        assert_refused(response, 403, "model_not_allowed").await;
    }
    // Within the upstream's, outside the session's.
    let response = send(chat(&app, &scoped.token, "gpt-4o-mini")).await;
    assert_refused(response, 403, "model_not_allowed").await;
    let response =
        send(app.request(Method::GET, "/v1/proxy/openai/v1/models?model=gpt-4o-mini", Some(&scoped.token)))
            .await;
    assert_refused(response, 403, "model_not_allowed").await;
    // An allowed model first does not smuggle a refused one in after it.
    let path = format!("/v1/proxy/openai/v1/models?model={ALLOWED_MODEL}&model=gpt-4o-mini");
    assert_refused(
        send(app.request(Method::GET, &path, Some(&scoped.token))).await,
        403,
        "model_not_allowed",
    )
    .await;
    assert!(upstream.seen().is_empty(), "a refused model reached the upstream: {:#?}", upstream.seen());

    let response = send(chat(&app, &scoped.token, ALLOWED_MODEL)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let path = format!("/v1/proxy/openai/v1/models?model={ALLOWED_MODEL}");
    assert_eq!(send(app.request(Method::GET, &path, Some(&scoped.token))).await.status(), StatusCode::OK);
    let response = send(chat(&app, &unscoped.token, "gpt-4o-mini")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(upstream.seen().len(), 3);
    app.shutdown().await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_refused_while_a_model_rule_applies() {
    let upstream = FakeUpstream::start().await;
    let app = app_with(vec![scoped_upstream(&upstream)]).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    for body in ["model=gpt-5", "{\"model\":\"gpt-5\"", "[{\"model\":\"gpt-5\"}]", "\u{1}\u{2}"] {
        let response = send(
            app.request(Method::POST, "/v1/proxy/openai/v1/chat/completions", Some(&issued.token))
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
        let problem = assert_refused(response, 400, "invalid_request").await;
        assert!(!problem["detail"].as_str().unwrap().contains("gpt-5"), "the body was echoed: {problem}");
    }
    assert!(upstream.seen().is_empty(), "an unreadable body reached the upstream: {:#?}", upstream.seen());
    app.shutdown().await;
}

#[tokio::test]
async fn without_an_origin_of_the_scope_a_request_is_refused_when_the_scope_names_origins() {
    const ORIGIN: &str = "https://app.example.com";
    let upstream = FakeUpstream::start().await;
    let app = app_with(vec![scoped_upstream(&upstream)]).await;
    let issued = issue_scoped(&app, json!({ "origins": [ORIGIN] }), json!({})).await;

    let models = || app.request(Method::GET, "/v1/proxy/openai/v1/models", Some(&issued.token));
    assert_refused(send(models()).await, 403, "origin_not_allowed").await;
    for origin in
        ["https://evil.example.com", "http://app.example.com", "https://app.example.com:8443", "null"]
    {
        let response = send(models().header("origin", origin)).await;
        assert_refused(response, 403, "origin_not_allowed").await;
    }
    assert!(upstream.seen().is_empty(), "a refused origin reached the upstream: {:#?}", upstream.seen());

    assert_eq!(send(models().header("origin", ORIGIN)).await.status(), StatusCode::OK);
    assert_eq!(upstream.seen().len(), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn the_request_after_max_requests_is_quota_exceeded_and_never_forwarded() {
    let upstream = FakeUpstream::start().await;
    let app = app_with(vec![scoped_upstream(&upstream)]).await;
    let issued = issue_scoped(&app, json!({}), json!({ "max_requests": 100 })).await;
    let models = || app.request(Method::GET, "/v1/proxy/openai/v1/models", Some(&issued.token));

    for number in 1..=100 {
        let response = send(models()).await;
        assert_eq!(response.status(), StatusCode::OK, "request {number}");
        let left = header(&response, "x-sidekey-requests-remaining");
        assert_eq!(left, Some((100 - number).to_string()), "request {number}");
    }
    for _ in 0..3 {
        let response = send(models()).await;
        assert_eq!(header(&response, "retry-after"), None, "a session's budget never resets");
        assert_refused(response, 429, "quota_exceeded").await;
    }
    assert_eq!(upstream.seen().len(), 100, "a request over the budget reached the upstream");
    let shown: Value = app.show(&issued.token).await.json().await.unwrap();
    assert_eq!(shown["usage"]["requests"], 100, "{shown}");
    assert_eq!(shown["remaining"]["requests"], 0, "{shown}");
    app.shutdown().await;
}

#[tokio::test]
async fn the_request_over_the_rate_per_minute_is_rate_limited_with_retry_after() {
    let upstream = FakeUpstream::start().await;
    let app = app_with(vec![scoped_upstream(&upstream)]).await;
    let issued = issue_scoped(&app, json!({}), json!({ "requests_per_minute": 20 })).await;
    let models = || app.request(Method::GET, "/v1/proxy/openai/v1/models", Some(&issued.token));

    for number in 1..=20 {
        assert_eq!(send(models()).await.status(), StatusCode::OK, "request {number}");
    }
    let response = send(models()).await;
    // One more request fits every 3 s (60 s / 20): the wait is at most that, rounded up.
    let retry_after: u64 =
        header(&response, "retry-after").expect("a Retry-After").parse().expect("whole seconds");
    assert!((1..=3).contains(&retry_after), "Retry-After: {retry_after}");
    assert_refused(response, 429, "rate_limited").await;
    assert_eq!(upstream.seen().len(), 20, "a request over the rate reached the upstream");
    app.shutdown().await;
}

#[tokio::test]
async fn trace_and_connect_are_never_forwarded() {
    let upstream = FakeUpstream::start().await;
    // Any route: only the method rule can stop these.
    let app = app_with(vec![upstream_config("openai", &upstream.url(""), &[SECRET_KEY_ID])]).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;

    let trace = Method::from_bytes(b"TRACE").unwrap();
    for path in ["/v1/proxy/openai/v1/models", "/v1/proxy/openai"] {
        let response = send(app.request(trace.clone(), path, Some(&issued.token))).await;
        // RFC 9110: a 405 says what is allowed (the methods the document lists for the proxy).
        assert_eq!(
            header(&response, "allow").as_deref(),
            Some("GET, HEAD, POST, PUT, PATCH, DELETE"),
            "{path}"
        );
        assert_refused(response, 405, "method_not_allowed").await;
    }
    // CONNECT's request target is an authority, not a path: whatever answers it, nothing is forwarded.
    let connect = format!(
        "CONNECT /v1/proxy/openai/v1/models HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Connection: close\r\n\r\n",
        app.addr, issued.token
    );
    let response = raw_http(app.addr, connect.as_bytes()).await;
    assert!((400..500).contains(&response.status), "CONNECT: {}", response.status);
    assert!(upstream.seen().is_empty(), "TRACE or CONNECT reached the upstream: {:#?}", upstream.seen());
    app.shutdown().await;
}

#[tokio::test]
async fn an_allowed_request_arrives_with_its_output_ceiling_clamped_and_a_correct_content_length() {
    let upstream = FakeUpstream::start().await;
    let app = app_with(vec![scoped_upstream(&upstream)]).await;
    let issued = issue_scoped(&app, json!({}), json!({ "max_output_tokens_per_request": 256 })).await;

    // Only the ceiling's bytes change (or one member is added): the rest arrives as the client wrote it.
    let cases = [
        (
            "/v1/chat/completions",
            r#"{"model":"gpt-4.1-mini", "max_tokens": 4096,"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"gpt-4.1-mini", "max_tokens": 256,"messages":[{"role":"user","content":"hi"}]}"#,
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"gpt-4.1-mini","messages":[]}"#,
            r#"{"model":"gpt-4.1-mini","messages":[],"max_completion_tokens":256}"#,
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"gpt-4.1-mini","max_completion_tokens":100,"messages":[]}"#,
            r#"{"model":"gpt-4.1-mini","max_completion_tokens":100,"messages":[]}"#,
        ),
        (
            "/v1/responses",
            r#"{"model":"gpt-4o-mini","input":"hi","max_output_tokens":100000}"#,
            r#"{"model":"gpt-4o-mini","input":"hi","max_output_tokens":256}"#,
        ),
        (
            "/v1/responses",
            r#"{"model":"gpt-4o-mini","input":"hi"}"#,
            r#"{"model":"gpt-4o-mini","input":"hi","max_output_tokens":256}"#,
        ),
    ];
    for (path, sent, expected) in cases {
        let response = send(
            app.request(Method::POST, &format!("/v1/proxy/openai{path}"), Some(&issued.token))
                .header("content-type", "application/json")
                .body(sent),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK, "{sent}");
        let seen = upstream.seen().pop().unwrap();
        assert_eq!(String::from_utf8_lossy(&seen.body), expected);
        assert_eq!(seen.header("content-length"), Some(expected.len().to_string().as_str()), "{sent}");
        assert_eq!(seen.header("transfer-encoding"), None, "{sent}");
    }
    app.shutdown().await;
}

/// An app whose `openai` upstream has [`ROUTES`] and [`MODELS`], with session defaults and ceilings.
async fn app_with_limits(upstream: &FakeUpstream) -> TestApp {
    let settings = scoped_upstream(upstream);
    sidekey_tests::spawn_app_with(move |config| {
        config.upstreams = vec![settings];
        config.limits.default.max_requests = Some(1000);
        config.limits.default.requests_per_minute = Some(60);
        config.limits.ceiling.max_requests = Some(5000);
        config.limits.ceiling.max_tokens = Some(100_000);
        config.limits.ceiling.max_output_tokens_per_request = Some(4096);
    })
    .await
}

#[tokio::test]
async fn issuance_refuses_a_scope_or_limits_wider_than_the_configuration_naming_the_field() {
    let upstream = FakeUpstream::start().await;
    let app = app_with_limits(&upstream).await;
    let cases = [
        (json!({ "scope": { "routes": ["POST /v1/files"] } }), "scope.routes"),
        (json!({ "scope": { "routes": ["ANY /v1/*"] } }), "scope.routes"),
        (json!({ "scope": { "models": ["gpt-5"] } }), "scope.models"),
        (json!({ "scope": { "models": ["gpt-*"] } }), "scope.models"),
        (json!({ "scope": { "upstreams": ["anthropic"] } }), "scope.upstreams"),
        (json!({ "limits": { "max_tokens": 100_001 } }), "limits.max_tokens"),
        (json!({ "limits": { "max_requests": 5001 } }), "limits.max_requests"),
        (
            json!({ "limits": { "max_output_tokens_per_request": 4097 } }),
            "limits.max_output_tokens_per_request",
        ),
    ];
    for (mut body, field) in cases {
        body["secret_key_id"] = json!(SECRET_KEY_ID);
        let problem = assert_problem(app.issue(&body).await, 422, "validation_failed").await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(field), "{body}: the detail should name {field}: {detail}");
    }
    let listed: Value = send(app.admin(Method::GET, "/v1/admin/sessions")).await.json().await.unwrap();
    assert_eq!(listed["sessions"].as_array().map(Vec::len), Some(0), "a refused issue made a session");
    app.shutdown().await;
}

#[tokio::test]
async fn issuance_fills_the_defaults_and_the_session_shows_its_scope_limits_usage_and_remaining() {
    let upstream = FakeUpstream::start().await;
    let app = app_with_limits(&upstream).await;
    let scope = json!({
        "upstreams": ["openai"],
        "routes": ["POST /v1/chat/completions", "GET /v1/models"],
        "models": [ALLOWED_MODEL],
        "origins": ["https://app.example.com"],
    });
    let issued = issue_scoped(&app, scope.clone(), json!({ "max_tokens": 5000 })).await;
    // Left out: the defaults. Asked for: as asked. Neither, and no default: the ceiling.
    let limits = json!({
        "max_requests": 1000, "requests_per_minute": 60, "max_tokens": 5000,
        "max_output_tokens_per_request": 4096,
    });
    assert_eq!(issued.body["scope"], scope, "{}", issued.body);
    assert_eq!(issued.body["limits"], limits, "{}", issued.body);
    assert_eq!(issued.body["usage"], json!({ "requests": 0, "input_tokens": 0, "output_tokens": 0 }));

    for _ in 0..2 {
        let response = send(
            app.request(Method::GET, "/v1/proxy/openai/v1/models", Some(&issued.token))
                .header("origin", "https://app.example.com"),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let shown: Value = app.show(&issued.token).await.json().await.unwrap();
    assert_eq!(shown["scope"], scope, "{shown}");
    assert_eq!(shown["limits"], limits, "{shown}");
    assert_eq!(shown["usage"], json!({ "requests": 2, "input_tokens": 0, "output_tokens": 0 }), "{shown}");
    assert_eq!(shown["remaining"], json!({ "requests": 998, "tokens": 5000 }), "{shown}");
    app.shutdown().await;
}

#[tokio::test]
async fn two_instances_on_one_redis_let_exactly_max_requests_of_200_concurrent_requests_through() {
    let upstream = FakeUpstream::start().await;
    let settings = scoped_upstream(&upstream);
    let Some(instances) = Instances::start(|config| config.upstreams = vec![settings.clone()], None).await
    else {
        return;
    };
    let issued = issue_scoped(&instances.a, json!({}), json!({ "max_requests": 50 })).await;

    let requests = (0..200).map(|index| {
        let app = if index % 2 == 0 { &instances.a } else { &instances.b };
        send(app.request(Method::GET, "/v1/proxy/openai/v1/models", Some(&issued.token)))
    });
    let responses = futures_util::future::join_all(requests).await;
    let mut statuses = std::collections::BTreeMap::new();
    for response in responses {
        let status = response.status().as_u16();
        if status == 429 {
            assert_refused(response, 429, "quota_exceeded").await;
        }
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert_eq!(statuses, [(200, 50), (429, 150)].into(), "answers by status");
    assert_eq!(upstream.seen().len(), 50, "requests that reached the upstream");
    let shown: Value = instances.b.show(&issued.token).await.json().await.unwrap();
    assert_eq!(shown["usage"]["requests"], 50, "{shown}");
    instances.finish().await;
}

/// The client: a stream for the allowed model, then a plain completion for a model outside the scope.
const SDK_SCRIPT: &str = r#"
import json, sys
import openai
from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key=sys.argv[2], max_retries=0, timeout=20)
deltas = []
for chunk in client.chat.completions.create(
        model=sys.argv[3], messages=[{"role": "user", "content": "Say hello"}], stream=True):
    if chunk.choices and chunk.choices[0].delta.content:
        deltas.append(chunk.choices[0].delta.content)
refused = None
try:
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
except openai.PermissionDeniedError as error:
    refused = {"status": error.status_code, "code": error.code, "type": error.type, "message": error.message}
print(json.dumps({"deltas": deltas, "refused": refused}))
"#;

#[tokio::test]
async fn the_openai_python_sdk_streams_an_allowed_model_and_raises_permission_denied_for_another() {
    if !sdk_available_or_skipped().await {
        return;
    }
    let upstream = FakeUpstream::start().await;
    let app = app_with(vec![scoped_upstream(&upstream)]).await;
    let issued = issue_scoped(
        &app,
        json!({ "routes": ["POST /v1/chat/completions"], "models": [ALLOWED_MODEL] }),
        json!({ "max_requests": 10 }),
    )
    .await;

    let args = vec![
        "-c".to_owned(),
        SDK_SCRIPT.to_owned(),
        app.url("/v1/proxy/openai/v1"),
        issued.token.clone(),
        ALLOWED_MODEL.to_owned(),
    ];
    let output =
        tokio::time::timeout(Duration::from_secs(90), python(args)).await.expect("the SDK finishes").unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the SDK failed: {stderr}");
    let result: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("{stderr}"));

    assert_eq!(result["deltas"], json!(["Hello", ", ", "world!"]), "{result}");
    let refused = &result["refused"];
    assert_eq!(refused["status"], 403, "{result}");
    assert_eq!(refused["code"], "model_not_allowed", "{result}");
    assert_eq!(refused["type"], "model_not_allowed", "{result}");
    assert!(refused["message"].as_str().is_some_and(|message| message.contains("gpt-4o-mini")), "{result}");

    let seen = upstream.only_request();
    let body: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(body["model"], ALLOWED_MODEL);
    app.shutdown().await;
}
